//! The HTTP server (`kiosk serve`): axum handlers over the store, the registry client
//! and the runtime. Handlers never touch a wasmtime Store: calls run on blocking threads
//! through `Runtime`, and no database I/O happens while a Store is held (key-value
//! snapshots are loaded before and committed after a call).

mod admin;
pub mod error;
pub mod serve;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Router, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::OpenApi;

pub use self::error::{ApiError, Json, Path, Problem, Query};
use kiosk_core::lifecycle::{InstallRequest, RegistrySecret, UpgradeRequest};
use kiosk_domain::manifest::Manifest;
use kiosk_domain::metering::UsageEvent;
use kiosk_runtime::world::HOST_API_VERSION;
use kiosk_store::{EntitlementRow, InstallationRow, Principal, RegistryRow, VersionRow};

pub use kiosk_core::lifecycle::Kiosk as AppState;

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

// --- auth ----------------------------------------------------------------------------

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(ApiError::unauthorized());
        };
        match state.store.authenticate(token.trim()).await? {
            Some(p) => Ok(Caller(p)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl Caller {
    fn operator(&self) -> ApiResult<()> {
        match &self.0 {
            Principal::Operator => Ok(()),
            _ => Err(ApiError::forbidden("use the operator API")),
        }
    }

    /// The partner itself (a foreign partner gets 404: existence is not revealed).
    fn partner(&self, partner: &str) -> ApiResult<()> {
        match &self.0 {
            Principal::Partner(p) if p == partner => Ok(()),
            Principal::Partner(_) => Err(ApiError::not_found(format!("no partner {partner:?}"))),
            _ => Err(ApiError::forbidden("use the partner API")),
        }
    }

    fn tenant(&self, tenant: &str) -> ApiResult<()> {
        match &self.0 {
            Principal::Tenant(t) if t == tenant => Ok(()),
            Principal::Tenant(_) => Err(ApiError::not_found(format!("no tenant {tenant:?}"))),
            _ => Err(ApiError::forbidden("use the tenant API")),
        }
    }
}

// --- router --------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiosk API", description = "WebAssembly plugin host for marketplace apps (SPEC §8)."),
    paths(
        healthz, readyz, list_registries, put_registry, delete_registry, create_partner, add_certificate, create_tenant, create_token, set_entitlement, audit_log,
        register_version, partner_apps, partner_post_usage, partner_usage, tenant_usage, operator_usage, yank_version, categories, catalog_apps, catalog_app, catalog_versions,
        catalog_version, install, list_installations, get_installation, configure, upgrade, uninstall, invoke,
        admin::list_certificates, admin::remove_certificate, admin::list_tokens, admin::revoke_token, admin::quarantined_versions,
        admin::operator_yank, admin::operator_unyank, admin::operator_quarantine, admin::operator_release
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth)
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route of the API.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
        .route("/v1/partners", post(create_partner))
        .route("/v1/partners/{partner}/certificates", post(add_certificate).get(admin::list_certificates))
        .route("/v1/partners/{partner}/certificates/{fingerprint}", axum::routing::delete(admin::remove_certificate))
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tokens", post(create_token).get(admin::list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(admin::revoke_token))
        .route("/v1/versions/quarantined", get(admin::quarantined_versions))
        .route("/v1/apps/{partner}/{name}/versions/{version}/yank", post(admin::operator_yank))
        .route("/v1/apps/{partner}/{name}/versions/{version}/unyank", post(admin::operator_unyank))
        .route("/v1/apps/{partner}/{name}/versions/{version}/quarantine", post(admin::operator_quarantine))
        .route("/v1/apps/{partner}/{name}/versions/{version}/release", post(admin::operator_release))
        .route("/v1/entitlements/{tenant}/{partner}/{name}", axum::routing::put(set_entitlement))
        .route("/v1/audit", get(audit_log))
        .route("/v1/registries", get(list_registries))
        .route("/v1/registries/{host}", axum::routing::put(put_registry).delete(delete_registry))
        .route("/v1/partners/{partner}/apps", get(partner_apps))
        .route(
            "/v1/partners/{partner}/usage",
            post(partner_post_usage)
                .layer(axum::extract::DefaultBodyLimit::max(error::USAGE_BATCH_BODY_LIMIT_BYTES))
                .get(partner_usage),
        )
        .route("/v1/tenants/{tenant}/usage", get(tenant_usage))
        .route("/v1/usage", get(operator_usage))
        .route("/v1/partners/{partner}/apps/{name}/versions", post(register_version))
        .route("/v1/partners/{partner}/apps/{name}/versions/{version}/yank", post(yank_version))
        .route("/v1/catalog/categories", get(categories))
        .route("/v1/catalog/apps", get(catalog_apps))
        .route("/v1/catalog/apps/{partner}/{name}", get(catalog_app))
        .route("/v1/catalog/apps/{partner}/{name}/versions", get(catalog_versions))
        .route("/v1/catalog/apps/{partner}/{name}/versions/{version}", get(catalog_version))
        .route("/v1/tenants/{tenant}/installations", post(install).get(list_installations))
        .route("/v1/tenants/{tenant}/installations/{id}", get(get_installation).patch(configure).delete(uninstall))
        .route("/v1/tenants/{tenant}/installations/{id}/upgrade", post(upgrade))
        .route("/v1/tenants/{tenant}/installations/{id}/invoke/{operation}", post(invoke))
        // Routing rejections are problems too (SPEC §8), never axum's empty or plain-text bodies.
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route does not take that method")
        })
        // Bodies are read by the `Json` extractor, which answers 413 as a problem.
        .layer(axum::extract::DefaultBodyLimit::max(error::BODY_LIMIT_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "database reachable")))]
async fn readyz(State(s): State<Shared>) -> ApiResult<&'static str> {
    s.store.ping().await?;
    Ok("ready")
}

// --- operator ------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPartner {
    name: String,
    #[serde(default)]
    display: Option<String>,
}

fn slug(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
            format!("{field} {value:?} must be 1-64 of a-z, 0-9, '-'"),
        )
        .field(field))
    }
}

#[utoipa::path(post, path = "/v1/partners", request_body = NewPartner, responses((status = 201), (status = 409, body = Problem)))]
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
    Ok((StatusCode::CREATED, axum::Json(json!({"name": body.name}))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCertificate {
    /// ASCII-armoured OpenPGP public certificate.
    certificate: String,
}

/// Certificates (new ones, or new copies of registered ones: merged), or a revocation
/// certificate of a registered one. A fingerprint registered for another partner is a
/// 409 and nothing is written; a revoked certificate quarantines what it signed.
#[utoipa::path(post, path = "/v1/partners/{partner}/certificates", request_body = NewCertificate,
    responses((status = 201, description = "registered"), (status = 200, description = "registered copies updated (e.g. revoked)"),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn add_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(body): Json<NewCertificate>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    admin::add_certificates(&s, &caller.0.actor(), &partner, &body.certificate).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    #[serde(default)]
    display: Option<String>,
}

#[utoipa::path(post, path = "/v1/tenants", request_body = NewTenant, responses((status = 201), (status = 409, body = Problem)))]
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
    Ok((StatusCode::CREATED, axum::Json(json!({"id": body.id}))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewToken {
    /// `operator`, `partner` or `tenant`.
    role: String,
    /// The partner name or tenant id (not for operator tokens).
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    label: Option<String>,
    /// When the token stops working (ms since the Unix epoch); never when absent.
    #[serde(default)]
    expires_ms: Option<i64>,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = NewToken, responses((status = 201, description = "the secret, shown once")))]
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
        axum::Json(
            json!({"id": id, "token": secret, "role": body.role, "scope": body.scope, "expiresMs": body.expires_ms}),
        ),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EntitlementBody {
    #[serde(default)]
    expires_ms: Option<i64>,
    #[serde(default)]
    revoked: bool,
}

#[utoipa::path(put, path = "/v1/entitlements/{tenant}/{partner}/{name}", request_body = EntitlementBody, responses((status = 200)))]
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
    let app = format!("{partner}/{name}");
    if s.store.versions(&app).await?.is_empty() {
        return Err(ApiError::not_found(format!("no app {app:?}")));
    }
    let row = EntitlementRow { tenant, app, expires_ms: body.expires_ms, revoked: body.revoked };
    s.store.set_entitlement(&row, &caller.0.actor()).await?;
    Ok(axum::Json(json!({"tenant": row.tenant, "app": row.app, "expiresMs": row.expires_ms, "revoked": row.revoked})))
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit", responses((status = 200)))]
async fn audit_log(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.store.audit_log(q.limit.unwrap_or(100).clamp(1, 1000)).await?))
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

fn registry_view(r: &RegistryRow) -> Value {
    json!({"host": r.host, "insecure": r.insecure, "caPemSet": r.ca_pem.is_some(), "username": r.username,
           "credentialsSet": r.secret.is_some(), "partners": r.partners, "blobHosts": r.blob_hosts,
           "tokenHosts": r.token_hosts, "privateAddresses": r.private_addresses})
}

#[utoipa::path(get, path = "/v1/registries", responses((status = 200, description = "registries; credentials are never returned")))]
async fn list_registries(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.store.registries().await?.iter().map(registry_view).collect::<Vec<_>>()))
}

#[utoipa::path(put, path = "/v1/registries/{host}", request_body = RegistryBody, responses((status = 200), (status = 422, body = Problem)))]
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

#[utoipa::path(delete, path = "/v1/registries/{host}", responses((status = 204), (status = 404, body = Problem)))]
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

// --- partner -------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterVersion {
    /// `host/repository:tag`, on a registry the operator configured and under a
    /// repository prefix the operator assigned to the partner there. (`oci-layout:`
    /// directories are the operator's, through the CLI, never a partner's.)
    reference: String,
}

#[utoipa::path(post, path = "/v1/partners/{partner}/apps/{name}/versions", request_body = RegisterVersion,
    responses((status = 201), (status = 422, body = Problem, description = "artifact refused; also `registry-not-allowed` (unconfigured registry, repository outside the partner's prefixes, a refused redirect, token realm or address) and `layout-not-allowed`"),
        (status = 409, body = Problem), (status = 502, body = Problem, description = "`registry-unavailable` or `registry-refused`")))]
async fn register_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Json(body): Json<RegisterVersion>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let registered = s.register_from_registry(&partner, &name, &body.reference, &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(registered)))
}

#[utoipa::path(get, path = "/v1/partners/{partner}/apps", responses((status = 200)))]
async fn partner_apps(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let mut out = Vec::new();
    for (id, display, _, _) in s.store.apps().await?.into_iter().filter(|a| a.0.starts_with(&format!("{partner}/"))) {
        let versions: Vec<_> = s.store.versions(&id).await?.iter().map(version_summary).collect();
        out.push(json!({"app": id, "name": display, "versions": versions}));
    }
    Ok(axum::Json(out))
}

#[utoipa::path(post, path = "/v1/partners/{partner}/apps/{name}/versions/{version}/yank", responses((status = 200)))]
async fn yank_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let app = format!("{partner}/{name}");
    if !s.store.set_yanked(&app, &version, true, &caller.0.actor()).await? {
        return Err(ApiError::not_found(format!("no version {app}@{version}")));
    }
    Ok(axum::Json(json!({"app": app, "version": version, "yanked": true})))
}

// --- catalog -------------------------------------------------------------------------

fn version_summary(v: &VersionRow) -> Value {
    json!({"version": v.version, "yanked": v.yanked, "quarantined": v.quarantined,
           "quarantineReason": v.quarantine_reason, "digest": v.manifest_digest, "createdMs": v.created_ms})
}

#[utoipa::path(get, path = "/v1/catalog/categories", responses((status = 200)))]
async fn categories(State(s): State<Shared>, _caller: Caller) -> ApiResult<impl IntoResponse> {
    let mut all: Vec<String> = s.store.apps().await?.into_iter().flat_map(|a| a.3).collect();
    all.sort();
    all.dedup();
    Ok(axum::Json(all))
}

#[derive(Deserialize)]
struct CatalogQuery {
    category: Option<String>,
    q: Option<String>,
}

#[utoipa::path(get, path = "/v1/catalog/apps", params(("category" = Option<String>, Query), ("q" = Option<String>, Query)), responses((status = 200)))]
async fn catalog_apps(
    State(s): State<Shared>,
    _caller: Caller,
    Query(q): Query<CatalogQuery>,
) -> ApiResult<impl IntoResponse> {
    let needle = q.q.map(|t| t.to_lowercase());
    let apps: Vec<_> = s
        .store
        .apps()
        .await?
        .into_iter()
        .filter(|(_, _, _, cats)| q.category.as_ref().is_none_or(|c| cats.contains(c)))
        .filter(|(id, display, description, _)| {
            needle.as_ref().is_none_or(|n| [id, display, description].iter().any(|f| f.to_lowercase().contains(n)))
        })
        .map(|(id, display, description, cats)| json!({"app": id, "name": display, "description": description, "categories": cats}))
        .collect();
    Ok(axum::Json(apps))
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}", responses((status = 200), (status = 404, body = Problem)))]
async fn catalog_app(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app, versions) = s.app_versions(&partner, &name).await?;
    // What an install without a version gets: neither yanked nor quarantined.
    let latest = kiosk_core::lifecycle::resolve_version(&app, &versions, None, None).ok().map(|v| v.version);
    let manifest: Value = serde_json::from_str(&versions[0].manifest).unwrap_or_default();
    Ok(axum::Json(json!({
        "app": app, "name": manifest["name"], "description": manifest["description"],
        "categories": manifest["categories"], "latest": latest,
    })))
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions", responses((status = 200)))]
async fn catalog_versions(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (_, versions) = s.app_versions(&partner, &name).await?;
    Ok(axum::Json(versions.iter().map(version_summary).collect::<Vec<_>>()))
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions/{version}", responses((status = 200)))]
async fn catalog_version(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app, versions) = s.app_versions(&partner, &name).await?;
    let v = versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::not_found(format!("no version {app}@{version}")).field("version"))?;
    let manifest: Value = serde_json::from_str(&v.manifest).unwrap_or_default();
    Ok(axum::Json(json!({
        "app": app, "version": v.version, "yanked": v.yanked, "quarantined": v.quarantined,
        "quarantineReason": v.quarantine_reason, "digest": v.manifest_digest, "signer": v.signer,
        "hostApi": manifest["hostApi"], "skus": manifest["skus"], "configSchema": manifest["config"],
        "licensing": manifest["licensing"], "capabilities": manifest["capabilities"], "manifest": manifest,
    })))
}

// --- tenant --------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    /// `partner/name`.
    app: String,
    /// An exact version, or a semver range such as `^1.4`.
    #[serde(default)]
    version: Option<String>,
    /// A track such as `1.4`: the highest version in it.
    #[serde(default)]
    track: Option<String>,
    /// Let a range, a track or no version pick a prerelease (an exact one needs no flag).
    #[serde(default, rename = "includePrerelease")]
    include_prerelease: bool,
    #[serde(default)]
    config: Option<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct InstallationView {
    id: String,
    tenant: String,
    app: String,
    version: String,
    config: Value,
    /// JSON pointers of the secret values that are set (their values are never returned).
    secrets_set: Vec<String>,
    created_ms: i64,
    updated_ms: i64,
    /// Bumped by every configure and upgrade; a request that lost a race with another
    /// writer of the installation is a 409 `installation-changed`.
    row_version: i64,
}

fn view(s: &AppState, row: &InstallationRow) -> InstallationView {
    InstallationView {
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        app: row.app.clone(),
        version: row.version.clone(),
        config: serde_json::from_str(&row.config).unwrap_or_default(),
        secrets_set: s.secrets_set(row),
        created_ms: row.created_ms,
        updated_ms: row.updated_ms,
        row_version: row.row_version,
    }
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations", request_body = InstallBody,
    responses((status = 201), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn install(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<InstallBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let request = InstallRequest {
        app: body.app,
        version: body.version,
        track: body.track,
        include_prerelease: body.include_prerelease,
        config: body.config,
        id: None,
    };
    let row = s.install(&tenant, request, &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&s, &row))))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations", responses((status = 200)))]
async fn list_installations(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let rows = s.store.installations(&tenant).await?;
    Ok(axum::Json(rows.iter().map(|r| view(&s, r)).collect::<Vec<_>>()))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}", responses((status = 200), (status = 404, body = Problem)))]
async fn get_installation(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    Ok(axum::Json(view(&s, &s.installation(&tenant, &id).await?)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigureBody {
    /// The new configuration; secret values left out keep their current value.
    config: Value,
}

#[utoipa::path(patch, path = "/v1/tenants/{tenant}/installations/{id}", request_body = ConfigureBody, responses((status = 200), (status = 422, body = Problem)))]
async fn configure(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(body): Json<ConfigureBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let row = s.configure(&tenant, &id, body.config, &caller.0.actor()).await?;
    Ok(axum::Json(view(&s, &row)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpgradeBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    track: Option<String>,
    /// Allow moving to a lower version.
    #[serde(default)]
    allow_downgrade: bool,
    /// Allow moving to another major version (for 0.x, another minor).
    #[serde(default)]
    allow_major: bool,
    /// Let a range, a track or no version pick a prerelease.
    #[serde(default)]
    include_prerelease: bool,
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations/{id}/upgrade", request_body = UpgradeBody, responses((status = 200), (status = 422, body = Problem)))]
async fn upgrade(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(body): Json<UpgradeBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let request = UpgradeRequest {
        version: body.version,
        track: body.track,
        allow_downgrade: body.allow_downgrade,
        allow_major: body.allow_major,
        include_prerelease: body.include_prerelease,
    };
    let row = s.upgrade(&tenant, &id, request, &caller.0.actor()).await?;
    Ok(axum::Json(view(&s, &row)))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/installations/{id}",
    responses((status = 204, description = "uninstalled; the app's hook succeeded"),
              (status = 200, description = "uninstalled; the app's hook refused or failed, which is reported here and audited"),
              (status = 404, body = Problem)))]
async fn uninstall(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    match s.uninstall(&tenant, &id, &caller.0.actor()).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(detail) => Ok((
            StatusCode::OK,
            axum::Json(json!({"uninstalled": true, "hook": {"succeeded": false, "detail": detail}})),
        )
            .into_response()),
    }
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations/{id}/invoke/{operation}",
    responses((status = 200, description = "the operation's output and metered usage"), (status = 422, body = Problem), (status = 502, body = Problem)))]
async fn invoke(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id, operation)): Path<(String, String, String)>,
    Json(input): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let invoked = s.invoke(&tenant, &id, &operation, &input).await?;
    let usage: Vec<Value> = invoked.usage.iter().map(usage_view).collect();
    Ok(axum::Json(json!({"output": invoked.output, "usage": usage})))
}

fn usage_view(e: &UsageEvent) -> Value {
    json!({"sku": e.sku, "quantity": e.quantity, "source": e.source, "atMs": e.at_ms})
}

// --- usage (SPEC §7) -------------------------------------------------------------------

/// How far in the future a partner's usage timestamp may be (clock skew).
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// Most records in one partner batch (SPEC §7: every source has a cap). A day of a
/// busy partner's batches fits; one batch is validated and committed in well under 2 s.
pub const MAX_BATCH_RECORDS: usize = 20_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PartnerUsageBatch {
    records: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PartnerUsageRecord {
    tenant: String,
    app: String,
    sku: String,
    quantity: Value,
    /// Milliseconds since the Unix epoch.
    timestamp_ms: i64,
    idempotency_key: String,
    /// The installation the usage belongs to; needed when the tenant has several.
    #[serde(default)]
    installation: Option<String>,
}

#[utoipa::path(post, path = "/v1/partners/{partner}/usage", request_body = PartnerUsageBatch,
    responses((status = 200, description = "one result per record: recorded, duplicate, conflict or refused with a reason")))]
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
    let mut results: Vec<Value> = vec![Value::Null; batch.records.len()];
    let mut accepted: Vec<(usize, UsageEvent)> = Vec::new();
    let mut cache = BatchCache::default();
    for (i, raw) in batch.records.into_iter().enumerate() {
        match validate_partner_record(&s, &mut cache, &partner, raw, now, window_ms).await? {
            Ok(event) => accepted.push((i, event)),
            Err(reason) => results[i] = json!({"index": i, "status": "refused", "reason": reason}),
        }
    }
    let outcomes =
        s.ledger.record(accepted.iter().map(|(_, e)| e.clone()).collect()).await.map_err(ApiError::internal)?;
    for ((i, _), outcome) in accepted.iter().zip(outcomes) {
        let mut v = serde_json::to_value(&outcome).unwrap_or_default();
        v["index"] = json!(i);
        if let kiosk_store::ledger::Recorded::Conflict { recorded_quantity } = outcome {
            v["reason"] = json!(format!("idempotency key already recorded with quantity {recorded_quantity}"));
        }
        results[*i] = v;
    }
    Ok(axum::Json(json!({"results": results})))
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Start of the period, ms since the epoch, at least 0 (default: 30 days ago).
    from_ms: Option<i64>,
    /// End of the period, exclusive (default: now + 5 min); at most 400 days after
    /// `fromMs` by hour, 10 years by day.
    to_ms: Option<i64>,
    /// `hour` or `day` (default `hour`).
    granularity: Option<String>,
    /// `json` (default) or `csv`: CSV gives one line per record with its id.
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
/// of stored quantities (each below 2^64) never wraps.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageRecord {
    id: String,
    period_start_ms: i64,
    tenant: String,
    app: String,
    sku: String,
    quantity: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageReport {
    from_ms: i64,
    to_ms: i64,
    usage: Vec<UsageRecord>,
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
        if tenant.is_some_and(|t| t != inst.tenant) || partner.is_some_and(|p| !inst.app.starts_with(&format!("{p}/")))
        {
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

#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", params(UsageQuery), responses((status = 200), (status = 422, body = Problem)))]
async fn tenant_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    usage_report(&s, q, Some(&tenant), None).await
}

#[utoipa::path(get, path = "/v1/partners/{partner}/usage", params(UsageQuery), responses((status = 200), (status = 422, body = Problem)))]
async fn partner_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    usage_report(&s, q, None, Some(&partner)).await
}

#[utoipa::path(get, path = "/v1/usage", params(UsageQuery), responses((status = 200), (status = 422, body = Problem)))]
async fn operator_usage(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    usage_report(&s, q, None, None).await
}
