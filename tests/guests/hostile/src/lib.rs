//! A deliberately hostile (and partly well-behaved) guest for Kiosk's sandbox tests.
//! Never shipped as an example.
//!
//! Lifecycle and usage exports: an installation id starting with `loop` makes every
//! export spin forever, `sleep` makes it sleep 60 s through `std::thread::sleep`, `poll`
//! makes it block 60 s on a `wasi:clocks` pollable; otherwise they succeed. `report`
//! also misbehaves by installation prefix (`report-*`, see `report`) or, for
//! installations made through the server, by the `mode` an install config stored in
//! key-value. `invoke` picks its behaviour from the operation name (see `invoke`).

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/app@0.1.0",
    world: "app",
});

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use kiosk::app::{key_value, log, metering};

struct Hostile;

/// A global that lives as long as the instance: a fresh Store per call means every call
/// must see it at zero first.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn spin_forever() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// String values in `v` (at any depth) that start with `prefix`.
fn count_strings_with_prefix(v: &serde_json::Value, prefix: &str) -> usize {
    match v {
        serde_json::Value::String(s) => usize::from(s.starts_with(prefix)),
        serde_json::Value::Array(items) => items.iter().map(|i| count_strings_with_prefix(i, prefix)).sum(),
        serde_json::Value::Object(map) => map.values().map(|i| count_strings_with_prefix(i, prefix)).sum(),
        _ => 0,
    }
}

const LONG: std::time::Duration = std::time::Duration::from_secs(60);

fn block_on_pollable() {
    wasip2::clocks::monotonic_clock::subscribe_duration(LONG.as_nanos() as u64).block();
}

fn maybe_loop(ctx: &CallContext) {
    let id = ctx.installation_id.as_str();
    if id.starts_with("loop") {
        spin_forever();
    }
    if id.starts_with("sleep") {
        std::thread::sleep(LONG);
    }
    if id.starts_with("poll") {
        block_on_pollable();
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if black_box(n) == 0 {
        return 1;
    }
    recurse(n - 1).wrapping_mul(31) ^ n
}

fn err(message: String) -> AppError {
    AppError { code: "hostile".into(), message }
}

impl lifecycle::Guest for Hostile {
    fn install(ctx: CallContext, config: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        for mode in ["sleep-report", "sleep-invoke", "trap-report", "deny-uninstall", "trap-uninstall"] {
            if config.contains(mode) {
                key_value::set("mode", mode.as_bytes()).map_err(|e| err(format!("{e:?}")))?;
            }
        }
        if config.contains("refuse") {
            return Err(AppError { code: "licence".into(), message: "no licence for this tenant".into() });
        }
        Ok(())
    }
    fn validate_config(ctx: CallContext, _config: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
    fn configure(ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        // How many string values starting with the config's public `probe` the app was
        // handed (the secrets test's secrets; it never stores their values).
        let config: serde_json::Value = serde_json::from_str(&new).unwrap_or_default();
        if let Some(probe) = config.get("probe").and_then(|p| p.as_str()).filter(|p| !p.is_empty()) {
            let seen = count_strings_with_prefix(&config, probe) - 1;
            key_value::set("seen-in-configure", seen.to_string().as_bytes()).map_err(|e| err(format!("{e:?}")))?;
        }
        Ok(())
    }
    fn upgrade(ctx: CallContext, _from: String, _config: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
    fn uninstall(ctx: CallContext) -> Result<(), AppError> {
        maybe_loop(&ctx);
        match mode().as_str() {
            "deny-uninstall" => Err(AppError { code: "locked-in".into(), message: "you may never leave".into() }),
            "trap-uninstall" => panic!("uninstall traps"),
            _ => Ok(()),
        }
    }
}

impl calls::Guest for Hostile {
    fn invoke(ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        maybe_loop(&ctx);
        if mode() == "sleep-invoke" && operation != "echo" {
            std::thread::sleep(LONG);
        }
        match operation.as_str() {
            // Well-behaved operations.
            "echo" => Ok(input),
            "counter" => Ok((COUNTER.fetch_add(1, Ordering::SeqCst) + 1).to_string()),
            "whoami" => Ok(format!("{}/{}", ctx.tenant_id, ctx.installation_id)),
            "kv-set" => {
                let (k, v) = input.split_once('=').ok_or_else(|| err("want key=value".into()))?;
                key_value::set(k, v.as_bytes()).map_err(|e| err(format!("{e:?}")))?;
                Ok("ok".into())
            }
            // The key as given, or as a JSON string (inputs over HTTP are JSON).
            "kv-get" => match key_value::get(&serde_json::from_str::<String>(&input).unwrap_or(input))
                .map_err(|e| err(format!("{e:?}")))?
            {
                Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
                None => Ok("<none>".into()),
            },
            "kv-set-then-trap" => {
                let (k, v) = input.split_once('=').ok_or_else(|| err("want key=value".into()))?;
                key_value::set(k, v.as_bytes()).map_err(|e| err(format!("{e:?}")))?;
                metering::record_usage("events", 1).map_err(|e| err(format!("{e:?}")))?;
                panic!("trap after writing");
            }
            "record" => {
                let qty: u64 = input.parse().map_err(|_| err("want a quantity".into()))?;
                metering::record_usage("events", qty).map_err(|e| err(format!("{e:?}")))?;
                Ok("recorded".into())
            }
            "undeclared-sku" => Ok(match metering::record_usage("no-such-sku", 1) {
                Ok(()) => "accepted".into(),
                Err(e) => format!("refused: {e:?}"),
            }),
            "log" => {
                log::log(log::Level::Warn, &input);
                Ok("logged".into())
            }
            // Hostile operations.
            "loop" => spin_forever(),
            "grow-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![7u8; 1 << 20]));
                }
            }
            "recurse" => Ok(recurse(black_box(u64::MAX)).to_string()),
            "trap" => panic!("hostile guest traps on purpose"),
            // What a Python app's runtime prints when it dies: a traceback on stderr.
            "python-traceback" => {
                eprintln!("Traceback (most recent call last):");
                eprintln!("  File \"/app/main.py\", line 12, in handle");
                eprintln!("    raise ValueError(\"boom\")");
                eprintln!("ValueError: boom");
                panic!("the interpreter exited");
            }
            "log-flood" => loop {
                log::log(log::Level::Error, "flood \u{1b}[31mred\u{7} line that goes on and on");
            },
            "sleep" => {
                std::thread::sleep(LONG);
                Ok("woke".into())
            }
            // Sleeps `input` milliseconds, then answers: a call that is in flight for a
            // while and ends well (a graceful stop lets it finish).
            "nap" => {
                let ms: u64 = input.trim().parse().map_err(|_| err("want milliseconds".into()))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok("rested".into())
            }
            "poll-block" => {
                block_on_pollable();
                Ok("woke".into())
            }
            "stderr-flood" => loop {
                eprintln!("stderr \u{1b}[31mflood\u{7} line that goes on and on");
            },
            "random-huge" => {
                let len: u64 = input.parse().map_err(|_| err("want a length".into()))?;
                Ok(wasip2::random::random::get_random_bytes(len).len().to_string())
            }
            "handle-bomb" => loop {
                std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(1));
            },
            "host-copy" => {
                // A log message of `input` bytes: the host must copy it out to look at it.
                let bytes: usize = input.parse().map_err(|_| err("want a size".into()))?;
                log::log(log::Level::Info, &"c".repeat(bytes));
                Ok("copied".into())
            }
            "long-error" => {
                let mut message = String::from("\u{1b}[2J\u{202E}evil\u{0}");
                // 3 MiB: under the host copy limit (4 MiB), far over what is shown.
                message.push_str(&"e".repeat(3 * 1024 * 1024));
                Err(AppError { code: format!("\u{1b}[31m{}", "c".repeat(1000)), message })
            }
            "kv-nul" => Ok(match key_value::set("a\0b", b"v") {
                Ok(()) => "accepted".into(),
                Err(e) => format!("refused: {e:?}"),
            }),
            "huge-output" => {
                let bytes: usize = input.parse().map_err(|_| err("want a size".into()))?;
                Ok("x".repeat(bytes))
            }
            other => Err(err(format!("unknown operation {other}"))),
        }
    }
}

fn mode() -> String {
    match key_value::get("mode") {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        _ => String::new(),
    }
}

fn record(sku: &str, quantity: u64, key: impl Into<String>) -> UsageRecord {
    UsageRecord { sku: sku.into(), quantity, idempotency_key: key.into() }
}

impl usage::Guest for Hostile {
    fn report(ctx: CallContext, window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        maybe_loop(&ctx);
        match mode().as_str() {
            "sleep-report" => std::thread::sleep(LONG),
            "trap-report" => panic!("this report always fails"),
            _ => {}
        }
        let id = ctx.installation_id.as_str();
        let w = window.start_ms;
        if id.starts_with("report-many") {
            // 200k records: more than the host will copy out of the guest.
            return Ok((0..200_000).map(|i| record("events", 1, format!("{i}"))).collect());
        }
        if id.starts_with("report-some") {
            // 5,000 records: small enough to copy, over the per-report cap.
            return Ok((0..5_000).map(|i| record("events", 1, format!("{w}-{i}"))).collect());
        }
        if id.starts_with("report-bad") {
            return Ok(vec![
                record("events", 5, format!("good-{w}")),
                record("no-such-sku", 1, format!("undeclared-{w}")),
                record("calls", 1, format!("host-metered-{w}")),
                record("events", 0, format!("zero-{w}")),
                record("events", u64::MAX, format!("max-{w}")),
                record("events", 1 << 53, format!("two-to-the-53-{w}")),
                record("events", (1 << 53) - 1, format!("largest-{w}")),
                record("events", 1, "k".repeat(1 << 20)),
                record("events", 1, format!("nul-\0-{w}")),
                record("events", 1, format!("good-{w}")),
            ]);
        }
        if id.starts_with("report-vary-metering") {
            // Meters through `record-usage` during the report, then reports as `report-vary`.
            metering::record_usage("events", 3).map_err(|e| err(format!("{e:?}")))?;
        }
        if id.starts_with("report-vary") {
            // The same key with another quantity in every window: a conflict from the second on.
            return Ok(vec![record("events", 1 + (w / 1000) % 5, "fixed"), record("events", 1, format!("w-{w}"))]);
        }
        Ok(vec![record("events", 2, format!("{}:{}", ctx.installation_id, w))])
    }
}

export!(Hostile);
