//! Trust in garden components, with no runtime, database or network: the
//! sha256 that identifies a component ([`Digest`]), publisher keys
//! ([`keys`]), manifests ([`manifest`]) and topic names ([`topic`]), the
//! signature a component carries as its last custom section
//! ([`signature`]), and the trust store a host checks it against
//! ([`TrustStore`]).
//!
//! A publisher signs a [`Manifest`] together with the code's digest with an
//! ed25519 key; a host loads the code only when the signature verifies
//! against a key its trust store trusts and has not revoked. The exact
//! bytes signed are documented in `docs/signing.md`. This crate is small on
//! purpose: the build script that signs the built-in modules depends on it
//! alone.

pub mod digest;
pub mod files;
pub mod keys;
pub mod manifest;
pub mod signature;
pub mod topic;
pub mod trust;

pub use digest::{Digest, ParseDigestError};
pub use keys::{KeyError, KeyId, PublicKey, SigningKey};
pub use manifest::{Manifest, ManifestError};
pub use signature::{SignatureError, SignedComponent};
pub use topic::TopicError;
pub use trust::{Role, TrustError, TrustStore, Verified};
