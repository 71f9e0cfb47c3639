//! What operators control (issue 11): limit layers below the config file's ceilings,
//! suspended tenants and disabled partners, and the estate read back page by page.
//! Every write takes the actor and writes its audit row in its own transaction.

use std::collections::HashSet;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sqlite_reads::Columns;
use super::{InstallationRow, StoreError, VersionRow, audit, ctx, installation_row, version_row};
use kiosk_domain::limits::LimitValues;
use kiosk_domain::metering::now_ms;

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

/// What an installation's call reads before it runs (`Store::call_context`).
#[derive(Debug, Clone)]
pub struct CallContext {
    pub installation: InstallationRow,
    pub policy: CallPolicy,
    /// The tenant's licence for the installation's app, if one was ever granted.
    pub entitlement: Option<super::EntitlementRow>,
    /// The tenant's egress switch of the installation, if ever set.
    pub egress: Option<super::EgressSwitchRow>,
    /// The operator's API layer of outbound HTTP for the app's partner.
    pub operator_egress: super::OperatorEgress,
}

/// `Store::call_context`'s one statement. The four possible limit layers are four
/// indexed left joins (primary key `(tenant, app)`), so it is one row on SQLite and
/// PostgreSQL alike.
const CALL_CONTEXT: &str = "SELECT i.id AS id, i.tenant AS tenant, i.app AS app, i.version AS version,
        i.config AS config, i.secrets AS secrets, i.created_ms AS created_ms, i.updated_ms AS updated_ms,
        i.row_version AS row_version, i.upgrade_policy AS upgrade_policy,
        t.suspended AS suspended, p.disabled AS disabled,
        e.expires_ms AS e_expires_ms, e.revoked AS e_revoked,
        l0.limits AS l0_limits, l0.updated_ms AS l0_updated_ms,
        l1.limits AS l1_limits, l1.updated_ms AS l1_updated_ms,
        l2.limits AS l2_limits, l2.updated_ms AS l2_updated_ms,
        l3.limits AS l3_limits, l3.updated_ms AS l3_updated_ms,
        ie.enabled AS egress_enabled, ie.destinations AS egress_destinations, ie.updated_ms AS egress_updated_ms,
        og.enabled AS og_enabled, og.deny AS og_deny, op.enabled AS op_enabled, op.deny AS op_deny
     FROM installations i
     LEFT JOIN tenants t ON t.id = i.tenant
     LEFT JOIN apps a ON a.id = i.app
     LEFT JOIN partners p ON p.name = a.partner
     LEFT JOIN entitlements e ON e.tenant = i.tenant AND e.app = i.app
     LEFT JOIN limit_layers l0 ON l0.tenant = '' AND l0.app = ''
     LEFT JOIN limit_layers l1 ON l1.tenant = i.tenant AND l1.app = ''
     LEFT JOIN limit_layers l2 ON l2.tenant = '' AND l2.app = i.app
     LEFT JOIN limit_layers l3 ON l3.tenant = i.tenant AND l3.app = i.app
     LEFT JOIN installation_egress ie ON ie.tenant = i.tenant AND ie.installation = i.id
     LEFT JOIN egress_policy og ON og.scope = ''
     LEFT JOIN egress_policy op ON op.scope = a.partner
     WHERE i.tenant = $1 AND i.id = $2";

fn call_context_row(r: &impl Columns) -> Result<CallContext, sqlx::Error> {
    let installation = installation_row(r)?;
    let mut policy = CallPolicy {
        tenant_suspended: r.opt_int("suspended")?.is_some_and(|v| v != 0),
        partner_disabled: r.opt_int("disabled")?.is_some_and(|v| v != 0),
        layers: Vec::new(),
    };
    let layers = [
        ("l0_limits", "l0_updated_ms", "", ""),
        ("l1_limits", "l1_updated_ms", installation.tenant.as_str(), ""),
        ("l2_limits", "l2_updated_ms", "", installation.app.as_str()),
        ("l3_limits", "l3_updated_ms", installation.tenant.as_str(), installation.app.as_str()),
    ];
    for (limits, updated_ms, tenant, app) in layers {
        let Some(text) = r.opt_text(limits)? else { continue };
        policy.layers.push(LimitLayerRow {
            tenant: tenant.to_string(),
            app: app.to_string(),
            limits: serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            updated_ms: r.int(updated_ms)?,
        });
    }
    let entitlement = match r.opt_int("e_revoked")? {
        None => None,
        Some(revoked) => Some(super::EntitlementRow {
            tenant: installation.tenant.clone(),
            app: installation.app.clone(),
            expires_ms: r.opt_int("e_expires_ms")?,
            revoked: revoked != 0,
        }),
    };
    let egress = super::egress::switch_columns(r)?;
    let operator_egress = super::egress::operator_columns(r)?;
    Ok(CallContext { installation, policy, entitlement, egress, operator_egress })
}

/// A partner as the operator reads it.
#[derive(Debug, Clone)]
pub struct PartnerSummary {
    pub name: String,
    pub display: String,
    pub disabled: bool,
    pub created_ms: i64,
    pub certificates: i64,
    pub apps: i64,
}

/// A tenant as the operator reads it.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub id: String,
    pub display: String,
    pub suspended: bool,
    pub created_ms: i64,
    pub installations: i64,
}

/// A version's state for the estate filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Active,
    Yanked,
    Quarantined,
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

fn partner_summary(r: &AnyRow) -> Result<PartnerSummary, sqlx::Error> {
    Ok(PartnerSummary {
        name: r.try_get("name")?,
        display: r.try_get("display")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_ms: r.try_get("created_ms")?,
        certificates: r.try_get("certificates")?,
        apps: r.try_get("apps")?,
    })
}

fn tenant_summary(r: &AnyRow) -> Result<TenantSummary, sqlx::Error> {
    Ok(TenantSummary {
        id: r.try_get("id")?,
        display: r.try_get("display")?,
        suspended: r.try_get::<i64, _>("suspended")? != 0,
        created_ms: r.try_get("created_ms")?,
        installations: r.try_get("installations")?,
    })
}

const PARTNER_SUMMARY: &str = "SELECT name, display, disabled, created_ms,
    (SELECT COUNT(*) FROM partner_certs c WHERE c.partner = p.name) AS certificates,
    (SELECT COUNT(*) FROM apps a WHERE a.partner = p.name) AS apps FROM partners p";
const TENANT_SUMMARY: &str = "SELECT id, display, suspended, created_ms,
    (SELECT COUNT(*) FROM installations i WHERE i.tenant = t.id) AS installations FROM tenants t";

impl super::Store {
    // --- limit layers ---------------------------------------------------------------

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

    /// Everything an installation's call reads before it runs, in ONE statement: the
    /// installation row, its limit layers, the tenant's and partner's switches and the
    /// tenant's licence for the app. `None` if there is no such installation. The four
    /// possible layers are four indexed left joins (primary key `(tenant, app)`), so the
    /// statement is one row on SQLite and PostgreSQL alike.
    pub async fn call_context(&self, tenant: &str, id: &str) -> Result<Option<CallContext>, StoreError> {
        let inline = self.read_inline("call context", CALL_CONTEXT, |statement| {
            let mut rows = statement.query(rusqlite::named_params! {"$1": tenant, "$2": id})?;
            Ok(rows.next()?.map(call_context_row))
        });
        if let Some(context) = inline {
            return context.transpose().map_err(ctx("read call context"));
        }
        let row = sqlx::query(CALL_CONTEXT)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("read call context"))?;
        row.as_ref().map(call_context_row).transpose().map_err(ctx("read call context"))
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

    // --- suspend and disable ----------------------------------------------------------

    /// Suspends or resumes a tenant, with its audit row (`tenant.suspend` /
    /// `tenant.resume`) in one transaction; `false` if there is no such tenant.
    pub async fn set_tenant_suspended(&self, id: &str, suspended: bool, actor: &str) -> Result<bool, StoreError> {
        let action = if suspended { "tenant.suspend" } else { "tenant.resume" };
        self.set_flag("UPDATE tenants SET suspended = $1 WHERE id = $2", id, suspended, action, actor).await
    }

    /// Disables or enables a partner, with its audit row (`partner.disable` /
    /// `partner.enable`) in one transaction; `false` if there is no such partner.
    pub async fn set_partner_disabled(&self, name: &str, disabled: bool, actor: &str) -> Result<bool, StoreError> {
        let action = if disabled { "partner.disable" } else { "partner.enable" };
        self.set_flag("UPDATE partners SET disabled = $1 WHERE name = $2", name, disabled, action, actor).await
    }

    async fn set_flag(&self, sql: &str, key: &str, on: bool, action: &str, actor: &str) -> Result<bool, StoreError> {
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

    pub async fn partner_disabled(&self, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT disabled FROM partners WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find partner"))?;
        Ok(row.map(|r| r.try_get::<i64, _>("disabled")).transpose().map_err(ctx("read partner"))? == Some(1))
    }

    /// Suspended tenants and disabled partners (the collector skips their installations;
    /// the catalog hides disabled partners' apps).
    pub async fn inactive(&self) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
        let rows = sqlx::query(
            "SELECT 'tenant' AS kind, id AS name FROM tenants WHERE suspended <> 0
             UNION ALL SELECT 'partner', name FROM partners WHERE disabled <> 0",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list suspended tenants and disabled partners"))?;
        let (mut tenants, mut partners) = (HashSet::new(), HashSet::new());
        for r in &rows {
            let kind: String = r.try_get("kind").map_err(ctx("read"))?;
            let name: String = r.try_get("name").map_err(ctx("read"))?;
            if kind == "tenant" {
                tenants.insert(name);
            } else {
                partners.insert(name);
            }
        }
        Ok((tenants, partners))
    }

    // --- the estate -----------------------------------------------------------------

    /// Audit records newest first, those before the record `before` (its id) when given.
    pub async fn audit_page(&self, before: Option<i64>, limit: i64) -> Result<Vec<super::AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(super::AuditRow {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read audit log"))
    }

    pub async fn partners_page(&self, after: &str, limit: i64) -> Result<Vec<PartnerSummary>, StoreError> {
        let rows = sqlx::query(&format!("{PARTNER_SUMMARY} WHERE name > $1 ORDER BY name LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list partners"))?;
        rows.iter().map(partner_summary).collect::<Result<_, _>>().map_err(ctx("read partners"))
    }

    pub async fn partner(&self, name: &str) -> Result<Option<PartnerSummary>, StoreError> {
        let row = sqlx::query(&format!("{PARTNER_SUMMARY} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find partner"))?;
        row.as_ref().map(partner_summary).transpose().map_err(ctx("read partner"))
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

    /// Entitlements by (tenant, app), optionally of one tenant and/or one partner's apps.
    pub async fn entitlements_page(
        &self,
        tenant: Option<&str>,
        partner: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<super::EntitlementRow>, StoreError> {
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
                Ok(super::EntitlementRow {
                    tenant: r.try_get("tenant")?,
                    app: r.try_get("app")?,
                    expires_ms: r.try_get("expires_ms")?,
                    revoked: r.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read entitlements"))
    }

    /// Versions of every app by (app, version), optionally of one app and in one state.
    pub async fn versions_page(
        &self,
        app: Option<&str>,
        state: Option<VersionState>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<VersionRow>, StoreError> {
        let state_filter = match state {
            None => "",
            Some(VersionState::Active) => "AND yanked = 0 AND quarantined = 0",
            Some(VersionState::Yanked) => "AND yanked <> 0",
            Some(VersionState::Quarantined) => "AND quarantined <> 0",
        };
        let rows = sqlx::query(&format!(
            "SELECT {} FROM versions WHERE ($1 = '' OR app = $1) {state_filter}
             AND (app > $2 OR (app = $2 AND version > $3)) ORDER BY app, version LIMIT $4",
            super::VERSION_SELECT
        ))
        .bind(app.unwrap_or(""))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list versions"))?;
        rows.iter().map(version_row).collect::<Result<_, _>>().map_err(ctx("read versions"))
    }

    /// Installations across tenants by (tenant, id), optionally of one tenant and/or app.
    pub async fn installations_page(
        &self,
        tenant: Option<&str>,
        app: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM installations WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR app = $2)
             AND (tenant > $3 OR (tenant = $3 AND id > $4)) ORDER BY tenant, id LIMIT $5",
            super::INSTALLATION_SELECT
        ))
        .bind(tenant.unwrap_or(""))
        .bind(app.unwrap_or(""))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }
}
