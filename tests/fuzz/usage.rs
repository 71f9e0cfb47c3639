//! What a guest hands back that becomes durable: its `usage.report` records and its
//! key-value keys.
//!
//! - `usage`: records judged by the runtime (`kiosk_runtime::judge_report`) and the
//!   ledger's own check (`kiosk_store::ledger::refusal`) agree: every event the runtime
//!   accepts the ledger stores; every record the ledger would refuse the runtime refused.
//!   Then the accepted events and hand-made bad ones go to a real `Ledger` on a SQLite
//!   file: each outcome is what a model of the ledger says (recorded once per (source,
//!   key), a replay a duplicate, another quantity a conflict, an unstorable event
//!   refused), and the stored rows are the model's: a refused or conflicting event never
//!   changes what is counted.
//! - `kv`: sequences of key-value commits on the database's store (`DbKv`, SQLite) and on
//!   `MemoryKv` agree with a model: the same quota refusals, every key the runtime's rule
//!   admits (1..=max bytes, no NUL) read back byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde::{Deserialize, Serialize};

use kiosk_domain::kv::{KvChanges, KvScope, KvStore, MemoryKv, entry_size};
use kiosk_domain::metering::{MAX_IDEMPOTENCY_KEY_BYTES, MAX_QUANTITY, UsageEvent, UsageSource};
use kiosk_runtime::world::{CallContext, UsageRecord, UsageWindow};
use kiosk_store::ledger::{self, Ledger, Recorded};
use kiosk_store::{DbKv, Store};

use crate::harness::{fuzz, text};
use crate::json_input;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    sku: String,
    quantity: u64,
    key: String,
}

/// An event given to the ledger directly (as a partner batch or a call would).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawEvent {
    tenant: String,
    installation: String,
    sku: String,
    quantity: u64,
    at_ms: u64,
    partner: bool,
    key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UsageCase {
    /// SKUs the version declares; the first `guest` of them the guest may meter.
    skus: Vec<String>,
    guest: usize,
    installation: String,
    window_start_ms: u64,
    records: Vec<Record>,
    raw: Vec<RawEvent>,
}

json_input!(UsageCase);

fn key_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9-]{1,12}",
        1 => Just(String::new()),
        1 => (1usize..4).prop_map(|n| "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES - 2 + n)),
        1 => (0usize..4).prop_map(|n| "k".repeat(ledger::MAX_KEY_BYTES - 2 + n)),
        1 => Just("a\0b".to_string()),
        1 => Just("é".repeat(100)),
        1 => text(),
    ]
    .boxed()
}

fn quantity() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 1u64..1000,
        1 => Just(0u64),
        1 => Just(MAX_QUANTITY),
        1 => Just(MAX_QUANTITY + 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn sku() -> BoxedStrategy<String> {
    prop_oneof![4 => prop::sample::select(vec!["rows", "checks", "calls", "bytes"]).prop_map(str::to_string), 1 => text()].boxed()
}

fn cases() -> BoxedStrategy<UsageCase> {
    let record = (sku(), quantity(), key_text()).prop_map(|(sku, quantity, key)| Record { sku, quantity, key });
    let raw = (
        prop_oneof![4 => Just("tenant-a".to_string()), 1 => text()],
        prop_oneof![4 => Just("3f1c0c9e-0000-4000-8000-000000000001".to_string()), 1 => text()],
        sku(),
        quantity(),
        prop_oneof![4 => 0u64..(1 << 45), 1 => Just(i64::MAX as u64), 1 => Just(i64::MAX as u64 + 1), 1 => any::<u64>()],
        any::<bool>(),
        key_text(),
    )
        .prop_map(|(tenant, installation, sku, quantity, at_ms, partner, key)| RawEvent {
            tenant,
            installation,
            sku,
            quantity,
            at_ms,
            partner,
            key,
        });
    (
        // Declared SKUs come from a parsed manifest: slugs.
        proptest::collection::vec(
            prop::sample::select(vec!["rows", "checks", "calls", "bytes"]).prop_map(str::to_string),
            0..4,
        ),
        0usize..4,
        prop_oneof![4 => Just("9b2f8e4a-1c3d-4e5f-8a6b-7c8d9e0f1a2b".to_string()), 1 => "[a-f0-9-]{36}"],
        // The window is the host's (the collector's clock), never the guest's.
        0u64..(1 << 45),
        proptest::collection::vec(record, 0..12),
        proptest::collection::vec(raw, 0..6),
    )
        .prop_map(|(skus, guest, installation, window_start_ms, records, raw)| UsageCase {
            skus,
            guest,
            installation,
            window_start_ms,
            records,
            raw,
        })
        .boxed()
}

/// The ledger's rules, as a model: what is stored per (source, key).
type Model = HashMap<(&'static str, String), u64>;

struct Ledgers {
    rt: tokio::runtime::Runtime,
    store: Store,
    ledger: Ledger,
    model: Mutex<Model>,
    _dir: tempfile::TempDir,
}

fn ledgers() -> Ledgers {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
    let store = rt.block_on(Store::connect(&url)).unwrap();
    let ledger = rt.block_on(async { Ledger::start(store.clone()) });
    Ledgers { rt, store, ledger, model: Mutex::new(Model::new()), _dir: dir }
}

async fn stored_quantity(store: &Store, source: &str, key: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT quantity FROM usage_events WHERE source = $1 AND idem_key = $2")
        .bind(source.to_string())
        .bind(key.to_string())
        .fetch_optional(store.pool())
        .await
        .unwrap()
}

fn check_usage(case: UsageCase, l: &Ledgers) -> TestCaseResult {
    let skus: HashSet<String> = case.skus.iter().cloned().collect();
    let guest_skus: HashSet<String> = case.skus.iter().take(case.guest).cloned().collect();
    let ctx = CallContext {
        tenant_id: "tenant-a".into(),
        installation_id: case.installation.clone(),
        app_id: "acme/app".into(),
        app_version: "1.0.0".into(),
    };
    let window = UsageWindow { start_ms: case.window_start_ms, end_ms: case.window_start_ms.saturating_add(3_600_000) };
    let records: Vec<UsageRecord> = case
        .records
        .iter()
        .map(|r| UsageRecord { sku: r.sku.clone(), quantity: r.quantity, idempotency_key: r.key.clone() })
        .collect();
    let judged = kiosk_runtime::judge_report(&skus, &guest_skus, &ctx, window, records);
    prop_assert_eq!(judged.accepted.len() + judged.refused.len(), case.records.len());
    let mut keys = HashSet::new();
    for e in &judged.accepted {
        prop_assert_eq!(ledger::refusal(e), None, "the runtime accepted an event the ledger refuses: {:?}", e);
        prop_assert!(guest_skus.contains(&e.sku), "accepted a SKU the guest may not meter");
        prop_assert!(keys.insert(e.idempotency_key.clone()), "accepted a key twice");
        prop_assert_eq!(e.source, UsageSource::Report);
        prop_assert_eq!(e.at_ms, case.window_start_ms);
        prop_assert!(
            e.idempotency_key.starts_with(&format!("{}/report/", case.installation)),
            "key {:?}",
            e.idempotency_key
        );
    }
    for r in &judged.refused {
        prop_assert!(!r.reason.is_empty());
        prop_assert!(!r.idempotency_key.chars().any(char::is_control) && !r.sku.chars().any(char::is_control));
    }
    // What the ledger would refuse of each record, as the runtime would hand it on.
    for r in &case.records {
        let as_event = UsageEvent {
            tenant: ctx.tenant_id.clone(),
            installation: ctx.installation_id.clone(),
            app: ctx.app_id.clone(),
            version: ctx.app_version.clone(),
            sku: r.sku.clone(),
            quantity: r.quantity,
            at_ms: case.window_start_ms,
            source: UsageSource::Report,
            idempotency_key: format!("{}/report/{}", ctx.installation_id, r.key),
        };
        if ledger::refusal(&as_event).is_some() {
            prop_assert!(
                !judged
                    .accepted
                    .iter()
                    .any(|e| e.idempotency_key == as_event.idempotency_key && e.quantity == r.quantity),
                "the ledger refuses {:?}, the runtime accepted it",
                r
            );
        }
    }

    // The ledger itself: accepted events and hand-made ones.
    let mut events = judged.accepted.clone();
    events.extend(case.raw.iter().map(|r| UsageEvent {
        tenant: r.tenant.clone(),
        installation: r.installation.clone(),
        app: "acme/app".into(),
        version: "1.0.0".into(),
        sku: r.sku.clone(),
        quantity: r.quantity,
        at_ms: r.at_ms,
        source: if r.partner { UsageSource::Partner } else { UsageSource::Guest },
        idempotency_key: r.key.clone(),
    }));
    if events.is_empty() {
        return Ok(());
    }
    let outcomes = l.rt.block_on(l.ledger.record(events.clone())).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(outcomes.len(), events.len());
    let mut model = l.model.lock().unwrap();
    for (e, outcome) in events.iter().zip(&outcomes) {
        let expected = match ledger::refusal(e) {
            Some(reason) => Recorded::Refused { reason },
            None => match model.get(&(e.source.as_str(), e.idempotency_key.clone())) {
                Some(q) if *q == e.quantity => Recorded::Duplicate,
                Some(q) => Recorded::Conflict { recorded_quantity: *q },
                None => {
                    model.insert((e.source.as_str(), e.idempotency_key.clone()), e.quantity);
                    Recorded::Recorded
                }
            },
        };
        prop_assert_eq!(outcome, &expected, "event {:?}", e);
    }
    for e in &events {
        let stored = l.rt.block_on(stored_quantity(&l.store, e.source.as_str(), &e.idempotency_key));
        let modelled = model.get(&(e.source.as_str(), e.idempotency_key.clone())).copied();
        prop_assert_eq!(stored.map(ledger::stored_quantity), modelled, "stored rows differ from the model for {:?}", e);
    }
    let count: i64 =
        l.rt.block_on(sqlx::query_scalar("SELECT COUNT(*) FROM usage_events").fetch_one(l.store.pool())).unwrap();
    prop_assert_eq!(count as usize, model.len(), "rows stored besides the recorded ones");
    Ok(())
}

#[test]
fn usage() {
    let l = ledgers();
    fuzz("usage", cases(), |case| check_usage(case, &l));
}

// --- key-value ----------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KvCase {
    quota: u64,
    max_key: u32,
    /// Commits of changes: `Some` puts, `None` deletes.
    commits: Vec<Vec<(String, Option<Vec<u8>>)>>,
}

json_input!(KvCase);

fn kv_cases() -> BoxedStrategy<KvCase> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "a/1", "a/2", "A", "a ", " a", "é", "e\u{301}", "k".repeat(40).leak()])
            .prop_map(str::to_string),
        2 => text(),
    ];
    let change = (key, proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..24)));
    (
        prop_oneof![Just(64u64), Just(256u64), 0u64..512],
        prop_oneof![Just(8u32), Just(512u32)],
        proptest::collection::vec(proptest::collection::vec(change, 0..5), 1..5),
    )
        .prop_map(|(quota, max_key, commits)| KvCase { quota, max_key, commits })
        .boxed()
}

/// The runtime's rule for a guest's key (`checked_key` in runtime/src/sandbox.rs).
fn admitted_key(key: &str, max_key: u32) -> bool {
    !key.is_empty() && key.len() <= max_key as usize && !key.contains('\0')
}

#[test]
fn kv() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kv.db").display());
    let db = DbKv { store: rt.block_on(Store::connect(&url)).unwrap() };
    let scopes = std::sync::atomic::AtomicU64::new(0);
    fuzz("kv", kv_cases(), |case| {
        // A fresh scope per case: the stores start empty.
        let n = scopes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scope = KvScope { tenant: "tenant-a".into(), installation: format!("installation-{n}") };
        let memory = MemoryKv::default();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for commit in &case.commits {
            let changes: KvChanges = commit.iter().filter(|(k, _)| admitted_key(k, case.max_key)).cloned().collect();
            let mut next = model.clone();
            for (k, v) in &changes {
                match v {
                    Some(v) => next.insert(k.clone(), v.clone()),
                    None => next.remove(k),
                };
            }
            let fits = next.iter().map(|(k, v)| entry_size(k, v)).sum::<u64>() <= case.quota;
            let in_memory = rt.block_on(memory.commit(&scope, changes.clone(), case.quota));
            let in_db = rt.block_on(db.commit(&scope, changes, case.quota));
            prop_assert_eq!(in_memory.is_ok(), fits, "MemoryKv: {:?}", in_memory);
            prop_assert_eq!(in_db.is_ok(), fits, "DbKv: {:?}", in_db);
            if fits {
                model = next;
            }
            let loaded = rt.block_on(db.load(&scope)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&*loaded, &model, "the database's entries differ from the model");
            let loaded = rt.block_on(memory.load(&scope)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&*loaded, &model);
        }
        Ok(())
    });
}
