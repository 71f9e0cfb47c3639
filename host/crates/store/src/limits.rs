//! The operator's limit layers (`limit_layers`, issue 11) below the config file's
//! ceilings: the defaults, per app, per tenant and per (tenant, app); set and removed
//! with their audit rows, and read as one call's policy.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use kiosk_domain::limits::LimitValues;
use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx};

/// One stored limit layer: `tenant` and `app` are `""` where the layer is not per
/// tenant or per app (`("", "")` are the operator's defaults).
#[derive(Debug, Clone)]
pub struct LimitLayerRow {
    pub tenant: String,
    pub app: String,
    pub limits: LimitValues,
    pub updated_ms: i64,
}

/// What one call needs to know before it runs, read in one statement: the limit layers
/// that apply to (tenant, app), and whether the tenant is suspended or the app's partner
/// disabled.
#[derive(Debug, Clone, Default)]
pub struct CallPolicy {
    pub layers: Vec<LimitLayerRow>,
    pub tenant_suspended: bool,
    pub partner_disabled: bool,
}

fn layer_row(r: &AnyRow) -> Result<LimitLayerRow, sqlx::Error> {
    let text: String = r.try_get("limits")?;
    Ok(LimitLayerRow {
        tenant: r.try_get("tenant")?,
        app: r.try_get("app")?,
        limits: serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

/// How a layer is named in the audit log.
fn layer_target(tenant: &str, app: &str) -> String {
    match (tenant, app) {
        ("", "") => "defaults".to_string(),
        ("", app) => format!("app:{app}"),
        (tenant, "") => format!("tenant:{tenant}"),
        (tenant, app) => format!("tenant:{tenant}:{app}"),
    }
}

impl Store {
    /// The call policy of `tenant`'s installations of `app` (`partner/name`): one read.
    pub async fn call_policy(&self, tenant: &str, app: &str) -> Result<CallPolicy, StoreError> {
        let partner = app.split_once('/').map_or(app, |(p, _)| p);
        let rows = sqlx::query(
            "SELECT 'layer' AS kind, tenant, app, limits, updated_ms FROM limit_layers
               WHERE (tenant = '' OR tenant = $1) AND (app = '' OR app = $2)
             UNION ALL SELECT 'tenant', id, '', '', suspended FROM tenants WHERE id = $1
             UNION ALL SELECT 'partner', name, '', '', disabled FROM partners WHERE name = $3",
        )
        .bind(tenant)
        .bind(app)
        .bind(partner)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read call policy"))?;
        let mut policy = CallPolicy::default();
        for r in &rows {
            let kind: String = r.try_get("kind").map_err(ctx("read call policy"))?;
            let flag = || r.try_get::<i64, _>("updated_ms").map(|v| v != 0).map_err(ctx("read call policy"));
            match kind.as_str() {
                "tenant" => policy.tenant_suspended = flag()?,
                "partner" => policy.partner_disabled = flag()?,
                _ => policy.layers.push(layer_row(r).map_err(ctx("read limit layer"))?),
            }
        }
        Ok(policy)
    }

    /// One layer, if set.
    pub async fn limit_layer(&self, tenant: &str, app: &str) -> Result<Option<LimitLayerRow>, StoreError> {
        let row =
            sqlx::query("SELECT tenant, app, limits, updated_ms FROM limit_layers WHERE tenant = $1 AND app = $2")
                .bind(tenant)
                .bind(app)
                .fetch_optional(&self.pool)
                .await
                .map_err(ctx("find limit layer"))?;
        row.as_ref().map(layer_row).transpose().map_err(ctx("read limit layer"))
    }

    /// Sets (replaces) a layer, with its audit row (`limits.put`) in one transaction.
    pub async fn put_limit_layer(
        &self,
        tenant: &str,
        app: &str,
        limits: &LimitValues,
        actor: &str,
    ) -> Result<LimitLayerRow, StoreError> {
        let text = serde_json::to_string(limits).unwrap_or_else(|_| "{}".into());
        let now = now_ms() as i64;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO limit_layers (tenant, app, limits, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, app) DO UPDATE SET limits = excluded.limits, updated_ms = excluded.updated_ms",
        )
        .bind(tenant)
        .bind(app)
        .bind(&text)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(ctx("store limit layer"))?;
        audit(&mut tx, actor, "limits.put", &layer_target(tenant, app), &text).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(LimitLayerRow { tenant: tenant.into(), app: app.into(), limits: limits.clone(), updated_ms: now })
    }

    /// Removes a layer (its values inherit again), with its audit row (`limits.delete`)
    /// in one transaction; `false` if there was none (nothing written).
    pub async fn delete_limit_layer(&self, tenant: &str, app: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM limit_layers WHERE tenant = $1 AND app = $2")
            .bind(tenant)
            .bind(app)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete limit layer"))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "limits.delete", &layer_target(tenant, app), "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// Apps' caps by app, after `after`.
    pub async fn app_limit_layers(&self, after: &str, limit: i64) -> Result<Vec<LimitLayerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, app, limits, updated_ms FROM limit_layers WHERE tenant = '' AND app <> '' AND app > $1
             ORDER BY app LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list app limits"))?;
        rows.iter().map(layer_row).collect::<Result<_, _>>().map_err(ctx("read app limits"))
    }

    /// Tenants' overrides (per tenant, and per tenant and app) by (tenant, app), after
    /// `after`.
    pub async fn tenant_limit_layers(&self, after: (&str, &str), limit: i64) -> Result<Vec<LimitLayerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, app, limits, updated_ms FROM limit_layers
             WHERE tenant <> '' AND (tenant > $1 OR (tenant = $1 AND app > $2)) ORDER BY tenant, app LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list tenant limits"))?;
        rows.iter().map(layer_row).collect::<Result<_, _>>().map_err(ctx("read tenant limits"))
    }
}
