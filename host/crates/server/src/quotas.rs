//! Tenant quotas (issue 31): installations per tenant, key-value bytes over all of a
//! tenant's installations, and the share of the collector's concurrent report calls its
//! installations may take. The operator's quotas come from the config file (`[sandbox]
//! tenant-installations`, `tenant-kv-bytes`, `tenant-collection-share`); a tenant's own,
//! set here, may only be lower. The tenant reads its quotas and its use of them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, Caller, Json, Path, Problem, Shared};
use kiosk_core::quotas::{OwnQuotas, Quota, Share, TenantQuotas};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(get_quotas))
        .routes(routes!(get_tenant_quotas))
        .routes(routes!(put_tenant_quotas))
        .routes(routes!(delete_tenant_quotas))
}

/// One quota of a tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct QuotaView {
    /// What applies: the tenant's own quota if set, else the operator's.
    limit: u64,
    /// The operator's quota for every tenant (the most a tenant's own may be).
    default: u64,
    /// The tenant's own quota, if the operator set one.
    own: Option<u64>,
    /// What the tenant holds now.
    used: u64,
}

/// A tenant's share of collection work, percent of the collector's concurrent report
/// calls. Nothing of it is "used" in the database: collections run on each replica for
/// the length of a call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ShareView {
    /// What applies, percent: the tenant's own share if set, else the operator's.
    #[schema(minimum = 1, maximum = 100)]
    limit: u64,
    /// The operator's share for every tenant (the most a tenant's own may be).
    #[schema(minimum = 1, maximum = 100)]
    default: u64,
    /// The tenant's own share, if the operator set one.
    own: Option<u64>,
    /// The report calls of the tenant's installations one replica runs at once at most:
    /// `limit` percent of the collector's, at least 1.
    places: usize,
}

/// A tenant's quotas and what it holds of them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantQuotasView {
    tenant: String,
    /// Installations the tenant may have at once.
    installations: QuotaView,
    /// Key-value bytes (keys and values) of all the tenant's installations together.
    kv_bytes: QuotaView,
    /// The share of collection work its installations may take.
    collection_share: ShareView,
}

/// A tenant's own quotas: each a whole number from 1 to the operator's quota (the
/// collection share a percent), or null (absent) for the operator's.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // The schema of the body; the core reads it from JSON.
struct QuotaSet {
    #[schema(minimum = 1)]
    installations: Option<u64>,
    #[schema(minimum = 1)]
    kv_bytes: Option<u64>,
    #[schema(minimum = 1, maximum = 100)]
    collection_share: Option<u64>,
}

fn view(tenant: &str, q: &TenantQuotas) -> TenantQuotasView {
    let one = |q: &Quota| QuotaView { limit: q.limit, default: q.default, own: q.own, used: q.used };
    let share = |s: &Share| ShareView { limit: s.limit, default: s.default, own: s.own, places: s.places };
    TenantQuotasView {
        tenant: tenant.to_string(),
        installations: one(&q.installations),
        kv_bytes: one(&q.kv_bytes),
        collection_share: share(&q.collection_share),
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/quotas", tag = "tenant",
    responses((status = 200, description = "the tenant's quotas and what it holds of them", body = TenantQuotasView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn get_quotas(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    Ok(axum::Json(view(&tenant, &s.tenant_quotas(&tenant).await?)))
}

#[utoipa::path(get, path = "/v1/limits/tenants/{tenant}/quotas", tag = "operator",
    responses((status = 200, description = "the tenant's quotas and what it holds of them", body = TenantQuotasView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn get_tenant_quotas(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(view(&tenant, &s.tenant_quotas(&tenant).await?)))
}

#[utoipa::path(put, path = "/v1/limits/tenants/{tenant}/quotas", tag = "operator", request_body = QuotaSet,
    responses((status = 200, description = "the tenant's quotas as set (replacing its own ones); they apply from the next install, key-value write or collection pass", body = TenantQuotasView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem),
              (status = 422, description = "`limit-above-ceiling` (above the operator's quota) or `invalid-limit`, naming the field", body = Problem)))]
async fn put_tenant_quotas(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(view(&tenant, &s.set_tenant_quotas_json(&tenant, &body, &caller.0.actor()).await?)))
}

#[utoipa::path(delete, path = "/v1/limits/tenants/{tenant}/quotas", tag = "operator",
    responses((status = 204, description = "the tenant's own quotas removed: the operator's apply"),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn delete_tenant_quotas(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.set_tenant_quotas(&tenant, OwnQuotas::default(), &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
