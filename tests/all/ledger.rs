//! The metering ledger through the API, on SQLite and PostgreSQL: usage durable before
//! the answer, partner batches idempotent per record, each refusal with its own reason,
//! and hour buckets that split exactly at the hour.

use std::collections::BTreeMap;

use kiosk::store::Principal;
use kiosk_api::usage::RecordStatus;
use kiosk_api::usage::{RecordResult, UsageReport};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common;
use crate::common::api::TestServer;

struct Setup {
    s: TestServer,
    tenant: String,
    partner: String,
    installation: String,
}

impl std::ops::Deref for Setup {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.s
    }
}

async fn setup(database: Option<String>) -> Setup {
    // No usage window completes during the test: its totals count invokes and posts only.
    let toml = "[usage]\nwindow-seconds = 315360000\n";
    let s = TestServer::fresh_with(database, toml, vec![common::demo_app("budget-pacing")]).await;
    let store = s.store();
    let (_, tenant) = store.create_token(&Principal::Tenant("demo".into()), "test", "operator").await.unwrap();
    let (_, partner) = store.create_token(&Principal::Partner("acme".into()), "test", "operator").await.unwrap();
    let install = json!({"app": "acme/budget-pacing", "version": "1.4.34", "config": {"apiKey": "k"}});
    let installation = s.install(&tenant, "demo", install).await.id;
    Setup { s, tenant, partner, installation }
}

impl Setup {
    async fn post_usage(&self, records: Value) -> Vec<RecordResult> {
        self.s.post_usage(&self.partner, "acme", records).await
    }

    async fn tenant_usage(&self, query: &str) -> UsageReport {
        self.usage(&self.tenant, &format!("/v1/tenants/demo/usage{query}")).await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn ledger_suite(database: Option<String>) {
    let s = setup(database).await;

    // An invoke's usage is in the ledger when its answer arrives.
    let input = json!({"campaignId": "c", "budget": 300, "flightDays": 30, "dailySpend": [10, 10]});
    let (status, body) = s.invoke(&s.tenant, "demo", &s.installation, "evaluate", input).await;
    assert_eq!(status, 200, "{body}");
    let totals = s.tenant_usage("").await.totals;
    assert_eq!(totals, BTreeMap::from([("pacing-check".to_string(), 1), ("rows-scanned".to_string(), 2)]));

    // A partner batch: recorded once; the replay is a duplicate; another quantity conflicts.
    let t = now_ms() - 60_000;
    let record = |key: &str, qty: Value| json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": qty, "timestampMs": t, "idempotencyKey": key});
    let first = s.post_usage(json!([record("batch-1", json!(1000)), record("batch-2", json!(500))])).await;
    assert_eq!(first.iter().map(|r| r.status).collect::<Vec<_>>(), [RecordStatus::Recorded, RecordStatus::Recorded]);
    let replay = s.post_usage(json!([record("batch-1", json!(1000)), record("batch-2", json!(7))])).await;
    assert_eq!(replay[0].status, RecordStatus::Duplicate);
    assert_eq!(replay[1].status, RecordStatus::Conflict);
    assert!(replay[1].reason.as_deref().unwrap().contains("quantity 500"), "{replay:?}");
    let totals = s.tenant_usage("").await.totals;
    assert_eq!(totals["rows-scanned"], 2 + 1000 + 500, "the replay counted once, the conflict not at all");

    // Each refused record says why, per record.
    let refused = s
        .post_usage(json!([
            {"tenant": "demo", "app": "acme/budget-pacing", "sku": "no-such-sku", "quantity": 1, "timestampMs": t, "idempotencyKey": "r1"},
            {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 1, "timestampMs": now_ms() + 3_600_000, "idempotencyKey": "r2"},
            {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 1, "timestampMs": now_ms() - 30 * 86_400_000i64, "idempotencyKey": "r3"},
            {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 0, "timestampMs": t, "idempotencyKey": "r4"},
            {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 1.5, "timestampMs": t, "idempotencyKey": "r5"},
            {"tenant": "nobody", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 1, "timestampMs": t, "idempotencyKey": "r6"},
            {"tenant": "demo", "app": "globex/other", "sku": "rows-scanned", "quantity": 1, "timestampMs": t, "idempotencyKey": "r7"},
            record("good-one", json!(3)),
        ]))
        .await;
    let reasons: Vec<String> = refused.iter().map(|r| r.reason.clone().unwrap_or_default()).collect();
    assert!(reasons[0].contains(r#"SKU "no-such-sku" is not declared by acme/budget-pacing@1.4.34"#), "{reasons:?}");
    assert!(reasons[1].contains("more than 5 minutes in the future"), "{reasons:?}");
    assert!(reasons[2].contains("older than the acceptance window of 72 hours"), "{reasons:?}");
    assert!(reasons[3].contains("positive integer") && reasons[4].contains("positive integer"), "{reasons:?}");
    assert!(reasons[5].contains("tenant nobody has no installation"), "{reasons:?}");
    assert!(reasons[6].contains("not an app of partner acme"), "{reasons:?}");
    assert_eq!(refused[7].status, RecordStatus::Recorded, "the good record of a mixed batch is recorded");

    // 10:59:59.999 and 11:00:00.000 land in different hours.
    let hour = (now_ms() - 2 * 3_600_000) / 3_600_000 * 3_600_000;
    let edge = |key: &str, at: i64| json!({"tenant": "demo", "app": "acme/budget-pacing", "sku": "pacing-check", "quantity": 1, "timestampMs": at, "idempotencyKey": key});
    s.post_usage(json!([edge("edge-before", hour - 1), edge("edge-at", hour)])).await;
    let report =
        s.tenant_usage(&format!("?fromMs={}&toMs={}&granularity=hour", hour - 3_600_000, hour + 3_600_000)).await;
    let rows: Vec<(i64, u128)> =
        report.usage.iter().filter(|r| r.sku == "pacing-check").map(|r| (r.period_start_ms, r.quantity)).collect();
    assert_eq!(rows, [(hour - 3_600_000, 1), (hour, 1)]);

    // Exports: ids are UUIDv5 of (tenant, app, SKU, hour), the same in every export; CSV
    // carries the same records; zeros fill a subscribed tenant's idle hours.
    let q = format!("?fromMs={}&toMs={}&granularity=hour", hour - 3_600_000, hour + 3_600_000);
    let (a, b) = (s.tenant_usage(&q).await, s.tenant_usage(&q).await);
    assert_eq!(serde_json::to_value(&a.usage).unwrap(), serde_json::to_value(&b.usage).unwrap());
    let expected = kiosk::server::export_id("demo", "acme/budget-pacing", "pacing-check", hour).to_string();
    assert!(a.usage.iter().any(|r| r.id == expected && r.period_start_ms == hour), "{a:?}");
    let csv = s
        .request(Some(&s.tenant), Method::GET, &format!("/v1/tenants/demo/usage{q}&format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // RFC 4180: CRLF after every record.
    assert!(csv.starts_with("id,period_start_ms,tenant,app,sku,quantity\r\n"), "{csv}");
    assert!(csv.contains(&format!("{expected},{hour},demo,acme/budget-pacing,pacing-check,1\r\n")), "{csv}");
    assert_eq!(csv.lines().count(), 1 + a.usage.len());
    let zeros = s.tenant_usage(&format!("{q}&zeros=true")).await;
    let idle: Vec<_> = zeros.usage.iter().filter(|r| r.sku == "campaigns-monitored").collect();
    assert_eq!(idle.len(), 2, "one zero record per idle hour of a declared SKU: {zeros:?}");
    assert!(idle.iter().all(|r| r.quantity == 0));

    // After an uninstall, usage from while it was installed is still accepted; usage
    // from after is refused.
    let path = format!("/v1/tenants/demo/installations/{}", s.installation);
    assert_eq!(s.call(Some(&s.tenant), Method::DELETE, &path, None).await.0, 204);
    let late = s
        .post_usage(json!([record("late-but-in-time", json!(4)), {"tenant": "demo", "app": "acme/budget-pacing",
        "sku": "rows-scanned", "quantity": 1, "timestampMs": now_ms() + 1000, "idempotencyKey": "after-uninstall"}]))
        .await;
    assert_eq!(late[0].status, RecordStatus::Recorded, "{late:?}");
    assert!(
        late[1].reason.as_deref().unwrap().contains("no installation of acme/budget-pacing at that time"),
        "{late:?}"
    );

    // The partner reads its apps' usage; the operator reads everything.
    let partner_view = s.usage(&s.partner, "/v1/partners/acme/usage").await;
    assert_eq!(partner_view.totals["rows-scanned"], 2 + 1000 + 500 + 3 + 4, "{partner_view:?}");
}

#[tokio::test]
async fn ledger_on_sqlite() {
    ledger_suite(None).await;
}

#[tokio::test]
async fn ledger_on_postgresql() {
    ledger_suite(Some(common::fresh_postgres_database().await)).await;
}

// --- the ledger itself: refusals and isolation -----------------------------------------

use kiosk::ledger::{Ledger, MAX_KEY_BYTES, MAX_QUANTITY, Recorded, Refusal};
use kiosk::metering::{UsageEvent, UsageSource};
use kiosk::store::Store;

async fn store(database: Option<String>, dir: &std::path::Path) -> Store {
    let url = database.unwrap_or_else(|| format!("sqlite://{}", dir.join("ledger.db").display()));
    Store::connect(&url).await.unwrap()
}

fn event(key: &str, sku: &str, quantity: u64) -> UsageEvent {
    UsageEvent {
        tenant: "t".into(),
        installation: "i".into(),
        app: "acme/app".into(),
        version: "1.0.0".into(),
        sku: sku.into(),
        quantity,
        at_ms: now_ms() as u64,
        source: UsageSource::Partner,
        idempotency_key: key.into(),
    }
}

/// (idempotency key, quantity) of every stored event.
async fn stored(store: &Store) -> Vec<(String, i64)> {
    use sqlx::Row as _;
    let rows = sqlx::query("SELECT idem_key, quantity FROM usage_events").fetch_all(store.pool()).await.unwrap();
    let mut events: Vec<(String, i64)> = rows.iter().map(|r| (r.get("idem_key"), r.get("quantity"))).collect();
    events.sort();
    events
}

async fn refusals_suite(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(database, dir.path()).await;
    let ledger = Ledger::start(store.clone());
    let with = |edit: fn(&mut UsageEvent)| {
        let mut e = event("edited", "s", 1);
        edit(&mut e);
        e
    };
    let outcomes = ledger
        .record(vec![
            event("largest", "s", MAX_QUANTITY),
            event("zero", "s", 0),
            event("two-to-53", "s", MAX_QUANTITY + 1),
            event("u64-max", "s", u64::MAX),
            with(|e| e.tenant = "t\0".into()),
            with(|e| e.sku = "s\0".into()),
            with(|e| e.idempotency_key = "k\0".into()),
            with(|e| e.installation = "\0".into()),
            with(|e| e.idempotency_key = "k".repeat(MAX_KEY_BYTES + 1)),
            with(|e| e.idempotency_key = String::new()),
            with(|e| e.at_ms = u64::MAX),
            event(&"k".repeat(MAX_KEY_BYTES), "s", 2),
        ])
        .await
        .unwrap();
    let refused = |reason| Recorded::Refused { reason };
    assert_eq!(
        outcomes,
        [
            Recorded::Recorded,
            refused(Refusal::ZeroQuantity),
            refused(Refusal::QuantityTooLarge { quantity: MAX_QUANTITY + 1 }),
            refused(Refusal::QuantityTooLarge { quantity: u64::MAX }),
            refused(Refusal::InvalidText { field: "tenant" }),
            refused(Refusal::InvalidText { field: "sku" }),
            refused(Refusal::InvalidText { field: "idempotency key" }),
            refused(Refusal::InvalidText { field: "installation" }),
            refused(Refusal::KeyTooLong { bytes: MAX_KEY_BYTES + 1 }),
            refused(Refusal::EmptyKey),
            refused(Refusal::TimeOutOfRange { at_ms: u64::MAX }),
            Recorded::Recorded,
        ]
    );
    // Serialized like the other outcomes, with the reason in words.
    let json = serde_json::to_value(&outcomes[3]).unwrap();
    assert_eq!(json["status"], "refused");
    assert_eq!(json["reason"], "quantity 18446744073709551615 is over the maximum of 2^53 - 1 (9007199254740991)");
    // Only the two storable events are stored, the largest quantity exactly.
    assert_eq!(stored(&store).await, [("k".repeat(MAX_KEY_BYTES), 2), ("largest".into(), MAX_QUANTITY as i64)]);
    // A batch of refusals only never reaches the database and still answers.
    assert_eq!(ledger.record(vec![event("zero-again", "s", 0)]).await.unwrap(), [refused(Refusal::ZeroQuantity)]);
    assert_eq!(stored(&store).await.len(), 2);
}

#[tokio::test]
async fn ledger_refusals_on_sqlite() {
    refusals_suite(None).await;
}

#[tokio::test]
async fn ledger_refusals_on_postgresql() {
    refusals_suite(Some(common::fresh_postgres_database().await)).await;
}

/// PostgreSQL restarted under load: every pooled connection dies just after it was used,
/// so none is pinged before its next use (the pool pings only connections idle for a
/// second). The ledger's next write begins on a live connection and is recorded; nothing
/// is lost and nothing answers an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_writes_past_lost_connections_on_postgresql() {
    use sqlx::Connection as _;
    let url = common::fresh_postgres_database().await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let store = Store::connect(&url).await.unwrap();
    let ledger = Ledger::start(store.clone());
    assert_eq!(ledger.record(vec![event("before", "s", 1)]).await.unwrap(), [Recorded::Recorded]);
    // Eight connections in the pool, all used a moment ago.
    let held = futures_util::future::try_join_all((0..8).map(|_| store.pool().acquire())).await.unwrap();
    drop(held);
    let mut admin = sqlx::PgConnection::connect(&common::postgres_admin_url()).await.unwrap();
    let terminated: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}') t"
    ))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(terminated >= 8, "{terminated} connections terminated");
    // pg_terminate_backend only signals: wait until the backends are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{name}'"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} backends still running");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let outcomes = ledger.record(vec![event("after", "s", 2)]).await.expect("the write begins on a live connection");
    assert_eq!(outcomes, [Recorded::Recorded]);
    // Read on a connection of its own (the pool still holds dead ones: a read drawing one
    // fails once, and that one is discarded).
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT idem_key, quantity FROM usage_events ORDER BY idem_key")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, [("after".to_string(), 2), ("before".to_string(), 1)]);
}

/// A submitter whose event the database refuses (a constraint the test adds: nothing the
/// ledger checks could catch it) fails alone; everyone committing with it in the same
/// group gets its events recorded.
async fn isolation_suite(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let postgres = database.is_some();
    let store = store(database, dir.path()).await;
    let poison = if postgres {
        "ALTER TABLE usage_events ADD CONSTRAINT poison CHECK (sku <> 'poison')"
    } else {
        "CREATE TRIGGER poison BEFORE INSERT ON usage_events WHEN NEW.sku = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"
    };
    sqlx::query(poison).execute(store.pool()).await.unwrap();
    let ledger = Ledger::start(store.clone());
    // Submitted together, so that they share a group (and its failed transaction). On
    // PostgreSQL the writer is a task of this single-threaded runtime: every submitter is
    // queued before it runs. On SQLite it is a thread of its own: while this test holds
    // the write lock, it is stuck beginning its first group (whatever it took), and the
    // others queue up behind it; when the lock goes, they are the next group.
    let lock = if postgres { None } else { Some(store.begin_write().await.unwrap()) };
    let submitters = (0..40).map(|i| {
        let mut events = vec![event(&format!("{i}-a"), "s", 1), event(&format!("{i}-b"), "s", 2)];
        if i % 5 == 0 {
            events.insert(1, event(&format!("{i}-poison"), "poison", 1));
        }
        if i % 7 == 0 {
            events.push(event(&format!("{i}-refused"), "s", u64::MAX));
        }
        let ledger = ledger.clone();
        async move { (i, ledger.record(events).await) }
    });
    let mut all = std::pin::pin!(futures_util::future::join_all(submitters));
    // One poll queues every submitter (the queue has room for them all); none is answered.
    assert!(futures_util::poll!(all.as_mut()).is_pending());
    if let Some(lock) = lock {
        lock.rollback().await.unwrap();
    }
    let mut expected = Vec::new();
    for (i, result) in all.await {
        if i % 5 == 0 {
            assert!(result.is_err(), "submitter {i} holds the poisoned event: {result:?}");
            continue;
        }
        let outcomes = result.unwrap_or_else(|e| panic!("submitter {i} failed because of another: {e}"));
        assert_eq!(outcomes[..2], [Recorded::Recorded, Recorded::Recorded], "submitter {i}");
        if i % 7 == 0 {
            assert!(matches!(outcomes[2], Recorded::Refused { .. }), "submitter {i}: {outcomes:?}");
        }
        expected.extend([(format!("{i}-a"), 1), (format!("{i}-b"), 2)]);
    }
    expected.sort();
    // The good submitters' events, each once; nothing of a failed submitter (its events
    // commit together or not at all).
    assert_eq!(stored(&store).await, expected);
    // The writer goes on: the same events again are duplicates.
    let again = ledger.record(vec![event("1-a", "s", 1), event("1-b", "s", 3)]).await.unwrap();
    assert_eq!(again, [Recorded::Duplicate, Recorded::Conflict { recorded_quantity: 2 }]);
}

#[tokio::test]
async fn ledger_isolation_on_sqlite() {
    isolation_suite(None).await;
}

#[tokio::test]
async fn ledger_isolation_on_postgresql() {
    isolation_suite(Some(common::fresh_postgres_database().await)).await;
}

// --- a call's effects: key-value changes and usage in one write ------------------------

use kiosk::effects::{CallEffects, KvWrite};
use kiosk::kv::{KvScope, QuotaHit};
use kiosk::store::logs::LogBounds;

/// Bytes the scope's entries hold, counted from the rows themselves.
async fn kv_bytes(store: &Store, scope: &KvScope) -> u64 {
    store.kv_load(scope).await.unwrap().iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

/// Calls committing at once to one installation share a group; their key-value changes
/// are checked against the quota one after the other in it, so the calls that fit are
/// kept whole (changes and usage) and the one that would go over keeps nothing; the
/// byte count the writer keeps matches the rows after puts, overwrites and deletes.
async fn effects_suite(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(database, dir.path()).await;
    let ledger = Ledger::start(store.clone());
    let scope = KvScope { tenant: "t".into(), installation: "i".into() };
    let bounds = LogBounds { max_lines: 10, max_bytes: 1_000 };
    // Each call puts a 12-byte entry ("kNN" + 9 bytes) and meters one unit: 8 fit in 100.
    let calls = (10..40).map(|i| {
        let effects = CallEffects {
            call_id: format!("call-{i}"),
            scope: scope.clone(),
            kv: Some(KvWrite { changes: [(format!("k{i}"), Some(vec![b'v'; 9]))].into(), quota: 100 }),
            usage: vec![event(&format!("call-{i}"), "s", 1)],
            lines: None,
        };
        let ledger = ledger.clone();
        async move { (i, ledger.commit_call(effects, bounds).await.unwrap()) }
    });
    let mut kept = Vec::new();
    for (i, written) in futures_util::future::join_all(calls).await {
        match written {
            Ok(outcomes) => {
                assert_eq!(outcomes, [Recorded::Recorded], "call {i}");
                kept.push(i);
            }
            Err(quota) => assert_eq!(quota, QuotaHit::Installation(100), "call {i}"),
        }
    }
    assert_eq!(kept.len(), 8, "12-byte entries within a 100-byte quota: {kept:?}");
    let entries = store.kv_load(&scope).await.unwrap();
    let keys: Vec<String> = entries.keys().cloned().collect();
    let expected: Vec<String> = kept.iter().map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected, "exactly the kept calls' changes");
    let usage: Vec<String> = stored(&store).await.into_iter().map(|(k, _)| k).collect();
    let expected: Vec<String> = kept.iter().map(|i| format!("call-{i}")).collect();
    assert_eq!(usage, expected, "exactly the kept calls' usage: a refused call keeps nothing");
    assert_eq!(kv_bytes(&store, &scope).await, 96);

    // Overwrite one entry with a longer value, delete another: the count follows, and the
    // quota is judged on it (96 - 12 + 22 - 12 = 94 fits; one more 12-byte entry does not).
    let first = format!("k{}", kept[0]);
    let second = format!("k{}", kept[1]);
    let change = CallEffects {
        call_id: "change".into(),
        scope: scope.clone(),
        kv: Some(KvWrite { changes: [(first, Some(vec![b'w'; 19])), (second, None)].into(), quota: 100 }),
        usage: Vec::new(),
        lines: None,
    };
    assert_eq!(ledger.commit_call(change, bounds).await.unwrap(), Ok(Vec::new()));
    assert_eq!(kv_bytes(&store, &scope).await, 94);
    let over = CallEffects {
        call_id: "over".into(),
        scope: scope.clone(),
        kv: Some(KvWrite { changes: [("k99".to_string(), Some(vec![b'v'; 9]))].into(), quota: 100 }),
        usage: vec![event("over", "s", 1)],
        lines: None,
    };
    assert_eq!(ledger.commit_call(over, bounds).await.unwrap(), Err(QuotaHit::Installation(100)));
    assert!(!stored(&store).await.iter().any(|(k, _)| k == "over"), "a refused call's usage is not kept");
    // The store's own commit judges by the same count.
    let fits = [("k98".to_string(), Some(vec![b'v'; 3]))].into();
    assert_eq!(store.kv_commit(&scope, fits, 100).await.unwrap(), Ok(()));
    assert_eq!(kv_bytes(&store, &scope).await, 100);
}

#[tokio::test]
async fn call_effects_on_sqlite() {
    effects_suite(None).await;
}

#[tokio::test]
async fn call_effects_on_postgresql() {
    effects_suite(Some(common::fresh_postgres_database().await)).await;
}

/// On a SQLite file the ledger writes on a thread of its own that, under load, commits and
/// begins again at once. Other writers of the process take SQLite's writer lock in turn
/// with it: a write waits for the group being written, not for however many groups the
/// ledger manages to begin first while the write's connection sleeps in SQLite's busy
/// handler (without turns, this test fails: writes waited while the ledger answered
/// many more groups than four).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_take_turns_with_a_busy_ledger_on_sqlite() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const SUBMITTERS: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = store(None, dir.path()).await;
    let ledger = Ledger::start(store.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // Each submitter submits again as soon as it is answered: the writer always has a
    // group waiting, of at most SUBMITTERS events.
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let (ledger, stop, answered) = (ledger.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    ledger.record(vec![event(&format!("busy-{s}-{n}"), "s", 1)]).await.unwrap();
                    answered.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Let the ledger get busy: a few groups answered before the first write.
    while answered.load(Ordering::Relaxed) < 4 * SUBMITTERS {
        tokio::task::yield_now().await;
    }
    let mut waits = Vec::new();
    for i in 0..20 {
        let before = answered.load(Ordering::Relaxed);
        let created = store.create_token(&Principal::Tenant(format!("t{i}")), "turns", "operator").await;
        let during = answered.load(Ordering::Relaxed) - before;
        if let Err(e) = created {
            stop.store(true, Ordering::Relaxed);
            panic!("write {i} beside the busy ledger failed: {e}");
        }
        waits.push(during);
    }
    stop.store(true, Ordering::Relaxed);
    let mut recorded = 0;
    for submitter in submitters {
        recorded += submitter.await.unwrap();
    }
    // The group being written when the write asked, and answers of the group before
    // it still on their way to their submitters: four groups' worth is ample for a
    // typical write (the median). One sample may also hold the time this test's own task
    // waited for a core after its write returned (the other suites' servers load the
    // machine), so the longest is bounded more loosely; without turns, writes waited for
    // many more groups than either bound.
    waits.sort_unstable();
    let (median, most) = (waits[waits.len() / 2], waits[waits.len() - 1]);
    assert!(median <= 4 * SUBMITTERS, "a typical write waited while the ledger answered {median} events: {waits:?}");
    assert!(most <= 16 * SUBMITTERS, "a write waited while the ledger answered {most} events: {waits:?}");
    assert_eq!(stored(&store).await.len() as u64, recorded);
}
