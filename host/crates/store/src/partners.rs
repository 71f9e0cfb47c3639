//! Partners (`partners`): creation, the operator's disable switch, the operator's
//! summaries (with their certificate and app counts), and the partner row lock that
//! serialises a partner's registrations and revocations.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use kiosk_domain::metering::now_ms;

use crate::audit::audit;
use crate::{Store, StoreError, ctx, exists};

/// A partner as the operator reads it.
#[derive(Debug, Clone)]
pub struct PartnerSummary {
    pub name: String,
    pub display: String,
    pub disabled: bool,
    pub created_ms: i64,
    pub certificates: i64,
    pub apps: i64,
}

fn partner_summary(r: &AnyRow) -> Result<PartnerSummary, sqlx::Error> {
    Ok(PartnerSummary {
        name: r.try_get("name")?,
        display: r.try_get("display")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_ms: r.try_get("created_ms")?,
        certificates: r.try_get("certificates")?,
        apps: r.try_get("apps")?,
    })
}

const PARTNER_SUMMARY: &str = "SELECT name, display, disabled, created_ms,
    (SELECT COUNT(*) FROM partner_certs c WHERE c.partner = p.name) AS certificates,
    (SELECT COUNT(*) FROM apps a WHERE a.partner = p.name) AS apps FROM partners p";

/// Takes the partner's row lock for the rest of the transaction: registrations and
/// revocations of one partner are serialised (on SQLite every writer already is).
pub(crate) async fn lock_partner(tx: &mut crate::WriteTransaction, partner: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE partners SET display = display WHERE name = $1")
        .bind(partner)
        .execute(&mut **tx)
        .await
        .map_err(ctx("lock partner"))?;
    Ok(())
}

impl Store {
    /// Creates a partner with its audit row (`partner.create`) in one transaction;
    /// `false` if it exists (nothing is written).
    pub async fn create_partner(&self, name: &str, display: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO partners (name, display, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(display)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create partner"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "partner.create", name, "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    pub async fn partner_exists(&self, name: &str) -> Result<bool, StoreError> {
        exists(&self.pool, "SELECT 1 FROM partners WHERE name = $1", name).await.map_err(ctx("find partner"))
    }

    /// Disables or enables a partner, with its audit row (`partner.disable` /
    /// `partner.enable`) in one transaction; `false` if there is no such partner.
    pub async fn set_partner_disabled(&self, name: &str, disabled: bool, actor: &str) -> Result<bool, StoreError> {
        let action = if disabled { "partner.disable" } else { "partner.enable" };
        self.set_flag("UPDATE partners SET disabled = $1 WHERE name = $2", name, disabled, action, actor).await
    }

    pub async fn partner_disabled(&self, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT disabled FROM partners WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find partner"))?;
        Ok(row.map(|r| r.try_get::<i64, _>("disabled")).transpose().map_err(ctx("read partner"))? == Some(1))
    }

    pub async fn partners_page(&self, after: &str, limit: i64) -> Result<Vec<PartnerSummary>, StoreError> {
        let rows =
            sqlx::query(&format!("{PARTNER_SUMMARY} WHERE name > $1 AND name NOT LIKE '~%' ORDER BY name LIMIT $2"))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("list partners"))?;
        rows.iter().map(partner_summary).collect::<Result<_, _>>().map_err(ctx("read partners"))
    }

    pub async fn partner(&self, name: &str) -> Result<Option<PartnerSummary>, StoreError> {
        let row = sqlx::query(&format!("{PARTNER_SUMMARY} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find partner"))?;
        row.as_ref().map(partner_summary).transpose().map_err(ctx("read partner"))
    }
}
