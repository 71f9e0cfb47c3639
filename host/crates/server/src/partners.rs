//! The partner API: register versions from a registry, list the partner's apps, yank.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::PageQuery;
use super::catalog::{VersionSummary, version_summary};
use super::{ApiResult, Caller, Json, Page, Path, Problem, Query, Shared};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(register_version)).routes(routes!(partner_apps)).routes(routes!(yank_version))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterVersion {
    /// `host/repository:tag`, on a registry the operator configured and under a
    /// repository prefix the operator assigned to the partner there. (`oci-layout:`
    /// directories are the operator's, through the CLI, never a partner's.)
    reference: String,
}

/// A registered version: the digests of its manifest and component, and the
/// fingerprint of the certificate that signed it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RegisteredVersion {
    app: String,
    version: String,
    digest: String,
    component_digest: String,
    signer: String,
}

impl From<kiosk_core::lifecycle::Registered> for RegisteredVersion {
    fn from(r: kiosk_core::lifecycle::Registered) -> Self {
        Self {
            app: r.app,
            version: r.version,
            digest: r.digest,
            component_digest: r.component_digest,
            signer: r.signer,
        }
    }
}

#[utoipa::path(post, path = "/v1/partners/{partner}/apps/{name}/versions", tag = "partner", request_body = RegisterVersion,
    responses((status = 201, description = "pulled, verified, compiled and registered: the version's first install does not wait for the compiler", body = RegisteredVersion),
        (status = 422, body = Problem, description = "artifact refused; also `registry-not-allowed` (unconfigured registry, repository outside the partner's prefixes, a refused redirect, token realm or address), `layout-not-allowed`, and `component-not-runnable` (the component cannot be compiled, or cannot run under the operator's limits: the detail names the limit)"),
        (status = 404, body = Problem, description = "`tag-not-found`: the registry has no such tag"),
        (status = 409, body = Problem, description = "`version-exists`: the version is registered already; `moved-tag`: the tag now points at other content than the registered version"),
        (status = 413, body = Problem, description = "`body-too-large`, or an artifact over the size limits"),
        (status = 502, body = Problem, description = "`registry-unavailable` or `registry-refused`"),
        (status = 503, body = Problem, description = "`no-sandbox-slot` for the instantiation check, or shutting down")))]
async fn register_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name)): Path<(String, String)>,
    Json(body): Json<RegisterVersion>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let registered = s.register_from_registry(&partner, &name, &body.reference, &caller.0.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(RegisteredVersion::from(registered))))
}

/// One of the partner's apps (`partner/name`) with its versions.
#[derive(Serialize, utoipa::ToSchema)]
struct PartnerApp {
    app: String,
    /// Display name.
    name: String,
    versions: Vec<VersionSummary>,
}

/// `after` is the `app` of the last item of the previous page.
#[utoipa::path(get, path = "/v1/partners/{partner}/apps", tag = "partner", params(PageQuery),
    responses((status = 200, description = "the partner's apps by id, each with its versions (highest first)", body = Page<PartnerApp>)))]
async fn partner_apps(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let limit = q.limit()?;
    let items: Vec<PartnerApp> = s
        .partner_apps(&partner)
        .await?
        .into_iter()
        .map(|(app, versions)| PartnerApp {
            app: app.app,
            name: app.name,
            versions: versions.iter().map(version_summary).collect(),
        })
        .collect();
    Ok(axum::Json(Page::after(items, q.after.as_deref(), limit, |a: &PartnerApp| a.app.as_str())))
}

/// A version yanked by its partner.
#[derive(Serialize, utoipa::ToSchema)]
struct Yanked {
    app: String,
    version: String,
    yanked: bool,
}

#[utoipa::path(post, path = "/v1/partners/{partner}/apps/{name}/versions/{version}/yank", tag = "partner",
    responses((status = 200, description = "yanked: no new installs or upgrades", body = Yanked),
              (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn yank_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, name, version)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.partner(&partner)?;
    let app = s.partner_yank(&partner, &name, &version, &caller.0.actor()).await?;
    Ok(axum::Json(Yanked { app, version, yanked: true }))
}
