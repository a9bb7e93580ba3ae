//! Publisher keys: ed25519 key pairs stored as PEM (PKCS#8 private key,
//! SubjectPublicKeyInfo public key), readable by openssl, and the key id
//! derived from the public key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest as _, Sha256};

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file system refused.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a PEM key of the expected kind.
    #[error(
        "{path} is not an ed25519 {kind} key in PEM ({detail}); generate one with `garden key generate`"
    )]
    Format {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// "private (PKCS#8)" or "public (SubjectPublicKeyInfo)".
        kind: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Refusing to overwrite an existing key.
    #[error("{0} already exists; refusing to overwrite a key (move it away first)")]
    Exists(PathBuf),
}

/// Bytes of the sha256 in a key id: 16, so that nobody can make two keys
/// with one id.
pub const KEY_ID_BYTES: usize = 16;

/// Bytes of the shorter ids earlier versions wrote; still read.
pub const LEGACY_KEY_ID_BYTES: usize = 8;

/// A stable name for a public key: the first [`KEY_ID_BYTES`] bytes of the
/// sha256 of its 32 raw bytes, in hex (32 characters). Ids of the older,
/// 8-byte form (16 characters) are still read, and [`KeyId::matches`] a key
/// whose id begins with them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    bytes: [u8; KEY_ID_BYTES],
    len: u8,
}

impl KeyId {
    /// The id of a raw ed25519 public key.
    pub fn of(public: &[u8; 32]) -> Self {
        let h = Sha256::digest(public);
        let mut bytes = [0u8; KEY_ID_BYTES];
        bytes.copy_from_slice(&h[..KEY_ID_BYTES]);
        KeyId {
            bytes,
            len: KEY_ID_BYTES as u8,
        }
    }

    /// Whether the two ids name the same key: equal over the bytes both
    /// have, so an older 8-byte id matches the full id it begins.
    pub fn matches(&self, other: &KeyId) -> bool {
        let n = usize::from(self.len.min(other.len));
        self.bytes[..n] == other.bytes[..n]
    }

    /// Whether this is an id of the older, 8-byte form.
    pub fn is_legacy(&self) -> bool {
        usize::from(self.len) < KEY_ID_BYTES
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why text is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key id: expected 32 hex characters (or 16, the older form)")]
pub struct ParseKeyIdError(String);

impl FromStr for KeyId {
    type Err = ParseKeyIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let len = match text.len() {
            n if n == 2 * KEY_ID_BYTES => KEY_ID_BYTES,
            n if n == 2 * LEGACY_KEY_ID_BYTES => LEGACY_KEY_ID_BYTES,
            _ => return Err(ParseKeyIdError(s.chars().take(80).collect())),
        };
        let mut bytes = [0u8; KEY_ID_BYTES];
        hex::decode_to_slice(text, &mut bytes[..len])
            .map_err(|_| ParseKeyIdError(s.chars().take(80).collect()))?;
        Ok(KeyId {
            bytes,
            len: len as u8,
        })
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A publisher's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// Its key id.
    pub fn id(&self) -> KeyId {
        KeyId::of(self.0.as_bytes())
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        // Encoding a valid key into PEM cannot fail.
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Read SubjectPublicKeyInfo PEM text; `origin` names it in errors.
    pub fn from_pem(text: &str, origin: &Path) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(text.trim())
            .map(PublicKey)
            .map_err(|e| KeyError::Format {
                path: origin.to_path_buf(),
                kind: "public (SubjectPublicKeyInfo)",
                detail: e.to_string(),
            })
    }

    /// Read a public key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&text, path)
    }

    /// Whether `signature` (64 bytes) is this key's ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0.verify_strict(message, &sig).is_ok() && self.0.verify(message, &sig).is_ok()
    }
}

/// A private key: a publisher's or a daemon's. Cloned only where one
/// process needs it twice (a daemon rotating its key reads with the old
/// and the new one for a while); the seed is wiped when a copy is dropped.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Sign `message`: 64 bytes.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The X25519 secret this key shares with `peer` (RFC 7748 over the
    /// keys' Montgomery forms): `a.agree(B) == b.agree(A)`, and nobody
    /// without one of the two private keys can compute it. `None` for a
    /// peer key of small order, whose shared secret would be public.
    ///
    /// One key pair serves signing and agreement: the garden's daemons are
    /// known by one key in the trust store, and the agreed secret is only
    /// ever used through a key derivation (see eprint 2021/509 on why this
    /// combination is sound).
    pub fn agree(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let shared = peer
            .0
            .to_montgomery()
            .mul_clamped(self.0.to_scalar_bytes())
            .to_bytes();
        (shared != [0u8; 32]).then_some(shared)
    }

    /// Read PKCS#8 PEM text; `origin` names it in errors.
    pub fn from_pem(text: &str, origin: &Path) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(text.trim())
            .map(SigningKey)
            .map_err(|e| KeyError::Format {
                path: origin.to_path_buf(),
                kind: "private (PKCS#8)",
                detail: e.to_string(),
            })
    }

    /// Read a private key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_pem(&text, path)
    }

    /// PKCS#8 PEM, version 1 (RFC 8410: the seed only), which every
    /// openssl reads; version 2, with the public key inside, is refused by
    /// OpenSSL 3.0.
    pub fn to_pem(&self) -> String {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(self.0.as_bytes());
        let pem = ed25519_dalek::pkcs8::spki::der::pem::encode_string(
            "PRIVATE KEY",
            LineEnding::LF,
            &der,
        );
        // Wipe the copy of the seed.
        der.iter_mut().for_each(|b| *b = 0);
        pem.unwrap_or_default()
    }

    /// Write `<dir>/<name>.key.pem` (owner read/write only) and
    /// `<dir>/<name>.pub.pem`; returns both paths. Never overwrites.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        let private = dir.join(format!("{name}.key.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        for p in [&private, &public] {
            if p.symlink_metadata().is_ok() {
                return Err(KeyError::Exists(p.clone()));
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_new(&private, self.to_pem().as_bytes(), 0o600).map_err(io(&private))?;
        write_new(&public, self.public().to_pem().as_bytes(), 0o644).map_err(io(&public))?;
        Ok((private, public))
    }

    /// Put this key at `private` (mode 0600) and its public half at
    /// `public`, replacing the keys there: each file is written aside and
    /// renamed over the old one, so a reader (a daemon watching its key
    /// file) sees the old key or the new one, never half of one, and a
    /// symlink in the way is replaced, not written through.
    pub fn replace_pair(&self, private: &Path, public: &Path) -> Result<(), KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        crate::files::replace(public, &[self.public().to_pem().as_bytes()]).map_err(io(public))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(public, std::fs::Permissions::from_mode(0o644))
                .map_err(io(public))?;
        }
        crate::files::replace(private, &[self.to_pem().as_bytes()]).map_err(io(private))
    }
}

/// Create `path` with `mode` and write `bytes`. `create_new` fails on
/// anything already there, a symlink included (dangling or not), so a key
/// is never written through a link someone placed, and the private key is
/// never readable by others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_keys_agree_on_one_secret_that_a_third_does_not_share() {
        let (a, b, c) = (
            SigningKey::generate(),
            SigningKey::generate(),
            SigningKey::generate(),
        );
        let ab = a.agree(&b.public()).expect("agrees");
        assert_eq!(Some(ab), b.agree(&a.public()));
        assert_ne!(Some(ab), c.agree(&a.public()));
        assert_ne!(Some(ab), c.agree(&b.public()));
        // The identity point has small order: refused, not a zero secret.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let small = PublicKey(ed25519_dalek::VerifyingKey::from_bytes(&identity).expect("a point"));
        assert_eq!(a.agree(&small), None);
    }

    #[test]
    fn keys_round_trip_through_pem_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let (private, public) = key.write_pair(dir.path(), "alice").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "private key readable by its owner only");
        }
        let text = std::fs::read_to_string(&private).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(
            std::fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        let again = SigningKey::read(&private).unwrap();
        let pubkey = PublicKey::read(&public).unwrap();
        assert_eq!(again.public(), pubkey);
        assert_eq!(pubkey.id().to_string().len(), 32);
        let sig = again.sign(b"hello");
        assert!(pubkey.verify(b"hello", &sig));
        assert!(!pubkey.verify(b"hellO", &sig));
        assert!(!pubkey.verify(b"hello", &sig[..63]));
        assert!(matches!(
            key.write_pair(dir.path(), "alice"),
            Err(KeyError::Exists(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_key() {
        let err = SigningKey::from_pem("not a key", Path::new("x.pem")).unwrap_err();
        assert!(
            err.to_string().contains("x.pem") && err.to_string().contains("garden key generate")
        );
        assert!(
            PublicKey::from_pem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                Path::new("p")
            )
            .is_err()
        );
        assert!("zz".parse::<KeyId>().is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_never_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.txt");
        std::os::unix::fs::symlink(&target, dir.path().join("alice.pub.pem")).unwrap();
        let result = SigningKey::generate().write_pair(dir.path(), "alice");
        assert!(matches!(result, Err(KeyError::Exists(_))), "{result:?}");
        assert!(!target.exists(), "nothing written through the link");
    }

    #[test]
    fn key_ids_are_16_bytes_and_the_older_8_byte_form_still_matches() {
        let key = SigningKey::generate().public();
        let id = key.id();
        assert!(!id.is_legacy());
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        let old: KeyId = text[..16].parse().unwrap();
        assert!(old.is_legacy());
        assert_eq!(old.to_string(), &text[..16]);
        assert!(old.matches(&id) && id.matches(&old));
        let other = SigningKey::generate().public().id();
        assert!(!other.matches(&id));
        for bad in ["", "abc", &"g".repeat(32), &"a".repeat(24)] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
    }
}
