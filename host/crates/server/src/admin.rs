//! Operator administration of trust and tokens (SPEC §2 step 6, §8): partner
//! certificates (add with ownership and revocations, list with their state, remove),
//! the quarantine of every version a revoked or removed certificate signed, the
//! operator's yank and quarantine of any version, and tokens (list, revoke).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, AppState, Caller, Json, Page, Path, Problem, Query, Shared};
use kiosk_api::trust::{CertificateRemoved, CertificateView, CertificatesAdded, QuarantinedVersion, VersionState};
use kiosk_core::certificates::{VersionAction, normalize_fingerprint};

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(add_certificate))
        .routes(routes!(list_certificates))
        .routes(routes!(remove_certificate))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(quarantined_versions))
        .routes(routes!(operator_yank))
        .routes(routes!(operator_unyank))
        .routes(routes!(operator_quarantine))
        .routes(routes!(operator_release))
}

// --- pages ---------------------------------------------------------------------------

/// `?limit=&after=`: at most `limit` items (1-1000, default 100) after the cursor
/// `after` (the `next` of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Most items on the page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    pub(super) after: Option<String>,
}

impl PageQuery {
    pub(super) fn limit(&self) -> ApiResult<i64> {
        page_limit(self.limit)
    }
}

/// `limit`: 1-1000, default 100; out of range is a 400 `invalid-query`.
/// Longest cursor, digits (cursors are non-negative and below 10^18).
pub(super) const MAX_CURSOR_DIGITS: usize = 18;

/// A cursor query parameter: 1-18 ASCII digits; anything else is a 400 naming `field`
/// and saying which cursor it must be (`what`).
pub(super) fn cursor(field: &'static str, value: &str, what: &str) -> ApiResult<i64> {
    let valid = !value.is_empty() && value.len() <= MAX_CURSOR_DIGITS && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<i64>() {
        Ok(cursor) if valid => Ok(cursor),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("{field} must be {what} (1-{MAX_CURSOR_DIGITS} digits)"),
        )
        .field(field)),
    }
}

pub(super) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            format!("limit {other} is out of range: use 1-1000"),
        )
        .field("limit")),
    }
}

// --- certificates ----------------------------------------------------------------------

/// `POST /v1/partners/{partner}/certificates` (also the console's upload): 201 when at
/// least one certificate is new, else 200.
pub(super) async fn add_certificates(
    s: &AppState,
    actor: &str,
    partner: &str,
    text: &str,
) -> ApiResult<axum::response::Response> {
    let added = s.add_certificates(partner, text.as_bytes(), actor).await?;
    let status = if added.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(added)).into_response())
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
#[utoipa::path(post, path = "/v1/partners/{partner}/certificates", tag = "operator", request_body = NewCertificate,
    responses((status = 201, description = "registered (at least one certificate is new)", body = CertificatesAdded),
              (status = 200, description = "registered copies updated (e.g. revoked)", body = CertificatesAdded),
              (status = 409, description = "`certificate-owned`: a fingerprint is registered for another partner; nothing is written", body = Problem),
              (status = 422, description = "`invalid-certificate`: not an OpenPGP certificate or revocation of a registered one", body = Problem)))]
async fn add_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Json(body): Json<NewCertificate>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    add_certificates(&s, &caller.0.actor(), &partner, &body.certificate).await
}

#[utoipa::path(get, path = "/v1/partners/{partner}/certificates", tag = "operator", params(PageQuery),
    responses((status = 200, description = "the partner's certificates by fingerprint, with source and state", body = Page<CertificateView>),
              (status = 404, description = "`not-found`: no such partner", body = Problem)))]
async fn list_certificates(
    State(s): State<Shared>,
    caller: Caller,
    Path(partner): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let after = q.after.as_deref().map(normalize_fingerprint);
    let items = s.certificates(&partner).await?;
    Ok(axum::Json(Page::after(items, after.as_deref(), limit, |v: &CertificateView| &v.fingerprint)))
}

#[utoipa::path(delete, path = "/v1/partners/{partner}/certificates/{fingerprint}", tag = "operator",
    responses((status = 200, description = "removed; every version it signed is quarantined (listed)", body = CertificateRemoved),
              (status = 404, description = "`not-found`: no such partner or certificate", body = Problem),
              (status = 409, description = "`certificate-in-config`: registered in the operator config file", body = Problem)))]
async fn remove_certificate(
    State(s): State<Shared>,
    caller: Caller,
    Path((partner, fingerprint)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    Ok(axum::Json(s.remove_certificate(&partner, &fingerprint, &caller.0.actor()).await?))
}

// --- versions (operator) -----------------------------------------------------------------

async fn version_action(
    s: &AppState,
    caller: &Caller,
    (partner, name, version): (String, String, String),
    action: VersionAction,
) -> ApiResult<axum::Json<VersionState>> {
    caller.operator()?;
    Ok(axum::Json(s.version_action((&partner, &name, &version), action, &caller.0.actor()).await?))
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/yank", tag = "operator",
    responses((status = 200, body = VersionState, description = "yanked: no new installs or upgrades"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_yank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Yank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/unyank", tag = "operator",
    responses((status = 200, body = VersionState, description = "installable again unless quarantined"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_unyank(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Unyank).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/quarantine", tag = "operator",
    responses((status = 200, body = VersionState, description = "quarantined: no new installs or upgrades; running installations go on"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_quarantine(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Quarantine).await
}

#[utoipa::path(post, path = "/v1/apps/{partner}/{name}/versions/{version}/release", tag = "operator",
    responses((status = 200, body = VersionState, description = "released from quarantine (whatever quarantined it)"), (status = 404, description = "`not-found`: no such version", body = Problem)))]
async fn operator_release(
    State(s): State<Shared>,
    caller: Caller,
    Path(p): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    version_action(&s, &caller, p, VersionAction::Release).await
}

/// `after` is `app@version`, from `next`.
#[utoipa::path(get, path = "/v1/versions/quarantined", tag = "operator", params(PageQuery),
    responses((status = 200, description = "quarantined versions with their signer and reason", body = Page<QuarantinedVersion>)))]
async fn quarantined_versions(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let after = q.after.as_deref().map(|a| a.rsplit_once('@').unwrap_or((a, "")));
    let items = s.quarantined_versions(after, limit + 1).await?;
    Ok(axum::Json(Page::of(items, limit, |v: &QuarantinedVersion| format!("{}@{}", v.app, v.version))))
}

// --- tokens ------------------------------------------------------------------------------

/// A token as the operator sees it: never its secret or the secret's hash.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    id: String,
    role: String,
    scope: Option<String>,
    label: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked: bool,
    expired: bool,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "operator", params(PageQuery),
    responses((status = 200, description = "tokens by id; never a secret or its hash", body = Page<TokenView>)))]
async fn list_tokens(
    State(s): State<Shared>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    let limit = q.limit()?;
    let now = kiosk_domain::metering::now_ms() as i64;
    let items = s
        .tokens(q.after.as_deref(), limit + 1)
        .await?
        .into_iter()
        .map(|t| TokenView {
            expired: t.expires_ms.is_some_and(|e| e <= now),
            id: t.id,
            role: t.role,
            scope: t.scope,
            label: t.label,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            revoked: t.revoked,
        })
        .collect();
    Ok(axum::Json(Page::of(items, limit, |v| v.id.clone())))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "operator",
    responses((status = 204, description = "revoked: the token fails from the next request on"),
              (status = 404, description = "`not-found`: no such token", body = Problem),
              (status = 409, description = "`last-operator-token`: the last operator token that works", body = Problem)))]
async fn revoke_token(State(s): State<Shared>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    caller.operator()?;
    s.revoke_token(&id, &caller.0.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
