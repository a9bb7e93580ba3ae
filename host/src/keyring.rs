//! Body keys: symmetric keys by id that encrypt message bodies end to end
//! on a Redis shared with others, and snapshots and records at rest.
//!
//! The file (TOML, mode 0600: one that group or others may read is
//! refused, as ssh refuses such a key) lists keys by id and names the one
//! new data is sealed with; `garden key rotate --body-keys FILE` adds a
//! key, makes it current, and gives the one it replaces an expiry.
//!
//! Invariants:
//! - ChaCha20-Poly1305 (RFC 8439) with a fresh random 96-bit nonce per
//!   seal; the sealed form is `ID.` and base64 of nonce ‖ ciphertext ‖ tag,
//!   so a reader knows which key to use, and a key is never guessed;
//! - the caller's associated data (a stream's name, a snapshot's key, a
//!   record's run and topic) is under the tag: a sealed body moved to
//!   another place does not open;
//! - a key past its expiry opens nothing from the wire
//!   ([`Keyring::open`]); data at rest was sealed by this garden, so it
//!   opens with any key of the ring ([`Keyring::open_stored`]) and a key
//!   leaves the file only when its owner removes it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::aead::{self, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Bytes of a body key.
const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
const NONCE_BYTES: usize = aead::NONCE_LEN;
/// Permission bits that let group or others read a file.
const SHARED_BITS: u32 = 0o077;

/// Why a keyring cannot be used, or a sealed value not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The file cannot be read or written.
    #[error("body keyring {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Group or others may read the file.
    #[error(
        "body keyring {path} may be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The value names a key this ring does not hold.
    #[error(
        "sealed with body key `{0}`, which this keyring does not hold; copy the garden's keyring file (--body-keys) to this host"
    )]
    UnknownKey(String),
    /// The key it names has expired.
    #[error("sealed with body key `{0}`, which expired (it was rotated out); the value is refused")]
    Expired(String),
    /// The system's random source failed: nothing can be sealed safely.
    #[error("the system's random source failed, so no nonce can be drawn for a body key")]
    NoRandom,
    /// Not of the sealed form.
    #[error("the sealed value is malformed (expected KEY-ID.BASE64)")]
    Malformed,
    /// The tag does not match: altered, moved, or sealed with another key.
    #[error("the sealed value does not open under body key `{0}`: it was altered or moved")]
    Tampered(String),
}

/// One body key as the file holds it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    /// 64 hex characters.
    secret: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

/// The file.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    current: String,
    #[serde(default, rename = "key")]
    keys: Vec<StoredKey>,
}

/// A body key, ready to use.
struct BodyKey {
    id: String,
    key: LessSafeKey,
    expires: Option<DateTime<Utc>>,
}

/// The body keys of a garden.
pub struct Keyring {
    keys: Vec<BodyKey>,
    /// Index of the key new data is sealed with.
    writer: usize,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring(writes {}, {} keys)",
            self.writer_id(),
            self.keys.len()
        )
    }
}

impl Keyring {
    /// Read the keyring at `path`; it must be readable by its owner only.
    pub fn read(path: &Path) -> Result<Keyring, KeyringError> {
        Keyring::from_file(path, &read_file(path)?)
    }

    fn from_file(path: &Path, file: &KeyringFile) -> Result<Keyring, KeyringError> {
        let bad = |message: String| KeyringError::File {
            path: path.to_path_buf(),
            message,
        };
        let mut keys = Vec::new();
        for k in &file.keys {
            let mut secret = [0u8; KEY_BYTES];
            hex::decode_to_slice(&k.secret, &mut secret).map_err(|_| {
                bad(format!(
                    "key `{}`: the secret is not 64 hex characters",
                    k.id
                ))
            })?;
            let unbound = UnboundKey::new(&CHACHA20_POLY1305, &secret)
                .map_err(|_| bad(format!("key `{}` is unusable", k.id)))?;
            secret.fill(0);
            let expires = match &k.expires_at {
                None => None,
                Some(t) => Some(
                    DateTime::parse_from_rfc3339(t)
                        .map_err(|e| bad(format!("key `{}`: expiry `{t}`: {e}", k.id)))?
                        .with_timezone(&Utc),
                ),
            };
            keys.push(BodyKey {
                id: k.id.clone(),
                key: LessSafeKey::new(unbound),
                expires,
            });
        }
        let writer = keys
            .iter()
            .position(|k| k.id == file.current)
            .ok_or_else(|| {
                bad(format!(
                    "the current key `{}` is not in the file",
                    file.current
                ))
            })?;
        Ok(Keyring {
            keys,
            writer,
            random: SystemRandom::new(),
        })
    }

    /// Add a fresh key to the keyring at `path` (made, 0600, if there is
    /// none) and make it current; the key it replaces expires `grace` from
    /// now. Returns (new key id, replaced key id).
    pub fn rotate(
        path: &Path,
        grace: std::time::Duration,
    ) -> Result<(String, Option<String>), KeyringError> {
        let mut file = match read_file(path) {
            Ok(f) => f,
            Err(KeyringError::File { .. }) if !path.exists() => KeyringFile::default(),
            Err(e) => return Err(e),
        };
        let random = SystemRandom::new();
        let mut secret = [0u8; KEY_BYTES];
        let mut id = [0u8; 4];
        let failed = |_| KeyringError::File {
            path: path.to_path_buf(),
            message: "the system's random source failed".into(),
        };
        random.fill(&mut secret).map_err(failed)?;
        random.fill(&mut id).map_err(failed)?;
        let id = hex::encode(id);
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let old = (!file.current.is_empty()).then(|| file.current.clone());
        if let Some(k) = file.keys.iter_mut().find(|k| Some(&k.id) == old.as_ref()) {
            k.expires_at = Some(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        file.keys.push(StoredKey {
            id: id.clone(),
            secret: hex::encode(secret),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expires_at: None,
        });
        secret.fill(0);
        file.current = id.clone();
        let text = toml::to_string(&file).map_err(|e| KeyringError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // 0600 from the start: written aside and renamed over.
        garden_trust::files::replace(path, &[text.as_bytes()]).map_err(|e| KeyringError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok((id, old))
    }

    /// The id of the key new data is sealed with.
    pub fn writer_id(&self) -> &str {
        &self.keys[self.writer].id
    }

    /// This keyring, sealing with key `id` instead of the current one while
    /// it holds it unexpired (a daemon keeps sealing with the old key until
    /// every daemon has read the new one).
    pub fn sealing_with(mut self, id: &str) -> Keyring {
        if let Some(i) = self.keys.iter().position(|k| k.id == id && !expired(k)) {
            self.writer = i;
        }
        self
    }

    /// Seal `plain` with the writing key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<String, KeyringError> {
        let key = &self.keys[self.writer];
        let mut nonce = [0u8; NONCE_BYTES];
        self.random
            .fill(&mut nonce)
            .map_err(|_| KeyringError::NoRandom)?;
        let mut body = Vec::with_capacity(plain.len() + aead::MAX_TAG_LEN);
        body.extend_from_slice(plain);
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut body,
            )
            .map_err(|_| KeyringError::Malformed)?;
        let mut buffer = Vec::with_capacity(NONCE_BYTES + body.len());
        buffer.extend_from_slice(&nonce);
        buffer.extend_from_slice(&body);
        let mut out = String::with_capacity(key.id.len() + 1 + buffer.len() * 4 / 3 + 4);
        out.push_str(&key.id);
        out.push('.');
        base64::engine::general_purpose::STANDARD_NO_PAD.encode_string(&buffer, &mut out);
        Ok(out)
    }

    /// Open a value read from the wire (a message body, a snapshot in
    /// Redis): an expired key opens nothing.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, KeyringError> {
        self.open_with(aad, sealed, true)
    }

    /// Open a value this garden stored (a record): any key of the ring.
    pub fn open_stored(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, KeyringError> {
        self.open_with(aad, sealed, false)
    }

    fn open_with(&self, aad: &[u8], sealed: &str, fresh: bool) -> Result<Vec<u8>, KeyringError> {
        let (id, data) = sealed.split_once('.').ok_or(KeyringError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyringError::UnknownKey(printable(id)))?;
        if fresh && expired(key) {
            return Err(KeyringError::Expired(key.id.clone()));
        }
        let mut bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(data)
            .map_err(|_| KeyringError::Malformed)?;
        if bytes.len() < NONCE_BYTES + aead::MAX_TAG_LEN {
            return Err(KeyringError::Malformed);
        }
        let mut body = bytes.split_off(NONCE_BYTES);
        let nonce =
            Nonce::try_assume_unique_for_key(&bytes).map_err(|_| KeyringError::Malformed)?;
        let plain = key
            .key
            .open_in_place(nonce, aead::Aad::from(aad), &mut body)
            .map_err(|_| KeyringError::Tampered(key.id.clone()))?;
        Ok(plain.to_vec())
    }
}

fn expired(key: &BodyKey) -> bool {
    key.expires.is_some_and(|at| at <= Utc::now())
}

fn read_file(path: &Path) -> Result<KeyringFile, KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| KeyringError::File {
        path: path.to_path_buf(),
        message: format!(
            "{e}; make one with `garden key rotate --body-keys {}`",
            path.display()
        ),
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & SHARED_BITS != 0 {
        return Err(KeyringError::Readable {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    toml::from_str(&text).map_err(|e| KeyringError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// At most 16 characters of what a value claimed, escaped.
fn printable(claim: &str) -> String {
    claim
        .chars()
        .take(16)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sealed_values_open_only_in_place_and_under_a_live_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("body.keys");
        let (first, none) = Keyring::rotate(&path, Duration::from_secs(60)).expect("made");
        assert!(none.is_none());
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ring = Keyring::read(&path).expect("reads");
        assert_eq!(ring.writer_id(), first);
        let sealed = ring.seal(b"g:t:plan", b"{\"secret\":1}").expect("seals");
        assert!(sealed.starts_with(&format!("{first}.")));
        assert!(!sealed.contains("secret"));
        assert_eq!(
            ring.open(b"g:t:plan", &sealed).expect("opens"),
            b"{\"secret\":1}"
        );
        assert_ne!(
            sealed,
            ring.seal(b"g:t:plan", b"{\"secret\":1}").expect("seals"),
            "a fresh nonce each time"
        );
        assert_eq!(
            ring.open(b"g:t:fill", &sealed),
            Err(KeyringError::Tampered(first.clone()))
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(ring.open(b"g:t:plan", &altered).is_err());
        assert_eq!(ring.open(b"x", "nope"), Err(KeyringError::Malformed));
        assert!(matches!(
            ring.open(b"x", "ffff.AAAA"),
            Err(KeyringError::UnknownKey(_))
        ));
        // Rotated with no grace: the old key opens nothing from the wire,
        // but what was stored with it still opens.
        let (second, old) = Keyring::rotate(&path, Duration::ZERO).expect("rotated");
        assert_eq!(old.as_deref(), Some(first.as_str()));
        let ring = Keyring::read(&path).expect("reads");
        assert_eq!(ring.writer_id(), second);
        assert_eq!(
            ring.open(b"g:t:plan", &sealed),
            Err(KeyringError::Expired(first.clone()))
        );
        assert!(ring.open_stored(b"g:t:plan", &sealed).is_ok());
        // Sealing with the old key is not possible once it expired.
        assert_eq!(ring.sealing_with(&first).writer_id(), second);
    }

    #[test]
    fn a_keyring_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("body.keys");
        Keyring::rotate(&path, Duration::from_secs(60)).expect("made");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Keyring::read(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
