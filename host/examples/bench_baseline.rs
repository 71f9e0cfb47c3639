//! The two baselines of `bench/run`'s HTTP ladder, served on one address:
//!
//! - `POST /bare`: axum parsing the invoke body as JSON and answering a fixed JSON
//!   object (what HTTP and JSON cost on this machine);
//! - `POST /runtime`: axum parsing the body and calling `Runtime::invoke` of
//!   budget-pacing's `evaluate` on one installation — a fresh Store per call, key-value
//!   in memory, usage discarded: no authentication, no database, no ledger (what the
//!   sandbox costs under HTTP).
//!
//! Kiosk's own `POST /v1/tenants/{t}/installations/{id}/invoke/evaluate` with the same
//! body is the third rung. Usage: `bench_baseline <addr> <budget_pacing.wasm> <manifest.json>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kiosk::admission::AdmissionSettings;
use kiosk::kv::MemoryKv;
use kiosk::manifest::Manifest;
use kiosk::metering::{MeteringSink, MeteringSinkError, SinkOutcome, UsageEvent};
use kiosk::runtime::{AppVersion, Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::HOST_API_VERSION;
use serde_json::{Value, json};

/// Discards usage: the baseline measures the call, not a growing Vec.
struct NullSink;

#[async_trait::async_trait]
impl MeteringSink for NullSink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        Ok(vec![SinkOutcome::Stored; events.len()])
    }
}

struct Baseline {
    runtime: Runtime,
    app: AppVersion,
    installation: Installation,
}

async fn bare(Json(input): Json<Value>) -> Json<Value> {
    Json(json!({"output": {"fields": input.as_object().map_or(0, |o| o.len())}, "usage": []}))
}

async fn with_runtime(State(b): State<Arc<Baseline>>, Json(input): Json<Value>) -> Result<Json<Value>, StatusCode> {
    let done = b
        .runtime
        .invoke(&b.app, &b.installation, "evaluate", &input.to_string())
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let output = done.result.map_err(|_| StatusCode::BAD_GATEWAY)?;
    let output: Value = serde_json::from_str(&output).unwrap_or(Value::String(output));
    Ok(Json(json!({"output": output, "usage": done.usage.len()})))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, wasm, manifest] = args.as_slice() else {
        eprintln!("usage: bench_baseline <addr> <budget_pacing.wasm> <manifest.json>");
        std::process::exit(2);
    };
    let wasm = std::fs::read(wasm).expect("read the component");
    let manifest = Manifest::parse(&std::fs::read(manifest).expect("read the manifest"), &HOST_API_VERSION).unwrap();
    // As many calls as the clients send: no tenant rate limit, Kiosk's other defaults.
    let admission =
        AdmissionSettings { tenant_calls_per_second: u32::MAX, tenant_burst: u32::MAX, ..Default::default() };
    let services = Services::separate(Arc::new(MemoryKv::default()), Arc::new(NullSink));
    let runtime = Runtime::new(RuntimeSettings { admission, ..Default::default() }, services).expect("runtime");
    let app = runtime.prepare(manifest, Arc::new(runtime.load(&wasm).expect("load")));
    let installation = Installation::new("bench", "bench-installation");
    runtime
        .install(&app, &installation, r#"{"apiKey":"k","threshold":0.1}"#)
        .await
        .expect("install")
        .result
        .expect("installed");
    let state = Arc::new(Baseline { runtime, app, installation });
    let router = axum::Router::new().route("/bare", post(bare)).route("/runtime", post(with_runtime)).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, router).await.unwrap();
}
