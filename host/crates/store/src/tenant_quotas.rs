//! Tenant quotas (`tenant_quotas`): the operator's defaults (tenant '') and each
//! tenant's own, lower ones, and what a tenant uses of them. Enforced where the writes
//! happen: `installations::installation_quota` at install, `kv::tenant_budget` at every
//! key-value commit that grows a tenant's bytes; the collection share by the collector,
//! which reads every tenant's at the start of a pass (`collection_shares`).

use std::collections::HashMap;

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// Quotas of one row: `None` where it sets none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantQuotaRow {
    pub installations: Option<u64>,
    pub kv_bytes: Option<u64>,
    /// Percent of the collector's concurrent report calls.
    pub collection_share: Option<u64>,
}

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUse {
    pub installations: u64,
    pub kv_bytes: u64,
}

fn stored(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn read(value: Option<i64>) -> Option<u64> {
    value.map(|v| u64::try_from(v).unwrap_or(0))
}

/// Writes `tenant`'s row of quotas (tenant '': the operator's defaults).
async fn upsert(tx: &mut crate::WriteTransaction, tenant: &str, quotas: TenantQuotaRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_quotas (tenant, installations, kv_bytes, collection_share, updated_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant) DO UPDATE SET installations = excluded.installations,
         kv_bytes = excluded.kv_bytes, collection_share = excluded.collection_share,
         updated_ms = excluded.updated_ms",
    )
    .bind(tenant)
    .bind(stored(quotas.installations))
    .bind(stored(quotas.kv_bytes))
    .bind(stored(quotas.collection_share))
    .bind(now_ms() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Writes the operator's defaults (tenant ''), as this process's config says; every
    /// replica writes them at start, so replicas should share one config.
    pub async fn set_default_tenant_quotas(&self, quotas: TenantQuotaRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        upsert(&mut tx, "", quotas).await.map_err(ctx("write the default tenant quotas"))?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// A tenant's own quotas (all `None` without a row).
    pub async fn tenant_quota(&self, tenant: &str) -> Result<TenantQuotaRow, StoreError> {
        let row = sqlx::query("SELECT installations, kv_bytes, collection_share FROM tenant_quotas WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("read tenant quotas"))?;
        let Some(row) = row else { return Ok(TenantQuotaRow::default()) };
        Ok(TenantQuotaRow {
            installations: read(row.try_get("installations").map_err(ctx("read tenant quotas"))?),
            kv_bytes: read(row.try_get("kv_bytes").map_err(ctx("read tenant quotas"))?),
            collection_share: read(row.try_get("collection_share").map_err(ctx("read tenant quotas"))?),
        })
    }

    /// Sets a tenant's own quotas (the caller checked they only tighten), with its audit
    /// row (`tenant.quotas`) in one transaction; an all-`None` row removes them.
    pub async fn set_tenant_quota(&self, tenant: &str, quotas: TenantQuotaRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if quotas == TenantQuotaRow::default() {
            sqlx::query("DELETE FROM tenant_quotas WHERE tenant = $1")
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .map_err(ctx("remove tenant quotas"))?;
        } else {
            upsert(&mut tx, tenant, quotas).await.map_err(ctx("write tenant quotas"))?;
        }
        let shown = |v: Option<u64>| v.map_or("default".to_string(), |v| v.to_string());
        let detail = format!(
            "installations={} kvBytes={} collectionShare={}",
            shown(quotas.installations),
            shown(quotas.kv_bytes),
            shown(quotas.collection_share)
        );
        audit(&mut tx, actor, "tenant.quotas", tenant, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// Every collection share set, by tenant ('' the operator's): one read per
    /// collection pass.
    pub async fn collection_shares(&self) -> Result<HashMap<String, u64>, StoreError> {
        let rows = sqlx::query("SELECT tenant, collection_share FROM tenant_quotas WHERE collection_share IS NOT NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read collection shares"))?;
        let mut shares = HashMap::with_capacity(rows.len());
        for row in &rows {
            let tenant: String = row.try_get("tenant").map_err(ctx("read collection shares"))?;
            let share: i64 = row.try_get("collection_share").map_err(ctx("read collection shares"))?;
            shares.insert(tenant, u64::try_from(share).unwrap_or(0));
        }
        Ok(shares)
    }

    /// What a tenant holds: its installations and the key-value bytes of all of them.
    pub async fn tenant_use(&self, tenant: &str) -> Result<TenantUse, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM installations WHERE tenant = $1) AS installations,
                    (SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM kv_usage WHERE tenant = $1) AS kv_bytes",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .map_err(ctx("read the tenant's use"))?;
        let installations: i64 = row.try_get("installations").map_err(ctx("read the tenant's use"))?;
        let kv_bytes: i64 = row.try_get("kv_bytes").map_err(ctx("read the tenant's use"))?;
        Ok(TenantUse {
            installations: u64::try_from(installations).unwrap_or(0),
            kv_bytes: u64::try_from(kv_bytes).unwrap_or(0),
        })
    }
}
