//! The component registry: blobs content-addressed on disk, the registry
//! server and its client. The index, the audit log and the names live in
//! `garden-store`; trust itself (digests, keys, manifests, signatures, the
//! trust store) in `garden-trust`, which needs no runtime or database.
//! Both are re-exported here, so one import path serves a registry user.

pub mod blob;
pub mod client;
pub mod server;

pub use garden_trust::{
    Digest, KeyError, KeyId, Manifest, ManifestError, ParseDigestError, PublicKey, SignatureError,
    SignedComponent, SigningKey, TopicError, TrustError, TrustStore, Verified,
};
pub use garden_trust::{files, keys, manifest, signature, topic, trust};

pub use blob::{BlobError, BlobStore};
pub use garden_store::{
    AuditCheck, AuditFilter, AuditRecord, ComponentRow, RecordRow, Store, StoreError, anchor,
};
