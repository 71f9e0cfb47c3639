//! A `kiosk:app@0.2.0` test guest that calls out over HTTP with the standard
//! `wasi:http/outgoing-handler` — as an app would (its partner's API, with the tenant's
//! key as a placeholder the host fills in) and as an attacker would (address literals,
//! undeclared hosts, floods, huge and dripping responses). Never shipped.
//!
//! `invoke` operations (input and output are JSON):
//! - `fetch {url, method?, headers?: [[name, value]], body?, betweenBytesMs?, scan?}` →
//!   `{status, bytes, body}` or `{error}`; `scan` (bytes XOR 0x5a) reports whether this
//!   instance's linear memory holds those bytes anywhere (`memoryHolds`), after the request.
//! - `many {url, count}`: `count` requests one after the other → `{ok, errors: {code: n}}`.
//! - `parallel {url, count}`: `count` requests sent at once, then awaited → same shape.
//! - `config`: the configuration `install` received (kept in key-value storage).

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside, and the
// memory scan reads the instance's own linear memory.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/app@0.2.0",
    world: "app",
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});

use std::collections::BTreeMap;

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::key_value;
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use serde_json::{Value, json};
use wasip2::http::outgoing_handler::{self, FutureIncomingResponse};
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

struct Outbound;

fn refuse(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

impl lifecycle::Guest for Outbound {
    fn install(_ctx: CallContext, config: String) -> Result<(), AppError> {
        key_value::set("config", config.as_bytes()).map_err(|e| refuse("kv", format!("{e:?}")))?;
        Ok(())
    }

    fn validate_config(_ctx: CallContext, _config: String) -> Result<(), AppError> {
        Ok(())
    }

    fn configure(_ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        key_value::set("config", new.as_bytes()).map_err(|e| refuse("kv", format!("{e:?}")))?;
        Ok(())
    }

    fn upgrade(_ctx: CallContext, _from: String, _config: String) -> Result<(), AppError> {
        Ok(())
    }

    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

/// A request as the input describes it.
struct Spec {
    scheme: Scheme,
    authority: String,
    path: String,
    method: Method,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    between_bytes_ms: Option<u64>,
}

fn spec(input: &Value) -> Result<Spec, AppError> {
    let url = input["url"].as_str().ok_or_else(|| refuse("input", "url is required"))?;
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        Some((other, rest)) => (Scheme::Other(other.to_string()), rest),
        None => return Err(refuse("input", "url needs a scheme")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let method = match input["method"].as_str().unwrap_or("GET") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "CONNECT" => Method::Connect,
        other => Method::Other(other.to_string()),
    };
    let headers = input["headers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|pair| Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.as_bytes().to_vec())))
                .collect()
        })
        .unwrap_or_default();
    let body = match &input["body"] {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Number(n) => Some(vec![b'x'; n.as_u64().unwrap_or(0) as usize]),
        _ => None,
    };
    Ok(Spec {
        scheme,
        authority: authority.to_string(),
        path: path.to_string(),
        method,
        headers,
        body,
        between_bytes_ms: input["betweenBytesMs"].as_u64(),
    })
}

/// Sends the request; the response future, or the code it was refused with at once.
fn send(spec: &Spec) -> Result<FutureIncomingResponse, String> {
    let headers = Fields::new();
    for (name, value) in &spec.headers {
        headers.append(name, value).map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&spec.method).map_err(|()| "method refused".to_string())?;
    request.set_scheme(Some(&spec.scheme)).map_err(|()| "scheme refused".to_string())?;
    request.set_authority(Some(&spec.authority)).map_err(|()| "authority refused".to_string())?;
    request.set_path_with_query(Some(&spec.path)).map_err(|()| "path refused".to_string())?;
    let body = request.body().map_err(|()| "no body".to_string())?;
    // Options only when asked: wasmtime-wasi-http 48 keeps a passed `request-options`
    // in the call's resource table until the call ends (bounded by the handle limit).
    let options = spec.between_bytes_ms.map(|ms| {
        let options = RequestOptions::new();
        let _ = options.set_between_bytes_timeout(Some(ms * 1_000_000));
        options
    });
    let future = outgoing_handler::handle(request, options).map_err(|e| code(&e))?;
    if let Some(bytes) = &spec.body {
        let stream = body.write().map_err(|()| "no body stream".to_string())?;
        for chunk in bytes.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                drop(stream);
                return match e {
                    StreamError::LastOperationFailed(err) => {
                        Err(wasip2::http::types::http_error_code(&err)
                            .map_or_else(|| err.to_debug_string(), |c| code(&c)))
                    }
                    StreamError::Closed => Err("body stream closed".into()),
                };
            }
        }
        drop(stream);
    }
    OutgoingBody::finish(body, None).map_err(|e| code(&e))?;
    Ok(future)
}

/// A response: its status, body bytes received and the first 64 KiB of the body.
type Answer = (u16, u64, Vec<u8>);

/// The response, or its error code.
fn wait(future: FutureIncomingResponse) -> Result<Answer, String> {
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(code(&e)),
        Some(Err(())) => return Err("response taken twice".into()),
        None => return Err("not ready".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "no body".to_string())?;
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let (mut total, mut kept) = (0u64, Vec::new());
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                total += chunk.len() as u64;
                if kept.len() < 64 * 1024 {
                    kept.extend_from_slice(&chunk[..chunk.len().min(64 * 1024 - kept.len())]);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => {
                let why =
                    wasip2::http::types::http_error_code(&err).map_or_else(|| err.to_debug_string(), |c| code(&c));
                return Err(format!("{why} after {total} bytes"));
            }
        }
    }
    Ok((status, total, kept))
}

fn code(e: &ErrorCode) -> String {
    format!("{e:?}")
}

/// Whether this instance's linear memory holds `needle` (given XOR 0x5a, so the input
/// itself never holds it).
fn memory_holds(xored: &[u8]) -> bool {
    if xored.is_empty() {
        return false;
    }
    let size = core::arch::wasm32::memory_size(0) * 65_536;
    'outer: for start in 1..size.saturating_sub(xored.len()) {
        for (j, x) in xored.iter().enumerate() {
            // SAFETY: every address below `memory_size` is readable linear memory.
            let byte = unsafe { std::ptr::read_volatile(std::ptr::with_exposed_provenance::<u8>(start + j)) };
            if byte != x ^ 0x5a {
                continue 'outer;
            }
        }
        return true;
    }
    false
}

fn tally(results: Vec<Result<Answer, String>>) -> Value {
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in results {
        match r {
            Ok(_) => ok += 1,
            Err(e) => *errors.entry(e.split(" after ").next().unwrap_or("").to_string()).or_default() += 1,
        }
    }
    json!({"ok": ok, "errors": errors})
}

impl calls::Guest for Outbound {
    fn invoke(_ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        let input: Value = serde_json::from_str(&input).map_err(|e| refuse("input", e.to_string()))?;
        let output = match operation.as_str() {
            "fetch" => {
                let spec = spec(&input)?;
                let mut out = match send(&spec).and_then(wait) {
                    Ok((status, bytes, body)) => {
                        json!({"status": status, "bytes": bytes, "body": String::from_utf8_lossy(&body)})
                    }
                    Err(error) => json!({"error": error}),
                };
                if let Some(scan) = input["scan"].as_array() {
                    let xored: Vec<u8> = scan.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect();
                    out["memoryHolds"] = memory_holds(&xored).into();
                }
                out
            }
            "many" => {
                let spec = spec(&input)?;
                let count = input["count"].as_u64().unwrap_or(1);
                tally((0..count).map(|_| send(&spec).and_then(wait)).collect())
            }
            "parallel" => {
                let spec = spec(&input)?;
                let count = input["count"].as_u64().unwrap_or(1);
                let sent: Vec<_> = (0..count).map(|_| send(&spec)).collect();
                tally(sent.into_iter().map(|f| f.and_then(wait)).collect())
            }
            "config" => {
                let stored = key_value::get("config").map_err(|e| refuse("kv", format!("{e:?}")))?;
                let text = String::from_utf8(stored.unwrap_or_default()).unwrap_or_default();
                serde_json::from_str(&text).unwrap_or(Value::Null)
            }
            other => return Err(refuse("unknown-operation", format!("no operation {other:?}"))),
        };
        Ok(output.to_string())
    }
}

impl usage::Guest for Outbound {
    fn report(_ctx: CallContext, _window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        Ok(Vec::new())
    }
}

export!(Outbound);
