//! Automatic upgrades: installations' upgrade policies (how far Kiosk upgrades each by
//! itself) and the automatic upgrades that failed (`auto_upgrade_failures`), which are
//! not tried again. Each change commits with its audit row.

use sqlx::Row as _;

use kiosk_domain::upgrade::UpgradePolicy;

use crate::audit::audit;
use crate::installations::{INSTALLATION_SELECT, InstallationRow, installation_row};
use crate::{Store, StoreError, ctx};

impl Store {
    /// Sets an installation's upgrade policy, bumping its row version (an automatic
    /// upgrade that read the old policy then writes nothing), with its audit row
    /// (`installation.upgrade-policy`) in one transaction; `false` if there is no such
    /// installation.
    pub async fn set_upgrade_policy(
        &self,
        tenant: &str,
        id: &str,
        policy: UpgradePolicy,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE installations SET upgrade_policy = $1, updated_ms = $2, row_version = row_version + 1
             WHERE tenant = $3 AND id = $4",
        )
        .bind(policy.as_str())
        .bind(kiosk_domain::metering::now_ms() as i64)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(ctx("set upgrade policy"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "installation.upgrade-policy", &format!("{tenant}/{id}"), policy.as_str()).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// At most `limit` installations with an upgrade policy other than `none`, with an
    /// id above `after` (`app`: of that app only), by id.
    pub async fn policy_installations(
        &self,
        app: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM installations WHERE upgrade_policy <> 'none' AND ($1 = '' OR app = $1) AND id > $2
             ORDER BY id LIMIT $3",
            INSTALLATION_SELECT
        ))
        .bind(app.unwrap_or(""))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list installations with an upgrade policy"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// The versions an automatic upgrade of `installation` failed to reach.
    pub async fn failed_auto_upgrades(&self, installation: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT version FROM auto_upgrade_failures WHERE installation = $1")
            .bind(installation)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read failed automatic upgrades"))?;
        rows.iter().map(|r| r.try_get("version")).collect::<Result<_, _>>().map_err(ctx("read failed upgrades"))
    }

    /// Records that an automatic upgrade of an installation to `version` failed (so it is
    /// not tried again), with its audit row (`installation.auto-upgrade-failed`, the
    /// reason as detail) in one transaction.
    pub async fn record_auto_upgrade_failure(
        &self,
        tenant: &str,
        installation: &str,
        version: &str,
        reason: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auto_upgrade_failures (installation, version, reason, at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (installation, version) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
        )
        .bind(installation)
        .bind(version)
        .bind(reason)
        .bind(kiosk_domain::metering::now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record a failed automatic upgrade"))?;
        let detail = format!("to {version}: {reason}");
        audit(&mut tx, actor, "installation.auto-upgrade-failed", &format!("{tenant}/{installation}"), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }
}
