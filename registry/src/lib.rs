//! The component registry and the durable records around it: blobs
//! content-addressed on disk, the registry server and client, and the
//! store (SQLite or PostgreSQL) holding the component index, the audit log
//! with its signed heads, lineage and records.
//!
//! Trust itself (digests, keys, manifests, signatures, the trust store)
//! lives in `garden-trust`, which needs no runtime or database; it is
//! re-exported here so that one import path serves both.

pub mod anchor;
pub mod blob;
pub mod client;
mod names;
pub mod server;
pub mod store;

pub use garden_trust::{
    Digest, KeyError, KeyId, Manifest, ManifestError, ParseDigestError, PublicKey, SignatureError,
    SignedComponent, SigningKey, TopicError, TrustError, TrustStore, Verified,
};
pub use garden_trust::{files, keys, manifest, signature, topic, trust};

pub use blob::{BlobError, BlobStore};
pub use store::{AuditCheck, AuditFilter, AuditRecord, ComponentRow, RecordRow, Store, StoreError};
