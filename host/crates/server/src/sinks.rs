//! Usage sinks (issue 29), the operator's: each configured sink with its lag, last
//! success and parked events; re-driving parked events after a mapping fix; replaying a
//! sink from a point in time. Sinks are configured in the config file (`[[sinks]]`);
//! their signing keys are never shown.

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
        .routes(routes!(get_sink))
        .routes(routes!(sink_parked))
        .routes(routes!(redrive))
        .routes(routes!(replay))
}

/// A sink: where it sends, how it names tenants and SKUs, and how far it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SinkBody {
    name: String,
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
