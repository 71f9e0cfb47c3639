//! Tenants' own apps (issue 30): the operator's switch (`/v1/private-apps`,
//! `/v1/tenants/{t}/private-apps`), and for a tenant with it on, its registries,
//! certificates and private apps (`~tenant/name`), registered as partners register
//! theirs and visible to that tenant (and the operator) only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiosk_api::private_apps::{PrivateAppPolicy, PrivateAppPolicyView, TenantRegistryBody, TenantRegistryView};
use kiosk_api::trust::{CertificateRemoved, CertificateView, CertificatesAdded};
use kiosk_core::certificates::normalize_fingerprint;

use super::admin::PageQuery;
use super::catalog::{VersionSummary, version_summary};
use super::{ApiResult, Caller, Json, Page, Path, Problem, Query, Shared};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(get_every_tenant_policy, put_every_tenant_policy))
        .routes(routes!(get_tenant_policy, put_tenant_policy, delete_tenant_policy))
        .routes(routes!(list_tenant_registries))
        .routes(routes!(put_tenant_registry, delete_tenant_registry))
        .routes(routes!(list_tenant_certificates, add_tenant_certificate))
        .routes(routes!(remove_tenant_certificate))
        .routes(routes!(list_private_apps))
        .routes(routes!(register_private_version))
}

// --- the operator's switch ---------------------------------------------------------------

#[utoipa::path(get, path = "/v1/private-apps", tag = "operator",
    responses((status = 200, description = "the private-app policy of every tenant without its own (`tenant` is `*`)", body = PrivateAppPolicyView)))]
async fn get_every_tenant_policy(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.private_app_policy(None).await?))
}

#[utoipa::path(put, path = "/v1/private-apps", tag = "operator", request_body = PrivateAppPolicy,
    responses((status = 200, description = "the policy of every tenant without its own", body = PrivateAppPolicyView),
              (status = 422, description = "`invalid-private-app-policy`, `invalid-limit` or `limit-above-ceiling`, naming the field", body = Problem)))]
async fn put_every_tenant_policy(
    State(s): State<Shared>,
    caller: Caller,
    Json(body): Json<PrivateAppPolicy>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.put_private_app_policy(None, body, &caller.0.actor()).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/private-apps", tag = "tenant",
    responses((status = 200, description = "the policy that applies to the tenant (`source`: its own, every tenant's, or the default: off) and its private apps", body = PrivateAppPolicyView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn get_tenant_policy(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    Ok(axum::Json(s.private_app_policy(Some(&tenant)).await?))
}

/// Switches private apps on or off for one tenant, with its quota, the address ranges
/// its registries may be on, and the cap of each private app.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/private-apps", tag = "operator", request_body = PrivateAppPolicy,
    responses((status = 200, description = "the tenant's policy", body = PrivateAppPolicyView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem),
              (status = 422, description = "`invalid-private-app-policy`, `invalid-limit` or `limit-above-ceiling`, naming the field", body = Problem)))]
async fn put_tenant_policy(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<PrivateAppPolicy>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.put_private_app_policy(Some(&tenant), body, &caller.0.actor()).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/private-apps", tag = "operator",
    responses((status = 204, description = "removed: the policy of every tenant applies again"),
              (status = 404, description = "`not-found`: the tenant has no policy of its own", body = Problem)))]
async fn delete_tenant_policy(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.delete_private_app_policy(&tenant, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- the tenant's registries ---------------------------------------------------------------

#[utoipa::path(get, path = "/v1/tenants/{tenant}/registries", tag = "tenant", params(PageQuery),
    responses((status = 200, description = "the tenant's registries by host; secrets are never returned", body = Page<TenantRegistryView>)))]
async fn list_tenant_registries(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    let limit = q.limit()?;
    let items = s.tenant_registries(&tenant).await?;
    Ok(axum::Json(Page::after(items, q.after.as_deref(), limit, |r: &TenantRegistryView| &r.host)))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/registries/{host}", tag = "tenant", request_body = TenantRegistryBody,
    responses((status = 200, description = "the registry as connected", body = TenantRegistryView),
              (status = 403, description = "`private-apps-off`: the operator has not switched private apps on for the tenant", body = Problem),
              (status = 422, description = "`invalid-registry` (the field at fault is named) or `registry-not-allowed` (a loopback, private or other non-public address the operator has not opened for the tenant)", body = Problem)))]
async fn put_tenant_registry(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, host)): Path<(String, String)>,
    Json(body): Json<TenantRegistryBody>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    Ok(axum::Json(s.put_tenant_registry(&tenant, &host, body, &caller.0.actor()).await?))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/registries/{host}", tag = "tenant",
    responses((status = 204, description = "disconnected (registered versions stay)"),
              (status = 404, description = "`not-found`: no such registry", body = Problem)))]
async fn delete_tenant_registry(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, host)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    s.delete_tenant_registry(&tenant, &host, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- the tenant's certificates -------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCertificate {
    /// ASCII-armoured OpenPGP public certificate, or a revocation certificate of one the
    /// tenant registered.
    certificate: String,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/certificates", tag = "tenant", params(PageQuery),
    responses((status = 200, description = "the certificates that sign the tenant's private apps, by fingerprint", body = Page<CertificateView>)))]
async fn list_tenant_certificates(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    let limit = q.limit()?;
    let after = q.after.as_deref().map(normalize_fingerprint);
    let items = s.tenant_certificates(&tenant).await?;
    Ok(axum::Json(Page::after(items, after.as_deref(), limit, |v: &CertificateView| &v.fingerprint)))
}

/// They sign the tenant's private apps only; a revoked one quarantines what it signed.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/certificates", tag = "tenant", request_body = NewCertificate,
    responses((status = 201, description = "registered (at least one certificate is new)", body = CertificatesAdded),
              (status = 200, description = "registered copies updated (e.g. revoked)", body = CertificatesAdded),
              (status = 403, description = "`private-apps-off`", body = Problem),
              (status = 409, description = "`certificate-owned`: a partner or another tenant registered that fingerprint; nothing is written", body = Problem),
              (status = 422, description = "`invalid-certificate`", body = Problem)))]
async fn add_tenant_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<NewCertificate>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let added = s.add_tenant_certificates(&tenant, body.certificate.as_bytes(), &caller.0.actor()).await?;
    let status = if added.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(added)))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/certificates/{fingerprint}", tag = "tenant",
    responses((status = 200, description = "removed; every version it signed is quarantined (listed)", body = CertificateRemoved),
              (status = 404, description = "`not-found`: no such certificate", body = Problem)))]
async fn remove_tenant_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, fingerprint)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    Ok(axum::Json(s.remove_tenant_certificate(&tenant, &fingerprint, &caller.0.actor()).await?))
}

// --- the tenant's apps ---------------------------------------------------------------------

/// One of the tenant's private apps (`~tenant/name`) with its versions.
#[derive(Serialize, utoipa::ToSchema)]
struct PrivateApp {
    app: String,
    /// Display name.
    name: String,
    versions: Vec<VersionSummary>,
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/apps", tag = "tenant", params(PageQuery),
    responses((status = 200, description = "the tenant's private apps by id, each with its versions (highest first)", body = Page<PrivateApp>)))]
async fn list_private_apps(
    State(s): State<Shared>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant_or_operator_reading(&tenant)?;
    let limit = q.limit()?;
    let items: Vec<PrivateApp> = s
        .tenant_private_apps(&tenant)
        .await?
        .into_iter()
        .map(|(app, versions)| PrivateApp {
            app: app.app,
            name: app.name,
            versions: versions.iter().map(version_summary).collect(),
        })
        .collect();
    Ok(axum::Json(Page::after(items, q.after.as_deref(), limit, |a: &PrivateApp| a.app.as_str())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterPrivateVersion {
    /// `host/repository:tag` on one of the tenant's registries.
    reference: String,
}

/// The version is registered as `~tenant/name` (the manifest's `app` must say so).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/apps/{name}/versions", tag = "tenant", request_body = RegisterPrivateVersion,
    responses((status = 201, description = "pulled, verified against the tenant's certificates, compiled and registered", body = super::partners::RegisteredVersion),
        (status = 403, body = Problem, description = "`private-apps-off`"),
        (status = 422, body = Problem, description = "artifact refused (`signature-refused`, `manifest-invalid`, …); `registry-not-allowed` (not one of the tenant's registries, or a non-public address the operator has not opened); `private-app-quota`; `component-not-runnable`"),
        (status = 404, body = Problem, description = "`tag-not-found`"),
        (status = 409, body = Problem, description = "`version-exists`, `moved-tag`"),
        (status = 502, body = Problem, description = "`registry-unavailable` or `registry-refused`"),
        (status = 503, body = Problem, description = "`no-sandbox-slot`, or shutting down")))]
async fn register_private_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Json(body): Json<RegisterPrivateVersion>,
) -> ApiResult<impl IntoResponse> {
    caller.tenant(&tenant)?;
    let registered = s.register_private(&tenant, &name, &body.reference, &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(super::partners::RegisteredVersion::from(registered))))
}
