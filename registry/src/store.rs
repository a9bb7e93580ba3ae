//! Records: the audit log and the registry's component index, in SQLite by
//! default or PostgreSQL when given a `postgres://` URL (sqlx, one schema,
//! migrations embedded in the binary).

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

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
    key: crate::SigningKey,
    file: Option<std::path::PathBuf>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// What happened: load, refusal, publish, pull, yank, trust, quarantine, ...
    pub kind: String,
    /// The module (name or name@version), or `-`.
    pub module: String,
    /// Key id of who did it, or `host`.
    pub actor: String,
    /// Details, e.g. the reason of a refusal.
    pub detail: String,
    /// Hash of the previous record (64 zeros for the first).
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this module (exact match).
    pub module: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only at or after this time (RFC 3339, compared as text).
    pub since: Option<String>,
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AuditCheck {
    /// Every record links to the one before and hashes to its hash.
    Intact {
        /// Records checked.
        records: usize,
    },
    /// The log ends before a record a writer signed as appended: records
    /// after `last` were deleted.
    Truncated {
        /// The newest record left.
        last: i64,
        /// The newest record a signed head names.
        signed: i64,
        /// The key that signed it.
        signer: String,
    },
    /// The first record where the chain breaks, and how.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// A published component.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ComponentRow {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// sha256 of the signed component as published.
    pub digest: String,
    /// Key id of the publisher.
    pub publisher: String,
    /// Size in bytes.
    pub size: i64,
    /// When, RFC 3339.
    pub published_at: String,
    /// Whether it was yanked (still pullable by hash, not listed).
    pub yanked: bool,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn record_hash(
    prev: &str,
    seq: i64,
    at: &str,
    kind: &str,
    module: &str,
    actor: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, kind, module, actor, detail] {
        // Length-prefix each field so that no two records encode alike.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What the signed heads say of `records` (the whole chain, oldest first,
/// already found to link up): `None` when every head names a record that is
/// there with its hash.
fn check_heads(records: &[AuditRecord], heads: &[crate::anchor::SignedHead]) -> Option<AuditCheck> {
    let last = records.last().map_or(0, |r| r.seq);
    for head in heads {
        if !head.verifies() {
            return Some(AuditCheck::Broken {
                seq: head.seq,
                reason: format!(
                    "the signed head of key {} does not verify (it was edited)",
                    head.signer
                ),
            });
        }
        if head.seq > last {
            return Some(AuditCheck::Truncated {
                last,
                signed: head.seq,
                signer: head.signer.to_string(),
            });
        }
        let found = usize::try_from(head.seq - 1)
            .ok()
            .and_then(|i| records.get(i));
        if found.is_none_or(|r| r.seq != head.seq || r.hash != head.hash) {
            return Some(AuditCheck::Broken {
                seq: head.seq,
                reason: format!(
                    "key {} signed record {} with another hash (the log was rolled back or rewritten)",
                    head.signer, head.seq
                ),
            });
        }
    }
    None
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
    pub fn with_audit_signer(
        mut self,
        key: crate::SigningKey,
        file: Option<std::path::PathBuf>,
    ) -> Self {
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

    /// Append an audit record; returns it with its sequence number and hash.
    pub async fn audit(
        &self,
        at: &str,
        kind: &str,
        module: &str,
        actor: &str,
        detail: &str,
    ) -> Result<AuditRecord, StoreError> {
        // Two writers may race for the next sequence number; the primary key
        // lets only one win, and the loser retries on the new head.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let head =
                sqlx::query(&self.sql("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.db())?;
            let (prev_seq, prev_hash): (i64, String) = match head {
                Some(row) => (
                    row.try_get::<i64, _>(0).map_err(self.db())?,
                    row.try_get::<String, _>(1).map_err(self.db())?,
                ),
                None => (0, GENESIS.to_string()),
            };
            let seq = prev_seq + 1;
            let hash = record_hash(&prev_hash, seq, at, kind, module, actor, detail);
            let inserted = sqlx::query(&self.sql(
                "INSERT INTO audit (seq, at, kind, module, actor, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(seq)
            .bind(at)
            .bind(kind)
            .bind(module)
            .bind(actor)
            .bind(detail)
            .bind(&prev_hash)
            .bind(&hash)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    self.sign_head(seq, &hash).await?;
                    return Ok(AuditRecord {
                        seq,
                        at: at.into(),
                        kind: kind.into(),
                        module: module.into(),
                        actor: actor.into(),
                        detail: detail.into(),
                        prev_hash,
                        hash,
                    });
                }
                Err(e) if attempts < 20 && is_unique_violation(&e) => continue,
                Err(e) => return Err(self.db()(e)),
            }
        }
    }

    /// Sign record `seq` as the newest this writer appended, in the store
    /// (only ever forward) and in the writer's own file.
    async fn sign_head(&self, seq: i64, hash: &str) -> Result<(), StoreError> {
        let Some(anchor) = &self.anchor else {
            return Ok(());
        };
        let head = crate::anchor::SignedHead::sign(&anchor.key, seq, hash);
        sqlx::query(&self.sql(
            "INSERT INTO audit_heads (signer, public_key, seq, hash, signature) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (signer) DO UPDATE SET public_key = excluded.public_key, seq = excluded.seq, \
             hash = excluded.hash, signature = excluded.signature WHERE audit_heads.seq < excluded.seq",
        ))
        .bind(head.signer.to_string())
        .bind(&head.public_key)
        .bind(head.seq)
        .bind(&head.hash)
        .bind(&head.signature)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        if let Some(file) = &anchor.file {
            let newer = match crate::anchor::SignedHead::read(file) {
                Ok(Some(kept)) => kept.seq < head.seq,
                _ => true,
            };
            if newer && let Err(e) = head.write(file) {
                tracing::error!(file = %file.display(), "could not keep the audit head: {e}");
            }
        }
        Ok(())
    }

    /// The signed heads kept in the store, one per signer.
    pub async fn audit_heads(&self) -> Result<Vec<crate::anchor::SignedHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT signer, public_key, seq, hash, signature FROM audit_heads ORDER BY signer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        let head = |r: &AnyRow| -> Result<crate::anchor::SignedHead, sqlx::Error> {
            let signer: String = r.try_get(0)?;
            Ok(crate::anchor::SignedHead {
                // An unreadable id is kept as zeros: the head then fails to
                // verify and is reported, not skipped.
                signer: signer
                    .parse()
                    .unwrap_or_else(|_| crate::KeyId::of(&[0; 32])),
                public_key: r.try_get(1)?,
                seq: r.try_get(2)?,
                hash: r.try_get(3)?,
                signature: r.try_get(4)?,
            })
        };
        rows.iter().map(|r| head(r).map_err(self.db())).collect()
    }

    /// Audit records matching `filter`, oldest first.
    pub async fn audit_records(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, at, kind, module, actor, detail, prev_hash, hash FROM audit WHERE 1 = 1",
        );
        if filter.module.is_some() {
            sql.push_str(" AND module = ?");
        }
        if filter.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        if filter.since.is_some() {
            sql.push_str(" AND at >= ?");
        }
        sql.push_str(" ORDER BY seq");
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql);
        for v in [&filter.module, &filter.kind, &filter.since]
            .into_iter()
            .flatten()
        {
            q = q.bind(v.as_str());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(self.db())?;
        rows.iter()
            .map(|r| audit_row(r).map_err(self.db()))
            .collect()
    }

    /// Check the whole chain.
    pub async fn audit_verify(&self) -> Result<AuditCheck, StoreError> {
        let all = self.audit_records(&AuditFilter::default()).await?;
        let mut prev = GENESIS.to_string();
        for (expected_seq, r) in (1i64..).zip(all.iter()) {
            if r.seq != expected_seq {
                return Ok(AuditCheck::Broken {
                    seq: r.seq,
                    reason: format!("record {expected_seq} is missing (deleted?)"),
                });
            }
            if r.prev_hash != prev {
                return Ok(AuditCheck::Broken {
                    seq: r.seq,
                    reason: "it does not link to the record before it (a record was deleted or replaced)".into(),
                });
            }
            let h = record_hash(
                &r.prev_hash,
                r.seq,
                &r.at,
                &r.kind,
                &r.module,
                &r.actor,
                &r.detail,
            );
            if h != r.hash {
                return Ok(AuditCheck::Broken {
                    seq: r.seq,
                    reason: "its contents do not match its hash (the record was edited)".into(),
                });
            }
            prev = r.hash.clone();
        }
        let mut heads = self.audit_heads().await?;
        if let Some(file) = self.anchor.as_ref().and_then(|a| a.file.as_ref())
            && let Ok(Some(kept)) = crate::anchor::SignedHead::read(file)
        {
            heads.push(kept);
        }
        if let Some(problem) = check_heads(&all, &heads) {
            return Ok(problem);
        }
        Ok(AuditCheck::Intact { records: all.len() })
    }

    /// Record a published component. Publishing the same bytes again is a
    /// no-op; other bytes under the same name@version are refused.
    pub async fn insert_component(&self, c: &ComponentRow) -> Result<bool, StoreError> {
        if let Some(existing) = self.component(&c.name, &c.version).await? {
            if existing.digest == c.digest {
                return Ok(false);
            }
            return Err(StoreError::Collision {
                name: c.name.clone(),
                version: c.version.clone(),
                existing: existing.digest,
            });
        }
        sqlx::query(&self.sql(
            "INSERT INTO components (name, version, digest, publisher, size, published_at, yanked) VALUES (?, ?, ?, ?, ?, ?, 0)",
        ))
        .bind(&c.name)
        .bind(&c.version)
        .bind(&c.digest)
        .bind(&c.publisher)
        .bind(c.size)
        .bind(&c.published_at)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(true)
    }

    /// One version of a component.
    pub async fn component(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<ComponentRow>, StoreError> {
        let row = sqlx::query(&self.sql(
            "SELECT name, version, digest, publisher, size, published_at, yanked FROM components WHERE name = ? AND version = ?",
        ))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        row.map(|r| component_row(&r).map_err(self.db()))
            .transpose()
    }

    /// The component with this digest, if published.
    pub async fn component_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<ComponentRow>, StoreError> {
        let row = sqlx::query(&self.sql(
            "SELECT name, version, digest, publisher, size, published_at, yanked FROM components WHERE digest = ? LIMIT 1",
        ))
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        row.map(|r| component_row(&r).map_err(self.db()))
            .transpose()
    }

    /// Every version of `name` (or of everything), oldest first.
    pub async fn components(&self, name: Option<&str>) -> Result<Vec<ComponentRow>, StoreError> {
        let base =
            "SELECT name, version, digest, publisher, size, published_at, yanked FROM components";
        let rows = match name {
            Some(n) => {
                sqlx::query(&self.sql(&format!(
                    "{base} WHERE name = ? ORDER BY name, published_at, version"
                )))
                .bind(n)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&self.sql(&format!("{base} ORDER BY name, published_at, version")))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(self.db())?;
        rows.iter()
            .map(|r| component_row(r).map_err(self.db()))
            .collect()
    }

    /// Mark name@version yanked; false if it does not exist.
    pub async fn yank(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            &self.sql("UPDATE components SET yanked = 1 WHERE name = ? AND version = ?"),
        )
        .bind(name)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(done.rows_affected() > 0)
    }

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

    /// Keep publishes of `owner` that could not be sent: (stream, fields as
    /// JSON), numbered after those already kept.
    pub async fn outbox_park(
        &self,
        owner: &str,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
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
    pub async fn outbox_peek(
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
    pub async fn outbox_remove(&self, owner: &str, upto: i64) -> Result<(), StoreError> {
        sqlx::query(&self.sql("DELETE FROM outbox WHERE owner = ? AND n <= ?"))
            .bind(owner)
            .bind(upto)
            .execute(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(())
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

fn audit_row(r: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        seq: r.try_get(0)?,
        at: r.try_get(1)?,
        kind: r.try_get(2)?,
        module: r.try_get(3)?,
        actor: r.try_get(4)?,
        detail: r.try_get(5)?,
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

fn component_row(r: &AnyRow) -> Result<ComponentRow, sqlx::Error> {
    Ok(ComponentRow {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        digest: r.try_get(2)?,
        publisher: r.try_get(3)?,
        size: r.try_get(4)?,
        published_at: r.try_get(5)?,
        yanked: r.try_get::<i64, _>(6)? != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("garden.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

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

    #[tokio::test]
    async fn audit_chain_detects_edits_and_deletions() {
        let (_dir, s) = store().await;
        for i in 0..5 {
            s.audit(
                &format!("2026-01-0{}T00:00:00Z", i + 1),
                "load",
                &format!("m{i}"),
                "host",
                "ok",
            )
            .await
            .unwrap();
        }
        assert_eq!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Intact { records: 5 }
        );
        let only = s
            .audit_records(&AuditFilter {
                module: Some("m2".into()),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
        let since = s
            .audit_records(&AuditFilter {
                since: Some("2026-01-04".into()),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(since.len(), 2);
        s.execute_raw("UPDATE audit SET detail = 'edited' WHERE seq = 3")
            .await
            .unwrap();
        assert!(matches!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Broken { seq: 3, .. }
        ));
        s.execute_raw("UPDATE audit SET detail = 'ok' WHERE seq = 3")
            .await
            .unwrap();
        s.execute_raw("DELETE FROM audit WHERE seq = 2")
            .await
            .unwrap();
        assert!(matches!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Broken { seq: 3, .. }
        ));
    }

    #[tokio::test]
    async fn components_refuse_collisions() {
        let (_dir, s) = store().await;
        let row = ComponentRow {
            name: "m".into(),
            version: "1.0.0".into(),
            digest: "aa".into(),
            publisher: "k".into(),
            size: 10,
            published_at: "t".into(),
            yanked: false,
        };
        assert!(s.insert_component(&row).await.unwrap());
        assert!(
            !s.insert_component(&row).await.unwrap(),
            "same bytes again is a no-op"
        );
        let other = ComponentRow {
            digest: "bb".into(),
            ..row.clone()
        };
        assert!(matches!(
            s.insert_component(&other).await,
            Err(StoreError::Collision { .. })
        ));
        assert!(s.yank("m", "1.0.0").await.unwrap());
        assert!(s.component("m", "1.0.0").await.unwrap().unwrap().yanked);
        assert_eq!(
            s.component_by_digest("aa").await.unwrap().unwrap().version,
            "1.0.0"
        );
        assert_eq!(s.components(None).await.unwrap().len(), 1);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("postgres://u:secret@127.0.0.1:5/db"),
            "postgres://u:***@127.0.0.1:5/db"
        );
        assert_eq!(redacted("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn a_log_cut_short_is_told_by_its_signed_heads() {
        let (dir, s) = store().await;
        let file = dir.path().join("head.toml");
        let s = s.with_audit_signer(crate::SigningKey::generate(), Some(file.clone()));
        for i in 0..307 {
            s.audit(
                "2026-01-01T00:00:00Z",
                "load",
                &format!("m{i}"),
                "host",
                "ok",
            )
            .await
            .unwrap();
        }
        assert_eq!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Intact { records: 307 }
        );
        // The newest 250 go: what is left still links up.
        s.execute_raw("DELETE FROM audit WHERE seq > 57")
            .await
            .unwrap();
        match s.audit_verify().await.unwrap() {
            AuditCheck::Truncated { last, signed, .. } => assert_eq!((last, signed), (57, 307)),
            other => panic!("expected Truncated, got {other:?}"),
        }
        // Without the heads in the store, the writer's own file still knows.
        s.execute_raw("DELETE FROM audit_heads").await.unwrap();
        assert!(matches!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Truncated { signed: 307, .. }
        ));
        // Appending after the cut does not hide it.
        s.audit("2026-01-02T00:00:00Z", "load", "again", "host", "ok")
            .await
            .unwrap();
        assert!(matches!(
            s.audit_verify().await.unwrap(),
            AuditCheck::Truncated {
                last: 58,
                signed: 307,
                ..
            }
        ));
    }
}
