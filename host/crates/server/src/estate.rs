//! The estate, readable by the operator page by page (issue 11): partners, tenants,
//! entitlements, versions and installations across partners and tenants; and the
//! operator's switches: suspend/resume a tenant, disable/enable a partner (the core
//! enforces them for every front end).

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, AppState, Caller, Page, Path, Problem, Query, Shared};
use kiosk_core::records::{PartnerSummary, TenantSummary, VersionState};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_partners))
        .routes(routes!(get_partner))
        .routes(routes!(disable_partner))
        .routes(routes!(enable_partner))
        .routes(routes!(list_tenants))
        .routes(routes!(get_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(resume_tenant))
        .routes(routes!(list_entitlements))
        .routes(routes!(list_versions))
        .routes(routes!(list_installations))
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EstatePage {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

// --- partners ------------------------------------------------------------------------

/// A partner: `disabled` partners register nothing and their apps neither appear in the
/// catalog nor run.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PartnerView {
    name: String,
    display: String,
    disabled: bool,
    created_ms: i64,
    /// Certificates registered over the API.
    certificates: i64,
    apps: i64,
}

fn partner_view(p: PartnerSummary) -> PartnerView {
    PartnerView {
        name: p.name,
        display: p.display,
        disabled: p.disabled,
        created_ms: p.created_ms,
        certificates: p.certificates,
        apps: p.apps,
    }
}

/// `after` is the `name` of the last item.
#[utoipa::path(get, path = "/v1/partners", tag = "operator", params(EstatePage),
    responses((status = 200, description = "partners by name", body = Page<PartnerView>)))]
async fn list_partners(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<EstatePage>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let rows = s.partners_page(q.after.as_deref().unwrap_or(""), limit + 1).await?;
    let items = rows.into_iter().map(partner_view).collect();
    Ok(axum::Json(Page::of(items, limit, |p: &PartnerView| p.name.clone())))
}

async fn partner(s: &AppState, name: &str) -> ApiResult<PartnerView> {
    Ok(partner_view(s.partner_summary(name).await?))
}

#[utoipa::path(get, path = "/v1/partners/{partner}", tag = "operator",
    responses((status = 200, description = "the partner", body = PartnerView),
              (status = 404, description = "`not-found`: no such partner", body = Problem)))]
async fn get_partner(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(partner(&s, &name).await?))
}

#[utoipa::path(post, path = "/v1/partners/{partner}/disable", tag = "operator",
    responses((status = 200, description = "disabled (audited): no registrations, its apps out of the catalog and not installable, its installations' calls refused (`partner-disabled`); its token can still read", body = PartnerView),
              (status = 404, description = "`not-found`: no such partner", body = Problem)))]
async fn disable_partner(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.set_partner_disabled(&name, true, &caller.0.actor()).await?;
    Ok(axum::Json(partner(&s, &name).await?))
}

#[utoipa::path(post, path = "/v1/partners/{partner}/enable", tag = "operator",
    responses((status = 200, description = "enabled again (audited)", body = PartnerView),
              (status = 404, description = "`not-found`: no such partner", body = Problem)))]
async fn enable_partner(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.set_partner_disabled(&name, false, &caller.0.actor()).await?;
    Ok(axum::Json(partner(&s, &name).await?))
}

// --- tenants -------------------------------------------------------------------------

/// A tenant: a `suspended` tenant's calls, installs, configures and upgrades are
/// refused (`tenant-suspended`); it can still read and uninstall.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantView {
    id: String,
    display: String,
    suspended: bool,
    created_ms: i64,
    installations: i64,
    /// Key-value bytes (keys and values) all its installations hold together.
    kv_bytes: i64,
}

fn tenant_view(t: TenantSummary) -> TenantView {
    TenantView {
        id: t.id,
        display: t.display,
        suspended: t.suspended,
        created_ms: t.created_ms,
        installations: t.installations,
        kv_bytes: t.kv_bytes,
    }
}

/// `after` is the `id` of the last item.
#[utoipa::path(get, path = "/v1/tenants", tag = "operator", params(EstatePage),
    responses((status = 200, description = "tenants by id", body = Page<TenantView>)))]
async fn list_tenants(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<EstatePage>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let rows = s.tenants_page(q.after.as_deref().unwrap_or(""), limit + 1).await?;
    let items = rows.into_iter().map(tenant_view).collect();
    Ok(axum::Json(Page::of(items, limit, |t: &TenantView| t.id.clone())))
}

async fn tenant(s: &AppState, id: &str) -> ApiResult<TenantView> {
    Ok(tenant_view(s.tenant_summary(id).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "operator",
    responses((status = 200, description = "the tenant", body = TenantView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn get_tenant(State(s): State<Shared>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(tenant(&s, &id).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/suspend", tag = "operator",
    responses((status = 200, description = "suspended (audited): calls, installs, configures and upgrades refused (`tenant-suspended`), its installations not collected; reads and uninstalls still allowed", body = TenantView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn suspend_tenant(
    State(s): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.set_tenant_suspended(&id, true, &caller.0.actor()).await?;
    Ok(axum::Json(tenant(&s, &id).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/resume", tag = "operator",
    responses((status = 200, description = "resumed (audited)", body = TenantView),
              (status = 404, description = "`not-found`: no such tenant", body = Problem)))]
async fn resume_tenant(
    State(s): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.set_tenant_suspended(&id, false, &caller.0.actor()).await?;
    Ok(axum::Json(tenant(&s, &id).await?))
}

// --- entitlements, versions, installations -------------------------------------------

/// `?tenant=&partner=&limit=&after=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EntitlementQuery {
    /// Only this tenant's entitlements.
    tenant: Option<String>,
    /// Only entitlements to this partner's apps.
    partner: Option<String>,
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page (`tenant:partner/name`).
    after: Option<String>,
}

/// A tenant's entitlement to an app.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EntitlementView {
    tenant: String,
    /// `partner/name`.
    app: String,
    expires_ms: Option<i64>,
    revoked: bool,
}

#[utoipa::path(get, path = "/v1/entitlements", tag = "operator", params(EntitlementQuery),
    responses((status = 200, description = "entitlements by tenant, then app", body = Page<EntitlementView>)))]
async fn list_entitlements(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<EntitlementQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let after = q.after.as_deref().unwrap_or("");
    let after = after.split_once(':').unwrap_or((after, ""));
    let rows = s.entitlements_page(q.tenant.as_deref(), q.partner.as_deref(), after, limit + 1).await?;
    let items = rows
        .into_iter()
        .map(|e| EntitlementView { tenant: e.tenant, app: e.app, expires_ms: e.expires_ms, revoked: e.revoked })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |e: &EntitlementView| format!("{}:{}", e.tenant, e.app))))
}

/// `?app=partner/name&state=active|yanked|quarantined&limit=&after=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VersionQuery {
    /// Only this app's versions (`partner/name`).
    app: Option<String>,
    /// `active` (neither yanked nor quarantined), `yanked` or `quarantined`.
    state: Option<StateFilter>,
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page (`partner/name@version`).
    after: Option<String>,
}

/// Which versions `GET /v1/versions` lists.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StateFilter {
    Active,
    Yanked,
    Quarantined,
}

/// A registered version and its state.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EstateVersion {
    app: String,
    version: String,
    yanked: bool,
    quarantined: bool,
    quarantine_reason: Option<String>,
    digest: String,
    signer: String,
    created_ms: i64,
}

#[utoipa::path(get, path = "/v1/versions", tag = "operator", params(VersionQuery),
    responses((status = 200, description = "versions of every partner's apps by app, then version", body = Page<EstateVersion>),
              (status = 400, description = "`invalid-query`: an unknown `state`", body = Problem)))]
async fn list_versions(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<VersionQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let state = q.state.map(|f| match f {
        StateFilter::Active => VersionState::Active,
        StateFilter::Yanked => VersionState::Yanked,
        StateFilter::Quarantined => VersionState::Quarantined,
    });
    let after = q.after.as_deref().unwrap_or("");
    let after = after.rsplit_once('@').unwrap_or((after, ""));
    let rows = s.versions_page(q.app.as_deref(), state, after, limit + 1).await?;
    let items = rows
        .into_iter()
        .map(|v| EstateVersion {
            app: v.app,
            version: v.version,
            yanked: v.yanked,
            quarantined: v.quarantined,
            quarantine_reason: v.quarantine_reason,
            digest: v.manifest_digest,
            signer: v.signer,
            created_ms: v.created_ms,
        })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |v: &EstateVersion| format!("{}@{}", v.app, v.version))))
}

/// `?tenant=&app=partner/name&limit=&after=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct InstallationQuery {
    /// Only this tenant's installations.
    tenant: Option<String>,
    /// Only installations of this app (`partner/name`).
    app: Option<String>,
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page (`tenant:id`).
    after: Option<String>,
}

/// An installation as the operator lists it (its configuration and limits are in
/// `GET /v1/tenants/{tenant}/installations/{id}`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EstateInstallation {
    id: String,
    tenant: String,
    app: String,
    version: String,
    created_ms: i64,
    updated_ms: i64,
    row_version: i64,
}

#[utoipa::path(get, path = "/v1/installations", tag = "operator", operation_id = "list_estate_installations", params(InstallationQuery),
    responses((status = 200, description = "installations across tenants by tenant, then id", body = Page<EstateInstallation>)))]
async fn list_installations(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<InstallationQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = super::admin::page_limit(q.limit)?;
    let after = q.after.as_deref().unwrap_or("");
    let after = after.split_once(':').unwrap_or((after, ""));
    let rows = s.installations_page(q.tenant.as_deref(), q.app.as_deref(), after, limit + 1).await?;
    let items = rows
        .into_iter()
        .map(|i| EstateInstallation {
            id: i.id,
            tenant: i.tenant,
            app: i.app,
            version: i.version,
            created_ms: i.created_ms,
            updated_ms: i.updated_ms,
            row_version: i.row_version,
        })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |i: &EstateInstallation| format!("{}:{}", i.tenant, i.id))))
}
