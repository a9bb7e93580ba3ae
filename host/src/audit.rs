//! The host's side of the audit log: loads, refusals, quarantines and
//! refused publishes, appended to the hash-chained audit table of the store
//! (SQLite by default, PostgreSQL by URL).

use std::path::PathBuf;

use garden_registry::{Store, StoreError};

/// The default data directory: `$GARDEN_DATA`, else
/// `$XDG_DATA_HOME/garden`, else `~/.local/share/garden`.
pub fn default_data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GARDEN_DATA") {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("garden")
}

/// The default store: a SQLite file in the data directory.
pub fn default_store_url() -> String {
    format!(
        "sqlite://{}",
        default_data_dir().join("garden.db").display()
    )
}

/// A blocking handle on the audit log, for the synchronous host.
pub struct Audit {
    runtime: tokio::runtime::Runtime,
    store: Store,
}

impl Audit {
    /// Open (and migrate) the store at `url`; creates a SQLite file's
    /// directory if needed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://")
            && let Some(dir) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Url(format!("{url} (cannot start an async runtime: {e})")))?;
        let store = runtime.block_on(Store::connect(url))?;
        Ok(Audit { runtime, store })
    }

    /// Append a record. A failure to write is logged, not fatal: the run
    /// goes on, and the gap shows as a missing record, not a broken chain.
    pub fn record(&self, kind: &str, module: &str, actor: &str, detail: &str) {
        let at = crate::integrity::now_rfc3339();
        if let Err(e) = self
            .runtime
            .block_on(self.store.audit(&at, kind, module, actor, detail))
        {
            tracing::error!("could not write to the audit log: {e}");
        }
    }

    /// The store, for queries.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Run a store query to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}
