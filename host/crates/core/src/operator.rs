//! What operators control (issue 11), for every front end: limit layers below the
//! config file's ceilings (computed per call from the database, so a change applies to
//! the next call on every replica sharing it), suspended tenants and disabled partners.
//!
//! Layers, highest first: ceilings (`[sandbox]`, fixed at start: some size the pooling
//! allocator) → operator defaults (`[sandbox.defaults]`, overlaid by the API's) →
//! per-app caps → the manifest's `limits` → per-tenant overrides (per tenant, then per
//! tenant and app). Each layer only tightens; a value above its ceiling is refused
//! naming the field and the ceiling.

use serde_json::Value;

use kiosk_domain::ids::AppId;
use kiosk_domain::limits::{Effective, Layers, LimitError, LimitValues, RequestedLimits};
use kiosk_domain::manifest::Manifest;
use kiosk_runtime::runtime::AppVersion;
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::{CallPolicy, InstallationRow, LimitLayerRow};

use crate::error::{Failure, Kind};
use crate::lifecycle::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// What a call is for, deciding what a suspended tenant or a disabled partner may still
/// do: an uninstall always goes ahead (a tenant is never locked in), anything else that
/// runs the app is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// install, configure, upgrade, invoke, report.
    Run,
    /// uninstall.
    Leave,
}

/// A limit layer's refusal as a failure naming the field (and the ceiling it exceeds).
pub fn limit_failure(e: LimitError) -> Failure {
    let kind = if e.above_ceiling { Kind::LimitAboveCeiling } else { Kind::InvalidLimit };
    let field = e.field.clone();
    let failure = Failure::unprocessable(kind, e.detail);
    if field.is_empty() { failure } else { failure.field(field) }
}

fn layers_of(config_defaults: &LimitValues, policy: &CallPolicy, manifest: RequestedLimits) -> Layers {
    let mut layers = Layers { defaults: config_defaults.clone(), manifest, ..Layers::default() };
    for row in &policy.layers {
        match (row.tenant.is_empty(), row.app.is_empty()) {
            (true, true) => layers.defaults = layers.defaults.overlaid(&row.limits),
            (true, false) => layers.app = row.limits.clone(),
            (false, true) => layers.tenant = row.limits.clone(),
            (false, false) => layers.tenant_app = row.limits.clone(),
        }
    }
    layers
}

impl Kiosk {
    /// Refuses a call of `app` for `tenant` that the operator stopped (`tenant-suspended`,
    /// `partner-disabled`; an uninstall always passes) and returns the version with the
    /// limits this call runs under. One read of the database.
    pub async fn admit_call(&self, tenant: &str, app: &AppVersion, purpose: Purpose) -> Result<AppVersion> {
        let policy = self.store.call_policy(tenant, &app.manifest.app).await?;
        self.admit_under(tenant, app, purpose, &policy)
    }

    /// `admit_call` with the policy already read (`Store::call_context`).
    pub(crate) fn admit_under(
        &self,
        tenant: &str,
        app: &AppVersion,
        purpose: Purpose,
        policy: &CallPolicy,
    ) -> Result<AppVersion> {
        if purpose == Purpose::Run {
            if policy.tenant_suspended {
                return Err(Failure::forbidden(
                    Kind::TenantSuspended,
                    format!("tenant {tenant} is suspended by the operator: its apps do not run"),
                )
                .field("tenant"));
            }
            if policy.partner_disabled {
                return Err(Failure::forbidden(
                    Kind::PartnerDisabled,
                    format!("the partner of {} is disabled by the operator: its apps do not run", app.manifest.app),
                )
                .field("app"));
            }
        }
        let effective =
            self.config.sandbox.effective(&layers_of(&self.config.sandbox.defaults, policy, app.manifest.limits));
        Ok(app.with_limits(effective.limits))
    }

    /// The limits a call of a version of `app` with manifest limits `manifest` gets
    /// before any tenant's override (registration's check). One read of the database.
    pub async fn registration_limits(
        &self,
        app: &str,
        manifest: kiosk_domain::limits::RequestedLimits,
    ) -> Result<kiosk_domain::limits::CallLimits> {
        let policy = self.store.call_policy("", app).await?;
        Ok(self.config.sandbox.effective(&layers_of(&self.config.sandbox.defaults, &policy, manifest)).limits)
    }

    /// The limits an installation's next call runs under, with their sources.
    pub async fn installation_limits(&self, row: &InstallationRow) -> Result<Effective> {
        let version = self
            .store
            .version(&row.app, &row.version)
            .await?
            .ok_or_else(|| Failure::internal(format!("installed version {}@{} missing", row.app, row.version)))?;
        let manifest = Manifest::parse(version.manifest.as_bytes(), &HOST_API_VERSION)
            .map_err(|e| Failure::unprocessable(Kind::HostApiMismatch, e.to_string()).field("hostApi"))?;
        let policy = self.store.call_policy(&row.tenant, &row.app).await?;
        Ok(self.config.sandbox.effective(&layers_of(&self.config.sandbox.defaults, &policy, manifest.limits)))
    }

    // --- layers -----------------------------------------------------------------------

    /// The operator defaults: the config file's overlaid by the API's.
    pub async fn default_limits(&self) -> Result<LimitValues> {
        let api = self.store.limit_layer("", "").await?.map(|r| r.limits).unwrap_or_default();
        Ok(self.config.sandbox.defaults.overlaid(&api))
    }

    /// Replaces the API's defaults with `body` (absent values inherit the config file's,
    /// else the ceiling).
    pub async fn put_default_limits(&self, body: &Value, actor: &str) -> Result<LimitValues> {
        let values = LimitValues::from_json(body, &self.config.sandbox).map_err(limit_failure)?;
        self.store.put_limit_layer("", "", &values, actor).await?;
        self.default_limits().await
    }

    /// The app id of an app that has versions, else 404.
    async fn known_app(&self, partner: &str, name: &str) -> Result<String> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("app"))?.to_string();
        if self.store.versions(&app).await?.is_empty() {
            return Err(Failure::not_found(format!("no app {app:?}")).field("app"));
        }
        Ok(app)
    }

    async fn known_tenant(&self, tenant: &str) -> Result<()> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")).field("tenant"));
        }
        Ok(())
    }

    /// The operator's cap for an app (404 when none is set or the app is unknown).
    pub async fn app_limits(&self, partner: &str, name: &str) -> Result<LimitLayerRow> {
        let app = self.known_app(partner, name).await?;
        self.store
            .limit_layer("", &app)
            .await?
            .ok_or_else(|| Failure::not_found(format!("no limits set for app {app}")).field("app"))
    }

    pub async fn put_app_limits(&self, partner: &str, name: &str, body: &Value, actor: &str) -> Result<LimitLayerRow> {
        let app = self.known_app(partner, name).await?;
        let values = LimitValues::from_json(body, &self.config.sandbox).map_err(limit_failure)?;
        Ok(self.store.put_limit_layer("", &app, &values, actor).await?)
    }

    pub async fn delete_app_limits(&self, partner: &str, name: &str, actor: &str) -> Result<()> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("app"))?.to_string();
        if !self.store.delete_limit_layer("", &app, actor).await? {
            return Err(Failure::not_found(format!("no limits set for app {app}")).field("app"));
        }
        Ok(())
    }

    /// A tenant's override, for all its installations or (`app`) for those of one app.
    pub async fn tenant_limits(&self, tenant: &str, app: Option<(&str, &str)>) -> Result<LimitLayerRow> {
        self.known_tenant(tenant).await?;
        let app = match app {
            Some((partner, name)) => self.known_app(partner, name).await?,
            None => String::new(),
        };
        self.store.limit_layer(tenant, &app).await?.ok_or_else(|| {
            Failure::not_found(format!(
                "no limits set for tenant {tenant}{}",
                if app.is_empty() { String::new() } else { format!(" and app {app}") }
            ))
            .field("tenant")
        })
    }

    pub async fn put_tenant_limits(
        &self,
        tenant: &str,
        app: Option<(&str, &str)>,
        body: &Value,
        actor: &str,
    ) -> Result<LimitLayerRow> {
        self.known_tenant(tenant).await?;
        let app = match app {
            Some((partner, name)) => self.known_app(partner, name).await?,
            None => String::new(),
        };
        let values = LimitValues::from_json(body, &self.config.sandbox).map_err(limit_failure)?;
        Ok(self.store.put_limit_layer(tenant, &app, &values, actor).await?)
    }

    pub async fn delete_tenant_limits(&self, tenant: &str, app: Option<(&str, &str)>, actor: &str) -> Result<()> {
        let app = match app {
            Some((partner, name)) => {
                AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("app"))?.to_string()
            }
            None => String::new(),
        };
        if !self.store.delete_limit_layer(tenant, &app, actor).await? {
            return Err(Failure::not_found(format!("no limits set for tenant {tenant:?}")).field("tenant"));
        }
        Ok(())
    }

    // --- suspend and disable ----------------------------------------------------------

    /// Suspends (or resumes) a tenant: its calls, installs, configures and upgrades are
    /// refused from the next request on; it can still read and uninstall.
    pub async fn set_tenant_suspended(&self, tenant: &str, suspended: bool, actor: &str) -> Result<()> {
        if !self.store.set_tenant_suspended(tenant, suspended, actor).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")).field("tenant"));
        }
        Ok(())
    }

    /// Disables (or enables) a partner: no registrations, its apps out of the catalog,
    /// not installable, and its installations' calls refused; it can still read.
    pub async fn set_partner_disabled(&self, partner: &str, disabled: bool, actor: &str) -> Result<()> {
        if !self.store.set_partner_disabled(partner, disabled, actor).await? {
            return Err(Failure::not_found(format!("no partner {partner:?}")).field("partner"));
        }
        Ok(())
    }

    /// Refuses a registration of a disabled partner's app (before any network I/O).
    pub async fn check_partner_enabled(&self, app: &str) -> Result<()> {
        let partner = AppId::parse(app).map(|id| id.partner().to_string()).unwrap_or_default();
        if self.store.partner_disabled(&partner).await? {
            return Err(Failure::forbidden(
                Kind::PartnerDisabled,
                format!("partner {partner} is disabled by the operator: it registers nothing"),
            )
            .field("partner"));
        }
        Ok(())
    }
}
