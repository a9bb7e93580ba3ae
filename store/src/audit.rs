//! The audit log: a hash-chained table of what happened (loads, refusals,
//! publishes, quarantines, ...), anchored against truncation by signed heads
//! ([`crate::anchor`]).
//!
//! Invariants: record `seq` hashes its fields with the hash of record
//! `seq - 1` (64 zeros before the first), each field length-prefixed so no
//! two records encode alike; two writers racing for one sequence number
//! are ordered by the primary key, the loser retrying on the new head.

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::anchor::SignedHead;
use crate::{Store, StoreError, is_unique_violation};

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
fn check_heads(records: &[AuditRecord], heads: &[SignedHead]) -> Option<AuditCheck> {
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

impl Store {
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
        let head = SignedHead::sign(&anchor.key, seq, hash);
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
            let newer = match SignedHead::read(file) {
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
    pub async fn audit_heads(&self) -> Result<Vec<SignedHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT signer, public_key, seq, hash, signature FROM audit_heads ORDER BY signer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        let head = |r: &AnyRow| -> Result<SignedHead, sqlx::Error> {
            let signer: String = r.try_get(0)?;
            Ok(SignedHead {
                // An unreadable id is kept as zeros: the head then fails to
                // verify and is reported, not skipped.
                signer: signer
                    .parse()
                    .unwrap_or_else(|_| garden_trust::KeyId::of(&[0; 32])),
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
            && let Ok(Some(kept)) = SignedHead::read(file)
        {
            heads.push(kept);
        }
        if let Some(problem) = check_heads(&all, &heads) {
            return Ok(problem);
        }
        Ok(AuditCheck::Intact { records: all.len() })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::store;

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
    async fn a_log_cut_short_is_told_by_its_signed_heads() {
        let (dir, s) = store().await;
        let file = dir.path().join("head.toml");
        let s = s.with_audit_signer(garden_trust::SigningKey::generate(), Some(file.clone()));
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
