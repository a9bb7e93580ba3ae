//! Runs and what they leave: the run table, lineage (one current record per
//! variant) and the recorded messages of a run.
//!
//! Invariants: a recorded message is identified by (run, topic, n), so one
//! written twice is stored once; a lineage record only replaces a stored
//! one with a lower `seq`.

use sqlx::Row;

use crate::{Store, StoreError};

/// One recorded message, as [`Store::save_records`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    /// Its position in the run (with the topic, the row's identity).
    pub n: i64,
    /// Topic.
    pub topic: String,
    /// Ordering key.
    pub key: String,
    /// Publishing instance.
    pub source: String,
    /// Event time, ms since the epoch.
    pub time: i64,
    /// The body as JSON.
    pub body: String,
}

/// A stored run, as [`Store::run_info`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its seed, as text (a u64 does not fit every database's integer).
    pub seed: String,
    /// The name of the data it replayed.
    pub data: String,
    /// Its JSON summary (empty while a daemon garden is still running).
    pub summary: String,
}

impl Store {
    /// Record a run: its id, start time, seed, data name, a JSON summary,
    /// and one JSON lineage record per variant (written in one transaction).
    pub async fn save_run(
        &self,
        run: &str,
        started_at: &str,
        seed: u64,
        data: &str,
        summary_json: &str,
        lineage: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        sqlx::query(
            &self.sql(
                "INSERT INTO runs (run, started_at, seed, data, summary) VALUES (?, ?, ?, ?, ?)",
            ),
        )
        .bind(run)
        .bind(started_at)
        .bind(seed.to_string())
        .bind(data)
        .bind(summary_json)
        .execute(&mut *tx)
        .await
        .map_err(self.db())?;
        for (id, record) in lineage {
            sqlx::query(&self.sql("INSERT INTO lineage (run, id, record) VALUES (?, ?, ?)"))
                .bind(run)
                .bind(id)
                .bind(record)
                .execute(&mut *tx)
                .await
                .map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())
    }

    /// Open run `run` unless it exists (a garden of daemons records into
    /// one run for as long as it lives): its start time, seed and data name.
    pub async fn open_run(
        &self,
        run: &str,
        started_at: &str,
        seed: u64,
        data: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO runs (run, started_at, seed, data, summary) VALUES (?, ?, ?, ?, '{}') \
             ON CONFLICT (run) DO NOTHING",
        ))
        .bind(run)
        .bind(started_at)
        .bind(seed.to_string())
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// Write lineage records of `run` as (id, seq, record JSON): a record
    /// replaces the stored one only if its `seq` is higher, so writers that
    /// lag behind cannot put an older state back.
    pub async fn save_lineage(
        &self,
        run: &str,
        rows: &[(String, i64, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        for (id, seq, record) in rows {
            sqlx::query(&self.sql(
                "INSERT INTO lineage (run, id, record, seq) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (run, id) DO UPDATE SET record = excluded.record, seq = excluded.seq \
                 WHERE lineage.seq < excluded.seq",
            ))
            .bind(run)
            .bind(id)
            .bind(record)
            .bind(*seq)
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())
    }

    /// Write recorded messages of `run`: (n, topic, key, source, time,
    /// body JSON). Rows already stored (same run, topic and n) are left as
    /// they are, so writing a batch again after an unanswered commit, or a
    /// message again after a redelivery, is harmless.
    pub async fn save_records(&self, run: &str, rows: &[RecordRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        for chunk in rows.chunks(200) {
            let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let text = format!(
                "INSERT INTO records (run, n, topic, msg_key, source, time, body) VALUES {values} ON CONFLICT (run, topic, n) DO NOTHING"
            );
            let sql = self.sql(&text);
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(run)
                    .bind(r.n)
                    .bind(r.topic.as_str())
                    .bind(r.key.as_str())
                    .bind(r.source.as_str())
                    .bind(r.time)
                    .bind(r.body.as_str());
            }
            q.execute(&mut *tx).await.map_err(self.db())?;
        }
        tx.commit().await.map_err(self.db())
    }

    /// How many messages of `run` are recorded, per topic.
    pub async fn record_counts(
        &self,
        run: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            &self.sql("SELECT topic, COUNT(*) AS c FROM records WHERE run = ? GROUP BY topic"),
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let topic: String = row.try_get("topic").map_err(self.db())?;
            let c: i64 = row.try_get("c").map_err(self.db())?;
            out.insert(topic, c);
        }
        Ok(out)
    }

    /// The records of `topic` in `run`, in order, as (number, body as
    /// stored: JSON, or `{"sealed": ...}` where the garden encrypts records
    /// at rest), at most `limit`.
    pub async fn record_bodies(
        &self,
        run: &str,
        topic: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            &self.sql("SELECT n, body FROM records WHERE run = ? AND topic = ? ORDER BY n LIMIT ?"),
        )
        .bind(run)
        .bind(topic)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("n").map_err(self.db())?,
                    row.try_get::<String, _>("body").map_err(self.db())?,
                ))
            })
            .collect()
    }

    /// Every record of `topic` in `run`, in order, bodies as stored (JSON,
    /// or `{"sealed": ...}` where the garden encrypts records at rest).
    pub async fn records(&self, run: &str, topic: &str) -> Result<Vec<RecordRow>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT n, topic, msg_key, source, time, body FROM records \
             WHERE run = ? AND topic = ? ORDER BY n",
        ))
        .bind(run)
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        rows.iter()
            .map(|row| {
                Ok(RecordRow {
                    n: row.try_get("n").map_err(self.db())?,
                    topic: row.try_get("topic").map_err(self.db())?,
                    key: row.try_get("msg_key").map_err(self.db())?,
                    source: row.try_get("source").map_err(self.db())?,
                    time: row.try_get("time").map_err(self.db())?,
                    body: row.try_get("body").map_err(self.db())?,
                })
            })
            .collect()
    }

    /// A run's start time, seed, data name and JSON summary, or none if no
    /// such run is stored.
    pub async fn run_info(&self, run: &str) -> Result<Option<RunInfo>, StoreError> {
        let row = sqlx::query(
            &self.sql("SELECT started_at, seed, data, summary FROM runs WHERE run = ?"),
        )
        .bind(run)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        row.map(|row| {
            Ok(RunInfo {
                started_at: row.try_get("started_at").map_err(self.db())?,
                seed: row.try_get("seed").map_err(self.db())?,
                data: row.try_get("data").map_err(self.db())?,
                summary: row.try_get("summary").map_err(self.db())?,
            })
        })
        .transpose()
    }

    /// The latest run's id, or none.
    pub async fn latest_run(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            &self.sql("SELECT run FROM runs ORDER BY started_at DESC, run DESC LIMIT 1"),
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        row.map(|r| r.try_get::<String, _>(0).map_err(self.db()))
            .transpose()
    }

    /// The JSON lineage records of `run`, in id order.
    pub async fn lineage(&self, run: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&self.sql("SELECT record FROM lineage WHERE run = ? ORDER BY id"))
            .bind(run)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(self.db()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::store;

    #[tokio::test]
    async fn lineage_rows_are_replaced_only_by_newer_ones() {
        let (_dir, s) = store().await;
        s.open_run("g", "2026-11-25T00:00:00Z", 1, "redis")
            .await
            .unwrap();
        s.open_run("g", "2027-01-01T00:00:00Z", 2, "other")
            .await
            .unwrap();
        assert_eq!(s.latest_run().await.unwrap().as_deref(), Some("g"));
        let row = |seq: i64, what: &str| ("a.1".to_string(), seq, format!("{{\"{what}\":1}}"));
        s.save_lineage("g", &[row(5, "born")]).await.unwrap();
        s.save_lineage("g", &[row(9, "retired")]).await.unwrap();
        // A lagging writer's older state does not come back.
        s.save_lineage("g", &[row(5, "born")]).await.unwrap();
        assert_eq!(s.lineage("g").await.unwrap(), ["{\"retired\":1}"]);
    }
}
