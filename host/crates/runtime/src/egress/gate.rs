//! The gate of one call: `CallEgress` is the `WasiHttpHooks` of a 0.2.0 call's Store.
//! Every request the guest sends is judged here, in this order, before any byte leaves:
//! method and target form, the call's and the tenant's counts, the tenant's switch,
//! the destination (declared by the manifest or set by the tenant; never an address
//! literal), the operator's policy, header bounds, then bound secrets substituted. It
//! is then sent through the app's pooled client (`connect`), within the call's
//! deadline, and its response body is bounded (`body`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use http::header::{HOST, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::body::{Finish, LimitedBody, RequestBody};
use super::connect::ConnectRefusal;
use super::{AppEgress, Egress, InstallationEgress};
use crate::logs::{self, Level, LogLine};
use kiosk_domain::egress::{EgressUnit, Target};
use kiosk_domain::metering::now_ms;
use kiosk_domain::net::{Scheme, ip_literal, non_public, split_port};

/// What a call's requests did, collected after the call: lines for the installation's
/// log and the egress to meter per SKU.
#[derive(Debug, Default)]
pub struct EgressRecord {
    pub lines: Vec<LogLine>,
    /// Per egress-metered SKU: (requests answered, response body bytes received).
    pub metered: HashMap<String, (u64, u64)>,
    /// Refusals past `MAX_REFUSAL_LINES`, counted instead of logged.
    pub unlogged_refusals: u64,
}

/// Refused requests logged one by one per call; the rest are counted in one line, so a
/// guest looping on refused requests cannot grow the host's memory or the log.
pub const MAX_REFUSAL_LINES: usize = 16;

impl EgressRecord {
    /// The quantity to meter for `sku` in `unit`.
    pub fn quantity(&self, sku: &str, unit: EgressUnit) -> u64 {
        let (requests, bytes) = self.metered.get(sku).copied().unwrap_or_default();
        match unit {
            EgressUnit::Request => requests,
            EgressUnit::KibReceived => bytes.div_ceil(1024),
        }
    }
}

pub(crate) type SharedRecord = Arc<Mutex<EgressRecord>>;

/// The egress of one call.
pub(crate) struct CallEgress {
    pub(crate) egress: Arc<Egress>,
    pub(crate) app: Arc<AppEgress>,
    pub(crate) app_id: String,
    pub(crate) partner: String,
    pub(crate) tenant: String,
    pub(crate) installation: Arc<InstallationEgress>,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) requests: u32,
    /// Requests refused so far (logged up to `MAX_REFUSAL_LINES`).
    pub(crate) refusals: usize,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) record: SharedRecord,
}

/// A request judged sendable.
struct Admitted {
    scheme: Scheme,
    host: String,
    port: u16,
    /// The declared destination it goes to (a metrics label: bounded by the manifest).
    label: String,
    secrets: Vec<String>,
    skus: Vec<(String, EgressUnit)>,
}

type Refusal = (Error, String);

impl CallEgress {
    /// The call's egress record (shared with responses still being read).
    pub(crate) fn record(&self) -> SharedRecord {
        self.record.clone()
    }

    fn judge(&mut self, request: &Request<WasiBody>) -> Result<Admitted, Refusal> {
        let settings = self.egress.settings();
        if request.method() == Method::CONNECT {
            return Err((Error::HttpRequestMethodInvalid, "CONNECT is refused".into()));
        }
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => return Err((Error::HttpRequestUriInvalid, "only http:// and https:// are spoken".into())),
        };
        let authority = uri.authority().ok_or((Error::HttpRequestUriInvalid, "the request names no host".into()))?;
        if authority.as_str().contains('@') {
            return Err((Error::HttpRequestUriInvalid, "user information in the target is refused".into()));
        }
        let (host, port) = split_port(authority.as_str())
            .map_err(|why| (Error::HttpRequestUriInvalid, format!("the target: {why}")))?;
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        let port = port.unwrap_or(scheme.default_port());
        self.requests = self.requests.saturating_add(1);
        if self.requests > settings.max_requests_per_call {
            return Err((
                Error::ConnectionLimitReached,
                format!(
                    "request limit of {} per call reached (egress.max-requests-per-call)",
                    settings.max_requests_per_call
                ),
            ));
        }
        if !settings.enabled {
            return Err((Error::HttpRequestDenied, "the operator has switched outbound HTTP off".into()));
        }
        if self.installation.operator_disabled {
            return Err((
                Error::HttpRequestDenied,
                format!("the operator has switched outbound HTTP off for {}'s apps", self.partner),
            ));
        }
        if !self.installation.enabled {
            return Err((
                Error::HttpRequestDenied,
                "the tenant has switched this installation's outbound HTTP off".into(),
            ));
        }
        if let Some(ip) = ip_literal(&host) {
            let class = non_public(ip).unwrap_or("public");
            return Err((
                Error::DestinationIpProhibited,
                format!("{host} is an address literal ({ip}, {class}); apps reach declared names only"),
            ));
        }
        let kept = |entry: &kiosk_domain::egress::Outbound| {
            self.installation.kept.as_ref().is_none_or(|kept| kept.contains(&entry.target.key()))
        };
        let found = self.app.entries.iter().filter(|e| kept(e)).find_map(|entry| {
            let admits = match &entry.target {
                Target::Fixed(d) => d.admits(scheme, &host, port),
                Target::ConfigUrl(p) => {
                    matches!(self.installation.config_urls.get(p), Some(Ok(d)) if d.admits(scheme, &host, port))
                }
            };
            admits.then(|| (entry.target.to_string(), entry.secrets.clone()))
        });
        let Some((label, secrets)) = found else {
            return Err((
                Error::HttpRequestDenied,
                format!(
                    "{}://{host}:{port} is not a destination {} declares (capabilities.outbound) and the tenant \
                     keeps",
                    scheme.as_str(),
                    self.app_id
                ),
            ));
        };
        if settings.deny.iter().chain(&self.installation.operator_deny).any(|d| d.matches(&host)) {
            return Err((Error::HttpRequestDenied, format!("the operator denies {host}")));
        }
        let rule = settings.hosts.iter().find(|r| r.applies(&host, &self.partner));
        if settings.only_listed && rule.is_none() {
            return Err((
                Error::HttpRequestDenied,
                format!("the operator has not allowed {host} (egress.only-listed)"),
            ));
        }
        if scheme == Scheme::Http && !rule.is_some_and(|r| r.http) {
            return Err((
                Error::HttpRequestDenied,
                format!("plain http:// to {host} is refused: the operator allows only https:// there"),
            ));
        }
        let (count, bytes) = header_size(request);
        if count > settings.max_headers as usize || bytes > settings.max_header_bytes as usize {
            return Err((
                Error::HttpRequestHeaderSectionSize(Some(settings.max_header_bytes)),
                format!(
                    "request headers: {count} fields, {bytes} bytes; at most {} fields and {} bytes \
                     (egress.max-headers, egress.max-header-bytes)",
                    settings.max_headers, settings.max_header_bytes
                ),
            ));
        }
        let skus = self
            .app
            .skus
            .iter()
            .filter(|(d, _, _)| d.admits(scheme, &host, port))
            .map(|(_, sku, unit)| (sku.clone(), *unit))
            .collect();
        Ok(Admitted { scheme, host, port, label, secrets, skus })
    }

    fn refuse(&mut self, method: &Method, shown: &str, why: &str) {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        self.refusals += 1;
        if self.refusals > MAX_REFUSAL_LINES {
            record.unlogged_refusals += 1;
            return;
        }
        record.lines.push(LogLine {
            at_ms: now_ms(),
            level: Level::Warn,
            message: logs::sanitize(&format!("kiosk: outbound {method} {shown} refused: {why}")),
        });
        metrics::counter!("kiosk_outbound_requests_total", "app" => self.app_id.clone(), "destination" => "-", "status" => "refused")
            .increment(1);
    }
}

/// Fields and bytes of a request's header section.
fn header_size<B>(request: &Request<B>) -> (usize, usize) {
    let bytes = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (request.headers().len(), bytes)
}

/// `scheme://host[:port]/path`, without the query (which may carry a token).
fn shown_target(uri: &http::Uri) -> String {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    format!("{}://{}{}", uri.scheme_str().unwrap_or("?"), authority, uri.path())
}

/// A response and the future that drives its connection (ours need none: the pooled
/// client drives its connections itself).
type Sent = (Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);
type SendFuture = Box<dyn Future<Output = Result<Sent, Error>> + Send>;

/// A request refused before it was sent.
fn refused(code: Error) -> SendFuture {
    Box::new(std::future::ready(Err::<Sent, Error>(code)))
}

impl WasiHttpHooks for CallEgress {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let method = request.method().clone();
        let shown = logs::sanitize_capped(&shown_target(request.uri()), 512);
        let admitted = match self.judge(&request) {
            Ok(a) => a,
            Err((code, why)) => {
                self.refuse(&method, &shown, &why);
                return refused(code);
            }
        };
        // Only the bounds the response future needs are copied (not the whole policy).
        let settings = self.egress.settings();
        let (max_header_bytes, max_request_body_bytes, max_response_body_bytes, max_in_flight) = (
            settings.max_header_bytes,
            settings.max_request_body_bytes,
            settings.max_response_body_bytes,
            settings.max_concurrent_requests_per_call,
        );
        let Ok(call_permit) = self.in_flight.clone().try_acquire_owned() else {
            let why = format!(
                "at most {max_in_flight} requests in flight per call (egress.max-concurrent-requests-per-call)"
            );
            self.refuse(&method, &shown, &why);
            return refused(Error::ConnectionLimitReached);
        };
        let tenant_permit = match self.egress.admit_tenant(&self.tenant) {
            Ok(p) => p,
            Err(why) => {
                self.refuse(&method, &shown, &why);
                return refused(Error::ConnectionLimitReached);
            }
        };
        let (mut parts, body) = request.into_parts();
        // The target and Host are the vetted name, lowercase, never what the guest spelt.
        let default_port = admitted.port == admitted.scheme.default_port();
        let authority =
            if default_port { admitted.host.clone() } else { format!("{}:{}", admitted.host, admitted.port) };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        parts.uri = match http::Uri::builder()
            .scheme(admitted.scheme.as_str())
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                self.refuse(&method, &shown, "the target is not a valid URI");
                return refused(Error::HttpRequestUriInvalid);
            }
        };
        parts.headers.remove(HOST);
        if let Ok(host) = HeaderValue::from_str(&authority) {
            parts.headers.insert(HOST, host);
        }
        // Bound secrets replace their placeholders in header values; anything else (an
        // unbound pointer, another destination) stays inert text.
        let installation = self.installation.clone();
        let lookup = |p: &str| {
            admitted.secrets.iter().any(|s| s == p).then(|| installation.secrets.get(p).map(String::as_str)).flatten()
        };
        for value in parts.headers.values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if let Some((replaced, used)) = kiosk_domain::egress::substitute(text, lookup)
                && !used.is_empty()
            {
                match HeaderValue::from_str(&replaced) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        *value = v;
                    }
                    Err(_) => {
                        let why = "a bound secret is not valid header text (control characters or non-ASCII)";
                        self.refuse(&method, &shown, why);
                        return refused(Error::HttpRequestDenied);
                    }
                }
            }
        }
        let body = RequestBody::new(body, max_request_body_bytes).boxed_unsync();
        let request = Request::from_parts(parts, body);
        let client = self.egress.client(&self.app_id, &self.partner);
        let record = self.record.clone();
        let deadline = self.deadline;
        let first_byte = options.and_then(|o| o.first_byte_timeout);
        let between = options.and_then(|o| o.between_bytes_timeout);
        let finish = Finish {
            record,
            app: self.app_id.clone(),
            label: admitted.label,
            method,
            shown,
            skus: admitted.skus,
            started: std::time::Instant::now(),
            status: None,
            permits: Some((call_permit, tenant_permit)),
        };
        Box::new(async move {
            let mut finish = finish;
            let limit = match first_byte {
                Some(d) => deadline.min(tokio::time::Instant::now() + d),
                None => deadline,
            };
            let response = match tokio::time::timeout_at(limit, client.request(request)).await {
                Err(_) => {
                    return Err(finish.failed(Error::ConnectionReadTimeout, "no response before the call's deadline"));
                }
                Ok(Err(e)) => {
                    let (code, why) = client_error(&e);
                    return Err(finish.failed(code, &why));
                }
                Ok(Ok(r)) => r,
            };
            let header_bytes: usize = response.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
            if header_bytes > max_header_bytes as usize {
                let why = format!("response headers of {header_bytes} bytes (egress.max-header-bytes)");
                return Err(finish.failed(Error::HttpResponseHeaderSectionSize(Some(max_header_bytes)), &why));
            }
            finish.answered(response.status().as_u16());
            let (parts, incoming) = response.into_parts();
            let body = LimitedBody::new(incoming, max_response_body_bytes, between, deadline, finish);
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(std::future::ready(Ok(())));
            Ok::<Sent, Error>((Response::from_parts(parts, body.boxed_unsync()), done))
        })
    }
}

/// A pooled client's failure, in Kiosk's words and a wasi-http code.
fn client_error(e: &hyper_util::client::legacy::Error) -> (Error, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<ConnectRefusal>() {
            let code = match refusal {
                ConnectRefusal::Dns { .. } => Error::DnsError { rcode: None, info_code: None },
                ConnectRefusal::Address { .. } => Error::DestinationIpProhibited,
                ConnectRefusal::Connect { .. } => Error::ConnectionRefused,
                ConnectRefusal::Tls { .. } => Error::TlsCertificateError,
                ConnectRefusal::Other(_) => Error::ConnectionTimeout,
            };
            return (code, refusal.to_string());
        }
        if let Some(Error::HttpRequestBodySize(limit)) = s.downcast_ref::<Error>() {
            let why = format!(
                "request body over {} bytes (egress.max-request-body-bytes)",
                limit.map_or_else(|| "its".to_string(), |l| l.to_string())
            );
            return (Error::HttpRequestBodySize(*limit), why);
        }
        source = s.source();
    }
    (Error::HttpProtocolError, "the destination broke the HTTP protocol or closed the connection".into())
}
