//! The host's trust store: publisher keys it trusts and keys it has revoked.
//! A TOML file; `garden trust add|list|revoke` edit it.
//!
//! Invariants:
//! - a key has one role. A publisher key signs components and nothing else;
//!   a daemon key signs what a daemon writes to the shared bus (decisions,
//!   heartbeats) and never a component, so a stolen daemon key cannot
//!   publish code and a publisher cannot steer a garden;
//! - a daemon key may carry an expiry (`garden key rotate` sets one on the
//!   key it replaces): from that instant on it is trusted no more, as if
//!   revoked; an expiry that does not parse counts as passed.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signature::{self, SignatureError, SignedComponent};
use crate::{Digest, KeyError, KeyId, Manifest, PublicKey};

/// Why a component is refused, or the trust store is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The component's structure or signature section is wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The code is not the code the manifest names.
    #[error(
        "the code's sha256 is {actual} but the signed manifest names {signed}: the code was changed after signing, or the signature belongs to another component"
    )]
    CodeMismatch {
        /// sha256 of the code as found.
        actual: Digest,
        /// What the manifest says.
        signed: String,
    },
    /// The manifest names another publisher than the signer.
    #[error("the manifest names publisher {manifest} but it was signed by {signer}")]
    PublisherMismatch {
        /// In the manifest.
        manifest: String,
        /// The signing key.
        signer: KeyId,
    },
    /// The signing key is not trusted.
    #[error(
        "signed by key {0}, which this host does not trust; add it with `garden trust add KEY.pub.pem` if you trust its owner"
    )]
    Untrusted(KeyId),
    /// The signing key was revoked.
    #[error("signed by key {key} (at {signed_at}), which was revoked at {revoked_at}: {reason}")]
    Revoked {
        /// The key.
        key: KeyId,
        /// The revocation reason.
        reason: String,
        /// When it was revoked.
        revoked_at: String,
        /// When the component was signed.
        signed_at: String,
    },
    /// The signature does not verify.
    #[error(
        "the signature by key {0} does not verify: the manifest or the signature was changed after signing"
    )]
    BadSignature(KeyId),
    /// The trust file cannot be read or written.
    #[error("trust store {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// One key, one role.
    #[error(
        "key {key} is trusted as a {role} already; a key has one role: make another key for the other"
    )]
    OtherRole {
        /// The key.
        key: KeyId,
        /// The role it has.
        role: Role,
    },
}

/// The directory holding a trust file (`.` for a bare file name).
fn store_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// What a trusted key may sign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Components (the default, and what stores written before roles hold).
    #[default]
    Publisher,
    /// A daemon's entries on a shared bus.
    Daemon,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Daemon => "daemon",
        })
    }
}

/// A trusted key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Its id.
    pub id: KeyId,
    /// A name for people.
    pub name: String,
    /// What it may sign.
    #[serde(default)]
    pub role: Role,
    /// SubjectPublicKeyInfo PEM.
    pub public_key: String,
    /// When it was added, RFC 3339.
    pub added_at: String,
    /// When it stops being trusted, RFC 3339 (none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl TrustedKey {
    /// Whether its expiry, if it has one, has passed at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expiry()
            .is_some_and(|at| at.is_none_or(|at| at <= now))
    }

    /// Its expiry: `None` without one, `Some(None)` for one that does not
    /// parse (and so has passed).
    fn expiry(&self) -> Option<Option<DateTime<Utc>>> {
        self.expires_at.as_ref().map(|text| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
    }
}

/// A revoked key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedKey {
    /// Its id.
    pub id: KeyId,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub revoked_at: String,
}

/// The trust store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    /// Trusted keys.
    #[serde(default, rename = "key")]
    pub keys: Vec<TrustedKey>,
    /// Revoked keys.
    #[serde(default, rename = "revoked")]
    pub revoked: Vec<RevokedKey>,
}

/// A component whose signature verified against a trusted, unrevoked key.
#[derive(Debug, Clone)]
pub struct Verified<'a> {
    /// The verified component.
    pub component: SignedComponent<'a>,
    /// The trusted key's name.
    pub signer_name: String,
}

impl Verified<'_> {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.component.manifest
    }
}

impl TrustStore {
    /// Read a trust file the user named: a missing or unreadable file is an
    /// error (an empty store would refuse everything for a reason nobody
    /// sees, or trust less than the operator meant).
    pub fn read_named(path: &Path) -> Result<Self, TrustError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => Self::read(path),
            Ok(_) => Err(TrustError::Store {
                path: path.to_path_buf(),
                message: "not a file; give the path of a trust store (TOML)".into(),
            }),
            Err(e) => Err(TrustError::Store {
                path: path.to_path_buf(),
                message: format!(
                    "{e}; check the path, or create the store with `garden trust add KEY.pub.pem --trust {}`",
                    path.display()
                ),
            }),
        }
    }

    /// Read a trust file; a missing file is an empty store.
    pub fn read(path: &Path) -> Result<Self, TrustError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| TrustError::Store {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustStore::default()),
            Err(e) => Err(TrustError::Store {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    /// Write the trust file (creating its directory): to a temporary file
    /// (0600) in the same directory, then renamed over `path`, so a reader
    /// sees the old store or the new one, never half of one, and a symlink
    /// at `path` is replaced, not written through.
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        let err = |message: String| TrustError::Store {
            path: path.to_path_buf(),
            message,
        };
        let text = toml::to_string(self).map_err(|e| err(e.to_string()))?;
        crate::files::replace(path, &[text.as_bytes()]).map_err(|e| err(e.to_string()))
    }

    /// Read the store at `path`, apply `change`, and write it back, holding
    /// an exclusive lock (`<path>.lock`) throughout, so two `garden trust`
    /// commands at once cannot lose each other's change.
    pub fn update<R>(
        path: &Path,
        change: impl FnOnce(&mut TrustStore) -> Result<R, TrustError>,
    ) -> Result<R, TrustError> {
        let err = |message: String| TrustError::Store {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(store_dir(path)).map_err(|e| err(e.to_string()))?;
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open the lock file: {e}")))?;
        lock.lock()
            .map_err(|e| err(format!("cannot lock the store: {e}")))?;
        let mut store = TrustStore::read(path)?;
        let result = change(&mut store)?;
        store.write(path)?;
        // The lock is released when `lock` is dropped.
        Ok(result)
    }

    /// Trust `key` under `name` as a publisher; trusting a revoked key is
    /// refused.
    pub fn add(&mut self, key: &PublicKey, name: &str, now: &str) -> Result<KeyId, TrustError> {
        self.add_as(key, name, Role::Publisher, now)
    }

    /// Trust `key` under `name` in `role`. A revoked key, or one trusted
    /// already in the other role, is refused.
    pub fn add_as(
        &mut self,
        key: &PublicKey,
        name: &str,
        role: Role,
        now: &str,
    ) -> Result<KeyId, TrustError> {
        let id = key.id();
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| k.id.matches(&id) && k.role != role)
        {
            return Err(TrustError::OtherRole {
                key: id,
                role: k.role,
            });
        }
        if let Some(r) = self.revoked.iter().find(|r| r.id.matches(&id)) {
            return Err(TrustError::Revoked {
                key: id,
                reason: r.reason.clone(),
                revoked_at: r.revoked_at.clone(),
                signed_at: "-".into(),
            });
        }
        if !self.keys.iter().any(|k| k.id.matches(&id)) {
            self.keys.push(TrustedKey {
                id,
                name: name.into(),
                role,
                public_key: key.to_pem(),
                added_at: now.into(),
                expires_at: None,
            });
        }
        Ok(id)
    }

    /// Revoke `id` with a reason; it stays listed as revoked forever.
    pub fn revoke(&mut self, id: KeyId, reason: &str, now: &str) {
        self.keys.retain(|k| !k.id.matches(&id));
        if !self.revoked.iter().any(|r| r.id.matches(&id)) {
            self.revoked.push(RevokedKey {
                id,
                reason: reason.into(),
                revoked_at: now.into(),
            });
        }
    }

    /// Verify a signed component: structure, code hash, signature, then
    /// trust and revocation.
    pub fn verify<'a>(&self, bytes: &'a [u8]) -> Result<Verified<'a>, TrustError> {
        let component = signature::parse(bytes)?;
        let signed = component.manifest.component.clone().unwrap_or_default();
        if signed != component.digest.to_hex() {
            return Err(TrustError::CodeMismatch {
                actual: component.digest,
                signed,
            });
        }
        if component.manifest.publisher != Some(component.key_id) {
            return Err(TrustError::PublisherMismatch {
                manifest: component
                    .manifest
                    .publisher
                    .map_or_else(|| "nobody".to_string(), |k| k.to_string()),
                signer: component.key_id,
            });
        }
        if let Some(r) = self
            .revoked
            .iter()
            .find(|r| r.id.matches(&component.key_id))
        {
            return Err(TrustError::Revoked {
                key: r.id,
                reason: r.reason.clone(),
                revoked_at: r.revoked_at.clone(),
                signed_at: component.signed_at.clone(),
            });
        }
        let Some(trusted) = self
            .keys
            .iter()
            .find(|k| k.id.matches(&component.key_id) && k.role == Role::Publisher)
        else {
            return Err(TrustError::Untrusted(component.key_id));
        };
        let key = PublicKey::from_pem(&trusted.public_key, Path::new("trust store"))?;
        if !key.id().matches(&component.key_id)
            || !key.verify(&component.message(), &component.signature)
        {
            return Err(TrustError::BadSignature(component.key_id));
        }
        Ok(Verified {
            signer_name: trusted.name.clone(),
            component,
        })
    }

    /// Stop trusting daemon key `id` at `at` (RFC 3339): what `garden key
    /// rotate` does to the key it replaces, so that entries it wrote are
    /// still read for a while. Only a daemon key expires; a publisher key
    /// is revoked.
    pub fn expire(&mut self, id: &KeyId, at: &str) -> Result<(), TrustError> {
        let store = |message: String| TrustError::Store {
            path: PathBuf::from("trust store"),
            message,
        };
        DateTime::parse_from_rfc3339(at)
            .map_err(|e| store(format!("expiry `{at}` is not an RFC 3339 time: {e}")))?;
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.id.matches(id))
            .ok_or_else(|| store(format!("key {id} is not trusted here, so it cannot expire")))?;
        if key.role != Role::Daemon {
            return Err(store(format!(
                "key {id} is a {} key; only a daemon key expires (revoke a publisher key instead)",
                key.role
            )));
        }
        key.expires_at = Some(at.to_string());
        Ok(())
    }

    /// The first expiry after `now` of a key in `role`: when the keys that
    /// role trusts change next without the file changing.
    pub fn next_expiry(&self, role: Role, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.keys
            .iter()
            .filter(|k| k.role == role)
            .filter_map(|k| k.expiry().flatten())
            .filter(|at| *at > now)
            .min()
    }

    /// How long from now until [`TrustStore::next_expiry`].
    pub fn next_expiry_in(&self, role: Role) -> Option<std::time::Duration> {
        let now = Utc::now();
        self.next_expiry(role, now)
            .and_then(|at| (at - now).to_std().ok())
    }

    /// Every trusted, unrevoked, unexpired key in `role`, parsed, with its
    /// name.
    pub fn keys_in_role(&self, role: Role) -> Vec<(PublicKey, String)> {
        self.keys_in_role_at(role, Utc::now())
    }

    /// [`TrustStore::keys_in_role`] as of `now`.
    pub fn keys_in_role_at(&self, role: Role, now: DateTime<Utc>) -> Vec<(PublicKey, String)> {
        self.keys
            .iter()
            .filter(|k| k.role == role && !self.revoked.iter().any(|r| r.id.matches(&k.id)))
            .filter(|k| !k.expired(now))
            .filter_map(|k| {
                let key = PublicKey::from_pem(&k.public_key, Path::new("trust store")).ok()?;
                key.id().matches(&k.id).then(|| (key, k.name.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn manifest() -> Manifest {
        Manifest::parse(
            "name = \"m\"\nversion = \"1.0.0\"\nrole = \"r\"\nwit_package = \"garden:pipeline@0.4.0\"\nwit_world = \"garden-module\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn trusted_verifies_untrusted_and_revoked_do_not() {
        let alice = SigningKey::generate();
        let mallory = SigningKey::generate();
        let mut store = TrustStore::default();
        store
            .add(&alice.public(), "alice", "2026-01-01T00:00:00Z")
            .unwrap();
        let signed = signature::sign(EMPTY, &manifest(), &alice, "2026-02-01T00:00:00Z").unwrap();
        assert_eq!(store.verify(&signed).unwrap().signer_name, "alice");
        let other = signature::sign(EMPTY, &manifest(), &mallory, "2026-02-01T00:00:00Z").unwrap();
        assert!(matches!(
            store.verify(&other),
            Err(TrustError::Untrusted(_))
        ));
        store.revoke(alice.public().id(), "key leaked", "2026-03-01T00:00:00Z");
        let err = store.verify(&signed).unwrap_err();
        assert!(matches!(err, TrustError::Revoked { .. }));
        assert!(
            err.to_string().contains("key leaked") && err.to_string().contains("2026-02-01"),
            "{err}"
        );
        assert!(
            store.add(&alice.public(), "alice", "now").is_err(),
            "a revoked key cannot be re-trusted"
        );
    }

    #[test]
    fn store_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        assert!(
            TrustStore::read(&path).unwrap().keys.is_empty(),
            "missing file is empty"
        );
        let mut store = TrustStore::default();
        let k = SigningKey::generate();
        store.add(&k.public(), "k", "t").unwrap();
        store.write(&path).unwrap();
        let again = TrustStore::read(&path).unwrap();
        assert_eq!(again.keys.len(), 1);
        assert_eq!(again.keys[0].id, k.public().id());
        std::fs::write(&path, "[[key]]\nid = 3\n").unwrap();
        assert!(matches!(
            TrustStore::read(&path),
            Err(TrustError::Store { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_written_atomically_privately_and_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("trust.toml");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let key = SigningKey::generate();
        let mut store = TrustStore::default();
        store
            .add(&key.public(), "k", "2026-01-01T00:00:00Z")
            .unwrap();
        store.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by the store"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(TrustStore::read(&path).unwrap().keys.len(), 1);
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.toml");
        let keys: Vec<SigningKey> = (0..24).map(|_| SigningKey::generate()).collect();
        std::thread::scope(|scope| {
            for chunk in keys.chunks(6) {
                let path = &path;
                scope.spawn(move || {
                    for key in chunk {
                        TrustStore::update(path, |s| {
                            s.add(&key.public(), "k", "2026-01-01T00:00:00Z")
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(TrustStore::read(&path).unwrap().keys.len(), 24);
    }

    #[test]
    fn a_store_written_with_the_older_8_byte_ids_still_trusts_and_revokes() {
        let alice = SigningKey::generate();
        let bob = SigningKey::generate();
        let short = |k: &SigningKey| k.public().id().to_string()[..16].to_string();
        let text = format!(
            "[[key]]\nid = \"{}\"\nname = \"alice\"\npublic_key = \"\"\"{}\"\"\"\nadded_at = \"2025-01-01T00:00:00Z\"\n\n\
             [[revoked]]\nid = \"{}\"\nreason = \"old laptop\"\nrevoked_at = \"2025-06-01T00:00:00Z\"\n",
            short(&alice),
            alice.public().to_pem(),
            short(&bob),
        );
        let store: TrustStore = toml::from_str(&text).unwrap();
        let by_alice = signature::sign(EMPTY, &manifest(), &alice, "2026-02-01T00:00:00Z").unwrap();
        assert_eq!(store.verify(&by_alice).unwrap().signer_name, "alice");
        let by_bob = signature::sign(EMPTY, &manifest(), &bob, "2026-02-01T00:00:00Z").unwrap();
        assert!(matches!(
            store.verify(&by_bob),
            Err(TrustError::Revoked { .. })
        ));
    }

    #[test]
    fn an_expired_daemon_key_is_trusted_no_more_and_a_garbled_expiry_counts_as_passed() {
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        let mut store = TrustStore::default();
        for k in [&old, &new] {
            store
                .add_as(&k.public(), "host-a", Role::Daemon, "2026-01-01T00:00:00Z")
                .unwrap();
        }
        store
            .expire(&old.public().id(), "2026-06-01T12:00:00Z")
            .unwrap();
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let ids = |store: &TrustStore, now| -> Vec<KeyId> {
            store
                .keys_in_role_at(Role::Daemon, now)
                .iter()
                .map(|(k, _)| k.id())
                .collect()
        };
        assert_eq!(
            ids(&store, at("2026-06-01T11:59:59Z")),
            vec![old.public().id(), new.public().id()]
        );
        assert_eq!(
            ids(&store, at("2026-06-01T12:00:00Z")),
            vec![new.public().id()]
        );
        assert_eq!(
            store.next_expiry(Role::Daemon, at("2026-05-01T00:00:00Z")),
            Some(at("2026-06-01T12:00:00Z"))
        );
        assert_eq!(
            store.next_expiry(Role::Daemon, at("2026-07-01T00:00:00Z")),
            None
        );
        // Written to the file and read back, the expiry holds.
        let again: TrustStore = toml::from_str(&toml::to_string(&store).unwrap()).unwrap();
        assert_eq!(
            again
                .keys_in_role_at(Role::Daemon, at("2026-07-01T00:00:00Z"))
                .len(),
            1
        );
        store.keys[1].expires_at = Some("next tuesday".into());
        assert_eq!(
            ids(&store, at("2026-01-02T00:00:00Z")),
            vec![old.public().id()]
        );
        assert!(store.expire(&new.public().id(), "soon").is_err());
        let publisher = SigningKey::generate();
        store.add(&publisher.public(), "p", "now").unwrap();
        let err = store
            .expire(&publisher.public().id(), "2026-06-01T12:00:00Z")
            .unwrap_err();
        assert!(
            err.to_string().contains("only a daemon key expires"),
            "{err}"
        );
    }

    #[test]
    fn a_daemon_key_signs_no_component_and_a_key_has_one_role() {
        let daemon = SigningKey::generate();
        let mut store = TrustStore::default();
        store
            .add_as(
                &daemon.public(),
                "host-a",
                Role::Daemon,
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        let signed = signature::sign(EMPTY, &manifest(), &daemon, "2026-02-01T00:00:00Z").unwrap();
        assert!(matches!(
            store.verify(&signed),
            Err(TrustError::Untrusted(_))
        ));
        let has = |store: &TrustStore, role| {
            store
                .keys_in_role(role)
                .iter()
                .any(|(k, _)| k.id() == daemon.public().id())
        };
        assert!(has(&store, Role::Daemon));
        assert!(!has(&store, Role::Publisher));
        let err = store.add(&daemon.public(), "host-a", "now").unwrap_err();
        assert!(
            err.to_string().contains("trusted as a daemon already"),
            "{err}"
        );
        store.revoke(daemon.public().id(), "gone", "now");
        assert!(!has(&store, Role::Daemon));
    }
}
