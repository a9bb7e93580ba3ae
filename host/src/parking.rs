//! Parking in the store: publishes a daemon could not send to Redis wait
//! in the store's `outbox` table (PostgreSQL or SQLite), in order, and are
//! forwarded when Redis is back, even by a restarted daemon of the same
//! name. Receivers skip an entry they have already handled, so one sent
//! twice (forwarded, then the table not cleared) changes nothing.

use garden_store::{Blocking, Store, StoreError};

use crate::bus::redis::{Fields, Parking};

/// A [`Parking`] in the store at a URL, for one daemon (`owner`).
pub struct StoreParking {
    store: Blocking,
    owner: String,
}

impl StoreParking {
    /// The parked publishes of daemon `owner` in the store at `url` (connected when
    /// first needed, so a store that is down now does not stop a start).
    pub fn new(url: &str, owner: &str) -> Self {
        StoreParking {
            store: Blocking::lazy(url),
            owner: owner.to_string(),
        }
    }

    fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(&Store, &str) -> Result<T, StoreError>,
    ) -> Result<T, String> {
        let owner = self.owner.as_str();
        self.store
            .run(async |s| f(s, owner).await)
            .map_err(|e| e.to_string())
    }
}

impl Parking for StoreParking {
    fn park(&mut self, entries: &[(String, Fields)]) -> Result<(), String> {
        let rows = entries
            .iter()
            .map(|(stream, fields)| {
                serde_json::to_string(fields)
                    .map(|json| (stream.clone(), json))
                    .map_err(|e| format!("cannot encode an entry for {stream} to park it: {e}"))
            })
            .collect::<Result<Vec<(String, String)>, String>>()?;
        self.with(async |s, owner| s.park(owner, &rows).await)
    }

    fn parked(&mut self, max: usize) -> Result<Vec<(i64, String, Fields)>, String> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self.with(async |s, owner| s.parked(owner, max).await)?;
        // A row that does not decode is an error that stops the forwarding,
        // never an empty entry sent and then deleted: what it held would be
        // lost without a trace.
        rows.into_iter()
            .map(|(n, stream, fields)| match serde_json::from_str(&fields) {
                Ok(fields) => Ok((n, stream, fields)),
                Err(e) => Err(format!(
                    "parked row {n} of daemon `{}` (for {stream}) is damaged ({e}); it stays in the table: repair or delete it by hand",
                    self.owner
                )),
            })
            .collect()
    }

    fn forwarded(&mut self, upto: i64) -> Result<(), String> {
        self.with(async |s, owner| s.unpark(owner, upto).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_parked_row_is_an_error_and_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("o.db").display());
        let mut parking = StoreParking::new(&url, "d1");
        parking
            .park(&[("p:t:x".into(), vec![("m".into(), "1".into())])])
            .expect("parks");
        assert_eq!(parking.parked(10).expect("reads").len(), 1);
        parking
            .with(async |s, _| s.execute_raw("UPDATE outbox SET fields = 'not json'").await)
            .expect("damage");
        let error = parking.parked(10).expect_err("damaged");
        assert!(
            error.contains("row 1") && error.contains("damaged"),
            "{error}"
        );
        let left = parking
            .with(async |s, owner| s.parked(owner, 10).await)
            .expect("peek");
        assert_eq!(left.len(), 1, "the row is kept");
    }
}
