//! The registry's component index: name, version, digest and publisher of
//! every published component.
//!
//! Invariants: a version's bytes never change (name@version with another
//! digest is a [`StoreError::Collision`]); a yanked version stays pullable
//! by digest but is no longer listed.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

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

impl Store {
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
    use crate::tests::store;

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
}
