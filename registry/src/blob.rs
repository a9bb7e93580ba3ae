//! A store of blobs on disk, keyed by their sha256 ([`Digest`]).

use std::path::{Path, PathBuf};

use garden_trust::Digest;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file system refused.
    #[error("blob store {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No blob has this digest.
    #[error("no blob {0} in the store")]
    Missing(Digest),
    /// The stored bytes no longer match their digest (disk damage or tampering).
    #[error("blob {expected} is corrupt: its bytes hash to {actual}; delete it and fetch it again")]
    Corrupt {
        /// The digest it is stored under.
        expected: Digest,
        /// The digest of what was read.
        actual: Digest,
    },
}

/// Blobs on disk, one file per digest.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| BlobError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(BlobStore { dir })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.to_hex())
    }

    /// Store `bytes`; returns their digest. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let digest = Digest::of(bytes);
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let io = |source| BlobError::Io {
            path: path.clone(),
            source,
        };
        garden_trust::files::replace(&path, &[bytes]).map_err(io)?;
        Ok(digest)
    }

    /// The bytes of `digest`, checked against it.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::Missing(*digest));
            }
            Err(source) => return Err(BlobError::Io { path, source }),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(BlobError::Corrupt {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_hex_and_refuses_junk() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(format!("sha256:{d}").parse::<Digest>().unwrap(), d);
        for bad in ["", "xyz", &d.to_hex()[..63], &format!("{}00", d.to_hex())] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn store_checks_every_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        let d = store.put(b"component bytes").unwrap();
        assert_eq!(store.put(b"component bytes").unwrap(), d);
        assert_eq!(store.get(&d).unwrap(), b"component bytes");
        assert!(matches!(
            store.get(&Digest::of(b"other")),
            Err(BlobError::Missing(_))
        ));
        std::fs::write(store.dir().join(d.to_hex()), b"tampered").unwrap();
        let err = store.get(&d).unwrap_err();
        assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"));
    }
}
