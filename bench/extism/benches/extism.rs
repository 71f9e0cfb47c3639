//! Rungs 5 and 6 of the per-call ladder (`host/benches/ladder.rs`): the same echo call
//! and input through Extism, on its defaults (no WASI, no host functions).
//!
//! 5. **Extism, fresh plug-in** — `Plugin::new_from_compiled` per call from one
//!    `CompiledPlugin` (compiled once, as Kiosk compiles a component once): a new Store
//!    and instance per call, like Kiosk's fresh Store;
//! 6. **Extism, reused plug-in** — one plug-in called again and again (its instance and
//!    memory kept between calls, which Kiosk never does across calls).
//!
//! Needs the plug-in built: `cargo build --release --target wasm32-unknown-unknown
//! --manifest-path bench/extism/echo-plugin/Cargo.toml` (bench/run does it); its path is
//! `EXTISM_ECHO_WASM`.

use criterion::{Criterion, criterion_group, criterion_main};
use extism::{CompiledPlugin, Plugin, PluginBuilder, Wasm};

/// The ladder's input (`host/benches/ladder.rs`).
const INPUT: &str = r#"{"campaignId":"c-1","budget":3000,"flightDays":30,"dailySpend":[100,120,90,110,105]}"#;

fn benches(c: &mut Criterion) {
    let path = std::env::var("EXTISM_ECHO_WASM").expect("EXTISM_ECHO_WASM: the echo plug-in's path");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let builder = PluginBuilder::new(extism::Manifest::new([Wasm::data(wasm)])).with_wasi(false);
    let compiled = CompiledPlugin::new(builder).expect("the plug-in compiles");
    let mut warm = Plugin::new_from_compiled(&compiled).expect("the plug-in instantiates");
    let answer: String = warm.call("invoke", INPUT).expect("echo answers");
    assert_eq!(answer, INPUT);

    let mut group = c.benchmark_group("ladder (echo guest)");
    group.bench_function("5 Extism, fresh plug-in", |b| {
        b.iter(|| {
            let mut plugin = Plugin::new_from_compiled(&compiled).expect("the plug-in instantiates");
            let answer: String = plugin.call("invoke", INPUT).expect("echo answers");
            answer
        })
    });
    group.bench_function("6 Extism, reused plug-in", |b| {
        b.iter(|| {
            let answer: String = warm.call("invoke", INPUT).expect("echo answers");
            answer
        })
    });
    group.finish();
}

criterion_group!(ladder, benches);
criterion_main!(ladder);
