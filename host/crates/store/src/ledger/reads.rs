//! Stored usage read back (`usage_events`): the events of a period, for exports and
//! the usage API.

use sqlx::Row as _;

use kiosk_domain::metering::UsageSource;

use crate::{Store, StoreError};

/// One stored event, for reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredUsage {
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub sku: String,
    pub quantity: i64,
    pub at_ms: i64,
    pub source: UsageSource,
}

/// Events with `from <= at_ms < to`, optionally of one tenant or of one partner's apps.
pub async fn usage_between(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    tenant: Option<&str>,
    partner: Option<&str>,
) -> Result<Vec<StoredUsage>, StoreError> {
    let err = |source| StoreError { action: "read usage".into(), source };
    let rows = sqlx::query(
        "SELECT tenant, app, version, sku, quantity, at_ms, source FROM usage_events
         WHERE at_ms >= $1 AND at_ms < $2 AND ($3 = '' OR tenant = $3) AND ($4 = '' OR app LIKE $5)
         ORDER BY at_ms",
    )
    .bind(from_ms)
    .bind(to_ms)
    .bind(tenant.unwrap_or(""))
    .bind(partner.unwrap_or(""))
    .bind(format!("{}/%", partner.unwrap_or("")))
    .fetch_all(store.pool())
    .await
    .map_err(err)?;
    rows.iter()
        .map(|r| {
            Ok(StoredUsage {
                tenant: r.try_get("tenant")?,
                app: r.try_get("app")?,
                version: r.try_get("version")?,
                sku: r.try_get("sku")?,
                quantity: r.try_get("quantity")?,
                at_ms: r.try_get("at_ms")?,
                source: {
                    let name: String = r.try_get("source")?;
                    UsageSource::parse(&name).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown usage source {name:?} in usage_events").into())
                    })?
                },
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(err)
}
