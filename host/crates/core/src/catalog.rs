//! The catalog as tenants and partners read it: the apps of enabled partners with their
//! display name, description and categories, and a partner's own apps. A disabled
//! partner's apps are not listed (404 as for an unknown app).

use std::collections::HashSet;

use kiosk_domain::ids::AppId;
use kiosk_store::VersionRow;

use crate::error::{Failure, Result};
use crate::lifecycle::Kiosk;

/// Who reads the catalog: tenants see their own private apps besides the public ones,
/// the operator sees every app, partners the public ones.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    Operator,
    Tenant(&'a str),
    Other,
}

/// An app as the catalog lists it.
pub use kiosk_store::AppRow as CatalogEntry;

/// Whether an app (`partner/name`) is listed for `viewer` (a tenant, or `None` for
/// everyone): its partner is not disabled, and a private app (`~tenant/name`) only for
/// its tenant.
fn is_listed(disabled: &HashSet<String>, app: &str, viewer: Option<&str>) -> bool {
    AppId::parse(app).map_or(true, |id| {
        !disabled.contains(id.partner()) && id.private_owner().is_none_or(|owner| Some(owner) == viewer)
    })
}

impl Kiosk {
    /// Every app listed for everyone, by id (no tenant's private apps).
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        self.catalog_seen_by(None).await
    }

    /// Every app listed for `viewer` (a tenant: also its private apps), by id.
    pub async fn catalog_seen_by(&self, viewer: Option<&str>) -> Result<Vec<CatalogEntry>> {
        let disabled = self.store.inactive().await?.disabled_partners;
        Ok(self.store.apps().await?.into_iter().filter(|a| is_listed(&disabled, &a.app, viewer)).collect())
    }

    /// 404 unless app `partner/name` is listed for `viewer` (its partner is not
    /// disabled; a private app only for its tenant, and for the operator: `viewer` is
    /// `Viewer::Operator`).
    pub async fn listed(&self, viewer: Viewer<'_>, partner: &str, name: &str) -> Result<()> {
        let private = kiosk_domain::ids::private_owner(partner);
        let hidden = match viewer {
            Viewer::Operator => false,
            Viewer::Tenant(t) => private.is_some_and(|owner| owner != t),
            Viewer::Other => private.is_some(),
        };
        if hidden || self.store.partner_disabled(partner).await? {
            return Err(Failure::not_found(format!("no app \"{partner}/{name}\"")).field("app"));
        }
        Ok(())
    }

    /// A partner's apps (listed or not) with every version, by app id.
    pub async fn partner_apps(&self, partner: &str) -> Result<Vec<(CatalogEntry, Vec<VersionRow>)>> {
        let mut out = Vec::new();
        for app in self.store.apps().await?.into_iter().filter(|a| AppId::is_of(&a.app, partner)) {
            let versions = self.store.versions(&app.app).await?;
            out.push((app, versions));
        }
        Ok(out)
    }

    /// The partner's yank of one of its versions; 404 when there is no such version.
    pub async fn partner_yank(&self, partner: &str, name: &str, version: &str, actor: &str) -> Result<String> {
        let app = crate::estate::app_id(partner, name)?;
        if !self.store.set_yanked(&app, version, true, actor).await? {
            return Err(Failure::not_found(format!("no version {app}@{version}")));
        }
        Ok(app)
    }
}
