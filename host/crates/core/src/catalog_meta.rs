//! Catalog metadata (SPEC §3): the publisher and the icon the catalog lists for each app
//! (those of its latest installable version, what an install without a version gets),
//! and a version's icon as it was signed. The changelog is the manifest's, read with the
//! version. Which apps a caller may see is the catalog's rule (`Kiosk::listed`,
//! `Kiosk::catalog_seen_by`): these read only what the caller already chose to show.

use std::collections::HashMap;

use kiosk_distribution::artifact::VerifiedArtifact;
use kiosk_domain::catalog_meta::Publisher;
use kiosk_domain::ids::AppId;
use kiosk_domain::resolve::{Candidate, resolve_version};
use kiosk_store::{NewIcon, VersionHead};

use crate::error::{Failure, Result};
use crate::lifecycle::Kiosk;

/// What the catalog lists of an app besides its name and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMeta {
    /// The latest installable version, whose metadata this is.
    pub version: String,
    pub publisher: Option<Publisher>,
    /// Whether that version has an icon.
    pub has_icon: bool,
}

/// A stored version as resolution reads it.
#[derive(Debug, Clone, Copy)]
struct Head<'a>(&'a VersionHead);

impl Candidate for Head<'_> {
    fn version(&self) -> &str {
        &self.0.version
    }

    fn yanked(&self) -> bool {
        self.0.yanked
    }

    fn quarantined(&self) -> bool {
        self.0.quarantined
    }

    fn quarantine_reason(&self) -> Option<&str> {
        self.0.quarantine_reason.as_deref()
    }
}

/// The icon of a verified artifact, as the store keeps it.
pub(crate) fn new_icon(artifact: &VerifiedArtifact) -> Option<NewIcon<'_>> {
    artifact.icon.as_ref().map(|icon| NewIcon {
        digest: icon.digest.as_str(),
        media_type: icon.media_type(),
        bytes: &icon.bytes,
    })
}

/// The path of a version's icon in the catalog API.
pub fn icon_path(app: &str, version: &str) -> String {
    format!("/v1/catalog/apps/{app}/versions/{version}/icon")
}

impl Kiosk {
    /// The publisher and icon of every app's latest installable version, by app id
    /// (apps with no installable version are absent). One read of every version's state,
    /// no manifest.
    pub async fn catalog_listing_meta(&self) -> Result<HashMap<String, ListedMeta>> {
        let heads = self.store.version_heads().await?;
        let mut out = HashMap::new();
        for app in heads.chunk_by(|a, b| a.app == b.app) {
            let candidates: Vec<Head<'_>> = app.iter().map(Head).collect();
            if let Ok(Head(latest)) = resolve_version(&app[0].app, &candidates, None, None) {
                let meta = ListedMeta {
                    version: latest.version.clone(),
                    publisher: latest.publisher.clone(),
                    has_icon: latest.icon_digest.is_some(),
                };
                out.insert(latest.app.clone(), meta);
            }
        }
        Ok(out)
    }

    /// The icon of `partner/name@version`: its media type (`image/png`, `image/jpeg`) and
    /// bytes, as signed and verified at registration; `None` if the version has none.
    /// 404 for an unknown app or version. Whether the caller may see the app is the
    /// caller's check (`Kiosk::listed`), as for every catalog read.
    pub async fn catalog_icon(&self, partner: &str, name: &str, version: &str) -> Result<Option<(String, Vec<u8>)>> {
        let app = AppId::new(partner, name).map_err(|e| Failure::not_found(e.to_string()).field("app"))?.to_string();
        let row = self
            .store
            .version(&app, version)
            .await?
            .ok_or_else(|| Failure::not_found(format!("no version {app}@{version}")).field("version"))?;
        let Some(digest) = row.icon_digest else {
            return Ok(None);
        };
        let icon = self.store.icon(&digest).await?;
        Ok(Some(icon.ok_or_else(|| Failure::internal(format!("icon {digest} of {app}@{version} missing")))?))
    }
}
