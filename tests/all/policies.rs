//! The lifecycle's policies over HTTP, on SQLite and PostgreSQL: an upgrade stays on its
//! major version unless `allowMajor`; `latest`, installs without a version, tracks and
//! ranges skip prereleases unless `includePrerelease`; the licence is checked on every
//! call; a call's failure maps to its status (413, 502, 503).

use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;
use crate::common::api::{Installation, TestServer, kind};

const APP: &str = "test/hostile";

struct Server {
    s: TestServer,
    tenant: String,
    operator: String,
}

impl std::ops::Deref for Server {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

impl Server {
    /// A server with the hostile guest (manifest edited by `edit`) registered as 0.0.1,
    /// the operator config `extra`, and tokens for the operator and tenant `demo`.
    async fn start(database: Option<String>, extra: &str, edit: impl FnOnce(&mut Value)) -> Self {
        let s = common::hostile_server(database, extra, edit).await;
        let store = s.store();
        let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap().1;
        let operator = store.create_token(&Principal::Operator, "op", "test").await.unwrap().1;
        Self { s, tenant, operator }
    }

    /// Registers more versions of the hostile guest (same component, signed with the
    /// demo seed's local key).
    async fn register(&self, versions: &[&str]) {
        let wasm = common::guest_bytes("hostile-guest");
        let key_dir = self.dir().join("data/demo");
        for v in versions {
            let mut manifest = common::manifest_json("hostile-guest");
            manifest["version"] = (*v).into();
            let bytes = serde_json::to_vec(&manifest).unwrap();
            kiosk_core::local::register_local_build(&self.started.state, &bytes, &wasm, &key_dir, "test")
                .await
                .unwrap();
        }
    }

    /// Installs `body` for tenant `demo`; returns the installation.
    async fn install(&self, body: Value) -> Installation {
        self.s.install(&self.tenant, "demo", body).await
    }

    async fn upgrade(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/tenants/demo/installations/{id}/upgrade");
        self.call(Some(&self.tenant), Method::POST, &path, Some(body)).await
    }

    async fn invoke(&self, id: &str, operation: &str, input: Value) -> (StatusCode, Value) {
        self.s.invoke(&self.tenant, "demo", id, operation, input).await
    }

    async fn entitle(&self, body: Value) {
        let path = format!("/v1/entitlements/demo/{APP}");
        let (s, b) = self.call(Some(&self.operator), Method::PUT, &path, Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn usage_events(&self) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM usage_events").fetch_one(self.store().pool()).await.unwrap().get("n")
    }
}

fn detail(b: &Value) -> &str {
    b["detail"].as_str().unwrap_or("")
}

// --- versions: majors and prereleases ---------------------------------------------------

async fn version_policies(database: Option<String>) {
    let server = Server::start(database, "", |_| {}).await;
    server.register(&["1.0.1", "1.2.0", "1.3.0-beta.1", "2.0.0", "2.1.0-rc.1"]).await;
    let store = server.store();

    // `latest`, an install without a version, tracks and ranges skip prereleases.
    let (s, app) = server.call(Some(&server.tenant), Method::GET, &format!("/v1/catalog/apps/{APP}"), None).await;
    assert_eq!((s, app["latest"].as_str()), (StatusCode::OK, Some("2.0.0")), "{app}");
    for (body, version) in [
        (json!({"app": APP}), "2.0.0"),
        (json!({"app": APP, "track": "1"}), "1.2.0"),
        (json!({"app": APP, "version": "^1.2"}), "1.2.0"),
        (json!({"app": APP, "includePrerelease": true}), "2.1.0-rc.1"),
        (json!({"app": APP, "track": "1", "includePrerelease": true}), "1.3.0-beta.1"),
        (json!({"app": APP, "version": "2.1.0-rc.1"}), "2.1.0-rc.1"),
    ] {
        assert_eq!(server.install(body.clone()).await.version, version, "{body}");
    }
    let (s, b) = server
        .call(
            Some(&server.tenant),
            Method::POST,
            "/v1/tenants/demo/installations",
            Some(json!({"app": APP, "version": "^2.1"})),
        )
        .await;
    assert_eq!((s, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "no-matching-version"), "{b}");
    assert!(detail(&b).contains("includePrerelease"), "{b}");

    // An empty upgrade stays on the major version: 1.0.1 → 1.2.0, then nothing newer.
    let id = server.install(json!({"app": APP, "version": "1.0.1"})).await.id;
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
    let (s, b) =
        server.call(Some(&server.tenant), Method::GET, &format!("/v1/tenants/demo/installations/{id}"), None).await;
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
    let id = server.install(json!({"app": APP, "version": "0.0.1"})).await.id;
    let (s, b) = server.invoke(&id, "echo", json!("hello")).await;
    assert_eq!(
        (s, b["output"].as_str(), b["usage"][0]["sku"].as_str()),
        (StatusCode::OK, Some("hello"), Some("calls"))
    );
    let metered = server.usage_events().await;
    assert_eq!(metered, 1);

    // Revoked: the installation's calls stop (invoke and configure), nothing is metered.
    server.entitle(json!({"revoked": true})).await;
    let before = server.store().table_counts().await.unwrap();
    let (s, b) = server.invoke(&id, "echo", json!("hello")).await;
    assert_eq!((s, kind(&b)), (StatusCode::FORBIDDEN, "entitlement-revoked"), "{b}");
    let path = format!("/v1/tenants/demo/installations/{id}");
    let (s, b) = server.call(Some(&server.tenant), Method::PATCH, &path, Some(json!({"config": {}}))).await;
    assert_eq!((s, kind(&b)), (StatusCode::FORBIDDEN, "entitlement-revoked"), "{b}");
    assert_eq!(server.usage_events().await, metered, "a refused call records no usage");
    assert_eq!(server.store().table_counts().await.unwrap(), before);

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
    let id = server.install(json!({"app": APP, "version": "0.0.1"})).await.id;
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
    let pool = server.store().pool();
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
    let path = format!("/v1/tenants/demo/installations/{id}/invoke/kv-set");
    let reply = server.send(Some(&server.tenant), Method::POST, &path, Some(json!("k=v"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let b = reply.json();
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
