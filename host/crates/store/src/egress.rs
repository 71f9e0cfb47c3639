//! Outbound HTTP (egress) settings: the tenant's layer of an installation's outbound
//! HTTP (`installation_egress`, migration 0016): on or off, and the declared
//! destinations it is narrowed to; and the operator's API layer per partner
//! (`egress_policy`, migration 0017).

use crate::audit::audit;
use crate::sqlite_reads::Columns;
use crate::{Store, StoreError, ctx};

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

/// The operator's egress policy for every partner (`scope` empty) or for one partner
/// (`scope` its name), set over the API (migration 0017).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicyRow {
    pub scope: String,
    /// `false`: no app of the scope sends any request.
    pub enabled: bool,
    /// Host patterns (`api.example.com`, `*.example.com`) no app of the scope reaches.
    pub deny: Vec<String>,
    pub updated_ms: i64,
}

/// What the operator's API layer says of one partner's apps: the every-partner row and
/// the partner's row together (off if either is off; the deny lists joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEgress {
    pub enabled: bool,
    pub deny: Vec<String>,
}

impl Default for OperatorEgress {
    fn default() -> Self {
        Self { enabled: true, deny: Vec::new() }
    }
}

/// The operator's layer from a row with `og_enabled`, `og_deny`, `op_enabled`, `op_deny`
/// (the call context's two left joins: NULL where no row is set).
pub(crate) fn operator_columns(r: &impl Columns) -> Result<OperatorEgress, sqlx::Error> {
    let mut layer = OperatorEgress::default();
    for (enabled, deny) in [("og_enabled", "og_deny"), ("op_enabled", "op_deny")] {
        if let Some(on) = r.opt_int(enabled)? {
            layer.enabled &= on != 0;
        }
        if let Some(text) = r.opt_text(deny)? {
            let list: Vec<String> = serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            layer.deny.extend(list);
        }
    }
    Ok(layer)
}

fn policy_row(r: &sqlx::any::AnyRow) -> Result<EgressPolicyRow, sqlx::Error> {
    use sqlx::Row as _;
    let deny: String = r.try_get("deny")?;
    Ok(EgressPolicyRow {
        scope: r.try_get("scope")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        deny: serde_json::from_str(&deny).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

impl Store {
    /// Every operator egress policy row, the every-partner row (scope '') first.
    pub async fn egress_policies(&self) -> Result<Vec<EgressPolicyRow>, StoreError> {
        let rows = sqlx::query("SELECT scope, enabled, deny, updated_ms FROM egress_policy ORDER BY scope")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read egress policy"))?;
        rows.iter().map(policy_row).collect::<Result<_, _>>().map_err(ctx("read egress policy"))
    }

    /// The operator's API layer for apps of `partner` (every-partner row and its own).
    pub async fn operator_egress(&self, partner: &str) -> Result<OperatorEgress, StoreError> {
        let rows =
            sqlx::query("SELECT scope, enabled, deny, updated_ms FROM egress_policy WHERE scope = '' OR scope = $1")
                .bind(partner)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("read egress policy"))?;
        let mut layer = OperatorEgress::default();
        for row in rows.iter().map(policy_row) {
            let row = row.map_err(ctx("read egress policy"))?;
            layer.enabled &= row.enabled;
            layer.deny.extend(row.deny);
        }
        Ok(layer)
    }

    /// Sets (replaces) the policy of `row.scope`, with its audit row (`egress.policy`),
    /// in one transaction.
    pub async fn put_egress_policy(&self, row: &EgressPolicyRow, actor: &str) -> Result<(), StoreError> {
        let deny = serde_json::Value::from(row.deny.clone()).to_string();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO egress_policy (scope, enabled, deny, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope) DO UPDATE SET enabled = excluded.enabled, deny = excluded.deny,
                 updated_ms = excluded.updated_ms",
        )
        .bind(&row.scope)
        .bind(i64::from(row.enabled))
        .bind(&deny)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx("write egress policy"))?;
        let target = if row.scope.is_empty() { "every partner" } else { row.scope.as_str() };
        let detail = format!("{}, deny {deny}", if row.enabled { "on" } else { "off" });
        audit(&mut tx, actor, "egress.policy", target, &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(())
    }

    /// Removes the policy of `scope` (audited); `false` if none was set.
    pub async fn delete_egress_policy(&self, scope: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM egress_policy WHERE scope = $1")
            .bind(scope)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete egress policy"))?
            .rows_affected()
            > 0;
        if gone {
            let target = if scope.is_empty() { "every partner" } else { scope };
            audit(&mut tx, actor, "egress.policy", target, "removed").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(gone)
    }
}
