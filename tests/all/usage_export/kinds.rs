//! The other kinds of sink against their local receivers (`receiver.rs`): Stripe's meter
//! events, AWS Marketplace's `BatchMeterUsage` (aggregates of one second here, so the
//! test need not wait for an hour to end) and Kiosk's webhook. Usage comes from all four
//! sources: the host and the guest during calls, the partner's API and the app's usage
//! report (windows of 3 s, until the installation is uninstalled). For each: the receiver
//! fails first; an unmapped SKU is parked and sent after the mapping is fixed and the
//! operator re-drives it; the receiver refuses (Stripe, webhook: a 400; AWS: a customer
//! not subscribed); Kiosk is killed with SIGKILL while a request is in flight and
//! restarted. In the end the receiver holds everything exactly once by the key it
//! deduplicates on, and no resend differed from the first.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use reqwest::{Method, StatusCode};

use super::receiver::{self, Inbox};
use super::{OPERATOR, SINK, config_of, eventually, load, sink, start};
use crate::common;

const STRIPE_KEY: &str = "sk_test_kiosk_0123456789abcdef";
/// The usage report's window: reports arrive while the test runs, between them quiet.
const WINDOW_SECONDS: u64 = 3;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Stripe,
    Aws,
    Webhook,
}

/// The sink's lines of the config for `kind`.
fn sink_lines(kind: Kind, dir: &std::path::Path, port: u16) -> String {
    let key = dir.join("signing-key").display().to_string();
    match kind {
        Kind::Stripe => format!(
            "kind = \"stripe\"\nendpoint = \"https://billing.test:{port}/v1/billing/meter_events\"\n\
             secret-file = \"{key}\"\n"
        ),
        Kind::Aws => format!(
            "kind = \"aws-marketplace\"\nendpoint = \"https://billing.test:{port}/\"\nsecret-file = \"{key}\"\n\
             product-code = \"kioskprod1\"\naggregate-seconds = 1\nsettle-seconds = 0\n"
        ),
        Kind::Webhook => format!(
            "kind = \"webhook\"\nendpoint = \"https://billing.test:{port}/hooks/usage\"\nsecret-file = \"{key}\"\n"
        ),
    }
}

/// The meter of a SKU in every round's mapping (`campaigns-monitored` only from round 2).
fn meter(sku: &str) -> &'static str {
    match sku {
        "pacing-check" => "checks",
        "rows-scanned" => "rows",
        _ => "campaigns",
    }
}

/// What the receiver holds, as the ledger says it must: per-event kinds by id (each
/// event's quantity), AWS by meter (the sum over its hours).
fn held(kind: Kind, inbox: &Inbox) -> BTreeMap<String, i64> {
    let events = inbox.events.lock().unwrap();
    let mut held = BTreeMap::new();
    for ((_, key), body) in events.iter() {
        match kind {
            Kind::Stripe => {
                assert_eq!(body["payload[stripe_customer_id]"], "cus_demo", "{body}");
                let quantity: i64 = body["payload[value]"].as_str().unwrap().parse().unwrap();
                held.insert(format!("{}/{key}", body["event_name"].as_str().unwrap()), quantity);
            }
            Kind::Webhook => {
                assert_eq!(body["customer"], "cus_demo", "{body}");
                held.insert(format!("{}/{key}", body["meter"].as_str().unwrap()), body["quantity"].as_i64().unwrap());
            }
            Kind::Aws => {
                assert_eq!(body["CustomerIdentifier"], "cus_demo", "{body}");
                *held.entry(body["Dimension"].as_str().unwrap().to_string()).or_insert(0) +=
                    body["Quantity"].as_i64().unwrap();
            }
        }
    }
    held
}

async fn expected(kind: Kind, store: &kiosk::store::Store, only: impl Fn(&str, i64) -> bool) -> BTreeMap<String, i64> {
    let mut expected = BTreeMap::new();
    for e in store.usage_after(0, 1_000_000).await.unwrap() {
        if !only(&e.sku, e.quantity) {
            continue;
        }
        match kind {
            Kind::Aws => *expected.entry(meter(&e.sku).to_string()).or_insert(0) += e.quantity,
            _ => {
                expected.insert(format!("{}/{}", meter(&e.sku), kiosk_core::export::wire::event_id(&e)), e.quantity);
            }
        }
    }
    expected
}

async fn kind_suite(kind: Kind, database: String, replicas: usize) {
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver::start("billing.test", STRIPE_KEY.as_bytes()).await;
    std::fs::write(dir.path().join("billing-ca.pem"), &rx.ca_pem).unwrap();
    std::fs::write(dir.path().join("signing-key"), format!("{STRIPE_KEY}\n")).unwrap();
    let inbox = rx.inbox.clone();
    inbox.fail_next.store(2, Ordering::SeqCst);
    let lines = sink_lines(kind, dir.path(), rx.port);

    // Round 1: campaigns-monitored has no meter: parked, the rest sent.
    let mut round1 = Vec::new();
    let mut tokens = (String::new(), String::new());
    for r in 0..replicas {
        let name = format!("r1-{r}");
        let cfg = config_of(dir.path(), &name, &database, &lines, false, WINDOW_SECONDS);
        let (replica, text) = start(dir.path(), &name, &cfg, r == 0);
        if r == 0 {
            tokens = (common::demo_token(&text, "TENANT_TOKEN"), common::demo_token(&text, "PARTNER_TOKEN"));
        }
        round1.push(replica);
    }
    let (tenant, partner) = tokens;
    let store = kiosk::store::Store::connect(&database).await.unwrap();
    let install = serde_json::json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let installation = round1[0].api.install(&tenant, "demo", install).await.id;
    load(&round1[0].api, &tenant, &partner, &installation, 1, &[1, 1, 7, 2, 7, 3]).await;
    let api = &round1[replicas - 1].api;
    let mapped = |sku: &str, _: i64| sku != "campaigns-monitored";
    eventually("round 1: the mapped usage delivered, the unmapped parked", async || {
        let (want, have) = (expected(kind, &store, mapped).await, held(kind, &inbox));
        let state = sink(api).await;
        (want != have || state["parked"].as_i64() < Some(6)).then(|| format!("{have:?} of {want:?}; sink {state}"))
    })
    .await;
    assert_eq!(inbox.failed.load(Ordering::SeqCst), 2, "the receiver's failures were retried");

    // The receiver refuses: Stripe and the webhook answer 400 to everything, AWS answers
    // CustomerNotSubscribed for a while. What it refused is parked with its reason.
    let refusal = if kind == Kind::Aws {
        inbox.unsubscribed.lock().unwrap().insert("cus_demo".into());
        "the receiver answered CustomerNotSubscribed"
    } else {
        inbox.refuse_all.store(true, Ordering::SeqCst);
        "the receiver refused it (HTTP 400)"
    };
    load(&round1[0].api, &tenant, &partner, &installation, 2, &[7]).await;
    eventually("the refused usage parked", async || {
        let (_, parked) = api.call(Some(OPERATOR), Method::GET, &format!("/v1/sinks/{SINK}/parked"), None).await;
        let refused = parked["items"].as_array().unwrap().iter().filter(|p| p["reason"] == refusal).count();
        (refused == 0).then(|| format!("{parked}"))
    })
    .await;
    inbox.unsubscribed.lock().unwrap().clear();
    inbox.refuse_all.store(false, Ordering::SeqCst);

    // SIGKILL while a request is in flight: the receiver took it, its answer reaches
    // nobody, and the restarted replicas send it again under the same key.
    inbox.delay_ms.store(1_500, Ordering::SeqCst);
    let before = inbox.requests.load(Ordering::SeqCst);
    load(&round1[0].api, &tenant, &partner, &installation, 3, &[4]).await;
    eventually("a push in flight", async || {
        (inbox.requests.load(Ordering::SeqCst) == before).then(|| "no request yet".to_string())
    })
    .await;
    for mut replica in round1 {
        replica.child.kill().unwrap();
        replica.child.wait().unwrap();
    }
    inbox.delay_ms.store(0, Ordering::SeqCst);

    // Round 2: the mapping fixed, the parked usage re-driven: everything arrives.
    let mut round2 = Vec::new();
    for r in 0..replicas {
        let name = format!("r2-{r}");
        let cfg = config_of(dir.path(), &name, &database, &lines, true, WINDOW_SECONDS);
        round2.push(start(dir.path(), &name, &cfg, false).0);
    }
    let api = &round2[0].api;
    let (status, body) = api.call(Some(OPERATOR), Method::POST, &format!("/v1/sinks/{SINK}/redrive"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["redriven"].as_i64().unwrap() > 6, "the unmapped and the refused: {body}");
    // The ledger stops growing: no installation, no report.
    let path = format!("/v1/tenants/demo/installations/{installation}");
    let (status, body) = api.call(Some(&tenant), Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    eventually("every event of the ledger delivered, nothing parked", async || {
        let (want, have) = (expected(kind, &store, |_, _| true).await, held(kind, &inbox));
        let state = sink(api).await;
        (want != have || state["parked"] != 0 || state["lagSeconds"] != 0.0)
            .then(|| format!("{have:?} of {want:?}; sink {state}"))
    })
    .await;
    let sources: std::collections::BTreeSet<String> =
        store.usage_after(0, 1_000_000).await.unwrap().into_iter().map(|e| e.source).collect();
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["guest", "host", "partner", "report"], "all four sources");
    assert!(inbox.duplicates.load(Ordering::SeqCst) > 0, "the request in flight at the kill was sent again");
    assert_eq!(inbox.changed.load(Ordering::SeqCst), 0, "a resend differed from the first (AWS: DuplicateRecord)");
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0, "every request was authenticated");
    let state = sink(api).await;
    assert_eq!(state["lagging"], false, "{state}");
    if kind == Kind::Aws {
        assert_eq!((state["aggregateSeconds"].as_i64(), state["batch"].as_i64()), (Some(1), Some(25)), "{state}");
        assert!(state["nextPeriodMs"].as_i64().unwrap() > 0, "{state}");
    }

    // SIGTERM: each replica gives its lease back as it stops, so another replica (or the
    // next start) takes the sink over at once rather than after the lease.
    for mut replica in round2 {
        let pid = replica.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        assert!(replica.child.wait().unwrap().success(), "a clean stop");
    }
    let lease: i64 = sqlx::query_scalar("SELECT lease_until FROM sink_cursors WHERE sink = $1")
        .bind(SINK)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(lease, 0, "the lease was given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_stripe_meter_events_exactly_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kind_suite(Kind::Stripe, format!("sqlite://{}", dir.path().join("k.db").display()), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_aws_batch_meter_usage_in_aggregates_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kind_suite(Kind::Aws, format!("sqlite://{}", dir.path().join("k.db").display()), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_aws_batch_meter_usage_with_two_replicas_on_postgresql() {
    kind_suite(Kind::Aws, common::fresh_postgres_database().await, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_a_webhook_exactly_once_with_two_replicas_on_postgresql() {
    kind_suite(Kind::Webhook, common::fresh_postgres_database().await, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_stripe_meter_events_with_two_replicas_on_postgresql() {
    kind_suite(Kind::Stripe, common::fresh_postgres_database().await, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_a_webhook_exactly_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kind_suite(Kind::Webhook, format!("sqlite://{}", dir.path().join("k.db").display()), 1).await;
}
