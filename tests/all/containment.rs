//! Containment over HTTP: no guest, tenant or partner can stall, starve or crash the
//! server. Hostile guests sleep in their calls and reports, a tenant floods the server,
//! a partner ships a schema built to backtrack; the answers are 429/503 with
//! `Retry-After`, named limits, and collection that goes on for everyone else.

use std::process::Command;
use std::time::{Duration, Instant};

use kiosk::server::serve::{ServeOptions, spawn};
use kiosk::store::Principal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::common;
use crate::common::api::{Api, TestServer};

const APP: &str = "test/hostile";

/// The hostile app's server with tenants `demo` and `other`.
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
    /// A server on `database` (SQLite in its data directory when `None`) with the hostile
    /// app registered, the config `extra` (TOML) and tenants `demo` and `other`.
    async fn start(database: Option<String>, extra: &str, edit: impl FnOnce(&mut Value)) -> Self {
        let s = common::hostile_server(database, extra, edit).await;
        s.store().create_tenant("other", "Other", "operator").await.unwrap();
        Self { s }
    }

    async fn token(&self, tenant: &str) -> String {
        self.store().create_token(&Principal::Tenant(tenant.into()), "test", "operator").await.unwrap().1
    }

    async fn install(&self, token: &str, tenant: &str, config: Value) -> String {
        self.s.install(token, tenant, json!({"app": APP, "version": "0.0.1", "config": config})).await.id
    }

    /// Invokes `operation` with "hello" (a task of its own may own the call): the status,
    /// `Retry-After` and the body.
    fn invoke(
        &self,
        token: &str,
        tenant: &str,
        id: &str,
        operation: &str,
    ) -> impl std::future::Future<Output = (StatusCode, Option<String>, Value)> + Send + 'static {
        let (api, token) = (self.api.clone(), token.to_string());
        let path = format!("/v1/tenants/{tenant}/installations/{id}/invoke/{operation}");
        async move {
            let reply = api.send(Some(&token), Method::POST, &path, Some(json!("hello"))).await;
            (reply.status, reply.header("retry-after").map(str::to_string), reply.json())
        }
    }

    /// Waits (bounded, by observation) until `tenant` has `n` calls admitted.
    async fn until_active(&self, tenant: &str, n: u32) {
        let admission = self.started.state.runtime().admission();
        let deadline = Instant::now() + Duration::from_secs(30);
        while admission.active(tenant) < n {
            assert!(Instant::now() < deadline, "{tenant} never had {n} calls running");
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_tenants_limits_or_without_a_slot_callers_get_429_or_503_with_retry_after() {
    // Six sandbox slots; a tenant may hold four; a call waits 300 ms for a slot.
    let extra = "[sandbox]\ntimeout-ms = 30000\nmax-concurrent-instances = 6\n\
                 [admission]\ntenant-max-concurrent = 4\ntenant-slot-share-percent = 100\nslot-wait-ms = 300\n";
    let server = Server::start(None, extra, |m| m["limits"]["timeoutMs"] = 20_000.into()).await;
    let (demo, other) = (server.token("demo").await, server.token("other").await);
    let demo_id = server.install(&demo, "demo", json!({"mode": "sleep-invoke"})).await;
    let other_id = server.install(&other, "other", json!({"mode": "sleep-invoke"})).await;

    // demo's four sleepers fill its place; a fifth call is a 429 at once.
    let sleepers: Vec<_> = (0..4).map(|_| tokio::spawn(server.invoke(&demo, "demo", &demo_id, "nap"))).collect();
    server.until_active("demo", 4).await;
    let (status, retry_after, problem) = server.invoke(&demo, "demo", &demo_id, "echo").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(problem["type"], "urn:kiosk:problem:tenant-concurrency-limit");
    assert!(problem["detail"].as_str().unwrap().contains("4 calls running"), "{problem}");

    // other takes the last two slots; its third call waits 300 ms, then gets a 503.
    let mut others: Vec<_> = (0..2).map(|_| tokio::spawn(server.invoke(&other, "other", &other_id, "nap"))).collect();
    server.until_active("other", 2).await;
    let (status, retry_after, problem) = server.invoke(&other, "other", &other_id, "echo").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(problem["type"], "urn:kiosk:problem:no-sandbox-slot");
    assert!(problem["detail"].as_str().unwrap().contains("within 300 ms"), "{problem}");

    // The server is alive throughout, and stopping the runtime ends every sleeper now.
    let health = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.started.state.runtime().shut_down();
    others.extend(sleepers);
    for s in others {
        let (status, retry_after, problem) = s.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert_eq!(problem["type"], "urn:kiosk:problem:shutting-down");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_http_sleepers_of_one_tenant_never_fail_another_tenants_calls() {
    // Default admission; the sleepers' calls may last 20 s.
    let extra = "[sandbox]\ntimeout-ms = 30000\n";
    let server = Server::start(None, extra, |m| m["limits"]["timeoutMs"] = 20_000.into()).await;
    let (demo, other) = (server.token("demo").await, server.token("other").await);
    let sleepy = server.install(&demo, "demo", json!({"mode": "sleep-invoke"})).await;
    let quick = server.install(&other, "other", json!({})).await;
    let cap = server.started.state.runtime().admission().tenant_cap();

    let sleepers: Vec<_> = (0..300).map(|_| tokio::spawn(server.invoke(&demo, "demo", &sleepy, "nap"))).collect();
    server.until_active("demo", cap).await;
    let mut latencies = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let (status, _, body) = server.invoke(&other, "other", &quick, "echo").await;
        latencies.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "call {i} of the other tenant: {body}");
        assert_eq!(body["output"], "hello");
    }
    assert_eq!(server.started.state.runtime().admission().active("demo"), cap, "the sleepers slept throughout");
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "300 HTTP invokes beside 300 sleepers: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    // Every call beyond demo's place is answered 429 at once (wait, bounded, for the
    // answers still on the wire).
    let refused = 300 - cap as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleepers.iter().filter(|s| s.is_finished()).count() < refused {
        assert!(Instant::now() < deadline, "the calls over demo's limit were not answered");
        tokio::task::yield_now().await;
    }
    let mut too_many = 0;
    let mut sleeping = Vec::new();
    for s in sleepers {
        if s.is_finished() {
            let (status, retry_after, problem) = s.await.unwrap();
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
            assert_eq!(retry_after.as_deref(), Some("1"));
            too_many += 1;
        } else {
            sleeping.push(s);
        }
    }
    assert_eq!(too_many, refused);
    server.started.state.runtime().shut_down();
    for s in sleeping {
        assert_eq!(s.await.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_call_rate_gets_429_with_retry_after() {
    let extra = "[admission]\ntenant-calls-per-second = 1\ntenant-burst = 3\n";
    let server = Server::start(None, extra, |_| {}).await;
    let demo = server.token("demo").await;
    // install = validate-config + install: two calls of the burst of three.
    let id = server.install(&demo, "demo", json!({})).await;
    let (status, _, body) = server.invoke(&demo, "demo", &id, "echo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, retry_after, problem) = server.invoke(&demo, "demo", &id, "echo").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["type"], "urn:kiosk:problem:tenant-rate-limit");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another tenant has its own budget.
    let other = server.token("other").await;
    server.install(&other, "other", json!({})).await;
}

async fn collection(database: Option<String>) {
    // One-second windows; the sleeper's report sleeps up to its 20 s deadline.
    let extra = "[sandbox]\ntimeout-ms = 30000\n[usage]\nwindow-seconds = 1\nlease-seconds = 60\n";
    let server = Server::start(database, extra, |m| m["limits"]["timeoutMs"] = 20_000.into()).await;
    let demo = server.token("demo").await;
    let sleeper = server.install(&demo, "demo", json!({"mode": "sleep-report"})).await;
    let failing = server.install(&demo, "demo", json!({"mode": "trap-report"})).await;
    let normal = server.install(&demo, "demo", json!({})).await;
    let pool = server.started.state.store().pool().clone();
    let window_state = |id: String| {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query(
                "SELECT window_start, done, attempts FROM usage_windows WHERE installation = $1 ORDER BY window_start",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.iter()
                .map(|r| (r.get::<i64, _>("window_start"), r.get::<i64, _>("done"), r.get::<i64, _>("attempts")))
                .collect::<Vec<_>>()
        }
    };

    // The normal installation's windows are collected while the sleeper's first report
    // of the same window still sleeps: it never waits for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let collected = loop {
        let done: Vec<i64> = window_state(normal.clone()).await.iter().filter(|w| w.1 == 1).map(|w| w.0).collect();
        if done.len() >= 2 {
            break done;
        }
        assert!(Instant::now() < deadline, "the normal installation's windows were not collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sleeping = window_state(sleeper.clone()).await;
    for window in &collected {
        let s = sleeping.iter().find(|w| w.0 == *window);
        assert!(
            s.is_none_or(|w| w.1 == 0 && w.2 == 0),
            "window {window}: collected for the normal installation while the sleeper's report was still running: {s:?}"
        );
    }

    // The failing report is retried with backoff a bounded number of times, then
    // recorded as failed and audited: never retried forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let windows = window_state(failing.clone()).await;
        if let Some(w) = windows.iter().find(|w| w.1 == 2) {
            break *w;
        }
        assert!(Instant::now() < deadline, "the failing report was never given up: {windows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.2, kiosk::collector::MAX_ATTEMPTS);
    let audit = sqlx::query("SELECT detail FROM audit WHERE action = 'usage.collect-failed' AND target = $1")
        .bind(format!("demo/{failing}"))
        .fetch_all(&pool)
        .await
        .unwrap();
    let details: Vec<String> = audit.iter().map(|r| r.get("detail")).collect();
    let detail = details.iter().find(|d| d.starts_with(&format!("window {}:", failed.0))).unwrap();
    assert!(detail.contains("gave up after 5 attempts") && detail.contains("the app trapped"), "{detail}");

    // The tenant reads the same through the API: the window given up, its attempts and
    // the last error; the normal installation's windows collected, with what was found.
    let windows = |token: String, path: String| {
        let api = server.api.clone();
        async move { api.call(Some(&token), Method::GET, &path, None).await }
    };
    let path = format!("/v1/tenants/demo/installations/{failing}/usage-windows");
    let (status, page) = windows(demo.clone(), path.clone()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let given_up = page["items"].as_array().unwrap().iter().find(|w| w["startMs"] == json!(failed.0)).unwrap();
    assert_eq!(given_up["state"], "given-up", "{given_up}");
    assert_eq!(given_up["attempts"], kiosk::collector::MAX_ATTEMPTS);
    assert_eq!(given_up["detail"].as_str(), Some(detail.as_str()));
    assert!(given_up["lastError"].as_str().unwrap().contains("the app trapped"), "{given_up}");
    let (_, page) =
        windows(demo.clone(), format!("/v1/tenants/demo/installations/{normal}/usage-windows?limit=1")).await;
    let newest = &page["items"][0];
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let next = page["next"].as_str().expect("more windows follow");
    assert_eq!(next, newest["startMs"].to_string());
    let (_, older) = windows(
        demo.clone(),
        format!("/v1/tenants/demo/installations/{normal}/usage-windows?limit=1000&before={next}"),
    )
    .await;
    let older = older["items"].as_array().unwrap();
    assert!(older.iter().all(|w| w["startMs"].as_i64() < newest["startMs"].as_i64()), "{older:?}");
    let collected = older.iter().find(|w| w["state"] == "collected").expect("an older window was collected");
    assert!(collected["detail"].as_str().unwrap().starts_with("window "), "{collected}");
    // Bad cursors and limits name their field; another tenant finds nothing.
    for bad in ["abc", "-1", "1.5", "", "99999999999999999999"] {
        let (status, problem) = windows(demo.clone(), format!("{path}?before={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "before={bad}: {problem}");
        assert_eq!(problem["field"], "before", "{problem}");
    }
    // Text no backend stores is refused before any query, as on every route.
    let (status, problem) = windows(demo.clone(), format!("{path}?before=1%00")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        (problem["type"].as_str(), problem["field"].as_str()),
        (Some("urn:kiosk:problem:invalid-text"), Some("before"))
    );
    let (status, problem) = windows(demo.clone(), format!("{path}?limit=1001")).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")));
    let other = server.token("other").await;
    for path in [path.clone(), format!("/v1/tenants/other/installations/{failing}/usage-windows")] {
        let (status, problem) = windows(other.clone(), path.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
    }
    server.started.state.runtime().shut_down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_report_never_delays_another_window_and_a_failing_one_is_given_up_on_sqlite() {
    collection(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_report_never_delays_another_window_and_a_failing_one_is_given_up_on_postgres() {
    collection(Some(common::fresh_postgres_database().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtracking_schema_is_refused_at_registration_and_a_heavy_pattern_cannot_stall_the_server() {
    // A backreference needs a backtracking engine: refused at registration, by name.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(&config, format!("data-dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let demo = common::hostile_manifest(dir.path(), |m| {
        m["config"] = json!({"type": "object", "properties": {"name": {"type": "string", "pattern": "^(\\w+)*\\1$"}}});
    });
    let options = ServeOptions { config: Some(config), demo_apps: vec![demo], ..Default::default() };
    let err = spawn(options, "127.0.0.1:0".parse().unwrap()).await.expect_err("the schema is refused");
    let text = format!("{err:#}");
    assert!(text.contains("config") && text.contains("schema does not compile"), "{text}");

    // A pattern that backtracks catastrophically on a backtracking engine runs in linear
    // time here: installs with hostile input answer at once, and /healthz never waits.
    let server = Server::start(None, "", |m| {
        m["config"] = json!({"type": "object", "properties": {"name": {"type": "string", "pattern": "^(\\w+\\s?)*$"}}});
    })
    .await;
    let demo = server.token("demo").await;
    let hostile_input = format!("{}!", "a".repeat(50_000));
    let installs: Vec<_> = (0..4)
        .map(|_| {
            let (api, demo) = (server.api.clone(), demo.clone());
            let body = json!({"app": APP, "version": "0.0.1", "config": {"name": hostile_input}});
            tokio::spawn(async move {
                api.send(Some(&demo), Method::POST, "/v1/tenants/demo/installations", Some(body)).await
            })
        })
        .collect();
    for _ in 0..20 {
        let health = server.http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
    for install in installs {
        let reply = install.await.unwrap();
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        let problem = reply.json();
        assert_eq!(problem["type"], "urn:kiosk:problem:config-invalid");
        assert_eq!(problem["field"], "config/name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_promptly_while_a_guest_sleeps_in_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::registry::free_port();
    let config = dir.path().join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\ndrain-seconds = 1\n\
             [sandbox]\ntimeout-ms = 120000\n[usage]\nlease-seconds = 300\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // The app may sleep for 100 s: far longer than the drain (1 s) lets it run on.
    let demo = common::hostile_manifest(dir.path(), |m| m["limits"]["timeoutMs"] = 100_000.into());
    let log_path = dir.path().join("kiosk.log");
    let (mut child, text) = common::spawn_serve(
        &["--config", config.to_str().unwrap(), "--demo-app", &demo],
        &[("KIOSK_LOG", "info,kiosk::access=debug")],
        &log_path,
    );
    let token = common::demo_token(&text, "TENANT_TOKEN");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let id = api
        .install(&token, "demo", json!({"app": APP, "version": "0.0.1", "config": {"mode": "sleep-invoke"}}))
        .await
        .id;

    // The guest sleeps (60 s) inside its call; the request is in flight once the server
    // logged that it started processing it. (If SIGTERM overtook the handler on its way
    // to the guest, the call would be refused with the same prompt 503.)
    let call = {
        let (api, token) = (api.clone(), token.clone());
        tokio::spawn(async move { api.invoke(&token, "demo", &id, "nap", json!({})).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().any(|l| l.contains("invoke/{operation}") && l.contains("request received")) {
            break;
        }
        assert!(Instant::now() < deadline, "the invoke never reached the server: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sigterm_at = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(sigterm_at.elapsed() < Duration::from_secs(10), "kiosk serve did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let (status, problem) = call.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "urn:kiosk:problem:shutting-down", "{problem}");
    println!("stopped {:?} after SIGTERM with a 60 s sleeper in flight", sigterm_at.elapsed());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("kiosk stopped"), "graceful shutdown is logged: {text}");
}
