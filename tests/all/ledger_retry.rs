//! The ledger's retry after a failed group applies nothing twice. A group whose `COMMIT`
//! landed but whose reply was lost (injected: `Ledger::start_with_faults`) is written
//! again submitter by submitter; each call's key-value changes and lines are kept once,
//! its usage counts once, and every submitter is answered as if nothing had failed.
//! A group that failed before its `COMMIT` is written again whole. On SQLite and
//! PostgreSQL. (Without `applied_calls`, the lost-reply case keeps every line twice.)
//! On PostgreSQL the reply is also lost on the wire, by a proxy between the store and
//! the server (`common::pg_proxy`): the server commits and the connection closes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kiosk::effects::{CallEffects, CallLines, KvWrite, LogEntry};
use kiosk::kv::KvScope;
use kiosk::ledger::{Ledger, LedgerFaults, Recorded};
use kiosk::metering::{UsageEvent, UsageSource};
use kiosk::store::Store;
use kiosk::store::logs::LogBounds;
use sqlx::Row as _;

use crate::common;

const CALLS: usize = 24;

/// A store with tenant `t`'s installation `i` of budget-pacing (its log needs a row).
async fn store_with_installation(database: Option<String>, dir: &std::path::Path) -> Store {
    let url = database.unwrap_or_else(|| format!("sqlite://{}", dir.join("retry.db").display()));
    let store = Store::connect(&url).await.unwrap();
    store.create_tenant("t", "Tenant", "operator").await.unwrap();
    common::register_budget_pacing(&store).await;
    let row = common::budget_pacing_row("t", "i");
    store.insert_installation(&row, "tenant:t").await.unwrap();
    store
}

/// Call `n`: sets `k{n}`, meters one unit and logs one line, under call id `call-{n}`.
fn call(n: usize) -> CallEffects {
    let call_id = format!("call-{n}");
    CallEffects {
        call_id: call_id.clone(),
        scope: KvScope { tenant: "t".into(), installation: "i".into() },
        kv: Some(KvWrite { changes: [(format!("k{n}"), Some(vec![b'v'; 8]))].into(), quota: 1 << 20 }),
        usage: vec![UsageEvent {
            tenant: "t".into(),
            installation: "i".into(),
            app: "acme/budget-pacing".into(),
            version: "1.4.34".into(),
            sku: "s".into(),
            quantity: 1,
            at_ms: 1_000,
            source: UsageSource::Host,
            idempotency_key: format!("{call_id}/s"),
        }],
        lines: Some(CallLines {
            call_id,
            operation: "invoke:op".into(),
            lines: vec![LogEntry { at_ms: 1_000, level: "info", message: format!("line of call {n}") }],
        }),
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(store.pool()).await.unwrap().get::<i64, _>(0)
}

/// Every call's key is stored, and the installation's key-value byte count is the rows'
/// (not doubled by a retry).
async fn every_key_once(store: &Store) {
    let scope = KvScope { tenant: "t".into(), installation: "i".into() };
    let entries = store.kv_load(&scope).await.unwrap();
    assert_eq!(entries.len(), CALLS, "every call's key");
    let bytes = count(store, "SELECT bytes FROM kv_usage WHERE tenant = 't' AND installation = 'i'").await;
    let stored: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(bytes, stored as i64, "the key-value byte count matches the rows, not doubled");
}

async fn retry_applies_nothing_twice(database: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_installation(database, dir.path()).await;
    let faults = Arc::new(LedgerFaults::default());
    let ledger = Ledger::start_with_faults(store.clone(), faults.clone());
    let bounds = LogBounds { max_lines: 1_000, max_bytes: 1 << 20 };

    // The first group's COMMIT lands and its reply is lost: every call of it is written
    // again alone. Then a group fails before its COMMIT: its calls are written again too.
    for (phase, calls) in [(0, 0..CALLS / 2), (1, CALLS / 2..CALLS)] {
        let fault = if phase == 0 { &faults.lose_replies } else { &faults.fail_groups };
        fault.store(1, Ordering::SeqCst);
        let answers = futures_util::future::join_all(calls.map(|n| {
            let ledger = ledger.clone();
            async move { (n, ledger.commit_call(call(n), bounds).await) }
        }))
        .await;
        assert_eq!(fault.load(Ordering::SeqCst), 0, "phase {phase}: the fault was injected");
        for (n, answer) in answers {
            let outcomes = answer.unwrap_or_else(|e| panic!("call {n} failed: {e}")).unwrap();
            assert!(
                matches!(outcomes[..], [Recorded::Recorded | Recorded::Duplicate]),
                "call {n}: its usage counts once: {outcomes:?}"
            );
        }
    }

    // Each call's effects once: one line per call, one event per call, every key.
    let lines = count(&store, "SELECT COUNT(*) FROM installation_logs").await;
    assert_eq!(lines, CALLS as i64, "one line per call: a retry after a lost COMMIT reply kept none twice");
    let per_call = count(
        &store,
        "SELECT COUNT(*) FROM (SELECT call_id FROM installation_logs GROUP BY call_id HAVING COUNT(*) > 1) AS twice",
    )
    .await;
    assert_eq!(per_call, 0, "no call's lines are kept twice");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM usage_events").await, CALLS as i64);
    every_key_once(&store).await;

    // The same call submitted again (a retry of a retry) keeps nothing more.
    let again = ledger.commit_call(call(0), bounds).await.unwrap().unwrap();
    assert_eq!(again, [Recorded::Duplicate]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM installation_logs").await, CALLS as i64);
}

#[tokio::test]
async fn a_retry_after_a_lost_commit_reply_applies_nothing_twice_on_sqlite() {
    retry_applies_nothing_twice(None).await;
}

#[tokio::test]
async fn a_retry_after_a_lost_commit_reply_applies_nothing_twice_on_postgresql() {
    retry_applies_nothing_twice(Some(common::fresh_postgres_database().await)).await;
}

/// The reply to a group's `COMMIT` lost on the wire (PostgreSQL committed; the proxy
/// closed the connection instead of answering): the ledger writes each call again on
/// another connection and keeps nothing twice.
#[tokio::test]
async fn a_commit_reply_lost_on_the_wire_applies_nothing_twice_on_postgresql() {
    let database = common::fresh_postgres_database().await;
    let proxy = common::pg_proxy::PgProxy::start(&database).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_installation(Some(proxy.url(&database)), dir.path()).await;
    let ledger = Ledger::start(store.clone());
    let bounds = LogBounds { max_lines: 1_000, max_bytes: 1 << 20 };
    proxy.lose_next_commit_reply();
    let answers = futures_util::future::join_all((0..CALLS).map(|n| {
        let ledger = ledger.clone();
        async move { (n, ledger.commit_call(call(n), bounds).await) }
    }))
    .await;
    assert_eq!(proxy.replies_lost(), 1, "a COMMIT's reply was lost on the wire");
    for (n, answer) in answers {
        let outcomes = answer.unwrap_or_else(|e| panic!("call {n} failed: {e}")).unwrap();
        assert!(
            matches!(outcomes[..], [Recorded::Recorded | Recorded::Duplicate]),
            "call {n}: answered, its usage counted once: {outcomes:?}"
        );
    }
    // Read directly, not through the proxy.
    let direct = Store::connect(&database).await.unwrap();
    assert_eq!(count(&direct, "SELECT COUNT(*) FROM installation_logs").await, CALLS as i64, "one line per call");
    assert_eq!(count(&direct, "SELECT COUNT(*) FROM usage_events").await, CALLS as i64, "one event per call");
    every_key_once(&direct).await;
}
