//! Where the host's trust comes from: the operator's trust store, plus the
//! development key for the modules built into the binary.
//!
//! Invariant: the development key's private half is public, so it vouches
//! only for the exact bytes compiled into this binary (by sha256). A
//! component from a file signed with it is trusted only if the operator put
//! the key in the trust store on purpose.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use garden_trust::{Digest, PublicKey, TrustError, TrustStore};

/// Name under which the development key appears in a trust store.
pub const DEV_KEY_NAME: &str = "development key (built-in modules; never trust in production)";

/// The default trust file: `$GARDEN_TRUST`, else
/// `$XDG_CONFIG_HOME/garden/trust.toml`, else `~/.config/garden/trust.toml`
/// (see [`crate::paths`]).
pub fn default_trust_path() -> PathBuf {
    crate::paths::trust_file()
}

/// The development key that signs the built-in modules (compiled in from
/// keys/dev.pub.pem).
pub fn dev_key() -> Result<PublicKey, garden_trust::KeyError> {
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
        let builtin = if store.revoked.iter().any(|r| r.id.matches(&dev.id())) {
            None
        } else {
            let mut with_dev = store.clone();
            if !with_dev.keys.iter().any(|k| k.id.matches(&dev.id())) {
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

    /// The operator's own store, without the development key: the one
    /// whose daemon keys a daemon accepts entries from.
    pub fn operator(&self) -> &TrustStore {
        &self.operator
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

/// Why a module is refused as a downgrade.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// An older version than one this host already ran.
    #[error(
        "{name}@{version} is older than {name}@{newest}, which this host ran before: a downgrade can bring back what a newer version fixed. Run it on purpose with --allow-downgrade"
    )]
    Downgrade {
        /// The module.
        name: String,
        /// The version offered.
        version: String,
        /// The newest version run before.
        newest: String,
    },
    /// The record of versions cannot be read or written.
    #[error("the record of module versions {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The newest version of every module this host has run
/// (`versions.toml` in the data directory), so that a module is never
/// replaced by an older one without the operator asking for it.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    path: PathBuf,
    newest: std::collections::BTreeMap<String, String>,
}

impl Versions {
    /// The record in `data_dir` (empty if there is none yet).
    pub fn read(data_dir: &Path) -> Result<Self, VersionError> {
        let path = data_dir.join("versions.toml");
        let err = |message: String| VersionError::File {
            path: path.clone(),
            message,
        };
        let newest = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Versions { path, newest })
    }

    /// Refuse `name@version` if this host ran a newer version of `name`,
    /// unless `allow_downgrade`; otherwise remember it as the newest.
    pub fn admit(
        &mut self,
        name: &str,
        version: &str,
        allow_downgrade: bool,
    ) -> Result<(), VersionError> {
        let parse = |v: &str| semver::Version::parse(v).ok();
        let offered = parse(version);
        if let Some(newest) = self.newest.get(name)
            && let (Some(offered), Some(known)) = (&offered, parse(newest))
        {
            if *offered < known && !allow_downgrade {
                return Err(VersionError::Downgrade {
                    name: name.to_string(),
                    version: version.to_string(),
                    newest: newest.clone(),
                });
            }
            if *offered <= known {
                return Ok(());
            }
        }
        self.newest.insert(name.to_string(), version.to_string());
        Ok(())
    }

    /// Keep the record (written whole, then renamed into place).
    pub fn write(&self) -> Result<(), VersionError> {
        let err = |message: String| VersionError::File {
            path: self.path.clone(),
            message,
        };
        let text = toml::to_string(&self.newest).map_err(|e| err(e.to_string()))?;
        garden_trust::files::replace(&self.path, &[text.as_bytes()]).map_err(|e| err(e.to_string()))
    }
}

/// The current time, RFC 3339 UTC, for trust changes and signatures.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The time `after` from now, as RFC 3339 (UTC, seconds): an expiry.
pub fn rfc3339_after(after: std::time::Duration) -> String {
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_add_signed(after)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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

    #[test]
    fn an_older_version_is_refused_unless_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = Versions::read(dir.path()).expect("empty");
        v.admit("m", "1.2.0", false).expect("first");
        v.write().expect("kept");
        let mut again = Versions::read(dir.path()).expect("read");
        again.admit("m", "1.2.0", false).expect("same version");
        again.admit("m", "1.3.0", false).expect("newer");
        let refused = again.admit("m", "1.1.9", false).expect_err("older");
        assert!(
            refused.to_string().contains("--allow-downgrade"),
            "{refused}"
        );
        again.admit("m", "1.1.9", true).expect("on purpose");
        again
            .admit("other", "0.1.0", false)
            .expect("another module");
    }
}
