//! Catalog metadata of versions (SPEC §3): icons (`icons`, one row per content digest,
//! with the media type they were verified as) and what the catalog lists of each
//! version without reading its manifest (`versions.publisher`, `versions.icon_digest`).
//! Written in the registration's transaction (`Store::register_version_with_icon`).

use sqlx::Row as _;

use kiosk_domain::catalog_meta::Publisher;
use kiosk_domain::manifest::Manifest;

use crate::{Store, StoreError, ctx};

/// A verified icon to keep with a version.
#[derive(Debug, Clone, Copy)]
pub struct NewIcon<'a> {
    /// `sha256:…` of the bytes.
    pub digest: &'a str,
    /// `image/png` or `image/jpeg`.
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

/// What the catalog lists of a version: its state, its publisher and whether it has an
/// icon (no manifest: one row per version of every app stays small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHead {
    pub app: String,
    pub version: String,
    pub yanked: bool,
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    pub publisher: Option<Publisher>,
    pub icon_digest: Option<String>,
}

/// Keeps `icon` (once per digest) and the version's publisher and icon digest, in the
/// registration's transaction, after its `versions` row.
pub(crate) async fn record(
    tx: &mut crate::WriteTransaction,
    manifest: &Manifest,
    icon: Option<&NewIcon<'_>>,
) -> Result<(), StoreError> {
    let publisher = manifest.publisher.as_ref().and_then(|p| serde_json::to_string(p).ok());
    if icon.is_none() && publisher.is_none() {
        return Ok(());
    }
    if let Some(icon) = icon {
        sqlx::query(
            "INSERT INTO icons (digest, media_type, bytes) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(icon.digest)
        .bind(icon.media_type)
        .bind(icon.bytes)
        .execute(&mut **tx)
        .await
        .map_err(ctx("store icon"))?;
    }
    sqlx::query("UPDATE versions SET icon_digest = $1, publisher = $2 WHERE app = $3 AND version = $4")
        .bind(icon.map(|i| i.digest))
        .bind(publisher)
        .bind(&manifest.app)
        .bind(manifest.version.to_string())
        .execute(&mut **tx)
        .await
        .map_err(ctx("record catalog metadata"))?;
    Ok(())
}

impl Store {
    /// Every version of every app, as the catalog lists them (by app, then version text:
    /// the caller resolves which is the latest).
    pub async fn version_heads(&self) -> Result<Vec<VersionHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT app, version, yanked, quarantined, quarantine_reason, publisher, icon_digest FROM versions
             ORDER BY app, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list version heads"))?;
        rows.iter()
            .map(|r| {
                let publisher: Option<String> = r.try_get("publisher")?;
                Ok(VersionHead {
                    app: r.try_get("app")?,
                    version: r.try_get("version")?,
                    yanked: r.try_get::<i64, _>("yanked")? != 0,
                    quarantined: r.try_get::<i64, _>("quarantined")? != 0,
                    quarantine_reason: r.try_get("quarantine_reason")?,
                    // Written from a verified manifest; a row that does not read is shown without.
                    publisher: publisher.and_then(|p| serde_json::from_str(&p).ok()),
                    icon_digest: r.try_get("icon_digest")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read version heads"))
    }

    /// The icon `digest`: its media type and bytes.
    pub async fn icon(&self, digest: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT media_type, bytes FROM icons WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("load icon"))?;
        row.map(|r| Ok((r.try_get("media_type")?, r.try_get("bytes")?))).transpose().map_err(ctx("read icon"))
    }
}
