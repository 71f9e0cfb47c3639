//! Operator limits (issue 11): the ceilings of the config file, and the layers below
//! them — operator defaults, per-app caps, per-tenant overrides (per tenant, or per
//! tenant and app). The core checks every value against its ceiling and computes each
//! call's limits from the database.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Caller, Json, Page, Path, Problem, Query, Shared};
use kiosk_core::records::LimitLayerRow;
use kiosk_domain::limits::{Effective, Limit, LimitValues, Source};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(get_limits))
        .routes(routes!(put_defaults))
        .routes(routes!(list_app_limits))
        .routes(routes!(get_app_limits))
        .routes(routes!(put_app_limits))
        .routes(routes!(delete_app_limits))
        .routes(routes!(list_tenant_limits))
        .routes(routes!(get_tenant_limits))
        .routes(routes!(put_tenant_limits))
        .routes(routes!(delete_tenant_limits))
        .routes(routes!(get_tenant_app_limits))
        .routes(routes!(put_tenant_app_limits))
        .routes(routes!(delete_tenant_app_limits))
}

/// Limit values; in a layer, an absent (or null) value inherits the layer above.
/// Each is a whole number from 1 to its ceiling; `fuel` only when the operator enabled
/// fuel metering.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct LimitSet {
    /// Linear memory, MiB.
    #[serde(rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    memory_mib: Option<u64>,
    /// Wall time per call, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    /// Instruction budget per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    max_input_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    max_output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    max_log_bytes_per_call: Option<u64>,
    /// Key-value bytes per installation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    kv_quota_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    max_usage_events_per_call: Option<u64>,
    /// Elements per table.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    table_elements: Option<u64>,
    /// Core instances per component instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    instances: Option<u64>,
}

impl From<&LimitValues> for LimitSet {
    fn from(v: &LimitValues) -> Self {
        Self {
            memory_mib: v.memory_mib,
            timeout_ms: v.timeout_ms,
            fuel: v.fuel,
            max_input_bytes: v.max_input_bytes,
            max_output_bytes: v.max_output_bytes,
            max_log_bytes_per_call: v.max_log_bytes_per_call,
            kv_quota_bytes: v.kv_quota_bytes,
            max_usage_events_per_call: v.max_usage_events_per_call,
            table_elements: v.table_elements,
            instances: v.instances,
        }
    }
}

/// The layer a value in effect comes from.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum LimitSource {
    Ceiling,
    Default,
    App,
    Manifest,
    Tenant,
}

impl From<Source> for LimitSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Ceiling => Self::Ceiling,
            Source::Default => Self::Default,
            Source::App => Self::App,
            Source::Manifest => Self::Manifest,
            Source::Tenant => Self::Tenant,
        }
    }
}

/// A value in effect and the layer it comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct LimitInEffect {
    value: u64,
    source: LimitSource,
}

/// The limits an installation's next call runs under, each with its source; `fuel`
/// only when fuel metering is on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EffectiveLimits {
    #[serde(rename = "memoryMiB")]
    memory_mib: LimitInEffect,
    timeout_ms: LimitInEffect,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel: Option<LimitInEffect>,
    max_input_bytes: LimitInEffect,
    max_output_bytes: LimitInEffect,
    max_log_bytes_per_call: LimitInEffect,
    kv_quota_bytes: LimitInEffect,
    max_usage_events_per_call: LimitInEffect,
    table_elements: LimitInEffect,
    instances: LimitInEffect,
}

pub(super) fn effective_view(e: &Effective) -> EffectiveLimits {
    let get = |l: Limit| e.get(l).map(|(value, source)| LimitInEffect { value, source: source.into() });
    let must = |l: Limit| get(l).unwrap_or(LimitInEffect { value: 0, source: LimitSource::Ceiling });
    EffectiveLimits {
        memory_mib: must(Limit::MemoryMib),
        timeout_ms: must(Limit::TimeoutMs),
        fuel: get(Limit::Fuel),
        max_input_bytes: must(Limit::MaxInputBytes),
        max_output_bytes: must(Limit::MaxOutputBytes),
        max_log_bytes_per_call: must(Limit::MaxLogBytesPerCall),
        kv_quota_bytes: must(Limit::KvQuotaBytes),
        max_usage_events_per_call: must(Limit::MaxUsageEventsPerCall),
        table_elements: must(Limit::TableElements),
        instances: must(Limit::Instances),
    }
}

/// The ceilings (the config file's `[sandbox]`, fixed at start) and the operator
/// defaults below them (the config file's `[sandbox.defaults]` overlaid by the API's).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct LimitsOverview {
    ceilings: LimitSet,
    defaults: LimitSet,
}

async fn overview(s: &AppState) -> ApiResult<LimitsOverview> {
    let mut ceilings = LimitValues::default();
    for l in Limit::ALL {
        ceilings.set(l, l.ceiling(&s.config().sandbox));
    }
    Ok(LimitsOverview { ceilings: (&ceilings).into(), defaults: (&s.default_limits().await?).into() })
}

#[utoipa::path(get, path = "/v1/limits", tag = "operator",
    responses((status = 200, description = "the ceilings and the operator defaults", body = LimitsOverview)))]
async fn get_limits(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(overview(&s).await?))
}

#[utoipa::path(put, path = "/v1/limits/defaults", tag = "operator", request_body = LimitSet,
    responses((status = 200, description = "the operator defaults set over the API (absent values inherit the config file's, else the ceiling); applies from the next call", body = LimitsOverview),
              (status = 422, description = "`limit-above-ceiling` (names the field and the ceiling) or `invalid-limit`", body = Problem)))]
async fn put_defaults(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.put_default_limits(&body, &caller.0.actor()).await?;
    Ok(axum::Json(overview(&s).await?))
}

/// An app's cap.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AppLimits {
    /// `partner/name`.
    app: String,
    limits: LimitSet,
    updated_ms: i64,
}

fn app_limits(r: &LimitLayerRow) -> AppLimits {
    AppLimits { app: r.app.clone(), limits: (&r.limits).into(), updated_ms: r.updated_ms }
}

/// A tenant's override: for all its installations, or (`app`) for those of one app.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantLimits {
    tenant: String,
    app: Option<String>,
    limits: LimitSet,
    updated_ms: i64,
}

fn tenant_limits(r: &LimitLayerRow) -> TenantLimits {
    TenantLimits {
        tenant: r.tenant.clone(),
        app: (!r.app.is_empty()).then(|| r.app.clone()),
        limits: (&r.limits).into(),
        updated_ms: r.updated_ms,
    }
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LayerPage {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// `after` is the `app` of the last item.
#[utoipa::path(get, path = "/v1/limits/apps", tag = "operator", params(LayerPage),
    responses((status = 200, description = "apps' caps by app", body = Page<AppLimits>)))]
async fn list_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<LayerPage>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let rows = s.app_limit_layers(q.after.as_deref().unwrap_or(""), limit + 1).await?;
    let items = rows.iter().map(app_limits).collect();
    Ok(axum::Json(Page::of(items, limit, |a: &AppLimits| a.app.clone())))
}

#[utoipa::path(get, path = "/v1/limits/apps/{partner}/{name}", tag = "operator",
    responses((status = 200, description = "the app's cap", body = AppLimits),
              (status = 404, description = "`not-found`: no such app, or no cap set", body = Problem)))]
async fn get_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(app_limits(&s.app_limits(&partner, &name).await?)))
}

#[utoipa::path(put, path = "/v1/limits/apps/{partner}/{name}", tag = "operator", request_body = LimitSet,
    responses((status = 200, description = "the app's cap as set (replacing the previous one); applies from the next call", body = AppLimits),
              (status = 404, description = "`not-found`: no such app", body = Problem),
              (status = 422, description = "`limit-above-ceiling` (names the field and the ceiling) or `invalid-limit`", body = Problem)))]
async fn put_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(app_limits(&s.put_app_limits(&partner, &name, &body, &caller.0.actor()).await?)))
}

#[utoipa::path(delete, path = "/v1/limits/apps/{partner}/{name}", tag = "operator",
    responses((status = 204, description = "removed: the app's calls inherit the defaults again"),
              (status = 404, description = "`not-found`: no cap set", body = Problem)))]
async fn delete_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_app_limits(&partner, &name, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `after` is `tenant` or `tenant:partner/name` of the last item.
#[utoipa::path(get, path = "/v1/limits/tenants", tag = "operator", params(LayerPage),
    responses((status = 200, description = "tenants' overrides by tenant, then app (a tenant's own override first)", body = Page<TenantLimits>)))]
async fn list_tenant_limits(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<LayerPage>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let after = q.after.as_deref().unwrap_or("");
    let after = after.split_once(':').unwrap_or((after, ""));
    let rows = s.tenant_limit_layers(after, limit + 1).await?;
    let items = rows.iter().map(tenant_limits).collect();
    Ok(axum::Json(Page::of(items, limit, |t: &TenantLimits| match &t.app {
        Some(app) => format!("{}:{app}", t.tenant),
        None => t.tenant.clone(),
    })))
}

#[utoipa::path(get, path = "/v1/limits/tenants/{tenant}", tag = "operator",
    responses((status = 200, description = "the tenant's override", body = TenantLimits),
              (status = 404, description = "`not-found`: no such tenant, or no override set", body = Problem)))]
async fn get_tenant_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(tenant_limits(&s.tenant_limits(&tenant, None).await?)))
}

#[utoipa::path(put, path = "/v1/limits/tenants/{tenant}", tag = "operator", request_body = LimitSet,
    responses((status = 200, description = "the tenant's override as set (replacing the previous one); applies from the next call", body = TenantLimits),
              (status = 404, description = "`not-found`: no such tenant", body = Problem),
              (status = 422, description = "`limit-above-ceiling` (names the field and the ceiling) or `invalid-limit`", body = Problem)))]
async fn put_tenant_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(tenant_limits(&s.put_tenant_limits(&tenant, None, &body, &caller.0.actor()).await?)))
}

#[utoipa::path(delete, path = "/v1/limits/tenants/{tenant}", tag = "operator",
    responses((status = 204, description = "removed: the tenant's calls inherit again"),
              (status = 404, description = "`not-found`: no override set", body = Problem)))]
async fn delete_tenant_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_tenant_limits(&tenant, None, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/limits/tenants/{tenant}/apps/{partner}/{name}", tag = "operator",
    responses((status = 200, description = "the tenant's override for the app", body = TenantLimits),
              (status = 404, description = "`not-found`: no such tenant or app, or no override set", body = Problem)))]
async fn get_tenant_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, partner, name)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(tenant_limits(&s.tenant_limits(&tenant, Some((&partner, &name))).await?)))
}

#[utoipa::path(put, path = "/v1/limits/tenants/{tenant}/apps/{partner}/{name}", tag = "operator", request_body = LimitSet,
    responses((status = 200, description = "the tenant's override for the app as set; applies from the next call", body = TenantLimits),
              (status = 404, description = "`not-found`: no such tenant or app", body = Problem),
              (status = 422, description = "`limit-above-ceiling` (names the field and the ceiling) or `invalid-limit`", body = Problem)))]
async fn put_tenant_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, partner, name)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let row = s.put_tenant_limits(&tenant, Some((&partner, &name)), &body, &caller.0.actor()).await?;
    Ok(axum::Json(tenant_limits(&row)))
}

#[utoipa::path(delete, path = "/v1/limits/tenants/{tenant}/apps/{partner}/{name}", tag = "operator",
    responses((status = 204, description = "removed"),
              (status = 404, description = "`not-found`: no override set", body = Problem)))]
async fn delete_tenant_app_limits(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, partner, name)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_tenant_limits(&tenant, Some((&partner, &name)), &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
