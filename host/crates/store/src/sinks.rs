//! Usage sinks set through the API (`api_sinks`): the settings as JSON, validated by the
//! core before they are written, and the signing key sealed. Each change is audited in
//! its transaction; removing a sink removes its cursor and parked events too.

use sqlx::Row as _;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// A sink set through the API, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSinkRow {
    pub name: String,
    /// The settings, JSON.
    pub settings: String,
    /// The signing key, sealed with the secrets key.
    pub secret: Vec<u8>,
    pub updated_ms: i64,
}

impl Store {
    /// Every sink set through the API, by name.
    pub async fn api_sinks(&self) -> Result<Vec<ApiSinkRow>, StoreError> {
        let rows = sqlx::query("SELECT name, settings, secret, updated_ms FROM api_sinks ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read sinks"))?;
        rows.iter()
            .map(|r| {
                Ok(ApiSinkRow {
                    name: r.try_get("name")?,
                    settings: r.try_get("settings")?,
                    secret: r.try_get("secret")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read sinks"))
    }

    /// When the API sink `name` was last set (none: it is not, or no longer, set).
    pub async fn api_sink_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT updated_ms FROM api_sinks WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx(format!("read sink {name}")))
    }

    /// Creates or replaces `row` (audited: `sink.put`, the settings as detail; never the key).
    pub async fn put_api_sink(&self, row: &ApiSinkRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_sinks (name, settings, secret, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET settings = excluded.settings, secret = excluded.secret,
                 updated_ms = excluded.updated_ms",
        )
        .bind(&row.name)
        .bind(&row.settings)
        .bind(&row.secret)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx(format!("write sink {}", row.name)))?;
        audit(&mut tx, actor, "sink.put", &row.name, &row.settings).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(())
    }

    /// Removes the sink `name` set through the API with its cursor and parked events
    /// (audited: `sink.delete`); `false` if there was none.
    pub async fn delete_api_sink(&self, name: &str, actor: &str) -> Result<bool, StoreError> {
        let what = format!("delete sink {name}");
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM api_sinks WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(ctx(what.clone()))?
            .rows_affected()
            > 0;
        if gone {
            for sql in ["DELETE FROM sink_cursors WHERE sink = $1", "DELETE FROM sink_parked WHERE sink = $1"] {
                sqlx::query(sql).bind(name).execute(&mut *tx).await.map_err(ctx(what.clone()))?;
            }
            audit(&mut tx, actor, "sink.delete", name, "removed").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(gone)
    }

    /// Gives back every sink lease `replica` holds (it is stopping).
    pub async fn release_sinks(&self, replica: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE sink_cursors SET lease_until = 0 WHERE leased_by = $1")
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(ctx("release sinks"))?;
        Ok(())
    }
}
