//! Compiled artifacts on disk, trusted only if this host made them.
//!
//! Deserializing a compiled artifact runs native code that nothing checks,
//! so whoever can write the cache could run code in the host. Invariants:
//! * The directory is used only if it is not writable by group or others
//!   (it is created 0700); otherwise the engine does not start, and the
//!   error says how to fix the directory.
//! * Every entry ends with an HMAC-SHA256 tag under a secret made for this
//!   cache (`host.key`, 0600, created once, never overwritten). The tag
//!   covers the entry's name (the component's digest and the engine's
//!   compatibility hash) and its bytes, so an entry from another host,
//!   another component or another engine is refused and recompiled.
//! * Entries are written to unpredictable temporary names and renamed into
//!   place, so a reader never sees half a file and nobody can pre-place one.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag at the end of every entry.
const TAG_BYTES: usize = 32;
/// Bytes of the cache's secret.
const SECRET_BYTES: usize = 32;
/// Name of the secret file inside the cache directory.
const SECRET_FILE: &str = "host.key";

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory or its secret cannot be created or read.
    #[error("cannot use artifact cache directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Someone other than this user may write the directory.
    #[error(
        "artifact cache directory {path} is writable by group or others (mode {mode:o}); whoever can write it could run code in this host. Run `chmod go-w {path}` or give another --cache-dir"
    )]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file is damaged.
    #[error("the artifact cache's secret {path} is damaged; delete the cache directory")]
    BadSecret {
        /// The file.
        path: PathBuf,
    },
}

/// An artifact cache this host owns.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    secret: [u8; SECRET_BYTES],
}

impl ArtifactCache {
    /// Open (creating) the cache in `dir`, refusing a directory others may write.
    pub(crate) fn open(dir: &Path) -> Result<Self, CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        check_private(dir)?;
        let secret = read_or_make_secret(&dir.join(SECRET_FILE))?;
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            secret,
        })
    }

    /// The entry called `name`, if present and made by this host under this
    /// name; `None` (and a warning) for anything else.
    pub(crate) fn get(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.path(name);
        let mut bytes = std::fs::read(&path).ok()?;
        if bytes.len() < TAG_BYTES {
            tracing::warn!(path = %path.display(), "cached artifact is truncated; recompiling");
            return None;
        }
        let tag = bytes.split_off(bytes.len() - TAG_BYTES);
        if self.mac(name, &bytes).verify_slice(&tag).is_err() {
            tracing::warn!(path = %path.display(), "cached artifact was not made by this host under this name; recompiling");
            return None;
        }
        Some(bytes)
    }

    /// Store `bytes` as the entry `name`.
    /// Whether an entry named `name` is there (not checked: `get` does
    /// that before it is used).
    pub(crate) fn holds(&self, name: &str) -> bool {
        self.path(name).is_file()
    }

    pub(crate) fn put(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tag = self.mac(name, bytes).finalize().into_bytes();
        garden_trust::files::replace(&self.path(name), &[bytes, &tag])
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cwasm"))
    }

    fn mac(&self, name: &str, bytes: &[u8]) -> Hmac<Sha256> {
        // A key of any length is valid for HMAC, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(bytes);
        mac
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn check_private(dir: &Path) -> Result<(), CacheError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(CacheError::Unsafe {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn read_or_make_secret(path: &Path) -> Result<[u8; SECRET_BYTES], CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        // Two hosts starting on one cache agree on the first one's secret.
        let mut secret = [0u8; SECRET_BYTES];
        rand::fill(&mut secret);
        if garden_trust::files::create(path, &[&secret]).map_err(io)? {
            return Ok(secret);
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    bytes.try_into().map_err(|_| CacheError::BadSecret {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_verify_only_under_their_own_name_and_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(&dir.path().join("c")).expect("opens");
        cache.put("a", b"code of a").expect("put");
        cache.put("b", b"code of b").expect("put");
        assert_eq!(cache.get("a").as_deref(), Some(&b"code of a"[..]));
        // b's entry, tag and all, moved under a's name is refused.
        std::fs::copy(cache.path("b"), cache.path("a")).expect("swap");
        assert_eq!(cache.get("a"), None);
        // Another cache (another secret) refuses this one's entries.
        let other = ArtifactCache::open(&dir.path().join("d")).expect("opens");
        std::fs::copy(cache.path("b"), other.path("b")).expect("copy");
        assert_eq!(other.get("b"), None);
        // The same directory opened again keeps its secret.
        let again = ArtifactCache::open(&dir.path().join("c")).expect("reopens");
        assert_eq!(again.get("b").as_deref(), Some(&b"code of b"[..]));
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        match ArtifactCache::open(&open) {
            Err(CacheError::Unsafe { mode, .. }) => assert_eq!(mode, 0o777),
            Err(other) => panic!("expected Unsafe, got {other}"),
            Ok(_) => panic!("a world-writable cache was accepted"),
        }
    }
}
