//! One benchmark row per partner language, on the example apps as `.ci/test` builds
//! them: component size, compile time (no cache), cached load (the disk cache's
//! artefact), first call (install: the first instantiation) and warm call (median
//! `invoke` over 200 calls, a fresh Store each). Prints a Markdown table for
//! `bench/RESULTS.md`.
//!
//! Usage: `bench_languages` from the repository root, after `bash .ci/test` (or the
//! guests' builds) wrote the components to target/wasm32-wasip2/release.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk::kv::MemoryKv;
use kiosk::manifest::Manifest;
use kiosk::metering::MemorySink;
use kiosk::runtime::{Installation, Runtime, RuntimeSettings, Services};
use kiosk::world::HOST_API_VERSION;

struct Case {
    lang: &'static str,
    example: &'static str,
    config: &'static str,
    operation: &'static str,
    input: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        lang: "Rust (wit-bindgen)",
        example: "budget-pacing",
        config: r#"{"apiKey":"k","threshold":0.1}"#,
        operation: "evaluate",
        input: r#"{"campaignId":"c","budget":3000,"flightDays":30,"dailySpend":[90,110,95]}"#,
    },
    Case {
        lang: "Python (componentize-py 0.25)",
        example: "audience-forecast",
        config: r#"{"apiToken":"token-123456","market":"us","minReach":1000}"#,
        operation: "forecast",
        input: r#"{"segment":"runners","dailyBudget":250,"cpm":4}"#,
    },
    Case {
        lang: "JavaScript (ComponentizeJS 0.23)",
        example: "ad-copy-check",
        config: r#"{"bannedWords":["free"],"maxHeadline":30,"locale":"en"}"#,
        operation: "check",
        input: r#"{"headline":"Free shoes today","body":"Running shoes for every road."}"#,
    },
];

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    println!("| language (example) | component | compile | cached load | first call (install) | warm call (median) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for case in CASES {
        let wasm_path = format!("target/wasm32-wasip2/release/{}.wasm", case.example.replace('-', "_"));
        let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{wasm_path}: {e} (build the examples first)"));
        let manifest_path = format!("plugins-examples/{}/manifest.json", case.example);
        let manifest = Manifest::parse(&std::fs::read(&manifest_path).unwrap(), &HOST_API_VERSION).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let services = || Services::separate(Arc::new(MemoryKv::default()), Arc::new(MemorySink::default()));
        let settings = RuntimeSettings { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };

        // Compile (the cache is empty), then a second runtime loads the stored artefact.
        let compiling = Runtime::new(settings.clone(), services()).unwrap();
        let started = Instant::now();
        compiling.load(&wasm).unwrap();
        let compile = started.elapsed();
        drop(compiling);
        let runtime = Runtime::new(settings, services()).unwrap();
        let started = Instant::now();
        let loaded = runtime.load(&wasm).unwrap();
        let cached = started.elapsed();
        let app = runtime.prepare(manifest, Arc::new(loaded));

        let inst = Installation::new("bench", "bench-installation");
        let started = Instant::now();
        runtime.install(&app, &inst, case.config).await.unwrap().result.unwrap();
        let first = started.elapsed();
        let mut calls = Vec::with_capacity(200);
        for _ in 0..200 {
            let started = Instant::now();
            let done = runtime.invoke(&app, &inst, case.operation, case.input).await.unwrap();
            calls.push(started.elapsed());
            done.result.unwrap();
        }
        calls.sort();
        println!(
            "| {} ({}) | {:.1} MB | {} ms | {} ms | {} ms | {:.0} µs |",
            case.lang,
            case.example,
            wasm.len() as f64 / 1e6,
            ms(compile),
            ms(cached),
            ms(first),
            calls[calls.len() / 2].as_secs_f64() * 1e6
        );
    }
}
