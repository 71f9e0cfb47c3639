//! The catalog as tenants and partners read it: the apps of enabled partners with their
//! display name, description and categories, and a partner's own apps. A disabled
//! partner's apps are not listed (404 as for an unknown app).

use std::collections::HashSet;

use kiosk_domain::ids::AppId;
use kiosk_store::VersionRow;

use crate::error::{Failure, Result};
use crate::lifecycle::Kiosk;

/// An app as the catalog lists it.
pub use kiosk_store::AppRow as CatalogEntry;

/// Whether an app (`partner/name`) is listed: its partner is not disabled.
fn is_listed(disabled: &HashSet<String>, app: &str) -> bool {
    AppId::parse(app).map_or(true, |id| !disabled.contains(id.partner()))
}

impl Kiosk {
    /// Every listed app, by id.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let disabled = self.store.inactive().await?.disabled_partners;
        Ok(self.store.apps().await?.into_iter().filter(|a| is_listed(&disabled, &a.app)).collect())
    }

    /// 404 unless app `partner/name` is listed (its partner is not disabled).
    pub async fn listed(&self, partner: &str, name: &str) -> Result<()> {
        if self.store.partner_disabled(partner).await? {
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
