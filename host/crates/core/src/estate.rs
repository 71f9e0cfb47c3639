//! The estate as the operator administers and reads it: partners and tenants created,
//! entitlements set, and every page of partners, tenants, entitlements, versions,
//! installations, limit layers and the audit log. Pages are keyset pages: at most
//! `limit` rows after a cursor (the caller asks one more to know whether a next exists).

use kiosk_domain::ids::AppId;
use kiosk_store::{
    AuditRow, EntitlementRow, InstallationRow, LimitLayerRow, PartnerSummary, TenantSummary, UsageWindowRow,
    VersionRow, VersionState,
};

use crate::error::{Failure, Kind, Result};
use crate::lifecycle::Kiosk;

/// The app `partner/name`; an id that cannot exist is a 404 as for an unknown app.
pub fn app_id(partner: &str, name: &str) -> Result<String> {
    AppId::new(partner, name).map(|id| id.to_string()).map_err(|e| Failure::not_found(e.to_string()).field("app"))
}

impl Kiosk {
    /// A partner named `name` (`display` defaults to the name); `exists` if taken.
    pub async fn create_partner(&self, name: &str, display: Option<&str>, actor: &str) -> Result<()> {
        if !self.store.create_partner(name, display.unwrap_or(name), actor).await? {
            return Err(Failure::conflict(Kind::Exists, format!("partner {name:?} exists")).field("name"));
        }
        Ok(())
    }

    /// A partner unless it exists already (the demo seed, `kiosk run`, `kiosk pull`).
    pub async fn ensure_partner(&self, name: &str, actor: &str) -> Result<()> {
        self.store.create_partner(name, name, actor).await?;
        Ok(())
    }

    /// A tenant with id `id` (`display` defaults to the id); `exists` if taken.
    pub async fn create_tenant(&self, id: &str, display: Option<&str>, actor: &str) -> Result<()> {
        if !self.store.create_tenant(id, display.unwrap_or(id), actor).await? {
            return Err(Failure::conflict(Kind::Exists, format!("tenant {id:?} exists")).field("id"));
        }
        Ok(())
    }

    /// A tenant unless it exists already (the demo seed, `kiosk run`).
    pub async fn ensure_tenant(&self, id: &str, display: &str, actor: &str) -> Result<()> {
        self.store.create_tenant(id, display, actor).await?;
        Ok(())
    }

    /// 404 unless partner `name` exists.
    pub async fn require_partner(&self, name: &str) -> Result<()> {
        match self.store.partner_exists(name).await? {
            true => Ok(()),
            false => Err(Failure::not_found(format!("no partner {name:?}")).field("partner")),
        }
    }

    /// 404 unless tenant `id` exists.
    pub async fn require_tenant(&self, id: &str) -> Result<()> {
        match self.store.tenant_exists(id).await? {
            true => Ok(()),
            false => Err(Failure::not_found(format!("no tenant {id:?}")).field("tenant")),
        }
    }

    /// Sets tenant `tenant`'s entitlement to app `partner/name` (both must exist).
    pub async fn set_entitlement(
        &self,
        tenant: &str,
        (partner, name): (&str, &str),
        expires_ms: Option<i64>,
        revoked: bool,
        actor: &str,
    ) -> Result<EntitlementRow> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Failure::not_found(format!("no tenant {tenant:?}")));
        }
        let app = app_id(partner, name)?;
        if self.store.versions(&app).await?.is_empty() {
            return Err(Failure::not_found(format!("no app {app:?}")));
        }
        let row = EntitlementRow { tenant: tenant.to_string(), app, expires_ms, revoked };
        self.store.set_entitlement(&row, actor).await?;
        Ok(row)
    }

    /// An entitlement granted by Kiosk itself (`kiosk run`'s local tenant).
    pub async fn grant(&self, row: &EntitlementRow, actor: &str) -> Result<()> {
        Ok(self.store.set_entitlement(row, actor).await?)
    }

    pub async fn partners_page(&self, after: &str, limit: i64) -> Result<Vec<PartnerSummary>> {
        Ok(self.store.partners_page(after, limit).await?)
    }

    pub async fn partner_summary(&self, name: &str) -> Result<PartnerSummary> {
        let found = self.store.partner(name).await?;
        found.ok_or_else(|| Failure::not_found(format!("no partner {name:?}")).field("partner"))
    }

    pub async fn tenants_page(&self, after: &str, limit: i64) -> Result<Vec<TenantSummary>> {
        Ok(self.store.tenants_page(after, limit).await?)
    }

    pub async fn tenant_summary(&self, id: &str) -> Result<TenantSummary> {
        let found = self.store.tenant(id).await?;
        found.ok_or_else(|| Failure::not_found(format!("no tenant {id:?}")).field("tenant"))
    }

    pub async fn entitlements_page(
        &self,
        tenant: Option<&str>,
        partner: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<EntitlementRow>> {
        Ok(self.store.entitlements_page(tenant, partner, after, limit).await?)
    }

    pub async fn versions_page(
        &self,
        app: Option<&str>,
        state: Option<VersionState>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<VersionRow>> {
        Ok(self.store.versions_page(app, state, after, limit).await?)
    }

    pub async fn installations_page(
        &self,
        tenant: Option<&str>,
        app: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<InstallationRow>> {
        Ok(self.store.installations_page(tenant, app, after, limit).await?)
    }

    pub async fn app_limit_layers(&self, after: &str, limit: i64) -> Result<Vec<LimitLayerRow>> {
        Ok(self.store.app_limit_layers(after, limit).await?)
    }

    pub async fn tenant_limit_layers(&self, after: (&str, &str), limit: i64) -> Result<Vec<LimitLayerRow>> {
        Ok(self.store.tenant_limit_layers(after, limit).await?)
    }

    /// The latest `limit` audit records older than record `before`.
    pub async fn audit_page(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(self.store.audit_page(before, limit).await?)
    }

    /// An installation's usage windows older than `before`, newest first, at most `limit`.
    pub async fn usage_windows(&self, installation: &str, before: i64, limit: i64) -> Result<Vec<UsageWindowRow>> {
        Ok(self.store.usage_windows_page(installation, before, limit).await?)
    }

    /// Whether the database answers (the readiness probe); why not goes to the log.
    pub async fn database_reachable(&self) -> bool {
        match self.store.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "not ready: database unreachable");
                false
            }
        }
    }

    /// Whether the runtime stopped taking calls (shutdown began).
    pub fn is_shutting_down(&self) -> bool {
        self.runtime.is_shutting_down()
    }

    /// Sandbox slots in use now (a gauge).
    pub fn slots_in_use(&self) -> usize {
        self.runtime.slots_in_use()
    }

    /// The operator's configuration, as loaded at start (read-only).
    pub fn config(&self) -> &crate::config::OperatorConfig {
        &self.config
    }
}

impl Kiosk {
    /// Installation `id` of app `partner/name` (a partner reading its app's logs), any
    /// tenant's.
    pub async fn installation_of_app(&self, partner: &str, name: &str, id: &str) -> Result<InstallationRow> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("name"))?;
        let found = self.store.installation_of_app(&app.to_string(), id).await?;
        found.ok_or_else(|| Failure::not_found(format!("no installation {id:?} of {app}")).field("id"))
    }
}

impl Kiosk {
    /// Version `version` of app `app` (`partner/name`), yanked or quarantined or not.
    pub async fn version(&self, app: &str, version: &str) -> Result<VersionRow> {
        let found = self.store.version(app, version).await?;
        found.ok_or_else(|| Failure::not_found(format!("no version {app}@{version}")).field("version"))
    }
}
