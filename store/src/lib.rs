//! The garden's durable records in one database: SQLite by default, or
//! PostgreSQL when given a `postgres://` URL (sqlx, one schema, migrations
//! embedded in the binary).
//!
//! * [`audit`]: the hash-chained audit log and its signed heads ([`anchor`]);
//! * [`index`] and the names in it: the registry's component index;
//! * [`runs`]: runs, lineage and recorded messages;
//! * [`parked`]: publishes a daemon could not send yet;
//! * [`Blocking`]: the one way synchronous code (the host) uses a store.
//!
//! Invariants: [`Store::connect`] migrates before it returns, so every
//! query meets the schema it was written for; a URL is only ever shown
//! through [`redacted`], never with its password; queries are written with
//! `?` placeholders, renumbered for PostgreSQL in one place.

pub mod anchor;
pub mod audit;
mod blocking;
pub mod index;
mod names;
pub mod parked;
pub mod runs;

pub use audit::{AuditCheck, AuditFilter, AuditRecord};
pub use blocking::Blocking;
pub use index::ComponentRow;
pub use runs::{RecordRow, RunInfo};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use garden_trust::SigningKey;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one this store speaks.
    #[error("unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    Url(String),
    /// The database refused or is unreachable.
    #[error("store {url}: {source}")]
    Db {
        /// The URL with any password removed.
        url: String,
        /// What went wrong.
        source: sqlx::Error,
    },
    /// The async runtime that runs store queries could not start.
    #[error("cannot start the runtime for store queries: {0}")]
    Runtime(String),
    /// Migrations failed.
    #[error("store {url}: migrating the schema failed: {source}")]
    Migrate {
        /// The URL with any password removed.
        url: String,
        /// What went wrong.
        source: sqlx::migrate::MigrateError,
    },
    /// The name belongs to another publisher.
    #[error(
        "the name `{name}` belongs to key {owner}; publish under another name, or ask its owner for a delegation (`garden delegate {name} --to YOUR-KEY-ID`)"
    )]
    NotOwner {
        /// The name.
        name: String,
        /// Its owner's key id.
        owner: String,
    },
    /// name@version already exists with other bytes.
    #[error(
        "{name}@{version} is already published with sha256 {existing}; a version's bytes never change: publish a new version"
    )]
    Collision {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// The digest already published.
        existing: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    kind: Kind,
    url: String,
    anchor: Option<std::sync::Arc<Anchor>>,
}

/// Who signs the audit chain's head after every append, and the file where
/// that writer keeps its own copy (see [`crate::anchor`]).
#[derive(Debug)]
struct Anchor {
    key: SigningKey,
    file: Option<std::path::PathBuf>,
}

/// A URL fit to print: a password in it becomes `***` (the user stays, so
/// the reader knows which account). The one redaction every store, bus and
/// command uses.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The file of a `sqlite://` URL, if it names one.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// How often a process waiting for another's migration looks again.
const MIGRATION_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// An exclusive lock on `PATH.lock`, held while the returned file lives.
/// Without a lock file (a read-only directory) nothing is held: the
/// migration then runs as before.
async fn migration_turn(path: &std::path::Path) -> Option<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::path::PathBuf::from(name))
        .ok()?;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) => tokio::time::sleep(MIGRATION_RETRY).await,
            Err(std::fs::TryLockError::Error(_)) => return None,
        }
    }
}

impl Store {
    /// Connect (creating a SQLite file if needed) and migrate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Kind::Postgres
        } else {
            return Err(StoreError::Url(redacted(url)));
        };
        let connect_url =
            if kind == Kind::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            } else {
                url.to_string()
            };
        let shown = redacted(url);
        // A short acquire timeout: a caller that retries (the recorder)
        // learns of an outage in seconds, not after sqlx's default 30 s.
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == Kind::Sqlite { 1 } else { 5 })
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Db {
                url: shown.clone(),
                source,
            })?;
        // Two processes opening one new SQLite file at once would both
        // apply the first migration; a lock file beside it makes them take
        // turns (PostgreSQL's migrations take a lock of their own).
        let _turn = match (kind, sqlite_path(url)) {
            (Kind::Sqlite, Some(path)) => Some(migration_turn(&path).await),
            _ => None,
        };
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            kind,
            url: shown,
            anchor: None,
        })
    }

    /// Sign the audit chain's head with `key` after every append, keeping
    /// the signed head in the store and, when given, in `file` too.
    pub fn with_audit_signer(mut self, key: SigningKey, file: Option<std::path::PathBuf>) -> Self {
        self.anchor = Some(std::sync::Arc::new(Anchor { key, file }));
        self
    }

    pub(crate) fn sql(&self, text: &str) -> String {
        if self.kind == Kind::Sqlite {
            return text.to_string();
        }
        // `?` placeholders become `$1`, `$2`, ... for PostgreSQL.
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub(crate) fn db(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |source| StoreError::Db {
            url: self.url.clone(),
            source,
        }
    }

    /// Run raw SQL (tests use it to tamper with the audit log).
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(sql)
            .execute(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(done.rows_affected())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh SQLite store in a temporary directory.
    pub(crate) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("garden.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("postgres://u:secret@127.0.0.1:5/db"),
            "postgres://u:***@127.0.0.1:5/db"
        );
        assert_eq!(redacted("sqlite://x.db"), "sqlite://x.db");
    }
}
