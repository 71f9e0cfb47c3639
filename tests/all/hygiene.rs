//! Containment at the HTTP edge, on SQLite and PostgreSQL alike: text a backend cannot
//! store (U+0000) is a 422 naming the field on both and leaves every table as it was;
//! every rejection is a problem; numbers from callers never wrap (quantities, periods,
//! totals); a bad submitter never fails a good one that commits at the same time.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use kiosk::store::Principal;
use kiosk_api::usage::RecordResult;
use kiosk_api::usage::RecordStatus::{Recorded, Refused};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{PROBLEM_JSON, Reply, TestServer};

const OPERATOR: &str = "operator-token-for-the-hygiene-tests";
/// 2^53 − 1, the largest quantity (SPEC §7).
const MAX_QUANTITY: u64 = (1 << 53) - 1;

struct Env {
    s: TestServer,
    tenant: String,
    partner: String,
    pacing: String,
    hostile: String,
}

impl std::ops::Deref for Env {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

async fn env(database: Option<String>) -> Env {
    // No usage window completes during the test: the ledger holds only what the test sends.
    let toml = format!("[server]\noperator-token = \"{OPERATOR}\"\n[usage]\nwindow-seconds = 315360000\n");
    let demo_apps = vec![common::demo_app("budget-pacing"), common::demo_app("hostile-guest")];
    let s = TestServer::fresh_with(database, &toml, demo_apps).await;
    let store = s.store();
    let (_, tenant) = store.create_token(&Principal::Tenant("demo".into()), "test", "operator").await.unwrap();
    let (_, partner) = store.create_token(&Principal::Partner("acme".into()), "test", "operator").await.unwrap();
    let pacing = s.install(&tenant, "demo", json!({"app": "acme/budget-pacing", "config": {"apiKey": "k"}})).await.id;
    let hostile = s.install(&tenant, "demo", json!({"app": "test/hostile", "config": {}})).await.id;
    Env { s, tenant, partner, pacing, hostile }
}

impl Env {
    /// One request; every failure must be a problem, and say nothing of the database.
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let reply = self.s.send(Some(token), method, path, body).await;
        if !reply.status.is_success() {
            for leak in ["database", "sqlx", "invalid byte sequence", "0x00", "error returned from"] {
                assert!(!reply.text.contains(leak), "{path}: the answer leaks {leak:?}: {}", reply.text);
            }
        }
        (reply.status, reply.json())
    }

    /// Every table's row count, the ledger's included.
    async fn counts(&self) -> BTreeMap<String, i64> {
        use sqlx::Row as _;
        let store = self.store();
        let mut counts: BTreeMap<String, i64> =
            store.table_counts().await.unwrap().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_events").fetch_one(store.pool()).await.unwrap();
        counts.insert("usage_events".into(), row.get("n"));
        counts
    }

    /// `body` or the path/query holds U+0000: a 422 `invalid-text` naming `field`, and
    /// nothing written.
    async fn refused_as_nul(&self, token: &str, method: Method, path: &str, body: Option<Value>, field: &str) {
        let before = self.counts().await;
        let (status, problem) = self.call(token, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:kiosk:problem:invalid-text", "{method} {path}: {problem}");
        assert_eq!(problem["field"], field, "{method} {path}: {problem}");
        assert_eq!(self.counts().await, before, "{method} {path}: the database is unchanged");
    }

    async fn post_usage(&self, records: Value) -> Vec<RecordResult> {
        self.s.post_usage(&self.partner, "acme", records).await
    }

    async fn invoke(&self, installation: &str, operation: &str, input: Value) -> (StatusCode, Value) {
        let path = format!("/v1/tenants/demo/installations/{installation}/invoke/{operation}");
        self.call(&self.tenant, Method::POST, &path, Some(input)).await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn record(sku: &str, quantity: Value, key: &str) -> Value {
    json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": sku, "quantity": quantity,
           "timestampMs": now_ms() - 60_000, "idempotencyKey": key})
}

// --- text a backend cannot store -------------------------------------------------------

async fn text_suite(database: Option<String>) {
    let e = env(database).await;
    let (op, t, p) = (OPERATOR, e.tenant.as_str(), e.partner.as_str());
    let nul = "a\u{0}b";
    let inst = format!("/v1/tenants/demo/installations/{}", e.pacing);

    // JSON bodies: the pointer of the offending value, at any depth.
    e.refused_as_nul(op, Method::POST, "/v1/tenants", Some(json!({"id": "nul-t", "display": nul})), "/display").await;
    e.refused_as_nul(op, Method::POST, "/v1/partners", Some(json!({"name": "nul-p", "display": nul})), "/display")
        .await;
    let token = json!({"role": "tenant", "scope": "demo", "label": nul});
    e.refused_as_nul(op, Method::POST, "/v1/tokens", Some(token), "/label").await;
    let install = json!({"app": "acme/budget-pacing", "config": {"apiKey": nul}});
    e.refused_as_nul(t, Method::POST, "/v1/tenants/demo/installations", Some(install), "/config/apiKey").await;
    e.refused_as_nul(t, Method::PATCH, &inst, Some(json!({"config": {"apiKey": nul}})), "/config/apiKey").await;
    let input =
        json!({"campaignId": "c", "budget": 300, "flightDays": 30, "dailySpend": [10], "note": [1, {"x": nul}]});
    e.refused_as_nul(t, Method::POST, &format!("{inst}/invoke/evaluate"), Some(input), "/note/1/x").await;
    for (field, value) in [("idempotencyKey", nul), ("sku", nul), ("tenant", nul)] {
        let mut bad = record("rows-scanned", json!(1), "nul-record");
        bad[field] = json!(value);
        let batch = json!({"records": [record("rows-scanned", json!(1), "fine"), bad]});
        e.refused_as_nul(p, Method::POST, "/v1/partners/acme/usage", Some(batch), &format!("/records/1/{field}")).await;
    }
    // A member name holding U+0000 is named by its object; `~` and `/` are escaped.
    let batch = json!({"records": [{"ten\u{0}ant": "demo"}]});
    e.refused_as_nul(p, Method::POST, "/v1/partners/acme/usage", Some(batch), "/records/0").await;
    let odd = json!({"config": {"a/b~c": nul}});
    e.refused_as_nul(t, Method::PATCH, &inst, Some(odd), "/config/a~1b~0c").await;

    // Path segments and query values (percent-encoded U+0000), named by their parameter.
    e.refused_as_nul(op, Method::PUT, "/v1/registries/evil%00.example", Some(json!({})), "host").await;
    e.refused_as_nul(t, Method::GET, "/v1/tenants/demo/installations/x%00y", None, "id").await;
    e.refused_as_nul(t, Method::DELETE, "/v1/tenants/demo/installations/x%00y", None, "id").await;
    e.refused_as_nul(t, Method::GET, "/v1/tenants/demo/usage?granularity=hour%00", None, "granularity").await;
    e.refused_as_nul(t, Method::GET, "/v1/catalog/apps?q=pacing%00", None, "q").await;

    // The same fields without U+0000 are stored: the refusal was about the text only.
    let (s, b) = e.call(op, Method::POST, "/v1/tenants", Some(json!({"id": "nul-t", "display": "a b"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(e.post_usage(json!([record("rows-scanned", json!(1), "fine")])).await[0].status, Recorded);

    // Every other rejection of a path, query or body is a problem naming the parameter.
    let usage = "/v1/tenants/demo/usage";
    let bad_requests = [
        ("/v1/tenants/%FF/usage".to_string(), "invalid-path", "tenant"),
        (format!("{usage}?fromMs=soon"), "invalid-query", "fromMs"),
        (format!("{usage}?fromMs=99999999999999999999"), "invalid-query", "fromMs"),
        (format!("{usage}?zeros=maybe"), "invalid-query", "zeros"),
        (format!("{usage}?bogus=1"), "invalid-query", "bogus"),
        (format!("{usage}?granularity=day&granularity=hour"), "invalid-query", "granularity"),
    ];
    for (path, kind, field) in bad_requests {
        let (s, b) = e.call(t, Method::GET, &path, None).await;
        assert_eq!(
            (s, b["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(format!("urn:kiosk:problem:{kind}").as_str())),
            "{path}: {b}"
        );
        assert_eq!(b["field"], field, "{path}: {b}");
    }
    for (body, field) in [(json!({"id": 7}), "/id"), (json!({"id": "x", "bogus": 1}), "/bogus"), (json!({}), "/id")] {
        let (s, b) = e.call(op, Method::POST, "/v1/tenants", Some(body)).await;
        assert_eq!(
            (s, b["type"].as_str(), b["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("urn:kiosk:problem:malformed-json"), Some(field)),
            "{b}"
        );
    }
    let (s, b) = e.call(op, Method::GET, "/v1/no/such/route", None).await;
    assert_eq!((s, b["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:kiosk:problem:not-found")), "{b}");
    let (s, b) = e.call(op, Method::DELETE, "/v1/tenants", None).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("urn:kiosk:problem:method-not-allowed")),
        "{b}"
    );
    // A body over the limit is a problem too, whether announced or streamed.
    let big = format!("{{\"id\": \"big\", \"display\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let request = e.request(Some(op), Method::POST, "/v1/tenants").header("content-type", "application/json");
    let reply = Reply::of(request.body(big).send().await.unwrap()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.content_type(), PROBLEM_JSON);
    assert!(reply.text.contains("urn:kiosk:problem:body-too-large"));
}

#[tokio::test]
async fn text_on_sqlite() {
    text_suite(None).await;
}

#[tokio::test]
async fn text_on_postgresql() {
    text_suite(Some(common::fresh_postgres_database().await)).await;
}

// --- numbers that never wrap -------------------------------------------------------------

async fn numbers_suite(database: Option<String>) {
    let e = env(database).await;
    let t = e.tenant.as_str();

    // Quantities: 1..=2^53 − 1; over it, a reason naming the bound.
    let results = e
        .post_usage(json!([
            record("campaigns-monitored", json!(u64::MAX), "q-u64-max"),
            record("campaigns-monitored", json!(MAX_QUANTITY + 1), "q-2-53"),
            record("campaigns-monitored", json!(MAX_QUANTITY), "q-max-1"),
            record("campaigns-monitored", json!(MAX_QUANTITY), "q-max-2"),
            record("campaigns-monitored", json!(-1), "q-negative"),
            record("campaigns-monitored", json!(1e300), "q-float"),
        ]))
        .await;
    let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Refused, Refused, Recorded, Recorded, Refused, Refused], "{results:?}");
    for r in [&results[0], &results[1]] {
        assert!(r.reason.as_deref().unwrap().contains("at most 2^53 - 1 (9007199254740991)"), "{r:?}");
    }
    // Two of the largest quantity total exactly 2^54 − 2: no wrap, never negative.
    let report = e.usage(t, "/v1/tenants/demo/usage").await;
    assert_eq!(report.totals["campaigns-monitored"], u128::from(2 * MAX_QUANTITY), "{report:?}");
    let by_day = e.usage(t, "/v1/tenants/demo/usage?granularity=day").await;
    let sum: u64 = by_day
        .usage
        .iter()
        .filter(|r| r.sku == "campaigns-monitored")
        .map(|r| u64::try_from(r.quantity).unwrap())
        .sum();
    assert_eq!(sum, 18_014_398_509_481_982);
    // The guest can meter no more than a partner: `record-usage` refuses the quantity
    // (the guest turns that into its app error), nothing counts.
    let before = e.counts().await;
    let (s, b) = e.invoke(&e.hostile, "record", json!(u64::MAX)).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("urn:kiosk:problem:app-refused")),
        "{b}"
    );
    assert!(b["detail"].as_str().unwrap().contains("InvalidQuantity"), "{b}");
    assert_eq!(e.counts().await["usage_events"], before["usage_events"]);
    for _ in 0..2 {
        let (s, b) = e.invoke(&e.hostile, "record", json!(MAX_QUANTITY)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let csv = e
        .request(Some(t), Method::GET, "/v1/tenants/demo/usage?format=csv&granularity=day")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: u64 = csv
        .lines()
        .filter(|l| l.contains(",test/hostile,events,"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(events, 2 * MAX_QUANTITY, "{csv}");

    // Batches: at most MAX_BATCH_RECORDS records, else the whole request is refused
    // naming `records`; keys of 1..=200 bytes.
    let before = e.counts().await;
    let many: Vec<Value> = (0..=kiosk::server::MAX_BATCH_RECORDS)
        .map(|i| record("rows-scanned", json!(1), &format!("many-{i}")))
        .collect();
    let (s, b) = e.call(&e.partner, Method::POST, "/v1/partners/acme/usage", Some(json!({"records": many}))).await;
    assert_eq!((s, b["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("records")), "{b}");
    assert_eq!(b["type"], "urn:kiosk:problem:too-many-records");
    assert_eq!(e.counts().await, before, "a refused batch records nothing");
    let keys = e
        .post_usage(json!([
            record("rows-scanned", json!(1), &"k".repeat(201)),
            record("rows-scanned", json!(1), &"k".repeat(200)),
            record("rows-scanned", json!(1), ""),
        ]))
        .await;
    assert_eq!(keys[0].status, Refused);
    assert!(keys[0].reason.as_deref().unwrap().contains("1-200 bytes"), "{keys:?}");
    assert_eq!(keys[1].status, Recorded, "{keys:?}");
    assert_eq!(keys[2].status, Refused, "{keys:?}");
    let (s, _) = e.call(&e.partner, Method::POST, "/v1/partners/acme/usage", Some(json!({"records": []}))).await;
    assert_eq!(s, StatusCode::OK);

    // Reads: every parameter range-checked without overflow, a 422 naming the field.
    let now = now_ms();
    let huge = "?fromMs=-9000000000000000000&toMs=9000000000000000000&zeros=true";
    let cases: Vec<(String, &str)> = vec![
        (huge.into(), "fromMs"),
        ("?fromMs=0&toMs=9000000000000000000&zeros=true".into(), "toMs"),
        (format!("?fromMs={now}&toMs={now}"), "toMs"),
        (format!("?fromMs={now}&toMs={}", now - 1), "toMs"),
        ("?fromMs=0".into(), "fromMs"),
        (format!("?fromMs={}&toMs={now}", now - 401 * 86_400_000), "toMs"),
        (format!("?fromMs={}&toMs={now}&granularity=day", now - 3_660 * 86_400_000), "toMs"),
        ("?granularity=minute".into(), "granularity"),
        ("?format=xml".into(), "format"),
    ];
    // The server runs in this process: its resident memory must not grow with the
    // request (the unchecked span once made one GET grow a server from 52 MB to 1.6 GB).
    let rss_kib = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before_rss = rss_kib();
    for _ in 0..20 {
        let (s, _) = e.call(t, Method::GET, &format!("/v1/tenants/demo/usage{huge}"), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let grown = rss_kib().saturating_sub(before_rss);
    assert!(grown < 64 * 1024, "20 huge-range GETs grew the server by {grown} KiB");
    for (query, field) in cases {
        let (s, b) = e.call(t, Method::GET, &format!("/v1/tenants/demo/usage{query}"), None).await;
        assert_eq!((s, b["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(field)), "{query}: {b}");
        assert_eq!(b["type"], "urn:kiosk:problem:invalid-query", "{query}: {b}");
    }
    // The longest periods still answer, zeros included, and so does the end of time.
    let end = format!("?fromMs={}&toMs={}&zeros=true&granularity=day", i64::MAX - 10, i64::MAX);
    let b = e.usage(t, &format!("/v1/tenants/demo/usage{end}")).await;
    assert_eq!(b.usage.len(), 5, "{b:?}");
    let year = format!("?fromMs={}&toMs={now}&granularity=day&zeros=true", now - 3_650 * 86_400_000);
    let (s, b) = e.call(t, Method::GET, &format!("/v1/tenants/demo/usage{year}"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let hours = format!("?fromMs={}&toMs={now}&zeros=true", now - 400 * 86_400_000);
    let b = e.usage(t, &format!("/v1/tenants/demo/usage{hours}")).await;
    assert!(b.usage.len() >= 5 * 9_600, "5 subscribed SKUs x 9,600 hours");
    // Zero records are bounded: subscriptions x periods over 100,000 is refused.
    for tenant in ["z1", "z2", "z3"] {
        let (s, _) = e.call(OPERATOR, Method::POST, "/v1/tenants", Some(json!({"id": tenant}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, token) = e.store().create_token(&Principal::Tenant(tenant.into()), "z", "operator").await.unwrap();
        let body = json!({"app": "acme/budget-pacing", "config": {"apiKey": "k"}});
        let path = format!("/v1/tenants/{tenant}/installations");
        assert_eq!(e.call(&token, Method::POST, &path, Some(body)).await.0, StatusCode::CREATED);
    }
    let (s, b) = e.call(OPERATOR, Method::GET, &format!("/v1/usage{hours}"), None).await;
    assert_eq!((s, b["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("zeros")), "{b}");
    let (s, b) = e.call(OPERATOR, Method::GET, &format!("/v1/usage{year}"), None).await;
    assert_eq!(s, StatusCode::OK, "by day the same subscriptions fit: {}", b["detail"]);
    let b = e.usage(OPERATOR, &format!("/v1/usage?fromMs={}&toMs={now}", now - 3_600_000)).await;
    assert_eq!(b.totals["campaigns-monitored"], u128::from(2 * MAX_QUANTITY), "{b:?}");
}

#[tokio::test]
async fn numbers_on_sqlite() {
    // Measures the process's resident memory: alone, not beside the other suites.
    if common::alone("hygiene::numbers_on_sqlite") {
        return;
    }
    numbers_suite(None).await;
}

#[tokio::test]
async fn numbers_on_postgresql() {
    // Measures the process's resident memory: alone, not beside the other suites.
    if common::alone("hygiene::numbers_on_postgresql") {
        return;
    }
    numbers_suite(Some(common::fresh_postgres_database().await)).await;
}

// --- a bad submitter never fails a good one ----------------------------------------------

async fn concurrency_suite(database: Option<String>) {
    let e = env(database).await;
    let posts = (0..16).map(|i| {
        let e = &e;
        async move {
            let mut records: Vec<Value> =
                (0..5).map(|j| record("rows-scanned", json!(i * 10 + j + 1), &format!("good-{i}-{j}"))).collect();
            records.insert(1, record("rows-scanned", json!(u64::MAX), &format!("bad-max-{i}")));
            records.insert(3, record("rows-scanned", json!(MAX_QUANTITY + 1), &format!("bad-2-53-{i}")));
            records.push(record("rows-scanned", json!(1), &"k".repeat(201)));
            records.push(record("no-such-sku", json!(1), &format!("bad-sku-{i}")));
            let results = e.post_usage(Value::Array(records)).await;
            let statuses: Vec<_> = results.iter().map(|r| r.status).collect();
            assert_eq!(
                statuses,
                [Recorded, Refused, Recorded, Refused, Recorded, Recorded, Recorded, Refused, Refused],
                "post {i}: {results:?}"
            );
        }
    });
    let input = json!({"campaignId": "c", "budget": 300, "flightDays": 30, "dailySpend": [10, 10, 10]});
    let invokes = (0..24).map(|i| {
        let (e, input) = (&e, input.clone());
        async move {
            match i % 3 {
                // A guest metering more than 2^53 − 1: its own call fails, no other.
                0 => {
                    let (s, b) = e.invoke(&e.hostile, "record", json!(u64::MAX)).await;
                    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
                }
                1 => {
                    let (s, b) = e.invoke(&e.hostile, "record", json!(7)).await;
                    assert_eq!(s, StatusCode::OK, "{b}");
                }
                _ => {
                    let (s, b) = e.invoke(&e.pacing, "evaluate", input).await;
                    assert_eq!(s, StatusCode::OK, "{b}");
                }
            }
        }
    });
    // All at once: the ledger groups what queues up while a commit is in flight.
    tokio::join!(join_all(posts), join_all(invokes));
    let report = e.usage(&e.tenant, "/v1/tenants/demo/usage").await;
    let good: u128 = (0..16u128).flat_map(|i| (0..5u128).map(move |j| i * 10 + j + 1)).sum();
    assert_eq!(report.totals["rows-scanned"], good + 8 * 3, "{report:?}");
    assert_eq!(report.totals["pacing-check"], 8, "{report:?}");
    assert_eq!(report.totals["events"], 8 * 7, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_on_sqlite() {
    concurrency_suite(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_on_postgresql() {
    concurrency_suite(Some(common::fresh_postgres_database().await)).await;
}
