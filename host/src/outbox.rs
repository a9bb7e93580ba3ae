//! The outbox in the store: publishes a daemon could not send to Redis wait
//! in the `outbox` table (PostgreSQL or SQLite), in order, and are
//! forwarded when Redis is back, even by a restarted daemon of the same
//! name. Receivers skip an entry they have already handled, so one sent
//! twice (forwarded, then the table not cleared) changes nothing.

use garden_registry::Store;

use crate::bus::redis::{Fields, Outbox};

/// An [`Outbox`] in the store at a URL, for one daemon (`owner`).
pub struct StoreOutbox {
    runtime: tokio::runtime::Runtime,
    url: String,
    store: Option<Store>,
    owner: String,
}

impl StoreOutbox {
    /// The outbox of daemon `owner` in the store at `url` (connected when
    /// first needed, so a store that is down now does not stop a start).
    pub fn new(url: &str, owner: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start an async runtime: {e}"))?;
        Ok(StoreOutbox {
            runtime,
            url: url.to_string(),
            store: None,
            owner: owner.to_string(),
        })
    }

    fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(&Store, &str) -> Result<T, garden_registry::StoreError>,
    ) -> Result<T, String> {
        let (url, owner) = (self.url.clone(), self.owner.clone());
        let store = &mut self.store;
        let result = self.runtime.block_on(async {
            if store.is_none() {
                *store = Some(Store::connect(&url).await?);
            }
            match store.as_ref() {
                Some(s) => f(s, &owner).await,
                None => Err(garden_registry::StoreError::Url(url.clone())),
            }
        });
        if result.is_err() {
            self.store = None;
        }
        result.map_err(|e| e.to_string())
    }
}

impl Outbox for StoreOutbox {
    fn park(&mut self, entries: &[(String, Fields)]) -> Result<(), String> {
        let rows: Vec<(String, String)> = entries
            .iter()
            .map(|(stream, fields)| {
                (
                    stream.clone(),
                    serde_json::to_string(fields).unwrap_or_default(),
                )
            })
            .collect();
        self.with(async |s, owner| s.outbox_park(owner, &rows).await)
    }

    fn parked(&mut self, max: usize) -> Result<Vec<(i64, String, Fields)>, String> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self.with(async |s, owner| s.outbox_peek(owner, max).await)?;
        Ok(rows
            .into_iter()
            .map(|(n, stream, fields)| {
                (n, stream, serde_json::from_str(&fields).unwrap_or_default())
            })
            .collect())
    }

    fn forwarded(&mut self, upto: i64) -> Result<(), String> {
        self.with(async |s, owner| s.outbox_remove(owner, upto).await)
    }
}
