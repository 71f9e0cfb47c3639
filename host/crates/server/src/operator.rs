//! Operator administration: partners, tenants, tokens, entitlements, the audit log, registries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Caller, Json, Page, Path, Problem, Query, Shared, slug};
use kiosk_api::registries::{RegistryBody, RegistryView};
use kiosk_core::tokens::TokenRequest;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(create_partner))
        .routes(routes!(create_tenant))
        .routes(routes!(create_token))
        .routes(routes!(set_entitlement))
        .routes(routes!(audit_log))
        .routes(routes!(list_registries))
        .routes(routes!(put_registry))
        .routes(routes!(delete_registry))
}

// --- operator ------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPartner {
    /// 1-64 of a-z, 0-9, '-'.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,63}$")]
    name: String,
    #[serde(default)]
    display: Option<String>,
}

/// A partner named `name`.
#[derive(Serialize, utoipa::ToSchema)]
struct PartnerCreated {
    name: String,
}

#[utoipa::path(post, path = "/v1/partners", tag = "operator", request_body = NewPartner,
    responses((status = 201, description = "created", body = PartnerCreated),
              (status = 409, description = "`exists`: a partner of that name exists", body = Problem)))]
async fn create_partner(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<NewPartner>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    slug("name", &body.name)?;
    s.create_partner(&body.name, body.display.as_deref(), &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(PartnerCreated { name: body.name })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    /// 1-64 of a-z, 0-9, '-'.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,63}$")]
    id: String,
    #[serde(default)]
    display: Option<String>,
}

/// A tenant with id `id`.
#[derive(Serialize, utoipa::ToSchema)]
struct TenantCreated {
    id: String,
}

#[utoipa::path(post, path = "/v1/tenants", tag = "operator", request_body = NewTenant,
    responses((status = 201, description = "created", body = TenantCreated),
              (status = 409, description = "`exists`: a tenant with that id exists", body = Problem)))]
async fn create_tenant(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<NewTenant>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    slug("id", &body.id)?;
    s.create_tenant(&body.id, body.display.as_deref(), &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(TenantCreated { id: body.id })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewToken {
    /// `operator`, `partner` or `tenant`.
    #[schema(value_type = TokenRole)]
    role: String,
    /// The partner name or tenant id (not for operator tokens).
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    label: Option<String>,
    /// When the token stops working (ms since the Unix epoch); never when absent.
    #[serde(default, deserialize_with = "super::optional_integer")]
    expires_ms: Option<i64>,
}

/// What a token may do: `operator` (everything), `partner` (one partner's apps and
/// usage) or `tenant` (one tenant's installations and usage).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documents `NewToken::role`
enum TokenRole {
    Operator,
    Partner,
    Tenant,
}

/// A new token; `token` is its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenCreated {
    id: String,
    token: String,
    role: String,
    scope: Option<String>,
    expires_ms: Option<i64>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "operator", request_body = NewToken,
    responses((status = 201, description = "the secret, shown once", body = TokenCreated),
              (status = 404, description = "`not-found`: no partner or tenant `scope`", body = Problem),
              (status = 422, description = "`invalid-token`: a scope on an operator token, none on another, an unknown role, or an expiry not in the future", body = Problem)))]
async fn create_token(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let request = TokenRequest {
        role: body.role.clone(),
        scope: body.scope.clone(),
        label: body.label,
        expires_ms: body.expires_ms,
    };
    let created = s.create_token(&request, &caller.0.actor()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated {
            id: created.id,
            token: created.secret,
            role: body.role,
            scope: body.scope,
            expires_ms: body.expires_ms,
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EntitlementBody {
    #[serde(default, deserialize_with = "super::optional_integer")]
    expires_ms: Option<i64>,
    #[serde(default)]
    revoked: bool,
}

/// A tenant's entitlement to an app.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Entitlement {
    tenant: String,
    /// `partner/name`.
    app: String,
    expires_ms: Option<i64>,
    revoked: bool,
}

#[utoipa::path(put, path = "/v1/entitlements/{tenant}/{partner}/{name}", tag = "operator", request_body = EntitlementBody,
    responses((status = 200, description = "the entitlement as set", body = Entitlement),
              (status = 404, description = "`not-found`: no such tenant or app", body = Problem)))]
async fn set_entitlement(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, partner, name)): Path<(String, String, String)>,
    Json(body): Json<EntitlementBody>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let row = s.set_entitlement(&tenant, (&partner, &name), body.expires_ms, body.revoked, &caller.0.actor()).await?;
    Ok(axum::Json(Entitlement { tenant: row.tenant, app: row.app, expires_ms: row.expires_ms, revoked: row.revoked }))
}

/// `?limit=&after=`: the latest `limit` records (1-1000, default 100) older than the
/// record `after` (the `next` of the previous page: a record id).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// How many of the latest records (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page (a record id: the page holds older records).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// One audited action (`atMs`: ms since the Unix epoch).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditEntry {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[utoipa::path(get, path = "/v1/audit", tag = "operator", params(AuditQuery),
    responses((status = 200, description = "the latest audit records, newest first", body = Page<AuditEntry>)))]
async fn audit_log(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    // Record ids are positive i64s: a cursor outside them names no record.
    if let Some(after) = q.after.filter(|a| *a < 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("after {after} is not a record id: use the `next` of the previous page"),
        )
        .field("after"));
    }
    let before = q.after;
    let rows = s.audit_page(before, limit + 1).await?;
    let entries: Vec<AuditEntry> = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
        })
        .collect();
    Ok(axum::Json(Page::of(entries, limit, |e: &AuditEntry| e.id.to_string())))
}

// --- registries (operator) ------------------------------------------------------------

/// `?limit=&after=`: `after` is the `host` of the last item.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RegistryQuery {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/registries", tag = "operator", params(RegistryQuery),
    responses((status = 200, description = "registries by host; credentials are never returned", body = Page<RegistryView>)))]
async fn list_registries(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<RegistryQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    Ok(axum::Json(Page::after(s.registries().await?, q.after.as_deref(), limit, |r: &RegistryView| &r.host)))
}

#[utoipa::path(put, path = "/v1/registries/{host}", tag = "operator", request_body = RegistryBody,
    responses((status = 200, description = "the registry as configured", body = RegistryView),
              (status = 422, description = "`invalid-registry`: the field at fault is named", body = Problem)))]
async fn put_registry(
    State(s): State<Shared>,
    caller: Caller,
    Path(host): Path<String>,
    Json(body): Json<RegistryBody>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.put_registry(&host, body, &caller.0.actor()).await?))
}

#[utoipa::path(delete, path = "/v1/registries/{host}", tag = "operator",
    responses((status = 204, description = "removed"), (status = 404, description = "`not-found`: no such registry", body = Problem)))]
async fn delete_registry(
    State(s): State<Shared>,
    caller: Caller,
    Path(host): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_registry(&host, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
