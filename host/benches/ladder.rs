//! The per-call ladder on one shared echo guest (`tests/guests/echo`: `invoke` answers
//! its input), each rung on the same wasmtime `Engine` (Kiosk's: pooling allocator,
//! epochs, its compiler settings) and the same compiled component:
//!
//! 1. **reused instance** — one Store and one instance, `invoke` called again and again
//!    (what a host that keeps instances warm pays; Kiosk never does this across calls);
//! 2. **raw wasmtime, fresh Store** — a new Store and instance per call from an
//!    `InstancePre`, WASI with nothing granted, Kiosk's imports as no-ops: the floor of a
//!    fresh-Store design;
//! 3. **Kiosk `Runtime::invoke`** — the same call through Kiosk: admission, limits,
//!    deadline, the call's context, logs and effects (nothing metered);
//! 4. the same with one host-metered SKU on the operation (its usage event handed to a
//!    sink that discards it).
//!
//! The ratio 3 ÷ 2 is Kiosk's per-call overhead over the engine. Needs the guests built
//! for wasm32-wasip2 (`bash .ci/test` or `cargo build --release --target wasm32-wasip2
//! -p echo-guest`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::NullSink;
use criterion::{Criterion, criterion_group, criterion_main};
use kiosk::admission::AdmissionSettings;
use kiosk::kv::MemoryKv;
use kiosk::manifest::Manifest;
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::{self, App, AppPre, CallContext, HOST_API_VERSION, key_value, log, metering};
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The bare host of the raw rungs: a WASI context granting nothing, and Kiosk's imports
/// answering without doing anything (the echo guest calls none of them).
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Bare {
    fn new() -> Self {
        Self { wasi: WasiCtx::builder().build(), table: ResourceTable::new() }
    }
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl world::v1::kiosk::app::types::Host for Bare {}

impl metering::Host for Bare {
    fn record_usage(&mut self, _sku: String, _quantity: u64) -> wasmtime::Result<Result<(), metering::MeteringError>> {
        Ok(Ok(()))
    }
}

impl key_value::Host for Bare {
    fn get(&mut self, _key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::KvError>> {
        Ok(Ok(None))
    }

    fn set(&mut self, _key: String, _value: Vec<u8>) -> wasmtime::Result<Result<(), key_value::KvError>> {
        Ok(Ok(()))
    }

    fn delete(&mut self, _key: String) -> wasmtime::Result<Result<bool, key_value::KvError>> {
        Ok(Ok(false))
    }

    fn list_keys(&mut self, _prefix: String) -> wasmtime::Result<Result<Vec<String>, key_value::KvError>> {
        Ok(Ok(Vec::new()))
    }
}

impl log::Host for Bare {
    fn log(&mut self, _level: log::Level, _message: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn context() -> CallContext {
    CallContext {
        tenant_id: "bench-tenant".into(),
        installation_id: "bench-installation".into(),
        app_id: "bench/echo".into(),
        app_version: "1.0.0".into(),
    }
}

/// A Store on Kiosk's engine that never reaches an epoch deadline.
fn store(engine: &wasmtime::Engine) -> Store<Bare> {
    let mut store = Store::new(engine, Bare::new());
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

fn benches(c: &mut Criterion) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/echo_guest.wasm"))
        .expect("build the guests first: cargo build --release --target wasm32-wasip2 -p echo-guest");
    let mut manifest_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("plugins-examples/budget-pacing/manifest.json")).unwrap())
            .unwrap();
    manifest_json["app"] = "bench/echo".into();
    manifest_json["version"] = "1.0.0".into();
    manifest_json["config"] = serde_json::json!({"type": "object"});
    manifest_json["capabilities"] = serde_json::json!({"keyValue": false});
    // Rung 3 meters nothing (a guest-metered SKU the echo guest never records).
    manifest_json["skus"] = serde_json::json!([{"id": "echo", "unit": "call"}]);
    let manifest = Manifest::parse(manifest_json.to_string().as_bytes(), &HOST_API_VERSION).unwrap();
    let input = r#"{"campaignId":"c-1","budget":3000,"flightDays":30,"dailySpend":[100,120,90,110,105]}"#;

    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = tokio_rt.enter();
    let services = Services::separate(Arc::new(MemoryKv::default()), Arc::new(NullSink));
    // One tenant calling as fast as it can: no rate limit.
    let admission =
        AdmissionSettings { tenant_calls_per_second: u32::MAX, tenant_burst: u32::MAX, ..Default::default() };
    let rt = Runtime::new(RuntimeSettings { admission, ..Default::default() }, services).expect("runtime");
    let engine = rt.engine().clone();

    // The raw rungs: the same engine, the component compiled once.
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    App::add_to_linker::<Bare, HasSelf<Bare>>(&mut linker, |s| s).unwrap();
    let pre = AppPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let ctx = context();

    let mut group = c.benchmark_group("ladder (echo guest)");
    {
        let mut warm = store(&engine);
        let app = tokio_rt.block_on(pre.instantiate_async(&mut warm)).unwrap();
        group.bench_function("1 reused instance", |b| {
            b.iter(|| {
                tokio_rt.block_on(app.kiosk_app_calls().call_invoke(&mut warm, &ctx, "echo", input)).unwrap().unwrap()
            })
        });
    }
    group.bench_function("2 raw wasmtime, fresh Store", |b| {
        b.iter(|| {
            tokio_rt.block_on(async {
                let mut s = store(&engine);
                let app = pre.instantiate_async(&mut s).await.unwrap();
                app.kiosk_app_calls().call_invoke(&mut s, &ctx, "echo", input).await.unwrap().unwrap()
            })
        })
    });
    let component = Arc::new(rt.load(&wasm).unwrap());
    let app = rt.prepare(manifest, component.clone());
    let inst = Installation::new("bench-tenant", "bench-installation");
    group.bench_function("3 Kiosk Runtime::invoke, fresh Store", |b| {
        b.iter(|| tokio_rt.block_on(rt.invoke(&app, &inst, "echo", input)).unwrap().result.unwrap())
    });
    // The same call with one host-metered SKU on `echo`: plus the usage event and its
    // hand-over (to a sink that discards it).
    manifest_json["skus"] = serde_json::json!([{"id": "echo", "unit": "call", "operations": ["echo"]}]);
    let metered = Manifest::parse(manifest_json.to_string().as_bytes(), &HOST_API_VERSION).unwrap();
    let metered = rt.prepare(metered, component);
    group.bench_function("4 Kiosk Runtime::invoke, fresh Store, metered", |b| {
        b.iter(|| tokio_rt.block_on(rt.invoke(&metered, &inst, "echo", input)).unwrap().result.unwrap())
    });
    group.finish();
}

criterion_group!(ladder, benches);
criterion_main!(ladder);
