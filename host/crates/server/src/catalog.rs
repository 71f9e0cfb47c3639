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
use kiosk_core::records::VersionRow;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(categories))
        .routes(routes!(catalog_apps))
        .routes(routes!(catalog_app))
        .routes(routes!(catalog_versions))
        .routes(routes!(catalog_version))
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

/// A disabled partner's apps are not in the catalog: 404 as for an unknown app.
async fn listed(s: &super::AppState, partner: &str, name: &str) -> ApiResult<()> {
    Ok(s.listed(partner, name).await?)
}

/// `after` is the last category of the previous page.
#[utoipa::path(get, path = "/v1/catalog/categories", tag = "catalog", params(PageQuery),
    responses((status = 200, description = "every category an app declares, by name", body = Page<String>)))]
async fn categories(
    State(s): State<Shared>,
    _caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit()?;
    let mut all: Vec<String> = s.catalog().await?.into_iter().flat_map(|a| a.categories).collect();
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

/// An app in the catalog (`partner/name`).
#[derive(Serialize, utoipa::ToSchema)]
struct CatalogApp {
    app: String,
    /// Display name.
    name: String,
    description: String,
    categories: Vec<String>,
}

#[utoipa::path(get, path = "/v1/catalog/apps", tag = "catalog", params(CatalogQuery),
    responses((status = 200, description = "the apps that match, by id", body = Page<CatalogApp>)))]
async fn catalog_apps(
    State(s): State<Shared>,
    _caller: Caller,
    Query(q): Query<CatalogQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = super::admin::page_limit(q.limit)?;
    let needle = q.q.map(|t| t.to_lowercase());
    let apps: Vec<CatalogApp> = s
        .catalog()
        .await?
        .into_iter()
        .filter(|a| q.category.as_ref().is_none_or(|c| a.categories.contains(c)))
        .filter(|a| {
            needle
                .as_ref()
                .is_none_or(|n| [&a.app, &a.name, &a.description].iter().any(|f| f.to_lowercase().contains(n)))
        })
        .map(|a| CatalogApp { app: a.app, name: a.name, description: a.description, categories: a.categories })
        .collect();
    Ok(axum::Json(Page::after(apps, q.after.as_deref(), limit, |a: &CatalogApp| a.app.as_str())))
}

/// An app with its latest installable version (what an install without a version gets;
/// null when every version is yanked or quarantined).
#[derive(Serialize, utoipa::ToSchema)]
struct CatalogAppDetail {
    app: String,
    name: String,
    description: String,
    categories: Vec<String>,
    latest: Option<String>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}", tag = "catalog",
    responses((status = 200, description = "the app", body = CatalogAppDetail),
              (status = 404, description = "`not-found`: no such app", body = Problem)))]
async fn catalog_app(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    listed(&s, &partner, &name).await?;
    let (app, versions) = s.app_versions(&partner, &name).await?;
    // What an install without a version gets: neither yanked nor quarantined.
    let latest = kiosk_core::lifecycle::resolve_version(&app, &versions, None, None).ok().map(|v| v.version);
    let manifest: Value = serde_json::from_str(&versions[0].manifest).unwrap_or_default();
    let categories = manifest["categories"].as_array().map(|c| c.iter().map(text).collect()).unwrap_or_default();
    Ok(axum::Json(CatalogAppDetail {
        app,
        name: text(&manifest["name"]),
        description: text(&manifest["description"]),
        categories,
        latest,
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
    _caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Query(q): Query<VersionPage>,
) -> ApiResult<impl IntoResponse> {
    let limit = super::admin::page_limit(q.limit)?;
    listed(&s, &partner, &name).await?;
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
    manifest: Value,
}

#[utoipa::path(get, path = "/v1/catalog/apps/{partner}/{name}/versions/{version}", tag = "catalog",
    responses((status = 200, description = "the version and its manifest", body = CatalogVersion),
              (status = 404, description = "`not-found`: no such app or version", body = Problem)))]
async fn catalog_version(
    State(s): State<Shared>,
    _caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    listed(&s, &partner, &name).await?;
    let (app, versions) = s.app_versions(&partner, &name).await?;
    let v = versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::not_found(format!("no version {app}@{version}")).field("version"))?;
    let manifest: Value = serde_json::from_str(&v.manifest).unwrap_or_default();
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
        manifest,
    }))
}
