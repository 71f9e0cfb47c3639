//! How far past its wall-time limit a call ends: the overrun (p50/p99/max) of a
//! CPU-bound loop and of a guest sleeping in a host call (a WASI sleep and a blocked
//! wasi:clocks pollable), each with a 100 ms limit. Run alone and while the machine is
//! loaded; tests only assert a bound that holds on a loaded machine.
//!
//! `cargo bench --bench timeout` (guests built first: `bash .ci/test` builds them).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk::admission::AdmissionSettings;
use kiosk::error::CallErrorKind;
use kiosk::kv::MemoryKv;
use kiosk::limits::SandboxLimits;
use kiosk::manifest::Manifest;
use kiosk::metering::MemorySink;
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::HOST_API_VERSION;

const LIMIT_MS: u64 = 100;
const SAMPLES: usize = 60;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/hostile_guest.wasm")).expect("build the guests first");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("tests/guests/hostile/manifest.json")).unwrap()).unwrap();
    manifest["limits"]["timeoutMs"] = LIMIT_MS.into();
    let manifest = Manifest::parse(manifest.to_string().as_bytes(), &HOST_API_VERSION).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _guard = rt.enter();
    let services = Services::separate(Arc::new(MemoryKv::default()), Arc::new(MemorySink::default()));
    let settings = RuntimeSettings {
        limits: SandboxLimits::default(),
        admission: AdmissionSettings {
            tenant_calls_per_second: u32::MAX,
            tenant_burst: u32::MAX,
            ..Default::default()
        },
        cache_dir: None,
        ..Default::default()
    };
    let runtime = Runtime::new(settings, services).unwrap();
    let app = runtime.prepare(manifest, Arc::new(runtime.load(&wasm).unwrap()));
    let inst = Installation::new("bench", "bench-1");

    println!("timeout overrun with a {LIMIT_MS} ms limit, {SAMPLES} calls each (sequential):");
    for (label, operation) in [("CPU loop", "loop"), ("WASI sleep", "sleep"), ("blocked pollable", "poll-block")] {
        let mut overruns: Vec<Duration> = (0..SAMPLES)
            .map(|_| {
                let started = Instant::now();
                let err = rt.block_on(runtime.invoke(&app, &inst, operation, "")).unwrap_err();
                let elapsed = started.elapsed();
                assert_eq!(err.kind, CallErrorKind::Timeout { limit_ms: LIMIT_MS });
                elapsed.saturating_sub(Duration::from_millis(LIMIT_MS))
            })
            .collect();
        overruns.sort();
        let at = |p: f64| overruns[((overruns.len() - 1) as f64 * p).round() as usize];
        println!("  {label:<17} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}", at(0.5), at(0.99), overruns.last().unwrap());
    }
}
