//! The one way synchronous code uses a store: [`Blocking`], a handle that
//! runs store queries to completion on one async runtime shared by the whole
//! process, connecting when first needed and again after a failure.
//!
//! Invariants: every handle in a process drives its queries on the same
//! runtime (one worker thread), so the host's audit log, parked outbox and
//! recorder do not each start their own; a query that fails drops the
//! connection, so the next one reconnects instead of reusing a broken pool.

use std::sync::{Arc, Mutex, OnceLock};

use garden_trust::SigningKey;

use crate::{Store, StoreError};

/// The process's runtime for store queries, made on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("garden-store")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| StoreError::Runtime(reason.clone()))
}

/// A blocking handle on the store at one URL. Cheap to clone: clones share
/// the connection.
#[derive(Clone, Debug)]
pub struct Blocking {
    url: String,
    anchor: Option<Arc<crate::Anchor>>,
    store: Arc<Mutex<Option<Store>>>,
}

impl Blocking {
    /// A handle on the store at `url`, connected when first used, so that
    /// a store that is down now does not stop a start.
    pub fn lazy(url: &str) -> Self {
        Blocking {
            url: url.to_string(),
            anchor: None,
            store: Arc::new(Mutex::new(None)),
        }
    }

    /// A handle on the store at `url`, connected (and migrated) now.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let handle = Self::lazy(url);
        handle.run(async |_| Ok(()))?;
        Ok(handle)
    }

    /// Sign the audit chain's head with `key` after every append (see
    /// [`Store::with_audit_signer`]).
    pub fn with_audit_signer(mut self, key: SigningKey, file: Option<std::path::PathBuf>) -> Self {
        self.anchor = Some(Arc::new(crate::Anchor { key, file }));
        if let Ok(mut slot) = self.store.lock() {
            *slot = None;
        }
        self
    }

    /// The URL, fit to print.
    pub fn url(&self) -> String {
        crate::redacted(&self.url)
    }

    /// Run `query` on the store to completion, connecting first if needed.
    pub fn run<T>(
        &self,
        query: impl AsyncFnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let runtime = runtime()?;
        let connected = self.store.lock().ok().and_then(|slot| slot.clone());
        let result = runtime.block_on(async {
            let store = match connected {
                Some(store) => store,
                None => {
                    let mut store = Store::connect(&self.url).await?;
                    store.anchor = self.anchor.clone();
                    if let Ok(mut slot) = self.store.lock() {
                        *slot = Some(store.clone());
                    }
                    store
                }
            };
            query(&store).await
        });
        if let Err(StoreError::Db { .. } | StoreError::Migrate { .. }) = &result
            && let Ok(mut slot) = self.store.lock()
        {
            *slot = None;
        }
        result
    }
}
