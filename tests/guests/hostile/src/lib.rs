//! A deliberately hostile (and partly well-behaved) guest for Kiosk's sandbox tests.
//! Never shipped as an example.
//!
//! Lifecycle and usage exports: an installation id starting with `loop` makes every
//! export spin forever; otherwise they succeed. `invoke` picks its behaviour from the
//! operation name (see `invoke` below).

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

fn maybe_loop(ctx: &CallContext) {
    if ctx.installation_id.starts_with("loop") {
        spin_forever();
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
        if config.contains("refuse") {
            return Err(AppError { code: "licence".into(), message: "no licence for this tenant".into() });
        }
        Ok(())
    }
    fn validate_config(ctx: CallContext, _config: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
    fn configure(ctx: CallContext, _old: String, _new: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
    fn upgrade(ctx: CallContext, _from: String, _config: String) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
    fn uninstall(ctx: CallContext) -> Result<(), AppError> {
        maybe_loop(&ctx);
        Ok(())
    }
}

impl calls::Guest for Hostile {
    fn invoke(ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        maybe_loop(&ctx);
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
            "kv-get" => match key_value::get(&input).map_err(|e| err(format!("{e:?}")))? {
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
            "log-flood" => loop {
                log::log(log::Level::Error, "flood \u{1b}[31mred\u{7} line that goes on and on");
            },
            "huge-output" => {
                let bytes: usize = input.parse().map_err(|_| err("want a size".into()))?;
                Ok("x".repeat(bytes))
            }
            other => Err(err(format!("unknown operation {other}"))),
        }
    }
}

impl usage::Guest for Hostile {
    fn report(ctx: CallContext, window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        maybe_loop(&ctx);
        Ok(vec![UsageRecord {
            sku: "events".into(),
            quantity: 2,
            idempotency_key: format!("{}:{}", ctx.installation_id, window.start_ms),
        }])
    }
}

export!(Hostile);
