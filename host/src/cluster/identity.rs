//! Who wrote an entry on the shared bus: each daemon's ed25519 key, and the
//! check every reader makes before it uses a decision or a heartbeat.
//!
//! Invariants:
//! - an entry is signed over its purpose (what kind of entry, in which
//!   garden: the prefix, and for a heartbeat the daemon's name) and every
//!   field in order, each length-prefixed, so no field can be moved,
//!   dropped, added or carried to another garden or daemon unnoticed;
//! - only keys the trust store lists in the daemon role verify
//!   ([`garden_trust::Role::Daemon`]); a revoked key never does;
//! - a refusal says what was wrong, and the reader counts and audits it:
//!   nothing a plain Redis client writes is acted on.

use std::path::{Path, PathBuf};

use garden_trust::{KeyId, PublicKey, Role, SigningKey, TrustStore};

use crate::bus::redis::EntryAuth;

/// Field holding the writer's key id.
pub const SIGNER_FIELD: &str = "signer";
/// Field holding the hex ed25519 signature.
pub const SIGNATURE_FIELD: &str = "sig";
/// First line of every signed entry message.
const DOMAIN: &[u8] = b"garden-entry-v1\n";

/// Why a daemon's identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file is unreadable or malformed.
    #[error(
        "daemon key {path}: {source}; give another with --key, or remove it to have a new one made"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: garden_trust::KeyError,
    },
}

/// Why an entry was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefused {
    /// No signer or signature: written by something that is not a daemon.
    #[error("unsigned (no `signer` and `sig`): not written by a garden daemon")]
    Unsigned,
    /// The signer is not a trusted daemon key (or was revoked).
    #[error(
        "signed by {0}, which is not a trusted daemon key (`garden trust add --role daemon KEY.pub.pem` trusts one)"
    )]
    Untrusted(String),
    /// The signature does not match the entry.
    #[error("the signature by {0} does not match the entry: it was forged or altered")]
    BadSignature(String),
    /// Signed by a trusted daemon, but sealed data that does not open.
    #[error("signed by a trusted daemon, but not usable here: {0}")]
    Sealed(String),
    /// Signed by a trusted daemon, but missing what its kind needs.
    #[error("signed by a trusted daemon, but malformed: {0}")]
    Malformed(String),
    /// A decision of a term by another key than the one that took the lease.
    #[error("a decision of term {term} signed by {signer}, but that term is led by {leader}")]
    NotTheLeader {
        /// The term the decision claims.
        term: u64,
        /// Who signed it.
        signer: String,
        /// Who announced the term (or `nobody`).
        leader: String,
    },
}

/// This daemon's signing key, and while it rotates, the other key it
/// reads message entries with.
pub struct Identity {
    key: SigningKey,
    id: KeyId,
    /// Read with, never written with: the key being rotated to (until the
    /// other daemons trust it) or from (while they still may write to it).
    reading: Vec<SigningKey>,
}

impl Identity {
    /// The key at `path`, made (mode 0600, with `NAME.pub.pem` beside it) if
    /// there is none yet. Returns the identity and whether it was made.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        let err = |source| IdentityError::Key {
            path: path.to_path_buf(),
            source,
        };
        let made = !path.exists();
        let key = if made {
            let key = SigningKey::generate();
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            key.write_pair(dir, key_name(path)).map_err(err)?;
            key
        } else {
            SigningKey::read(path).map_err(err)?
        };
        Ok((Identity::new(key), made))
    }

    /// An identity from a key in hand.
    pub fn new(key: SigningKey) -> Identity {
        let id = key.public().id();
        Identity {
            key,
            id,
            reading: Vec::new(),
        }
    }

    /// This identity, reading message entries with `other` too, for as long
    /// as the trust store trusts it (see [`Identity::entry_auth`]).
    pub fn also_reading(mut self, other: SigningKey) -> Identity {
        if other.public().id() != self.id {
            self.reading.push(other);
        }
        self
    }

    /// The key it writes and signs with.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Its key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The keys to tag message entries for, and check them from, the
    /// daemons of `peers` (see [`EntryAuth`]).
    pub fn entry_auth(&self, peers: &Peers) -> EntryAuth {
        let keys: Vec<PublicKey> = peers.keys.iter().map(|(k, _)| k.clone()).collect();
        // A key no longer trusted (expired after a rotation) is read with no more.
        let reading: Vec<&SigningKey> = self
            .reading
            .iter()
            .filter(|k| peers.name_of(&k.public().id()).is_some())
            .collect();
        EntryAuth::rotating(&self.key, &reading, &keys)
    }

    /// The signer (this key's id) and the hex signature over `purpose` and
    /// `fields`, for a caller that stores them its own way.
    pub fn signature(&self, purpose: &str, fields: &[(&str, &str)]) -> (String, String) {
        (
            self.id.to_string(),
            hex::encode(self.key.sign(&message(purpose, fields))),
        )
    }

    /// `fields` with the signer and the signature over `purpose` and them
    /// appended.
    pub fn sign(&self, purpose: &str, fields: &[(&str, &str)]) -> Vec<(String, String)> {
        let (signer, signature) = self.signature(purpose, fields);
        let mut out: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.push((SIGNER_FIELD.into(), signer));
        out.push((SIGNATURE_FIELD.into(), signature));
        out
    }
}

/// The daemon keys a reader accepts: those its trust store lists in the
/// daemon role, parsed once.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    keys: Vec<(PublicKey, String)>,
}

impl Peers {
    /// Accept the daemon keys of `store`.
    pub fn new(store: TrustStore) -> Peers {
        Peers {
            keys: store.keys_in_role(Role::Daemon),
        }
    }

    /// Check a signed entry: the fields other than signer and signature, in
    /// order, must carry a valid signature over `purpose` by a trusted
    /// daemon key. Returns the signer's key id.
    pub fn verify(
        &self,
        purpose: &str,
        fields: &[(String, String)],
    ) -> Result<KeyId, EntryRefused> {
        let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (Some(signer), Some(signature)) = (find(SIGNER_FIELD), find(SIGNATURE_FIELD)) else {
            return Err(EntryRefused::Unsigned);
        };
        let untrusted = || EntryRefused::Untrusted(printable(signer));
        let id: KeyId = signer.parse().map_err(|_| untrusted())?;
        let (key, _) = self.key(&id).ok_or_else(untrusted)?;
        let signed: Vec<(&str, &str)> = fields
            .iter()
            .filter(|(k, _)| k != SIGNER_FIELD && k != SIGNATURE_FIELD)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let bytes = hex::decode(signature).unwrap_or_default();
        if key.verify(&message(purpose, &signed), &bytes) {
            Ok(id)
        } else {
            Err(EntryRefused::BadSignature(id.to_string()))
        }
    }

    /// The name the trust store gives daemon key `id`, if it trusts it.
    pub fn name_of(&self, id: &KeyId) -> Option<&str> {
        self.key(id).map(|(_, name)| name.as_str())
    }

    fn key(&self, id: &KeyId) -> Option<&(PublicKey, String)> {
        self.keys.iter().find(|(k, _)| k.id().matches(id))
    }
}

/// `NAME` of a private key file `NAME.key.pem` (`daemon` for another name).
pub fn key_name(private: &Path) -> &str {
    private
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".key.pem"))
        .unwrap_or("daemon")
}

/// Where [`Identity::load_or_create`] keeps the public half of the key at
/// `private`: `NAME.pub.pem` beside it.
pub fn public_key_path(private: &Path) -> PathBuf {
    private.with_file_name(format!("{}.pub.pem", key_name(private)))
}

/// What is signed: the domain line, the purpose, then each field as
/// `len:key len:value`, so the encoding of one list of fields is never that
/// of another.
fn message(purpose: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend_from_slice(purpose.as_bytes());
    out.push(b'\n');
    for (k, v) in fields {
        for part in [k, v] {
            out.extend_from_slice(part.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(part.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// At most 40 characters of what an entry claimed, escaped, for messages.
fn printable(claim: &str) -> String {
    claim
        .chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(identity: &Identity) -> Peers {
        let mut store = TrustStore::default();
        store
            .add_as(&identity.public(), "a", Role::Daemon, "now")
            .expect("trusts");
        Peers::new(store)
    }

    #[test]
    fn a_signed_entry_verifies_and_any_change_does_not() {
        let a = Identity::new(SigningKey::generate());
        let peers = trusted(&a);
        let fields = a.sign("decision g", &[("term", "3"), ("kind", "retire")]);
        assert_eq!(peers.verify("decision g", &fields), Ok(a.id()));
        assert!(matches!(
            peers.verify("decision other", &fields),
            Err(EntryRefused::BadSignature(_))
        ));
        let mut altered = fields.clone();
        altered[0].1 = "31337".into();
        assert!(matches!(
            peers.verify("decision g", &altered),
            Err(EntryRefused::BadSignature(_))
        ));
        let mut moved = fields.clone();
        moved.swap(0, 1);
        assert!(peers.verify("decision g", &moved).is_err());
        let unsigned = vec![("term".to_string(), "3".to_string())];
        assert_eq!(
            peers.verify("decision g", &unsigned),
            Err(EntryRefused::Unsigned)
        );
        let mallory = Identity::new(SigningKey::generate());
        let forged = mallory.sign("decision g", &[("term", "3")]);
        assert!(matches!(
            peers.verify("decision g", &forged),
            Err(EntryRefused::Untrusted(_))
        ));
    }

    #[test]
    fn a_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host-a.key.pem");
        let (first, made) = Identity::load_or_create(&path).expect("made");
        assert!(made && dir.path().join("host-a.pub.pem").exists());
        assert_eq!(public_key_path(&path), dir.path().join("host-a.pub.pem"));
        let (again, made) = Identity::load_or_create(&path).expect("read");
        assert!(!made && again.id() == first.id());
        std::fs::write(&path, "not a key").expect("writes");
        assert!(Identity::load_or_create(&path).is_err());
    }
}
