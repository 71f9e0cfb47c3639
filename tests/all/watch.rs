//! Registry watches and upgrade policies, end to end with a real registry (Debian's
//! `docker-registry` on a free loopback port), real gpg keys and the example app
//! budget-pacing: the operator watches a repository; tags the partner pushes become
//! catalog versions and upgrade the installations whose policy admits them (the upgrade
//! hook runs), a badly signed tag is listed with its reason and upgrades nobody; the
//! periodic pass takes up versions registered through the API and records a failed
//! upgrade once; on PostgreSQL two Kiosk states share the database and one polls a watch
//! at a time.

use std::time::{Duration, Instant};

use kiosk::publish::{assemble, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk::upgrade::UpgradePolicy;
use kiosk_core::lifecycle::InstallRequest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

/// How long a test waits for what the poller or the pass does in the background. A
/// deadline, never a pause: the condition is polled and the wait ends when it holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// A server on SQLite whose config sets the operator token and `extra`.
async fn start(extra: &str) -> TestServer {
    TestServer::fresh(None, &format!("[server]\noperator-token = \"{OP}\"\n{extra}")).await
}

/// Calls `GET path` until `done` holds for the answer; panics at the deadline.
async fn wait_for(s: &TestServer, token: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (st, b) = s.call(Some(token), Method::GET, path, None).await;
        if st == StatusCode::OK && done(&b) {
            return b;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}; last answer {st} {b}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OP: &str = "watch-test-operator-token";

/// Pushes budget-pacing as `app` at `version`, signed with `secret_key`; `edit` changes
/// the manifest first.
async fn publish(registry: &Registry, secret_key: &[u8], app: &str, version: &str, edit: impl FnOnce(&mut Value)) {
    let mut manifest = manifest_json("budget-pacing");
    manifest["version"] = version.into();
    manifest["app"] = app.into();
    edit(&mut manifest);
    let wasm = guest_bytes("budget-pacing");
    let m = serde_json::to_vec_pretty(&manifest).unwrap();
    let sigs = vec![sign_detached(secret_key, &m).unwrap().0, sign_detached(secret_key, &wasm).unwrap().0];
    push(registry, app, version, &assemble(&m, &wasm, &sigs), |_| {}).await.unwrap();
}

/// A real registry, a server with the operator's setup: partner acme (its gpg key
/// registered, another key not), tenant t1, tokens, and the registry with acme's prefix.
struct World {
    s: TestServer,
    registry: Registry,
    reg: TestRegistry,
    gpg: Gpg,
    acme_key: Vec<u8>,
    stranger_key: Vec<u8>,
    acme: String,
    t1: String,
}

impl World {
    async fn new(extra: &str) -> Self {
        let reg = TestRegistry::start(Mode::Plain);
        let s = start(extra).await;
        for p in ["acme", "globex"] {
            s.create_partner(OP, p).await;
        }
        s.create_tenant(OP, "t1").await;
        let token = async |role: &str, scope: &str| {
            s.create_token_with(OP, json!({"role": role, "scope": scope, "label": scope})).await.token
        };
        let (acme, t1) = (token("partner", "acme").await, token("tenant", "t1").await);
        let settings = json!({"insecure": true, "partners": {"acme": ["acme/"], "globex": ["globex/"]}});
        let (st, b) = s.call(Some(OP), Method::PUT, &format!("/v1/registries/{}", reg.host), Some(settings)).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let gpg = Gpg::new();
        let acme_fpr = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
        let stranger_fpr = gpg.generate("Stranger <x@stranger.example>", "ed25519", "sign", "1y", None);
        let cert = String::from_utf8(gpg.export(&acme_fpr)).unwrap();
        let (st, b) =
            s.call(Some(OP), Method::POST, "/v1/partners/acme/certificates", Some(json!({"certificate": cert}))).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        let registry = Registry::new(
            &RegistrySettings { host: reg.host.clone(), insecure: true, ..Default::default() },
            TransferSettings::default(),
        )
        .unwrap();
        let (acme_key, stranger_key) = (gpg.export_secret(&acme_fpr), gpg.export_secret(&stranger_fpr));
        Self { s, registry, reg, gpg, acme_key, stranger_key, acme, t1 }
    }

    async fn publish(&self, version: &str) {
        publish(&self.registry, &self.acme_key, "acme/budget-pacing", version, |_| {}).await;
    }

    /// Installs budget-pacing `version` for t1 with `policy` (absent: the default).
    async fn install(&self, version: &str, policy: Option<&str>) -> String {
        let mut body = json!({"app": "acme/budget-pacing", "version": version, "config": {"apiKey": "k"}});
        if let Some(p) = policy {
            body["upgradePolicy"] = p.into();
        }
        let installed = self.s.install(&self.t1, "t1", body).await;
        assert_eq!(installed.upgrade_policy, policy.unwrap_or("none"), "{installed:?}");
        installed.id
    }

    async fn version_of(&self, id: &str) -> String {
        let (st, b) =
            self.s.call(Some(&self.t1), Method::GET, &format!("/v1/tenants/t1/installations/{id}"), None).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        b["version"].as_str().unwrap().to_string()
    }

    async fn wait_version(&self, id: &str, version: &str) {
        let path = format!("/v1/tenants/t1/installations/{id}");
        wait_for(&self.s, &self.t1, &path, &format!("installation {id} on {version}"), |b| b["version"] == version)
            .await;
    }

    async fn wait_catalog(&self, version: &str) {
        let path = "/v1/catalog/apps/acme/budget-pacing/versions";
        let what = format!("{version} in the catalog");
        wait_for(&self.s, &self.t1, path, &what, |b| {
            b["items"].as_array().is_some_and(|l| l.iter().any(|v| v["version"] == version))
        })
        .await;
    }

    /// The lines the installation's log holds (the app's and Kiosk's notes), read by the
    /// tenant through the logs API.
    async fn log_lines(&self, id: &str) -> Vec<String> {
        self.s.log_messages(&self.t1, "t1", id).await
    }
}

fn outcome<'a>(watch: &'a Value, tag: &str) -> Option<&'a Value> {
    watch["tags"].as_array().unwrap().iter().find(|t| t["tag"] == tag)
}

#[tokio::test]
async fn a_watched_repository_registers_signed_tags_and_upgrades_by_policy() {
    // The periodic pass runs once at start and then only daily: every upgrade here is
    // the one a watch starts after it registered a version.
    let w = World::new("[watch]\nmin-interval-seconds = 1\nupgrade-pass-seconds = 86400\n").await;
    let (s, host) = (&w.s, w.reg.host.clone());
    let store = s.store().clone();
    w.publish("1.0.0").await;
    // A tag that is not a version: ignored.
    publish(&w.registry, &w.acme_key, "acme/budget-pacing", "latest", |m| m["version"] = "1.0.0".into()).await;

    // Refusals write nothing: the allowlist (unconfigured registry, another partner's
    // prefix), references, apps, intervals, roles.
    let before = store.table_counts().await.unwrap();
    let reference = format!("{host}/acme/budget-pacing");
    let refused = [
        (json!({"reference": format!("{host}/globex/x"), "app": "acme/budget-pacing"}), "registry-not-allowed"),
        (json!({"reference": "127.0.0.1:9/acme/budget-pacing", "app": "acme/budget-pacing"}), "registry-not-allowed"),
        (json!({"reference": format!("{reference}:1.0.0"), "app": "acme/budget-pacing"}), "invalid-reference"),
        (json!({"reference": "oci-layout:/tmp/x", "app": "acme/budget-pacing"}), "layout-not-allowed"),
        (json!({"reference": reference, "app": "acme"}), "invalid-app"),
        (json!({"reference": reference, "app": "acme/budget-pacing", "intervalSeconds": 0}), "invalid-interval"),
        (json!({"reference": reference, "app": "acme/budget-pacing", "intervalSeconds": 86401}), "invalid-interval"),
        (json!({"reference": reference, "app": "acme/budget-pacing", "intervalSeconds": -5}), "invalid-interval"),
        (json!({"reference": reference, "app": "acme/budget-pacing\u{0}"}), "invalid-text"),
    ];
    for (body, expected) in refused {
        let (st, b) = s.call(Some(OP), Method::POST, "/v1/watches", Some(body.clone())).await;
        assert_eq!((st, kind(&b)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{body}: {b}");
    }
    let (st, b) =
        s.call(Some(OP), Method::POST, "/v1/watches", Some(json!({"reference": reference, "app": "nobody/x"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    let body = json!({"reference": reference, "app": "acme/budget-pacing", "intervalSeconds": 1});
    assert_eq!(s.call(Some(&w.t1), Method::POST, "/v1/watches", Some(body.clone())).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.call(Some(&w.acme), Method::GET, "/v1/watches", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(store.table_counts().await.unwrap(), before, "refused watches write nothing");

    // The watch: due at once, 1.0.0 registered by it.
    let (st, watch) = s.call(Some(OP), Method::POST, "/v1/watches", Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{watch}");
    assert_eq!((watch["reference"].as_str(), watch["intervalSeconds"].as_i64()), (Some(reference.as_str()), Some(1)));
    let id = watch["id"].as_str().unwrap().to_string();
    let (st, b) = s.call(Some(OP), Method::POST, "/v1/watches", Some(body)).await;
    assert_eq!((st, kind(&b)), (StatusCode::CONFLICT, "watch-exists"), "{b}");
    assert!(b["detail"].as_str().unwrap().contains(&id), "{b}");
    w.wait_catalog("1.0.0").await;
    let path = format!("/v1/watches/{id}");
    let watch = wait_for(s, OP, &path, "1.0.0 recorded", |b| outcome(b, "1.0.0").is_some()).await;
    let first = outcome(&watch, "1.0.0").unwrap();
    assert_eq!((first["outcome"].as_str(), first["attempts"].as_i64()), (Some("registered"), Some(1)), "{watch}");
    assert!(outcome(&watch, "latest").is_none(), "a tag that is no version is not recorded: {watch}");
    let watch = wait_for(s, OP, &path, "a poll counted the tags", |b| b["lastPoll"]["tags"] == 2).await;
    assert_eq!(watch["lastPoll"]["ignored"], 1, "{watch}");
    assert!(
        s.audit(OP).await.iter().any(|r| r.action == "version.register"
            && r.actor == format!("watch:{id}")
            && r.target == "acme/budget-pacing@1.0.0"),
        "the watch registered 1.0.0 through the core"
    );

    // Three installations of 1.0.0: patch, none (the default), minor.
    let patch = w.install("1.0.0", Some("patch")).await;
    let none = w.install("1.0.0", None).await;
    let minor = w.install("1.0.0", Some("minor")).await;

    // A patch signed by acme: registered, and it upgrades the patch and minor
    // installations through their upgrade hook; `none` stays.
    w.publish("1.0.1").await;
    w.wait_catalog("1.0.1").await;
    w.wait_version(&patch, "1.0.1").await;
    w.wait_version(&minor, "1.0.1").await;
    assert_eq!(w.version_of(&none).await, "1.0.0");
    for inst in [&patch, &minor] {
        assert!(
            w.log_lines(inst).await.iter().any(|l| l == "upgraded from 1.0.0"),
            "the upgrade hook of 1.0.1 ran: {:?}",
            w.log_lines(inst).await
        );
    }
    let audit = s.audit(OP).await;
    let upgraded = |inst: &str, version: &str| {
        audit.iter().any(|r| {
            r.action == "installation.upgrade"
                && r.actor == "kiosk:auto-upgrade"
                && r.target == format!("t1/{inst}")
                && r.detail == format!("acme/budget-pacing@{version}")
        })
    };
    assert!(upgraded(&patch, "1.0.1") && upgraded(&minor, "1.0.1") && !upgraded(&none, "1.0.1"));

    // A tag signed by a key acme never registered: refused with the words an API
    // registration gives, listed on the watch, upgrades nobody, never retried.
    publish(&w.registry, &w.stranger_key, "acme/budget-pacing", "1.0.2", |_| {}).await;
    let watch = wait_for(s, OP, &path, "1.0.2 refused", |b| outcome(b, "1.0.2").is_some()).await;
    let bad = outcome(&watch, "1.0.2").unwrap().clone();
    assert_eq!(
        (bad["outcome"].as_str(), bad["problem"].as_str()),
        (Some("refused"), Some("urn:kiosk:problem:signature-refused")),
        "{watch}"
    );
    let (st, api) = s
        .call(
            Some(&w.acme),
            Method::POST,
            "/v1/partners/acme/apps/budget-pacing/versions",
            Some(json!({"reference": format!("{reference}:1.0.2")})),
        )
        .await;
    assert_eq!((st, kind(&api)), (StatusCode::UNPROCESSABLE_ENTITY, "signature-refused"), "{api}");
    assert_eq!(bad["detail"], api["detail"], "the watch lists the reason an API registration gives");
    // Later polls leave it alone.
    let refused_at = bad["atMs"].as_i64().unwrap();
    let watch =
        wait_for(s, OP, &path, "a later poll", |b| b["lastPoll"]["atMs"].as_i64().is_some_and(|t| t > refused_at + 1))
            .await;
    let again = outcome(&watch, "1.0.2").unwrap();
    assert_eq!((again["attempts"].as_i64(), again["atMs"].as_i64()), (Some(1), Some(refused_at)), "{watch}");
    let (st, _) = s.call(Some(&w.t1), Method::GET, "/v1/catalog/apps/acme/budget-pacing/versions/1.0.2", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        [w.version_of(&patch).await, w.version_of(&none).await, w.version_of(&minor).await],
        ["1.0.1", "1.0.0", "1.0.1"]
    );
    assert!(s.audit(OP).await.iter().any(|r| r.action == "watch.tag-refused" && r.target == format!("{id}:1.0.2")));

    // A minor release upgrades the minor installation, not the patch one.
    w.publish("1.1.0").await;
    w.wait_version(&minor, "1.1.0").await;
    assert!(w.log_lines(&minor).await.iter().any(|l| l == "upgraded from 1.0.1"), "{:?}", w.log_lines(&minor).await);
    assert_eq!([w.version_of(&patch).await, w.version_of(&none).await], ["1.0.1", "1.0.0"]);

    // The tenant opts the `none` installation into patches: the next patch upgrades it
    // (and the patch installation); the policy change is audited.
    let policy = format!("/v1/tenants/t1/installations/{none}/upgrade-policy");
    let (st, b) = s.call(Some(&w.t1), Method::PUT, &policy, Some(json!({"policy": "patch"}))).await;
    assert_eq!((st, b["upgradePolicy"].as_str()), (StatusCode::OK, Some("patch")), "{b}");
    let (st, b) = s.call(Some(&w.t1), Method::PUT, &policy, Some(json!({"policy": "major"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let nope = "/v1/tenants/t1/installations/nope/upgrade-policy";
    let (st, _) = s.call(Some(&w.t1), Method::PUT, nope, Some(json!({"policy": "none"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        s.audit(OP).await.iter().any(|r| r.action == "installation.upgrade-policy"
            && r.target == format!("t1/{none}")
            && r.detail == "patch")
    );
    w.publish("1.0.3").await;
    w.wait_version(&none, "1.0.3").await;
    w.wait_version(&patch, "1.0.3").await;
    assert_eq!(w.version_of(&minor).await, "1.1.0");

    // A second watch, then pages of two watches; deleting one keeps its versions.
    publish(&w.registry, &w.acme_key, "acme/pacing-two", "0.1.0", |_| {}).await;
    let body = json!({"reference": format!("{host}/acme/pacing-two"), "app": "acme/pacing-two", "intervalSeconds": 1});
    let (st, two) = s.call(Some(OP), Method::POST, "/v1/watches", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{two}");
    let (_, page1) = s.call(Some(OP), Method::GET, "/v1/watches?limit=1", None).await;
    let next = page1["next"].as_str().unwrap().to_string();
    let (_, page2) = s.call(Some(OP), Method::GET, &format!("/v1/watches?limit=1&after={next}"), None).await;
    assert_eq!(page2["next"], Value::Null, "{page2}");
    let mut ids = vec![page1["items"][0]["id"].clone(), page2["items"][0]["id"].clone()];
    ids.sort_by_key(|v| v.as_str().unwrap().to_string());
    let mut expected = vec![json!(id), two["id"].clone()];
    expected.sort_by_key(|v| v.as_str().unwrap().to_string());
    assert_eq!(ids, expected);
    assert!(page1["items"][0].get("tags").is_none(), "lists carry no outcomes");
    assert_eq!(s.call(Some(OP), Method::GET, "/v1/watches?limit=0", None).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.call(Some(OP), Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.call(Some(OP), Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.call(Some(OP), Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);
    assert!(s.audit(OP).await.iter().any(|r| r.action == "watch.delete" && r.target == id));
    w.wait_catalog("1.0.3").await;
}

#[tokio::test]
async fn the_periodic_pass_upgrades_to_versions_registered_through_the_api_and_records_failures_once() {
    let w = World::new("[watch]\nupgrade-pass-seconds = 1\n").await;
    let s = &w.s;
    let register = async |version: &str| {
        let reference = format!("{}/acme/budget-pacing:{version}", w.reg.host);
        let body = json!({"reference": reference});
        let (st, b) =
            s.call(Some(&w.acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions", Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    };
    // A prerelease and a yanked release are never taken (both exist before the
    // installations do, so no pass can see them otherwise).
    for version in ["1.0.0", "1.0.1-rc.1", "1.0.5"] {
        w.publish(version).await;
        register(version).await;
    }
    let (st, _) =
        s.call(Some(&w.acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/1.0.5/yank", None).await;
    assert_eq!(st, StatusCode::OK);
    let patch = w.install("1.0.0", Some("patch")).await;
    let none = w.install("1.0.0", Some("none")).await;
    w.publish("1.0.1").await;
    register("1.0.1").await;
    w.wait_version(&patch, "1.0.1").await;
    assert_eq!(w.version_of(&none).await, "1.0.0");

    // 1.0.2's schema requires a setting the installation lacks: the upgrade fails, the
    // installation stays on 1.0.1, the failure is audited and noted for the tenant.
    publish(&w.registry, &w.acme_key, "acme/budget-pacing", "1.0.2", |m| {
        m["config"]["properties"]["region"] = json!({"type": "string"});
        m["config"]["required"] = json!(["apiKey", "region"]);
    })
    .await;
    register("1.0.2").await;
    let target = format!("t1/{patch}");
    let deadline = Instant::now() + DEADLINE;
    let failure = loop {
        let audit = s.audit(OP).await;
        if let Some(r) = audit.iter().find(|r| r.action == "installation.auto-upgrade-failed" && r.target == target) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "the failed upgrade is audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let detail = failure.detail.as_str();
    assert!(
        detail.starts_with("to 1.0.2: ") && detail.contains("config-invalid") && detail.contains("region"),
        "{detail}"
    );
    assert_eq!(w.version_of(&patch).await, "1.0.1");
    // The note in the installation's log is written after the audit row (two writes):
    // wait for it as for the audit row.
    let noted = |lines: &[String]| {
        lines.iter().any(|l| l.starts_with("kiosk: automatic upgrade (patch policy) from 1.0.1 to 1.0.2 failed"))
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lines = w.log_lines(&patch).await;
        if noted(&lines) {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A pass run now tries nothing: the failed (installation, version) is not retried.
    let state = s.started.state.clone();
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        // The periodic pass may hold the lease a moment.
        if let Some(report) = kiosk::upgrades::run_pass(&state, "test", None).await.unwrap() {
            break report;
        }
        assert!(Instant::now() < deadline, "the pass lease comes free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(report.upgraded.is_empty() && report.failed.is_empty(), "{report:?}");
    let failures = s
        .audit(OP)
        .await
        .iter()
        .filter(|r| r.action == "installation.auto-upgrade-failed" && r.target == target)
        .count();
    assert_eq!(failures, 1);
    // A later good patch is taken past the failed one.
    w.publish("1.0.3").await;
    register("1.0.3").await;
    w.wait_version(&patch, "1.0.3").await;
    assert!(w.log_lines(&patch).await.iter().any(|l| l == "upgraded from 1.0.1"), "{:?}", w.log_lines(&patch).await);
    assert_eq!(w.version_of(&none).await, "1.0.0");
    drop(w.gpg);
}

#[tokio::test]
async fn on_postgresql_one_kiosk_polls_a_due_watch_at_a_time() {
    use kiosk::store::RegistryRow;
    use kiosk::watch::{WatchRequest, claim, poll};

    let database = common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(Mode::Plain);
    // Two Kiosk states on one database, as two replicas (no background tasks: the test
    // drives the poller's steps).
    let open = async || {
        let mut config =
            kiosk::config::OperatorConfig { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
        config.watch.min_interval_seconds = 1;
        kiosk_core::host::open(config, Some(database.clone()), None).await.expect("Kiosk opens")
    };
    let a = open().await;
    let b = open().await;
    let store = a.store();
    assert!(store.create_partner("acme", "Acme", "operator").await.unwrap());
    assert!(store.create_tenant("t1", "T1", "operator").await.unwrap());
    let row = RegistryRow {
        host: reg.host.clone(),
        insecure: true,
        ca_pem: None,
        username: None,
        secret: None,
        partners: [("acme".to_string(), vec!["acme/".to_string()])].into(),
        blob_hosts: vec![],
        token_hosts: vec![],
        private_addresses: false,
    };
    store.put_registry(&row, "operator").await.unwrap();
    let gpg = Gpg::new();
    let fpr = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    assert!(store.add_certificate("acme", &fpr, &gpg.export(&fpr), "operator").await.unwrap());
    let registry = Registry::new(
        &RegistrySettings { host: reg.host.clone(), insecure: true, ..Default::default() },
        TransferSettings::default(),
    )
    .unwrap();
    let key = gpg.export_secret(&fpr);
    publish(&registry, &key, "acme/budget-pacing", "1.0.0", |_| {}).await;

    // An hourly watch, due at once: both replicas try to take it at the same moment.
    let request = WatchRequest {
        reference: format!("{}/acme/budget-pacing", reg.host),
        app: "acme/budget-pacing".into(),
        interval_seconds: Some(3600),
    };
    let watch = a.create_watch(request, "operator").await.unwrap();
    let (won_a, won_b) = tokio::join!(claim(&a, &watch.id, "replica-a"), claim(&b, &watch.id, "replica-b"));
    let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
    assert!(won_a ^ won_b, "exactly one replica holds the watch: a {won_a}, b {won_b}");
    let (winner, replica, loser) = if won_a { (&a, "replica-a", &b) } else { (&b, "replica-b", &a) };
    assert!(!claim(loser, &watch.id, "replica-late").await.unwrap(), "held while polled");
    let polled = poll(winner, &watch.id, replica).await.unwrap().unwrap();
    assert_eq!(polled.registered, ["1.0.0"], "{polled:?}");
    assert!(store.version("acme/budget-pacing", "1.0.0").await.unwrap().is_some());
    // Polled: not due again for an hour, so neither replica takes it.
    assert!(!claim(loser, &watch.id, "replica-late").await.unwrap());
    assert!(!claim(winner, &watch.id, replica).await.unwrap());
    let tags = store.tag_outcomes(&watch.id, 10).await.unwrap();
    assert_eq!(tags.len(), 1);
    // A poll by a replica that does not hold the lease records nothing.
    assert!(poll(loser, &watch.id, "replica-late").await.unwrap().is_some());
    assert_eq!(store.tag_outcomes(&watch.id, 10).await.unwrap().len(), 1);

    // The automatic-upgrade pass: one replica at a time too.
    let request = install_request(UpgradePolicy::Patch);
    let inst = a.install("t1", request, "tenant:t1").await.unwrap();
    publish(&registry, &key, "acme/budget-pacing", "1.0.1", |_| {}).await;
    a.register_from_registry(
        "acme",
        "budget-pacing",
        &format!("{}/acme/budget-pacing:1.0.1", reg.host),
        "partner:acme",
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(store.lease_pass(kiosk::upgrades::PASS, "holder", now, 60_000).await.unwrap());
    assert!(kiosk::upgrades::run_pass(&b, "replica-b", None).await.unwrap().is_none(), "the lease is held");
    store.release_pass(kiosk::upgrades::PASS, "holder").await.unwrap();
    let (ra, rb) = tokio::join!(
        kiosk::upgrades::run_pass(&a, "replica-a", None),
        kiosk::upgrades::run_pass(&b, "replica-b", None)
    );
    let upgraded: usize = [ra.unwrap(), rb.unwrap()].into_iter().flatten().map(|r| r.upgraded.len()).sum();
    assert_eq!(upgraded, 1, "the installation is upgraded once");
    assert_eq!(store.installation("t1", &inst.id).await.unwrap().unwrap().version, "1.0.1");
    a.store().close().await;
    b.store().close().await;
}

fn install_request(policy: UpgradePolicy) -> InstallRequest {
    InstallRequest {
        app: "acme/budget-pacing".into(),
        version: Some("1.0.0".into()),
        config: Some(json!({"apiKey": "k"})),
        upgrade_policy: policy,
        ..Default::default()
    }
}
