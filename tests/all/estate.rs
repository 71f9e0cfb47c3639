//! The estate read by the operator, and suspend/disable, over HTTP on SQLite and
//! PostgreSQL (issue 11): partners, tenants, entitlements, versions and installations
//! page by page with cursors; tokens listed without a secret or its hash; a suspended
//! tenant's calls, installs, configures and upgrades refused while it still reads and
//! uninstalls, and its installation skipped by the collector; a disabled partner's apps
//! out of the catalog, not installable and not running, its registrations refused, its
//! token still reading.

use std::collections::BTreeSet;
use std::sync::Arc;

use kiosk::store::{Principal, token_hash};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::TestServer;

/// Registers another version of the hostile guest (signed with the demo seed's key).
async fn register(s: &TestServer, version: &str) -> anyhow::Result<()> {
    let wasm = common::guest_bytes("hostile-guest");
    let mut manifest = common::manifest_json("hostile-guest");
    manifest["version"] = version.into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let key_dir = s.dir().join("data/demo");
    kiosk_core::local::register_local_build(&s.started.state, &bytes, &wasm, &key_dir, "test").await.map(drop)
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a str> {
    items.iter().map(|i| i[name].as_str().unwrap()).collect()
}

async fn start(postgres: bool) -> TestServer {
    let database = if postgres { Some(common::fresh_postgres_database().await) } else { None };
    common::hostile_server(database, "", |_| {}).await
}

async fn estate(postgres: bool) {
    let s = start(postgres).await;
    let store = s.store();
    let (_, op) = store.create_token(&Principal::Operator, "op", "test").await.unwrap();
    let (_, tenant) = store.create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap();
    let mut secrets = vec![op.clone(), tenant.clone()];

    for i in 1..=5 {
        let (partner, tenant) = (format!("p{i:02}"), format!("t{i:02}"));
        s.create_partner(&op, &partner).await;
        s.create_tenant(&op, &tenant).await;
        for (role, scope) in [("partner", &partner), ("tenant", &tenant)] {
            secrets.push(s.create_token(&op, role, Some(scope)).await.token);
        }
    }

    // Partners and tenants, page by page.
    let (partners, pages) = s.walk(&op, "/v1/partners", 2).await;
    let names = field(&partners, "name");
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len(), "no item twice: {names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    for want in ["p01", "p02", "p03", "p04", "p05", "test"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let (st, test) = s.call(Some(&op), Method::GET, "/v1/partners/test", None).await;
    assert_eq!(st, StatusCode::OK, "{test}");
    assert_eq!(
        (test["apps"].clone(), test["certificates"].clone(), test["disabled"].clone()),
        (json!(1), json!(1), json!(false))
    );
    assert!(test["createdMs"].as_i64().unwrap() > 0);
    assert_eq!(s.call(Some(&op), Method::GET, "/v1/partners/nobody", None).await.0, StatusCode::NOT_FOUND);
    let (tenants, _) = s.walk(&op, "/v1/tenants", 4).await;
    assert_eq!(field(&tenants, "id"), vec!["demo", "t01", "t02", "t03", "t04", "t05"]);

    // The tenant installs; the operator reads its installations (GET only) and the estate's.
    let id = s.install(&tenant, "demo", json!({"app": "test/hostile"})).await.id;
    let inst_path = format!("/v1/tenants/demo/installations/{id}");
    let (st, list) = s.call(Some(&op), Method::GET, "/v1/tenants/demo/installations", None).await;
    assert_eq!((st, list["items"][0]["id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{list}");
    assert_eq!(s.call(Some(&op), Method::GET, &inst_path, None).await.0, StatusCode::OK);
    let (st, _) = s.call(Some(&op), Method::POST, &format!("{inst_path}/invoke/echo"), Some(json!(1))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the operator reads, never acts as the tenant");
    let (st, _) = s.call(Some(&op), Method::PATCH, &inst_path, Some(json!({"config": {}}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, demo) = s.call(Some(&op), Method::GET, "/v1/tenants/demo", None).await;
    assert_eq!(
        (st, demo["installations"].clone(), demo["suspended"].clone()),
        (StatusCode::OK, json!(1), json!(false))
    );
    for query in ["/v1/installations", "/v1/installations?tenant=demo", "/v1/installations?app=test/hostile"] {
        let (items, _) = s.walk(&op, query, 1).await;
        assert_eq!(field(&items, "id"), vec![id.as_str()], "{query}");
    }
    let (items, _) = s.walk(&op, "/v1/installations?tenant=t01", 1).await;
    assert!(items.is_empty());
    // The tenant's own list is a page too, by id.
    let mut ids = vec![id.clone()];
    for _ in 0..2 {
        ids.push(s.install(&tenant, "demo", json!({"app": "test/hostile"})).await.id);
    }
    ids.sort();
    for token in [&tenant, &op] {
        let (items, pages) = s.walk(token, "/v1/tenants/demo/installations", 2).await;
        assert_eq!((field(&items, "id"), pages), (ids.iter().map(String::as_str).collect(), 2));
    }

    // Entitlements and versions across partners.
    for t in ["t01", "t02", "t03"] {
        let (st, b) =
            s.call(Some(&op), Method::PUT, &format!("/v1/entitlements/{t}/test/hostile"), Some(json!({}))).await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let (items, pages) = s.walk(&op, "/v1/entitlements?partner=test", 2).await;
    assert_eq!((field(&items, "tenant"), pages), (vec!["t01", "t02", "t03"], 2));
    let (items, _) = s.walk(&op, "/v1/entitlements?tenant=t02", 2).await;
    assert_eq!(field(&items, "app"), vec!["test/hostile"]);
    let (items, _) = s.walk(&op, "/v1/entitlements?partner=p01", 2).await;
    assert!(items.is_empty());
    register(&s, "0.0.2").await.unwrap();
    register(&s, "0.0.3").await.unwrap();
    let (st, _) = s.call(Some(&op), Method::POST, "/v1/apps/test/hostile/versions/0.0.3/yank", None).await;
    assert_eq!(st, StatusCode::OK);
    let (items, pages) = s.walk(&op, "/v1/versions?app=test/hostile", 2).await;
    assert_eq!((field(&items, "version"), pages), (vec!["0.0.1", "0.0.2", "0.0.3"], 2));
    let (items, _) = s.walk(&op, "/v1/versions?state=active", 10).await;
    assert_eq!(field(&items, "version"), vec!["0.0.1", "0.0.2"]);
    let (items, _) = s.walk(&op, "/v1/versions?state=yanked", 10).await;
    assert_eq!(field(&items, "version"), vec!["0.0.3"]);
    let (items, _) = s.walk(&op, "/v1/versions?state=quarantined", 10).await;
    assert!(items.is_empty());
    // The catalog's versions of an app: highest first, the cursor a version.
    let (items, pages) = s.walk(&tenant, "/v1/catalog/apps/test/hostile/versions", 2).await;
    assert_eq!((field(&items, "version"), pages), (vec!["0.0.3", "0.0.2", "0.0.1"], 2));
    assert_eq!(items[0]["yanked"], true);
    let (st, p) = s.call(Some(&op), Method::GET, "/v1/versions?state=gone", None).await;
    assert_eq!((st, p["field"].as_str()), (StatusCode::BAD_REQUEST, Some("state")), "{p}");
    let (st, p) = s.call(Some(&op), Method::GET, "/v1/partners?limit=0", None).await;
    assert_eq!((st, p["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "{p}");
    let (st, _) = s.call(Some(&tenant), Method::GET, "/v1/partners", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the estate is the operator's");

    // Tokens, the audit log and registries are pages too; no secret nor its hash anywhere.
    let (tokens, pages) = s.walk(&op, "/v1/tokens", 3).await;
    assert!(tokens.len() >= 12 && pages >= 4, "{} tokens in {pages} pages", tokens.len());
    let (audit, _) = s.walk(&op, "/v1/audit", 7).await;
    let ids: Vec<i64> = audit.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, never twice: {ids:?}");
    let (registries, _) = s.walk(&op, "/v1/registries", 5).await;
    let everything = [tokens, audit, registries, partners, tenants].map(|v| Value::Array(v).to_string()).join("\n");
    for secret in &secrets {
        assert!(!everything.contains(secret.as_str()), "a token secret is shown");
        assert!(!everything.contains(&token_hash(secret)), "a token hash is shown");
    }
}

#[tokio::test]
async fn estate_on_sqlite() {
    estate(false).await;
}

#[tokio::test]
async fn estate_on_postgres() {
    estate(true).await;
}

async fn suspend_and_disable(postgres: bool) {
    let s = start(postgres).await;
    let state = s.started.state.clone();
    let (_, op) = state.store().create_token(&Principal::Operator, "op", "test").await.unwrap();
    let (_, tenant) = state.store().create_token(&Principal::Tenant("demo".into()), "t", "test").await.unwrap();
    let (_, partner) = state.store().create_token(&Principal::Partner("test".into()), "p", "test").await.unwrap();
    let installations = "/v1/tenants/demo/installations";
    let id = s.install(&tenant, "demo", json!({"app": "test/hostile"})).await.id;
    let inst_path = format!("{installations}/{id}");
    let echo = json!("hi");
    register(&s, "0.0.2").await.unwrap();

    // Suspended: calls, installs, configures and upgrades refused; reads allowed.
    let (st, t) = s.call(Some(&op), Method::POST, "/v1/tenants/demo/suspend", None).await;
    assert_eq!((st, t["suspended"].clone()), (StatusCode::OK, json!(true)), "{t}");
    let refused = [
        (Method::POST, format!("{inst_path}/invoke/echo"), Some(echo.clone())),
        (Method::POST, installations.to_string(), Some(json!({"app": "test/hostile"}))),
        (Method::PATCH, inst_path.clone(), Some(json!({"config": {}}))),
        (Method::POST, format!("{inst_path}/upgrade"), Some(json!({}))),
    ];
    let before = state.store().table_counts().await.unwrap();
    for (method, path, body) in &refused {
        let (st, p) = s.call(Some(&tenant), method.clone(), path, body.clone()).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {p}");
        assert_eq!(p["type"], "urn:kiosk:problem:tenant-suspended", "{method} {path}: {p}");
    }
    assert_eq!(state.store().table_counts().await.unwrap(), before, "a refused request writes nothing");
    let (st, view) = s.call(Some(&tenant), Method::GET, &inst_path, None).await;
    assert_eq!((st, view["version"].as_str()), (StatusCode::OK, Some("0.0.1")), "reads stay allowed: {view}");
    // The collector skips the suspended tenant's installation (1 ms windows: every
    // installation has completed windows to collect).
    let places = Arc::new(kiosk::collector::Places::new());
    let replica: Arc<str> = Arc::from("test-replica");
    let started = kiosk::collector::collect_once(&state, &places, &replica, 1, 60_000).await.unwrap();
    assert_eq!(started, 0, "a suspended tenant's installation is not collected");
    let (st, t) = s.call(Some(&op), Method::POST, "/v1/tenants/demo/resume", None).await;
    assert_eq!((st, t["suspended"].clone()), (StatusCode::OK, json!(false)), "{t}");
    let (st, out) = s.call(Some(&tenant), Method::POST, &format!("{inst_path}/invoke/echo"), Some(echo.clone())).await;
    assert_eq!((st, out["output"].clone()), (StatusCode::OK, json!("hi")), "{out}");
    let started = kiosk::collector::collect_once(&state, &places, &replica, 1, 60_000).await.unwrap();
    assert!(started > 0, "collected again once resumed");

    // Disabled: out of the catalog, not installable, calls refused; the partner still reads.
    let (st, p) = s.call(Some(&op), Method::POST, "/v1/partners/test/disable", None).await;
    assert_eq!((st, p["disabled"].clone()), (StatusCode::OK, json!(true)), "{p}");
    let (_, catalog) = s.call(Some(&tenant), Method::GET, "/v1/catalog/apps", None).await;
    assert_eq!(catalog, json!({"items": [], "next": null}), "the only app is out");
    assert_eq!(
        s.call(Some(&tenant), Method::GET, "/v1/catalog/apps/test/hostile", None).await.0,
        StatusCode::NOT_FOUND
    );
    for (method, path, body) in &refused {
        let (st, p) = s.call(Some(&tenant), method.clone(), path, body.clone()).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {p}");
        assert_eq!(p["type"], "urn:kiosk:problem:partner-disabled", "{method} {path}: {p}");
    }
    let err = register(&s, "0.0.3").await.unwrap_err();
    assert!(format!("{err:#}").contains("partner test is disabled"), "{err:#}");
    assert!(state.store().version("test/hostile", "0.0.3").await.unwrap().is_none());
    let (st, apps) = s.call(Some(&partner), Method::GET, "/v1/partners/test/apps", None).await;
    assert_eq!(
        (st, apps["items"][0]["app"].as_str()),
        (StatusCode::OK, Some("test/hostile")),
        "the partner still reads: {apps}"
    );
    let (st, p) = s.call(Some(&partner), Method::GET, "/v1/partners/test", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the estate is the operator's: {p}");
    let (st, p) = s.call(Some(&op), Method::POST, "/v1/partners/test/enable", None).await;
    assert_eq!((st, p["disabled"].clone()), (StatusCode::OK, json!(false)), "{p}");
    let (st, out) = s.call(Some(&tenant), Method::POST, &format!("{inst_path}/invoke/echo"), Some(echo.clone())).await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(s.call(Some(&tenant), Method::GET, "/v1/catalog/apps/test/hostile", None).await.0, StatusCode::OK);

    // A suspended tenant can still leave.
    assert_eq!(s.call(Some(&op), Method::POST, "/v1/tenants/demo/suspend", None).await.0, StatusCode::OK);
    let (st, b) = s.call(Some(&tenant), Method::DELETE, &inst_path, None).await;
    assert!(st == StatusCode::NO_CONTENT || st == StatusCode::OK, "{st} {b}");
    assert_eq!(s.call(Some(&tenant), Method::GET, &inst_path, None).await.0, StatusCode::NOT_FOUND);

    // Unknown names are 404; every switch is audited.
    assert_eq!(s.call(Some(&op), Method::POST, "/v1/tenants/nobody/suspend", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.call(Some(&op), Method::POST, "/v1/partners/nobody/disable", None).await.0, StatusCode::NOT_FOUND);
    let log = s.audit(&op).await;
    let actions: Vec<(&str, &str)> = log.iter().map(|r| (r.action.as_str(), r.target.as_str())).collect();
    for expected in
        [("tenant.suspend", "demo"), ("tenant.resume", "demo"), ("partner.disable", "test"), ("partner.enable", "test")]
    {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
}

#[tokio::test]
async fn suspend_and_disable_on_sqlite() {
    suspend_and_disable(false).await;
}

#[tokio::test]
async fn suspend_and_disable_on_postgres() {
    suspend_and_disable(true).await;
}
