//! API errors as `application/problem+json` (RFC 9457) with a stable `type`, a human
//! `detail`, and the field at fault.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use kiosk_core::error::{Class, Failure};
use kiosk_domain::manifest::is_slug;

/// An API error. Built from domain errors at the HTTP edge only.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable slug, e.g. `config-invalid`; the `type` URI is `urn:kiosk:problem:<slug>`.
    pub kind: &'static str,
    pub detail: String,
    pub field: Option<String>,
    pub errors: Vec<String>,
    /// Seconds after which a retry may succeed (`Retry-After`, for 429 and 503).
    pub retry_after_s: Option<u32>,
    /// The app's call that failed (its log lines carry it). Boxed, like `retry_after_s`
    /// narrowed: every handler's error stays small.
    pub call_id: Option<Box<str>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The app's call that failed or refused: its log lines carry this id.
    #[serde(rename = "callId", skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after_s: None,
            call_id: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX));
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    pub fn forbidden(what: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this token may not {what}"))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", what)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

/// The one table from a core failure's class to an HTTP status.
fn status_of(class: Class) -> StatusCode {
    match class {
        Class::BadRequest => StatusCode::BAD_REQUEST,
        Class::Unauthorized => StatusCode::UNAUTHORIZED,
        Class::Forbidden => StatusCode::FORBIDDEN,
        Class::NotFound => StatusCode::NOT_FOUND,
        Class::Conflict => StatusCode::CONFLICT,
        Class::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Class::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        Class::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Class::Upstream => StatusCode::BAD_GATEWAY,
        Class::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        Self {
            status: status_of(f.class),
            kind: f.kind.as_str(),
            detail: f.detail,
            field: f.field,
            errors: f.errors,
            retry_after_s: f.retry_after_s,
            call_id: f.call_id,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            type_: format!("urn:kiosk:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("error").to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            field: self.field,
            errors: self.errors,
            call_id: self.call_id.map(String::from),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/problem+json")], json).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// Text no backend can store alike: PostgreSQL refuses U+0000 in `TEXT`, SQLite keeps it.
/// Refused at the HTTP edge so both backends answer the same 422.
pub fn invalid_text(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-text", detail).field(field)
}

/// One RFC 6901 reference token.
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The first U+0000 in `value` (object keys and strings, at any depth), as a problem naming
/// its JSON pointer. A key holding U+0000 is named by the pointer of its object.
fn find_nul(value: &serde_json::Value, at: &mut String) -> Option<ApiError> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(invalid_text(at.clone(), format!("the string at {} contains U+0000 (NUL)", display_pointer(at))))
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = at.len();
            at.push_str(&format!("/{i}"));
            let found = find_nul(v, at);
            at.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(invalid_text(
                    at.clone(),
                    format!("a member name of the object at {} contains U+0000 (NUL)", display_pointer(at)),
                ));
            }
            let len = at.len();
            at.push('/');
            at.push_str(&pointer_token(k));
            let found = find_nul(v, at);
            at.truncate(len);
            found
        }),
        _ => None,
    }
}

fn display_pointer(p: &str) -> &str {
    if p.is_empty() { "the top level" } else { p }
}

/// The JSON pointer of a serde path (`records[0].quantity` → `/records/0/quantity`).
fn serde_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", pointer_token(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{}", pointer_token(variant))),
            Segment::Unknown => out.push_str("/?"),
        }
    }
    out
}

/// The member serde names in "missing field `x`" and "duplicate field `x`", errors reported
/// at the path of the enclosing object (an unknown field is reported at its own path).
fn member_named(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `").or_else(|| message.strip_prefix("duplicate field `"))?;
    rest.split_once('`').map(|(name, _)| name)
}

/// JSON bodies whose rejection is a problem+json naming the cause; a body holding U+0000
/// anywhere is a 422 `invalid-text` naming the JSON pointer of the offending value.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(JsonRejection::MissingJsonContentType(_)) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "the body must be JSON with Content-Type: application/json",
                ));
            }
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    format!(
                        "the body is larger than this request accepts ({BODY_LIMIT_BYTES} bytes; partner usage \
                         batches {USAGE_BATCH_BODY_LIMIT_BYTES} bytes)"
                    ),
                ));
            }
            Err(rejection) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", rejection.body_text()));
            }
        };
        if let Some(problem) = find_nul(&value, &mut String::new()) {
            return Err(problem);
        }
        typed(value).map(Json)
    }
}

/// `value` read as a `T` (a body read as JSON first, e.g. to check the caller before its
/// shape): an error is a 400 `malformed-json` naming the JSON pointer at fault.
pub fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = serde_pointer(e.path());
        if let Some(name) = member_named(&e.inner().to_string()) {
            field = format!("{field}/{}", pointer_token(name));
        }
        let detail = format!("{}: {}", display_pointer(&field), e.inner());
        let problem = ApiError::new(StatusCode::BAD_REQUEST, "malformed-json", detail);
        if field.is_empty() { problem } else { problem.field(field) }
    })
}

/// Largest request body (the router's `DefaultBodyLimit`).
pub const BODY_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// Largest partner usage batch body: room for `MAX_BATCH_RECORDS` records of ~150 bytes.
pub const USAGE_BATCH_BODY_LIMIT_BYTES: usize = 8 * 1024 * 1024;

/// Path parameters whose rejection is a problem+json (400 `invalid-path`) naming the
/// parameter; a parameter holding U+0000 (`%00`) is a 422 `invalid-text` naming it.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::RawPathParams;
        let names = |raw: Option<RawPathParams>| -> Vec<String> {
            raw.map(|r| r.iter().map(|(k, _)| k.to_string()).collect()).unwrap_or_default()
        };
        let value = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => v,
            Err(rejection) => {
                let raw = RawPathParams::from_request_parts(parts, state).await.ok();
                return Err(path_problem(rejection, &names(raw)));
            }
        };
        let raw = RawPathParams::from_request_parts(parts, state).await.map_err(ApiError::internal)?;
        if let Some((name, _)) = raw.iter().find(|(_, v)| v.contains('\0')) {
            return Err(invalid_text(name, format!("path parameter {name} contains U+0000 (NUL)")));
        }
        // A name the API creates (tenant, partner, app) that breaks its pattern names
        // nothing: 404, as the document's pattern says, never an empty 200.
        // An app's owner (`partner`) may also be a tenant's private namespace, `~tenant`.
        let slug = |(name, value): &(&str, &str)| match *name {
            "partner" => !kiosk_domain::ids::is_owner(value),
            "tenant" | "name" => !is_slug(value),
            _ => false,
        };
        if let Some((name, value)) = raw.iter().find(slug) {
            return Err(
                ApiError::not_found(format!("no {name} {value:?}: names are 1-64 of a-z, 0-9, '-'")).field(name)
            );
        }
        Ok(Path(value))
    }
}

fn path_problem(rejection: axum::extract::rejection::PathRejection, names: &[String]) -> ApiError {
    use axum::extract::path::ErrorKind;
    use axum::extract::rejection::PathRejection;
    let e = match rejection {
        PathRejection::FailedToDeserializePathParams(e) => e,
        // No parameters on the route: a handler wired to the wrong route.
        other => return ApiError::internal(other.body_text()),
    };
    let kind = e.into_kind();
    let field = match &kind {
        ErrorKind::ParseErrorAtKey { key, .. }
        | ErrorKind::InvalidUtf8InPathParam { key }
        | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
        ErrorKind::ParseErrorAtIndex { index, .. } => names.get(*index).cloned(),
        ErrorKind::ParseError { .. } | ErrorKind::Message(_) if names.len() == 1 => names.first().cloned(),
        ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
            return ApiError::internal(kind);
        }
        _ => None,
    };
    let problem = ApiError::new(StatusCode::BAD_REQUEST, "invalid-path", format!("path: {kind}"));
    match field {
        Some(f) => problem.field(f),
        None => problem,
    }
}

/// Query strings whose rejection is a problem+json (400 `invalid-query`) naming the
/// parameter; a name or value holding U+0000 (`%00`) is a 422 `invalid-text` naming it.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name.contains('\0') {
                let shown = name.replace('\0', "\\u0000");
                return Err(invalid_text(shown, "a query parameter name contains U+0000 (NUL)"));
            }
            if value.contains('\0') {
                return Err(invalid_text(name.as_ref(), format!("query parameter {name} contains U+0000 (NUL)")));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let message = e.inner().to_string();
            let field = match e.path().to_string() {
                p if p == "." => member_named(&message).map(str::to_string),
                p => Some(p),
            };
            let detail = match &field {
                Some(f) => format!("query parameter {f}: {message}"),
                None => format!("query string: {message}"),
            };
            let problem = ApiError::new(StatusCode::BAD_REQUEST, "invalid-query", detail);
            match field {
                Some(f) => problem.field(f),
                None => problem,
            }
        })
    }
}
