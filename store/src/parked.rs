//! Parked publishes: what a daemon could not send to its bus waits here, in
//! order, per daemon (`owner`), until it is forwarded.
//!
//! Invariants: rows are read back in the order they were parked, and only
//! rows up to a forwarded position are removed.

use sqlx::Row;

use crate::{Store, StoreError};

impl Store {
    /// Keep publishes of `owner` that could not be sent: (stream, fields as
    /// JSON), numbered after those already kept.
    pub async fn park(&self, owner: &str, entries: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        let row =
            sqlx::query(&self.sql("SELECT COALESCE(MAX(n), 0) AS m FROM outbox WHERE owner = ?"))
                .bind(owner)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.db())?;
        let mut n: i64 = row.try_get("m").map_err(self.db())?;
        for (stream, fields) in entries {
            n += 1;
            sqlx::query(
                &self.sql("INSERT INTO outbox (owner, n, stream, fields) VALUES (?, ?, ?, ?)"),
            )
            .bind(owner)
            .bind(n)
            .bind(stream.as_str())
            .bind(fields.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())
    }

    /// The oldest `max` kept publishes of `owner`: (n, stream, fields JSON).
    pub async fn parked(
        &self,
        owner: &str,
        max: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let rows = sqlx::query(
            &self.sql("SELECT n, stream, fields FROM outbox WHERE owner = ? ORDER BY n LIMIT ?"),
        )
        .bind(owner)
        .bind(max)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("n").map_err(self.db())?,
                    r.try_get("stream").map_err(self.db())?,
                    r.try_get("fields").map_err(self.db())?,
                ))
            })
            .collect()
    }

    /// Forget `owner`'s kept publishes up to and including `upto`.
    pub async fn unpark(&self, owner: &str, upto: i64) -> Result<(), StoreError> {
        sqlx::query(&self.sql("DELETE FROM outbox WHERE owner = ? AND n <= ?"))
            .bind(owner)
            .bind(upto)
            .execute(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(())
    }
}
