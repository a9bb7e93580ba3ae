//! Where the host's trust comes from: the operator's trust store, plus the
//! development key for the modules built into the binary.

use std::path::{Path, PathBuf};

use garden_registry::{PublicKey, TrustError, TrustStore};

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

/// The trust for `garden run`: the store at `path`, plus the development
/// key unless that store revoked it.
pub fn run_trust(path: &Path) -> Result<TrustStore, TrustError> {
    let mut store = TrustStore::read(path)?;
    let dev = dev_key()?;
    if !store.revoked.iter().any(|r| r.id == dev.id()) {
        store.add(&dev, DEV_KEY_NAME, "built-in")?;
    }
    Ok(store)
}

/// The current time, RFC 3339 UTC, for trust changes and signatures.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_trust_adds_the_dev_key_unless_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trust.toml");
        let store = run_trust(&path).expect("empty store");
        assert!(
            store
                .keys
                .iter()
                .any(|k| k.id == dev_key().expect("dev key").id())
        );
        let mut revoked = TrustStore::default();
        revoked.revoke(
            dev_key().expect("dev key").id(),
            "not in production",
            "2026-01-02T00:00:00Z",
        );
        revoked.write(&path).expect("write");
        let store = run_trust(&path).expect("store");
        assert!(store.keys.is_empty());
    }
}
