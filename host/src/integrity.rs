//! Where the host's trust comes from: the operator's trust store, plus the
//! development key for the modules built into the binary.
//!
//! Invariant: the development key's private half is public, so it vouches
//! only for the exact bytes compiled into this binary (by sha256). A
//! component from a file signed with it is trusted only if the operator put
//! the key in the trust store on purpose.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use garden_registry::{Digest, PublicKey, TrustError, TrustStore};

/// Name under which the development key appears in a trust store.
pub const DEV_KEY_NAME: &str = "development key (built-in modules; never trust in production)";

/// The default trust file: `$GARDEN_TRUST`, else
/// `$XDG_CONFIG_HOME/garden/trust.toml`, else `~/.config/garden/trust.toml`.
pub fn default_trust_path() -> PathBuf {
    if let Some(p) = std::env::var_os("GARDEN_TRUST") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("garden").join("trust.toml")
}

/// The development key that signs the built-in modules (compiled in from
/// keys/dev.pub.pem).
pub fn dev_key() -> Result<PublicKey, garden_registry::KeyError> {
    PublicKey::from_pem(
        garden_modules::DEV_PUBLIC_KEY_PEM,
        Path::new("keys/dev.pub.pem"),
    )
}

/// A trust store holding only the development key: enough for the
/// built-in modules (tests, benches).
pub fn dev_trust() -> Result<TrustStore, TrustError> {
    let mut store = TrustStore::default();
    store.add(&dev_key()?, DEV_KEY_NAME, "built-in")?;
    Ok(store)
}

/// What `garden run` and `garden daemon` trust: the operator's store for
/// every component, and the development key for the built-in modules only.
#[derive(Debug, Clone)]
pub struct Trust {
    operator: TrustStore,
    /// The operator's store plus the development key, unless revoked there.
    builtin: Option<TrustStore>,
    /// sha256 of every module built into this binary.
    builtin_digests: HashSet<Digest>,
}

impl Trust {
    /// Trust the operator's `store`, and the development key for exactly
    /// the modules built into this binary unless `store` revokes it.
    pub fn new(store: TrustStore) -> Result<Self, TrustError> {
        let dev = dev_key()?;
        let builtin = if store.revoked.iter().any(|r| r.id == dev.id()) {
            None
        } else {
            let mut with_dev = store.clone();
            if !with_dev.keys.iter().any(|k| k.id == dev.id()) {
                with_dev.add(&dev, DEV_KEY_NAME, "built-in")?;
            }
            Some(with_dev)
        };
        let builtin_digests = garden_modules::MODULES
            .iter()
            .map(|(_, bytes)| Digest::of(bytes))
            .collect();
        Ok(Trust {
            operator: store,
            builtin,
            builtin_digests,
        })
    }

    /// The store at `path`: `named` says the user gave the path, and then a
    /// missing file is an error; the default path may be absent.
    pub fn read(path: &Path, named: bool) -> Result<Self, TrustError> {
        let store = if named {
            TrustStore::read_named(path)?
        } else {
            TrustStore::read(path)?
        };
        Self::new(store)
    }

    /// The store to verify `bytes` against: with the development key only
    /// when `bytes` are one of the built-in modules, byte for byte.
    pub fn store_for(&self, bytes: &[u8]) -> &TrustStore {
        match &self.builtin {
            Some(with_dev) if self.builtin_digests.contains(&Digest::of(bytes)) => with_dev,
            _ => &self.operator,
        }
    }
}

/// The current time, RFC 3339 UTC, for trust changes and signatures.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_key_is_trusted_for_built_in_bytes_only_unless_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trust.toml");
        let dev = dev_key().expect("dev key").id();
        let trust = Trust::read(&path, false).expect("empty store");
        let (_, builtin) = garden_modules::MODULES[0];
        assert!(trust.store_for(builtin).keys.iter().any(|k| k.id == dev));
        // One byte more and it is a file from elsewhere: the operator's
        // (empty) store decides.
        let mut other = builtin.to_vec();
        other.push(0);
        assert!(trust.store_for(&other).keys.is_empty());
        // A store named on the command line must exist.
        assert!(Trust::read(&path, true).is_err());
        let mut revoked = TrustStore::default();
        revoked.revoke(
            dev_key().expect("dev key").id(),
            "not in production",
            "2026-01-02T00:00:00Z",
        );
        revoked.write(&path).expect("write");
        let trust = Trust::read(&path, true).expect("store");
        assert!(trust.store_for(builtin).keys.is_empty());
    }
}
