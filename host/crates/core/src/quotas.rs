//! Tenant quotas: how many installations a tenant may have, how many key-value bytes
//! all of them together may hold, and what share of the collector's concurrent report
//! calls they may take. The operator's `[sandbox] tenant-installations`,
//! `tenant-kv-bytes` and `tenant-collection-share` apply to every tenant; a tenant's own
//! quota may only be lower (tighten-only, like limits). The store enforces the first two
//! in the writing transaction (`kiosk_store::tenant_quotas`), the collector the share
//! (`collector::fair`); this module reads, sets and checks them up front.

/// A tenant's own quotas as set (`None`: the operator's applies).
pub use kiosk_store::TenantQuotaRow as OwnQuotas;

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

/// A tenant's share of collection work: percent of the collector's concurrent report
/// calls. Nothing is "used" of it in the database: what runs is one replica's, for the
/// length of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// What applies, percent: the tenant's own share if it has one, else the operator's.
    pub limit: u64,
    /// The operator's share for every tenant (the most a tenant's own may be).
    pub default: u64,
    /// The tenant's own share, if set.
    pub own: Option<u64>,
    /// The report calls of the tenant's installations one replica runs at once at most.
    pub places: usize,
}

/// A tenant's quotas and its use of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantQuotas {
    pub installations: Quota,
    pub kv_bytes: Quota,
    pub collection_share: Share,
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
        let default = sandbox.tenant_collection_share;
        let share = own.collection_share.map_or(default, |own| own.min(default));
        Ok(TenantQuotas {
            installations: quota(sandbox.tenant_installations, own.installations, used.installations),
            kv_bytes: quota(sandbox.tenant_kv_bytes, own.kv_bytes, used.kv_bytes),
            collection_share: Share {
                limit: share,
                default,
                own: own.collection_share,
                places: crate::collector::fair::places_of(share),
            },
        })
    }

    /// Sets a tenant's own quotas (`None`: the operator's applies). Each may only lower
    /// the operator's (`limit-above-ceiling` names the field) and be at least 1
    /// (`invalid-limit`); the collection share is a percent, at most 100. Applies from the
    /// next install, key-value commit or collection pass; what the tenant holds beyond a
    /// lowered quota stays (it can only shrink).
    pub async fn set_tenant_quotas(&self, tenant: &str, own: OwnQuotas, actor: &str) -> Result<TenantQuotas> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")));
        }
        let sandbox = &self.config.sandbox;
        for (field, value, ceiling, setting) in [
            ("installations", own.installations, sandbox.tenant_installations, "tenant-installations"),
            ("kvBytes", own.kv_bytes, sandbox.tenant_kv_bytes, "tenant-kv-bytes"),
            ("collectionShare", own.collection_share, sandbox.tenant_collection_share, "tenant-collection-share"),
        ] {
            match value {
                Some(0) => {
                    return Err(Failure::unprocessable(
                        Kind::InvalidLimit,
                        format!("{field} must be at least 1 (omit it for the operator's quota)"),
                    )
                    .field(field));
                }
                Some(v) if field == "collectionShare" && v > 100 => {
                    return Err(Failure::unprocessable(
                        Kind::InvalidLimit,
                        format!("{field} is {v}, but it is a percent: from 1 to 100"),
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
        self.store.set_tenant_quota(tenant, own, actor).await?;
        self.tenant_quotas(tenant).await
    }

    /// `set_tenant_quotas` from a request body: `installations`, `kvBytes` and
    /// `collectionShare`, each a whole number or null/absent; anything else is
    /// `invalid-limit` naming the field.
    pub async fn set_tenant_quotas_json(
        &self,
        tenant: &str,
        body: &serde_json::Value,
        actor: &str,
    ) -> Result<TenantQuotas> {
        let invalid = |field: &str, why: String| Failure::unprocessable(Kind::InvalidLimit, why).field(field);
        let Some(object) = body.as_object() else {
            return Err(invalid(
                "",
                "the body must be an object with installations, kvBytes or collectionShare".into(),
            ));
        };
        const FIELDS: [&str; 3] = ["installations", "kvBytes", "collectionShare"];
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(64).collect();
            return Err(invalid(
                &shown,
                format!("unknown field {shown:?}: a tenant has quotas installations, kvBytes and collectionShare"),
            ));
        }
        let value = |field: &str| match object.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid(field, format!("{field} must be a whole number from 1 to the operator's quota, or null"))
            }),
        };
        let own = OwnQuotas {
            installations: value("installations")?,
            kv_bytes: value("kvBytes")?,
            collection_share: value("collectionShare")?,
        };
        self.set_tenant_quotas(tenant, own, actor).await
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
