//! Containment at the HTTP edge, on SQLite and PostgreSQL alike: text a backend cannot
//! store (U+0000) is a 422 naming the field on both and leaves every table as it was;
//! every rejection is a problem.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use kiosk::server::serve::{ServeOptions, Started, spawn};
use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OPERATOR: &str = "operator-token-for-the-hygiene-tests";

struct Env {
    _dir: tempfile::TempDir,
    started: Started,
    http: reqwest::Client,
    base: String,
    tenant: String,
    partner: String,
    pacing: String,
    hostile: String,
}

async fn env(database: Option<String>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    // No usage window completes during the test: the ledger holds only what the test sends.
    let text = format!(
        "data-dir = \"{}\"\n[server]\noperator-token = \"{OPERATOR}\"\n[usage]\nwindow-seconds = 315360000\n",
        dir.path().join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let demo = |name: &str| format!("{}={}", common::manifest_path(name).display(), common::guest_path(name).display());
    let options = ServeOptions {
        config: Some(config),
        database,
        demo_apps: vec![demo("budget-pacing"), demo("hostile-guest")],
        ..Default::default()
    };
    let started = spawn(options, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let store = &started.state.store;
    let (_, tenant) = store.create_token(&Principal::Tenant("demo".into()), "test").await.unwrap();
    let (_, partner) = store.create_token(&Principal::Partner("acme".into()), "test").await.unwrap();
    let mut env = Env {
        _dir: dir,
        started,
        http: reqwest::Client::new(),
        base: String::new(),
        tenant,
        partner,
        pacing: String::new(),
        hostile: String::new(),
    };
    env.base = format!("http://{}", env.started.addr);
    let tenant = env.tenant.clone();
    for (app, config) in [("acme/budget-pacing", json!({"apiKey": "k"})), ("test/hostile", json!({}))] {
        let body = json!({"app": app, "config": config});
        let (status, inst) = env.call(&tenant, Method::POST, "/v1/tenants/demo/installations", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{inst}");
        let id = inst["id"].as_str().unwrap().to_string();
        if app == "test/hostile" { env.hostile = id } else { env.pacing = id }
    }
    env
}

impl Env {
    /// One request; every failure must be a problem+json.
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = resp.text().await.unwrap();
        if !status.is_success() {
            assert_eq!(content_type, "application/problem+json", "{status} {path}: {text}");
            for leak in ["database", "sqlx", "invalid byte sequence", "0x00", "error returned from"] {
                assert!(!text.contains(leak), "{path}: the answer leaks {leak:?}: {text}");
            }
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every table's row count, the ledger's included.
    async fn counts(&self) -> BTreeMap<String, i64> {
        use sqlx::Row as _;
        let store = &self.started.state.store;
        let mut counts: BTreeMap<String, i64> =
            store.table_counts().await.unwrap().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_events").fetch_one(store.pool()).await.unwrap();
        counts.insert("usage_events".into(), row.get("n"));
        counts
    }

    /// `body` or the path/query holds U+0000: a 422 `invalid-text` naming `field`, and
    /// nothing written.
    async fn refused_as_nul(&self, token: &str, method: Method, path: &str, body: Option<Value>, field: &str) {
        let before = self.counts().await;
        let (status, problem) = self.call(token, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:kiosk:problem:invalid-text", "{method} {path}: {problem}");
        assert_eq!(problem["field"], field, "{method} {path}: {problem}");
        assert_eq!(self.counts().await, before, "{method} {path}: the database is unchanged");
    }

    async fn post_usage(&self, records: Value) -> Vec<Value> {
        let (status, body) =
            self.call(&self.partner, Method::POST, "/v1/partners/acme/usage", Some(json!({"records": records}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["results"].as_array().unwrap().clone()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn record(sku: &str, quantity: Value, key: &str) -> Value {
    json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": sku, "quantity": quantity,
           "timestampMs": now_ms() - 60_000, "idempotencyKey": key})
}

// --- text a backend cannot store -------------------------------------------------------

async fn text_suite(database: Option<String>) {
    let e = env(database).await;
    let (op, t, p) = (OPERATOR, e.tenant.as_str(), e.partner.as_str());
    let nul = "a\u{0}b";
    let inst = format!("/v1/tenants/demo/installations/{}", e.pacing);

    // JSON bodies: the pointer of the offending value, at any depth.
    e.refused_as_nul(op, Method::POST, "/v1/tenants", Some(json!({"id": "nul-t", "display": nul})), "/display").await;
    e.refused_as_nul(op, Method::POST, "/v1/partners", Some(json!({"name": "nul-p", "display": nul})), "/display")
        .await;
    let token = json!({"role": "tenant", "scope": "demo", "label": nul});
    e.refused_as_nul(op, Method::POST, "/v1/tokens", Some(token), "/label").await;
    let install = json!({"app": "acme/budget-pacing", "config": {"apiKey": nul}});
    e.refused_as_nul(t, Method::POST, "/v1/tenants/demo/installations", Some(install), "/config/apiKey").await;
    e.refused_as_nul(t, Method::PATCH, &inst, Some(json!({"config": {"apiKey": nul}})), "/config/apiKey").await;
    let input =
        json!({"campaignId": "c", "budget": 300, "flightDays": 30, "dailySpend": [10], "note": [1, {"x": nul}]});
    e.refused_as_nul(t, Method::POST, &format!("{inst}/invoke/evaluate"), Some(input), "/note/1/x").await;
    for (field, value) in [("idempotencyKey", nul), ("sku", nul), ("tenant", nul)] {
        let mut bad = record("rows-scanned", json!(1), "nul-record");
        bad[field] = json!(value);
        let batch = json!({"records": [record("rows-scanned", json!(1), "fine"), bad]});
        e.refused_as_nul(p, Method::POST, "/v1/partners/acme/usage", Some(batch), &format!("/records/1/{field}")).await;
    }
    // A member name holding U+0000 is named by its object; `~` and `/` are escaped.
    let batch = json!({"records": [{"ten\u{0}ant": "demo"}]});
    e.refused_as_nul(p, Method::POST, "/v1/partners/acme/usage", Some(batch), "/records/0").await;
    let odd = json!({"config": {"a/b~c": nul}});
    e.refused_as_nul(t, Method::PATCH, &inst, Some(odd), "/config/a~1b~0c").await;

    // Path segments and query values (percent-encoded U+0000), named by their parameter.
    e.refused_as_nul(op, Method::PUT, "/v1/registries/evil%00.example", Some(json!({})), "host").await;
    e.refused_as_nul(t, Method::GET, "/v1/tenants/demo/installations/x%00y", None, "id").await;
    e.refused_as_nul(t, Method::DELETE, "/v1/tenants/demo/installations/x%00y", None, "id").await;
    e.refused_as_nul(t, Method::GET, "/v1/tenants/demo/usage?granularity=hour%00", None, "granularity").await;
    e.refused_as_nul(t, Method::GET, "/v1/catalog/apps?q=pacing%00", None, "q").await;

    // The same fields without U+0000 are stored: the refusal was about the text only.
    let (s, b) = e.call(op, Method::POST, "/v1/tenants", Some(json!({"id": "nul-t", "display": "a b"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(e.post_usage(json!([record("rows-scanned", json!(1), "fine")])).await[0]["status"], "recorded");

    // Every other rejection of a path, query or body is a problem naming the parameter.
    let usage = "/v1/tenants/demo/usage";
    let bad_requests = [
        ("/v1/tenants/%FF/usage".to_string(), "invalid-path", "tenant"),
        (format!("{usage}?fromMs=soon"), "invalid-query", "fromMs"),
        (format!("{usage}?fromMs=99999999999999999999"), "invalid-query", "fromMs"),
        (format!("{usage}?zeros=maybe"), "invalid-query", "zeros"),
        (format!("{usage}?bogus=1"), "invalid-query", "bogus"),
        (format!("{usage}?granularity=day&granularity=hour"), "invalid-query", "granularity"),
    ];
    for (path, kind, field) in bad_requests {
        let (s, b) = e.call(t, Method::GET, &path, None).await;
        assert_eq!(
            (s, b["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(format!("urn:kiosk:problem:{kind}").as_str())),
            "{path}: {b}"
        );
        assert_eq!(b["field"], field, "{path}: {b}");
    }
    for (body, field) in [(json!({"id": 7}), "/id"), (json!({"id": "x", "bogus": 1}), "/bogus"), (json!({}), "/id")] {
        let (s, b) = e.call(op, Method::POST, "/v1/tenants", Some(body)).await;
        assert_eq!(
            (s, b["type"].as_str(), b["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("urn:kiosk:problem:malformed-json"), Some(field)),
            "{b}"
        );
    }
    let (s, b) = e.call(op, Method::GET, "/v1/no/such/route", None).await;
    assert_eq!((s, b["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:kiosk:problem:not-found")), "{b}");
    let (s, b) = e.call(op, Method::DELETE, "/v1/tenants", None).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("urn:kiosk:problem:method-not-allowed")),
        "{b}"
    );
    // A body over the limit is a problem too, whether announced or streamed.
    let big = format!("{{\"id\": \"big\", \"display\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let resp = e
        .http
        .post(format!("{}/v1/tenants", e.base))
        .bearer_auth(op)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.text().await.unwrap().contains("urn:kiosk:problem:body-too-large"));
}

#[tokio::test]
async fn text_on_sqlite() {
    text_suite(None).await;
}

#[tokio::test]
async fn text_on_postgresql() {
    text_suite(Some(common::fresh_postgres_database().await)).await;
}
