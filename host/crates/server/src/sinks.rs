//! Usage sinks (issue 29), the operator's: each configured sink with its lag, last
//! success and parked events; re-driving parked events after a mapping fix; replaying a
//! sink from a point in time. Sinks are set in the config file (`[[sinks]]`) or here
//! (`PUT`, `DELETE`); their keys are never shown.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::PageQuery;
use super::{ApiError, ApiResult, Caller, Json, Page, Path, Problem, Query, Shared};
use kiosk_core::export::SinkView;
use kiosk_core::export::wire::event_id;
use kiosk_core::records::Parked;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_sinks))
        .routes(routes!(get_sink, put_sink, delete_sink))
        .routes(routes!(sink_parked))
        .routes(routes!(redrive))
        .routes(routes!(replay))
}

/// A sink: where it sends, how it names tenants and SKUs, and how far it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SinkBody {
    name: String,
    /// `config` (the config file's `[[sinks]]`: changed there) or `api` (`PUT`).
    source: String,
    /// `cloudevents`, `webhook`, `stripe` or `aws-marketplace`.
    kind: String,
    /// Where batches are POSTed.
    endpoint: String,
    /// Tenants with a customer id of their own.
    mapped_tenants: usize,
    /// Whether a tenant without one is sent under its own id (else it is parked).
    tenant_is_customer: bool,
    /// SKU → meter rules.
    meter_rules: usize,
    /// Whether a SKU without a rule is its own meter (else it is parked).
    sku_is_meter: bool,
    /// Records per request.
    batch: u32,
    /// `0`: a record per event; else the length of a period in seconds: a record per
    /// customer, meter and period, sent once the period ended and settled.
    aggregate_seconds: u32,
    /// How long after a period's end its aggregates are sent.
    settle_seconds: u32,
    /// For aggregates: ms since the Unix epoch of the first period not yet sent.
    next_period_ms: Option<i64>,
    /// The lag at which the sink is lagging.
    alert_lag_seconds: u64,
    /// The lag reached `alertLagSeconds`: the receiver's deadline is near.
    lagging: bool,
    /// Everything in the ledger's commit order up to this number was acknowledged or
    /// parked.
    cursor: String,
    /// Events the receiver acknowledged, all time.
    sent: i64,
    /// Events waiting with a reason (see `/parked`).
    parked: i64,
    /// Seconds since the oldest event not yet sent was recorded (0: nothing waits).
    lag_seconds: f64,
    /// ms since the Unix epoch of the last acknowledged push.
    last_success_ms: Option<i64>,
    /// Why the last push failed (cleared by the next success).
    last_error: Option<String>,
    /// Failed pushes since the last success.
    attempts: i64,
    /// ms since the Unix epoch before which no push is tried (the retry's backoff).
    next_attempt_ms: i64,
}

fn view(v: SinkView) -> SinkBody {
    SinkBody {
        name: v.settings.name.clone(),
        source: v.source.as_str().to_string(),
        kind: v.settings.kind.as_str().to_string(),
        endpoint: v.settings.endpoint.clone(),
        mapped_tenants: v.settings.customers.len(),
        tenant_is_customer: v.settings.tenant_is_customer,
        meter_rules: v.settings.meters.len(),
        sku_is_meter: v.settings.sku_is_meter,
        batch: v.settings.batch(),
        aggregate_seconds: (v.settings.period_ms() / 1000) as u32,
        settle_seconds: v.settings.settle_seconds,
        next_period_ms: (v.settings.period_ms() > 0).then_some(v.state.period_ms),
        alert_lag_seconds: v.settings.alert_lag_seconds(),
        lagging: v.lagging,
        cursor: v.state.cursor.to_string(),
        sent: v.state.sent,
        parked: v.state.parked,
        lag_seconds: v.lag_seconds,
        last_success_ms: v.state.last_success_ms,
        last_error: v.state.last_error,
        attempts: v.state.attempts,
        next_attempt_ms: v.state.next_attempt_ms,
    }
}

/// A parked usage event, with why it waits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ParkedBody {
    /// Its number in the ledger's commit order: pass it as `after` for the next page.
    seq: String,
    /// The id the receiver gets (the same on every resend).
    id: String,
    reason: String,
    parked_ms: i64,
    /// Marked to be sent again by the next push.
    redrive: bool,
    tenant: String,
    installation: String,
    app: String,
    sku: String,
    quantity: i64,
    at_ms: i64,
    /// `host`, `guest`, `report` or `partner`.
    source: String,
}

fn parked_view(p: Parked) -> ParkedBody {
    ParkedBody {
        seq: p.event.seq.to_string(),
        id: event_id(&p.event),
        reason: p.reason,
        parked_ms: p.parked_ms,
        redrive: p.redrive,
        tenant: p.event.tenant,
        installation: p.event.installation,
        app: p.event.app,
        sku: p.event.sku,
        quantity: p.event.quantity,
        at_ms: p.event.at_ms,
        source: p.event.source,
    }
}

/// How many parked events will be sent again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RedriveBody {
    redriven: u64,
}

/// Where a replay starts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // The schema of the body; the handler reads it after the caller's check.
struct ReplayRequest {
    /// Every event recorded from this time on (ms since the Unix epoch) is sent again,
    /// with its id: a receiver that deduplicates counts it once.
    #[schema(minimum = 0)]
    from_ms: i64,
}

/// The cursor a replay set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ReplayBody {
    cursor: String,
}

/// What a billing system speaks.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum SinkKindBody {
    Cloudevents,
    Webhook,
    Stripe,
    AwsMarketplace,
}

/// Where a new sink starts: with usage from now on, or the whole ledger.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
enum SinkStartBody {
    Now,
    Beginning,
}

/// A SKU's name in the billing system (a rule naming the app wins).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MeterRuleBody {
    #[schema(max_length = 200)]
    app: Option<String>,
    #[schema(max_length = 128)]
    sku: String,
    #[schema(max_length = 256)]
    meter: String,
}

/// A sink set through the API: the settings of the config file's `[[sinks]]` (camelCase
/// here), and its key. Absent settings take their defaults.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SinkRequest {
    kind: SinkKindBody,
    /// `https://host[:port]/path` (plain `http` only with `http`).
    #[schema(max_length = 2048)]
    endpoint: String,
    http: Option<bool>,
    /// The endpoint may resolve to loopback, private or link-local addresses.
    private_addresses: Option<bool>,
    /// The HMAC-SHA256 key of `Kiosk-Signature` (Stripe: the secret key). Needed to create
    /// a sink; absent on a replace, the stored key is kept. Never shown again.
    #[schema(write_only, min_length = 16, max_length = 1024)]
    secret: Option<String>,
    /// Tenant id → the billing system's customer id.
    customers: Option<std::collections::BTreeMap<String, String>>,
    tenant_is_customer: Option<bool>,
    meters: Option<Vec<MeterRuleBody>>,
    sku_is_meter: Option<bool>,
    start: Option<SinkStartBody>,
    #[schema(minimum = 1, maximum = 10000)]
    batch: Option<u32>,
    #[schema(minimum = 1, maximum = 300)]
    timeout_seconds: Option<u64>,
    /// `0`: a record per event; else a divisor of 3600: sums per customer, meter and period.
    #[schema(minimum = 0, maximum = 3600)]
    aggregate_seconds: Option<u32>,
    #[schema(minimum = 0, maximum = 3600)]
    settle_seconds: Option<u32>,
    #[schema(minimum = 1, maximum = 34560000)]
    alert_lag_seconds: Option<u64>,
    /// `aws-marketplace`: the product code.
    #[schema(max_length = 255)]
    product_code: Option<String>,
}

/// The settings `request` makes of the sink `name` (the core checks them).
fn settings_of(name: String, r: SinkRequest) -> Result<kiosk_core::export::settings::SinkSettings, ApiError> {
    use kiosk_core::export::settings::{MeterRule, SinkSettings};
    // The core's enums read the same words.
    let word = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let kind = serde_json::from_value(serde_json::Value::String(word(serde_json::json!(r.kind))))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", "kind is not known").field("kind"))?;
    let start = match r.start {
        Some(start) => {
            serde_json::from_value(serde_json::Value::String(word(serde_json::json!(start)))).map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", "start is not known").field("start")
            })?
        }
        None => Default::default(),
    };
    // The defaults the config file gives (`#[serde(default)]`), from the same code.
    let defaults: SinkSettings =
        serde_json::from_value(serde_json::json!({"name": name, "kind": "webhook", "endpoint": "https://x.invalid/"}))
            .map_err(|_| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            })?;
    Ok(SinkSettings {
        name,
        kind,
        endpoint: r.endpoint,
        http: r.http.unwrap_or(false),
        private_addresses: r.private_addresses.unwrap_or(false),
        customers: r.customers.unwrap_or_default(),
        tenant_is_customer: r.tenant_is_customer.unwrap_or(false),
        meters: r
            .meters
            .unwrap_or_default()
            .into_iter()
            .map(|m| MeterRule { app: m.app, sku: m.sku, meter: m.meter })
            .collect(),
        sku_is_meter: r.sku_is_meter.unwrap_or(false),
        start,
        batch: r.batch,
        timeout_seconds: r.timeout_seconds.unwrap_or(defaults.timeout_seconds),
        aggregate_seconds: r.aggregate_seconds,
        settle_seconds: r.settle_seconds.unwrap_or(defaults.settle_seconds),
        alert_lag_seconds: r.alert_lag_seconds,
        product_code: r.product_code,
        ..defaults
    })
}

#[utoipa::path(put, path = "/v1/sinks/{sink}", tag = "operator", request_body = SinkRequest,
    responses((status = 200, description = "the sink replaced (its key kept unless `secret` is given), with its state; every replica pushes with the new settings within 2 s", body = SinkBody),
              (status = 201, description = "the sink created, with its state; every replica starts pushing it within 2 s", body = SinkBody),
              (status = 400, description = "`malformed-json`: a body that is not the object described (the field names where)", body = Problem),
              (status = 409, description = "`sink-in-config`: the sink is set in the operator config file", body = Problem),
              (status = 422, description = "`invalid-sink`: a setting the sink cannot have (the field names it), an endpoint host not in the operator config's `[export] api-hosts`, or no `secret` for a new sink", body = Problem)))]
async fn put_sink(
    State(s): State<Shared>,
    caller: Caller,
    Path(sink): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let actor = caller.0.actor();
    let mut body = body;
    // A whole number written 158.0 is still a whole number (JSON does not tell them apart).
    if let Some(fields) = body.as_object_mut() {
        for key in ["batch", "timeoutSeconds", "aggregateSeconds", "settleSeconds", "alertLagSeconds"] {
            if let Some(n) = fields.get(key).and_then(serde_json::Value::as_f64)
                && n.fract() == 0.0
                && (0.0..9.0e15).contains(&n)
                && !fields[key].is_u64()
            {
                fields.insert(key.to_string(), serde_json::json!(n as u64));
            }
        }
    }
    let request: SinkRequest = super::error::typed(body)?;
    let secret = request.secret.clone();
    let settings = settings_of(sink.clone(), request)?;
    let created = s.put_sink(settings, secret, &actor).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(view(s.sink(&sink).await?))))
}

#[utoipa::path(delete, path = "/v1/sinks/{sink}", tag = "operator",
    responses((status = 204, description = "the sink removed with its cursor and parked events; every replica stops pushing it within 2 s"),
              (status = 404, description = "`not-found`: no sink of that name set through the API", body = Problem),
              (status = 409, description = "`sink-in-config`: the sink is set in the operator config file", body = Problem)))]
async fn delete_sink(
    State(s): State<Shared>,
    caller: Caller,
    Path(sink): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_sink(&sink, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sinks", tag = "operator", params(PageQuery),
    responses((status = 200, description = "the configured usage sinks by name, with their state", body = Page<SinkBody>)))]
async fn list_sinks(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let items: Vec<SinkBody> = s.sinks().await?.into_iter().map(view).collect();
    Ok(axum::Json(Page::after(items, q.after.as_deref(), limit, |v: &SinkBody| &v.name)))
}

#[utoipa::path(get, path = "/v1/sinks/{sink}", tag = "operator",
    responses((status = 200, description = "the sink and its state", body = SinkBody),
              (status = 404, description = "`not-found`: no such sink in the config", body = Problem)))]
async fn get_sink(State(s): State<Shared>, caller: Caller, Path(sink): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(view(s.sink(&sink).await?)))
}

/// `?limit=&after=`: at most `limit` parked events (1-1000, default 100) after the
/// `seq` `after` (the `next` of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ParkedQuery {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page (a `seq`).
    #[param(pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/sinks/{sink}/parked", tag = "operator", params(ParkedQuery),
    responses((status = 200, description = "the sink's parked events, oldest first, each with its reason", body = Page<ParkedBody>),
              (status = 400, description = "`invalid-query`: an `after` that is not a cursor, a `limit` out of 1-1000", body = Problem),
              (status = 404, description = "`not-found`: no such sink in the config", body = Problem)))]
async fn sink_parked(
    State(s): State<Shared>,
    caller: Caller,
    Path(sink): Path<String>,
    Query(q): Query<ParkedQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let after = match q.after.as_deref() {
        Some(after) => super::admin::cursor("after", after, "the seq of a parked event")?,
        None => 0,
    };
    let items: Vec<ParkedBody> = s.sink_parked(&sink, after, limit + 1).await?.into_iter().map(parked_view).collect();
    Ok(axum::Json(Page::of(items, limit, |p: &ParkedBody| p.seq.clone())))
}

#[utoipa::path(post, path = "/v1/sinks/{sink}/redrive", tag = "operator",
    responses((status = 202, description = "every parked event is sent again by the next push, through the mapping as it is now; those refused again stay parked with their new reason", body = RedriveBody),
              (status = 404, description = "`not-found`: no such sink in the config", body = Problem)))]
async fn redrive(State(s): State<Shared>, caller: Caller, Path(sink): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let redriven = s.redrive_sink(&sink).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(RedriveBody { redriven })))
}

#[utoipa::path(post, path = "/v1/sinks/{sink}/replay", tag = "operator", request_body = ReplayRequest,
    responses((status = 202, description = "the sink's cursor moved: every event recorded from `fromMs` on is sent again", body = ReplayBody),
              (status = 400, description = "`invalid-request`: `fromMs` missing, negative or not a whole number, or another member", body = Problem),
              (status = 404, description = "`not-found`: no such sink in the config, or not started yet", body = Problem)))]
async fn replay(
    State(s): State<Shared>,
    caller: Caller,
    Path(sink): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let bad = |detail: &str, field: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-request", detail.to_string()).field(field.to_string())
    };
    let Some(fields) = body.as_object() else {
        return Err(bad("the body must be an object {\"fromMs\": …}", "/"));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "fromMs") {
        return Err(bad("the body takes fromMs only", &format!("/{}", other.replace('~', "~0").replace('/', "~1"))));
    }
    // A whole number of ms, 0 or more (157.0 is one: JSON does not tell them apart).
    let from_ms = match fields.get("fromMs") {
        Some(n) if n.is_i64() => n.as_i64(),
        Some(n) => n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e18).map(|f| f as i64),
        None => None,
    };
    let Some(from_ms) = from_ms.filter(|ms| *ms >= 0) else {
        return Err(bad("fromMs must be a whole number of ms since the Unix epoch, 0 or more", "fromMs"));
    };
    let cursor = s.replay_sink(&sink, from_ms).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(ReplayBody { cursor: cursor.to_string() })))
}
