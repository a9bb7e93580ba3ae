//! Credentials kept out of the command line: a password read from a file
//! is put into a connection URL, so it never shows in `/proc/PID/cmdline`,
//! shell history or `ps`.
//!
//! Invariants: a password file that others may read is refused (as ssh
//! refuses such a key); the password is percent-encoded into the URL, so
//! any character works; errors name the file, never the password.

use std::path::{Path, PathBuf};

/// Why a password cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("password file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "password file {path} may be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds nothing.
    #[error("password file {0} is empty")]
    Empty(PathBuf),
    /// The URL cannot carry a password.
    #[error("cannot put a password into {0}: give a URL with a host, e.g. redis://user@host:port")]
    Url(String),
}

/// Permission bits that let group or others read a file.
const SHARED_BITS: u32 = 0o077;

/// `url` with the password read from `file` (its first line; a trailing
/// newline is not part of it).
pub fn with_password_file(url: &str, file: &Path) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| SecretError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(file).map_err(read)?.permissions().mode();
    if mode & SHARED_BITS != 0 {
        return Err(SecretError::Readable {
            path: file.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let text = std::fs::read_to_string(file).map_err(read)?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(SecretError::Empty(file.to_path_buf()));
    }
    let shown = || SecretError::Url(crate::bus::redis::redacted(url));
    let mut parsed = url::Url::parse(url).map_err(|_| shown())?;
    parsed.set_password(Some(password)).map_err(|()| shown())?;
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("pw");
        std::fs::write(&path, text).expect("writes");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_password_from_a_private_file_goes_into_the_url_encoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = file(dir.path(), "s3cr@t:/x\n", 0o600);
        assert_eq!(
            with_password_file("redis://garden@127.0.0.1:6379", &pw).expect("ok"),
            "redis://garden:s3cr%40t%3A%2Fx@127.0.0.1:6379"
        );
        let shared = file(dir.path(), "secret\n", 0o644);
        let err = with_password_file("redis://garden@h:1", &shared).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let empty = file(dir.path(), "\n", 0o600);
        assert!(matches!(
            with_password_file("redis://h:1", &empty),
            Err(SecretError::Empty(_))
        ));
    }
}
