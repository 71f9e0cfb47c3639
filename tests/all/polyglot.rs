//! The Python and JavaScript example apps (`plugins-examples/audience-forecast`, built
//! with componentize-py, and `plugins-examples/ad-copy-check`, built with
//! ComponentizeJS, both by `.ci/test`) through the HTTP API as a tenant uses them:
//! install → configure → invoke → usage report → uninstall, with the usage asserted; a
//! Python exception's traceback in the failed call's problem; registration compiling
//! the component (the first install does not wait for the compiler) and refusing one that
//! cannot run under the operator's limits, naming the limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::TestServer;

/// A server, and a token of its tenant `demo` (every call here is the tenant's).
struct Server {
    s: TestServer,
    tenant: String,
}

impl std::ops::Deref for Server {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

/// `kiosk serve` in this process on SQLite with `extra` operator config and the example
/// apps `apps` registered through the demo seed (signed, verified, compiled).
async fn serve(extra: &str, apps: &[&str]) -> Server {
    let s = TestServer::fresh_with(None, extra, apps.iter().map(|app| common::demo_app(app)).collect()).await;
    let store = s.store();
    store.create_tenant("demo", "Demo", "test").await.unwrap();
    let (_, tenant) = store.create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap();
    Server { s, tenant }
}

impl Server {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.s.call(Some(&self.tenant), method, path, body).await
    }

    /// Installs `app` with `config`; returns the installation id and how long it took.
    async fn install(&self, app: &str, config: Value) -> (String, Duration) {
        let started = Instant::now();
        let (status, body) = self
            .call(Method::POST, "/v1/tenants/demo/installations", Some(json!({"app": app, "config": config})))
            .await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::CREATED, "install {app}: {body}");
        (body["id"].as_str().unwrap().to_string(), took)
    }

    async fn invoke(&self, id: &str, operation: &str, input: Value) -> (StatusCode, Value) {
        self.s.invoke(&self.tenant, "demo", id, operation, input).await
    }

    /// The tenant's usage totals by SKU.
    async fn totals(&self) -> BTreeMap<String, u128> {
        self.usage(&self.tenant, "/v1/tenants/demo/usage").await.totals
    }

    /// Waits (bounded) until the collector has collected a report of `sku`.
    async fn reported(&self, sku: &str) -> u128 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(total) = self.totals().await.get(sku).copied().filter(|t| *t > 0) {
                return total;
            }
            assert!(Instant::now() < deadline, "no {sku} reported within 60 s: {:?}", self.totals().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn uninstall(&self, id: &str) {
        let path = format!("/v1/tenants/demo/installations/{id}");
        let (status, body) = self.call(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        assert_eq!(self.call(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    }

    /// The compile-cache entries of the server's data directory.
    fn compiled(&self) -> Vec<String> {
        std::fs::read_dir(self.dir().join("data/components"))
            .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether registration left a compiled artefact of `app`'s component in the cache.
    fn is_compiled(&self, app: &str) -> bool {
        let digest = kiosk::digest::Digest::of(&common::guest_bytes(app));
        self.compiled().iter().any(|name| name.starts_with(digest.hex()) && name.ends_with(".cwasm"))
    }
}

const COLLECT_EVERY_SECOND: &str = "[usage]\nwindow-seconds = 1\nlease-seconds = 60\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_app_through_the_api() {
    let s = serve(COLLECT_EVERY_SECOND, &["audience-forecast"]).await;
    // Registration (the demo seed's, as a partner's) compiled the 18 MB component.
    assert!(s.is_compiled("audience-forecast"), "no compiled artefact after registration: {:?}", s.compiled());
    let (id, first) = s.install("acme/audience-forecast", json!({"apiToken": "token-123456", "market": "eu"})).await;
    let (other, second) = s.install("acme/audience-forecast", json!({"apiToken": "token-654321"})).await;
    println!(
        "acme/audience-forecast (Python): first install {:.0} ms, second install {:.0} ms (compiled at registration)",
        first.as_secs_f64() * 1000.0,
        second.as_secs_f64() * 1000.0
    );

    // Configure: the schema applies (an enum outside its values is refused, naming the
    // property), then the app's own configure hook runs.
    let path = format!("/v1/tenants/demo/installations/{id}");
    let (status, problem) = s.call(Method::PATCH, &path, Some(json!({"config": {"market": "mars"}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem.to_string().contains("market"), "{problem}");
    let (status, body) = s.call(Method::PATCH, &path, Some(json!({"config": {"market": "apac"}}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Invoke: the forecast uses the configured market (its audience caps the reach).
    let (status, out) = s.invoke(&id, "forecast", json!({"segment": "runners", "dailyBudget": 250, "cpm": 4})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let out = &out["output"];
    assert_eq!(out["market"], "apac", "{out}");
    assert_eq!(out["impressions"], 62_500, "{out}");
    assert_eq!(out["reach"], 20_833, "{out}");
    let (status, out) = s.invoke(&id, "forecast", json!({"segment": "cyclists", "dailyBudget": 90, "cpm": 3})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    // The app's refusal reaches the tenant as its own words.
    let (status, problem) = s.invoke(&id, "forecast", json!({"segment": "", "dailyBudget": 1, "cpm": 1})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("segment must be a string of 1-64 characters"), "{problem}");

    // An uncaught exception: the traceback is in the failed call's problem.
    let (status, problem) =
        s.invoke(&id, "forecast", json!({"segment": "swimmers", "dailyBudget": 10, "cpm": 0})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    assert_eq!(problem["type"], "urn:kiosk:problem:app-failed", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("ZeroDivisionError"), "{detail}");
    assert!(detail.contains("in invoke"), "the traceback names the function: {detail}");

    // Usage: two forecasts metered by the host (the refused and the failed call meter
    // nothing), and the segments the installation tracks reported by the app per window.
    assert_eq!(s.totals().await["forecast"], 2);
    let segments = s.reported("segments-tracked").await;
    assert_eq!(segments % 2, 0, "each window reports the 2 segments: {segments}");
    assert_eq!(s.totals().await["forecast"], 2);

    s.uninstall(&id).await;
    s.uninstall(&other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_app_through_the_api() {
    let s = serve(COLLECT_EVERY_SECOND, &["ad-copy-check"]).await;
    assert!(s.is_compiled("ad-copy-check"), "no compiled artefact after registration: {:?}", s.compiled());
    let (id, first) = s.install("acme/ad-copy-check", json!({"bannedWords": ["free"]})).await;
    println!("acme/ad-copy-check (JavaScript): first install {:.0} ms", first.as_secs_f64() * 1000.0);

    // The app's own validation (beyond the schema) refuses a word listed twice.
    let path = format!("/v1/tenants/demo/installations/{id}");
    let twice = json!({"config": {"bannedWords": ["free", "FREE"]}});
    let (status, problem) = s.call(Method::PATCH, &path, Some(twice)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("bannedWords lists a word twice"), "{problem}");
    let config = json!({"config": {"bannedWords": ["free", "guaranteed"], "maxHeadline": 20}});
    let (status, body) = s.call(Method::PATCH, &path, Some(config)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ad = json!({"headline": "Guaranteed results, every run", "body": "Shoes for every road."});
    let (status, out) = s.invoke(&id, "check", ad).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let out = &out["output"];
    assert_eq!(out["ok"], false, "{out}");
    let problems: Vec<&str> = out["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(
        problems,
        ["headline is 29 characters, the limit is 20", "contains banned word \"guaranteed\""],
        "the configured rules apply"
    );
    let (status, out) = s.invoke(&id, "check", json!({"headline": "Run further"})).await;
    assert_eq!(status, StatusCode::OK, "{out}");

    // Usage: one check per call (host), the characters the app scanned (guest,
    // `record-usage`), and the rules reported per window (2 per window).
    let totals = s.totals().await;
    assert_eq!(totals["copy-check"], 2, "{totals:?}");
    assert_eq!(totals["characters-scanned"], 29 + 21 + 11, "{totals:?}");
    let rules = s.reported("rules-active").await;
    assert_eq!(rules % 2, 0, "each window reports the 2 rules: {rules}");

    s.uninstall(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_refuses_a_component_beyond_the_operator_limits() {
    // Tables of at most 5,000 elements for every call: the JS engine's table has ~7,700.
    let s = serve("[sandbox.defaults]\ntable-elements = 5000\n", &[]).await;
    let manifest = std::fs::read(common::manifest_path("ad-copy-check")).unwrap();
    let wasm = common::guest_bytes("ad-copy-check");
    let key_dir = s.dir().join("data/local");
    let mut refusals = Vec::new();
    for _ in 0..2 {
        let refused = kiosk_core::local::register_local_build(&s.started.state, &manifest, &wasm, &key_dir, "test")
            .await
            .expect_err("a component beyond the limits is refused at registration")
            .to_string();
        assert!(refused.contains("acme/ad-copy-check@0.3.0"), "{refused}");
        assert!(refused.contains("cannot run under the operator's limits"), "{refused}");
        assert!(refused.contains("table limit reached: tables may not grow beyond 5000 elements"), "{refused}");
        refusals.push(refused);
        assert!(!s.is_compiled("ad-copy-check"), "the refused component's artefact is not kept: {:?}", s.compiled());
    }
    // The second attempt is refused from memory: not compiled again.
    assert!(!refusals[0].contains("refused before"), "{}", refusals[0]);
    assert!(refusals[1].contains("refused before: not compiled again"), "{}", refusals[1]);
    assert!(
        s.started.state.store().version("acme/ad-copy-check", "0.3.0").await.unwrap().is_none(),
        "nothing recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_that_cannot_compile_under_the_engine_is_remembered() {
    // At most 8 core instances per component (an engine setting): the Python app has 14.
    let s = serve("[sandbox]\ninstances = 8\n", &[]).await;
    let manifest = std::fs::read(common::manifest_path("audience-forecast")).unwrap();
    let wasm = common::guest_bytes("audience-forecast");
    let key_dir = s.dir().join("data/local");
    let mut refusals = Vec::new();
    for _ in 0..2 {
        let refused = kiosk_core::local::register_local_build(&s.started.state, &manifest, &wasm, &key_dir, "test")
            .await
            .expect_err("refused")
            .to_string();
        assert!(refused.contains("acme/audience-forecast@0.4.0"), "{refused}");
        assert!(
            refused.contains("core module instances, which exceeds the configured maximum of 8"),
            "the limit is named: {refused}"
        );
        refusals.push(refused);
    }
    assert!(!refusals[0].contains("refused before"), "{}", refusals[0]);
    assert!(refusals[1].contains("refused before: not compiled again"), "{}", refusals[1]);
    assert!(s.compiled().is_empty(), "nothing cached: {:?}", s.compiled());
}

#[test]
fn kiosk_run_shows_the_python_traceback() {
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .arg("run")
        .arg(common::guest_path("audience-forecast"))
        .arg("--manifest")
        .arg(common::manifest_path("audience-forecast"))
        .args(["--tenant", "demo", "--config", r#"{"apiToken": "token-123456"}"#, "--invoke", "forecast"])
        .args(["--input", r#"{"segment": "swimmers", "dailyBudget": 10, "cpm": 0}"#])
        .env("KIOSK_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the call failed: {stderr}");
    assert!(stderr.contains("Traceback (most recent call last)"), "{stderr}");
    assert!(stderr.contains("ZeroDivisionError"), "{stderr}");
}
