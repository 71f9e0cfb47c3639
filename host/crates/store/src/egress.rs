//! The tenant's layer of an installation's outbound HTTP (`installation_egress`,
//! migration 0016): on or off, and the declared destinations it is narrowed to.

use super::sqlite_reads::Columns;
use super::{Store, StoreError, audit, ctx};

/// An installation's egress switch as the tenant set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSwitchRow {
    pub enabled: bool,
    /// The declared destinations kept (as the manifest writes them); `None`: all.
    pub destinations: Option<Vec<String>>,
    pub updated_ms: i64,
}

/// The switch from a row with `egress_enabled`, `egress_destinations`, `egress_updated_ms`
/// (the call context's left join: all NULL when the tenant never set it).
pub(crate) fn switch_columns(r: &impl Columns) -> Result<Option<EgressSwitchRow>, sqlx::Error> {
    let Some(enabled) = r.opt_int("egress_enabled")? else { return Ok(None) };
    let destinations = match r.opt_text("egress_destinations")? {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?),
    };
    Ok(Some(EgressSwitchRow {
        enabled: enabled != 0,
        destinations,
        updated_ms: r.opt_int("egress_updated_ms")?.unwrap_or(0),
    }))
}

const SWITCH: &str = "SELECT enabled AS egress_enabled, destinations AS egress_destinations,
        updated_ms AS egress_updated_ms
     FROM installation_egress WHERE tenant = $1 AND installation = $2";

impl Store {
    /// The installation's egress switch, if the tenant ever set it.
    pub async fn egress_switch(&self, tenant: &str, id: &str) -> Result<Option<EgressSwitchRow>, StoreError> {
        let row = sqlx::query(SWITCH)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("read egress switch"))?;
        match row {
            None => Ok(None),
            Some(row) => switch_columns(&row).map_err(ctx("read egress switch")),
        }
    }

    /// Sets the installation's egress switch, with its audit row
    /// (`installation.egress`), in one transaction; `false` if there is no such
    /// installation.
    pub async fn set_egress_switch(
        &self,
        tenant: &str,
        id: &str,
        switch: &EgressSwitchRow,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM installations WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ctx("find installation"))?
            .is_some();
        if !exists {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        let destinations = switch.destinations.as_ref().map(|d| serde_json::Value::from(d.clone()).to_string());
        sqlx::query(
            "INSERT INTO installation_egress (tenant, installation, enabled, destinations, updated_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, installation) DO UPDATE SET enabled = excluded.enabled,
                 destinations = excluded.destinations, updated_ms = excluded.updated_ms",
        )
        .bind(tenant)
        .bind(id)
        .bind(i64::from(switch.enabled))
        .bind(destinations.clone())
        .bind(switch.updated_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx("write egress switch"))?;
        let detail = match (&switch.enabled, &destinations) {
            (false, _) => "off".to_string(),
            (true, None) => "on".to_string(),
            (true, Some(d)) => format!("on, narrowed to {d}"),
        };
        audit(&mut tx, actor, "installation.egress", &format!("{tenant}/{id}"), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }
}
