//! Invoke latency of `budget-pacing` on a warm `InstancePre` (fresh Store per call),
//! and the cost of loading a component from the compile cache vs compiling it.
//!
//! Needs the guests built for wasm32-wasip2 (`bash .ci/test` or the README's build).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::NullSink;
use criterion::{Criterion, criterion_group, criterion_main};
use kiosk::admission::AdmissionSettings;
use kiosk::cache::CacheOutcome;
use kiosk::kv::MemoryKv;
use kiosk::manifest::Manifest;
use kiosk::metering::{MemorySink, MeteringSink};
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::HOST_API_VERSION;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runtime(cache_dir: Option<PathBuf>, metering: Arc<dyn MeteringSink>) -> Runtime {
    let services = Services::separate(Arc::new(MemoryKv::default()), metering);
    // A benchmark is one tenant calling as fast as it can: no rate limit.
    let admission =
        AdmissionSettings { tenant_calls_per_second: u32::MAX, tenant_burst: u32::MAX, ..Default::default() };
    Runtime::new(RuntimeSettings { cache_dir, admission, ..Default::default() }, services).expect("runtime")
}

fn benches(c: &mut Criterion) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/budget_pacing.wasm"))
        .expect("build the guests first: bash .ci/test");
    let manifest_bytes = std::fs::read(root().join("plugins-examples/budget-pacing/manifest.json")).unwrap();
    let manifest = Manifest::parse(&manifest_bytes, &HOST_API_VERSION).unwrap();

    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = tokio_rt.enter();
    let rt = runtime(None, Arc::new(NullSink));
    let app = rt.prepare(manifest.clone(), Arc::new(rt.load(&wasm).unwrap()));
    let inst = Installation::new("bench-tenant", "bench-installation");
    tokio_rt.block_on(rt.install(&app, &inst, r#"{"apiKey":"k","threshold":0.1}"#)).unwrap().result.unwrap();
    let input = r#"{"campaignId":"c-1","budget":3000,"flightDays":30,"dailySpend":[100,120,90,110,105]}"#;
    c.bench_function("budget-pacing invoke evaluate (fresh Store per call)", |b| {
        b.iter(|| tokio_rt.block_on(rt.invoke(&app, &inst, "evaluate", input)).unwrap().result.unwrap())
    });

    let memory_sink = runtime(None, Arc::new(MemorySink::default()));
    let app2 = memory_sink.prepare(manifest, Arc::new(memory_sink.load(&wasm).unwrap()));
    tokio_rt.block_on(memory_sink.install(&app2, &inst, r#"{"apiKey":"k","threshold":0.1}"#)).unwrap().result.unwrap();
    c.bench_function("budget-pacing invoke evaluate, usage kept in memory", |b| {
        b.iter(|| tokio_rt.block_on(memory_sink.invoke(&app2, &inst, "evaluate", input)).unwrap().result.unwrap())
    });

    let dir = tempfile::tempdir().unwrap();
    let cached = runtime(Some(dir.path().to_path_buf()), Arc::new(NullSink));
    assert_eq!(cached.load(&wasm).unwrap().outcome, CacheOutcome::Compiled);
    c.bench_function("load budget-pacing from the disk cache", |b| {
        b.iter(|| {
            let loaded = cached.load(&wasm).unwrap();
            assert_eq!(loaded.outcome, CacheOutcome::Hit);
        })
    });
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("compile budget-pacing (no cache)", |b| b.iter(|| rt.load(&wasm).unwrap()));
    group.finish();
}

criterion_group!(invoke, benches);
criterion_main!(invoke);
