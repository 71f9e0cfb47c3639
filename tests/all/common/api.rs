//! The suites' one HTTP client and in-process server: [`Api`] (a `reqwest` client and a
//! base URL: any server, in this process or a child) and [`TestServer`] (`kiosk serve`
//! in this process, its state, its directory and an [`Api`] to it).
//!
//! Every answer read through [`Api::send`] or [`Api::call`] is checked the same way: a
//! status that is not 2xx comes with `application/problem+json`, and a body, when there
//! is one, is JSON. A suite with a need of its own (raw bodies, other content types,
//! headers, timing) builds its request with [`Api::request`] and reads it with
//! [`Reply::of`], or uses [`Api::http`] directly.
//!
//! The typed helpers read the API's documents into the `kiosk-api` types where the
//! contract has them (usage, trust, registries) and into the small views below where it
//! has none (tokens, installations, calls, audit records, pages).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiosk::server::serve::{ServeOptions, Started, spawn};
use kiosk_api::usage::{RecordResult, UsageReport, UsageResults};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The content type of every failure.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem slug of a problem document (its `type` without `urn:kiosk:problem:`; `""`
/// when it has none).
pub fn kind(problem: &Value) -> &str {
    problem["type"].as_str().unwrap_or("").trim_start_matches("urn:kiosk:problem:")
}

/// `s` percent-encoded for a query value (unreserved characters kept).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// Reads `resp` whole (no check).
    pub async fn of(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Self { status, headers, text }
    }

    /// A header's value (panics when it is not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The body as JSON: `Null` when there is none; panics when it is not JSON.
    pub fn json(&self) -> Value {
        if self.text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: the body is not JSON ({e}): {}", self.status, self.text))
    }

    /// The body as the document `T`; panics when it is not one.
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: not a {} ({e}): {}", self.status, std::any::type_name::<T>(), self.text))
    }

    /// Asserts that a failure is a problem (`application/problem+json`); `what` names the
    /// request in the message.
    pub fn checked(self, what: &str) -> Self {
        if !self.status.is_success() {
            assert_eq!(self.content_type(), PROBLEM_JSON, "{} {what}: {}", self.status, self.text);
        }
        self
    }
}

/// A page of a list (`{items, next}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A token created over the API (`token`: its secret, shown once).
// Read whole (a member missing from the answer fails the parse); suites check what they need.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub id: String,
    pub token: String,
    pub role: String,
    pub scope: Option<String>,
    pub expires_ms: Option<i64>,
}

/// An installation as the API shows it.
// Read whole (a member missing from the answer fails the parse); suites check what they need.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    pub id: String,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub config: Value,
    pub secrets_set: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub row_version: i64,
    /// Each limit's `{value, source}`.
    pub limits: Value,
    pub upgrade_policy: String,
}

/// A call's answer: its id (its log lines carry it), the operation's output and the usage
/// it metered.
#[derive(Debug, Clone, Deserialize)]
pub struct Invocation {
    #[serde(rename = "callId")]
    pub call_id: String,
    pub output: Value,
    pub usage: Vec<Metered>,
}

/// Usage one call metered (`source`: `host`, `guest`, `report` or `partner`).
// Read whole (a member missing from the answer fails the parse); suites check what they need.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metered {
    pub sku: String,
    pub quantity: u64,
    pub source: String,
    pub at_ms: u64,
}

/// One audited action.
// Read whole (a member missing from the answer fails the parse); suites check what they need.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// A client of one Kiosk: `reqwest` and the base URL (`http://host:port`). Cheap to
/// clone (a clone shares the connection pool, and what [`Api::recording`] keeps), so a
/// spawned task can own one.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    seen: Option<Arc<Mutex<Vec<String>>>>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self { http: reqwest::Client::new(), base: base.into(), seen: None }
    }

    /// This client, keeping the body of every answer [`Api::send`] reads from now on
    /// (see [`Api::seen`]).
    pub fn recording(mut self) -> Self {
        self.seen = Some(Arc::default());
        self
    }

    /// Every body a [`Api::recording`] client read, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.as_ref().map(|seen| seen.lock().unwrap().clone()).unwrap_or_default()
    }

    /// The URL of `path` (with its query).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request, with the bearer `token` when there is one; not sent.
    pub fn request(&self, token: Option<&str>, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request (`body` as JSON) and reads the answer whole; a failure must be a
    /// problem.
    pub async fn send(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Reply {
        let what = format!("{method} {path}");
        let mut request = self.request(token, method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = Reply::of(request.send().await.unwrap()).await;
        if let Some(seen) = &self.seen {
            seen.lock().unwrap().push(reply.text.clone());
        }
        reply.checked(&what)
    }

    /// [`Api::send`], giving the status and the body as JSON (`Null` when there is none).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let reply = self.send(token, method, path, body).await;
        (reply.status, reply.json())
    }

    /// [`Api::send`] that must answer `status`, the body read as the document `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> T {
        let what = format!("{method} {path}");
        let reply = self.send(token, method, path, body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        reply.parse()
    }

    /// Every item of a list (`{items, next}`), `limit` per page: checks each page's size
    /// and that the cursor moves on; also the number of pages.
    pub async fn walk(&self, token: &str, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (mut items, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(a) = &after {
                url.push_str(&format!("&after={}", urlencode(a)));
            }
            let (status, page) = self.call(Some(token), Method::GET, &url, None).await;
            assert_eq!(status, StatusCode::OK, "{url}: {page}");
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit, "{url}: {page}");
            items.extend(got.iter().cloned());
            pages += 1;
            assert!(pages < 100, "{path}: the cursor does not move on");
            match page["next"].as_str() {
                Some(next) => {
                    assert_eq!(got.len(), limit, "only full pages have a next: {page}");
                    after = Some(next.to_string());
                }
                None => return (items, pages),
            }
        }
    }

    // --- the operator's set-up -----------------------------------------------------------

    /// Creates partner `name` (201).
    pub async fn create_partner(&self, operator: &str, name: &str) {
        let (status, body) = self.call(Some(operator), Method::POST, "/v1/partners", Some(json!({"name": name}))).await;
        assert_eq!(status, StatusCode::CREATED, "partner {name}: {body}");
    }

    /// Creates tenant `id` (201).
    pub async fn create_tenant(&self, operator: &str, id: &str) {
        let (status, body) = self.call(Some(operator), Method::POST, "/v1/tenants", Some(json!({"id": id}))).await;
        assert_eq!(status, StatusCode::CREATED, "tenant {id}: {body}");
    }

    /// A token for `role` (`operator`, `partner`, `tenant`) over `scope` (201).
    pub async fn create_token(&self, operator: &str, role: &str, scope: Option<&str>) -> Token {
        let mut body = json!({"role": role});
        if let Some(scope) = scope {
            body["scope"] = scope.into();
        }
        self.create_token_with(operator, body).await
    }

    /// A token of the request `body` (role, scope, label, expiry) (201).
    pub async fn create_token_with(&self, operator: &str, body: Value) -> Token {
        self.call_as(Some(operator), Method::POST, "/v1/tokens", Some(body), StatusCode::CREATED).await
    }

    /// The latest 1,000 audit records, newest first.
    pub async fn audit(&self, operator: &str) -> Vec<AuditEntry> {
        let page: Page<AuditEntry> =
            self.call_as(Some(operator), Method::GET, "/v1/audit?limit=1000", None, StatusCode::OK).await;
        page.items
    }

    /// Whether the latest 1,000 audit records hold `action` on `target`.
    pub async fn audit_has(&self, operator: &str, action: &str, target: &str) -> bool {
        self.audit(operator).await.iter().any(|r| r.action == action && r.target == target)
    }

    // --- a tenant's installations --------------------------------------------------------

    /// Installs `body` (`{app, version?, config?, …}`) for `tenant` (201).
    pub async fn install(&self, token: &str, tenant: &str, body: Value) -> Installation {
        let path = format!("/v1/tenants/{tenant}/installations");
        self.call_as(Some(token), Method::POST, &path, Some(body), StatusCode::CREATED).await
    }

    /// Invokes `operation` of installation `id` of `tenant` with `input`.
    pub async fn invoke(
        &self,
        token: &str,
        tenant: &str,
        id: &str,
        operation: &str,
        input: Value,
    ) -> (StatusCode, Value) {
        let path = format!("/v1/tenants/{tenant}/installations/{id}/invoke/{operation}");
        self.call(Some(token), Method::POST, &path, Some(input)).await
    }

    /// Invokes `operation` of installation `id` of `tenant` with `input`, which must
    /// succeed (200).
    pub async fn invoked(&self, token: &str, tenant: &str, id: &str, operation: &str, input: Value) -> Invocation {
        let path = format!("/v1/tenants/{tenant}/installations/{id}/invoke/{operation}");
        self.call_as(Some(token), Method::POST, &path, Some(input), StatusCode::OK).await
    }

    /// The messages of the latest 1,000 lines of installation `id`'s log (200).
    pub async fn log_messages(&self, token: &str, tenant: &str, id: &str) -> Vec<String> {
        let path = format!("/v1/tenants/{tenant}/installations/{id}/logs?limit=1000");
        let (status, body) = self.call(Some(token), Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap().to_string()).collect()
    }

    // --- usage ---------------------------------------------------------------------------

    /// Posts a batch of usage `records` as `partner` (200): one result per record.
    pub async fn post_usage(&self, token: &str, partner: &str, records: Value) -> Vec<RecordResult> {
        let path = format!("/v1/partners/{partner}/usage");
        let body = json!({"records": records});
        let results: UsageResults = self.call_as(Some(token), Method::POST, &path, Some(body), StatusCode::OK).await;
        results.results
    }

    /// A usage read (`/v1/tenants/{tenant}/usage?…`, `/v1/usage?…`, …) as JSON (200).
    pub async fn usage(&self, token: &str, path: &str) -> UsageReport {
        self.call_as(Some(token), Method::GET, path, None, StatusCode::OK).await
    }
}

/// `kiosk serve` in this process on a free loopback port: its state, the directory whose
/// `data/` is its data directory, and an [`Api`] to it (the server derefs to it).
#[derive(Debug)]
pub struct TestServer {
    pub started: Started,
    pub api: Api,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    /// A server on `database` (SQLite in `dir/data` when `None`) whose config is
    /// `data-dir = "dir/data"` and then `toml`. The directory outlives the server, so a
    /// restart on it finds the same data.
    pub async fn start(dir: &Path, database: Option<String>, toml: &str) -> Self {
        Self::start_with(dir, database, toml, Vec::new()).await
    }

    /// [`TestServer::start`] with `demo_apps` (`manifest.json=component.wasm`, see
    /// [`super::demo_app`]) signed and registered through the demo seed.
    pub async fn start_with(dir: &Path, database: Option<String>, toml: &str, demo_apps: Vec<String>) -> Self {
        // A restart on the same directory writes its own config beside the first.
        let mut config = dir.join("kiosk.toml");
        if config.exists() {
            config = dir.join(format!("kiosk-{}.toml", uuid::Uuid::new_v4().simple()));
        }
        std::fs::write(&config, format!("data-dir = \"{}\"\n{toml}", dir.join("data").display()))
            .expect("write config");
        let options = ServeOptions { config: Some(config), database, demo_apps, ..Default::default() };
        Self::serve(options, dir).await
    }

    /// [`TestServer::start`] in a fresh temporary directory the server keeps.
    pub async fn fresh(database: Option<String>, toml: &str) -> Self {
        Self::fresh_with(database, toml, Vec::new()).await
    }

    /// [`TestServer::start_with`] in a fresh temporary directory the server keeps.
    pub async fn fresh_with(database: Option<String>, toml: &str, demo_apps: Vec<String>) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        Self::start_with(temp.path(), database, toml, demo_apps).await.keeping(temp)
    }

    /// A server of `options` as given (its config names its data directory; `dir` is the
    /// directory [`TestServer::dir`] gives).
    pub async fn serve(options: ServeOptions, dir: &Path) -> Self {
        let started = spawn(options, "127.0.0.1:0".parse().expect("address")).await.expect("kiosk serve starts");
        let api = Api::new(format!("http://{}", started.addr));
        Self { started, api, dir: dir.to_path_buf(), _temp: None }
    }

    /// The server, its client keeping every body it reads ([`Api::recording`]).
    pub fn recording(mut self) -> Self {
        self.api = self.api.recording();
        self
    }

    /// The server keeps `temp` (its directory) alive.
    pub fn keeping(mut self, temp: tempfile::TempDir) -> Self {
        self._temp = Some(temp);
        self
    }

    /// The server's directory: its `data/` is the data directory of a server of
    /// [`TestServer::start`] (and of `fresh`, and the common guest servers).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &kiosk::store::Store {
        self.started.state.store()
    }

    /// Closes the server's database pool (a restart on the same database follows).
    pub async fn stop(self) {
        self.started.state.store().close().await;
    }
}
