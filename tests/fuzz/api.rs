//! Request bodies of the HTTP API (`kiosk_api`'s documents), as the server reads them:
//! through its one body extractor, `kiosk_server::Json` (a request with a body of
//! arbitrary bytes), then as the core reads a partner batch's records one by one.
//!
//! - `partner_usage`: `PartnerUsageBatch` and each `PartnerUsageRecord`.
//! - `api_bodies`: `RegistryBody`, `TenantRegistryBody` and `PrivateAppPolicy`.
//!
//! Invariants: nothing panics; a refusal is a 4xx problem (never a 500) and, for an
//! object body, names the member at fault; a body holding U+0000 anywhere is the 422
//! `invalid-text`; an accepted body reads as plain serde reads it; an accepted value
//! written back as JSON (its documented camelCase members) reads back the same.

use axum::extract::FromRequest as _;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use kiosk_api::private_apps::{PrivateAppPolicy, TenantRegistryBody};
use kiosk_api::registries::RegistryBody;
use kiosk_api::usage::{PartnerUsageBatch, PartnerUsageRecord};
use kiosk_server::ApiError;

use crate::harness::{edited_object, fuzz, json_value, mutated};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `body` through the server's extractor, as a `POST` with `Content-Type: application/json`.
fn extract<T: DeserializeOwned>(rt: &tokio::runtime::Runtime, body: &[u8]) -> Result<T, ApiError> {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/x")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .unwrap();
    rt.block_on(kiosk_server::Json::<T>::from_request(request, &())).map(|j| j.0)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// What holds of every body type: the refusal's shape, NUL, agreement with plain serde.
fn common<T: DeserializeOwned>(body: &[u8], got: &Result<T, ApiError>, what: &str) -> TestCaseResult {
    let value = serde_json::from_slice::<Value>(body).ok();
    match got {
        Ok(_) => {
            prop_assert!(value.as_ref().is_some_and(|v| !has_nul(v)), "{}: accepted a body holding NUL", what);
            // As the extractor reads it: a JSON value first (a repeated member: the last one).
            let as_value = value.clone().map(serde_json::from_value::<T>);
            prop_assert!(as_value.is_some_and(|r| r.is_ok()), "{}: accepted what serde refuses", what);
        }
        Err(e) => {
            prop_assert!(e.status.is_client_error(), "{}: status {} ({})", what, e.status, e.detail);
            prop_assert!(!e.kind.is_empty() && !e.detail.is_empty());
            if value.as_ref().is_some_and(has_nul) {
                prop_assert_eq!(e.kind, "invalid-text", "{}: NUL refused as {}", what, e.detail);
                prop_assert_eq!(e.status.as_u16(), 422);
            }
            if e.kind == "malformed-json" && value.as_ref().is_some_and(Value::is_object) {
                prop_assert!(e.field.is_some(), "{}: a refusal of an object names no member: {}", what, e.detail);
            }
        }
    }
    Ok(())
}

// --- partner usage ----------------------------------------------------------------------------

const USAGE_KEYS: &[&str] =
    &["records", "tenant", "app", "sku", "quantity", "timestampMs", "idempotencyKey", "installation"];

fn record_json(r: &PartnerUsageRecord) -> Value {
    let mut v = json!({
        "tenant": r.tenant, "app": r.app, "sku": r.sku, "quantity": r.quantity,
        "timestampMs": r.timestamp_ms, "idempotencyKey": r.idempotency_key,
    });
    if let Some(i) = &r.installation {
        v["installation"] = i.clone().into();
    }
    v
}

fn check_batch(rt: &tokio::runtime::Runtime, body: &[u8]) -> TestCaseResult {
    let got = extract::<PartnerUsageBatch>(rt, body);
    common(body, &got, "PartnerUsageBatch")?;
    let Ok(batch) = got else { return Ok(()) };
    let plain: PartnerUsageBatch = serde_json::from_value(serde_json::from_slice(body).unwrap()).unwrap();
    prop_assert_eq!(plain.records.len(), batch.records.len());
    // As the core reads each record (kiosk_core::usage, check_partner_record).
    for raw in batch.records {
        if let Ok(r) = serde_json::from_value::<PartnerUsageRecord>(raw.clone()) {
            let written = record_json(&r);
            let again: PartnerUsageRecord =
                serde_json::from_value(written.clone()).map_err(|e| TestCaseError::fail(format!("{written}: {e}")))?;
            prop_assert_eq!(format!("{again:?}"), format!("{r:?}"));
            prop_assert_eq!(record_json(&again), written);
        }
    }
    Ok(())
}

fn example_batch() -> Value {
    json!({"records": [
        {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 1000,
         "timestampMs": 1_760_000_000_000_i64, "idempotencyKey": "batch-1"},
        {"tenant": "demo", "app": "acme/budget-pacing", "sku": "rows-scanned", "quantity": 5,
         "timestampMs": 1_760_000_000_001_i64, "idempotencyKey": "batch-2", "installation": "9b2f8e4a-1c3d-4e5f-8a6b-7c8d9e0f1a2b"}
    ]})
}

#[test]
fn partner_usage() {
    let rt = runtime();
    let example = example_batch();
    let record = example["records"][0].clone();
    let strategy = prop_oneof![
        3 => mutated("partner_usage", &[b"\"quantity\": 1.5,", b"\"quantity\": \"1\",", b"\"timestampMs\": -1,", b"\"installation\": null,"]),
        2 => edited_object(example, USAGE_KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => proptest::collection::vec(edited_object(record, USAGE_KEYS), 0..4)
            .prop_map(|records| serde_json::to_vec(&json!({"records": records})).unwrap()),
        1 => json_value(USAGE_KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    fuzz("partner_usage", strategy, |body| check_batch(&rt, &body));
}

// --- other bodies -----------------------------------------------------------------------------

#[rustfmt::skip]
const BODY_KEYS: &[&str] = &[
    "insecure", "caPem", "username", "password", "token", "clientCertificatePem", "clientKeyPem", "partners",
    "blobHosts", "tokenHosts", "privateAddresses", "enabled", "maxApps", "openRanges", "plainHttp", "limits",
];

fn registry_json(b: &RegistryBody) -> Value {
    json!({
        "insecure": b.insecure, "caPem": b.ca_pem, "username": b.username, "password": b.password, "token": b.token,
        "clientCertificatePem": b.client_certificate_pem, "clientKeyPem": b.client_key_pem, "partners": b.partners,
        "blobHosts": b.blob_hosts, "tokenHosts": b.token_hosts, "privateAddresses": b.private_addresses,
    })
}

fn tenant_registry_json(b: &TenantRegistryBody) -> Value {
    json!({
        "insecure": b.insecure, "caPem": b.ca_pem, "username": b.username, "password": b.password, "token": b.token,
        "clientCertificatePem": b.client_certificate_pem, "clientKeyPem": b.client_key_pem,
        "blobHosts": b.blob_hosts, "tokenHosts": b.token_hosts,
    })
}

fn check_bodies(rt: &tokio::runtime::Runtime, body: &[u8]) -> TestCaseResult {
    let got = extract::<RegistryBody>(rt, body);
    common(body, &got, "RegistryBody")?;
    if let Ok(b) = got {
        let written = registry_json(&b);
        let again: RegistryBody =
            serde_json::from_value(written.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(registry_json(&again), written);
    }
    let got = extract::<TenantRegistryBody>(rt, body);
    common(body, &got, "TenantRegistryBody")?;
    if let Ok(b) = got {
        let written = tenant_registry_json(&b);
        let again: TenantRegistryBody =
            serde_json::from_value(written.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(tenant_registry_json(&again), written);
    }
    let got = extract::<PrivateAppPolicy>(rt, body);
    common(body, &got, "PrivateAppPolicy")?;
    if let Ok(p) = got {
        let written = serde_json::to_value(&p).unwrap();
        let again: PrivateAppPolicy =
            serde_json::from_value(written.clone()).map_err(|e| TestCaseError::fail(format!("{written}: {e}")))?;
        prop_assert_eq!(serde_json::to_value(&again).unwrap(), written);
    }
    Ok(())
}

#[test]
fn api_bodies() {
    let rt = runtime();
    let registry = json!({"username": "kiosk", "password": "s3cret", "partners": {"acme": ["acme/"]},
        "blobHosts": ["blobs.registry.example"], "tokenHosts": [], "privateAddresses": false});
    let policy = json!({"enabled": true, "maxApps": 5.0, "openRanges": ["10.20.0.0/16"], "plainHttp": false,
        "limits": {"memoryMiB": 64}});
    let strategy = prop_oneof![
        3 => mutated("api_bodies", &[b"\"maxApps\": 1e3,", b"\"maxApps\": 9.5,", b"\"maxApps\": 1e300,", b"\"partners\": {\"\": []},"]),
        2 => edited_object(registry, BODY_KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => edited_object(policy, BODY_KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => json_value(BODY_KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    fuzz("api_bodies", strategy, |body| check_bodies(&rt, &body));
}
