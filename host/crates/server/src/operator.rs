//! Operator administration: partners, tenants, tokens, entitlements, the audit log, registries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kiosk_domain::ids::AppId;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Caller, Json, Page, Path, Problem, Query, Shared, slug};
use kiosk_core::lifecycle::RegistrySecret;
use kiosk_store::{EntitlementRow, Principal, RegistryRow};

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
    if !s.store.create_partner(&body.name, body.display.as_deref().unwrap_or(&body.name), &caller.0.actor()).await? {
        return Err(
            ApiError::new(StatusCode::CONFLICT, "exists", format!("partner {:?} exists", body.name)).field("name")
        );
    }
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
    if !s.store.create_tenant(&body.id, body.display.as_deref().unwrap_or(&body.id), &caller.0.actor()).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("tenant {:?} exists", body.id)).field("id"));
    }
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
    let principal = match (body.role.as_str(), body.scope.clone()) {
        ("operator", None) => Principal::Operator,
        ("partner", Some(p)) if s.store.partner_exists(&p).await? => Principal::Partner(p),
        ("tenant", Some(t)) if s.store.tenant_exists(&t).await? => Principal::Tenant(t),
        ("partner" | "tenant", Some(scope)) => {
            return Err(ApiError::not_found(format!("no {} {scope:?}", body.role)).field("scope"));
        }
        ("operator", Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-token",
                "operator tokens have no scope",
            )
            .field("scope"));
        }
        ("partner" | "tenant", None) => {
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-token", "scope is required").field("scope")
            );
        }
        (other, _) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-token",
                format!("unknown role {other:?}"),
            )
            .field("role"));
        }
    };
    if let Some(at) = body.expires_ms.filter(|at| *at <= kiosk_domain::metering::now_ms() as i64) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-token",
            format!("expiresMs {at} is not in the future"),
        )
        .field("expiresMs"));
    }
    let label = body.label.unwrap_or_else(|| principal.actor());
    let (id, secret) = s.store.create_token_by(&principal, &label, body.expires_ms, &caller.0.actor()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenCreated { id, token: secret, role: body.role, scope: body.scope, expires_ms: body.expires_ms }),
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
    if !s.store.tenant_exists(&tenant).await? {
        return Err(ApiError::not_found(format!("no tenant {tenant:?}")));
    }
    let app = AppId::new(&partner, &name).map_err(|e| ApiError::not_found(e.to_string()))?.to_string();
    if s.store.versions(&app).await?.is_empty() {
        return Err(ApiError::not_found(format!("no app {app:?}")));
    }
    let row = EntitlementRow { tenant, app, expires_ms: body.expires_ms, revoked: body.revoked };
    s.store.set_entitlement(&row, &caller.0.actor()).await?;
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

/// One audited action (`at_ms`: ms since the Unix epoch).
#[derive(Serialize, utoipa::ToSchema)]
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
    let rows = s.store.audit_page(before, limit + 1).await?;
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegistryBody {
    /// Plain HTTP (only for registries on a trusted path).
    #[serde(default)]
    insecure: bool,
    /// PEM of CA certificates to trust for this registry.
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    username: Option<String>,
    /// Write-only: never returned.
    #[serde(default)]
    password: Option<String>,
    /// Write-only: never returned.
    #[serde(default)]
    token: Option<String>,
    /// Repository prefixes per partner (`{"acme": ["acme/", "shared/acme-"]}`): a partner
    /// registers only from repositories under its prefixes; a partner without an entry
    /// may not use this registry.
    #[serde(default)]
    partners: std::collections::BTreeMap<String, Vec<String>>,
    /// Other hosts (`host[:port]`) the registry may redirect downloads to (its blob
    /// storage). Redirects anywhere else, and from HTTPS to HTTP, are refused.
    #[serde(default)]
    blob_hosts: Vec<String>,
    /// Hosts of the registry's token service (its `WWW-Authenticate` realm) other than
    /// the registry itself; they receive the registry credentials.
    #[serde(default)]
    token_hosts: Vec<String>,
    /// The registry's host names may resolve to loopback, link-local or private
    /// addresses (an internal registry). Not needed for IP literals or `localhost`.
    #[serde(default)]
    private_addresses: bool,
}

/// A registry the operator configured; its credentials are never returned (only
/// whether they are set).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RegistryView {
    host: String,
    insecure: bool,
    ca_pem_set: bool,
    username: Option<String>,
    credentials_set: bool,
    partners: std::collections::BTreeMap<String, Vec<String>>,
    blob_hosts: Vec<String>,
    token_hosts: Vec<String>,
    private_addresses: bool,
}

fn registry_view(r: &RegistryRow) -> RegistryView {
    RegistryView {
        host: r.host.clone(),
        insecure: r.insecure,
        ca_pem_set: r.ca_pem.is_some(),
        username: r.username.clone(),
        credentials_set: r.secret.is_some(),
        partners: r.partners.clone(),
        blob_hosts: r.blob_hosts.clone(),
        token_hosts: r.token_hosts.clone(),
        private_addresses: r.private_addresses,
    }
}

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
    let after = q.after.unwrap_or_default();
    let items: Vec<RegistryView> = s
        .store
        .registries()
        .await?
        .iter()
        .filter(|r| r.host.as_str() > after.as_str())
        .take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1))
        .map(registry_view)
        .collect();
    Ok(axum::Json(Page::of(items, limit, |r: &RegistryView| r.host.clone())))
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
    let invalid = |field: &str, detail: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-registry", detail).field(field)
    };
    let settings = kiosk_distribution::registry::RegistrySettings {
        host: host.clone(),
        partners: body.partners.clone(),
        blob_hosts: body.blob_hosts.clone(),
        token_hosts: body.token_hosts.clone(),
        ..Default::default()
    };
    if let Err(e) = settings.validate() {
        let field = match e.field {
            "blob-hosts" => "blobHosts",
            "token-hosts" => "tokenHosts",
            other => other,
        };
        return Err(invalid(field, &e.message));
    }
    if body.token.is_some() && (body.username.is_some() || body.password.is_some()) {
        return Err(invalid("token", "give either a token or username and password"));
    }
    if body.password.is_some() && body.username.is_none() {
        return Err(invalid("username", "a password needs a username"));
    }
    if let Some(pem) = &body.ca_pem
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(invalid("caPem", "caPem must hold PEM certificates"));
    }
    let secret = (body.password.is_some() || body.token.is_some()).then(|| {
        let plain = serde_json::to_vec(&RegistrySecret { password: body.password.clone(), token: body.token.clone() })
            .unwrap_or_default();
        s.sealer.seal(&plain, &format!("registry/{host}"))
    });
    let row = RegistryRow {
        host: host.clone(),
        insecure: body.insecure,
        ca_pem: body.ca_pem,
        username: body.username,
        secret,
        partners: body.partners,
        blob_hosts: body.blob_hosts,
        token_hosts: body.token_hosts,
        private_addresses: body.private_addresses,
    };
    s.store.put_registry(&row, &caller.0.actor()).await?;
    Ok(axum::Json(registry_view(&row)))
}

#[utoipa::path(delete, path = "/v1/registries/{host}", tag = "operator",
    responses((status = 204, description = "removed"), (status = 404, description = "`not-found`: no such registry", body = Problem)))]
async fn delete_registry(
    State(s): State<Shared>,
    caller: Caller,
    Path(host): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    if !s.store.delete_registry(&host, &caller.0.actor()).await? {
        return Err(ApiError::not_found(format!("no registry {host:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
