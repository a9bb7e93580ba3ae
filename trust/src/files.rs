//! Writing a file so that no reader ever sees half of it: the one way garden
//! writes trust stores, keys, cache entries, blobs and audit heads.
//!
//! Invariant: the bytes go to a temporary file with an unpredictable name
//! (0600) in the target's own directory, are synced, and only then take
//! the target's name, so a reader sees the old file or the new one, and a
//! symlink at the target is replaced, never written through.

use std::io::Write as _;
use std::path::Path;

fn written(path: &Path, parts: &[&[u8]]) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.as_file().sync_all()?;
    Ok(file)
}

/// Put `parts`, one after another, at `path`, replacing what was there.
pub fn replace(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    written(path, parts)?
        .persist(path)
        .map(|_| ())
        .map_err(|e| e.error)
}

/// Put `parts` at `path` only if nothing (not even a symlink) is there:
/// `Ok(false)` if something was, and then it is left as it is. Processes
/// racing to create one file agree on the first one's.
pub fn create(path: &Path, parts: &[&[u8]]) -> std::io::Result<bool> {
    match written(path, parts)?.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_overwrites_and_create_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f");
        assert!(create(&path, &[b"one"]).unwrap());
        assert!(!create(&path, &[b"two"]).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        replace(&path, &[b"th", b"ree"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
    }
}
