//! The keys a running daemon lives by: its trust store, re-read when the
//! file changes or a daemon key in it expires, and its own key file,
//! watched so that `garden key rotate` takes effect without a restart,
//! and the body keyring, watched the same way.
//!
//! Invariants:
//! - a key the file now holds is used only once the trust store trusts it;
//!   until then the daemon keeps its key and says so once;
//! - a new key is read with at once but written with only a heartbeat
//!   lifetime later (or at once if the old key is trusted no more): by
//!   then every live daemon has re-read its trust store and tags entries
//!   for it, so no entry is refused on the way;
//! - the old key is read with for as long as the trust store trusts it
//!   (`garden key rotate --grace`), so entries written to it and not yet
//!   read are still taken.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use garden_host::cluster::{Identity, Peers};
use garden_host::keyring::Keyring;
use garden_registry::trust::Role;
use garden_registry::{KeyId, SigningKey, TrustStore};

/// When a file last changed, if it can be told.
fn modified_of(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The trust store's file, when it last changed, and when a key in it
/// expires next.
pub(super) struct TrustFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    /// The store last read, to look again at when a key expires.
    store: Option<TrustStore>,
    expiry: Option<Instant>,
}

impl TrustFile {
    /// Watch `path`, whose store the daemon read at start.
    pub(super) fn new(path: PathBuf, store: &TrustStore) -> Self {
        let modified = modified_of(&path);
        let expiry = next_expiry(store);
        TrustFile {
            path,
            modified,
            store: Some(store.clone()),
            expiry,
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The store, if the file changed or a daemon key in it expired since
    /// the last call.
    pub(super) fn changed(&mut self) -> Option<TrustStore> {
        let now = modified_of(&self.path);
        if now != self.modified {
            self.modified = now;
            match TrustStore::read(&self.path) {
                Ok(store) => {
                    self.expiry = next_expiry(&store);
                    self.store = Some(store.clone());
                    return Some(store);
                }
                Err(e) => {
                    eprintln!(
                        "the trust store changed but cannot be read ({e}); keeping the last one"
                    );
                }
            }
        }
        if self.expiry.is_some_and(|at| Instant::now() >= at) {
            let store = self.store.clone()?;
            self.expiry = next_expiry(&store);
            return Some(store);
        }
        None
    }
}

fn next_expiry(store: &TrustStore) -> Option<Instant> {
    store
        .next_expiry_in(Role::Daemon)
        .map(|d| Instant::now() + d)
}

/// What changed about the daemon's own key this heartbeat.
pub(super) enum Rotation {
    /// A new key is in the file and trusted: read with it too, and write
    /// with the old one a while longer.
    Reading(Identity),
    /// Write with the new key from now on.
    Switched {
        /// The identity to use.
        identity: Identity,
        /// The key left.
        old: KeyId,
    },
}

/// The daemon's key file and the key it writes with.
pub(super) struct KeyFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    current: SigningKey,
    /// A key read from the file and trusted, written with from the instant.
    next: Option<(SigningKey, Instant)>,
    /// The last untrusted key reported, so it is reported once.
    warned: Option<KeyId>,
}

impl KeyFile {
    /// Watch `path`, which held `current` at start.
    pub(super) fn new(path: PathBuf, current: SigningKey) -> Self {
        let modified = modified_of(&path);
        KeyFile {
            path,
            modified,
            current,
            next: None,
            warned: None,
        }
    }

    /// The key written with.
    pub(super) fn current(&self) -> KeyId {
        self.current.public().id()
    }

    /// Look at the file and the clock: a new, trusted key is read with at
    /// once and written with `settle` later, or at once when the current
    /// key is trusted no more.
    pub(super) fn step(&mut self, peers: &Peers, settle: std::time::Duration) -> Option<Rotation> {
        let trusted = |k: &SigningKey| peers.name_of(&k.public().id()).is_some();
        let mut out = None;
        let now = modified_of(&self.path);
        if now != self.modified {
            match self.read_new(peers) {
                Some(key) => {
                    self.modified = now;
                    out = Some(Rotation::Reading(
                        Identity::new(self.current.clone()).also_reading(key.clone()),
                    ));
                    self.next = Some((key, Instant::now() + settle));
                }
                // An untrusted key is looked at again next beat: the trust
                // store may be about to trust it.
                None if self.warned.is_some() => {}
                None => self.modified = now,
            }
        }
        let due = self.next.as_ref().is_some_and(|(k, at)| {
            trusted(k) && (Instant::now() >= *at || !trusted(&self.current))
        });
        if due && let Some((key, _)) = self.next.take() {
            let old = std::mem::replace(&mut self.current, key);
            let old_id = old.public().id();
            return Some(Rotation::Switched {
                identity: Identity::new(self.current.clone()).also_reading(old),
                old: old_id,
            });
        }
        out
    }

    /// The key the file holds, if it is another trusted one; says once
    /// why not otherwise.
    fn read_new(&mut self, peers: &Peers) -> Option<SigningKey> {
        let key = match SigningKey::read(&self.path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!(
                    "the daemon key file changed but cannot be read ({e}); keeping the key in use"
                );
                self.warned = None;
                return None;
            }
        };
        let id = key.public().id();
        let pending = self.next.as_ref().map(|(k, _)| k.public().id());
        if id == self.current() || Some(id) == pending {
            self.warned = None;
            return None;
        }
        if peers.name_of(&id).is_none() {
            if self.warned != Some(id) {
                eprintln!(
                    "the daemon key file {} now holds key {id}, which the trust store does not trust as a daemon key; \
                     keeping key {} until it does (`garden key rotate` trusts the new key before it writes it)",
                    self.path.display(),
                    self.current()
                );
                self.warned = Some(id);
            }
            return None;
        }
        self.warned = None;
        Some(key)
    }
}

/// The garden's body keyring file (`--body-keys`), watched so that `garden
/// key rotate --body-keys` takes effect without a restart: a new key is
/// opened with at once and sealed with a heartbeat lifetime later, when
/// every daemon sharing the file has read it.
pub(super) struct BodyKeysFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    /// The key sealed with now.
    writer: String,
    /// When to start sealing with the file's current key.
    switch_at: Option<Instant>,
}

impl BodyKeysFile {
    /// Read the keyring at `path` and watch it.
    pub(super) fn open(
        path: PathBuf,
    ) -> Result<(BodyKeysFile, Arc<Keyring>), garden_host::keyring::KeyringError> {
        let keys = Keyring::read(&path)?;
        let file = BodyKeysFile {
            modified: modified_of(&path),
            writer: keys.writer_id().to_string(),
            path,
            switch_at: None,
        };
        Ok((file, Arc::new(keys)))
    }

    /// The keyring to use from now on, if it changed.
    pub(super) fn step(&mut self, settle: std::time::Duration) -> Option<Arc<Keyring>> {
        let now = modified_of(&self.path);
        let due = self.switch_at.is_some_and(|at| Instant::now() >= at);
        if now == self.modified && !due {
            return None;
        }
        self.modified = now;
        let keys = match Keyring::read(&self.path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!(
                    "the body keyring changed but cannot be read ({e}); keeping the keys in use"
                );
                return None;
            }
        };
        if keys.writer_id() == self.writer || due {
            self.switch_at = None;
            if keys.writer_id() != self.writer {
                eprintln!("sealing with body key {} from now on", keys.writer_id());
            }
            self.writer = keys.writer_id().to_string();
            return Some(Arc::new(keys));
        }
        eprintln!(
            "the body keyring holds a new key {}; opening with it now, sealing with it in {settle:?}",
            keys.writer_id()
        );
        self.switch_at = Some(Instant::now() + settle);
        Some(Arc::new(keys.sealing_with(&self.writer)))
    }
}
