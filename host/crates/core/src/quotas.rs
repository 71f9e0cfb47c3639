//! Tenant quotas: how many installations a tenant may have and how many key-value bytes
//! all of them together may hold. The operator's `[sandbox] tenant-installations` and
//! `tenant-kv-bytes` apply to every tenant; a tenant's own quota may only be lower
//! (tighten-only, like limits). The store enforces them in the writing transaction
//! (`kiosk_store::tenant_quotas`); this module reads, sets and checks them up front.

use kiosk_store::TenantQuotaRow;

use crate::error::{Failure, Kind};
use crate::lifecycle::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// One quota as a tenant has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// What applies: the tenant's own quota if it has one, else the operator's.
    pub limit: u64,
    /// The operator's quota for every tenant (the most a tenant's own may be).
    pub default: u64,
    /// The tenant's own quota, if set.
    pub own: Option<u64>,
    /// What the tenant holds now.
    pub used: u64,
}

/// A tenant's quotas and its use of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantQuotas {
    pub installations: Quota,
    pub kv_bytes: Quota,
}

impl Kiosk {
    /// A tenant's quotas and what it uses of them; `not-found` for no such tenant.
    pub async fn tenant_quotas(&self, tenant: &str) -> Result<TenantQuotas> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")));
        }
        let own = self.store.tenant_quota(tenant).await?;
        let used = self.store.tenant_use(tenant).await?;
        let sandbox = &self.config.sandbox;
        let quota = |default: u64, own: Option<u64>, used: u64| Quota {
            limit: own.map_or(default, |own| own.min(default)),
            default,
            own,
            used,
        };
        Ok(TenantQuotas {
            installations: quota(sandbox.tenant_installations, own.installations, used.installations),
            kv_bytes: quota(sandbox.tenant_kv_bytes, own.kv_bytes, used.kv_bytes),
        })
    }

    /// Sets a tenant's own quotas (`None`: the operator's applies). Each may only lower
    /// the operator's (`limit-above-ceiling` names the field) and be at least 1
    /// (`invalid-limit`). Applies from the next install or key-value commit; what the
    /// tenant holds beyond a lowered quota stays (it can only shrink).
    pub async fn set_tenant_quotas(
        &self,
        tenant: &str,
        installations: Option<u64>,
        kv_bytes: Option<u64>,
        actor: &str,
    ) -> Result<TenantQuotas> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")));
        }
        let sandbox = &self.config.sandbox;
        for (field, value, ceiling, setting) in [
            ("installations", installations, sandbox.tenant_installations, "tenant-installations"),
            ("kvBytes", kv_bytes, sandbox.tenant_kv_bytes, "tenant-kv-bytes"),
        ] {
            match value {
                Some(0) => {
                    return Err(Failure::unprocessable(
                        Kind::InvalidLimit,
                        format!("{field} must be at least 1 (omit it for the operator's quota)"),
                    )
                    .field(field));
                }
                Some(v) if v > ceiling => {
                    return Err(Failure::unprocessable(
                        Kind::LimitAboveCeiling,
                        format!("{field} is {v}, above the operator's quota of {ceiling} ([sandbox] {setting})"),
                    )
                    .field(field));
                }
                _ => {}
            }
        }
        self.store.set_tenant_quota(tenant, TenantQuotaRow { installations, kv_bytes }, actor).await?;
        self.tenant_quotas(tenant).await
    }

    /// `set_tenant_quotas` from a request body: `installations` and `kvBytes`, each a whole
    /// number or null/absent; anything else is `invalid-limit` naming the field.
    pub async fn set_tenant_quotas_json(
        &self,
        tenant: &str,
        body: &serde_json::Value,
        actor: &str,
    ) -> Result<TenantQuotas> {
        let invalid = |field: &str, why: String| Failure::unprocessable(Kind::InvalidLimit, why).field(field);
        let Some(object) = body.as_object() else {
            return Err(invalid("", "the body must be an object with installations and/or kvBytes".into()));
        };
        if let Some(unknown) = object.keys().find(|k| !["installations", "kvBytes"].contains(&k.as_str())) {
            let shown: String = unknown.chars().take(64).collect();
            return Err(invalid(
                &shown,
                format!("unknown field {shown:?}: a tenant has quotas installations and kvBytes"),
            ));
        }
        let value = |field: &str| match object.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid(field, format!("{field} must be a whole number from 1 to the operator's quota, or null"))
            }),
        };
        let (installations, kv_bytes) = (value("installations")?, value("kvBytes")?);
        self.set_tenant_quotas(tenant, installations, kv_bytes, actor).await
    }

    /// Refuses an install up front when the tenant holds its installation quota (the
    /// store checks again as it records, for installs racing for the last place).
    pub(crate) async fn check_installation_quota(&self, tenant: &str) -> Result<()> {
        let quotas = self.tenant_quotas(tenant).await?;
        let q = quotas.installations;
        if q.used >= q.limit {
            return Err(Failure::unprocessable(
                Kind::TenantQuota,
                format!(
                    "tenant {tenant} has {} installations, its quota is {} (installations): uninstall one, or ask \
                     the operator for a higher quota",
                    q.used, q.limit
                ),
            )
            .field("app"));
        }
        Ok(())
    }
}
