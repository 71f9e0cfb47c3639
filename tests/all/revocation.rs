//! Trust revocation over HTTP on SQLite and PostgreSQL, with real gpg keys and a real
//! registry: a certificate removed, revoked by its revocation certificate, or found
//! revoked when the server restarts quarantines every version it signed (no installs,
//! no upgrades, marked in the catalog, skipped by `latest`), while running
//! installations go on; the operator yanks, quarantines and undoes it, audited;
//! tokens are listed, revoked and expire; the bootstrap token rotates across restarts;
//! a certificate of one partner cannot be registered for another.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use kiosk_api::trust::{CertificateRemoved, CertificateView, CertificatesAdded, QuarantinedVersion, VersionState};

use crate::common;
use crate::common::api::{Page, TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

/// Starts a server on `database` (SQLite in `dir` when `None`) whose config sets
/// `operator_token`; the data directory is the same across restarts.
async fn start(dir: &Path, database: Option<String>, operator_token: &str) -> TestServer {
    start_with(dir, database, operator_token, "").await
}

/// Like `start`, with more TOML after the `[server]` table.
async fn start_with(dir: &Path, database: Option<String>, operator_token: &str, extra: &str) -> TestServer {
    TestServer::start(dir, database, &format!("[server]\noperator-token = \"{operator_token}\"\n{extra}")).await
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn publish(registry: &Registry, secret_key: &[u8], version: &str) {
    publish_app(registry, secret_key, "acme/budget-pacing", version).await;
}

async fn publish_app(registry: &Registry, secret_key: &[u8], app: &str, version: &str) {
    let mut manifest = manifest_json("budget-pacing");
    manifest["version"] = version.into();
    manifest["app"] = app.into();
    let wasm = guest_bytes("budget-pacing");
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let sigs = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, &wasm).unwrap().0];
    push(registry, app, version, &assemble(&m, &wasm, &sigs), |_| {}).await.unwrap();
}

/// The app's versions (one page holds them all).
async fn versions(s: &TestServer, token: &str) -> Value {
    let (st, b) = s.call(Some(token), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions", None).await;
    assert_eq!((st, &b["next"]), (StatusCode::OK, &Value::Null), "{b}");
    b["items"].clone()
}

/// Uploads `certificate` for `partner` (a certificate or a revocation), answering `status`.
async fn add_certificate(
    s: &TestServer,
    op: &str,
    partner: &str,
    certificate: &str,
    status: StatusCode,
) -> CertificatesAdded {
    let path = format!("/v1/partners/{partner}/certificates");
    s.call_as(Some(op), Method::POST, &path, Some(json!({"certificate": certificate})), status).await
}

/// A partner's certificates (one page holds them all).
async fn certificates(s: &TestServer, op: &str, partner: &str) -> Vec<CertificateView> {
    let path = format!("/v1/partners/{partner}/certificates");
    let page: Page<CertificateView> = s.call_as(Some(op), Method::GET, &path, None, StatusCode::OK).await;
    page.items
}

/// A page of the quarantined versions (`query`: `?limit=…&after=…`).
async fn quarantined(s: &TestServer, op: &str, query: &str) -> Page<QuarantinedVersion> {
    let path = format!("/v1/versions/quarantined{query}");
    s.call_as(Some(op), Method::GET, &path, None, StatusCode::OK).await
}

fn find_version<'a>(list: &'a Value, version: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|v| v["version"] == version).unwrap()
}

#[tokio::test]
async fn revocation_on_sqlite() {
    revocation(None).await;
}

#[tokio::test]
async fn revocation_on_postgresql() {
    revocation(Some(common::fresh_postgres_database().await)).await;
}

async fn revocation(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let registry_server = TestRegistry::start(Mode::Plain);
    let host = registry_server.host.clone();
    let op = "operator-token-one".to_string();
    let s = start(dir.path(), database.clone(), &op).await;

    // The OpenAPI document lists the new routes.
    let (_, doc) = s.call(None, Method::GET, "/v1/openapi.json", None).await;
    for path in [
        "/v1/partners/{partner}/certificates",
        "/v1/partners/{partner}/certificates/{fingerprint}",
        "/v1/tokens",
        "/v1/tokens/{id}",
        "/v1/versions/quarantined",
        "/v1/apps/{partner}/{name}/versions/{version}/yank",
        "/v1/apps/{partner}/{name}/versions/{version}/unyank",
        "/v1/apps/{partner}/{name}/versions/{version}/quarantine",
        "/v1/apps/{partner}/{name}/versions/{version}/release",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is in the OpenAPI document");
    }
    assert!(doc["paths"]["/v1/tokens"].get("get").is_some() && doc["paths"]["/v1/tokens"].get("post").is_some());

    // Operator: partners, a tenant, tokens, the registry.
    for p in ["acme", "globex"] {
        s.create_partner(&op, p).await;
    }
    s.create_tenant(&op, "t1").await;
    let token = async |role: &str, scope: &str| {
        let created = s.create_token_with(&op, json!({"role": role, "scope": scope, "label": scope})).await;
        (created.id, created.token)
    };
    let (_, acme) = token("partner", "acme").await;
    let (t1_id, t1) = token("tenant", "t1").await;
    // The registry, with the repository prefix acme may register from.
    let reg = json!({"insecure": true, "partners": {"acme": ["acme/"]}});
    assert_eq!(s.call(Some(&op), Method::PUT, &format!("/v1/registries/{host}"), Some(reg)).await.0, StatusCode::OK);

    // Four real keys of acme: key1 signs 1.0.0 and 1.1.0, key2 signs 1.2.0, key3 signs
    // 1.3.0, key4 signs nothing yet.
    let gpg = Gpg::new();
    let keys: Vec<String> = (1..=4)
        .map(|i| gpg.generate(&format!("Acme {i} <k{i}@acme.example>"), "ed25519", "sign", "1y", None))
        .collect();
    for k in &keys {
        let cert = String::from_utf8(gpg.export(k)).unwrap();
        let added = add_certificate(&s, &op, "acme", &cert, StatusCode::CREATED).await;
        assert_eq!(added.fingerprints, [k.as_str()], "{added:?}");
    }
    let registry = Registry::new(
        &RegistrySettings { host: host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    for (version, key) in [("1.0.0", 0), ("1.1.0", 0), ("1.2.0", 1), ("1.3.0", 2)] {
        publish(&registry, &gpg.export_secret(&keys[key]), version).await;
        let reference = format!("{host}/acme/budget-pacing:{version}");
        let (st, b) = s
            .call(
                Some(&acme),
                Method::POST,
                "/v1/partners/acme/apps/budget-pacing/versions",
                Some(json!({"reference": reference})),
            )
            .await;
        assert_eq!((st, b["signer"].as_str()), (StatusCode::CREATED, Some(keys[key].as_str())), "{b}");
    }
    let store = s.store().clone();

    // A certificate of acme uploaded for globex: 409, not saying whose, nothing written.
    let before = store.table_counts().await.unwrap();
    let key1_cert = String::from_utf8(gpg.export(&keys[0])).unwrap();
    let key1_revocation = String::from_utf8(gpg.revocation_certificate(&keys[0])).unwrap();
    for upload in [&key1_cert, &key1_revocation] {
        let (st, b) = s
            .call(Some(&op), Method::POST, "/v1/partners/globex/certificates", Some(json!({"certificate": upload})))
            .await;
        assert_eq!((st, kind(&b)), (StatusCode::CONFLICT, "certificate-owned"), "{b}");
        assert!(b["detail"].as_str().unwrap().contains(&keys[0]), "names the certificate: {b}");
        assert!(!b.to_string().contains("acme"), "does not name the owner: {b}");
        assert_eq!(store.table_counts().await.unwrap(), before, "nothing is written");
    }
    let globex_certs = certificates(&s, &op, "globex").await;
    assert!(globex_certs.is_empty(), "{globex_certs:?}");

    // A tenant installs 1.0.0 and calls it.
    let install = |version: &str| json!({"app": "acme/budget-pacing", "version": version, "config": {"apiKey": "k"}});
    let (st, inst) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install("1.0.0"))).await;
    assert_eq!(st, StatusCode::CREATED, "{inst}");
    let base = format!("/v1/tenants/t1/installations/{}", inst["id"].as_str().unwrap());
    let input = json!({"campaignId": "c1", "budget": 3000, "flightDays": 30, "dailySpend": [100, 100, 100]});
    let invoke = format!("{base}/invoke/evaluate");
    assert_eq!(s.call(Some(&t1), Method::POST, &invoke, Some(input.clone())).await.0, StatusCode::OK);

    // Removing key1 quarantines 1.0.0 and 1.1.0.
    let path = format!("/v1/partners/acme/certificates/{}", keys[0]);
    let removed: CertificateRemoved = s.call_as(Some(&op), Method::DELETE, &path, None, StatusCode::OK).await;
    assert_eq!(removed.quarantined, ["acme/budget-pacing@1.0.0", "acme/budget-pacing@1.1.0"], "{removed:?}");
    assert!(s.audit_has(&op, "certificate.remove", "acme").await);
    assert!(s.audit_has(&op, "version.quarantine", "acme/budget-pacing@1.1.0").await);
    // No new install, no upgrade to them: a problem naming the certificate.
    let before = store.table_counts().await.unwrap();
    let (st, b) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install("1.1.0"))).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains(&keys[0]), "{b}");
    let (st, b) = s.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(json!({"version": "1.1.0"}))).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains(&keys[0]), "{b}");
    assert_eq!(store.table_counts().await.unwrap(), before, "refusals write nothing");
    // The catalog marks them; latest is still 1.3.0; the running installation goes on.
    let list = versions(&s, &t1).await;
    assert_eq!(find_version(&list, "1.1.0")["quarantined"], true);
    assert!(find_version(&list, "1.1.0")["quarantineReason"].as_str().unwrap().contains(&keys[0]), "{list}");
    assert_eq!(find_version(&list, "1.2.0")["quarantined"], false);
    let (_, one) = s.call(Some(&t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.0.0", None).await;
    assert_eq!((one["quarantined"].as_bool(), one["signer"].as_str()), (Some(true), Some(keys[0].as_str())));
    let (_, app) = s.call(Some(&t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing", None).await;
    assert_eq!(app["latest"], "1.3.0");
    assert_eq!(s.call(Some(&t1), Method::POST, &invoke, Some(input.clone())).await.0, StatusCode::OK);

    // The revocation certificate of key3 (as gpg wrote it) quarantines 1.3.0: latest
    // skips it, a range resolves below it.
    let rev = String::from_utf8(gpg.revocation_certificate(&keys[2])).unwrap();
    assert!(rev.contains(":-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    let b = add_certificate(&s, &op, "acme", &rev, StatusCode::OK).await;
    assert_eq!(
        (b.certificates[0].state.as_str(), b.quarantined.as_slice()),
        ("revoked", ["acme/budget-pacing@1.3.0".to_string()].as_slice()),
        "{b:?}"
    );
    assert!(s.audit_has(&op, "certificate.revoke", "acme").await);
    let (_, app) = s.call(Some(&t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing", None).await;
    assert_eq!(app["latest"], "1.2.0", "{app}");
    let (st, b) = s.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(json!({"version": "^1"}))).await;
    assert_eq!((st, b["version"].as_str()), (StatusCode::OK, Some("1.2.0")), "{b}");
    let (st, b) = s.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(json!({"version": "1.3.0"}))).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains(&keys[2]) && b["detail"].as_str().unwrap().contains("revoked"));
    // The same revocation again changes nothing.
    let b = add_certificate(&s, &op, "acme", &rev, StatusCode::OK).await;
    assert!(b.quarantined.is_empty(), "{b:?}");
    // A new version signed by the revoked key is refused at registration.
    publish(&registry, &gpg.export_secret(&keys[2]), "1.4.0").await;
    let reference = format!("{host}/acme/budget-pacing:1.4.0");
    let (st, b) = s
        .call(
            Some(&acme),
            Method::POST,
            "/v1/partners/acme/apps/budget-pacing/versions",
            Some(json!({"reference": reference})),
        )
        .await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "signature-refused"), "{b}");

    // The operator sees certificates with their state, and the quarantined versions.
    let certs = certificates(&s, &op, "acme").await;
    let state_of = |fpr: &str| certs.iter().find(|c| c.fingerprint == fpr).unwrap().state.as_str();
    assert_eq!(
        [state_of(&keys[0]), state_of(&keys[1]), state_of(&keys[2]), state_of(&keys[3])],
        ["removed", "valid", "revoked", "valid"],
        "{certs:?}"
    );
    let page1 = quarantined(&s, &op, "?limit=2").await;
    assert_eq!(page1.items.len(), 2, "{page1:?}");
    let next = page1.next.clone().unwrap();
    let page2 = quarantined(&s, &op, &format!("?limit=2&after={next}")).await;
    let all: Vec<&str> = page1.items.iter().chain(&page2.items).map(|v| v.version.as_str()).collect();
    assert_eq!(all, ["1.0.0", "1.1.0", "1.3.0"], "{page2:?}");
    assert_eq!(page2.next, None);

    // The operator releases 1.1.0 (the downgrade goes through), quarantines and yanks
    // others, and undoes it; each step audited.
    let v = |version: &str, action: &str| format!("/v1/apps/acme/budget-pacing/versions/{version}/{action}");
    let set = async |version: &str, action: &str| -> VersionState {
        s.call_as(Some(&op), Method::POST, &v(version, action), None, StatusCode::OK).await
    };
    let b = set("1.1.0", "release").await;
    assert!(!b.quarantined, "{b:?}");
    let down = json!({"version": "1.1.0", "allowDowngrade": true});
    let (st, b) = s.call(Some(&t1), Method::POST, &format!("{base}/upgrade"), Some(down)).await;
    assert_eq!((st, b["version"].as_str()), (StatusCode::OK, Some("1.1.0")), "{b}");
    let b = set("1.2.0", "quarantine").await;
    assert_eq!(b.quarantine_reason.as_deref(), Some("quarantined by the operator"), "{b:?}");
    let (st, b) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install("1.2.0"))).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{b}");
    let (_, app) = s.call(Some(&t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing", None).await;
    assert_eq!(app["latest"], "1.1.0", "{app}");
    let b = set("1.2.0", "release").await;
    assert!(!b.quarantined, "{b:?}");
    let b = set("1.2.0", "yank").await;
    assert!(b.yanked, "{b:?}");
    let (st, b) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install("1.2.0"))).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-yanked"), "{b}");
    let b = set("1.2.0", "unyank").await;
    assert!(!b.yanked, "{b:?}");
    assert_eq!(versions(&s, &t1).await.as_array().unwrap().iter().filter(|v| v["quarantined"] == true).count(), 2);
    for (action, target) in [
        ("version.release", "acme/budget-pacing@1.1.0"),
        ("version.quarantine", "acme/budget-pacing@1.2.0"),
        ("version.release", "acme/budget-pacing@1.2.0"),
        ("version.yank", "acme/budget-pacing@1.2.0"),
        ("version.unyank", "acme/budget-pacing@1.2.0"),
    ] {
        assert!(s.audit_has(&op, action, target).await, "{action} {target} audited");
    }
    assert_eq!(s.call(Some(&op), Method::POST, &v("9.9.9", "yank"), None).await.0, StatusCode::NOT_FOUND);
    // The partner keeps its own yank.
    let (st, _) =
        s.call(Some(&acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/1.2.0/yank", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.call(Some(&acme), Method::POST, &v("1.2.0", "unyank"), None).await.0, StatusCode::FORBIDDEN);

    // Tokens: listed without secrets; a revoked token fails at once; an expired one too.
    let (st, list) = s.call(Some(&op), Method::GET, "/v1/tokens", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let text = list.to_string();
    assert!(!text.contains(&t1) && !text.contains(&acme) && !text.contains(&op) && !text.contains("hash"), "{list}");
    let t1_row = list["items"].as_array().unwrap().iter().find(|t| t["id"] == t1_id.as_str()).unwrap().clone();
    assert_eq!(
        (t1_row["role"].as_str(), t1_row["scope"].as_str(), t1_row["revoked"].as_bool()),
        (Some("tenant"), Some("t1"), Some(false))
    );
    assert_eq!(s.call(Some(&t1), Method::GET, "/v1/tenants/t1/installations", None).await.0, StatusCode::OK);
    assert_eq!(s.call(Some(&op), Method::DELETE, &format!("/v1/tokens/{t1_id}"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.call(Some(&t1), Method::GET, "/v1/tenants/t1/installations", None).await.0, StatusCode::UNAUTHORIZED);
    let (_, list) = s.call(Some(&op), Method::GET, "/v1/tokens", None).await;
    assert!(list["items"].as_array().unwrap().iter().any(|t| t["id"] == t1_id.as_str() && t["revoked"] == true));
    assert!(s.audit_has(&op, "token.revoke", "tenant:t1").await);
    assert_eq!(s.call(Some(&op), Method::DELETE, "/v1/tokens/no-such-token", None).await.0, StatusCode::NOT_FOUND);
    let (st, b) = s.call(Some(&op), Method::DELETE, "/v1/tokens/bootstrap-operator", None).await;
    assert_eq!((st, kind(&b)), (StatusCode::CONFLICT, "last-operator-token"), "{b}");
    let past = json!({"role": "tenant", "scope": "t1", "expiresMs": now_ms() - 1});
    let (st, b) = s.call(Some(&op), Method::POST, "/v1/tokens", Some(past)).await;
    assert_eq!((st, b["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("expiresMs")), "{b}");
    let soon = json!({"role": "tenant", "scope": "t1", "expiresMs": now_ms() + 1500});
    let (st, b) = s.call(Some(&op), Method::POST, "/v1/tokens", Some(soon)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let short = b["token"].as_str().unwrap().to_string();
    assert_eq!(s.call(Some(&short), Method::GET, "/v1/tenants/t1/installations", None).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        s.call(Some(&short), Method::GET, "/v1/tenants/t1/installations", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, list) = s.call(Some(&op), Method::GET, "/v1/tokens?limit=1000", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(list["items"].as_array().unwrap().iter().any(|t| t["expired"] == true), "{list}");
    assert_eq!(s.call(Some(&op), Method::GET, "/v1/tokens?limit=0", None).await.0, StatusCode::BAD_REQUEST);
    let (_, t1b) = token("tenant", "t1").await;

    // key4 signs 1.5.0; its stored certificate is then replaced by a revoked copy behind
    // the API's back (as an old database or a hand edit would hold it).
    publish(&registry, &gpg.export_secret(&keys[3]), "1.5.0").await;
    let reference = format!("{host}/acme/budget-pacing:1.5.0");
    let body = json!({"reference": reference});
    let (st, b) = s.call(Some(&acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    gpg.revoke(&keys[3]);
    assert!(store.add_certificate("acme", &keys[3], &gpg.export(&keys[3]), "operator").await.unwrap());
    let (_, b) = s.call(Some(&t1b), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.5.0", None).await;
    assert_eq!(b["quarantined"], false, "not yet noticed");

    // Rotating the operator token twice: each restart on the same database starts, the
    // newest token works and the older ones do not; the revoked key4 is noticed.
    let op_api = {
        let (st, b) = s.call(Some(&op), Method::POST, "/v1/tokens", Some(json!({"role": "operator"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        b["token"].as_str().unwrap().to_string()
    };
    s.stop().await;
    let mut olds = vec![op.clone()];
    let mut current = None;
    for newest in ["operator-token-two", "operator-token-three"] {
        let s = start(dir.path(), database.clone(), newest).await;
        assert_eq!(s.call(Some(newest), Method::GET, "/v1/tokens", None).await.0, StatusCode::OK);
        for old in &olds {
            assert_eq!(s.call(Some(old), Method::GET, "/v1/tokens", None).await.0, StatusCode::UNAUTHORIZED, "{old}");
        }
        assert_eq!(s.call(Some(&op_api), Method::GET, "/v1/tokens", None).await.0, StatusCode::OK);
        assert!(s.audit_has(newest, "token.rotate", "operator").await);
        olds.push(newest.to_string());
        if let Some(previous) = current.replace(s) {
            previous.stop().await;
        }
    }
    let s = current.unwrap();
    let op = "operator-token-three";
    let (_, b) = s.call(Some(&t1b), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.5.0", None).await;
    assert_eq!(b["quarantined"], true, "found revoked at start: {b}");
    assert!(b["quarantineReason"].as_str().unwrap().contains(&keys[3]), "{b}");
    assert!(s.audit_has(op, "certificate.found-revoked", "acme").await);
    // Releases stick across restarts; the installation still invokes.
    let (_, b) = s.call(Some(&t1b), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.1.0", None).await;
    assert_eq!(b["quarantined"], false, "{b}");
    let (st, out) = s.call(Some(&t1b), Method::POST, &invoke, Some(input)).await;
    assert_eq!(st, StatusCode::OK, "{out}");
    s.stop().await;
}

#[tokio::test]
async fn config_certificates_on_sqlite() {
    config_certificates(None).await;
}

#[tokio::test]
async fn config_certificates_on_postgresql() {
    config_certificates(Some(common::fresh_postgres_database().await)).await;
}

/// A certificate of the operator config file: it cannot be removed over the API; gone
/// from the file at a restart, the versions it signed are quarantined; back in the
/// file, those versions are released (a config that lost it by mistake heals).
async fn config_certificates(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let registry_server = TestRegistry::start(Mode::Plain);
    let host = registry_server.host.clone();
    let gpg = Gpg::new();
    let key = gpg.generate("Globex <release@globex.example>", "rsa3072", "sign", "1y", None);
    let cert_path = dir.path().join("globex.asc");
    std::fs::write(&cert_path, gpg.export(&key)).unwrap();
    let with_cert = format!("[[partners]]\nname = \"globex\"\ncertificates = [\"{}\"]\n", cert_path.display());
    let op = "operator-token-config";
    let s = start_with(dir.path(), database.clone(), op, &with_cert).await;
    let created = s.call(Some(op), Method::POST, "/v1/partners", Some(json!({"name": "globex"}))).await;
    assert_eq!(created.0, StatusCode::CREATED);
    assert_eq!(s.call(Some(op), Method::POST, "/v1/tenants", Some(json!({"id": "t1"}))).await.0, StatusCode::CREATED);
    let globex = s.create_token(op, "partner", Some("globex")).await.token;
    let t1 = s.create_token(op, "tenant", Some("t1")).await.token;
    let reg = json!({"insecure": true, "partners": {"globex": ["globex/"]}});
    let reg = s.call(Some(op), Method::PUT, &format!("/v1/registries/{host}"), Some(reg)).await;
    assert_eq!(reg.0, StatusCode::OK);
    let registry = Registry::new(
        &RegistrySettings { host: host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    publish_app(&registry, &gpg.export_secret(&key), "globex/pacing", "2.0.0").await;
    let body = json!({"reference": format!("{host}/globex/pacing:2.0.0")});
    let (st, b) = s.call(Some(&globex), Method::POST, "/v1/partners/globex/apps/pacing/versions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let certs = certificates(&s, op, "globex").await;
    assert_eq!((certs[0].source.as_str(), certs[0].state.as_str()), ("config", "valid"), "{certs:?}");
    let (st, b) = s.call(Some(op), Method::DELETE, &format!("/v1/partners/globex/certificates/{key}"), None).await;
    assert_eq!((st, kind(&b)), (StatusCode::CONFLICT, "certificate-in-config"), "{b}");
    s.stop().await;

    // Restarted without the certificate: 2.0.0 is quarantined, installs refused.
    let s = start_with(dir.path(), database.clone(), op, "").await;
    let path = "/v1/catalog/apps/globex/pacing/versions/2.0.0";
    let (_, b) = s.call(Some(&t1), Method::GET, path, None).await;
    assert_eq!(b["quarantined"], true, "{b}");
    let install = json!({"app": "globex/pacing", "config": {"apiKey": "k"}});
    let (st, b) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install.clone())).await;
    assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains(&key), "{b}");
    assert!(s.audit_has(op, "certificate.found-missing", "globex").await);
    s.stop().await;

    // Back in the file: released, installable again.
    let s = start_with(dir.path(), database, op, &with_cert).await;
    let (_, b) = s.call(Some(&t1), Method::GET, path, None).await;
    assert_eq!(b["quarantined"], false, "{b}");
    assert!(s.audit_has(op, "certificate.trust", "globex").await);
    assert!(s.audit_has(op, "version.release", "globex/pacing@2.0.0").await);
    let (st, b) = s.call(Some(&t1), Method::POST, "/v1/tenants/t1/installations", Some(install)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    s.stop().await;
}

/// The store's guards, on both databases: a version registered after its signer was
/// distrusted starts quarantined; installs and upgrades re-check their version as they
/// write; the bootstrap token is created, kept, rotated, and never takes another
/// token's secret.
async fn store_guards(store: kiosk::store::Store) {
    use kiosk::store::{BootstrapToken, InstallationRow, NotInstallable, Principal};
    assert!(store.create_partner("acme", "Acme", "operator").await.unwrap());
    assert!(store.create_partner("globex", "Globex", "operator").await.unwrap());
    assert!(store.create_tenant("t1", "T1", "operator").await.unwrap());
    assert!(store.add_certificate("acme", "AAAA", b"cert", "operator").await.unwrap());
    assert!(!store.add_certificate("globex", "AAAA", b"other", "operator").await.unwrap(), "owned by acme");
    let text = std::fs::read_to_string(common::manifest_path("budget-pacing")).unwrap();
    let mut manifest = kiosk::manifest::Manifest::parse(text.as_bytes(), &kiosk::world::HOST_API_VERSION).unwrap();
    let register = |manifest: kiosk::manifest::Manifest, digest: &'static str| {
        let (store, text) = (store.clone(), text.clone());
        async move {
            store
                .register_version(&manifest, &text, digest, "sha256:c", b"\0asm", "AAAA", "ref", "partner:acme")
                .await
                .unwrap()
        }
    };
    register(manifest.clone(), "sha256:m1").await;
    let reason = "signing certificate AAAA was removed by the operator";
    let q = store.distrust("acme", "AAAA", "removed", reason, "certificate.found-removed", "kiosk").await.unwrap();
    assert_eq!(q, Some(vec!["acme/budget-pacing@1.4.34".to_string()]));
    assert_eq!(store.distrust("acme", "AAAA", "missing", reason, "x", "kiosk").await.unwrap(), None, "once");
    manifest.version = semver::Version::new(1, 5, 0);
    register(manifest, "sha256:m2").await;
    let v = store.version("acme/budget-pacing", "1.5.0").await.unwrap().unwrap();
    assert_eq!((v.quarantined, v.quarantine_reason.as_deref()), (true, Some(reason)));

    // Installs and upgrades check the version in the statement that writes.
    let row = |version: &str| InstallationRow {
        id: "i1".into(),
        tenant: "t1".into(),
        app: "acme/budget-pacing".into(),
        version: version.into(),
        config: "{}".into(),
        secrets: vec![],
        created_ms: 1,
        updated_ms: 1,
        row_version: 0,
        upgrade_policy: Default::default(),
    };
    let before = store.table_counts().await.unwrap();
    let Err(NotInstallable(v)) = store.install_if_installable(&row("1.5.0"), "tenant:t1").await.unwrap() else {
        panic!("a quarantined version is not installed");
    };
    assert!(v.quarantined);
    assert_eq!(store.table_counts().await.unwrap(), before);
    assert!(store.set_quarantined("acme/budget-pacing", "1.4.34", None, "operator").await.unwrap());
    store.install_if_installable(&row("1.4.34"), "tenant:t1").await.unwrap().unwrap();
    assert!(store.upgrade_installation(&row("1.5.0"), "tenant:t1").await.unwrap().is_err());
    assert_eq!(store.installation("t1", "i1").await.unwrap().unwrap().version, "1.4.34");
    assert!(store.set_quarantined("acme/budget-pacing", "1.5.0", None, "operator").await.unwrap());
    store.upgrade_installation(&row("1.5.0"), "tenant:t1").await.unwrap().unwrap();
    let upgraded = store.installation("t1", "i1").await.unwrap().unwrap();
    assert_eq!((upgraded.version.as_str(), upgraded.row_version), ("1.5.0", 1));
    // A write at the row version read before (0) finds it changed and writes nothing.
    let stale = store.upgrade_installation(&row("1.5.0"), "tenant:t1").await.unwrap();
    assert!(matches!(stale, Err(kiosk::store::UpgradeRefused::Changed(_))), "{stale:?}");
    assert_eq!(store.installation("t1", "i1").await.unwrap().unwrap().row_version, 1);
    assert!(!store.set_quarantined("acme/budget-pacing", "9.9.9", Some("x"), "operator").await.unwrap());

    // The bootstrap token.
    assert_eq!(store.set_bootstrap_token("first").await.unwrap(), BootstrapToken::Created);
    assert_eq!(store.set_bootstrap_token("first").await.unwrap(), BootstrapToken::Unchanged);
    assert_eq!(store.set_bootstrap_token("second").await.unwrap(), BootstrapToken::Rotated);
    assert_eq!(store.authenticate("first").await.unwrap(), None);
    assert_eq!(store.authenticate("second").await.unwrap(), Some(Principal::Operator));
    let (id, secret) = store.create_token_by(&Principal::Tenant("t1".into()), "t", None, "operator").await.unwrap();
    assert_eq!(store.set_bootstrap_token(&secret).await.unwrap(), BootstrapToken::InUse(id));
    assert_eq!(store.authenticate("second").await.unwrap(), Some(Principal::Operator), "unchanged");
    store.close().await;
}

#[tokio::test]
async fn store_guards_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    store_guards(kiosk::store::Store::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn store_guards_on_postgresql() {
    let url = common::fresh_postgres_database().await;
    store_guards(kiosk::store::Store::connect(&url).await.unwrap()).await;
}
