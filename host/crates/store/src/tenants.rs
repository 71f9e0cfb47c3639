//! Tenants (`tenants`): creation, the operator's suspend switch (and the flag write it
//! shares with the partners' disable switch), the operator's summaries, and the list of
//! suspended tenants and disabled partners.

use std::collections::HashSet;

use sqlx::Row as _;
use sqlx::any::AnyRow;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx, exists};

/// A tenant as the operator reads it.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub id: String,
    pub display: String,
    pub suspended: bool,
    pub created_ms: i64,
    pub installations: i64,
    /// Key-value bytes (keys and values) of all its installations together.
    pub kv_bytes: i64,
}

fn tenant_summary(r: &AnyRow) -> Result<TenantSummary, sqlx::Error> {
    Ok(TenantSummary {
        id: r.try_get("id")?,
        display: r.try_get("display")?,
        suspended: r.try_get::<i64, _>("suspended")? != 0,
        created_ms: r.try_get("created_ms")?,
        installations: r.try_get("installations")?,
        kv_bytes: r.try_get("kv_bytes")?,
    })
}

const TENANT_SUMMARY: &str = "SELECT id, display, suspended, created_ms,
    (SELECT COUNT(*) FROM installations i WHERE i.tenant = t.id) AS installations,
    (SELECT CAST(COALESCE(SUM(k.bytes), 0) AS BIGINT) FROM kv_usage k WHERE k.tenant = t.id) AS kv_bytes
    FROM tenants t";

/// Suspended tenants and disabled partners, by id and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inactive {
    pub suspended_tenants: HashSet<String>,
    pub disabled_partners: HashSet<String>,
}

impl Store {
    /// Creates a tenant with its audit row (`tenant.create`) in one transaction; `false`
    /// if it exists (nothing is written).
    pub async fn create_tenant(&self, id: &str, display: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO tenants (id, display, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(display)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create tenant"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "tenant.create", id, "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, StoreError> {
        exists(&self.pool, "SELECT 1 FROM tenants WHERE id = $1", id).await.map_err(ctx("find tenant"))
    }

    /// Suspends or resumes a tenant, with its audit row (`tenant.suspend` /
    /// `tenant.resume`) in one transaction; `false` if there is no such tenant.
    pub async fn set_tenant_suspended(&self, id: &str, suspended: bool, actor: &str) -> Result<bool, StoreError> {
        let action = if suspended { "tenant.suspend" } else { "tenant.resume" };
        self.set_flag("UPDATE tenants SET suspended = $1 WHERE id = $2", id, suspended, action, actor).await
    }

    pub(crate) async fn set_flag(
        &self,
        sql: &str,
        key: &str,
        on: bool,
        action: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query(sql).bind(i64::from(on)).bind(key).execute(&mut *tx).await.map_err(ctx(action.to_string()))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, action, key, "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// Suspended tenants and disabled partners (the collector skips their installations;
    /// the catalog hides disabled partners' apps).
    pub async fn inactive(&self) -> Result<Inactive, StoreError> {
        let rows = sqlx::query(
            "SELECT 'tenant' AS kind, id AS name FROM tenants WHERE suspended <> 0
             UNION ALL SELECT 'partner', name FROM partners WHERE disabled <> 0",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list suspended tenants and disabled partners"))?;
        let mut inactive = Inactive::default();
        for r in &rows {
            let kind: String = r.try_get("kind").map_err(ctx("read"))?;
            let name: String = r.try_get("name").map_err(ctx("read"))?;
            if kind == "tenant" {
                inactive.suspended_tenants.insert(name);
            } else {
                inactive.disabled_partners.insert(name);
            }
        }
        Ok(inactive)
    }

    pub async fn tenants_page(&self, after: &str, limit: i64) -> Result<Vec<TenantSummary>, StoreError> {
        let rows = sqlx::query(&format!("{TENANT_SUMMARY} WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list tenants"))?;
        rows.iter().map(tenant_summary).collect::<Result<_, _>>().map_err(ctx("read tenants"))
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantSummary>, StoreError> {
        let row = sqlx::query(&format!("{TENANT_SUMMARY} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find tenant"))?;
        row.as_ref().map(tenant_summary).transpose().map_err(ctx("read tenant"))
    }
}
