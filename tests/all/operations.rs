//! What operators watch, with real parts: `GET /metrics` after a journey (parsed with a
//! Prometheus text-format parser), the request id and access log of the real `kiosk
//! serve` binary (JSON and text, piped: no ANSI), and `/readyz` saying why it is not
//! ready (shutting down; the database unreachable, on PostgreSQL).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiosk::store::Principal;
use kiosk_api::usage::RecordStatus;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{Api, PROBLEM_JSON, Reply};

/// Every sample of the scrape: (name, labels) → value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

async fn scrape(api: &Api, token: &str) -> Samples {
    let reply = Reply::of(api.request(Some(token), Method::GET, "/metrics").send().await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type().starts_with("text/plain"), "{}", reply.content_type());
    let text = reply.text;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(q) => q.len() as f64,
            };
            let labels = s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (s.metric, labels, value)
        })
        .collect()
}

/// The sum of a series' samples whose labels include `with`.
fn total(samples: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v)))
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_journey() {
    // The metrics recorder is the process's: alone, not beside the other suites' servers.
    if common::alone("operations::metrics_after_a_journey") {
        return;
    }
    let extra = "[usage]\nwindow-seconds = 1\n[admission]\ntenant-max-concurrent = 1\n";
    let server = common::hostile_server(None, extra, |_| {}).await;
    let state = server.started.state.clone();
    let store = &state.store();
    let tenant = store.create_token(&Principal::Tenant("demo".into()), "t", "operator").await.unwrap().1;
    let partner = store.create_token(&Principal::Partner("test".into()), "p", "operator").await.unwrap().1;
    let operator = store.create_token(&Principal::Operator, "op", "operator").await.unwrap().1;
    let install = async |config: Value| {
        server.install(&tenant, "demo", json!({"app": "test/hostile", "version": "0.0.1", "config": config})).await.id
    };
    // The call's status (a task of its own may own the call).
    let invoke = |id: &str, op: &str, input: Value| {
        let (api, tenant, id, op) = (server.api.clone(), tenant.clone(), id.to_string(), op.to_string());
        async move { api.invoke(&tenant, "demo", &id, &op, input).await.0 }
    };

    // Metrics are the operator's.
    assert_eq!(server.call(Some(&tenant), Method::GET, "/metrics", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(server.call(None, Method::GET, "/metrics", None).await.0, StatusCode::UNAUTHORIZED);

    let id = install(json!({})).await;
    // A report that always fails keeps a window uncollected: the collection lag grows.
    let _stuck = install(json!({"mode": "trap-report"})).await;
    assert_eq!(invoke(&id, "echo", json!("hi")).await, StatusCode::OK);
    assert_eq!(invoke(&id, "record", json!(3)).await, StatusCode::OK);
    assert_eq!(invoke(&id, "python-traceback", json!({})).await, StatusCode::BAD_GATEWAY);
    assert_eq!(invoke(&id, "loop", json!({})).await, StatusCode::BAD_GATEWAY);
    assert_eq!(invoke(&id, "no-such-operation", json!({})).await, StatusCode::UNPROCESSABLE_ENTITY);
    // A report, as the collector asks for it.
    let row = state.installation("demo", &id).await.unwrap();
    let now = kiosk::metering::now_ms();
    let window = kiosk::runtime::window_containing(now, Duration::from_secs(3600));
    state.report(&row, window).await.unwrap();
    // A partner usage batch.
    let record = json!({"tenant": "demo", "app": "test/hostile", "installation": id, "sku": "events",
                        "quantity": 1, "timestampMs": now, "idempotencyKey": "metrics-1"});
    let results = server.post_usage(&partner, "test", json!([record])).await;
    assert_eq!(results[0].status, RecordStatus::Recorded, "{results:?}");
    // A registration refused by verification: the demo layout's artifact is
    // test/hostile, registered as another app.
    let layout = server.dir().join("data/demo/layout");
    let refused = state
        .register(&kiosk::artifact::LayoutSource::new(&layout), "test/other", "0.0.1", "oci-layout", "operator")
        .await
        .unwrap_err();
    assert_eq!(refused.kind.as_str(), "artifact-refused", "{}", refused.detail);

    // Sleepers of a tenant allowed one call at a time: a slot in use, and rejections.
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let sleepers: Vec<_> = (0..3).map(|_| tokio::spawn(invoke(&id, "sleep", json!({})))).collect();
        let samples = scrape(&server, &operator).await;
        let statuses: Vec<StatusCode> =
            futures_util::future::join_all(sleepers).await.into_iter().map(|r| r.unwrap()).collect();
        assert!(
            statuses.iter().all(|s| [StatusCode::BAD_GATEWAY, StatusCode::TOO_MANY_REQUESTS].contains(s)),
            "{statuses:?}"
        );
        if total(&samples, "kiosk_sandbox_slots_in_use", &[]) >= 1.0
            && total(&samples, "kiosk_admission_rejections_total", &[]) >= 1.0
            && total(&samples, "kiosk_collection_lag_seconds", &[]) > 0.0
        {
            break samples;
        }
        assert!(Instant::now() < deadline, "slots, rejections and lag never showed: {samples:?}");
    };

    let app = [("app", "test/hostile")];
    for (name, with) in [
        ("kiosk_calls_total", vec![app[0], ("operation", "calls.invoke"), ("outcome", "ok")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "calls.invoke"), ("outcome", "trap")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "calls.invoke"), ("outcome", "limit")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "calls.invoke"), ("outcome", "app-error")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "calls.invoke"), ("outcome", "refused")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "usage.report"), ("outcome", "ok")]),
        ("kiosk_calls_total", vec![app[0], ("operation", "lifecycle.install"), ("outcome", "ok")]),
        ("kiosk_call_duration_seconds_count", vec![app[0], ("operation", "calls.invoke")]),
        ("kiosk_limit_hits_total", vec![("limit", "timeout")]),
        ("kiosk_sandbox_slots_in_use", vec![]),
        ("kiosk_admission_rejections_total", vec![("reason", "tenant-concurrency")]),
        ("kiosk_registry_pulls_total", vec![("outcome", "verified")]),
        ("kiosk_registry_pulls_total", vec![("outcome", "refused")]),
        ("kiosk_verification_failures_total", vec![("reason", "artifact-refused")]),
        ("kiosk_usage_events_total", vec![("source", "host")]),
        ("kiosk_usage_events_total", vec![("source", "guest")]),
        ("kiosk_usage_events_total", vec![("source", "report")]),
        ("kiosk_usage_events_total", vec![("source", "partner")]),
        ("kiosk_ledger_commit_seconds_count", vec![]),
        ("kiosk_ledger_batch_size_count", vec![]),
        ("kiosk_collection_lag_seconds", vec![]),
        ("kiosk_http_requests_total", vec![("route", "/metrics"), ("status", "403")]),
    ] {
        assert!(total(&samples, name, &with) > 0.0, "{name} {with:?} is missing or zero");
    }
    // Labels stay bounded: no operation name or installation id a caller chose.
    for (_, labels, _) in &samples {
        for value in labels.values() {
            assert!(!value.contains("no-such-operation") && !value.contains(&id), "{labels:?}");
        }
    }
}

/// Reads a child's stderr into a channel of lines.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `kiosk serve` (piped: not a terminal) with `args`; returns the child, a
/// client of it and its stderr lines.
fn serve(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, Api, std::sync::mpsc::Receiver<String>) {
    let port = common::registry::free_port();
    let config = dir.join("kiosk.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\noperator-token = \"operator-secret-token\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiosk"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(args)
        .env_remove("KIOSK_LOG_FORMAT")
        .env("KIOSK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let lines = lines_of(&mut child);
    (child, Api::new(format!("http://127.0.0.1:{port}")), lines)
}

/// Waits (bounded) until the server answers `/healthz`.
async fn wait_ready(api: &Api, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = api.request(None, Method::GET, "/healthz").send().await
            && resp.status() == StatusCode::OK
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "kiosk serve exited");
        assert!(Instant::now() < deadline, "kiosk serve did not start within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the child and returns every stderr line it wrote.
fn stop(mut child: Child, lines: std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kiosk serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    lines.try_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_carries_the_clients_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, api, lines) = serve(dir.path(), &["--log-format", "json"], &[]);
    wait_ready(&api, &mut child).await;
    let resp = api
        .request(Some("operator-secret-token"), Method::GET, "/v1/tokens")
        .header("x-request-id", "client-chosen-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id-42");
    // An id that is not sane (too long, or not visible ASCII) is replaced by a new one.
    for bad in ["x".repeat(200), "has space".to_string()] {
        let resp = api.request(None, Method::GET, "/healthz").header("x-request-id", &bad).send().await.unwrap();
        let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(!echoed.is_empty() && echoed != bad, "{echoed}");
    }
    let resp = api.request(None, Method::GET, "/no/such/route").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("x-request-id"));

    let lines = stop(child, lines);
    assert!(!lines.is_empty());
    let mut access = None;
    for line in &lines {
        assert!(!line.contains("\u{1b}["), "ANSI in a piped log: {line:?}");
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        if doc["fields"]["request_id"] == "client-chosen-id-42" {
            access = Some(doc);
        }
    }
    let access = access.expect("an access line with the client's request id");
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["fields"]["method"], "GET");
    assert_eq!(access["fields"]["route"], "/v1/tokens");
    assert_eq!(access["fields"]["status"], 200);
    assert!(access["fields"]["latency_ms"].as_f64().is_some(), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_is_plain_when_piped() {
    let dir = tempfile::tempdir().unwrap();
    // The format from the environment: text (also the default).
    let (mut child, api, lines) = serve(dir.path(), &[], &[("KIOSK_LOG_FORMAT", "text")]);
    wait_ready(&api, &mut child).await;
    let resp = api.request(None, Method::GET, "/readyz").header("x-request-id", "plain-text-id").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let lines = stop(child, lines);
    let text = lines.join("\n");
    assert!(!text.contains('\u{1b}'), "no ANSI escape when stderr is not a terminal: {text}");
    let access = lines.iter().find(|l| l.contains("plain-text-id")).expect("an access line");
    assert!(access.contains("INFO") && access.contains("route=/readyz") && access.contains("status=200"), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_log_format_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .args(["serve", "--log-format", "yaml"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-format") && stderr.contains("yaml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_why_it_is_not_ready() {
    let url = common::fresh_postgres_database().await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let server = common::hostile_server(Some(url), "", |_| {}).await;
    let ready = || async { Reply::of(server.request(None, Method::GET, "/readyz").send().await.unwrap()).await };
    assert_eq!(ready().await.status, StatusCode::OK);

    // The database refuses connections: 503 naming the database, no database text.
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&common::postgres_admin_url()).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&mut admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let problem = loop {
        let reply = ready().await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.content_type(), PROBLEM_JSON);
            break reply.json();
        }
        assert!(Instant::now() < deadline, "readyz stayed {}", reply.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(problem["type"], "urn:kiosk:problem:not-ready");
    assert_eq!(problem["detail"], "the database is not reachable");
    // It comes back by itself.
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&mut admin).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready().await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "readyz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutting down: 503 with the reason and a retry time; liveness is unaffected.
    server.started.state.runtime().shut_down();
    let reply = ready().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.contains_key("retry-after"));
    let problem = reply.json();
    assert_eq!(problem["type"], "urn:kiosk:problem:shutting-down");
    assert!(problem["detail"].as_str().unwrap().contains("shutting down"), "{problem}");
    let resp = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
