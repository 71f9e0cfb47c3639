//! The metering ledger: events/s ingested with group commit (64 concurrent submitters)
//! on SQLite and PostgreSQL, and the latency of an invoke of budget-pacing with metering
//! to the ledger vs. to nowhere. Needs the guests built and the local PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::NullSink;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiosk::ledger::{Ledger, LedgerCommitter, LedgerSink};
use kiosk::manifest::Manifest;
use kiosk::metering::{MeteringSink, UsageEvent, UsageSource};
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::store::{DbKv, Store};
use kiosk::world::HOST_API_VERSION;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn event() -> UsageEvent {
    UsageEvent {
        tenant: "bench".into(),
        installation: "i".into(),
        app: "acme/budget-pacing".into(),
        version: "1.4.34".into(),
        sku: "pacing-check".into(),
        quantity: 1,
        at_ms: 1,
        source: UsageSource::Partner,
        idempotency_key: format!("bench-{}", SEQ.fetch_add(1, Ordering::Relaxed)),
    }
}

async fn postgres_url() -> String {
    use sqlx::Connection as _;
    let admin =
        std::env::var("KIOSK_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL for the ledger bench");
    let name = format!("kiosk_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

fn ingest(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, url: String) {
    let store = rt.block_on(Store::connect(&url)).unwrap();
    let ledger = rt.block_on(async { Ledger::start(store.clone()) });
    const SUBMITTERS: u64 = 64;
    let mut group = c.benchmark_group("ledger ingest");
    group.throughput(Throughput::Elements(SUBMITTERS * 4));
    group.bench_function(format!("{name}: 64 submitters × 4 events, group commit"), |b| {
        b.to_async(rt).iter(|| {
            let ledger = ledger.clone();
            async move {
                let tasks: Vec<_> = (0..SUBMITTERS)
                    .map(|_| {
                        let ledger = ledger.clone();
                        tokio::spawn(async move {
                            for _ in 0..4 {
                                ledger.record(vec![event()]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    ingest(c, &rt, "SQLite", format!("sqlite://{}", dir.path().join("bench.db").display()));
    ingest(c, &rt, "PostgreSQL", rt.block_on(postgres_url()));

    // Invoke latency, metering to the SQLite ledger vs. to nowhere.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/budget_pacing.wasm")).expect("build the guests first");
    let manifest_bytes = std::fs::read(root.join("plugins-examples/budget-pacing/manifest.json")).unwrap();
    let store = rt.block_on(Store::connect(&format!("sqlite://{}", dir.path().join("invoke.db").display()))).unwrap();
    let ledger = rt.block_on(async { Ledger::start(store.clone()) });
    let kv = || Arc::new(DbKv { store: store.clone() });
    let bounds = kiosk::store::logs::LogBounds { max_lines: 1_000, max_bytes: 64 * 1024 };
    for (label, services) in [
        // The key-value changes in a transaction of their own, the usage dropped.
        ("kv committed alone, metering off", Services::separate(kv(), Arc::new(NullSink) as Arc<dyn MeteringSink>)),
        // Two writes: the key-value transaction, then the usage through the ledger.
        ("kv, then usage to the ledger", Services::separate(kv(), Arc::new(LedgerSink { ledger: ledger.clone() }))),
        // The server's path: changes and usage in one group-committed transaction.
        (
            "kv and usage in one ledger write",
            Services { kv: kv(), commit: Arc::new(LedgerCommitter { ledger: ledger.clone(), logs: bounds }) },
        ),
    ] {
        let _guard = rt.enter();
        // One tenant calling as fast as it can: no rate limit.
        let admission = kiosk::admission::AdmissionSettings {
            tenant_calls_per_second: u32::MAX,
            tenant_burst: u32::MAX,
            ..Default::default()
        };
        let runtime = Runtime::new(RuntimeSettings { admission, ..Default::default() }, services).unwrap();
        let manifest = Manifest::parse(&manifest_bytes, &HOST_API_VERSION).unwrap();
        let app = runtime.prepare(manifest, Arc::new(runtime.load(&wasm).unwrap()));
        let inst = Installation::new("bench", format!("inst-{label}"));
        rt.block_on(runtime.install(&app, &inst, r#"{"apiKey":"k","threshold":0.1}"#)).unwrap().result.unwrap();
        let input = r#"{"campaignId":"c-1","budget":3000,"flightDays":30,"dailySpend":[100,120,90]}"#;
        c.bench_function(&format!("invoke budget-pacing, kv in SQLite, {label}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    rt.block_on(runtime.invoke(&app, &inst, "evaluate", input)).unwrap().result.unwrap();
                }
                started.elapsed()
            })
        });
    }
}

criterion_group! {
    name = ledger;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(ledger);
