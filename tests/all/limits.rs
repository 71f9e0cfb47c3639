//! Layered limits over HTTP, on SQLite and PostgreSQL (issue 11): operator ceilings
//! (the config file) → operator defaults → per-app caps → the manifest → per-tenant
//! overrides. A loosening is refused naming the ceiling; a tenant override applies to
//! the very next call, also through a second server state over the same database; the
//! installation shows its effective limits with their sources; deleting an override
//! restores; an app cap tighter than the manifest wins; hostile numbers and names are
//! refused by name with nothing written.

use std::collections::BTreeMap;
use std::time::Instant;

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Reply, TestServer};

/// One server over a database.
struct Server {
    s: TestServer,
}

impl std::ops::Deref for Server {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

impl Server {
    /// One request; a failure is a problem that says nothing of the database.
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let reply = self.s.send(Some(token), method, path, body).await;
        if !reply.status.is_success() {
            for leak in ["sqlx", "error returned from", "violates", "constraint"] {
                assert!(!reply.text.contains(leak), "{path}: the answer leaks {leak:?}: {}", reply.text);
            }
        }
        (reply.status, reply.json())
    }

    /// A raw body (numbers serde_json cannot write, such as 2^64).
    async fn put_raw(&self, token: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let request = self.request(Some(token), Method::PUT, path);
        let request = request.header("content-type", "application/json").body(body.to_string());
        let reply = Reply::of(request.send().await.unwrap()).await.checked(path);
        (reply.status, reply.json())
    }

    async fn counts(&self) -> BTreeMap<&'static str, i64> {
        self.store().table_counts().await.unwrap()
    }
}

/// The database URL each backend's test uses (SQLite: a file both servers open).
async fn database(postgres: bool, dir: &std::path::Path) -> String {
    if postgres {
        common::fresh_postgres_database().await
    } else {
        format!("sqlite://{}", dir.join("shared.db").display())
    }
}

async fn invoke(s: &Server, token: &str, id: &str, operation: &str, input: Value) -> (StatusCode, Value) {
    let path = format!("/v1/tenants/demo/installations/{id}/invoke/{operation}");
    s.call(token, Method::POST, &path, Some(input)).await
}

/// The wall-time limit a looping call was stopped at, from its problem's detail.
/// `loop_limit_ms` on `s` until it is `expected`, which a call sent `CALL_READS_FRESH`
/// after `changed` (a change made through another server) must see.
async fn limit_within_bound(s: &Server, token: &str, id: &str, changed: Instant, expected: &str) {
    common::holds_within_bound(changed, "a limit changed through the other server", async || {
        let ms = loop_limit_ms(s, token, id).await;
        (ms == expected, ms)
    })
    .await;
}

async fn loop_limit_ms(s: &Server, token: &str, id: &str) -> String {
    let (status, body) = invoke(s, token, id, "loop", json!(null)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let detail = body["detail"].as_str().unwrap().to_string();
    let at = detail.find("wall-time limit of ").unwrap_or_else(|| panic!("not a timeout: {detail}"));
    detail[at + "wall-time limit of ".len()..].split(' ').next().unwrap().to_string()
}

fn limit(view: &Value, name: &str) -> (u64, String) {
    let l = &view["limits"][name];
    (l["value"].as_u64().unwrap_or_else(|| panic!("{name} in {view}")), l["source"].as_str().unwrap().to_string())
}

async fn layered_limits(postgres: bool) {
    let shared = tempfile::tempdir().unwrap();
    let url = database(postgres, shared.path()).await;
    let a = Server { s: common::hostile_server(Some(url.clone()), "", |_| {}).await };
    let store = a.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap().1;
    let op = store.create_token(&Principal::Operator, "op", "test").await.unwrap().1;

    // The ceilings come from the config file: the defaults raised for Python and JS guests.
    let (status, limits) = a.call(&op, Method::GET, "/v1/limits", None).await;
    assert_eq!(status, StatusCode::OK, "{limits}");
    assert_eq!(limits["ceilings"]["timeoutMs"], 1000);
    assert_eq!(limits["ceilings"]["instances"], 32);
    assert_eq!(limits["ceilings"]["tableElements"], 20_000);
    assert!(limits["ceilings"].get("fuel").is_none(), "fuel is off: {limits}");
    assert_eq!(limits["defaults"], json!({}));

    // A loosening is refused, naming the field and the ceiling, on every layer.
    let before = a.counts().await;
    for path in ["/v1/limits/defaults", "/v1/limits/apps/test/hostile", "/v1/limits/tenants/demo"] {
        let (status, p) = a.call(&op, Method::PUT, path, Some(json!({"timeoutMs": 5000}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {p}");
        assert_eq!(p["type"], "urn:kiosk:problem:limit-above-ceiling", "{p}");
        assert_eq!(p["detail"], "timeoutMs 5000 exceeds the operator ceiling of 1000 ms");
        assert_eq!(p["field"], "timeoutMs");
    }
    let (status, p) = a.call(&op, Method::PUT, "/v1/limits/tenants/demo", Some(json!({"fuel": 10}))).await;
    assert_eq!((status, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("fuel")), "{p}");

    // Hostile numbers and names are refused by name.
    for body in [
        r#"{"timeoutMs": -1}"#,
        r#"{"timeoutMs": 18446744073709551616}"#,
        r#"{"timeoutMs": 1e300}"#,
        r#"{"timeoutMs": "100"}"#,
        r#"{"timeoutMs": 0}"#,
        r#"{"timeoutMs": 0.5}"#,
    ] {
        let (status, p) = a.put_raw(&op, "/v1/limits/tenants/demo", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], "timeoutMs", "{body}: {p}");
        assert!(p["detail"].as_str().unwrap().starts_with("timeoutMs "), "{body}: {p}");
    }
    let (status, p) = a.put_raw(&op, "/v1/limits/tenants/demo", r#"{"timeout": 100}"#).await;
    assert_eq!((status, p["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("timeout")), "{p}");
    let (status, p) = a.put_raw(&op, "/v1/limits/tenants/demo", "{\"time\\u0000outMs\": 100}").await;
    assert_eq!(
        (status, p["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("urn:kiosk:problem:invalid-text")),
        "{p}"
    );
    let (status, p) = a.put_raw(&op, "/v1/limits/tenants/de%00mo", r#"{"timeoutMs": 100}"#).await;
    assert!(status.is_client_error(), "{status} {p}");
    let (status, p) = a.put_raw(&op, "/v1/limits/apps/test/ho%00stile", r#"{"timeoutMs": 100}"#).await;
    assert!(status.is_client_error(), "{status} {p}");
    let (status, p) = a.call(&op, Method::PUT, "/v1/limits/tenants/nobody", Some(json!({"timeoutMs": 10}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    let (status, p) = a.call(&op, Method::PUT, "/v1/limits/apps/test/nothing", Some(json!({"timeoutMs": 10}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    // Only the operator sets limits.
    let (status, _) = a.call(&tenant, Method::PUT, "/v1/limits/tenants/demo", Some(json!({"timeoutMs": 900}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(a.counts().await, before, "a refused limit writes nothing");

    // The installation shows its limits with their sources: the manifest asks 200 ms and 32 MiB.
    let (status, inst) =
        a.call(&tenant, Method::POST, "/v1/tenants/demo/installations", Some(json!({"app": "test/hostile"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{inst}");
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(limit(&inst, "timeoutMs"), (200, "manifest".into()));
    assert_eq!(limit(&inst, "memoryMiB"), (32, "manifest".into()));
    assert_eq!(limit(&inst, "instances"), (32, "ceiling".into()));
    assert_eq!(loop_limit_ms(&a, &tenant, &id).await, "200");

    // A second server state over the same database, which has run the app already.
    let b = Server { s: TestServer::fresh(Some(url.clone()), "").await };
    assert_eq!(loop_limit_ms(&b, &tenant, &id).await, "200");

    // A tenant override tightens the very next call on the server it was set on, and the
    // other's within `CALL_READS_FRESH` (each keeps call contexts that long at most).
    let (status, set) = a.call(&op, Method::PUT, "/v1/limits/tenants/demo", Some(json!({"timeoutMs": 50}))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let changed = Instant::now();
    assert_eq!(
        (set["tenant"].clone(), set["app"].clone(), set["limits"].clone()),
        (json!("demo"), Value::Null, json!({"timeoutMs": 50}))
    );
    assert_eq!(loop_limit_ms(&a, &tenant, &id).await, "50");
    limit_within_bound(&b, &tenant, &id, changed, "50").await;
    let (_, view) = b.call(&op, Method::GET, &format!("/v1/tenants/demo/installations/{id}"), None).await;
    assert_eq!(limit(&view, "timeoutMs"), (50, "tenant".into()), "the operator reads it: {view}");
    let (status, got) = b.call(&op, Method::GET, "/v1/limits/tenants/demo", None).await;
    assert_eq!((status, got["limits"].clone()), (StatusCode::OK, json!({"timeoutMs": 50})));
    // Per tenant and app, tighter still.
    let path = "/v1/limits/tenants/demo/apps/test/hostile";
    let (status, set) = a.call(&op, Method::PUT, path, Some(json!({"timeoutMs": 40}))).await;
    assert_eq!((status, set["app"].as_str()), (StatusCode::OK, Some("test/hostile")), "{set}");
    limit_within_bound(&b, &tenant, &id, Instant::now(), "40").await;
    let (status, page) = a.call(&op, Method::GET, "/v1/limits/tenants?limit=1", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!((page["items"][0]["app"].clone(), page["next"].clone()), (Value::Null, json!("demo")));
    let (_, page) = a.call(&op, Method::GET, "/v1/limits/tenants?limit=1&after=demo", None).await;
    assert_eq!((page["items"][0]["app"].clone(), page["next"].clone()), (json!("test/hostile"), Value::Null), "{page}");

    // Deleting the overrides restores the manifest's value.
    assert_eq!(a.call(&op, Method::DELETE, path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(a.call(&op, Method::DELETE, "/v1/limits/tenants/demo", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(a.call(&op, Method::DELETE, "/v1/limits/tenants/demo", None).await.0, StatusCode::NOT_FOUND);
    let changed = Instant::now();
    let (_, view) = a.call(&tenant, Method::GET, &format!("/v1/tenants/demo/installations/{id}"), None).await;
    assert_eq!(limit(&view, "timeoutMs"), (200, "manifest".into()));
    limit_within_bound(&b, &tenant, &id, changed, "200").await;

    // An app cap tighter than the manifest wins; an operator default applies below it.
    let (status, cap) = a
        .call(&op, Method::PUT, "/v1/limits/apps/test/hostile", Some(json!({"timeoutMs": 100, "memoryMiB": 16})))
        .await;
    assert_eq!((status, cap["app"].as_str()), (StatusCode::OK, Some("test/hostile")), "{cap}");
    let (status, d) = a.call(&op, Method::PUT, "/v1/limits/defaults", Some(json!({"maxOutputBytes": 1000}))).await;
    let changed = Instant::now();
    assert_eq!((status, d["defaults"].clone()), (StatusCode::OK, json!({"maxOutputBytes": 1000})), "{d}");
    let (_, view) = a.call(&tenant, Method::GET, &format!("/v1/tenants/demo/installations/{id}"), None).await;
    assert_eq!(limit(&view, "timeoutMs"), (100, "app".into()));
    assert_eq!(limit(&view, "memoryMiB"), (16, "app".into()));
    assert_eq!(limit(&view, "maxOutputBytes"), (1000, "default".into()));
    assert_eq!(limit(&view, "maxInputBytes"), (1024 * 1024, "ceiling".into()));
    limit_within_bound(&b, &tenant, &id, changed, "100").await;
    let (status, p) = invoke(&b, &tenant, &id, "huge-output", json!(2000)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("the limit is 1000 bytes"), "{p}");
    let (status, p) = invoke(&b, &tenant, &id, "huge-output", json!(900)).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (_, page) = a.call(&op, Method::GET, "/v1/limits/apps", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["limits"], json!({"memoryMiB": 16, "timeoutMs": 100}));

    // Every change is audited.
    let actions: Vec<(String, String)> = a
        .audit(&op)
        .await
        .into_iter()
        .filter(|r| r.action.starts_with("limits."))
        .map(|r| (r.action, r.target))
        .collect();
    for expected in [
        ("limits.put", "tenant:demo"),
        ("limits.put", "tenant:demo:test/hostile"),
        ("limits.delete", "tenant:demo"),
        ("limits.put", "app:test/hostile"),
        ("limits.put", "defaults"),
    ] {
        assert!(actions.contains(&(expected.0.into(), expected.1.into())), "{expected:?} in {actions:?}");
    }
}

#[tokio::test]
async fn layered_limits_on_sqlite() {
    layered_limits(false).await;
}

#[tokio::test]
async fn layered_limits_on_postgres() {
    layered_limits(true).await;
}

/// `[sandbox.defaults]` in the config file is checked against the ceilings at start.
#[tokio::test]
async fn config_defaults_above_their_ceiling_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[sandbox]\ntimeout-ms = 500\n[sandbox.defaults]\ntimeout-ms = 800\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let err = kiosk::config::OperatorConfig::load(&config).unwrap_err();
    assert!(format!("{err:#}").contains("timeoutMs 800 exceeds the operator ceiling of 500 ms"), "{err:#}");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[sandbox]\ntimeout-ms = 500\n[sandbox.defaults]\ntimeout-ms = 300\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let loaded = kiosk::config::OperatorConfig::load(&config).unwrap();
    assert_eq!(loaded.sandbox.defaults.timeout_ms, Some(300));
}
