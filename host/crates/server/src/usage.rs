//! Usage (SPEC §7): partner batches, and usage reads for tenants, partners and the operator.

use kiosk_domain::ids::AppId;
use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Caller, Json, Path, Problem, Query, Shared, error};
use kiosk_domain::manifest::Manifest;
use kiosk_domain::metering::UsageEvent;
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::InstallationRow;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    use utoipa_axum::router::UtoipaMethodRouterExt;
    OpenApiRouter::new()
        .routes(
            routes!(partner_post_usage)
                .layer(axum::extract::DefaultBodyLimit::max(error::USAGE_BATCH_BODY_LIMIT_BYTES)),
        )
        .routes(routes!(partner_usage))
        .routes(routes!(tenant_usage))
        .routes(routes!(operator_usage))
}

/// How far in the future a partner's usage timestamp may be (clock skew).
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Most records in one partner batch (SPEC §7: every source has a cap). A day of a
/// busy partner's batches fits; one batch is validated and committed in well under 2 s.
pub const MAX_BATCH_RECORDS: usize = 20_000;

/// A batch of usage records (at most 20,000). Each record is checked on its own: one
/// that does not hold is refused in its result, never the batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PartnerUsageBatch {
    #[schema(value_type = Vec<PartnerUsageRecord>, max_items = 20000)]
    records: Vec<Value>,
}

/// One unit of usage a partner reports for one of its apps installed by a tenant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PartnerUsageRecord {
    /// Tenant id.
    tenant: String,
    /// `partner/name`, one of the partner's apps.
    app: String,
    /// A SKU the installed version declares.
    sku: String,
    /// 1 to 2^53 - 1.
    #[schema(value_type = u64, minimum = 1, maximum = 9007199254740991_u64)]
    quantity: Value,
    /// Milliseconds since the Unix epoch; within the acceptance window, at most 5 minutes ahead.
    #[schema(minimum = 0)]
    timestamp_ms: i64,
    /// 1-128 bytes; the same key and quantity again is a duplicate, counted once.
    #[schema(min_length = 1)]
    idempotency_key: String,
    /// The installation the usage belongs to; needed when the tenant has several.
    #[serde(default)]
    installation: Option<String>,
}

/// What became of one record of a batch.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum RecordStatus {
    Recorded,
    Duplicate,
    Conflict,
    Refused,
}

/// The result of the record at `index`: `reason` for a conflict or a refusal; a conflict
/// also gives the quantity recorded before under that key.
#[derive(Serialize, utoipa::ToSchema)]
struct RecordResult {
    index: usize,
    status: RecordStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_quantity: Option<u64>,
}

/// One result per record, in order.
#[derive(Serialize, utoipa::ToSchema)]
struct UsageResults {
    results: Vec<RecordResult>,
}

#[utoipa::path(post, path = "/v1/partners/{partner}/usage", tag = "partner", request_body = PartnerUsageBatch,
    responses((status = 200, description = "one result per record: recorded, duplicate, conflict or refused with a reason", body = UsageResults),
              (status = 413, description = "`body-too-large`: over 8 MiB", body = Problem),
              (status = 422, description = "`too-many-records`: over 20,000 records", body = Problem)))]
async fn partner_post_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(batch): Json<PartnerUsageBatch>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    if batch.records.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-records",
            format!("a batch holds at most {MAX_BATCH_RECORDS} records, found {}", batch.records.len()),
        )
        .field("records"));
    }
    let now = i64::try_from(kiosk_domain::metering::now_ms()).unwrap_or(i64::MAX);
    let window_ms = i64::try_from(s.config.usage.acceptance_window_hours).unwrap_or(i64::MAX).saturating_mul(3_600_000);
    let mut results: Vec<Option<RecordResult>> = (0..batch.records.len()).map(|_| None).collect();
    let mut accepted: Vec<(usize, UsageEvent)> = Vec::new();
    let mut cache = BatchCache::default();
    for (i, raw) in batch.records.into_iter().enumerate() {
        match validate_partner_record(&s, &mut cache, &partner, raw, now, window_ms).await? {
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
        s.ledger.record(accepted.iter().map(|(_, e)| e.clone()).collect()).await.map_err(ApiError::internal)?;
    for ((i, _), outcome) in accepted.iter().zip(outcomes) {
        use kiosk_store::ledger::Recorded;
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
    Ok(axum::Json(UsageResults { results: results.into_iter().flatten().collect() }))
}

/// One CSV field per RFC 4180: a field holding a comma, a quote or a line break is
/// quoted, with its quotes doubled (records end with CRLF).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\r', '\n']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.to_string() }
}

#[cfg(test)]
mod csv_tests {
    #[test]
    fn fields_with_commas_quotes_and_line_breaks_are_quoted() {
        assert_eq!(super::csv_field("plain-slug"), "plain-slug");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\"\r\nbye"), "\"say \"\"hi\"\"\r\nbye\"");
    }
}

/// What one partner batch looked up once: a tenant's installations, a version's SKUs.
#[derive(Default)]
struct BatchCache {
    installations: HashMap<String, Vec<InstallationRow>>,
    skus: HashMap<(String, String), Option<std::collections::HashSet<String>>>,
}

/// Checks one partner record (SPEC §7); `Ok(Err(reason))` refuses it.
async fn validate_partner_record(
    s: &AppState,
    cache: &mut BatchCache,
    partner: &str,
    raw: Value,
    now: i64,
    window_ms: i64,
) -> ApiResult<Result<UsageEvent, String>> {
    let r: PartnerUsageRecord = match serde_json::from_value(raw) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("not a usage record: {e}"))),
    };
    let max = kiosk_store::ledger::MAX_QUANTITY;
    let Some(quantity) = r.quantity.as_u64().filter(|q| (1..=max).contains(q)) else {
        return Ok(Err(format!("quantity must be a positive integer at most 2^53 - 1 ({max}), found {}", r.quantity)));
    };
    // Exact names only: ids are slugs, so nothing a partner sends can act as a pattern.
    if !kiosk_domain::manifest::is_slug(&r.tenant) {
        return Ok(Err(format!("tenant {:?} is not a tenant id (a-z, 0-9, '-')", r.tenant)));
    }
    let app_name = r.app.strip_prefix(&format!("{partner}/"));
    if !app_name.is_some_and(kiosk_domain::manifest::is_slug) {
        return Ok(Err(format!("app {:?} is not an app of partner {partner}", r.app)));
    }
    let max_key = kiosk_store::ledger::MAX_SUBMITTED_KEY_BYTES;
    if r.idempotency_key.is_empty() || r.idempotency_key.len() > max_key {
        return Ok(Err(format!("idempotencyKey must be 1-{max_key} bytes, found {}", r.idempotency_key.len())));
    }
    if r.timestamp_ms < 0 {
        return Ok(Err(format!("timestampMs must be at least 0 (ms since the Unix epoch), found {}", r.timestamp_ms)));
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
        let rows = s.store.installations(&r.tenant).await?;
        cache.installations.insert(r.tenant.clone(), rows);
    }
    let current: Vec<&InstallationRow> = cache.installations[&r.tenant]
        .iter()
        .filter(|i| i.app == r.app && r.installation.as_ref().is_none_or(|id| *id == i.id))
        .collect();
    let installation = match current.as_slice() {
        [one] => Some((one.id.clone(), one.version.clone())),
        [] => s
            .store
            .uninstalled_since(&r.tenant, &r.app, r.timestamp_ms)
            .await?
            .filter(|(id, _)| r.installation.as_ref().is_none_or(|given| given == id)),
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
        let skus = s
            .store
            .version(&r.app, &version)
            .await?
            .and_then(|v| Manifest::parse(v.manifest.as_bytes(), &HOST_API_VERSION).ok())
            .map(|m| m.sku_ids().map(str::to_string).collect());
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
        source: kiosk_domain::metering::UsageSource::Partner,
        idempotency_key: format!("{partner}/{}", r.idempotency_key),
    }))
}

/// Periods of a usage read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents `UsageQuery::granularity`
pub(crate) enum Granularity {
    Hour,
    Day,
}

/// Formats of a usage read.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents `UsageQuery::format`
pub(crate) enum UsageFormat {
    Json,
    Csv,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
struct UsageQuery {
    /// Start of the period, ms since the epoch, at least 0 (default: 30 days ago).
    #[param(minimum = 0)]
    from_ms: Option<i64>,
    /// End of the period, exclusive (default: now + 5 min); at most 400 days after
    /// `fromMs` by hour, 10 years by day.
    to_ms: Option<i64>,
    /// `hour` or `day` (default `hour`).
    #[param(value_type = Option<Granularity>)]
    granularity: Option<String>,
    /// `json` (default) or `csv`: CSV gives one line per record with its id.
    #[param(value_type = Option<UsageFormat>)]
    format: Option<String>,
    /// Also emit zero records for every installed (tenant, app, SKU) in idle periods (at
    /// most 100,000 of them: subscriptions × periods).
    zeros: Option<bool>,
}

/// Namespace of export record ids (UUIDv5 of tenant, app, SKU and period start).
const EXPORT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b69_6f73_6b2d_7573_6167_652d_6578_7031);

/// The deterministic id of an export record: the same period and SKU give the same id.
pub fn export_id(tenant: &str, app: &str, sku: &str, period_start_ms: i64) -> uuid::Uuid {
    uuid::Uuid::new_v5(&EXPORT_NAMESPACE, format!("{tenant}\n{app}\n{sku}\n{period_start_ms}").as_bytes())
}

/// Longest period of one read at hour granularity.
const MAX_HOURLY_SPAN_MS: i64 = 400 * 86_400_000;
/// Longest period of one read at day granularity (ten years).
const MAX_DAILY_SPAN_MS: i64 = 3_653 * 86_400_000;
/// Most zero records one read may add (subscriptions × periods).
const MAX_ZERO_RECORDS: u64 = 100_000;

/// One (tenant, app, SKU, period) of a usage read. Quantities are summed in `u128`: a sum
/// of stored quantities (each below 2^64) never wraps. `id` is deterministic: the same
/// period and SKU give the same id.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsageRecord {
    id: String,
    period_start_ms: i64,
    tenant: String,
    app: String,
    sku: String,
    #[schema(value_type = u64)]
    quantity: u128,
}

/// Usage in `[fromMs, toMs)` by period, with totals by SKU.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct UsageReport {
    from_ms: i64,
    to_ms: i64,
    usage: Vec<UsageRecord>,
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    totals: std::collections::BTreeMap<String, u128>,
}

async fn usage_report(
    s: &AppState,
    q: UsageQuery,
    tenant: Option<&str>,
    partner: Option<&str>,
) -> ApiResult<axum::response::Response> {
    let invalid = |field: &str, detail: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-query", detail).field(field)
    };
    let granularity = q.granularity.as_deref().unwrap_or("hour");
    let (bucket_ms, max_span_ms, max_span): (i64, i64, &str) = match granularity {
        "hour" => (3_600_000, MAX_HOURLY_SPAN_MS, "400 days"),
        "day" => (86_400_000, MAX_DAILY_SPAN_MS, "10 years"),
        other => return Err(invalid("granularity", format!("granularity {other:?}: use hour or day"))),
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(invalid("format", format!("format {other:?}: use json or csv"))),
    };
    let now = i64::try_from(kiosk_domain::metering::now_ms()).unwrap_or(i64::MAX);
    let from = q.from_ms.unwrap_or_else(|| now.saturating_sub(30 * 86_400_000));
    let to = q.to_ms.unwrap_or_else(|| now.saturating_add(FUTURE_SKEW_MS));
    // The bound the caller gave is the one named when the period is wrong.
    let period_field = if q.to_ms.is_some() || q.from_ms.is_none() { "toMs" } else { "fromMs" };
    if from < 0 {
        return Err(invalid("fromMs", format!("fromMs must be at least 0 (ms since the Unix epoch), found {from}")));
    }
    if to <= from {
        return Err(invalid(period_field, format!("toMs ({to}) must be greater than fromMs ({from})")));
    }
    // 0 <= from < to: the difference cannot overflow.
    if to - from > max_span_ms {
        return Err(invalid(period_field, format!("a read by {granularity} may span at most {max_span}")));
    }
    let first_period = from - from.rem_euclid(bucket_ms);
    let periods = u64::try_from(to - first_period).unwrap_or(u64::MAX).div_ceil(bucket_ms.unsigned_abs());
    let subscriptions = if q.zeros.unwrap_or(false) {
        let subs = subscriptions(s, tenant, partner).await?;
        let zero_records = u64::try_from(subs.len()).unwrap_or(u64::MAX).saturating_mul(periods);
        if zero_records > MAX_ZERO_RECORDS {
            return Err(invalid(
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
    let rows = kiosk_store::ledger::usage_between(&s.store, from, to, tenant, partner).await?;
    // (tenant, app, sku, period) -> quantity; the version is not part of the key: a
    // billing period is per SKU whatever version metered it.
    let mut buckets: std::collections::BTreeMap<(String, String, String, i64), u128> = Default::default();
    let mut totals: std::collections::BTreeMap<String, u128> = Default::default();
    for r in rows {
        let start = r.at_ms - r.at_ms.rem_euclid(bucket_ms);
        let quantity = u128::from(kiosk_store::ledger::stored_quantity(r.quantity));
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
    let records: Vec<UsageRecord> = buckets
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
    if csv {
        let field = csv_field;
        let mut out = String::from("id,period_start_ms,tenant,app,sku,quantity\r\n");
        for r in &records {
            out.push_str(&format!(
                "{},{},{},{},{},{}\r\n",
                r.id,
                r.period_start_ms,
                field(&r.tenant),
                field(&r.app),
                field(&r.sku),
                r.quantity
            ));
        }
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(axum::Json(UsageReport { from_ms: from, to_ms: to, usage: records, totals }).into_response())
}

/// (tenant, app, SKU) of every current installation, within the reader's scope.
async fn subscriptions(
    s: &AppState,
    tenant: Option<&str>,
    partner: Option<&str>,
) -> ApiResult<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for inst in s.store.all_installations().await? {
        if tenant.is_some_and(|t| t != inst.tenant) || partner.is_some_and(|p| !AppId::is_of(&inst.app, p)) {
            continue;
        }
        if let Some(v) = s.store.version(&inst.app, &inst.version).await?
            && let Ok(m) = Manifest::parse(v.manifest.as_bytes(), &HOST_API_VERSION)
        {
            out.extend(m.sku_ids().map(|sku| (inst.tenant.clone(), inst.app.clone(), sku.to_string())));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", tag = "tenant", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn tenant_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    usage_report(&s, q, Some(&tenant), None).await
}

#[utoipa::path(get, path = "/v1/partners/{partner}/usage", tag = "partner", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn partner_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    usage_report(&s, q, None, Some(&partner)).await
}

#[utoipa::path(get, path = "/v1/usage", tag = "operator", params(UsageQuery),
    responses((status = 200, description = "usage by period (`format=csv`: one CSV line per record)",
               content((UsageReport = "application/json"), (String = "text/csv"))),
              (status = 422, description = "`invalid-query`: granularity, format, an empty or too long period, or too many zero records", body = Problem)))]
async fn operator_usage(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    usage_report(&s, q, None, None).await
}
