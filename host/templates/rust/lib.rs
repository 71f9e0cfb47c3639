//! {{title}}: a Kiosk app in Rust, made by `kiosk new`.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit/app@0.1.0",
    world: "app",
});

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::key_value;
use kiosk::app::log::{Level, log};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use serde_json::{Value, json};

struct App;

fn refuse(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

fn kv<T>(result: Result<T, key_value::KvError>) -> Result<T, AppError> {
    result.map_err(|e| refuse("storage", format!("key-value: {e:?}")))
}

/// Keeps the greeting of `config` (JSON, defaults applied by the host).
fn save_greeting(config: &str) -> Result<(), AppError> {
    let config: Value = serde_json::from_str(config).map_err(|e| refuse("invalid-config", e.to_string()))?;
    let greeting = config["greeting"].as_str().unwrap_or("Hello");
    kv(key_value::set("greeting", greeting.as_bytes()))
}

impl lifecycle::Guest for App {
    fn install(_ctx: CallContext, config: String) -> Result<(), AppError> {
        save_greeting(&config)
    }
    fn validate_config(_ctx: CallContext, _config: String) -> Result<(), AppError> {
        Ok(())
    }
    fn configure(_ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        save_greeting(&new)
    }
    fn upgrade(_ctx: CallContext, _from: String, config: String) -> Result<(), AppError> {
        save_greeting(&config)
    }
    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

impl calls::Guest for App {
    fn invoke(_ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        if operation != "greet" {
            return Err(refuse("unknown-operation", format!("no operation {operation:?}; this app has: greet")));
        }
        let input: Value = serde_json::from_str(&input).map_err(|e| refuse("invalid-input", e.to_string()))?;
        let Some(name) = input["name"].as_str().filter(|n| !n.is_empty() && n.len() <= 100) else {
            return Err(refuse("invalid-input", "name must be a string of 1-100 bytes"));
        };
        let greeting = kv(key_value::get("greeting"))?.map(|g| String::from_utf8_lossy(&g).into_owned());
        let message = format!("{}, {name}!", greeting.as_deref().unwrap_or("Hello"));
        // Counted at the next usage report, which clears it (each person once per report).
        kv(key_value::set(&format!("greeted/{name}"), b"1"))?;
        log(Level::Info, &format!("greeted {name}"));
        Ok(json!({ "message": message }).to_string())
    }
}

impl usage::Guest for App {
    fn report(_ctx: CallContext, window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        // The people greeted since the last report. Clearing them here is safe: a report's
        // key-value changes are kept only together with its usage (one commit).
        let greeted = kv(key_value::list_keys("greeted/"))?;
        for key in &greeted {
            kv(key_value::delete(key))?;
        }
        if greeted.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![UsageRecord {
            sku: "people-greeted".into(),
            quantity: greeted.len() as u64,
            idempotency_key: format!("people/{}", window.start_ms),
        }])
    }
}

export!(App);
