//! The lifecycle's policies over HTTP, on SQLite and PostgreSQL: an upgrade stays on its
//! major version unless `allowMajor`; `latest`, installs without a version, tracks and
//! ranges skip prereleases unless `includePrerelease`; the licence is checked on every
//! call; a call's failure maps to its status (413, 502, 503).

use kiosk::server::serve::Started;
use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;

const APP: &str = "test/hostile";

struct Server {
    started: Started,
    base: String,
    http: reqwest::Client,
    tenant: String,
    operator: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server with the hostile guest (manifest edited by `edit`) registered as 0.0.1,
    /// the operator config `extra`, and tokens for the operator and tenant `demo`.
    async fn start(database: Option<String>, extra: &str, edit: impl FnOnce(&mut Value)) -> Self {
        let (started, dir) = common::hostile_server(database, extra, edit).await;
        let store = &started.state.store();
        let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap().1;
        let operator = store.create_token(&Principal::Operator, "op", "test").await.unwrap().1;
        let base = format!("http://{}", started.addr);
        Self { started, base, http: reqwest::Client::new(), tenant, operator, dir }
    }

    /// Registers more versions of the hostile guest (same component, signed with the
    /// demo seed's local key).
    async fn register(&self, versions: &[&str]) {
        let wasm = common::guest_bytes("hostile-guest");
        let key_dir = self.dir.path().join("data/demo");
        for v in versions {
            let mut manifest = common::manifest_json("hostile-guest");
            manifest["version"] = (*v).into();
            let bytes = serde_json::to_vec(&manifest).unwrap();
            kiosk_core::local::register_local_build(&self.started.state, &bytes, &wasm, &key_dir, "test")
                .await
                .unwrap();
        }
    }

    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{status}: {body}");
        }
        (status, body)
    }

    /// Installs `body` for tenant `demo`; returns the installation.
    async fn install(&self, body: Value) -> Value {
        let (s, b) = self.call(&self.tenant, Method::POST, "/v1/tenants/demo/installations", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b
    }

    async fn upgrade(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/tenants/demo/installations/{id}/upgrade");
        self.call(&self.tenant, Method::POST, &path, Some(body)).await
    }

    async fn invoke(&self, id: &str, operation: &str, input: Value) -> (StatusCode, Value) {
        let path = format!("/v1/tenants/demo/installations/{id}/invoke/{operation}");
        self.call(&self.tenant, Method::POST, &path, Some(input)).await
    }

    async fn entitle(&self, body: Value) {
        let path = format!("/v1/entitlements/demo/{APP}");
        let (s, b) = self.call(&self.operator, Method::PUT, &path, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn usage_events(&self) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM usage_events")
            .fetch_one(self.started.state.store().pool())
            .await
            .unwrap()
            .get("n")
    }
}

fn kind(b: &Value) -> &str {
    b["type"].as_str().unwrap_or("").trim_start_matches("urn:kiosk:problem:")
}

fn detail(b: &Value) -> &str {
    b["detail"].as_str().unwrap_or("")
}

// --- versions: majors and prereleases ---------------------------------------------------

async fn version_policies(database: Option<String>) {
    let server = Server::start(database, "", |_| {}).await;
    server.register(&["1.0.1", "1.2.0", "1.3.0-beta.1", "2.0.0", "2.1.0-rc.1"]).await;
    let store = &server.started.state.store();

    // `latest`, an install without a version, tracks and ranges skip prereleases.
    let (s, app) = server.call(&server.tenant, Method::GET, &format!("/v1/catalog/apps/{APP}"), None).await;
    assert_eq!((s, app["latest"].as_str()), (StatusCode::OK, Some("2.0.0")), "{app}");
    for (body, version) in [
        (json!({"app": APP}), "2.0.0"),
        (json!({"app": APP, "track": "1"}), "1.2.0"),
        (json!({"app": APP, "version": "^1.2"}), "1.2.0"),
        (json!({"app": APP, "includePrerelease": true}), "2.1.0-rc.1"),
        (json!({"app": APP, "track": "1", "includePrerelease": true}), "1.3.0-beta.1"),
        (json!({"app": APP, "version": "2.1.0-rc.1"}), "2.1.0-rc.1"),
    ] {
        assert_eq!(server.install(body.clone()).await["version"].as_str(), Some(version), "{body}");
    }
    let (s, b) = server
        .call(
            &server.tenant,
            Method::POST,
            "/v1/tenants/demo/installations",
            Some(json!({"app": APP, "version": "^2.1"})),
        )
        .await;
    assert_eq!((s, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "no-matching-version"), "{b}");
    assert!(detail(&b).contains("includePrerelease"), "{b}");

    // An empty upgrade stays on the major version: 1.0.1 → 1.2.0, then nothing newer.
    let id = server.install(json!({"app": APP, "version": "1.0.1"})).await["id"].as_str().unwrap().to_string();
    let (s, b) = server.upgrade(&id, json!({})).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("1.2.0")), "{b}");
    let before = store.table_counts().await.unwrap();
    let (s, b) = server.upgrade(&id, json!({})).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "no-newer-version"), "{b}");
    assert!(detail(&b).contains("2.0.0 is a major upgrade: set allowMajor"), "{b}");

    // Naming another major version without the flag: 422 naming it, nothing changed.
    for body in [json!({"version": "2.0.0"}), json!({"track": "2"}), json!({"version": ">=1.0.0"})] {
        let (s, b) = server.upgrade(&id, body.clone()).await;
        assert_eq!((s, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "major-upgrade-refused"), "{body}: {b}");
        assert!(detail(&b).contains("allowMajor"), "{b}");
    }
    assert_eq!(store.table_counts().await.unwrap(), before, "refused upgrades change nothing");
    let (s, b) = server.call(&server.tenant, Method::GET, &format!("/v1/tenants/demo/installations/{id}"), None).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("1.2.0")));

    // With the flag: the newest release; prereleases only when asked.
    let (s, b) = server.upgrade(&id, json!({"allowMajor": true})).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("2.0.0")), "{b}");
    let (s, b) = server.upgrade(&id, json!({})).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "no-newer-version"), "{b}");
    let (s, b) = server.upgrade(&id, json!({"includePrerelease": true})).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("2.1.0-rc.1")), "{b}");

    // Down and across: allowDowngrade and allowMajor both.
    let (s, b) = server.upgrade(&id, json!({"version": "1.2.0", "allowMajor": true})).await;
    assert_eq!((s, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "downgrade-refused"), "{b}");
    let (s, b) = server.upgrade(&id, json!({"version": "1.2.0", "allowDowngrade": true})).await;
    assert_eq!((s, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "major-upgrade-refused"), "{b}");
    let (s, b) = server.upgrade(&id, json!({"version": "1.2.0", "allowDowngrade": true, "allowMajor": true})).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("1.2.0")), "{b}");
    let (s, b) = server.upgrade(&id, json!({"version": "1.2.0"})).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "same-version"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_stay_on_their_major_version_and_prereleases_are_opt_in_on_sqlite() {
    version_policies(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_stay_on_their_major_version_and_prereleases_are_opt_in_on_postgres() {
    version_policies(Some(common::fresh_postgres_database().await)).await;
}

// --- the licence, on every call ---------------------------------------------------------

async fn entitlement_on_every_call(database: Option<String>) {
    let server = Server::start(database, "", |m| m["licensing"]["requiresEntitlement"] = true.into()).await;
    server.entitle(json!({})).await;
    let id = server.install(json!({"app": APP, "version": "0.0.1"})).await["id"].as_str().unwrap().to_string();
    let (s, b) = server.invoke(&id, "echo", json!("hello")).await;
    assert_eq!(
        (s, b["output"].as_str(), b["usage"][0]["sku"].as_str()),
        (StatusCode::OK, Some("hello"), Some("calls"))
    );
    let metered = server.usage_events().await;
    assert_eq!(metered, 1);

    // Revoked: the installation's calls stop (invoke and configure), nothing is metered.
    server.entitle(json!({"revoked": true})).await;
    let before = server.started.state.store().table_counts().await.unwrap();
    let (s, b) = server.invoke(&id, "echo", json!("hello")).await;
    assert_eq!((s, kind(&b)), (StatusCode::FORBIDDEN, "entitlement-revoked"), "{b}");
    let path = format!("/v1/tenants/demo/installations/{id}");
    let (s, b) = server.call(&server.tenant, Method::PATCH, &path, Some(json!({"config": {}}))).await;
    assert_eq!((s, kind(&b)), (StatusCode::FORBIDDEN, "entitlement-revoked"), "{b}");
    assert_eq!(server.usage_events().await, metered, "a refused call records no usage");
    assert_eq!(server.started.state.store().table_counts().await.unwrap(), before);

    // Granted again: calls go on.
    server.entitle(json!({})).await;
    let (s, b) = server.invoke(&id, "echo", json!("again")).await;
    assert_eq!((s, b["output"].as_str()), (StatusCode::OK, Some("again")), "{b}");
    assert_eq!(server.usage_events().await, metered + 1);

    // Expired: refused with its own reason.
    server.entitle(json!({"expiresMs": 1000})).await;
    let (s, b) = server.invoke(&id, "echo", json!("late")).await;
    assert_eq!((s, kind(&b)), (StatusCode::FORBIDDEN, "entitlement-expired"), "{b}");
    assert_eq!(server.usage_events().await, metered + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_licence_stops_an_installations_calls_on_sqlite() {
    entitlement_on_every_call(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_licence_stops_an_installations_calls_on_postgres() {
    entitlement_on_every_call(Some(common::fresh_postgres_database().await)).await;
}

// --- a call's failure, as a status -------------------------------------------------------

async fn call_failures(database: Option<String>) {
    let postgres = database.is_some();
    let server = Server::start(database, "[sandbox]\nmax-input-bytes = 1024\n", |_| {}).await;
    let id = server.install(json!({"app": APP, "version": "0.0.1"})).await["id"].as_str().unwrap().to_string();
    let metered = server.usage_events().await;

    // Input over its cap: 413, naming the limit.
    let (s, b) = server.invoke(&id, "echo", json!("x".repeat(2048))).await;
    assert_eq!((s, kind(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "input-too-large"), "{b}");
    assert!(detail(&b).contains("1024"), "{b}");

    // The app's own failure (a trap, a limit): 502, naming what happened.
    for (operation, says) in [("trap", "trapped"), ("loop", "200 ms"), ("grow-memory", "memory limit")] {
        let (s, b) = server.invoke(&id, operation, json!("x")).await;
        assert_eq!((s, kind(&b)), (StatusCode::BAD_GATEWAY, "app-failed"), "{operation}: {b}");
        assert!(detail(&b).contains(says), "{operation}: {b}");
    }
    assert_eq!(server.usage_events().await, metered, "failed calls record no usage");

    // The host's storage failing: 503 with Retry-After, and no database text.
    let pool = server.started.state.store().pool();
    let statements: &[&str] = if postgres {
        &[
            "CREATE FUNCTION kv_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk-on-fire'; END $$ \
             LANGUAGE plpgsql",
            "CREATE TRIGGER kv_refuse BEFORE INSERT OR UPDATE ON kv FOR EACH ROW EXECUTE FUNCTION kv_refuse()",
        ]
    } else {
        &["CREATE TRIGGER kv_refuse BEFORE INSERT ON kv BEGIN SELECT RAISE(ABORT, 'disk-on-fire'); END"]
    };
    for statement in statements {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    let path = format!("{}/v1/tenants/demo/installations/{id}/invoke/kv-set", server.base);
    let resp = server.http.post(path).bearer_auth(&server.tenant).json(&json!("k=v")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let b: Value = resp.json().await.unwrap();
    assert_eq!(kind(&b), "storage-unavailable", "{b}");
    assert!(!b.to_string().contains("disk-on-fire"), "database text stays in the server log: {b}");
    // (The guest's key is the input's text up to `=`, quote included.)
    let (s, b) = server.invoke(&id, "kv-get", json!("\"k")).await;
    assert_eq!((s, b["output"].as_str()), (StatusCode::OK, Some("<none>")), "nothing the call did was kept: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_failures_map_to_413_502_and_503_on_sqlite() {
    call_failures(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_failures_map_to_413_502_and_503_on_postgres() {
    call_failures(Some(common::fresh_postgres_database().await)).await;
}
