//! The catalog: apps (`apps`), their versions (`versions`) and the components they run
//! (`components`). Registration (in one transaction with the app and its audit row),
//! reads, the operator's yank and quarantine, and the estate's pages of versions.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::certificates::quarantine_if_distrusted;
use crate::partners::lock_partner;
use crate::{Store, StoreError, ctx};

/// A stored app version.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub app: String,
    pub version: String,
    pub manifest: String,
    pub manifest_digest: String,
    pub component_digest: String,
    pub signer: String,
    pub reference: String,
    pub yanked: bool,
    pub created_ms: i64,
    /// No new installs or upgrades (signer revoked or removed, or the operator's call);
    /// running installations go on.
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    /// The version's icon (`icons`), if its artifact had one.
    pub icon_digest: Option<String>,
}

/// A quarantined version, for the operator.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedVersion {
    pub app: String,
    pub version: String,
    pub signer: String,
    pub reason: String,
    pub quarantined_ms: Option<i64>,
}

/// A version's state for the estate filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Active,
    Yanked,
    Quarantined,
}

const VERSION_COLUMNS: &str =
    "app, version, manifest, manifest_digest, component_digest, signer, reference, yanked, created_ms";

/// What a read of a version selects: the inserted columns plus the quarantine.
pub(crate) const VERSION_SELECT: &str = "app, version, manifest, manifest_digest, component_digest, signer, reference, yanked, \
     created_ms, quarantined, quarantine_reason, icon_digest";

pub(crate) fn version_row(r: &AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        app: r.try_get("app")?,
        version: r.try_get("version")?,
        manifest: r.try_get("manifest")?,
        manifest_digest: r.try_get("manifest_digest")?,
        component_digest: r.try_get("component_digest")?,
        signer: r.try_get("signer")?,
        reference: r.try_get("reference")?,
        yanked: r.try_get::<i64, _>("yanked")? != 0,
        created_ms: r.try_get("created_ms")?,
        quarantined: r.try_get::<i64, _>("quarantined")? != 0,
        quarantine_reason: r.try_get("quarantine_reason")?,
        icon_digest: r.try_get("icon_digest")?,
    })
}

/// An app as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// `partner/name`.
    pub app: String,
    /// Display name.
    pub name: String,
    pub description: String,
    pub categories: Vec<String>,
}

/// Who signed a registered version, and whether it is quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSigner {
    pub partner: String,
    /// The signing certificate's fingerprint.
    pub signer: String,
    pub quarantined: bool,
}

impl Store {
    /// Registers a verified version (and its app, on first version) in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn register_version(
        &self,
        manifest: &kiosk_domain::manifest::Manifest,
        manifest_json: &str,
        manifest_digest: &str,
        component_digest: &str,
        component: &[u8],
        signer: &str,
        reference: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let (m, c) = (manifest_digest, component_digest);
        self.register_version_with_icon(manifest, manifest_json, m, c, component, signer, reference, None, actor).await
    }

    /// `register_version`, keeping the version's verified icon too (catalog metadata,
    /// `catalog_meta`), in the same transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn register_version_with_icon(
        &self,
        manifest: &kiosk_domain::manifest::Manifest,
        manifest_json: &str,
        manifest_digest: &str,
        component_digest: &str,
        component: &[u8],
        signer: &str,
        reference: &str,
        icon: Option<&crate::catalog_meta::NewIcon<'_>>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let partner = manifest.app.split_once('/').map_or("", |(p, _)| p);
        // Serialised with a revocation or removal of the partner's certificates, so a
        // version verified just before its signer was distrusted starts quarantined.
        lock_partner(&mut tx, partner).await?;
        // A tenant's private app counts against its quota, checked under the lock.
        crate::private_apps::check_private_quota(&mut tx, partner, &manifest.app).await?;
        let categories = serde_json::to_string(&manifest.categories).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO apps (id, partner, display, description, categories, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET display = excluded.display, description = excluded.description,
             categories = excluded.categories",
        )
        .bind(&manifest.app)
        .bind(partner)
        .bind(&manifest.name)
        .bind(&manifest.description)
        .bind(categories)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record app"))?;
        sqlx::query("INSERT INTO components (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
            .bind(component_digest)
            .bind(component)
            .execute(&mut *tx)
            .await
            .map_err(ctx("store component"))?;
        let v = &manifest.version;
        sqlx::query(&format!(
            "INSERT INTO versions ({VERSION_COLUMNS}, major, minor, patch, prerelease)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12)"
        ))
        .bind(&manifest.app)
        .bind(v.to_string())
        .bind(manifest_json)
        .bind(manifest_digest)
        .bind(component_digest)
        .bind(signer)
        .bind(reference)
        .bind(now_ms() as i64)
        .bind(v.major as i64)
        .bind(v.minor as i64)
        .bind(v.patch as i64)
        .bind(v.pre.to_string())
        .execute(&mut *tx)
        .await
        .map_err(ctx(format!("record {}@{v}", manifest.app)))?;
        crate::catalog_meta::record(&mut tx, manifest, icon).await?;
        audit(
            &mut tx,
            actor,
            "version.register",
            &format!("{}@{v}", manifest.app),
            &format!("{manifest_digest} from {reference}"),
        )
        .await?;
        quarantine_if_distrusted(&mut tx, &manifest.app, &v.to_string(), signer, "kiosk").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(())
    }

    pub async fn version(&self, app: &str, version: &str) -> Result<Option<VersionRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VERSION_SELECT} FROM versions WHERE app = $1 AND version = $2"))
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find version"))?;
        row.as_ref().map(version_row).transpose().map_err(ctx("read version"))
    }

    /// Versions of `app`, highest first.
    pub async fn versions(&self, app: &str) -> Result<Vec<VersionRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_SELECT} FROM versions WHERE app = $1 ORDER BY major DESC, minor DESC, patch DESC, created_ms DESC"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list versions"))?;
        rows.iter().map(version_row).collect::<Result<_, _>>().map_err(ctx("read versions"))
    }

    pub async fn set_yanked(&self, app: &str, version: &str, yanked: bool, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE versions SET yanked = $1 WHERE app = $2 AND version = $3")
            .bind(i64::from(yanked))
            .bind(app)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(ctx("yank version"))?;
        if done.rows_affected() == 1 {
            audit(
                &mut tx,
                actor,
                if yanked { "version.yank" } else { "version.unyank" },
                &format!("{app}@{version}"),
                "",
            )
            .await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM components WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("load component"))?;
        row.map(|r| r.try_get("bytes")).transpose().map_err(ctx("read component"))
    }

    /// Every app, by id, with what the catalog shows of it.
    pub async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        let rows = sqlx::query("SELECT id, display, description, categories FROM apps ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list apps"))?;
        rows.iter()
            .map(|r| {
                let categories: String = r.try_get("categories")?;
                Ok(AppRow {
                    app: r.try_get("id")?,
                    name: r.try_get("display")?,
                    description: r.try_get("description")?,
                    categories: serde_json::from_str(&categories).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read apps"))
    }

    /// The partner, signer and quarantine of every registered version.
    pub async fn version_signers(&self) -> Result<Vec<VersionSigner>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.partner AS partner, v.signer AS signer, v.quarantined AS quarantined
             FROM versions v JOIN apps a ON a.id = v.app ORDER BY a.partner, v.signer",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list signers"))?;
        rows.iter()
            .map(|r| {
                Ok(VersionSigner {
                    partner: r.try_get("partner")?,
                    signer: r.try_get("signer")?,
                    quarantined: r.try_get::<i64, _>("quarantined")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read signers"))
    }

    /// Quarantines (`reason` given) or releases (`None`) a version; `false` if there is
    /// no such version. Quarantining a quarantined version keeps its first reason.
    pub async fn set_quarantined(
        &self,
        app: &str,
        version: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let flag = i64::from(reason.is_some());
        let done = sqlx::query(
            "UPDATE versions SET quarantined = $1, quarantine_reason = $2, quarantined_ms = $3
             WHERE app = $4 AND version = $5 AND quarantined <> $1",
        )
        .bind(flag)
        .bind(reason)
        .bind(reason.map(|_| now_ms() as i64))
        .bind(app)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("quarantine version"))?;
        if done.rows_affected() == 1 {
            let action = if reason.is_some() { "version.quarantine" } else { "version.release" };
            audit(&mut tx, actor, action, &format!("{app}@{version}"), reason.unwrap_or("")).await?;
            tx.commit().await.map_err(ctx("commit"))?;
            return Ok(true);
        }
        tx.rollback().await.map_err(ctx("rollback"))?;
        Ok(self.version(app, version).await?.is_some())
    }

    /// Quarantined versions after the cursor (`app`, `version`), at most `limit`.
    pub async fn quarantined_versions(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<QuarantinedVersion>, StoreError> {
        let (app, version) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT app, version, signer, quarantine_reason, quarantined_ms FROM versions
             WHERE quarantined = 1 AND (app > $1 OR (app = $1 AND version > $2)) ORDER BY app, version LIMIT $3",
        )
        .bind(app)
        .bind(version)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list quarantined versions"))?;
        rows.iter()
            .map(|r| {
                Ok(QuarantinedVersion {
                    app: r.try_get("app")?,
                    version: r.try_get("version")?,
                    signer: r.try_get("signer")?,
                    reason: r.try_get::<Option<String>, _>("quarantine_reason")?.unwrap_or_default(),
                    quarantined_ms: r.try_get("quarantined_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read quarantined versions"))
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
            VERSION_SELECT
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
}
