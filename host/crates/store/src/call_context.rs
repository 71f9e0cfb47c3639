//! What an installation's call reads before it runs, in one statement: the
//! installation, its limit layers, the tenant's and partner's switches, the tenant's
//! licence and both layers of its outbound HTTP. On a SQLite file it is read inline
//! (`sqlite_reads`).

use crate::egress::{EgressSwitchRow, OperatorEgress, operator_columns, switch_columns};
use crate::entitlements::EntitlementRow;
use crate::installations::{InstallationRow, installation_row};
use crate::limits::{CallPolicy, LimitLayerRow};
use crate::sqlite_reads::Columns;
use crate::{Store, StoreError, ctx};

/// What an installation's call reads before it runs (`Store::call_context`).
#[derive(Debug, Clone)]
pub struct CallContext {
    pub installation: InstallationRow,
    pub policy: CallPolicy,
    /// The tenant's licence for the installation's app, if one was ever granted.
    pub entitlement: Option<EntitlementRow>,
    /// The tenant's egress switch of the installation, if ever set.
    pub egress: Option<EgressSwitchRow>,
    /// The operator's API layer of outbound HTTP for the app's partner.
    pub operator_egress: OperatorEgress,
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
        Some(revoked) => Some(EntitlementRow {
            tenant: installation.tenant.clone(),
            app: installation.app.clone(),
            expires_ms: r.opt_int("e_expires_ms")?,
            revoked: revoked != 0,
        }),
    };
    let egress = switch_columns(r)?;
    let operator_egress = operator_columns(r)?;
    Ok(CallContext { installation, policy, entitlement, egress, operator_egress })
}

impl Store {
    /// Everything an installation's call reads before it runs, in ONE statement: the
    /// installation row, its limit layers, the tenant's and partner's switches and the
    /// tenant's licence for the app. `None` if there is no such installation. The four
    /// possible layers are four indexed left joins (primary key `(tenant, app)`), so the
    /// statement is one row on SQLite and PostgreSQL alike. Kept for `CALL_READS_FRESH`
    /// at most, and dropped when a write of this process ends (`call_cache`).
    pub async fn call_context(&self, tenant: &str, id: &str) -> Result<Option<CallContext>, StoreError> {
        if let Some(context) = self.cache.context(tenant, id) {
            return Ok(Some(context));
        }
        let start = self.cache.start();
        let inline = self.read_inline("call context", CALL_CONTEXT, |statement| {
            let mut rows = statement.query(rusqlite::named_params! {"$1": tenant, "$2": id})?;
            Ok(rows.next()?.map(call_context_row))
        });
        let context = match inline {
            Some(context) => context.transpose().map_err(ctx("read call context"))?,
            None => {
                let row = crate::read_once_more("read call context", || {
                    sqlx::query(CALL_CONTEXT).bind(tenant).bind(id).fetch_optional(&self.pool)
                })
                .await?;
                row.as_ref().map(call_context_row).transpose().map_err(ctx("read call context"))?
            }
        };
        if let Some(context) = &context {
            self.cache.keep_context(tenant, id, context.clone(), start);
        }
        Ok(context)
    }
}
