//! Entitlements (`entitlements`): a tenant's licence for an app, set with its audit
//! row, read per (tenant, app) and page by page for the operator.

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// A stored entitlement.
#[derive(Debug, Clone)]
pub struct EntitlementRow {
    pub tenant: String,
    pub app: String,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

impl Store {
    pub async fn set_entitlement(&self, e: &EntitlementRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO entitlements (tenant, app, expires_ms, revoked, created_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, app) DO UPDATE SET expires_ms = excluded.expires_ms, revoked = excluded.revoked",
        )
        .bind(&e.tenant)
        .bind(&e.app)
        .bind(e.expires_ms)
        .bind(i64::from(e.revoked))
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("set entitlement"))?;
        let detail = format!("expires_ms={:?} revoked={}", e.expires_ms, e.revoked);
        audit(&mut tx, actor, "entitlement.set", &format!("{}:{}", e.tenant, e.app), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn entitlement(&self, tenant: &str, app: &str) -> Result<Option<EntitlementRow>, StoreError> {
        let row =
            sqlx::query("SELECT tenant, app, expires_ms, revoked FROM entitlements WHERE tenant = $1 AND app = $2")
                .bind(tenant)
                .bind(app)
                .fetch_optional(&self.pool)
                .await
                .map_err(ctx("find entitlement"))?;
        row.map(|r| {
            Ok(EntitlementRow {
                tenant: r.try_get("tenant")?,
                app: r.try_get("app")?,
                expires_ms: r.try_get("expires_ms")?,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
        .map_err(ctx("read entitlement"))
    }

    /// Entitlements by (tenant, app), optionally of one tenant and/or one partner's apps.
    pub async fn entitlements_page(
        &self,
        tenant: Option<&str>,
        partner: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<EntitlementRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.tenant, e.app, e.expires_ms, e.revoked FROM entitlements e JOIN apps a ON a.id = e.app
             WHERE ($1 = '' OR e.tenant = $1) AND ($2 = '' OR a.partner = $2)
             AND (e.tenant > $3 OR (e.tenant = $3 AND e.app > $4)) ORDER BY e.tenant, e.app LIMIT $5",
        )
        .bind(tenant.unwrap_or(""))
        .bind(partner.unwrap_or(""))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list entitlements"))?;
        rows.iter()
            .map(|r| {
                Ok(EntitlementRow {
                    tenant: r.try_get("tenant")?,
                    app: r.try_get("app")?,
                    expires_ms: r.try_get("expires_ms")?,
                    revoked: r.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read entitlements"))
    }
}
