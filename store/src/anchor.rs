//! Signed heads of the audit chain: what anchors it against truncation.
//!
//! The chain of hashes shows an edited record or one deleted from the
//! middle, but not a log cut short: the records that remain still link up.
//! So every writer signs the newest record it appended (its sequence number
//! and hash) with its own key and keeps that [`SignedHead`] twice: in the
//! store (`audit_heads`, one row per signer, only ever moving forward) and
//! in a file of its own beside its key. A verifier finds a truncation or a
//! rollback when a signed head names a record that is missing or different.
//!
//! Invariant: a head verifies only under the key it names, over
//! `garden-audit-head\0`, the sequence number (8 bytes, big-endian) and the
//! record's hash; a head from one store cannot be moved to another record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use garden_trust::{Digest, KeyError, KeyId, PublicKey, SigningKey};

/// A writer's own key for signing audit heads: `host.key.pem` in its data
/// directory, made on first use. Written whole under a temporary name
/// (0600) and linked into place only if none is there, so processes
/// starting together agree on one key and none reads half of one.
pub fn host_key(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = data_dir.join("host.key.pem");
    if path.symlink_metadata().is_err() {
        let key = SigningKey::generate();
        let made =
            garden_trust::files::create(&path, &[key.to_pem().as_bytes()]).map_err(|source| {
                KeyError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        if made {
            return Ok(key);
        }
    }
    SigningKey::read(&path)
}

/// Where a writer keeps its signed head of the audit log at `url`: one file
/// per store under `data_dir/audit-heads`, named by a hash of the URL.
pub fn head_file(data_dir: &Path, url: &str) -> PathBuf {
    let name = Digest::of(url.as_bytes()).to_hex();
    data_dir
        .join("audit-heads")
        .join(format!("{}.toml", &name[..16]))
}

/// A signer's statement: "the audit log held record `seq` with `hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The signing key's id.
    pub signer: KeyId,
    /// The signing key, SubjectPublicKeyInfo PEM.
    pub public_key: String,
    /// Sequence number of the record.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// ed25519 signature, hex.
    pub signature: String,
}

fn message(seq: i64, hash: &str) -> Vec<u8> {
    let mut m = b"garden-audit-head\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

impl SignedHead {
    /// `key` signs record `seq` with `hash`.
    pub fn sign(key: &SigningKey, seq: i64, hash: &str) -> Self {
        let public = key.public();
        SignedHead {
            signer: public.id(),
            public_key: public.to_pem(),
            seq,
            hash: hash.to_string(),
            signature: hex::encode(key.sign(&message(seq, hash))),
        }
    }

    /// Whether the signature verifies under the key the head carries, and
    /// that key has the id it claims.
    pub fn verifies(&self) -> bool {
        let Ok(key) = PublicKey::from_pem(&self.public_key, Path::new("audit head")) else {
            return false;
        };
        let Ok(signature) = hex::decode(&self.signature) else {
            return false;
        };
        key.id() == self.signer && key.verify(&message(self.seq, &self.hash), &signature)
    }

    /// Read a head kept in a file; `None` if there is none yet.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Keep the head in a file: written whole under a temporary name, then
    /// renamed into place.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        garden_trust::files::replace(path, &[text.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_verifies_only_as_signed() {
        let key = SigningKey::generate();
        let head = SignedHead::sign(&key, 307, "ab12");
        assert!(head.verifies());
        let moved = SignedHead {
            seq: 57,
            ..head.clone()
        };
        assert!(!moved.verifies(), "another record");
        let other = SigningKey::generate().public();
        let swapped = SignedHead {
            public_key: other.to_pem(),
            signer: other.id(),
            ..head.clone()
        };
        assert!(!swapped.verifies(), "another key");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.toml");
        assert_eq!(SignedHead::read(&path).unwrap(), None);
        head.write(&path).unwrap();
        assert_eq!(SignedHead::read(&path).unwrap(), Some(head));
    }
}
