//! {{title}}: a Kiosk app in Rust, made by `kiosk new`.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit/app@0.2.0",
    world: "app",
    // The world imports the standard wasi:http client; these are the `wasip2` crate's.
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::key_value;
use kiosk::app::log::{Level, log};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use serde_json::{Value, json};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// Your service: manifest.json declares `https://api.example.com` in
/// `capabilities.outbound`, with the `apiKey` secret bound to it.
const API_HOST: &str = "api.example.com";
/// How much of a response body `status` returns.
const MAX_BODY: usize = 4096;

struct App;

fn refuse(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

fn kv<T>(result: Result<T, key_value::KvError>) -> Result<T, AppError> {
    result.map_err(|e| refuse("storage", format!("key-value: {e:?}")))
}

/// Keeps the greeting and the apiKey of `config` (JSON, defaults applied by the host).
/// The apiKey arrives as the host's placeholder, `{kiosk-secret:/apiKey}`, never the
/// tenant's key: keeping it keeps nothing secret.
fn save_config(config: &str) -> Result<(), AppError> {
    let config: Value = serde_json::from_str(config).map_err(|e| refuse("invalid-config", e.to_string()))?;
    let greeting = config["greeting"].as_str().unwrap_or("Hello");
    kv(key_value::set("greeting", greeting.as_bytes()))?;
    match config["apiKey"].as_str() {
        Some(key) => kv(key_value::set("apiKey", key.as_bytes())),
        None => kv(key_value::delete("apiKey")).map(|_| ()),
    }
}

impl lifecycle::Guest for App {
    fn install(_ctx: CallContext, config: String) -> Result<(), AppError> {
        save_config(&config)
    }
    fn validate_config(_ctx: CallContext, _config: String) -> Result<(), AppError> {
        Ok(())
    }
    fn configure(_ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        save_config(&new)
    }
    fn upgrade(_ctx: CallContext, _from: String, config: String) -> Result<(), AppError> {
        save_config(&config)
    }
    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

impl calls::Guest for App {
    fn invoke(_ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        match operation.as_str() {
            "greet" => greet(&input),
            "status" => status(),
            _ => Err(refuse("unknown-operation", format!("no operation {operation:?}; this app has: greet, status"))),
        }
    }
}

fn greet(input: &str) -> Result<String, AppError> {
    let input: Value = serde_json::from_str(input).map_err(|e| refuse("invalid-input", e.to_string()))?;
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

/// Asks your service for its status with the tenant's key.
fn status() -> Result<String, AppError> {
    let Some(key) = kv(key_value::get("apiKey"))? else {
        return Err(refuse("not-configured", "set apiKey in the configuration first"));
    };
    // `key` is the placeholder: Kiosk writes the tenant's key in its place on the way to
    // the destination the manifest binds `/apiKey` to (and nowhere else).
    let authorization = format!("Bearer {}", String::from_utf8_lossy(&key));
    let (status, body) =
        get("/v1/status", &[("authorization", &authorization)]).map_err(|e| refuse("service-unreachable", e))?;
    Ok(json!({ "status": status, "body": String::from_utf8_lossy(&body) }).to_string())
}

/// `GET https://api.example.com{path}` with the standard wasi:http client, blocking: the
/// status and the first 4 KiB of the body, or why there is none (the host's error code,
/// e.g. `HttpRequestDenied`).
fn get(path: &str, headers: &[(&str, &str)]) -> Result<(u16, Vec<u8>), String> {
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value.as_bytes()).map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields); // a GET
    request.set_scheme(Some(&Scheme::Https)).map_err(|()| "bad scheme".to_string())?;
    request.set_authority(Some(API_HOST)).map_err(|()| "bad host".to_string())?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path".to_string())?;
    let outgoing = request.body().map_err(|()| "no request body".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?; // no body to send
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let incoming = response.consume().map_err(|()| "no response body".to_string())?;
    let stream = incoming.stream().map_err(|()| "no response body".to_string())?;
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match stream.blocking_read((MAX_BODY - body.len()) as u64) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
    Ok((response.status(), body))
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
