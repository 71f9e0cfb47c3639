//! Durable before acknowledged, under SIGKILL: the server runs as a child process;
//! concurrent invokes and partner usage posts are fired; the server is killed with
//! SIGKILL at a random moment and restarted, five times. Every acknowledged event must be
//! in the ledger exactly once, and nothing unacknowledged may count twice.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiosk_api::usage::RecordStatus;
use rand::Rng;
use serde_json::{Value, json};

use crate::common;
use crate::common::api::Api;

struct Server {
    child: Child,
    api: Api,
    tenant: String,
    partner: String,
}

fn start(dir: &Path, database: &str, round: usize) -> Server {
    let port = common::registry::free_port();
    let config = dir.join("kiosk.toml");
    // No usage window completes during the test: its totals count invokes and posts only.
    std::fs::write(
        &config,
        format!("data-dir = \"{}\"\n[usage]\nwindow-seconds = 315360000\n", dir.join("data").display()),
    )
    .unwrap();
    let log_path = dir.join(format!("kiosk-{round}.log"));
    let demo = common::demo_app("budget-pacing");
    let listen = format!("127.0.0.1:{port}");
    let (child, text) = common::spawn_serve(
        &["--config", config.to_str().unwrap(), "--database", database, "--demo-app", &demo, "--listen", &listen],
        &[],
        &log_path,
    );
    Server {
        child,
        api: Api::new(format!("http://127.0.0.1:{port}")),
        tenant: common::demo_token(&text, "TENANT_TOKEN"),
        partner: common::demo_token(&text, "PARTNER_TOKEN"),
    }
}

#[derive(Default)]
struct Tally {
    /// Partner idempotency keys sent, and those acknowledged (recorded or duplicate).
    sent: HashSet<String>,
    acked: HashSet<String>,
    invokes_sent: u64,
    invokes_acked: u64,
}

/// Invokes and partner usage posts from 24 workers until `stop` or the first request the
/// killed server does not answer (its own client: a 5 s timeout, no answer checked but
/// the acknowledgements).
async fn load(s: &Server, installation: &str, round: usize, tally: Arc<Mutex<Tally>>, stop: Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let (http, tally, base) = (http.clone(), tally.clone(), s.api.base.clone());
        let (tenant, partner, installation) = (s.tenant.clone(), s.partner.clone(), installation.to_string());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < stop {
                n += 1;
                if worker % 2 == 0 {
                    let key = format!("r{round}-w{worker}-{n}");
                    tally.lock().unwrap().sent.insert(key.clone());
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                    let body = json!({"records": [{"tenant": "demo", "app": "acme/budget-pacing", "sku": "campaigns-monitored",
                        "quantity": 1, "timestampMs": now as i64 - 1000, "idempotencyKey": key}]});
                    let resp = http.post(format!("{base}/v1/partners/acme/usage")).bearer_auth(&partner).json(&body).send().await;
                    let Ok(resp) = resp else { break };
                    let Ok(v) = resp.json::<Value>().await else { break };
                    let status = v["results"][0]["status"].as_str().unwrap_or("");
                    assert!(status == "recorded" || status == "duplicate", "{v}");
                    tally.lock().unwrap().acked.insert(key);
                } else {
                    tally.lock().unwrap().invokes_sent += 1;
                    let input = json!({"campaignId": "c", "budget": 300, "flightDays": 30, "dailySpend": [10]});
                    let url = format!("{base}/v1/tenants/demo/installations/{installation}/invoke/evaluate");
                    let Ok(resp) = http.post(url).bearer_auth(&tenant).json(&input).send().await else { break };
                    if resp.status() != 200 || resp.bytes().await.is_err() {
                        break;
                    }
                    tally.lock().unwrap().invokes_acked += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn usage_totals(s: &Server, operator_query: &str) -> BTreeMap<String, u128> {
    s.api.usage(&s.tenant, &format!("/v1/tenants/demo/usage{operator_query}")).await.totals
}

async fn crash_suite(database: String) {
    let dir = tempfile::tempdir().unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut server = start(dir.path(), &database, 0);
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let installation = server.api.install(&server.tenant, "demo", install).await.id;

    for round in 1..=5 {
        // Fire load, and SIGKILL the server at a random moment while it runs.
        let kill_after = Duration::from_millis(rand::rng().random_range(500..1300));
        let stop = Instant::now() + kill_after + Duration::from_millis(300);
        let pid = server.child.id();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        });
        load(&server, &installation, round, tally.clone(), stop).await;
        killer.await.unwrap();
        server.child.wait().unwrap();
        server = start(dir.path(), &database, round);
    }

    // A client retries what was never acknowledged; then every key is there exactly once.
    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        t.acked.len() > 100 && t.invokes_acked > 100,
        "the load ran: {} posts, {} invokes acknowledged",
        t.acked.len(),
        t.invokes_acked
    );
    let before_retry = usage_totals(&server, "").await;
    let partner_counted = before_retry.get("campaigns-monitored").copied().unwrap_or(0) as usize;
    assert!(
        partner_counted >= t.acked.len(),
        "acknowledged partner events lost: {partner_counted} < {}",
        t.acked.len()
    );
    assert!(partner_counted <= t.sent.len(), "more partner events than were sent");
    let invokes_counted = before_retry.get("pacing-check").copied().unwrap_or(0) as u64;
    assert!(invokes_counted >= t.invokes_acked, "acknowledged invokes lost: {invokes_counted} < {}", t.invokes_acked);
    assert!(
        invokes_counted <= t.invokes_sent,
        "an invoke was counted twice: {invokes_counted} > {} sent",
        t.invokes_sent
    );
    let unacked: Vec<&String> = t.sent.difference(&t.acked).collect();
    for chunk in unacked.chunks(200) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let records: Vec<Value> = chunk
            .iter()
            .map(|k| {
                json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": "campaigns-monitored",
            "quantity": 1, "timestampMs": now - 1000, "idempotencyKey": k})
            })
            .collect();
        let results = server.api.post_usage(&server.partner, "acme", Value::Array(records)).await;
        assert!(
            results.iter().all(|r| r.status == RecordStatus::Recorded || r.status == RecordStatus::Duplicate),
            "{results:?}"
        );
    }
    let after = usage_totals(&server, "").await;
    eprintln!(
        "crash suite: {} partner events sent ({} acknowledged before a kill or the end), {} invokes sent ({} acknowledged), {} counted",
        t.sent.len(),
        t.acked.len(),
        t.invokes_sent,
        t.invokes_acked,
        invokes_counted
    );
    assert_eq!(after["campaigns-monitored"] as usize, t.sent.len(), "every partner event exactly once after retries");
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_usage_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_suite(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_usage_on_postgresql() {
    crash_suite(common::fresh_postgres_database().await).await;
}
