//! The HTTP server (`kiosk serve`): axum handlers over the store, the registry client
//! and the runtime. Handlers never touch a wasmtime Store: calls run on blocking threads
//! through `Runtime`, and no database I/O happens while a Store is held (key-value
//! snapshots are loaded before and committed after a call).

mod admin;
pub mod error;
pub mod seal;
pub mod serve;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Router, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

pub use self::error::{ApiError, Json, Problem};
use self::seal::Sealer;
use crate::artifact::{ArtifactError, ArtifactRef, LayoutSource, fetch_verified};
use crate::config::OperatorConfig;
use crate::digest::Digest;
use crate::error::CallFailure;
use crate::manifest::{ConfigSchema, Manifest};
use crate::metering::UsageEvent;
use crate::runtime::{AppRefusal, AppVersion, CallOutcome, Installation, Runtime};
use crate::store::{EntitlementRow, InstallationRow, NotInstallable, Principal, RegistryRow, Store, VersionRow};
use crate::trust::TrustStore;
use crate::world::HOST_API_VERSION;

/// Shared state of the server.
pub struct AppState {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub config: Arc<OperatorConfig>,
    pub sealer: Sealer,
    pub ledger: crate::ledger::Ledger,
    /// Loaded app versions, by (app, version).
    loaded: Mutex<HashMap<(String, String), AppVersion>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

impl AppState {
    pub fn new(
        store: Store,
        runtime: Arc<Runtime>,
        config: Arc<OperatorConfig>,
        sealer: Sealer,
        ledger: crate::ledger::Ledger,
    ) -> Self {
        Self { store, runtime, config, sealer, ledger, loaded: Mutex::default() }
    }

    /// The trust store: certificates in the database plus those of the operator config.
    /// Rebuilding it also quarantines what a signer found revoked or removed signed
    /// (`admin::reconcile`).
    async fn trust(&self) -> ApiResult<TrustStore> {
        let mut trust = self.config.trust_store().map_err(ApiError::internal)?;
        for row in self.store.certificate_rows().await? {
            trust.add_fingerprint(&row.partner, &row.cert, &row.fingerprint).map_err(ApiError::internal)?;
        }
        admin::reconcile(self, &trust).await?;
        Ok(trust)
    }

    /// The runnable form of a registered version (compiled once, then cached).
    async fn app_version(&self, row: &VersionRow) -> ApiResult<AppVersion> {
        let key = (row.app.clone(), row.version.clone());
        if let Some(app) = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(app.clone());
        }
        let manifest = Manifest::parse(row.manifest.as_bytes(), &HOST_API_VERSION).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "host-api-mismatch", e.to_string()).field("hostApi")
        })?;
        let bytes = self
            .store
            .component(&row.component_digest)
            .await?
            .ok_or_else(|| ApiError::internal(format!("component {} missing", row.component_digest)))?;
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let app = self.runtime.prepare(manifest, Arc::new(loaded));
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(key, app.clone());
        Ok(app)
    }
}

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
        .route("/v1/partners/{partner}/usage", post(partner_post_usage).get(partner_usage))
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
        .layer(tower_http::limit::RequestBodyLimitLayer::new(2 * 1024 * 1024))
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
    if !s.store.create_partner(&body.name, body.display.as_deref().unwrap_or(&body.name)).await? {
        return Err(
            ApiError::new(StatusCode::CONFLICT, "exists", format!("partner {:?} exists", body.name)).field("name")
        );
    }
    s.store.audit(&caller.0.actor(), "partner.create", &body.name, "").await?;
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
    if !s.store.create_tenant(&body.id, body.display.as_deref().unwrap_or(&body.id)).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("tenant {:?} exists", body.id)).field("id"));
    }
    s.store.audit(&caller.0.actor(), "tenant.create", &body.id, "").await?;
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
    if let Some(at) = body.expires_ms.filter(|at| *at <= crate::metering::now_ms() as i64) {
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
}

#[derive(Serialize, Deserialize, Default)]
struct RegistrySecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn registry_view(r: &RegistryRow) -> Value {
    json!({"host": r.host, "insecure": r.insecure, "caPemSet": r.ca_pem.is_some(), "username": r.username,
           "credentialsSet": r.secret.is_some()})
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
    if host.is_empty() || host.contains('/') {
        return Err(invalid("host", "host must be host[:port]"));
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

impl AppState {
    /// Settings for `host`: the operator API's entry, else the config file's.
    async fn registry_settings(&self, host: &str) -> ApiResult<crate::registry::RegistrySettings> {
        let Some(row) = self.store.registries().await?.into_iter().find(|r| r.host == host) else {
            return Ok(self.config.registry(host));
        };
        let secret: RegistrySecret = match &row.secret {
            Some(sealed) => {
                let plain = self.sealer.open(sealed, &format!("registry/{host}")).map_err(ApiError::internal)?;
                serde_json::from_slice(&plain).map_err(ApiError::internal)?
            }
            None => RegistrySecret::default(),
        };
        Ok(crate::registry::RegistrySettings {
            host: row.host,
            insecure: row.insecure,
            ca_bundle: None,
            ca_pem: row.ca_pem,
            username: row.username,
            password: secret.password,
            token: secret.token,
        })
    }
}

// --- partner -------------------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterVersion {
    /// `host/repository:tag`, or `oci-layout:<dir>:<tag>` for air-gapped installs.
    reference: String,
}

fn artifact_problem(e: ArtifactError) -> ApiError {
    let (status, kind) = match &e {
        ArtifactError::TagNotFound { .. } => (StatusCode::NOT_FOUND, "tag-not-found"),
        ArtifactError::MovedTag { .. } => (StatusCode::CONFLICT, "moved-tag"),
        ArtifactError::Signature(_) => (StatusCode::UNPROCESSABLE_ENTITY, "signature-refused"),
        ArtifactError::Manifest(crate::manifest::ManifestError::HostApi { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "host-api-mismatch")
        }
        ArtifactError::Manifest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "manifest-invalid"),
        ArtifactError::Source { .. } => (StatusCode::BAD_GATEWAY, "registry-unavailable"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "artifact-refused"),
    };
    ApiError::new(status, kind, e.to_string()).field("reference")
}

#[utoipa::path(post, path = "/v1/partners/{partner}/apps/{name}/versions", request_body = RegisterVersion,
    responses((status = 201), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn register_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Json(body): Json<RegisterVersion>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let app = format!("{partner}/{name}");
    let reference = body.reference.trim();
    let trust = s.trust().await?;
    let caps = s.config.artifacts;
    let parsed = ArtifactRef::parse(reference).map_err(|detail| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-reference", detail).field("reference")
    })?;
    let tag = parsed.tag().to_string();
    let pinned = pinned(&s, &app, &tag).await?;
    let artifact = match &parsed {
        ArtifactRef::Layout { dir, tag } => {
            fetch_verified(&LayoutSource::new(dir), &app, tag, &trust, &caps, &HOST_API_VERSION, pinned.as_ref()).await
        }
        ArtifactRef::Registry { host, repository, tag } => {
            let settings = s.registry_settings(host).await?;
            let registry = crate::registry::Registry::new(&settings, s.config.transfer).map_err(ApiError::internal)?;
            let source = registry.repository(repository);
            fetch_verified(&source, &app, tag, &trust, &caps, &HOST_API_VERSION, pinned.as_ref()).await
        }
    };
    let artifact = artifact.map_err(artifact_problem)?;
    if s.store.version(&app, &tag).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "version-exists",
            format!("{app}@{tag} is already registered"),
        ));
    }
    let manifest_json = String::from_utf8_lossy(&artifact.manifest_bytes).into_owned();
    s.store
        .register_version(
            &artifact.manifest,
            &manifest_json,
            artifact.digest.as_str(),
            artifact.component_digest.as_str(),
            &artifact.component,
            &artifact.signers.manifest.fingerprint,
            reference,
            &caller.0.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "app": app, "version": tag, "digest": artifact.digest.as_str(),
            "componentDigest": artifact.component_digest.as_str(), "signer": artifact.signers.manifest.fingerprint,
        })),
    ))
}

async fn pinned(s: &AppState, app: &str, tag: &str) -> ApiResult<Option<Digest>> {
    Ok(s.store.version(app, tag).await?.and_then(|v| Digest::parse(&v.manifest_digest)))
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

async fn app_versions(s: &AppState, partner: &str, name: &str) -> ApiResult<(String, Vec<VersionRow>)> {
    let app = format!("{partner}/{name}");
    let versions = s.store.versions(&app).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no app {app:?}")).field("app"));
    }
    Ok((app, versions))
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}", responses((status = 200), (status = 404, body = Problem)))]
async fn catalog_app(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app, versions) = app_versions(&s, &partner, &name).await?;
    // What an install without a version gets: neither yanked nor quarantined.
    let latest = resolve_version(&app, &versions, None, None).ok().map(|v| v.version);
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
    let (_, versions) = app_versions(&s, &partner, &name).await?;
    Ok(axum::Json(versions.iter().map(version_summary).collect::<Vec<_>>()))
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions/{version}", responses((status = 200)))]
async fn catalog_version(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (app, versions) = app_versions(&s, &partner, &name).await?;
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
    #[serde(default)]
    config: Option<Value>,
}

/// Refuses a version that takes no new installs or upgrades: yanked, or quarantined
/// (the problem names why, e.g. the revoked certificate that signed it).
fn installable(app: &str, v: &VersionRow) -> ApiResult<()> {
    if v.quarantined {
        let why = v.quarantine_reason.as_deref().unwrap_or("quarantined");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "version-quarantined",
            format!("{app}@{} is quarantined ({why}): no new installs or upgrades", v.version),
        )
        .field("version"));
    }
    if v.yanked {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "version-yanked",
            format!("{app}@{} is yanked: no new installs", v.version),
        )
        .field("version"));
    }
    Ok(())
}

/// Picks the version an install or upgrade asks for. Ranges, tracks and `latest` skip
/// yanked and quarantined versions; an exact one that is either is refused.
fn resolve_version(
    app: &str,
    versions: &[VersionRow],
    version: Option<&str>,
    track: Option<&str>,
) -> ApiResult<VersionRow> {
    let unprocessable =
        |kind, detail: String, field: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, kind, detail).field(field);
    if let Some(exact) = version.filter(|v| semver::Version::parse(v).is_ok()) {
        let v = versions
            .iter()
            .find(|v| v.version == exact)
            .ok_or_else(|| ApiError::not_found(format!("{app} has no version {exact}")).field("version"))?;
        installable(app, v)?;
        return Ok(v.clone());
    }
    let (req, field) = match (version, track) {
        (Some(range), None) => (
            semver::VersionReq::parse(range)
                .map_err(|e| unprocessable("invalid-range", format!("version {range:?}: {e}"), "version"))?,
            "version",
        ),
        (None, Some(track)) => (
            semver::VersionReq::parse(&format!("={track}"))
                .map_err(|e| unprocessable("invalid-track", format!("track {track:?}: {e}"), "track"))?,
            "track",
        ),
        (None, None) => (semver::VersionReq::STAR, "version"),
        (Some(_), Some(_)) => {
            return Err(unprocessable("invalid-request", "give either version or track, not both".into(), "track"));
        }
    };
    let matching = || {
        versions
            .iter()
            .filter_map(|v| semver::Version::parse(&v.version).ok().filter(|sv| req.matches(sv)).map(|sv| (sv, v)))
    };
    if let Some((_, v)) = matching().filter(|(_, v)| !v.yanked && !v.quarantined).max_by(|a, b| a.0.cmp(&b.0)) {
        return Ok(v.clone());
    }
    // Nothing installable: name the quarantine if that is what stands in the way.
    if let Some((_, v)) = matching().filter(|(_, v)| !v.yanked).max_by(|a, b| a.0.cmp(&b.0)) {
        installable(app, v)?;
    }
    let detail = format!("no version of {app} that is neither yanked nor quarantined matches {req}");
    Err(unprocessable("no-matching-version", detail, field))
}

/// Splits a resolved config into its public part and its secret (`writeOnly`) part.
fn split_secrets(config: &Value, secret_names: &[String]) -> (Value, Map<String, Value>) {
    let mut public = config.clone();
    let mut secrets = Map::new();
    if let Some(obj) = public.as_object_mut() {
        for name in secret_names {
            if let Some(v) = obj.remove(name) {
                secrets.insert(name.clone(), v);
            }
        }
    }
    (public, secrets)
}

/// A call that did not complete, as a problem: admission refusals are 429 (the tenant's
/// own limits) or 503 (no sandbox slot) with `Retry-After`; a call too big for its
/// limits is 413; a host storage failure is 503; the app's own failure (a limit it hit,
/// a trap) is 502. Every detail names the limit.
fn call_problem(e: CallFailure) -> ApiError {
    use crate::admission::Refusal;
    use crate::error::CallErrorKind as K;
    match &e.kind {
        K::Busy(refusal) => {
            let (status, kind) = match refusal {
                Refusal::TenantConcurrency { .. } => (StatusCode::TOO_MANY_REQUESTS, "tenant-concurrency-limit"),
                Refusal::TenantRate { .. } => (StatusCode::TOO_MANY_REQUESTS, "tenant-rate-limit"),
                Refusal::NoSlot { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no-sandbox-slot"),
            };
            ApiError::new(status, kind, refusal.to_string()).retry_after(refusal.retry_after_s())
        }
        K::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", e.to_string()).retry_after(1)
        }
        K::InputTooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "input-too-large", e.to_string()),
        K::Storage(_) | K::Metering(_) => {
            tracing::error!(failure = %e, "a call could not commit its effects");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage-unavailable", e.to_string()).retry_after(1)
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "app-failed", e.to_string()),
    }
}

fn refusal_problem(step: &str, r: &AppRefusal) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "app-refused", format!("{step}: {} ({})", r.message, r.code))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstallationView {
    id: String,
    tenant: String,
    app: String,
    version: String,
    config: Value,
    /// Names of secret values that are set (their values are never returned).
    secrets_set: Vec<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl AppState {
    fn view(&self, row: &InstallationRow) -> InstallationView {
        let secrets_set = self.open_secrets(row).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        InstallationView {
            id: row.id.clone(),
            tenant: row.tenant.clone(),
            app: row.app.clone(),
            version: row.version.clone(),
            config: serde_json::from_str(&row.config).unwrap_or_default(),
            secrets_set,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        }
    }

    fn open_secrets(&self, row: &InstallationRow) -> ApiResult<Map<String, Value>> {
        let plain =
            self.sealer.open(&row.secrets, &format!("{}/{}", row.tenant, row.id)).map_err(ApiError::internal)?;
        serde_json::from_slice(&plain).map_err(ApiError::internal)
    }

    /// The version an installation runs, ready to call.
    pub(crate) async fn installed_app(&self, row: &InstallationRow) -> ApiResult<AppVersion> {
        let version = self
            .store
            .version(&row.app, &row.version)
            .await?
            .ok_or_else(|| ApiError::internal(format!("installed version {}@{} missing", row.app, row.version)))?;
        self.app_version(&version).await
    }

    /// Stores `config` on the row: the public part as JSON, the secret part sealed.
    fn set_config(&self, row: &mut InstallationRow, config: &Value, secret_names: &[String]) {
        let (public, secrets) = split_secrets(config, secret_names);
        row.config = public.to_string();
        row.secrets =
            self.sealer.seal(Value::Object(secrets).to_string().as_bytes(), &format!("{}/{}", row.tenant, row.id));
    }

    /// The full config the app sees: public part plus opened secrets.
    fn full_config(&self, row: &InstallationRow) -> ApiResult<Value> {
        let mut config: Value = serde_json::from_str(&row.config).map_err(ApiError::internal)?;
        if let Some(obj) = config.as_object_mut() {
            obj.extend(self.open_secrets(row)?);
        }
        Ok(config)
    }

    async fn check_entitlement(&self, tenant: &str, app: &AppVersion) -> ApiResult<()> {
        if !app.manifest.licensing.requires_entitlement {
            return Ok(());
        }
        let forbidden = |kind, detail: String| ApiError::new(StatusCode::FORBIDDEN, kind, detail).field("app");
        match self.store.entitlement(tenant, &app.manifest.app).await? {
            None => Err(forbidden(
                "entitlement-missing",
                format!("tenant {tenant} has no licence for {}", app.manifest.app),
            )),
            Some(e) if e.revoked => Err(forbidden(
                "entitlement-revoked",
                format!("the licence of tenant {tenant} for {} was revoked", app.manifest.app),
            )),
            Some(e) if e.expires_ms.is_some_and(|x| x <= crate::metering::now_ms() as i64) => Err(forbidden(
                "entitlement-expired",
                format!("the licence of tenant {tenant} for {} has expired", app.manifest.app),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// How long validating one configuration may take. The schema's patterns run in linear
/// time and its size is capped at registration, so this is a backstop, not a tuning knob.
const CONFIG_VALIDATION_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies defaults and validates `config` against the app's schema, off the async
/// workers (a blocking thread) and within `CONFIG_VALIDATION_BUDGET`.
async fn resolve_config(app: &AppVersion, config: Option<Value>) -> ApiResult<(Value, Vec<String>)> {
    let schema_json = app.manifest.config.clone();
    let work = tokio::task::spawn_blocking(move || {
        let schema = ConfigSchema::compile(&schema_json).map_err(ApiError::internal)?;
        let config = config.unwrap_or_else(|| json!({}));
        let resolved = schema.resolve(config).map_err(|e| {
            let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "config-invalid", e.to_string());
            err.field = e.problems.first().map(|p| format!("config{}", p.split(':').next().unwrap_or("")));
            err.errors = e.problems;
            err
        })?;
        Ok((resolved, schema.secret_properties()))
    });
    match tokio::time::timeout(CONFIG_VALIDATION_BUDGET, work).await {
        Ok(joined) => joined.map_err(ApiError::internal)?,
        Err(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config-validation-timeout",
            format!(
                "validating the configuration against the schema of {} took longer than {} ms",
                app.manifest.app,
                CONFIG_VALIDATION_BUDGET.as_millis()
            ),
        )
        .field("config")),
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
    let (partner, name) =
        body.app.split_once('/').ok_or_else(|| ApiError::not_found(format!("no app {:?}", body.app)).field("app"))?;
    let (app_id, versions) = app_versions(&s, partner, name).await?;
    let row = resolve_version(&app_id, &versions, body.version.as_deref(), body.track.as_deref())?;
    let app = s.app_version(&row).await?;
    s.check_entitlement(&tenant, &app).await?;
    let (config, secret_names) = resolve_config(&app, body.config).await?;
    let inst = Installation::new(&tenant, uuid::Uuid::new_v4().to_string());
    let config_text = config.to_string();
    let (rt, a, i) = (s.runtime.clone(), app.clone(), inst.clone());
    let outcome: Result<(), ApiError> = async {
        let checked = rt.validate_config(&a, &i, &config_text).await.map_err(call_problem)?;
        checked.result.map_err(|r| refusal_problem("validate-config", &r))?;
        let installed = rt.install(&a, &i, &config_text).await.map_err(call_problem)?;
        installed.result.map_err(|r| refusal_problem("install", &r))
    }
    .await;
    let now = crate::metering::now_ms() as i64;
    let mut record = InstallationRow {
        id: inst.id.clone(),
        tenant: tenant.clone(),
        app: app_id,
        version: row.version.clone(),
        config: String::new(),
        secrets: Vec::new(),
        created_ms: now,
        updated_ms: now,
    };
    s.set_config(&mut record, &config, &secret_names);
    // The version is checked again as the row is written: a yank or a quarantine
    // committed while the hooks ran wins.
    let recorded = match outcome {
        Ok(()) => match s.store.install_if_installable(&record, &caller.0.actor()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(NotInstallable(now))) => installable(&record.app, &now),
            Err(e) => Err(ApiError::from(e)),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        // Nothing left behind: the hooks may have written key-value data.
        s.store.delete_installation_data(&tenant, &inst.id).await?;
        return Err(e);
    }
    Ok((StatusCode::CREATED, axum::Json(s.view(&record))))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations", responses((status = 200)))]
async fn list_installations(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let rows = s.store.installations(&tenant).await?;
    Ok(axum::Json(rows.iter().map(|r| s.view(r)).collect::<Vec<_>>()))
}

async fn installation_of(s: &AppState, tenant: &str, id: &str) -> ApiResult<InstallationRow> {
    s.store.installation(tenant, id).await?.ok_or_else(|| ApiError::not_found(format!("no installation {id:?}")))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/installations/{id}", responses((status = 200), (status = 404, body = Problem)))]
async fn get_installation(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    Ok(axum::Json(s.view(&installation_of(&s, &tenant, &id).await?)))
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
    let mut row = installation_of(&s, &tenant, &id).await?;
    let app = s.installed_app(&row).await?;
    let old = s.full_config(&row)?;
    let mut new = body.config;
    if let (Some(new_obj), Some(old_secrets)) = (new.as_object_mut(), s.open_secrets(&row).ok()) {
        for (k, v) in old_secrets {
            new_obj.entry(k).or_insert(v);
        }
    }
    let (config, secret_names) = resolve_config(&app, Some(new)).await?;
    let (rt, a, i) = (s.runtime.clone(), app.clone(), Installation::new(&tenant, &id));
    let (old_text, new_text) = (old.to_string(), config.to_string());
    let checked = rt.validate_config(&a, &i, &new_text).await.map_err(call_problem)?;
    checked.result.map_err(|r| refusal_problem("validate-config", &r))?;
    let done = rt.configure(&a, &i, &old_text, &new_text).await.map_err(call_problem)?;
    done.result.map_err(|r| refusal_problem("configure", &r))?;
    s.set_config(&mut row, &config, &secret_names);
    s.store.update_installation(&row, "installation.configure", &caller.0.actor()).await?;
    let row = installation_of(&s, &tenant, &id).await?;
    Ok(axum::Json(s.view(&row)))
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
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/installations/{id}/upgrade", request_body = UpgradeBody, responses((status = 200), (status = 422, body = Problem)))]
async fn upgrade(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    Json(body): Json<UpgradeBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let mut row = installation_of(&s, &tenant, &id).await?;
    let versions = s.store.versions(&row.app).await?;
    let target = resolve_version(&row.app, &versions, body.version.as_deref(), body.track.as_deref())?;
    let (from, to) = (
        semver::Version::parse(&row.version).map_err(ApiError::internal)?,
        semver::Version::parse(&target.version).map_err(ApiError::internal)?,
    );
    if to == from {
        return Err(ApiError::new(StatusCode::CONFLICT, "same-version", format!("installation is already on {to}"))
            .field("version"));
    }
    if to < from && !body.allow_downgrade {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "downgrade-refused",
            format!("{to} is lower than {from}; set allowDowngrade to downgrade"),
        )
        .field("version"));
    }
    let app = s.app_version(&target).await?;
    s.check_entitlement(&tenant, &app).await?;
    let (config, secret_names) = resolve_config(&app, Some(s.full_config(&row)?)).await?;
    let (rt, a, i, from_text, cfg) =
        (s.runtime.clone(), app.clone(), Installation::new(&tenant, &id), from.to_string(), config.to_string());
    let done = rt.upgrade(&a, &i, &from_text, &cfg).await.map_err(call_problem)?;
    done.result.map_err(|r| refusal_problem("upgrade", &r))?;
    row.version = target.version.clone();
    s.set_config(&mut row, &config, &secret_names);
    // Checked again as the row is written (a yank or quarantine during the hook wins);
    // the old version keeps running.
    if let Err(NotInstallable(now)) = s.store.upgrade_installation(&row, &caller.0.actor()).await? {
        installable(&row.app, &now)?;
    }
    let row = installation_of(&s, &tenant, &id).await?;
    Ok(axum::Json(s.view(&row)))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/installations/{id}", responses((status = 204), (status = 404, body = Problem)))]
async fn uninstall(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let row = installation_of(&s, &tenant, &id).await?;
    let app = s.installed_app(&row).await?;
    let (rt, i) = (s.runtime.clone(), Installation::new(&tenant, &id));
    let done = rt.uninstall(&app, &i).await.map_err(call_problem)?;
    done.result.map_err(|r| refusal_problem("uninstall", &r))?;
    s.store.delete_installation(&tenant, &id, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let row = installation_of(&s, &tenant, &id).await?;
    let app = s.installed_app(&row).await?;
    let (rt, i, op, text) = (s.runtime.clone(), Installation::new(&tenant, &id), operation.clone(), input.to_string());
    let outcome: CallOutcome<String> = rt.invoke(&app, &i, &op, &text).await.map_err(call_problem)?;
    let output = outcome.result.map_err(|r| refusal_problem(&operation, &r))?;
    let output: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
    let usage: Vec<Value> = outcome.usage.iter().map(usage_view).collect();
    Ok(axum::Json(json!({"output": output, "usage": usage})))
}

fn usage_view(e: &UsageEvent) -> Value {
    json!({"sku": e.sku, "quantity": e.quantity, "source": e.source, "atMs": e.at_ms})
}

// --- usage (SPEC §7) -------------------------------------------------------------------

/// How far in the future a partner's usage timestamp may be (clock skew).
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

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
    let now = crate::metering::now_ms() as i64;
    let window_ms = i64::try_from(s.config.usage.acceptance_window_hours).unwrap_or(i64::MAX / 4) * 3_600_000;
    let mut results: Vec<Value> = vec![Value::Null; batch.records.len()];
    let mut accepted: Vec<(usize, UsageEvent)> = Vec::new();
    for (i, raw) in batch.records.into_iter().enumerate() {
        match validate_partner_record(&s, &partner, raw, now, window_ms).await? {
            Ok(event) => accepted.push((i, event)),
            Err(reason) => results[i] = json!({"index": i, "status": "refused", "reason": reason}),
        }
    }
    let outcomes =
        s.ledger.record(accepted.iter().map(|(_, e)| e.clone()).collect()).await.map_err(ApiError::internal)?;
    for ((i, _), outcome) in accepted.iter().zip(outcomes) {
        let mut v = serde_json::to_value(outcome).unwrap_or_default();
        v["index"] = json!(i);
        if let crate::ledger::Recorded::Conflict { recorded_quantity } = outcome {
            v["reason"] = json!(format!("idempotency key already recorded with quantity {recorded_quantity}"));
        }
        results[*i] = v;
    }
    Ok(axum::Json(json!({"results": results})))
}

/// Checks one partner record (SPEC §7); `Ok(Err(reason))` refuses it.
async fn validate_partner_record(
    s: &AppState,
    partner: &str,
    raw: Value,
    now: i64,
    window_ms: i64,
) -> ApiResult<Result<UsageEvent, String>> {
    let r: PartnerUsageRecord = match serde_json::from_value(raw) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("not a usage record: {e}"))),
    };
    let Some(quantity) = r.quantity.as_u64().filter(|q| *q > 0) else {
        return Ok(Err(format!("quantity must be a positive integer, found {}", r.quantity)));
    };
    if !r.app.starts_with(&format!("{partner}/")) {
        return Ok(Err(format!("app {} is not an app of partner {partner}", r.app)));
    }
    if r.idempotency_key.is_empty() || r.idempotency_key.len() > 200 {
        return Ok(Err("idempotencyKey must be 1-200 characters".into()));
    }
    if r.timestamp_ms > now + FUTURE_SKEW_MS {
        return Ok(Err(format!("timestamp {} is more than 5 minutes in the future", r.timestamp_ms)));
    }
    if r.timestamp_ms < now - window_ms {
        return Ok(Err(format!(
            "timestamp {} is older than the acceptance window of {} hours",
            r.timestamp_ms,
            window_ms / 3_600_000
        )));
    }
    // Installed now, or installed when the usage happened (uninstalled since).
    let current =
        s.store.installations(&r.tenant).await?.into_iter().find(|i| i.app == r.app).map(|i| (i.id, i.version));
    let installation = match current {
        Some(found) => Some(found),
        None => s.store.uninstalled_since(&r.tenant, &r.app, r.timestamp_ms).await?,
    };
    let Some((installation, version)) = installation else {
        return Ok(Err(format!("tenant {} has no installation of {} at that time", r.tenant, r.app)));
    };
    let declared = s
        .store
        .version(&r.app, &version)
        .await?
        .and_then(|v| Manifest::parse(v.manifest.as_bytes(), &HOST_API_VERSION).ok())
        .is_some_and(|m| m.sku_ids().any(|id| id == r.sku));
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
        at_ms: r.timestamp_ms as u64,
        source: crate::metering::UsageSource::Partner,
        idempotency_key: format!("{partner}/{}", r.idempotency_key),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UsageQuery {
    /// Start of the period, ms since the epoch (default: 30 days ago).
    from_ms: Option<i64>,
    /// End of the period, exclusive (default: now + 5 min).
    to_ms: Option<i64>,
    /// `hour` or `day` (default `hour`).
    granularity: Option<String>,
    /// `json` (default) or `csv`: CSV gives one line per record with its id.
    format: Option<String>,
    /// Also emit zero records for every installed (tenant, app, SKU) in idle periods.
    zeros: Option<bool>,
}

/// Namespace of export record ids (UUIDv5 of tenant, app, SKU and period start).
const EXPORT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b69_6f73_6b2d_7573_6167_652d_6578_7031);

/// The deterministic id of an export record: the same period and SKU give the same id.
pub fn export_id(tenant: &str, app: &str, sku: &str, period_start_ms: i64) -> uuid::Uuid {
    uuid::Uuid::new_v5(&EXPORT_NAMESPACE, format!("{tenant}\n{app}\n{sku}\n{period_start_ms}").as_bytes())
}

async fn usage_report(
    s: &AppState,
    q: UsageQuery,
    tenant: Option<&str>,
    partner: Option<&str>,
) -> ApiResult<axum::response::Response> {
    let now = crate::metering::now_ms() as i64;
    let (from, to) = (q.from_ms.unwrap_or(now - 30 * 86_400_000), q.to_ms.unwrap_or(now + FUTURE_SKEW_MS));
    let bad =
        |field: &str, detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid-query", detail).field(field);
    let bucket_ms: i64 = match q.granularity.as_deref().unwrap_or("hour") {
        "hour" => 3_600_000,
        "day" => 86_400_000,
        other => return Err(bad("granularity", format!("granularity {other:?}: use hour or day"))),
    };
    if to <= from || (to - from) / bucket_ms > 24 * 400 {
        return Err(bad("toMs", "the period must be positive and at most 400 days of hours".into()));
    }
    let rows = crate::ledger::usage_between(&s.store, from, to, tenant, partner).await?;
    // (tenant, app, sku, period) -> quantity; the version is not part of the key: a
    // billing period is per SKU whatever version metered it.
    let mut buckets: std::collections::BTreeMap<(String, String, String, i64), i64> = Default::default();
    let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
    for r in rows {
        let start = r.at_ms - r.at_ms.rem_euclid(bucket_ms);
        *buckets.entry((r.tenant, r.app, r.sku.clone(), start)).or_default() += r.quantity;
        *totals.entry(r.sku).or_default() += r.quantity;
    }
    if q.zeros.unwrap_or(false) {
        for (t, app, sku) in s.subscriptions(tenant, partner).await? {
            let mut start = from - from.rem_euclid(bucket_ms);
            while start < to {
                buckets.entry((t.clone(), app.clone(), sku.clone(), start)).or_insert(0);
                start += bucket_ms;
            }
        }
    }
    let records: Vec<Value> = buckets
        .into_iter()
        .map(|((tenant, app, sku, start), quantity)| {
            json!({"id": export_id(&tenant, &app, &sku, start).to_string(), "periodStartMs": start, "tenant": tenant, "app": app,
                   "sku": sku, "quantity": quantity})
        })
        .collect();
    if q.format.as_deref() == Some("csv") {
        let mut csv = String::from("id,period_start_ms,tenant,app,sku,quantity\n");
        for r in &records {
            csv.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r["id"].as_str().unwrap_or(""),
                r["periodStartMs"],
                r["tenant"].as_str().unwrap_or(""),
                r["app"].as_str().unwrap_or(""),
                r["sku"].as_str().unwrap_or(""),
                r["quantity"]
            ));
        }
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    if let Some(other) = q.format.as_deref().filter(|f| *f != "json") {
        return Err(bad("format", format!("format {other:?}: use json or csv")));
    }
    Ok(axum::Json(json!({"fromMs": from, "toMs": to, "usage": records, "totals": totals})).into_response())
}

impl AppState {
    /// (tenant, app, SKU) of every current installation, within the reader's scope.
    async fn subscriptions(
        &self,
        tenant: Option<&str>,
        partner: Option<&str>,
    ) -> ApiResult<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for inst in self.store.all_installations().await? {
            if tenant.is_some_and(|t| t != inst.tenant)
                || partner.is_some_and(|p| !inst.app.starts_with(&format!("{p}/")))
            {
                continue;
            }
            if let Some(v) = self.store.version(&inst.app, &inst.version).await?
                && let Ok(m) = Manifest::parse(v.manifest.as_bytes(), &HOST_API_VERSION)
            {
                out.extend(m.sku_ids().map(|sku| (inst.tenant.clone(), inst.app.clone(), sku.to_string())));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", responses((status = 200)))]
async fn tenant_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    usage_report(&s, q, Some(&tenant), None).await
}

#[utoipa::path(get, path = "/v1/partners/{partner}/usage", responses((status = 200)))]
async fn partner_usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    usage_report(&s, q, None, Some(&partner)).await
}

#[utoipa::path(get, path = "/v1/usage", responses((status = 200)))]
async fn operator_usage(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    usage_report(&s, q, None, None).await
}
