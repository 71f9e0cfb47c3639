//! Usage pushed to a billing system (issue 29): real `kiosk serve` processes push the
//! ledger to a local CloudEvents receiver over HTTPS (its certificate from rcgen, trusted
//! through the sink's `ca-file`, its name mapped to loopback by `[egress] resolve`).
//! The receiver fails, refuses and answers late; events of an unmapped SKU are parked
//! with their reason and sent after the mapping is fixed and the operator re-drives
//! them; the servers are killed with SIGKILL in the middle of a push and restarted. In
//! the end the receiver holds every event of the ledger exactly once by its id, each
//! resend identical to the first, on SQLite and on PostgreSQL with two replicas.

mod api;
mod kinds;
mod receiver;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::Api;

const OPERATOR: &str = "op-export-test-token-0123456789";
const SECRETS_KEY: &str = "5b1c0e7a5b1c0e7a5b1c0e7a5b1c0e7a5b1c0e7a5b1c0e7a5b1c0e7a5b1c0e7a";
const SIGNING_KEY: &str = "whsec-kiosk-export-test-0123456789";
const SINK: &str = "billing";

struct Replica {
    child: Child,
    api: Api,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The operator config of every replica of a round; `campaigns` maps the SKU
/// `campaigns-monitored` (round 1 leaves it unmapped).
fn config(dir: &Path, name: &str, database: &str, rx_port: u16, campaigns: bool) -> std::path::PathBuf {
    let sink = format!(
        "kind = \"cloudevents\"\nendpoint = \"https://billing.test:{rx_port}/api/v1/events\"\nbatch = 25\n\
         secret-file = \"{}\"\n",
        dir.join("signing-key").display()
    );
    config_of(dir, name, database, &sink, campaigns, 315_360_000)
}

/// The operator config of a replica whose sink is `sink` (its kind, endpoint and key), with
/// usage windows (the report source) of `window` seconds.
fn config_of(dir: &Path, name: &str, database: &str, sink: &str, campaigns: bool, window: u64) -> std::path::PathBuf {
    let port = common::registry::free_port();
    let path = dir.join(format!("{name}.toml"));
    let campaigns_rule =
        if campaigns { "[[sinks.meters]]\nsku = \"campaigns-monitored\"\nmeter = \"campaigns\"\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            r#"data-dir = "{data}"
[server]
listen = "127.0.0.1:{port}"
database = "{database}"
operator-token = "{OPERATOR}"
secrets-key = "{SECRETS_KEY}"

[usage]
window-seconds = {window}

[egress.resolve]
"billing.test" = ["127.0.0.1"]

[[sinks]]
name = "{SINK}"
{sink}private-addresses = true
ca-file = "{ca}"
start = "beginning"
timeout-seconds = 2

[sinks.customers]
demo = "cus_demo"

[[sinks.meters]]
sku = "pacing-check"
meter = "checks"

[[sinks.meters]]
app = "acme/budget-pacing"
sku = "rows-scanned"
meter = "rows"

{campaigns_rule}"#,
            data = dir.join(name).display(),
            ca = dir.join("billing-ca.pem").display(),
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, name: &str, config: &Path, demo: bool) -> (Replica, String) {
    let demo_app = common::demo_app("budget-pacing");
    let mut args = vec!["--config", config.to_str().unwrap()];
    if demo {
        args.extend(["--demo-app", demo_app.as_str()]);
    }
    let (child, text) = common::spawn_serve(&args, &[], &dir.join(format!("{name}.log")));
    let listen = std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"").map(|r| r.trim_end_matches('"').to_string()))
        .unwrap();
    (Replica { child, api: Api::new(format!("http://{listen}")) }, text)
}

/// Polls `check` until it holds; fails naming `what` after 90 s (a bound on a hang, not a
/// speed claim: the retries' backoff and a dead replica's lease take tens of seconds).
async fn eventually<F: AsyncFn() -> Option<String>>(what: &str, check: F) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let Some(why_not) = check().await else { return };
        assert!(Instant::now() < deadline, "{what} did not happen: {why_not}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every event of the ledger: (source, id) as the receiver keys them, and SKU.
async fn ledger(store: &kiosk::store::Store) -> Vec<((String, String), String, i64)> {
    let events = store.usage_after(0, 1_000_000).await.unwrap();
    events
        .iter()
        .map(|e| {
            let key = (format!("kiosk/installations/{}", e.installation), kiosk_core::export::wire::event_id(e));
            (key, e.sku.clone(), e.quantity)
        })
        .collect()
}

async fn sink(api: &Api) -> Value {
    let (status, body) = api.call(Some(OPERATOR), Method::GET, &format!("/v1/sinks/{SINK}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn load(api: &Api, tenant: &str, partner: &str, installation: &str, round: usize, quantities: &[i64]) {
    for i in 0..12 {
        let input =
            json!({"campaignId": format!("c{round}-{i}"), "budget": 300, "flightDays": 30, "dailySpend": [10, 12]});
        let path = format!("/v1/tenants/demo/installations/{installation}/invoke/evaluate");
        let (status, body) = api.call(Some(tenant), Method::POST, &path, Some(input)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records: Vec<Value> = quantities
        .iter()
        .enumerate()
        .map(|(i, q)| {
            json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": "campaigns-monitored", "quantity": q,
                   "timestampMs": now - 1000, "idempotencyKey": format!("r{round}-{i}")})
        })
        .collect();
    let results = api.post_usage(partner, "acme", Value::Array(records)).await;
    assert!(results.iter().all(|r| r.status == kiosk_api::usage::RecordStatus::Recorded), "{results:?}");
}

async fn export_suite(database: String, replicas: usize) {
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver::start("billing.test", SIGNING_KEY.as_bytes()).await;
    std::fs::write(dir.path().join("billing-ca.pem"), &rx.ca_pem).unwrap();
    std::fs::write(dir.path().join("signing-key"), format!("{SIGNING_KEY}\n")).unwrap();
    let inbox = rx.inbox.clone();
    // The receiver is down for the first two requests: retried, nothing lost.
    inbox.fail_next.store(2, Ordering::SeqCst);

    // Round 1: campaigns-monitored has no meter: its events are parked, the rest sent.
    let names: Vec<String> = (0..replicas).map(|r| format!("r1-{r}")).collect();
    let mut round1 = Vec::new();
    let mut tokens = (String::new(), String::new());
    for (i, name) in names.iter().enumerate() {
        let cfg = config(dir.path(), name, &database, rx.port, false);
        let (replica, text) = start(dir.path(), name, &cfg, i == 0);
        if i == 0 {
            tokens = (common::demo_token(&text, "TENANT_TOKEN"), common::demo_token(&text, "PARTNER_TOKEN"));
        }
        round1.push(replica);
    }
    let (tenant, partner) = tokens;
    let store = kiosk::store::Store::connect(&database).await.unwrap();
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let installation = round1[0].api.install(&tenant, "demo", install).await.id;
    load(&round1[0].api, &tenant, &partner, &installation, 1, &[1, 1, 7, 2, 7, 3]).await;
    let mapped = |events: &[((String, String), String, i64)]| -> BTreeSet<(String, String)> {
        events.iter().filter(|(_, sku, _)| sku != "campaigns-monitored").map(|(k, _, _)| k.clone()).collect()
    };
    let api = &round1[replicas - 1].api;
    eventually("round 1: every mapped event delivered and the unmapped ones parked", async || {
        let expected = mapped(&ledger(&store).await);
        let held: BTreeSet<_> = inbox.events.lock().unwrap().keys().cloned().collect();
        let state = sink(api).await;
        (held != expected || state["parked"] != 6)
            .then(|| format!("{} of {} held; sink {state}", held.len(), expected.len()))
    })
    .await;
    assert_eq!(inbox.failed.load(Ordering::SeqCst), 2, "the receiver's failures were retried");
    let (status, parked) =
        api.call(Some(OPERATOR), Method::GET, &format!("/v1/sinks/{SINK}/parked?limit=4"), None).await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    assert_eq!(parked["items"].as_array().unwrap().len(), 4, "{parked}");
    assert!(parked["next"].is_string(), "a page: {parked}");
    let reason = parked["items"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("\"campaigns-monitored\"") && reason.contains("no meter"), "{reason}");

    // SIGKILL in the middle of a push: the receiver takes the batch but its answer never
    // reaches a living replica, so the cursor stays and the batch is sent again.
    inbox.delay_ms.store(1_500, Ordering::SeqCst);
    let before = inbox.requests.load(Ordering::SeqCst);
    load(&round1[0].api, &tenant, &partner, &installation, 2, &[1]).await;
    eventually("a push in flight", async || {
        (inbox.requests.load(Ordering::SeqCst) == before).then(|| "no request yet".to_string())
    })
    .await;
    for mut replica in round1 {
        replica.child.kill().unwrap();
        replica.child.wait().unwrap();
    }
    inbox.delay_ms.store(0, Ordering::SeqCst);
    inbox.refuse_quantity.store(7, Ordering::SeqCst);

    // Round 2: the mapping fixed; the operator re-drives the parked events. The two of
    // quantity 7 are refused by the receiver (400): parked again, with that reason.
    let mut round2 = Vec::new();
    for r in 0..replicas {
        let name = format!("r2-{r}");
        let cfg = config(dir.path(), &name, &database, rx.port, true);
        round2.push(start(dir.path(), &name, &cfg, false).0);
    }
    let api = &round2[0].api;
    let (status, body) = api.call(Some(OPERATOR), Method::POST, &format!("/v1/sinks/{SINK}/redrive"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["redriven"], 6, "{body}");
    eventually("round 2: all but the refused events delivered", async || {
        let all = ledger(&store).await;
        let expected: BTreeSet<_> = all.iter().filter(|(_, _, q)| *q != 7).map(|(k, _, _)| k.clone()).collect();
        let held: BTreeSet<_> = inbox.events.lock().unwrap().keys().cloned().collect();
        let state = sink(api).await;
        (held != expected || state["parked"] != 2)
            .then(|| format!("{} of {} held; sink {state}", held.len(), expected.len()))
    })
    .await;
    let (_, parked) = api.call(Some(OPERATOR), Method::GET, &format!("/v1/sinks/{SINK}/parked"), None).await;
    for item in parked["items"].as_array().unwrap() {
        assert_eq!(item["quantity"], 7, "{parked}");
        assert_eq!(item["reason"], "the receiver refused it (HTTP 400)", "{parked}");
    }
    inbox.refuse_quantity.store(0, Ordering::SeqCst);
    let (status, _) = api.call(Some(OPERATOR), Method::POST, &format!("/v1/sinks/{SINK}/redrive"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("every event of the ledger delivered, nothing parked", async || {
        let expected: BTreeSet<_> = ledger(&store).await.into_iter().map(|(k, _, _)| k).collect();
        let held: BTreeSet<_> = inbox.events.lock().unwrap().keys().cloned().collect();
        let state = sink(api).await;
        (held != expected || state["parked"] != 0 || state["lagSeconds"] != 0.0)
            .then(|| format!("{} of {} held; sink {state}", held.len(), expected.len()))
    })
    .await;

    // Exactly once by id: resends (after the kill) were identical; every event names
    // the customer and meter of the mapping; every body was signed.
    assert!(inbox.duplicates.load(Ordering::SeqCst) > 0, "the batch in flight at the kill was sent again");
    assert_eq!(inbox.changed.load(Ordering::SeqCst), 0, "a resend differed from the first");
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);
    for event in inbox.events.lock().unwrap().values() {
        assert_eq!(event["subject"], "cus_demo", "{event}");
        let meter = match event["data"]["sku"].as_str().unwrap() {
            "pacing-check" => "checks",
            "rows-scanned" => "rows",
            _ => "campaigns",
        };
        assert_eq!(event["data"]["meter"], meter, "{event}");
    }

    // A replay from the beginning sends everything again, under the same ids.
    let total = inbox.events.lock().unwrap().len();
    let duplicates = inbox.duplicates.load(Ordering::SeqCst);
    let (status, body) =
        api.call(Some(OPERATOR), Method::POST, &format!("/v1/sinks/{SINK}/replay"), Some(json!({"fromMs": 0}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("the replay", async || {
        let again = inbox.duplicates.load(Ordering::SeqCst) - duplicates;
        (again < total).then(|| format!("{again} of {total} sent again"))
    })
    .await;
    assert_eq!(inbox.events.lock().unwrap().len(), total, "a replay adds no event");
    let (status, problem) = api.call(Some(OPERATOR), Method::GET, "/v1/sinks/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_a_cloudevents_receiver_exactly_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("export.db").display());
    export_suite(url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_a_cloudevents_receiver_exactly_once_with_two_replicas_on_postgresql() {
    export_suite(common::fresh_postgres_database().await, 2).await;
}
