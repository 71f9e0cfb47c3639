//! The app manifest (`kiosk_domain::manifest`), the first thing of a partner's artifact
//! Kiosk reads: arbitrary and mutated JSON never panics; an accepted manifest, its
//! document re-serialised (compact and pretty), is accepted again and equal; every
//! refusal names a field of the manifest (or its top level).

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::Value;

use kiosk_domain::manifest::{ConfigSchema, Manifest, ManifestError, is_slug};

use crate::harness::{edited_object, fuzz, json_value, mutated};

/// Every member name of the manifest, at any depth, for generated documents.
#[rustfmt::skip]
pub const KEYS: &[&str] = &[
    "schemaVersion", "app", "name", "description", "categories", "version", "hostApi", "skus", "id", "unit",
    "operations", "outbound", "destination", "per", "config", "type", "properties", "default", "writeOnly",
    "required", "pattern", "additionalProperties", "$ref", "$defs", "items", "minimum", "maximum", "capabilities",
    "keyValue", "configUrl", "secrets", "licensing", "model", "requiresEntitlement", "limits", "memoryMiB",
    "timeoutMs", "publisher", "homepage", "support", "changelog",
];

/// The members a refusal may name first.
#[rustfmt::skip]
const TOP: &[&str] = &[
    "schemaVersion", "app", "name", "description", "categories", "version", "hostApi", "skus", "config",
    "capabilities", "licensing", "limits", "publisher", "changelog",
];

#[rustfmt::skip]
const TOKENS: &[&[u8]] = &[
    b"\"schemaVersion\": 1,", b"\"hostApi\": \"^0.1\",", b"\"hostApi\": \">=0.2.0\",", b"\"version\": \"1.0.0-rc.1\",",
    b"\"skus\": [],", b"\"writeOnly\": true,", b"\"$ref\": \"#/$defs/x\",", b"\"pattern\": \"(a+)+\\\\1\",",
    b"\"limits\": {\"memoryMiB\": 0},", b"\"capabilities\": {\"outbound\": [{\"destination\": \"https://127.0.0.1\"}]},",
    b"\"publisher\": {\"name\": \"x\", \"homepage\": \"javascript:1\"},", b"\"changelog\": \"\\u0000\",",
    b"\"categories\": [\"-x\"],",
];

/// The example app's manifest (budget-pacing, from the corpus).
pub fn example() -> Value {
    let path = crate::harness::fuzz_dir().join("corpus/manifest/plugins-examples-budget-pacing.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The example's configuration schema.
pub fn example_config() -> Value {
    example()["config"].clone()
}

/// The host API versions Kiosk serves (the newest, and the first published).
fn hosts() -> [semver::Version; 2] {
    [kiosk_runtime::world::HOST_API_VERSION, semver::Version::new(0, 1, 0)]
}

/// A manifest document: a mutated corpus file, an edited example, or any JSON.
pub fn documents() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => mutated("manifest", TOKENS),
        4 => edited_object(example(), KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => json_value(KEYS).prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
    .boxed()
}

fn root_of(field: &str) -> &str {
    field.split(['.', '[', '/']).next().unwrap_or(field)
}

pub fn check(bytes: &[u8]) -> TestCaseResult {
    for host in hosts() {
        match Manifest::parse(bytes, &host) {
            Ok(m) => accepted(bytes, &m, &host)?,
            Err(e) => refused(&e)?,
        }
    }
    Ok(())
}

fn accepted(bytes: &[u8], m: &Manifest, host: &semver::Version) -> TestCaseResult {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| TestCaseError::fail(format!("accepted, not JSON: {e}")))?;
    for text in [serde_json::to_vec(&value).unwrap(), serde_json::to_vec_pretty(&value).unwrap()] {
        let again = Manifest::parse(&text, host)
            .map_err(|e| TestCaseError::fail(format!("accepted, refused once re-serialised: {e}")))?;
        prop_assert_eq!(format!("{again:?}"), format!("{m:?}"), "re-serialised manifest differs");
    }
    prop_assert_eq!(m.schema_version, 1);
    let id = m.app_id().ok_or_else(|| TestCaseError::fail("accepted without an app id"))?;
    prop_assert_eq!(id.to_string(), m.app.clone());
    prop_assert!(!m.name.trim().is_empty());
    prop_assert!(m.categories.iter().all(|c| is_slug(c)));
    let mut ids: Vec<&str> = m.sku_ids().collect();
    prop_assert!(ids.iter().all(|id| is_slug(id)), "SKU ids are slugs");
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    prop_assert_eq!(ids.len(), n, "SKU ids are unique");
    prop_assert!(m.skus.iter().all(|s| !s.unit.trim().is_empty()));
    prop_assert!(m.skus.iter().all(|s| s.outbound.is_none() || s.operations.is_empty()));
    prop_assert!(m.limits.memory_mib != Some(0) && m.limits.timeout_ms != Some(0));
    prop_assert_eq!(m.config.get("type").and_then(Value::as_str), Some("object"));
    prop_assert!(ConfigSchema::compile(&m.config).is_ok(), "an accepted manifest's schema compiles");
    let _ = m.outbound();
    Ok(())
}

fn refused(e: &ManifestError) -> TestCaseResult {
    let text = e.to_string();
    match e {
        ManifestError::Format { path, message } => {
            prop_assert!(!message.is_empty(), "{}", text);
            // Not well-formed JSON: the place is the line and column (the path is `?`).
            let syntax = message.contains(" at line ");
            prop_assert!(
                path == "(top level)" || TOP.contains(&root_of(path)) || message.starts_with("unknown field") || syntax,
                "a format refusal names no member: {}",
                text
            );
        }
        ManifestError::Invalid { field, rule } => {
            prop_assert!(TOP.contains(&root_of(field)), "refusal names no member: {}", text);
            prop_assert!(!rule.is_empty());
            prop_assert!(text.contains(&format!("`{field}`")), "{}", text);
        }
        ManifestError::HostApi { .. } => prop_assert!(text.contains("`hostApi`"), "{}", text),
    }
    Ok(())
}

#[test]
fn manifest() {
    fuzz("manifest", documents(), |bytes| check(&bytes));
}
