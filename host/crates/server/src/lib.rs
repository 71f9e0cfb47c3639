//! The HTTP server (`kiosk serve`): axum handlers over the store, the registry client
//! and the runtime. Handlers never touch a wasmtime Store: calls run on blocking threads
//! through `Runtime`, and no database I/O happens while a Store is held (key-value
//! snapshots are loaded before and committed after a call).
//!
//! Routes are declared once, by resource (`operator`, `admin`, `partners`, `catalog`,
//! `installations`, `usage`, `watches`), with `utoipa_axum::routes!`: the router and the OpenAPI
//! document (`GET /v1/openapi.json`, completed by `contract::Contract`) come from the same
//! list. The web console (`/console`, `console`) is static pages over that same API.

mod admin;
mod catalog;
mod console;
pub mod contract;
mod egress;
mod egress_policy;
pub mod error;
mod estate;
mod installations;
mod limits;
mod logs;
mod operator;
pub mod ops;
mod partners;
mod private_apps;
mod quotas;
pub mod serve;
mod sinks;
mod statements;
mod usage;
mod watches;

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::{Router, response::IntoResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::error::{ApiError, Json, Path, Problem, Query};
pub use self::usage::{MAX_BATCH_RECORDS, export_id};
use kiosk_core::records::Principal;

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
        match state.authenticate(token.trim()).await? {
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

    /// The tenant itself, or the operator reading (GET only: the operator never acts
    /// as a tenant).
    fn tenant_or_operator_reading(&self, tenant: &str) -> ApiResult<()> {
        match &self.0 {
            Principal::Operator => Ok(()),
            _ => self.tenant(tenant),
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

/// A name the API creates (partner name, tenant id): 1-64 of a-z, 0-9, '-', not
/// starting with '-' (`contract::SLUG_PATTERN`).
fn slug(field: &str, value: &str) -> ApiResult<()> {
    if kiosk_domain::manifest::is_slug(value) {
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

// --- router --------------------------------------------------------------------------

/// What the document says besides its operations (which the routes add).
#[derive(OpenApi)]
#[openapi(
    info(title = "Kiosk API", description = "WebAssembly plugin host for marketplace apps (SPEC §8)."),
    // Enums only parameters name (utoipa references them without adding them).
    components(schemas(Problem, AnyJson, usage::Granularity, usage::UsageFormat, estate::StateFilter))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Every route, with its OpenAPI operation.
fn api() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_document))
        .routes(routes!(ops::metrics))
        .merge(operator::routes())
        .merge(admin::routes())
        .merge(partners::routes())
        .merge(catalog::routes())
        .merge(installations::routes())
        .merge(egress::routes())
        .merge(egress_policy::routes())
        .merge(logs::routes())
        .merge(usage::routes())
        .merge(limits::routes())
        .merge(estate::routes())
        .merge(watches::routes())
        .merge(private_apps::routes())
        .merge(quotas::routes())
        .merge(sinks::routes())
        .merge(statements::routes())
        .merge(console::routes())
}

/// The OpenAPI document of the API (what `GET /v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().split_for_parts().1;
    // The modifier ran on the base document, before the routes added their operations.
    utoipa::Modify::modify(&contract::Contract, &mut doc);
    doc
}

/// Every route of the API.
pub fn router(state: Shared) -> Router {
    ops::recorder();
    let (routes, _) = api().split_for_parts();
    routes
        // The web console: static pages over this same API (`console`).
        .merge(console::pages())
        // Routing rejections are problems too (SPEC §8), never axum's empty or plain-text bodies.
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route does not take that method")
        })
        // Bodies are read by the `Json` extractor, which answers 413 as a problem.
        .layer(axum::extract::DefaultBodyLimit::max(error::BODY_LIMIT_BYTES))
        // A request id, a span and an access line for every request, routed or not.
        .layer(axum::middleware::from_fn(ops::request_context))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "database reachable, calls accepted", body = String, content_type = "text/plain"),
              (status = 503, description = "`shutting-down`: the runtime stopped taking calls; `not-ready`: the database is not reachable", body = Problem)))]
async fn readyz(State(s): State<Shared>) -> ApiResult<&'static str> {
    if s.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "the server is shutting down: calls are no longer accepted",
        )
        .retry_after(1));
    }
    if !s.database_reachable().await {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "the database is not reachable"));
    }
    Ok("ready")
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_document() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::to_string(&openapi()).unwrap_or_default());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.as_str())
}

/// An optional integer member of a body (`kiosk_api::optional_integer`).
fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    kiosk_api::optional_integer(d)
}

/// A page of a list (`?limit=&after=`): `next` is the `after` of the next page, null on
/// the last one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` (already after the cursor, at most `limit` + 1 asked for) with
    /// the cursor of the next page.
    fn of(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(&cursor)
        } else {
            None
        };
        Page { items, next }
    }

    /// A page of a list the core gives whole: `items` in the order of their (unique)
    /// `key`, those whose key sorts after the cursor `after`, at most `limit`; `next` is
    /// the key of the page's last item while more follow.
    fn after(mut items: Vec<T>, after: Option<&str>, limit: i64, key: impl Fn(&T) -> &str) -> Self {
        items.sort_by(|a, b| key(a).cmp(key(b)));
        let start = after.map_or(0, |after| items.partition_point(|i| key(i) <= after));
        let page = items.into_iter().skip(start).take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1));
        Page::of(page.collect(), limit, |i| key(i).to_string())
    }
}

/// Any JSON value: what an operation takes and gives is the app's.
#[derive(Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct AnyJson(pub Value);

impl utoipa::PartialSchema for AnyJson {
    /// One of the JSON types, recursively: text (strings and member names) without U+0000
    /// at any depth, as every backend stores it (`contract::TEXT_PATTERN`).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String).pattern(Some(contract::TEXT_PATTERN));
        let any = || Ref::from_schema_name("AnyJson");
        OneOfBuilder::new()
            .description(Some("Any JSON value: object, array, string, number, boolean or null."))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property_names(Some(text()))
                    .additional_properties(Some(AdditionalProperties::RefOr(any().into()))),
            )
            .item(ArrayBuilder::new().items(any()))
            .item(text())
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}

/// A JSON object of any members (a configuration): member names and text without U+0000
/// at any depth.
#[derive(Debug)]
pub struct JsonObject;

impl utoipa::PartialSchema for JsonObject {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let text = ObjectBuilder::new().schema_type(Type::String).pattern(Some(contract::TEXT_PATTERN));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("A JSON object of any members."))
            .property_names(Some(text))
            .additional_properties(Some(AdditionalProperties::RefOr(Ref::from_schema_name("AnyJson").into())))
            .into()
    }
}

impl utoipa::ToSchema for JsonObject {}

impl utoipa::ToSchema for AnyJson {}
