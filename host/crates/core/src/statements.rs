//! Period statements (issue 29): one UTC month of a tenant's usage, or of a partner's
//! apps' usage, per (tenant,) app and SKU with its unit and quantity, and the ids a
//! billing system reconciles against: the statement's and each line's (UUIDv5 of what
//! they cover), the number of ledger events and the range of their `seq`.
//!
//! A month holds the events the ledger *recorded* in it (booked), not those that
//! happened in it: a report collected late or a partner's batch sent days after lands
//! in the month it was booked, so a month that has ended stops changing. A statement is
//! `final` once its month ended more than `SETTLE_MS` ago (the longest a commit that took
//! its time before the month's end may still be landing): from then on it is identical
//! whenever it is regenerated, on any replica.

use std::collections::{BTreeMap, HashMap};

use kiosk_domain::metering::now_ms;

use crate::error::{Failure, Kind, Result};
use crate::lifecycle::Kiosk;

/// After a month's end, how long its statement may still change.
pub const SETTLE_MS: i64 = 5 * 60_000;

/// Namespace of statement and line ids.
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b69_6f73_6b2d_7374_6174_656d_656e_7431);

/// Whose statement.
#[derive(Debug, Clone, Copy)]
pub enum StatementScope<'a> {
    Tenant(&'a str),
    Partner(&'a str),
}

/// One line: an app's SKU (for a partner, per tenant) in the month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub id: String,
    pub tenant: String,
    pub app: String,
    pub sku: String,
    /// The unit the SKU's version declares ("" when the version is no longer known).
    pub unit: String,
    pub quantity: u128,
    /// Ledger events summed, and the range of their `seq` (commit order).
    pub events: i64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// A month's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub id: String,
    /// `tenant` or `partner`.
    pub scope: &'static str,
    /// The tenant id or partner name.
    pub owner: String,
    /// `YYYY-MM`.
    pub period: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Whether the month ended (and settled): the statement no longer changes.
    pub is_final: bool,
    pub lines: Vec<StatementLine>,
}

/// `YYYY-MM` (1970-9999) as `[from_ms, to_ms)` in UTC.
pub fn month(period: &str) -> Option<(i64, i64)> {
    let bytes = period.as_bytes();
    if bytes.len() != 7 || bytes[4] != b'-' || !period.bytes().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = period[..4].parse().ok()?;
    let month: u8 = period[5..].parse().ok()?;
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let start = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, 1).ok()?;
    let next = if month == 12 {
        time::Date::from_calendar_date(year + 1, time::Month::January, 1).ok()?
    } else {
        time::Date::from_calendar_date(year, time::Month::try_from(month + 1).ok()?, 1).ok()?
    };
    let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    Some((ms(start), ms(next)))
}

impl Kiosk {
    /// The statement of `scope` for `period` (`YYYY-MM`).
    pub async fn statement(&self, scope: StatementScope<'_>, period: &str) -> Result<Statement> {
        let (from_ms, to_ms) = month(period).ok_or_else(|| {
            Failure::unprocessable(
                Kind::InvalidQuery,
                format!(
                    "period {:?} is not a month: use YYYY-MM, 1970-01 to 9999-12",
                    kiosk_domain::text::sanitize_capped(period, 32)
                ),
            )
            .field("period")
        })?;
        let (kind, owner, tenant, partner) = match scope {
            StatementScope::Tenant("") | StatementScope::Partner("") => {
                return Err(Failure::not_found("no such tenant or partner").field("owner"));
            }
            StatementScope::Tenant(t) => ("tenant", t, Some(t), None),
            StatementScope::Partner(p) => ("partner", p, None, Some(p)),
        };
        let groups = self.store.statement_groups(tenant, partner, from_ms, to_ms).await?;
        let id = uuid::Uuid::new_v5(&NAMESPACE, format!("{kind}\n{owner}\n{period}").as_bytes()).to_string();
        // Each version's manifest read once, for its SKUs' units.
        let mut units: HashMap<(String, String), HashMap<String, String>> = HashMap::new();
        let mut lines: BTreeMap<(String, String, String, String), StatementLine> = BTreeMap::new();
        for g in groups {
            let key = (g.app.clone(), g.version.clone());
            if !units.contains_key(&key) {
                // Read from the stored manifest as it is (not re-validated by this host: a
                // final statement does not change when the host does).
                let skus = self
                    .store
                    .version(&g.app, &g.version)
                    .await?
                    .and_then(|v| serde_json::from_str::<serde_json::Value>(&v.manifest).ok())
                    .map(|m| {
                        m["skus"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| Some((s["id"].as_str()?.to_string(), s["unit"].as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                units.insert(key.clone(), skus);
            }
            let unit = units[&key].get(&g.sku).cloned().unwrap_or_default();
            let line_key = (g.tenant.clone(), g.app.clone(), g.sku.clone(), unit.clone());
            let line = lines.entry(line_key).or_insert_with(|| StatementLine {
                id: uuid::Uuid::new_v5(
                    &NAMESPACE,
                    format!("{id}\n{}\n{}\n{}\n{unit}", g.tenant, g.app, g.sku).as_bytes(),
                )
                .to_string(),
                tenant: g.tenant.clone(),
                app: g.app.clone(),
                sku: g.sku.clone(),
                unit: unit.clone(),
                quantity: 0,
                events: 0,
                first_seq: g.first_seq,
                last_seq: g.last_seq,
            });
            line.quantity += g.quantity;
            line.events += g.events;
            line.first_seq = line.first_seq.min(g.first_seq);
            line.last_seq = line.last_seq.max(g.last_seq);
        }
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        Ok(Statement {
            id,
            scope: kind,
            owner: owner.to_string(),
            period: period.to_string(),
            from_ms,
            to_ms,
            is_final: now >= to_ms.saturating_add(SETTLE_MS),
            lines: lines.into_values().collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_utc_month() {
        assert_eq!(month("1970-01"), Some((0, 31 * 86_400_000)));
        assert_eq!(month("2024-02").map(|(a, b)| (b - a) / 86_400_000), Some(29));
        assert_eq!(month("2026-12").map(|(_, b)| b), month("2027-01").map(|(a, _)| a));
        for bad in
            ["2026-13", "2026-00", "2026-1", "26-01", "1969-12", "2026/01", "２０２６-01", "+026-01", "2026-1a", ""]
        {
            assert_eq!(month(bad), None, "{bad}");
        }
    }
}
