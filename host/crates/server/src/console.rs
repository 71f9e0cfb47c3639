//! The web console (`/console`) and the one API route it needs besides the others
//! (`GET /v1/whoami`).
//!
//! The console is static files compiled into the binary (`console/`): an HTML shell, a
//! stylesheet and ES modules (`console.js` and the modules it imports, e.g. `catalog.js`:
//! icons, publishers and changelogs) that read and write through the same typed API as
//! any client, with the caller's bearer token. The server renders nothing per
//! user here, so the console adds no second way to reach data: every authorisation
//! decision stays in the API handlers. Assets are public (they hold no data) and served
//! under a Content-Security-Policy that allows this origin's script, style and API only:
//! no inline script, no other origin, no framing.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiResult, Caller, Shared};
use kiosk_core::records::Principal;

pub(super) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// Who a token belongs to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Identity {
    /// `operator`, `partner` or `tenant`.
    role: &'static str,
    /// The partner name or tenant id (null for the operator).
    scope: Option<String>,
}

#[utoipa::path(get, path = "/v1/whoami", tag = "auth",
    responses((status = 200, description = "the caller's role and scope", body = Identity),
              (status = 401, description = "`unauthorized`: no token, or one that is unknown, revoked or expired", body = super::Problem)))]
async fn whoami(caller: Caller) -> ApiResult<axum::Json<Identity>> {
    let (role, scope) = match caller.0 {
        Principal::Operator => ("operator", None),
        Principal::Partner(p) => ("partner", Some(p)),
        Principal::Tenant(t) => ("tenant", Some(t)),
    };
    Ok(axum::Json(Identity { role, scope }))
}

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const CATALOG_SCRIPT: &str = include_str!("../console/catalog.js");
const PRIVATE_SCRIPT: &str = include_str!("../console/private.js");
const SINKS_SCRIPT: &str = include_str!("../console/sinks.js");
const DOM_SCRIPT: &str = include_str!("../console/dom.js");
const FORMS_SCRIPT: &str = include_str!("../console/forms.js");
const USAGE_SCRIPT: &str = include_str!("../console/usage.js");
const OPERATOR_SCRIPT: &str = include_str!("../console/operator.js");
const STYLE: &str = include_str!("../console/console.css");

/// This origin's script, style and API; nothing inline, nothing framed, no form posts
/// (the console submits with `fetch`), and no HTML from strings at all (Trusted Types
/// with no policy: `innerHTML` and the like throw, so API text can only be text). Images
/// only from `blob:` URLs the console makes of icons it fetched from the API with the
/// token (an `<img src>` to the API would carry no token).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'; \
                   require-trusted-types-for 'script'; trusted-types 'none'";

/// The console's routes (outside the OpenAPI document: they are pages, not API).
pub(super) fn pages() -> Router<Shared> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/console/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/catalog.js", get(|| async { asset("text/javascript; charset=utf-8", CATALOG_SCRIPT) }))
        .route("/console/private.js", get(|| async { asset("text/javascript; charset=utf-8", PRIVATE_SCRIPT) }))
        .route("/console/sinks.js", get(|| async { asset("text/javascript; charset=utf-8", SINKS_SCRIPT) }))
        .route("/console/dom.js", get(|| async { asset("text/javascript; charset=utf-8", DOM_SCRIPT) }))
        .route("/console/forms.js", get(|| async { asset("text/javascript; charset=utf-8", FORMS_SCRIPT) }))
        .route("/console/usage.js", get(|| async { asset("text/javascript; charset=utf-8", USAGE_SCRIPT) }))
        .route("/console/operator.js", get(|| async { asset("text/javascript; charset=utf-8", OPERATOR_SCRIPT) }))
        .route("/console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    // Assets change with the binary; revalidating costs one small request per page load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
