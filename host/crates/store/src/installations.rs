//! Installations (`installations`, and `uninstalled` for the ones removed): install
//! (checked against the version's state in the same statement), configure, upgrade and
//! uninstall, each conditional on the row version read and committed with its audit
//! row; reads by tenant, by app and across tenants.

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;
use kiosk_domain::upgrade::UpgradePolicy;

use crate::audit::audit;
use crate::idempotency::key_first;
use crate::kv::purge_kv;
use crate::ledger::{HeldRefused, HookEffects, write_held};
use crate::sqlite_reads::Columns;
use crate::versions::{VERSION_SELECT, VersionRow, version_row};
use crate::{Store, StoreError, ctx};

/// A stored installation.
#[derive(Debug, Clone)]
pub struct InstallationRow {
    pub id: String,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub config: String,
    pub secrets: Vec<u8>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Bumped by every write of the row; a write applies only if it is still the one
    /// read (`Changed` otherwise). A new installation starts at 0.
    pub row_version: i64,
    /// How far Kiosk upgrades it by itself.
    pub upgrade_policy: UpgradePolicy,
}

/// A conditional write of an installation found it changed (configured, upgraded or
/// uninstalled) since it was read at the row version the writer gave: nothing was
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed;

/// An install or upgrade whose version became unavailable (yanked or quarantined)
/// while its hooks ran: the version as it is now.
#[derive(Debug, Clone)]
pub struct NotInstallable(pub VersionRow);

/// Why an upgrade wrote nothing.
#[derive(Debug, Clone)]
pub enum UpgradeRefused {
    /// The target version became unavailable (yanked or quarantined) while the hooks ran.
    NotInstallable(Box<NotInstallable>),
    /// The installation changed (or went) since it was read.
    Changed(Changed),
}

/// Why a lifecycle write (with its hooks' effects) wrote nothing.
#[derive(Debug, Clone)]
pub enum LifecycleRefused {
    /// The installation changed (or went) since it was read.
    Changed,
    /// The version became unavailable (yanked or quarantined) while the hooks ran.
    NotInstallable(Box<NotInstallable>),
    /// The hooks' key-value changes would pass this quota (another call wrote meanwhile,
    /// or the tenant's installations hold its quota's worth).
    OverQuota(kiosk_domain::kv::QuotaHit),
    /// The tenant has this many installations, its quota (install only).
    InstallationQuota(u64),
    /// Another request with the client's idempotency key committed first: its answer.
    KeyUsed(Box<crate::StoredAnswer>),
}

impl From<HeldRefused> for LifecycleRefused {
    fn from(refused: HeldRefused) -> Self {
        match refused {
            HeldRefused::Quota(quota) => LifecycleRefused::OverQuota(quota),
            HeldRefused::KeyUsed(used) => LifecycleRefused::KeyUsed(used),
        }
    }
}

/// The columns an insert of an installation writes (`row_version` starts at its default, 0).
const INSTALLATION_COLUMNS: &str = "id, tenant, app, version, config, secrets, created_ms, updated_ms, upgrade_policy";

/// What a read of an installation selects.
pub(crate) const INSTALLATION_SELECT: &str =
    "id, tenant, app, version, config, secrets, created_ms, updated_ms, row_version, upgrade_policy";

pub(crate) fn installation_row(r: &impl Columns) -> Result<InstallationRow, sqlx::Error> {
    Ok(InstallationRow {
        id: r.text("id")?,
        tenant: r.text("tenant")?,
        app: r.text("app")?,
        version: r.text("version")?,
        config: r.text("config")?,
        secrets: r.bytes("secrets")?,
        created_ms: r.int("created_ms")?,
        updated_ms: r.int("updated_ms")?,
        row_version: r.int("row_version")?,
        upgrade_policy: r
            .text("upgrade_policy")?
            .parse()
            .map_err(|e: kiosk_domain::upgrade::UnknownPolicy| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// The tenant's installation quota if it has reached it (`tenant_quotas`: the lower of
/// its own row and the operator's, tenant ''). The tenant's row is locked first, so two
/// installs racing for the last place (two replicas) are counted one after the other.
async fn installation_quota(tx: &mut crate::WriteTransaction, tenant: &str) -> Result<Option<u64>, StoreError> {
    let quota: Option<i64> = sqlx::query(
        "SELECT MIN(installations) AS q FROM tenant_quotas WHERE tenant IN ($1, '') AND installations IS NOT NULL",
    )
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await
    .and_then(|row| row.try_get("q"))
    .map_err(ctx("read the tenant's installation quota"))?;
    let Some(quota) = quota else { return Ok(None) };
    sqlx::query("UPDATE tenants SET display = display WHERE id = $1")
        .bind(tenant)
        .execute(&mut **tx)
        .await
        .map_err(ctx("lock the tenant"))?;
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM installations WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await
        .and_then(|row| row.try_get("n"))
        .map_err(ctx("count the tenant's installations"))?;
    Ok((count >= quota).then_some(u64::try_from(quota).unwrap_or(0)))
}

/// An installation that was uninstalled: its id and the version it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedInstallation {
    pub id: String,
    pub version: String,
}

impl Store {
    pub async fn insert_installation(&self, i: &InstallationRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO installations ({INSTALLATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&i.id)
        .bind(&i.tenant)
        .bind(&i.app)
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(i.created_ms)
        .bind(i.updated_ms)
        .bind(i.upgrade_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(ctx("record installation"))?;
        audit(
            &mut tx,
            actor,
            "installation.install",
            &format!("{}/{}", i.tenant, i.id),
            &format!("{}@{}", i.app, i.version),
        )
        .await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn installation(&self, tenant: &str, id: &str) -> Result<Option<InstallationRow>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {INSTALLATION_SELECT} FROM installations WHERE tenant = $1 AND id = $2"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(ctx("find installation"))?;
        row.as_ref().map(installation_row).transpose().map_err(ctx("read installation"))
    }

    pub async fn installations(&self, tenant: &str) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTALLATION_SELECT} FROM installations WHERE tenant = $1 ORDER BY created_ms, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// Every installation (exports: subscribed tenants' idle hours).
    pub async fn all_installations(&self) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {INSTALLATION_SELECT} FROM installations ORDER BY tenant, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// Replaces an installation's version and configuration (configure) if the row is
    /// still at `i.row_version`, bumping it, with its audit row in one transaction;
    /// `Ok(Err(Changed))` (nothing written) if it changed or went since it was read.
    pub async fn update_installation(
        &self,
        i: &InstallationRow,
        action: &str,
        actor: &str,
    ) -> Result<Result<(), Changed>, StoreError> {
        Ok(self.record_configure(i, action, actor, HookEffects::none()).await?.map_err(|_| Changed))
    }

    /// `update_installation` with the hooks' effects (`held`) in the same transaction:
    /// the row, the audit and the effects are kept together, or none of them.
    pub async fn record_configure(
        &self,
        i: &InstallationRow,
        action: &str,
        actor: &str,
        held: HookEffects<'_>,
    ) -> Result<Result<(), LifecycleRefused>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE installations SET version = $1, config = $2, secrets = $3, updated_ms = $4,
             row_version = row_version + 1 WHERE tenant = $5 AND id = $6 AND row_version = $7 AND uninstalling < $4",
        )
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(now_ms() as i64)
        .bind(&i.tenant)
        .bind(&i.id)
        .bind(i.row_version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("update installation"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(LifecycleRefused::Changed));
        }
        if let Err(refused) = write_held(&mut tx, held).await? {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(refused.into()));
        }
        audit(&mut tx, actor, action, &format!("{}/{}", i.tenant, i.id), &format!("{}@{}", i.app, i.version)).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Removes an installation and its key-value data (its usage stays) if the row is
    /// still at `row_version`; `Ok(Err(Changed))` (nothing removed) if it changed or went
    /// since it was read. The removal is recorded (`uninstalled`), so usage reported
    /// later for the time it was installed is still accepted.
    pub async fn delete_installation(
        &self,
        tenant: &str,
        id: &str,
        row_version: i64,
        actor: &str,
    ) -> Result<Result<(), Changed>, StoreError> {
        self.delete_installation_noting(tenant, id, row_version, actor, None).await
    }

    /// `delete_installation`, also auditing (same transaction) why the app's uninstall
    /// hook did not succeed, when it did not.
    pub async fn delete_installation_noting(
        &self,
        tenant: &str,
        id: &str,
        row_version: i64,
        actor: &str,
        hook_failure: Option<&str>,
    ) -> Result<Result<(), Changed>, StoreError> {
        let mut tx = self.begin_write().await?;
        // The conditional delete comes first, so it takes the lock before anything is read.
        let row = sqlx::query(
            "DELETE FROM installations WHERE tenant = $1 AND id = $2 AND row_version = $3 RETURNING app, version",
        )
        .bind(tenant)
        .bind(id)
        .bind(row_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("delete installation"))?;
        let Some(row) = row else {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(Changed));
        };
        let (app, version): (String, String) = (
            row.try_get("app").map_err(ctx("read installation"))?,
            row.try_get("version").map_err(ctx("read installation"))?,
        );
        let detail = format!("{app}@{version}");
        sqlx::query(
            "INSERT INTO uninstalled (tenant, id, app, version, removed_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, id) DO NOTHING",
        )
        .bind(tenant)
        .bind(id)
        .bind(&app)
        .bind(&version)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record the removed installation"))?;
        purge_kv(&mut tx, tenant, id).await?;
        // Its log lines go with it (ARCHITECTURE.md, "Decisions": what the app printed
        // may hold the tenant's data, and who may read it followed from the row).
        sqlx::query("DELETE FROM installation_logs WHERE tenant = $1 AND installation = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("purge log lines"))?;
        sqlx::query("DELETE FROM auto_upgrade_failures WHERE installation = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("forget failed automatic upgrades"))?;
        if let Some(failure) = hook_failure {
            audit(&mut tx, actor, "installation.uninstall-hook-failed", &format!("{tenant}/{id}"), failure).await?;
        }
        audit(&mut tx, actor, "installation.uninstall", &format!("{tenant}/{id}"), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Claims an installation for its uninstall before the app's hook runs, until
    /// `until_ms`, if the row is still at `row_version` and no other uninstall holds it:
    /// until then (or `release_uninstall`) no configure or upgrade writes it and another
    /// uninstall is refused, so the holder's delete cannot lose. A claim whose process
    /// died lapses at `until_ms`. `Err(Changed)`: nothing written, the hook must not run.
    /// The row itself (and its row version) is left as it was.
    pub async fn claim_uninstall(
        &self,
        tenant: &str,
        id: &str,
        row_version: i64,
        until_ms: i64,
    ) -> Result<Result<(), Changed>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE installations SET uninstalling = $4
             WHERE tenant = $1 AND id = $2 AND row_version = $3 AND uninstalling < $5",
        )
        .bind(tenant)
        .bind(id)
        .bind(row_version)
        .bind(until_ms)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("claim the installation for its uninstall"))?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(Changed) })
    }

    /// Until when (ms) an uninstall holds the installation, if one holds it now.
    pub async fn uninstall_claim(&self, tenant: &str, id: &str) -> Result<Option<i64>, StoreError> {
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT uninstalling FROM installations WHERE tenant = $1 AND id = $2 AND uninstalling > $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(now_ms() as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("read the uninstall's claim"))?;
        Ok(until)
    }

    /// Gives back an uninstall's claim (an uninstall stopped by what a retry can fix, or
    /// whose removal failed): the installation is as it was before the claim.
    pub async fn release_uninstall(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE installations SET uninstalling = 0 WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("release the uninstall's claim"))?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// Removes key-value data written for an installation that was never recorded
    /// (an install whose hooks or record failed).
    pub async fn delete_installation_data(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        purge_kv(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// The latest installation of `app` by `tenant` uninstalled at or after `since_ms` (for
    /// usage reported after an uninstall).
    pub async fn uninstalled_since(
        &self,
        tenant: &str,
        app: &str,
        since_ms: i64,
    ) -> Result<Option<RemovedInstallation>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version FROM uninstalled WHERE tenant = $1 AND app = $2 AND removed_ms >= $3
             ORDER BY removed_ms DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(app)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("find past installation"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RemovedInstallation {
            id: row.try_get("id").map_err(ctx("read removed installation"))?,
            version: row.try_get("version").map_err(ctx("read removed installation"))?,
        }))
    }

    /// Records a new installation if its version is still installable (neither yanked
    /// nor quarantined), in one statement: a quarantine that commits first wins, one
    /// that commits later finds an existing installation.
    pub async fn install_if_installable(
        &self,
        i: &InstallationRow,
        actor: &str,
    ) -> Result<Result<(), NotInstallable>, StoreError> {
        match self.record_install(i, actor, HookEffects::none()).await? {
            Ok(()) => Ok(Ok(())),
            Err(LifecycleRefused::NotInstallable(blocked)) => Ok(Err(*blocked)),
            Err(refused) => Err(StoreError {
                action: format!("record installation: {refused:?} without hook effects"),
                source: sqlx::Error::RowNotFound,
            }),
        }
    }

    /// `install_if_installable` with the hooks' effects (`held`) in the same transaction.
    pub async fn record_install(
        &self,
        i: &InstallationRow,
        actor: &str,
        held: HookEffects<'_>,
    ) -> Result<Result<(), LifecycleRefused>, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = match key_first(&mut tx, held).await? {
            Ok(held) => held,
            Err(used) => {
                tx.rollback().await.map_err(ctx("rollback"))?;
                return Ok(Err(LifecycleRefused::KeyUsed(used)));
            }
        };
        if let Some(quota) = installation_quota(&mut tx, &i.tenant).await? {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(LifecycleRefused::InstallationQuota(quota)));
        }
        let done = sqlx::query(
            "INSERT INTO installations (id, tenant, app, version, config, secrets, created_ms, updated_ms,
             upgrade_policy) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS
             (SELECT 1 FROM versions WHERE app = $3 AND version = $4 AND yanked = 0 AND quarantined = 0)",
        )
        .bind(&i.id)
        .bind(&i.tenant)
        .bind(&i.app)
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(i.created_ms)
        .bind(i.updated_ms)
        .bind(i.upgrade_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(ctx("record installation"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return match self.not_installable(&i.app, &i.version).await? {
                Err(blocked) => Ok(Err(LifecycleRefused::NotInstallable(Box::new(blocked)))),
                Ok(()) => Err(StoreError {
                    action: format!("record installation: no version {}@{}", i.app, i.version),
                    source: sqlx::Error::RowNotFound,
                }),
            };
        }
        if let Err(refused) = write_held(&mut tx, held).await? {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(refused.into()));
        }
        let (target, detail) = (format!("{}/{}", i.tenant, i.id), format!("{}@{}", i.app, i.version));
        audit(&mut tx, actor, "installation.install", &target, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Moves an installation to `i.version` (with its new configuration) if that version
    /// is still installable, like `install_if_installable`, and the row is still at
    /// `i.row_version` (bumping it), with its audit row in one transaction.
    pub async fn upgrade_installation(
        &self,
        i: &InstallationRow,
        actor: &str,
    ) -> Result<Result<(), UpgradeRefused>, StoreError> {
        Ok(self.record_upgrade(i, actor, HookEffects::none()).await?.map_err(|refused| match refused {
            LifecycleRefused::NotInstallable(blocked) => UpgradeRefused::NotInstallable(blocked),
            LifecycleRefused::Changed
            | LifecycleRefused::OverQuota(_)
            | LifecycleRefused::InstallationQuota(_)
            | LifecycleRefused::KeyUsed(_) => UpgradeRefused::Changed(Changed),
        }))
    }

    /// `upgrade_installation` with the hook's effects (`held`) in the same transaction.
    pub async fn record_upgrade(
        &self,
        i: &InstallationRow,
        actor: &str,
        held: HookEffects<'_>,
    ) -> Result<Result<(), LifecycleRefused>, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = match key_first(&mut tx, held).await? {
            Ok(held) => held,
            Err(used) => {
                tx.rollback().await.map_err(ctx("rollback"))?;
                return Ok(Err(LifecycleRefused::KeyUsed(used)));
            }
        };
        let done = sqlx::query(
            "UPDATE installations SET version = $1, config = $2, secrets = $3, updated_ms = $4,
             row_version = row_version + 1
             WHERE tenant = $5 AND id = $6 AND row_version = $8 AND uninstalling < $4 AND EXISTS
             (SELECT 1 FROM versions WHERE app = $7 AND version = $1 AND yanked = 0 AND quarantined = 0)",
        )
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(now_ms() as i64)
        .bind(&i.tenant)
        .bind(&i.id)
        .bind(&i.app)
        .bind(i.row_version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("upgrade installation"))?;
        if done.rows_affected() != 1 {
            // The version became unavailable, or the installation changed or went.
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(match self.not_installable(&i.app, &i.version).await? {
                Err(blocked) => LifecycleRefused::NotInstallable(Box::new(blocked)),
                Ok(()) => LifecycleRefused::Changed,
            }));
        }
        if let Err(refused) = write_held(&mut tx, held).await? {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(refused.into()));
        }
        let (target, detail) = (format!("{}/{}", i.tenant, i.id), format!("{}@{}", i.app, i.version));
        audit(&mut tx, actor, "installation.upgrade", &target, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    async fn not_installable(&self, app: &str, version: &str) -> Result<Result<(), NotInstallable>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VERSION_SELECT} FROM versions WHERE app = $1 AND version = $2"))
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find version"))?;
        match row.as_ref().map(version_row).transpose().map_err(ctx("read version"))? {
            Some(v) if v.yanked || v.quarantined => Ok(Err(NotInstallable(v))),
            _ => Ok(Ok(())),
        }
    }

    /// Installations across tenants by (tenant, id), optionally of one tenant and/or app.
    pub async fn installations_page(
        &self,
        tenant: Option<&str>,
        app: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM installations WHERE ($1 = '' OR tenant = $1) AND ($2 = '' OR app = $2)
             AND (tenant > $3 OR (tenant = $3 AND id > $4)) ORDER BY tenant, id LIMIT $5",
            INSTALLATION_SELECT
        ))
        .bind(tenant.unwrap_or(""))
        .bind(app.unwrap_or(""))
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// The installation `id` of `app` (any tenant's): how a partner reaches the
    /// installations of its own apps.
    pub async fn installation_of_app(&self, app: &str, id: &str) -> Result<Option<InstallationRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {INSTALLATION_SELECT} FROM installations WHERE app = $1 AND id = $2"))
            .bind(app)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find installation"))?;
        row.as_ref().map(installation_row).transpose().map_err(ctx("read installation"))
    }
}
