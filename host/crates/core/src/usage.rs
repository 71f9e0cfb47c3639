//! Usage beyond the calls' own metering (SPEC §7): partners' batches, each record checked
//! on its own against the tenant's installation and the installed version's SKUs, then
//! recorded exactly once through the ledger; and usage reads by period for tenants,
//! partners and the operator, with deterministic record ids.

use std::collections::{BTreeMap, HashMap, HashSet};

use kiosk_api::usage::{
    MAX_BATCH_RECORDS, PartnerUsageRecord, RecordResult, RecordStatus, UsageRecord, UsageReport, UsageResults,
};
use kiosk_domain::ids::AppId;
use kiosk_domain::manifest::{Manifest, is_slug};
use kiosk_domain::metering::{UsageEvent, UsageSource, now_ms};
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::InstallationRow;
use kiosk_store::ledger::{MAX_QUANTITY, MAX_SUBMITTED_KEY_BYTES, Recorded, stored_quantity, usage_between};

use crate::error::{Failure, Kind, Result};
use crate::lifecycle::Kiosk;

/// How far in the future a usage timestamp may be (clock skew), and the default end of a
/// read.
pub const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Longest period of one read at hour granularity.
const MAX_HOURLY_SPAN_MS: i64 = 400 * 86_400_000;
/// Longest period of one read at day granularity (ten years).
const MAX_DAILY_SPAN_MS: i64 = 3_653 * 86_400_000;
/// Most zero records one read may add (subscriptions × periods).
const MAX_ZERO_RECORDS: u64 = 100_000;

/// Namespace of export record ids (UUIDv5 of tenant, app, SKU and period start).
const EXPORT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b69_6f73_6b2d_7573_6167_652d_6578_7031);

/// The deterministic id of an export record: the same period and SKU give the same id.
pub fn export_id(tenant: &str, app: &str, sku: &str, period_start_ms: i64) -> uuid::Uuid {
    uuid::Uuid::new_v5(&EXPORT_NAMESPACE, format!("{tenant}\n{app}\n{sku}\n{period_start_ms}").as_bytes())
}

/// A usage read as asked: every bound optional (defaults: the last 30 days, by hour).
#[derive(Debug, Clone, Default)]
pub struct UsageRead {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// `hour` (default) or `day`.
    pub granularity: Option<String>,
    /// Also emit zero records for every installed (tenant, app, SKU) in idle periods.
    pub zeros: bool,
}

/// Whose usage a read covers: everything (the operator), one tenant's or one partner's.
#[derive(Debug, Clone, Copy)]
pub enum UsageScope<'a> {
    All,
    Tenant(&'a str),
    Partner(&'a str),
}

impl UsageScope<'_> {
    fn tenant(&self) -> Option<&str> {
        match self {
            Self::Tenant(t) => Some(t),
            _ => None,
        }
    }

    fn partner(&self) -> Option<&str> {
        match self {
            Self::Partner(p) => Some(p),
            _ => None,
        }
    }
}

/// What one partner batch looked up once: a tenant's installations, a version's SKUs.
#[derive(Default)]
struct BatchCache {
    installations: HashMap<String, Vec<InstallationRow>>,
    skus: HashMap<(String, String), Option<HashSet<String>>>,
}

fn invalid_query(field: &str, detail: String) -> Failure {
    Failure::unprocessable(Kind::InvalidQuery, detail).field(field)
}

impl Kiosk {
    /// A partner's batch (`records` raw, each parsed on its own): one result per record,
    /// in order. A record that does not hold is refused in its result, never the batch.
    pub async fn submit_partner_usage(&self, partner: &str, records: Vec<serde_json::Value>) -> Result<UsageResults> {
        if records.len() > MAX_BATCH_RECORDS {
            return Err(Failure::unprocessable(
                Kind::TooManyRecords,
                format!("a batch holds at most {MAX_BATCH_RECORDS} records, found {}", records.len()),
            )
            .field("records"));
        }
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let window_ms =
            i64::try_from(self.config.usage.acceptance_window_hours).unwrap_or(i64::MAX).saturating_mul(3_600_000);
        let mut results: Vec<Option<RecordResult>> = (0..records.len()).map(|_| None).collect();
        let mut accepted: Vec<(usize, UsageEvent)> = Vec::new();
        let mut cache = BatchCache::default();
        for (i, raw) in records.into_iter().enumerate() {
            match self.check_partner_record(&mut cache, partner, raw, now, window_ms).await? {
                Ok(event) => accepted.push((i, event)),
                Err(reason) => {
                    results[i] = Some(RecordResult {
                        index: i,
                        status: RecordStatus::Refused,
                        reason: Some(reason),
                        recorded_quantity: None,
                    })
                }
            }
        }
        let outcomes =
            // Out of reach is 503 with Retry-After, like every storage failure.
            self.ledger.record(accepted.iter().map(|(_, e)| e.clone()).collect()).await.map_err(|e| Failure::from(e.into_store()))?;
        for ((i, _), outcome) in accepted.iter().zip(outcomes) {
            let (status, reason, recorded_quantity) = match outcome {
                Recorded::Recorded => (RecordStatus::Recorded, None, None),
                Recorded::Duplicate => (RecordStatus::Duplicate, None, None),
                Recorded::Conflict { recorded_quantity } => (
                    RecordStatus::Conflict,
                    Some(format!("idempotency key already recorded with quantity {recorded_quantity}")),
                    Some(recorded_quantity),
                ),
                Recorded::Refused { reason } => (RecordStatus::Refused, Some(reason.to_string()), None),
            };
            results[*i] = Some(RecordResult { index: *i, status, reason, recorded_quantity });
        }
        Ok(UsageResults { results: results.into_iter().flatten().collect() })
    }

    /// Checks one partner record (SPEC §7); `Ok(Err(reason))` refuses it.
    async fn check_partner_record(
        &self,
        cache: &mut BatchCache,
        partner: &str,
        raw: serde_json::Value,
        now: i64,
        window_ms: i64,
    ) -> Result<Result<UsageEvent, String>> {
        let r: PartnerUsageRecord = match serde_json::from_value(raw) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("not a usage record: {e}"))),
        };
        let Some(quantity) = r.quantity.as_u64().filter(|q| (1..=MAX_QUANTITY).contains(q)) else {
            return Ok(Err(format!(
                "quantity must be a positive integer at most 2^53 - 1 ({MAX_QUANTITY}), found {}",
                r.quantity
            )));
        };
        // Exact names only: ids are slugs, so nothing a partner sends can act as a pattern.
        if !is_slug(&r.tenant) {
            return Ok(Err(format!("tenant {:?} is not a tenant id (a-z, 0-9, '-')", r.tenant)));
        }
        let app_name = r.app.strip_prefix(&format!("{partner}/"));
        if !app_name.is_some_and(is_slug) {
            return Ok(Err(format!("app {:?} is not an app of partner {partner}", r.app)));
        }
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > MAX_SUBMITTED_KEY_BYTES {
            return Ok(Err(format!(
                "idempotencyKey must be 1-{MAX_SUBMITTED_KEY_BYTES} bytes, found {}",
                r.idempotency_key.len()
            )));
        }
        if r.timestamp_ms < 0 {
            return Ok(Err(format!(
                "timestampMs must be at least 0 (ms since the Unix epoch), found {}",
                r.timestamp_ms
            )));
        }
        if r.timestamp_ms > now.saturating_add(FUTURE_SKEW_MS) {
            return Ok(Err(format!("timestamp {} is more than 5 minutes in the future", r.timestamp_ms)));
        }
        if r.timestamp_ms < now.saturating_sub(window_ms) {
            return Ok(Err(format!(
                "timestamp {} is older than the acceptance window of {} hours",
                r.timestamp_ms,
                window_ms / 3_600_000
            )));
        }
        // Installed now, or installed when the usage happened (uninstalled since); with
        // several installations of the app the partner names one (`installation`).
        if !cache.installations.contains_key(&r.tenant) {
            let rows = self.store.installations(&r.tenant).await?;
            cache.installations.insert(r.tenant.clone(), rows);
        }
        let current: Vec<&InstallationRow> = cache.installations[&r.tenant]
            .iter()
            .filter(|i| i.app == r.app && r.installation.as_ref().is_none_or(|id| *id == i.id))
            .collect();
        let installation = match current.as_slice() {
            [one] => Some((one.id.clone(), one.version.clone())),
            [] => self
                .store
                .uninstalled_since(&r.tenant, &r.app, r.timestamp_ms)
                .await?
                .filter(|removed| r.installation.as_ref().is_none_or(|given| *given == removed.id))
                .map(|removed| (removed.id, removed.version)),
            many => {
                return Ok(Err(format!(
                    "tenant {} has {} installations of {}: name one in `installation`",
                    r.tenant,
                    many.len(),
                    r.app
                )));
            }
        };
        let Some((installation, version)) = installation else {
            return Ok(Err(match &r.installation {
                Some(id) => format!("tenant {} has no installation {id:?} of {} at that time", r.tenant, r.app),
                None => format!("tenant {} has no installation of {} at that time", r.tenant, r.app),
            }));
        };
        let key = (r.app.clone(), version.clone());
        if !cache.skus.contains_key(&key) {
            let skus = self.declared_skus(&r.app, &version).await?;
            cache.skus.insert(key.clone(), skus);
        }
        let declared = cache.skus[&key].as_ref().is_some_and(|skus| skus.contains(&r.sku));
        if !declared {
            return Ok(Err(format!("SKU {:?} is not declared by {}@{version}", r.sku, r.app)));
        }
        Ok(Ok(UsageEvent {
            tenant: r.tenant,
            installation,
            app: r.app,
            version,
            sku: r.sku,
            quantity,
            at_ms: u64::try_from(r.timestamp_ms).unwrap_or_default(),
            source: UsageSource::Partner,
            idempotency_key: format!("{partner}/{}", r.idempotency_key),
        }))
    }

    /// The SKUs version `app@version` declares; `None` when it is not registered.
    async fn declared_skus(&self, app: &str, version: &str) -> Result<Option<HashSet<String>>> {
        Ok(self
            .store
            .version(app, version)
            .await?
            .and_then(|v| Manifest::parse(v.manifest.as_bytes(), &HOST_API_VERSION).ok())
            .map(|m| m.sku_ids().map(str::to_string).collect()))
    }

    /// (tenant, app, SKU) of every current installation, within `scope`; each version's
    /// manifest read once.
    async fn subscriptions(&self, scope: UsageScope<'_>) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        let mut skus: HashMap<(String, String), Option<HashSet<String>>> = HashMap::new();
        for inst in self.store.all_installations().await? {
            if scope.tenant().is_some_and(|t| t != inst.tenant)
                || scope.partner().is_some_and(|p| !AppId::is_of(&inst.app, p))
            {
                continue;
            }
            let key = (inst.app.clone(), inst.version.clone());
            if !skus.contains_key(&key) {
                let declared = self.declared_skus(&inst.app, &inst.version).await?;
                skus.insert(key.clone(), declared);
            }
            for sku in skus[&key].iter().flatten() {
                out.push((inst.tenant.clone(), inst.app.clone(), sku.clone()));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Usage in `[from, to)` by period within `scope`, with totals by SKU; a bad bound is
    /// `invalid-query` naming the parameter the caller gave.
    pub async fn usage_report(&self, read: &UsageRead, scope: UsageScope<'_>) -> Result<UsageReport> {
        let granularity = read.granularity.as_deref().unwrap_or("hour");
        let (bucket_ms, max_span_ms, max_span): (i64, i64, &str) = match granularity {
            "hour" => (3_600_000, MAX_HOURLY_SPAN_MS, "400 days"),
            "day" => (86_400_000, MAX_DAILY_SPAN_MS, "10 years"),
            other => return Err(invalid_query("granularity", format!("granularity {other:?}: use hour or day"))),
        };
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let from = read.from_ms.unwrap_or_else(|| now.saturating_sub(30 * 86_400_000));
        let to = read.to_ms.unwrap_or_else(|| now.saturating_add(FUTURE_SKEW_MS));
        // The bound the caller gave is the one named when the period is wrong.
        let period_field = if read.to_ms.is_some() || read.from_ms.is_none() { "toMs" } else { "fromMs" };
        if from < 0 {
            return Err(invalid_query(
                "fromMs",
                format!("fromMs must be at least 0 (ms since the Unix epoch), found {from}"),
            ));
        }
        if to <= from {
            return Err(invalid_query(period_field, format!("toMs ({to}) must be greater than fromMs ({from})")));
        }
        // 0 <= from < to: the difference cannot overflow.
        if to - from > max_span_ms {
            return Err(invalid_query(period_field, format!("a read by {granularity} may span at most {max_span}")));
        }
        let first_period = from - from.rem_euclid(bucket_ms);
        let periods = u64::try_from(to - first_period).unwrap_or(u64::MAX).div_ceil(bucket_ms.unsigned_abs());
        let subscriptions = if read.zeros {
            let subs = self.subscriptions(scope).await?;
            let zero_records = u64::try_from(subs.len()).unwrap_or(u64::MAX).saturating_mul(periods);
            if zero_records > MAX_ZERO_RECORDS {
                return Err(invalid_query(
                    "zeros",
                    format!(
                        "zeros would add up to {zero_records} records ({} subscriptions x {periods} periods); \
                         at most {MAX_ZERO_RECORDS}: read a shorter period or by day",
                        subs.len()
                    ),
                ));
            }
            subs
        } else {
            Vec::new()
        };
        let rows = usage_between(&self.store, from, to, scope.tenant(), scope.partner()).await?;
        // (tenant, app, sku, period) -> quantity; the version is not part of the key: a
        // billing period is per SKU whatever version metered it.
        let mut buckets: BTreeMap<(String, String, String, i64), u128> = BTreeMap::new();
        let mut totals: BTreeMap<String, u128> = BTreeMap::new();
        for r in rows {
            let start = r.at_ms - r.at_ms.rem_euclid(bucket_ms);
            let quantity = u128::from(stored_quantity(r.quantity));
            *buckets.entry((r.tenant, r.app, r.sku.clone(), start)).or_default() += quantity;
            *totals.entry(r.sku).or_default() += quantity;
        }
        for (t, app, sku) in subscriptions {
            let mut start = first_period;
            while start < to {
                buckets.entry((t.clone(), app.clone(), sku.clone(), start)).or_insert(0);
                let Some(next) = start.checked_add(bucket_ms) else { break };
                start = next;
            }
        }
        let usage = buckets
            .into_iter()
            .map(|((tenant, app, sku, start), quantity)| UsageRecord {
                id: export_id(&tenant, &app, &sku, start).to_string(),
                period_start_ms: start,
                tenant,
                app,
                sku,
                quantity,
            })
            .collect();
        Ok(UsageReport { from_ms: from, to_ms: to, usage, totals })
    }
}
