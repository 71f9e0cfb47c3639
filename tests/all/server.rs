//! The server over HTTP against a real registry, real keys and a real database:
//! the whole journey, bad inputs leaving the database as it was, the authorization
//! matrix route by route, and secrets that never come back.

use std::collections::BTreeMap;
use std::path::Path;

use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{PROBLEM_JSON, Reply, TestServer};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

const SECRET: &str = "sk-live-DO-NOT-LEAK-4242";

struct World {
    _registry: TestRegistry,
    /// Its client keeps every body it reads: the secret must be in none.
    s: TestServer,
    db_file: std::path::PathBuf,
    operator: String,
    acme: String,
    globex: String,
    t1: String,
    t2: String,
    registry_host: String,
}

impl std::ops::Deref for World {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a str> {
    items.iter().map(|i| i[name].as_str().unwrap()).collect()
}

async fn publish(registry: &Registry, secret_key: &[u8], repo: &str, manifest: &Value, wasm: &[u8]) {
    let m = serde_json::to_vec_pretty(manifest).unwrap();
    let sigs = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, wasm).unwrap().0];
    push(registry, repo, manifest["version"].as_str().unwrap(), &assemble(&m, wasm, &sigs), |_| {}).await.unwrap();
}

async fn world(database: Option<String>) -> World {
    let registry = TestRegistry::start(Mode::Plain);
    let operator = "operator-bootstrap-token-for-tests".to_string();
    let s = TestServer::fresh(database, &format!("[server]\noperator-token = \"{operator}\"\n")).await.recording();
    World {
        registry_host: registry.host.clone(),
        _registry: registry,
        db_file: s.dir().join("data/kiosk.db"),
        s,
        operator,
        acme: String::new(),
        globex: String::new(),
        t1: String::new(),
        t2: String::new(),
    }
}

fn paths_with_secret(dir: &Path) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(paths_with_secret(&path));
        } else if std::fs::read(&path).unwrap_or_default().windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[tokio::test]
async fn the_whole_journey_on_sqlite() {
    journey(None).await;
}

#[tokio::test]
async fn the_whole_journey_on_postgresql() {
    journey(Some(common::fresh_postgres_database().await)).await;
}

/// Every table's text and bytes, searched for the secret (PostgreSQL has no file to scan).
async fn postgres_holds_secret(url: &str) -> bool {
    use sqlx::{Connection as _, Row as _};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT config AS t, secrets AS b FROM installations UNION ALL SELECT key, value FROM kv
         UNION ALL SELECT detail, NULL FROM audit UNION ALL SELECT manifest, NULL FROM versions",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.iter().any(|r| {
        let t: String = r.get("t");
        let b: Option<Vec<u8>> = r.get("b");
        t.contains(SECRET) || b.is_some_and(|b| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
    })
}

async fn journey(database: Option<String>) {
    let mut w = world(database.clone()).await;
    let op = w.operator.clone();
    let gpg = Gpg::new();
    let acme_key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let acme_secret = gpg.export_secret(&acme_key);
    let acme_cert = String::from_utf8(gpg.export(&acme_key)).unwrap();
    let test_key = gpg.generate("Test <ci@test.example>", "ed25519", "sign", "1y", None);
    let (test_secret, test_cert) = (gpg.export_secret(&test_key), String::from_utf8(gpg.export(&test_key)).unwrap());

    // Operator: partners, certificate, tenants, tokens.
    for p in ["acme", "globex", "test"] {
        assert_eq!(
            w.call(Some(&op), Method::POST, "/v1/partners", Some(json!({"name": p}))).await.0,
            StatusCode::CREATED
        );
    }
    for (p, cert) in [("acme", &acme_cert), ("test", &test_cert)] {
        let (s, body) = w
            .call(
                Some(&op),
                Method::POST,
                &format!("/v1/partners/{p}/certificates"),
                Some(json!({"certificate": cert})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    for t in ["t1", "t2"] {
        assert_eq!(w.call(Some(&op), Method::POST, "/v1/tenants", Some(json!({"id": t}))).await.0, StatusCode::CREATED);
    }
    let token = |role: &str, scope: &str| json!({"role": role, "scope": scope});
    let mut tokens = BTreeMap::new();
    for (name, body) in [
        ("acme", token("partner", "acme")),
        ("globex", token("partner", "globex")),
        ("test", token("partner", "test")),
        ("t1", token("tenant", "t1")),
        ("t2", token("tenant", "t2")),
    ] {
        let (s, b) = w.call(Some(&op), Method::POST, "/v1/tokens", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        tokens.insert(name, b["token"].as_str().unwrap().to_string());
    }
    (w.acme, w.globex, w.t1, w.t2) =
        (tokens["acme"].clone(), tokens["globex"].clone(), tokens["t1"].clone(), tokens["t2"].clone());

    // Operator: the registry, with write-only credentials (the plain registry ignores them)
    // and the repository prefixes each partner may register from.
    let reg = json!({"insecure": true, "username": "kiosk-reader", "password": SECRET,
                     "partners": {"acme": ["acme/"], "test": ["test/"]}});
    let (st, b) = w.call(Some(&op), Method::PUT, &format!("/v1/registries/{}", w.registry_host), Some(reg)).await;
    assert_eq!((st, b["credentialsSet"].as_bool()), (StatusCode::OK, Some(true)), "{b}");
    let (_, list) = w.call(Some(&op), Method::GET, "/v1/registries", None).await;
    assert_eq!(list["items"][0]["username"], "kiosk-reader");
    assert_eq!(list["items"][0]["partners"]["acme"], json!(["acme/"]));
    assert!(list["items"][0].get("password").is_none(), "{list}");

    // Partner: publish two versions to the registry and register them.
    let registry = Registry::new(
        &RegistrySettings { host: w.registry_host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    let wasm = guest_bytes("budget-pacing");
    let mut manifest = manifest_json("budget-pacing");
    publish(&registry, &acme_secret, "acme/budget-pacing", &manifest, &wasm).await;
    manifest["version"] = "1.5.0".into();
    publish(&registry, &acme_secret, "acme/budget-pacing", &manifest, &wasm).await;
    for v in ["1.4.34", "1.5.0"] {
        let reference = format!("{}/acme/budget-pacing:{v}", w.registry_host);
        let (s, b) = w
            .call(
                Some(&w.acme),
                Method::POST,
                "/v1/partners/acme/apps/budget-pacing/versions",
                Some(json!({"reference": reference})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["signer"], acme_key);
    }
    // A paid app and the hostile guest, for entitlement and hook refusals.
    let mut paid = manifest_json("budget-pacing");
    paid["app"] = "acme/pacing-pro".into();
    paid["licensing"]["requiresEntitlement"] = true.into();
    publish(&registry, &acme_secret, "acme/pacing-pro", &paid, &wasm).await;
    let r = format!("{}/acme/pacing-pro:1.4.34", w.registry_host);
    assert_eq!(
        w.call(
            Some(&w.acme),
            Method::POST,
            "/v1/partners/acme/apps/pacing-pro/versions",
            Some(json!({"reference": r}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    publish(&registry, &test_secret, "test/hostile", &manifest_json("hostile-guest"), &guest_bytes("hostile-guest"))
        .await;
    let r = format!("{}/test/hostile:0.0.1", w.registry_host);
    let (s, b) = w
        .call(
            Some(&tokens["test"]),
            Method::POST,
            "/v1/partners/test/apps/hostile/versions",
            Some(json!({"reference": r})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // hostApi mismatch is refused at registration.
    let mut future = manifest_json("budget-pacing");
    future["version"] = "2.0.0".into();
    future["hostApi"] = ">=0.3.0".into();
    publish(&registry, &acme_secret, "acme/budget-pacing", &future, &wasm).await;
    let r = format!("{}/acme/budget-pacing:2.0.0", w.registry_host);
    let before = w.store().table_counts().await.unwrap();
    let (s, b) = w
        .call(
            Some(&w.acme),
            Method::POST,
            "/v1/partners/acme/apps/budget-pacing/versions",
            Some(json!({"reference": r})),
        )
        .await;
    assert_eq!(
        (s, b["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("urn:kiosk:problem:host-api-mismatch")),
        "{b}"
    );
    assert!(b["detail"].as_str().unwrap().contains("requires host API >=0.3.0"), "{b}");
    assert_eq!(w.store().table_counts().await.unwrap(), before, "a refused registration records nothing");

    // Tenant: browse the catalog.
    let t1 = w.t1.clone();
    let (_, cats) = w.call(Some(&t1), Method::GET, "/v1/catalog/categories", None).await;
    assert_eq!(cats, json!({"items": ["analytics", "testing"], "next": null}));
    let (_, apps) = w.call(Some(&t1), Method::GET, "/v1/catalog/apps?q=pacing&category=analytics", None).await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 2, "{apps}");
    // Every list is a page (`{items, next}`, `?limit=&after=`), in a stable order.
    let (cats, pages) = w.walk(&t1, "/v1/catalog/categories", 1).await;
    assert_eq!((cats, pages), (vec![json!("analytics"), json!("testing")], 2));
    let (apps, pages) = w.walk(&t1, "/v1/catalog/apps", 2).await;
    assert_eq!((field(&apps, "app"), pages), (vec!["acme/budget-pacing", "acme/pacing-pro", "test/hostile"], 2));
    let (apps, pages) = w.walk(&t1, "/v1/catalog/apps?q=pacing&category=analytics", 1).await;
    assert_eq!((field(&apps, "app"), pages), (vec!["acme/budget-pacing", "acme/pacing-pro"], 2), "filters stay");
    let (versions, pages) = w.walk(&t1, "/v1/catalog/apps/acme/budget-pacing/versions", 1).await;
    assert_eq!((field(&versions, "version"), pages), (vec!["1.5.0", "1.4.34"], 2), "highest first");
    // A version cursor that names no registered version starts below it; empty is the start.
    for (after, want) in
        [("9.9.9", vec!["1.5.0", "1.4.34"]), ("1.5.0-rc.1", vec!["1.4.34"]), ("", vec!["1.5.0", "1.4.34"])]
    {
        let path = format!("/v1/catalog/apps/acme/budget-pacing/versions?after={after}");
        let (st, page) = w.call(Some(&t1), Method::GET, &path, None).await;
        assert_eq!((st, field(page["items"].as_array().unwrap(), "version")), (StatusCode::OK, want), "{path}");
    }
    let acme = w.acme.clone();
    let (apps, pages) = w.walk(&acme, "/v1/partners/acme/apps", 1).await;
    assert_eq!((field(&apps, "app"), pages), (vec!["acme/budget-pacing", "acme/pacing-pro"], 2));
    assert_eq!(field(apps[0]["versions"].as_array().unwrap(), "version"), vec!["1.5.0", "1.4.34"]);
    for path in [
        "/v1/catalog/categories?limit=0",
        "/v1/catalog/apps?q=pacing&limit=1001",
        "/v1/catalog/apps/acme/budget-pacing/versions?limit=0",
        "/v1/catalog/apps/acme/budget-pacing/versions?after=not-a-version",
        "/v1/partners/acme/apps?limit=-1",
        "/v1/tenants/t1/installations?limit=0",
    ] {
        let token = if path.starts_with("/v1/partners") { &acme } else { &t1 };
        let (st, p) = w.call(Some(token), Method::GET, path, None).await;
        let want = if path.contains("after=") { "after" } else { "limit" };
        assert_eq!(
            (st, p["type"].as_str(), p["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("urn:kiosk:problem:invalid-query"), Some(want)),
            "{path}: {p}"
        );
    }
    let (_, detail) = w.call(Some(&t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.4.34", None).await;
    assert_eq!(detail["skus"][0]["id"], "pacing-check");
    assert_eq!(detail["configSchema"]["required"], json!(["apiKey"]));

    // Install with a config (a track resolves to its highest version), invoke.
    let install = json!({"app": "acme/budget-pacing", "track": "1.4", "config": {"apiKey": SECRET, "threshold": 0.2}});
    let inst = w.install(&t1, "t1", install).await;
    assert_eq!((inst.version.as_str(), inst.secrets_set.as_slice()), ("1.4.34", ["/apiKey".to_string()].as_slice()));
    assert_eq!(inst.config, json!({"threshold": 0.2, "alerts": {"channel": "none"}}), "defaults apply, nested too");
    let id = inst.id;
    let base = format!("/v1/tenants/t1/installations/{id}");
    let input = json!({"campaignId": "c1", "budget": 3000, "flightDays": 30, "dailySpend": [100, 100, 200]});
    let out = w.invoked(&t1, "t1", &id, "evaluate", input.clone()).await;
    assert_eq!((out.output["status"].as_str(), out.output["threshold"].as_f64()), (Some("over"), Some(0.2)));
    let skus: Vec<&str> = out.usage.iter().map(|u| u.sku.as_str()).collect();
    assert_eq!(skus, ["rows-scanned", "pacing-check"]);

    // Change config (the secret is kept when left out), upgrade, uninstall.
    let (s, b) = w.call(Some(&t1), Method::PATCH, &base, Some(json!({"config": {"threshold": 0.5}}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["secretsSet"], json!(["/apiKey"]));
    let (_, out) = w.call(Some(&t1), Method::POST, &format!("{base}/invoke/evaluate"), Some(input.clone())).await;
    assert_eq!(out["output"]["status"], "on-track", "{out}");
    let (s, b) = w.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(json!({"version": "1.5.0"}))).await;
    assert_eq!((s, b["version"].as_str()), (StatusCode::OK, Some("1.5.0")), "{b}");
    let (s, b) = w.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(json!({"version": "1.4.34"}))).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("urn:kiosk:problem:downgrade-refused"))
    );
    let (s, out) = w.call(Some(&t1), Method::POST, &format!("{base}/invoke/evaluate"), Some(input.clone())).await;
    assert_eq!((s, out["output"]["threshold"].as_f64()), (StatusCode::OK, Some(0.5)), "{out}");

    // Bad inputs: each a problem naming the cause, and the database as it was.
    let store = w.store().clone();
    let yank =
        w.call(Some(&w.acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/1.5.0/yank", None).await;
    assert_eq!(yank.0, StatusCode::OK);
    let expired = json!({"expiresMs": 1000});
    assert_eq!(
        w.call(Some(&op), Method::PUT, "/v1/entitlements/t2/acme/pacing-pro", Some(expired)).await.0,
        StatusCode::OK
    );
    let cases: Vec<(&str, Option<Value>, StatusCode, &str, &str)> = vec![
        (
            "t1",
            Some(json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k", "threshold": 9}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "config-invalid",
            "/threshold",
        ),
        ("t1", Some(json!({"app": "acme/nope", "version": "1.0.0"})), StatusCode::NOT_FOUND, "not-found", "acme/nope"),
        (
            "t1",
            Some(json!({"app": "acme/budget-pacing", "version": "9.9.9", "config": {"apiKey": "k"}})),
            StatusCode::NOT_FOUND,
            "not-found",
            "9.9.9",
        ),
        (
            "t1",
            Some(json!({"app": "acme/budget-pacing", "version": ">=3.0.0", "config": {"apiKey": "k"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no-matching-version",
            ">=3.0.0",
        ),
        (
            "t1",
            Some(json!({"app": "acme/budget-pacing", "version": "1.5.0", "config": {"apiKey": "k"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "version-yanked",
            "yanked",
        ),
        (
            "t1",
            Some(json!({"app": "acme/pacing-pro", "config": {"apiKey": "k"}})),
            StatusCode::FORBIDDEN,
            "entitlement-missing",
            "no licence",
        ),
        (
            "t2",
            Some(json!({"app": "acme/pacing-pro", "config": {"apiKey": "k"}})),
            StatusCode::FORBIDDEN,
            "entitlement-expired",
            "expired",
        ),
        (
            "t1",
            Some(json!({"app": "test/hostile", "config": {"refuse": true}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "app-refused",
            "no licence for this tenant",
        ),
    ];
    for (tenant, body, status, kind, needle) in cases {
        let before = store.table_counts().await.unwrap();
        let tok = if tenant == "t1" { w.t1.clone() } else { w.t2.clone() };
        let (s, b) = w.call(Some(&tok), Method::POST, &format!("/v1/tenants/{tenant}/installations"), body).await;
        assert_eq!((s, b["type"].as_str()), (status, Some(format!("urn:kiosk:problem:{kind}").as_str())), "{b}");
        assert!(b.to_string().contains(needle), "{kind}: {b}");
        assert_eq!(store.table_counts().await.unwrap(), before, "{kind}: the database is unchanged");
    }
    // A revoked licence is refused with its own reason.
    let revoked = json!({"revoked": true});
    assert_eq!(
        w.call(Some(&op), Method::PUT, "/v1/entitlements/t2/acme/pacing-pro", Some(revoked)).await.0,
        StatusCode::OK
    );
    let before = store.table_counts().await.unwrap();
    let pro = json!({"app": "acme/pacing-pro", "config": {"apiKey": "k"}});
    let (st, b) = w.call(Some(&w.t2), Method::POST, "/v1/tenants/t2/installations", Some(pro.clone())).await;
    assert_eq!((st, b["type"].as_str()), (StatusCode::FORBIDDEN, Some("urn:kiosk:problem:entitlement-revoked")), "{b}");
    assert_eq!(store.table_counts().await.unwrap(), before);
    // A licence in force lets the install through.
    let valid = json!({"expiresMs": 4_102_444_800_000i64});
    assert_eq!(
        w.call(Some(&op), Method::PUT, "/v1/entitlements/t2/acme/pacing-pro", Some(valid)).await.0,
        StatusCode::OK
    );
    let (st, b) = w.call(Some(&w.t2), Method::POST, "/v1/tenants/t2/installations", Some(pro)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");

    let before = store.table_counts().await.unwrap();
    let request = w.request(Some(&w.t1), Method::POST, "/v1/tenants/t1/installations");
    let request = request.header("content-type", "application/json").body("{not json");
    let reply = Reply::of(request.send().await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.content_type(), PROBLEM_JSON);
    assert!(reply.text.contains("malformed-json"));
    assert_eq!(store.table_counts().await.unwrap(), before);

    // The authorization matrix: every route, every other role and foreign scope.
    authorization_matrix(&w, &id).await;
    whoami_and_console(&w).await;

    // While the installation is live, its secret is sealed everywhere it is stored.
    assert_eq!(paths_with_secret(w.dir()), Vec::<String>::new());
    if let Some(url) = &database {
        assert!(!postgres_holds_secret(url).await, "the secret is in PostgreSQL in plain text");
    }
    let (s, _) = w.call(Some(&t1), Method::DELETE, &base, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(w.call(Some(&t1), Method::GET, &base, None).await.0, StatusCode::NOT_FOUND);

    // The secret never came back and is not in the database files in plain text.
    assert!(w.seen().iter().all(|body| !body.contains(SECRET)), "a response leaked the secret");
    store.close().await;
    match &database {
        None => {
            assert!(w.db_file.exists());
            assert_eq!(paths_with_secret(w.dir()), Vec::<String>::new());
        }
        Some(url) => {
            assert!(!postgres_holds_secret(url).await, "the secret is in PostgreSQL in plain text");
            assert_eq!(paths_with_secret(w.dir()), Vec::<String>::new());
        }
    }
    w.acme.clear();
}

/// `GET /v1/whoami` names each token's role and scope (what the console shows); the
/// console's pages are public, carry no data, and are served under a `'self'`-only CSP.
async fn whoami_and_console(w: &World) {
    for (token, role, scope) in
        [(&w.operator, "operator", Value::Null), (&w.acme, "partner", json!("acme")), (&w.t1, "tenant", json!("t1"))]
    {
        let (s, b) = w.call(Some(token), Method::GET, "/v1/whoami", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b, json!({"role": role, "scope": scope}));
    }
    let (s, b) = w.call(None, Method::GET, "/v1/whoami", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = w.call(Some("not-a-token"), Method::GET, "/v1/whoami", None).await;
    assert_eq!((s, b["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("urn:kiosk:problem:unauthorized")));

    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(w.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/console/");
    for (path, content_type, needle) in [
        ("/console/", "text/html; charset=utf-8", "<script type=\"module\" src=\"/console/console.js\">"),
        ("/console/console.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/console/console.css", "text/css; charset=utf-8", ":root"),
    ] {
        let r = w.http.get(w.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let headers = r.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("require-trusted-types-for 'script'; trusted-types 'none'"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let (s, _) = w.call(None, Method::GET, "/console/nothing-here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn authorization_matrix(w: &World, inst: &str) {
    let tokens: [(&str, Option<&str>); 6] = [
        ("none", None),
        ("operator", Some(&w.operator)),
        ("acme", Some(&w.acme)),
        ("globex", Some(&w.globex)),
        ("t1", Some(&w.t1)),
        ("t2", Some(&w.t2)),
    ];
    let i = format!("/v1/tenants/t1/installations/{inst}");
    // (method, path, body, the one principal allowed; "any" = every authenticated role)
    let routes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::POST, "/v1/partners".into(), Some(json!({"name": "matrix-p"})), "operator"),
        (Method::POST, "/v1/partners/acme/certificates".into(), Some(json!({"certificate": "x"})), "operator"),
        (Method::POST, "/v1/tenants".into(), Some(json!({"id": "matrix-t"})), "operator"),
        (Method::POST, "/v1/tokens".into(), Some(json!({"role": "tenant", "scope": "t1"})), "operator"),
        (Method::PUT, "/v1/entitlements/t1/acme/budget-pacing".into(), Some(json!({})), "operator"),
        (Method::GET, "/v1/audit".into(), None, "operator"),
        (Method::GET, "/v1/registries".into(), None, "operator"),
        (Method::GET, "/v1/usage".into(), None, "operator"),
        (Method::GET, "/v1/partners/acme/usage".into(), None, "acme"),
        (Method::POST, "/v1/partners/acme/usage".into(), Some(json!({"records": []})), "acme"),
        (Method::GET, "/v1/tenants/t1/usage".into(), None, "t1"),
        (Method::PUT, "/v1/registries/matrix.example".into(), Some(json!({})), "operator"),
        (Method::DELETE, "/v1/registries/matrix.example".into(), None, "operator"),
        (Method::GET, "/v1/partners/acme/apps".into(), None, "acme"),
        (
            Method::POST,
            "/v1/partners/acme/apps/budget-pacing/versions".into(),
            Some(json!({"reference": "x/y:1.0.0"})),
            "acme",
        ),
        (Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/9.9.9/yank".into(), None, "acme"),
        (Method::GET, "/v1/catalog/categories".into(), None, "any"),
        (Method::GET, "/v1/catalog/apps".into(), None, "any"),
        (Method::GET, "/v1/catalog/apps/acme/budget-pacing".into(), None, "any"),
        (Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions".into(), None, "any"),
        (Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.4.34".into(), None, "any"),
        (Method::POST, "/v1/tenants/t1/installations".into(), Some(json!({"app": "acme/nope"})), "t1"),
        // The operator reads a tenant's installations (GET only).
        (Method::GET, "/v1/tenants/t1/installations".into(), None, "t1|operator"),
        (Method::GET, i.clone(), None, "t1|operator"),
        (Method::GET, format!("{i}/usage-windows"), None, "t1|operator"),
        (Method::PATCH, i.clone(), Some(json!({"config": {"threshold": 7}})), "t1"),
        (Method::POST, format!("{i}/upgrade"), Some(json!({"version": "0.0.1"})), "t1"),
        (Method::POST, format!("{i}/invoke/evaluate"), Some(json!({})), "t1"),
        (Method::DELETE, "/v1/tenants/t1/installations/not-this-one".into(), None, "t1"),
        // Trust revocation and token management: the operator's alone.
        (Method::GET, "/v1/partners/acme/certificates".into(), None, "operator"),
        (Method::DELETE, "/v1/partners/acme/certificates/0123456789ABCDEF".into(), None, "operator"),
        (Method::GET, "/v1/tokens".into(), None, "operator"),
        (Method::DELETE, "/v1/tokens/not-a-token".into(), None, "operator"),
        (Method::GET, "/v1/versions/quarantined".into(), None, "operator"),
        (Method::POST, "/v1/apps/acme/budget-pacing/versions/9.9.9/yank".into(), None, "operator"),
        (Method::POST, "/v1/apps/acme/budget-pacing/versions/9.9.9/unyank".into(), None, "operator"),
        (Method::POST, "/v1/apps/acme/budget-pacing/versions/9.9.9/quarantine".into(), None, "operator"),
        (Method::POST, "/v1/apps/acme/budget-pacing/versions/9.9.9/release".into(), None, "operator"),
        // Limits, the estate and the operator's switches (issue 11).
        (Method::GET, "/v1/limits".into(), None, "operator"),
        (Method::PUT, "/v1/limits/defaults".into(), Some(json!({"timeoutMs": 10})), "operator"),
        (Method::PUT, "/v1/limits/tenants/t1".into(), Some(json!({"timeoutMs": 10})), "operator"),
        (Method::PUT, "/v1/limits/apps/acme/budget-pacing".into(), Some(json!({"timeoutMs": 10})), "operator"),
        (Method::GET, "/v1/limits/tenants".into(), None, "operator"),
        (Method::GET, "/v1/partners".into(), None, "operator"),
        (Method::GET, "/v1/partners/acme".into(), None, "operator"),
        (Method::GET, "/v1/tenants".into(), None, "operator"),
        (Method::GET, "/v1/tenants/t1".into(), None, "operator"),
        (Method::GET, "/v1/entitlements".into(), None, "operator"),
        (Method::GET, "/v1/versions".into(), None, "operator"),
        (Method::GET, "/v1/installations".into(), None, "operator"),
        (Method::POST, "/v1/tenants/t1/suspend".into(), None, "operator"),
        (Method::POST, "/v1/partners/acme/disable".into(), None, "operator"),
    ];
    for (method, path, body, allowed) in &routes {
        for (who, token) in &tokens {
            let permitted = *who == *allowed
                || (*allowed == "any" && token.is_some())
                || (*allowed == "t1|operator" && (*who == "t1" || *who == "operator"));
            if permitted {
                continue;
            }
            let (s, b) = w.call(*token, method.clone(), path, body.clone()).await;
            let expected: &[StatusCode] = match *who {
                "none" => &[StatusCode::UNAUTHORIZED],
                // A foreign partner or tenant learns nothing: 404; another role: 403.
                "globex" if *allowed == "acme" => &[StatusCode::NOT_FOUND],
                "t2" if allowed.starts_with("t1") => &[StatusCode::NOT_FOUND],
                _ => &[StatusCode::FORBIDDEN],
            };
            assert!(expected.contains(&s), "{who} {method} {path}: got {s} {b}");
            assert!(
                b.get("type").is_some() && b.get("detail").is_some(),
                "{who} {method} {path}: a problem, no data: {b}"
            );
        }
    }
}
