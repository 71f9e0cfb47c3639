//! The catalog (any token): categories, apps, their versions, a version's manifest.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::PageQuery;
use super::{ApiError, ApiResult, Caller, Page, Path, Problem, Query, Shared};
use kiosk_core::catalog::Viewer;
use kiosk_core::catalog_meta::icon_path;
use kiosk_core::records::{Principal, VersionRow};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(categories))
        .routes(routes!(catalog_apps))
        .routes(routes!(catalog_app))
        .routes(routes!(catalog_versions))
        .routes(routes!(catalog_version))
        .routes(routes!(catalog_icon))
}

/// A version of an app: whether it can be installed (neither yanked nor quarantined),
/// its manifest digest and when it was registered.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct VersionSummary {
    version: String,
    yanked: bool,
    quarantined: bool,
    quarantine_reason: Option<String>,
    digest: String,
    created_ms: i64,
}

pub(super) fn version_summary(v: &VersionRow) -> VersionSummary {
    VersionSummary {
        version: v.version.clone(),
        yanked: v.yanked,
        quarantined: v.quarantined,
        quarantine_reason: v.quarantine_reason.clone(),
        digest: v.manifest_digest.clone(),
        created_ms: v.created_ms,
    }
}

/// A disabled partner's apps are not in the catalog, nor a tenant's private app for
/// anyone but that tenant (and the operator): 404 as for an unknown app.
async fn listed(s: &super::AppState, caller: &Caller, partner: &str, name: &str) -> ApiResult<()> {
    Ok(s.listed(viewer(caller), partner, name).await?)
}

/// Who reads the catalog.
fn viewer(caller: &Caller) -> Viewer<'_> {
    match &caller.0 {
        Principal::Operator => Viewer::Operator,
        Principal::Tenant(t) => Viewer::Tenant(t),
        Principal::Partner(_) => Viewer::Other,
    }
}

/// The tenant whose private apps a caller's catalog lists.
fn tenant_of(caller: &Caller) -> Option<&str> {
    match &caller.0 {
        Principal::Tenant(t) => Some(t),
        _ => None,
    }
}

/// `after` is the last category of the previous page.
#[utoipa::path(get, path = "/v1/catalog/categories", tag = "catalog", params(PageQuery),
    responses((status = 200, description = "every category an app declares, by name", body = Page<String>)))]
async fn categories(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit()?;
    let mut all: Vec<String> =
        s.catalog_seen_by(tenant_of(&caller)).await?.into_iter().flat_map(|a| a.categories).collect();
    all.sort();
    all.dedup();
    Ok(axum::Json(Page::after(all, q.after.as_deref(), limit, String::as_str)))
}

/// The filters, and `?limit=&after=` (`after`: the `app` of the last item).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CatalogQuery {
    /// Only apps in this category (exact).
    category: Option<String>,
    /// Only apps whose id, name or description contains this text (any case).
    q: Option<String>,
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// An app in the catalog (`partner/name`), with the publisher and icon of its latest
/// installable version (null when it has none, or no version is installable).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CatalogApp {
    app: String,
    /// Display name.
    name: String,
    description: String,
    categories: Vec<String>,
    publisher: Option<CatalogPublisher>,
    /// The icon's path in this API (`…/versions/{version}/icon`), fetched with a token.
    icon_url: Option<String>,
}

#[utoipa::path(get, path = "/v1/catalog/apps", tag = "catalog", params(CatalogQuery),
    responses((status = 200, description = "the apps that match, by id", body = Page<CatalogApp>)))]
async fn catalog_apps(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<CatalogQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = super::admin::page_limit(q.limit)?;
    let needle = q.q.map(|t| t.to_lowercase());
    let mut meta = s.catalog_listing_meta().await?;
    let apps: Vec<CatalogApp> = s
        .catalog_seen_by(tenant_of(&caller))
        .await?
        .into_iter()
        .filter(|a| q.category.as_ref().is_none_or(|c| a.categories.contains(c)))
        .filter(|a| {
            needle
                .as_ref()
                .is_none_or(|n| [&a.app, &a.name, &a.description].iter().any(|f| f.to_lowercase().contains(n)))
        })
        .map(|a| {
            let meta = meta.remove(&a.app);
            let icon_url = meta.as_ref().filter(|m| m.has_icon).map(|m| icon_path(&a.app, &m.version));
            let publisher = meta.and_then(|m| m.publisher).map(CatalogPublisher::from);
            CatalogApp {
                app: a.app,
                name: a.name,
                description: a.description,
                categories: a.categories,
                publisher,
                icon_url,
            }
        })
        .collect();
    Ok(axum::Json(Page::after(apps, q.after.as_deref(), limit, |a: &CatalogApp| a.app.as_str())))
}

/// An app with its latest installable version (what an install without a version gets;
/// null when every version is yanked or quarantined), and that version's publisher and
/// icon.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CatalogAppDetail {
    app: String,
    name: String,
    description: String,
    categories: Vec<String>,
    latest: Option<String>,
    publisher: Option<CatalogPublisher>,
    /// The icon's path in this API, fetched with a token.
    icon_url: Option<String>,
}

/// Who publishes an app, as its signed manifest says: a display name (plain text, shown
/// as text) and `https://` links.
#[derive(Serialize, utoipa::ToSchema)]
struct CatalogPublisher {
    name: String,
    homepage: Option<String>,
    support: Option<String>,
}

impl From<kiosk_domain::catalog_meta::Publisher> for CatalogPublisher {
    fn from(p: kiosk_domain::catalog_meta::Publisher) -> Self {
        Self { name: p.name, homepage: p.homepage, support: p.support }
    }
}

/// The publisher a stored manifest declares.
fn publisher_of(manifest: &Value) -> Option<CatalogPublisher> {
    let declared = manifest.get("publisher")?.clone();
    serde_json::from_value::<kiosk_domain::catalog_meta::Publisher>(declared).ok().map(CatalogPublisher::from)
}

/// The icon's path of a version that has one.
fn icon_url(app: &str, v: &VersionRow) -> Option<String> {
    v.icon_digest.as_ref().map(|_| icon_path(app, &v.version))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}", tag = "catalog",
    responses((status = 200, description = "the app", body = CatalogAppDetail),
              (status = 404, description = "`not-found`: no such app", body = Problem)))]
async fn catalog_app(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    listed(&s, &caller, &partner, &name).await?;
    let (app, versions) = s.app_versions(&partner, &name).await?;
    // What an install without a version gets: neither yanked nor quarantined.
    let latest = kiosk_core::lifecycle::resolve_version(&app, &versions, None, None).ok();
    let manifest: Value = serde_json::from_str(&versions[0].manifest).unwrap_or_default();
    let categories = manifest["categories"].as_array().map(|c| c.iter().map(text).collect()).unwrap_or_default();
    let latest_manifest: Option<Value> = latest.as_ref().and_then(|v| serde_json::from_str(&v.manifest).ok());
    Ok(axum::Json(CatalogAppDetail {
        name: text(&manifest["name"]),
        description: text(&manifest["description"]),
        categories,
        publisher: latest_manifest.as_ref().and_then(publisher_of),
        icon_url: latest.as_ref().and_then(|v| icon_url(&app, v)),
        latest: latest.map(|v| v.version),
        app,
    }))
}

/// `?limit=&after=`: at most `limit` versions (1-1000, default 100) after the version
/// `after` (the `next` of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VersionPage {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page: the page holds the versions below it (empty: the
    /// first page). A semantic version; numbers are bounded so that every string the
    /// pattern admits parses.
    #[param(
        pattern = r"^$|^(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]{0,15}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$"
    )]
    after: Option<String>,
}

/// `after` is the `version` of the last item of the previous page.
#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions", tag = "catalog", params(VersionPage),
    responses((status = 200, description = "the app's versions, highest first (versions equal but for prerelease or build: newest first)", body = Page<VersionSummary>),
              (status = 400, description = "`invalid-query`: `limit` out of range, or `after` not a semantic version", body = Problem),
              (status = 404, description = "`not-found`: no such app", body = Problem)))]
async fn catalog_versions(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Query(q): Query<VersionPage>,
) -> ApiResult<impl IntoResponse> {
    let limit = super::admin::page_limit(q.limit)?;
    listed(&s, &caller, &partner, &name).await?;
    let (_, versions) = s.app_versions(&partner, &name).await?;
    // The order is the store's (semver, highest first), not the cursor's: the page starts
    // after the cursor's version, or (a version not registered) below it.
    let start = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => 0,
        Some(after) => match versions.iter().position(|v| v.version == after) {
            Some(i) => i + 1,
            None => {
                let cursor = semver::Version::parse(after).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-query",
                        format!("after {after:?} is not a semantic version ({e}): use the `next` of the previous page"),
                    )
                    .field("after")
                })?;
                let below = |v: &&VersionRow| semver::Version::parse(&v.version).is_ok_and(|v| v < cursor);
                versions.iter().position(|v| below(&v)).unwrap_or(versions.len())
            }
        },
    };
    let take = usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1);
    let items = versions.iter().skip(start).take(take).map(version_summary).collect();
    Ok(axum::Json(Page::of(items, limit, |v: &VersionSummary| v.version.clone())))
}

/// A version with what its manifest declares: host API, SKUs, the JSON Schema of its
/// configuration, licensing, capabilities, and the manifest itself.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CatalogVersion {
    app: String,
    version: String,
    yanked: bool,
    quarantined: bool,
    quarantine_reason: Option<String>,
    digest: String,
    signer: String,
    /// Semver requirement on the host API.
    host_api: String,
    skus: Vec<Value>,
    /// JSON Schema (2020-12) of the installation configuration.
    config_schema: Value,
    licensing: Value,
    capabilities: Value,
    publisher: Option<CatalogPublisher>,
    /// What changed in this version: plain text (show it as text, never as HTML).
    changelog: Option<String>,
    /// The icon's path in this API, fetched with a token; null without an icon.
    icon_url: Option<String>,
    manifest: Value,
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions/{version}", tag = "catalog",
    responses((status = 200, description = "the version and its manifest", body = CatalogVersion),
              (status = 404, description = "`not-found`: no such app or version", body = Problem)))]
async fn catalog_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    listed(&s, &caller, &partner, &name).await?;
    let (app, versions) = s.app_versions(&partner, &name).await?;
    let v = versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::not_found(format!("no version {app}@{version}")).field("version"))?;
    let manifest: Value = serde_json::from_str(&v.manifest).unwrap_or_default();
    let icon_url = icon_url(&app, v);
    Ok(axum::Json(CatalogVersion {
        app,
        version: v.version.clone(),
        yanked: v.yanked,
        quarantined: v.quarantined,
        quarantine_reason: v.quarantine_reason.clone(),
        digest: v.manifest_digest.clone(),
        signer: v.signer.clone(),
        host_api: text(&manifest["hostApi"]),
        skus: manifest["skus"].as_array().cloned().unwrap_or_default(),
        config_schema: manifest["config"].clone(),
        licensing: manifest["licensing"].clone(),
        capabilities: manifest["capabilities"].clone(),
        publisher: publisher_of(&manifest),
        changelog: manifest["changelog"].as_str().map(str::to_string),
        icon_url,
        manifest,
    }))
}

/// An icon's bytes (`image/png` or `image/jpeg`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // a schema only: the handler answers the stored bytes
struct IconBytes(Vec<u8>);

/// A version's icon, as it was signed: immutable (a registered version never changes),
/// served with its own media type and headers that keep a browser from reading it as
/// anything but an image.
#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions/{version}/icon", tag = "catalog",
    responses((status = 200, description = "the icon (PNG or JPEG)",
               content((IconBytes = "image/png"), (IconBytes = "image/jpeg")),
               headers(("X-Content-Type-Options" = String, description = "`nosniff`"),
                       ("Content-Security-Policy" = String, description = "`default-src 'none'; sandbox`"),
                       ("Cache-Control" = String, description = "`public, max-age=31536000, immutable` (`private, …` for a tenant's private app)"))),
              (status = 404, description = "`not-found`: no such app or version, or the version has no icon", body = Problem)))]
async fn catalog_icon(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    use axum::http::{HeaderValue, header};
    listed(&s, &caller, &partner, &name).await?;
    let Some((media_type, bytes)) = s.catalog_icon(&partner, &name, &version).await? else {
        return Err(ApiError::not_found(format!("{partner}/{name}@{version} has no icon")).field("version"));
    };
    // Only the two media types registration admits are ever stored.
    let (content_type, file_name) = match media_type.as_str() {
        "image/png" => ("image/png", "icon.png"),
        "image/jpeg" => ("image/jpeg", "icon.jpg"),
        other => return Err(ApiError::internal(format!("icon of {partner}/{name}@{version} stored as {other:?}"))),
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    // A registered version's icon never changes (its artifact is pinned to its digest). A
    // tenant's private app is that tenant's: no shared cache keeps its icon.
    let private = partner.starts_with('~');
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if private {
            "private, max-age=31536000, immutable"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    let disposition =
        if file_name == "icon.png" { "inline; filename=\"icon.png\"" } else { "inline; filename=\"icon.jpg\"" };
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
    Ok(response)
}
