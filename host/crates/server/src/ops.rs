//! What operators watch: Prometheus metrics (`GET /metrics`), the request context of
//! every request (request id, span, access log line) and how the server's own log is
//! written (`--log-format`).
//!
//! The runtime, core and store record through the `metrics` facade (no I/O); only this
//! module installs a recorder and renders it. The recorder is process-global and
//! installed once, so several servers built in one process (tests) share it.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument as _;

pub use kiosk_core::config::LogFormat;

use super::{ApiError, ApiResult, Caller, Problem, Shared};

/// The header a request id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id accepted from a client, bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The process's recorder, installed on first use. `None` when another recorder was
/// installed first (an embedding program's): then `/metrics` says so.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match builder().and_then(PrometheusBuilder::install_recorder) {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed: /metrics will answer 503");
                None
            }
        })
        .as_ref()
}

/// Histograms with buckets (not summaries), so replicas aggregate: latencies from 1 ms
/// to a minute (the longest a call or commit should take), batch sizes up to the
/// largest partner batch.
fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::Matcher;
    const SECONDS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    const SIZES: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full("kiosk_ledger_batch_size".into()), &SIZES)
}

/// Prometheus text exposition of this process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "operator",
    responses((status = 200, description = "Prometheus text format (version 0.0.4): calls, limits, admission, registry pulls, usage, ledger, collection lag", body = String, content_type = "text/plain"),
              (status = 503, description = "`metrics-unavailable`: no recorder could be installed in this process", body = Problem)))]
pub(super) async fn metrics(State(s): State<Shared>, caller: Caller) -> ApiResult<impl IntoResponse> {
    // App ids and call volumes across tenants are the operator's to see.
    caller.operator()?;
    let Some(handle) = recorder() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics-unavailable",
            "no metrics recorder could be installed in this process",
        ));
    };
    metrics::gauge!("kiosk_sandbox_slots_in_use").set(s.slots_in_use() as f64);
    handle.run_upkeep();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()))
}

/// A client's request id if it is sane (1-128 visible ASCII characters), else a new one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Every request: a request id (the client's if sane, else generated) echoed in the
/// response, a span carrying it around the handler (a call's span, with its call id,
/// nests inside), a debug line when it arrives, and one access line at info when it is
/// answered.
pub(super) async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let method = req.method().clone();
    // The route as declared (`/v1/tenants/{tenant}/…`), never the raw path: bounded.
    let route = req.extensions().get::<MatchedPath>().map_or("<unmatched>", |p| p.as_str()).to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    // At debug: which requests are in flight (a stuck call shows here before it ends).
    span.in_scope(|| tracing::debug!(target: "kiosk::access", "request received"));
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            target: "kiosk::access",
            method = %method,
            route = %route,
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            request_id = %id,
            "request"
        );
    });
    let labels = [("route", route), ("status", status.to_string())];
    metrics::counter!("kiosk_http_requests_total", &labels).increment(1);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Installs the process's log subscriber on stderr: `filter` (e.g. `KIOSK_LOG`), in
/// `format`; ANSI colours only when stderr is a terminal.
pub fn init_logging(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).with_current_span(true).with_span_list(false).try_init(),
    };
}
