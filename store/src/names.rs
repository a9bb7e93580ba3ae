//! Who may publish under a name, and the registry's own identity.
//!
//! Invariants: the first publisher of a name owns it (`names`), and another
//! key publishes under it only with a delegation the owner signed
//! (`delegations`). The registry has one random id, made on first start and
//! never changed; yanks and delegations sign it, so a statement made to one
//! registry cannot be replayed at another. Anonymous work is counted
//! (`counters`), so it cannot grow the audit log without bound.

use sqlx::Row;

use crate::{Store, StoreError};

impl Store {
    /// Claim `name` for `publisher` if nobody owns it; otherwise check that
    /// `publisher` owns it or holds a delegation for it.
    pub async fn check_owner(
        &self,
        name: &str,
        publisher: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO names (name, owner, claimed_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        ))
        .bind(name)
        .bind(publisher)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        let owner: String = sqlx::query(&self.sql("SELECT owner FROM names WHERE name = ?"))
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(self.db())?;
        if same_key(&owner, publisher) {
            return Ok(());
        }
        let delegated = sqlx::query(&self.sql("SELECT delegate FROM delegations WHERE name = ?"))
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .any(|d| same_key(&d, publisher));
        if delegated {
            Ok(())
        } else {
            Err(StoreError::NotOwner {
                name: name.to_string(),
                owner,
            })
        }
    }

    /// The owner of `name`, if anyone has published it.
    pub async fn owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(&self.sql("SELECT owner FROM names WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db())?;
        row.map(|r| r.try_get(0)).transpose().map_err(self.db())
    }

    /// Record that `granted_by` (the owner) lets `delegate` publish under
    /// `name`; `signature` is the owner's, kept as evidence.
    pub async fn delegate(
        &self,
        name: &str,
        delegate: &str,
        granted_by: &str,
        at: &str,
        signature: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO delegations (name, delegate, granted_by, granted_at, signature) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name, delegate) DO NOTHING",
        ))
        .bind(name)
        .bind(delegate)
        .bind(granted_by)
        .bind(at)
        .bind(signature)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// This registry's id: random, made on first use, never changed.
    pub async fn registry_id(&self) -> Result<String, StoreError> {
        let mut fresh = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut fresh);
        sqlx::query(&self.sql(
            "INSERT INTO registry_meta (key, value) VALUES ('id', ?) ON CONFLICT (key) DO NOTHING",
        ))
        .bind(hex::encode(fresh))
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        sqlx::query("SELECT value FROM registry_meta WHERE key = 'id'")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(self.db())
    }

    /// Add one to counter `name`.
    pub async fn count(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
        ))
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(())
    }

    /// The value of counter `name` (0 if never counted).
    pub async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(&self.sql("SELECT value FROM counters WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(row.and_then(|r| r.try_get(0).ok()).unwrap_or(0))
    }
}

/// Whether two key ids as stored name one key (an older 8-byte id names
/// the key whose full id it begins).
fn same_key(a: &str, b: &str) -> bool {
    match (
        a.parse::<garden_trust::KeyId>(),
        b.parse::<garden_trust::KeyId>(),
    ) {
        (Ok(a), Ok(b)) => a.matches(&b),
        _ => a == b,
    }
}
