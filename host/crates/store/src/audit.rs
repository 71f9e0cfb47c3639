//! The audit log (`audit`): the row every change writes in its own transaction, read
//! newest first; and the row counts of every table (how tests show that a refused
//! request changed nothing).

use std::collections::BTreeMap;

use sqlx::Row as _;

use kiosk_domain::metering::now_ms;

use crate::write::{Arg, WriteTx};
use crate::{Store, StoreError, ctx};

/// An audit record.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

pub(crate) async fn audit(
    tx: &mut impl WriteTx,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "write audit log",
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        &[Arg::Int(now_ms() as i64), actor.into(), action.into(), target.into(), detail.into()],
    )
    .await?;
    Ok(())
}

impl Store {
    /// The newest `limit` audit records (the first page of `audit_page`).
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_page(None, limit).await
    }

    /// Audit records newest first, those before the record `before` (its id) when given.
    pub async fn audit_page(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read audit log"))
    }

    /// Row counts of every table, to check that a failed request changed nothing.
    pub async fn table_counts(&self) -> Result<BTreeMap<&'static str, i64>, StoreError> {
        let mut counts = BTreeMap::new();
        for table in [
            "tokens",
            "partners",
            "partner_certs",
            "tenants",
            "apps",
            "components",
            "icons",
            "versions",
            "entitlements",
            "installations",
            "kv",
            "kv_usage",
            "audit",
            "registries",
            "uninstalled",
            "distrusted_certs",
            "installation_logs",
            "limit_layers",
            "watches",
            "watch_tags",
            "auto_upgrade_failures",
        ] {
            let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .map_err(ctx(format!("count {table}")))?;
            counts.insert(table, row.try_get("n").map_err(ctx("count"))?);
        }
        Ok(counts)
    }
}
