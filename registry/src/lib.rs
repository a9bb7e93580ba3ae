//! Integrity for garden components: content addressing, publisher keys,
//! manifests, signatures and the trust store.
//!
//! A component is identified by the sha256 of its code ([`Digest`]). A
//! publisher signs a [`Manifest`] together with that digest with an ed25519
//! key ([`keys`]); the signature travels inside the component as its last
//! custom section ([`signature`]), and a host loads the code only when the
//! signature verifies against a key its [`TrustStore`] trusts and has not
//! revoked. The exact bytes that are signed are documented in
//! `docs/signing.md`.

pub mod anchor;
pub mod blob;
pub mod client;
pub mod keys;
pub mod manifest;
mod names;
pub mod server;
pub mod signature;
pub mod store;
pub mod topic;
pub mod trust;

pub use blob::{BlobError, BlobStore, Digest, ParseDigestError};
pub use keys::{KeyError, KeyId, PublicKey, SigningKey};
pub use manifest::{Manifest, ManifestError};
pub use signature::{SignatureError, SignedComponent};
pub use store::{AuditCheck, AuditFilter, AuditRecord, ComponentRow, RecordRow, Store, StoreError};
pub use topic::TopicError;
pub use trust::{TrustError, TrustStore, Verified};
