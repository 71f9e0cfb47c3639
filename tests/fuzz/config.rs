//! An installation's configuration (`kiosk_domain::manifest::ConfigSchema`) and its
//! secrets at rest (`kiosk_core::seal::Sealer`), as `Kiosk::set_config` and
//! `full_config` use them: a schema reaches `ConfigSchema` only through a parsed
//! manifest, so each case embeds its schema in the example manifest first.
//!
//! Invariants: nothing panics; a resolved configuration keeps what the tenant gave, has
//! every top-level default and resolves to itself again; a refusal names places and
//! rules, never a value; the secret (`writeOnly`) values, split out by pointer and
//! sealed, are absent from the public part and from the sealed bytes, and open and put
//! back to exactly the resolved configuration; a tampered sealed value (a bit flipped,
//! cut, extended, another installation, another key) is refused, never panics.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use kiosk_core::seal::Sealer;
use kiosk_domain::manifest::{ConfigSchema, Manifest, put_pointer, take_pointer};

use crate::harness::{fuzz, json_value, text};
use crate::json_input;

/// Property names schemas and configurations share (with pointer escapes in them).
const NAMES: &[&str] = &["apiKey", "threshold", "auth", "token", "servers", "key", "headers", "a/b", "x~y", "~1", ""];

/// How a sealed value is tampered with.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Tamper {
    FlipBit(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    OtherContext,
    OtherKey,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfigCase {
    schema: Value,
    config: Value,
    tamper: Tamper,
}

json_input!(ConfigCase);

fn name() -> BoxedStrategy<String> {
    prop_oneof![4 => prop::sample::select(NAMES).prop_map(str::to_string), 1 => text()].boxed()
}

/// A secret value: distinctive text, or any JSON.
fn secret_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => "[a-zA-Z0-9]{12,24}".prop_map(|s| Value::String(format!("sk-live-{s}"))),
        1 => json_value(NAMES),
    ]
    .boxed()
}

fn leaf_schema() -> BoxedStrategy<Value> {
    let ty = prop::sample::select(vec!["string", "number", "integer", "boolean", "null"]);
    (ty, any::<bool>(), proptest::option::of(json_value(NAMES)), 0u8..4)
        .prop_map(|(ty, write_only, default, extra)| {
            let mut s = json!({"type": ty});
            if write_only {
                s["writeOnly"] = true.into();
            }
            if let Some(d) = default {
                s["default"] = d;
            }
            match (ty, extra) {
                ("string", 1) => s["minLength"] = 1.into(),
                ("string", 2) => s["pattern"] = "^[a-z-]+$".into(),
                ("number" | "integer", 1) => s["maximum"] = 1.into(),
                ("number" | "integer", 2) => s["minimum"] = 0.into(),
                _ => {}
            }
            s
        })
        .boxed()
}

fn sub_schema() -> BoxedStrategy<Value> {
    leaf_schema()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                3 => (proptest::collection::btree_map(name(), inner.clone(), 0..4), proptest::collection::vec(name(), 0..2),
                      proptest::option::of(prop_oneof![any::<bool>().prop_map(Value::Bool), inner.clone()]), any::<bool>())
                    .prop_map(|(props, required, additional, write_only)| {
                        let mut s = json!({"type": "object", "properties": Map::from_iter(props), "required": required});
                        if let Some(a) = additional {
                            s["additionalProperties"] = a;
                        }
                        if write_only {
                            s["writeOnly"] = true.into();
                        }
                        s
                    }),
                1 => (inner.clone(), proptest::collection::vec(inner.clone(), 0..2))
                    .prop_map(|(items, prefix)| json!({"type": "array", "items": items, "prefixItems": prefix})),
                1 => proptest::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"anyOf": v})),
                1 => proptest::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"allOf": v})),
                1 => Just(json!({"$ref": "#/$defs/secret"})),
                1 => Just(json!({"$ref": "#"})),
                1 => inner.prop_map(|s| json!({"type": "object", "patternProperties": {"^x": s}})),
            ]
        })
        .boxed()
}

/// A root schema: an object with properties, sometimes recursive or secret as a whole.
fn schema() -> BoxedStrategy<Value> {
    (
        proptest::collection::btree_map(name(), sub_schema(), 0..6),
        proptest::collection::vec(name(), 0..3),
        proptest::option::of(any::<bool>()),
        0u8..12,
    )
        .prop_map(|(props, required, additional, extra)| {
            let mut s = json!({
                "type": "object",
                "$defs": {"secret": {"type": "string", "writeOnly": true}},
                "properties": Map::from_iter(props),
                "required": required,
            });
            if let Some(a) = additional {
                s["additionalProperties"] = a.into();
            }
            match extra {
                0 => s["writeOnly"] = true.into(),
                1 => s["$ref"] = "#/$defs/secret".into(),
                2 => s["allOf"] = json!([{"writeOnly": true}]),
                3 => s["$ref"] = "#".into(),
                _ => {}
            }
            s
        })
        .boxed()
}

/// A configuration: members named like the schema's, values often secrets.
fn configs() -> BoxedStrategy<Value> {
    let member = prop_oneof![
        2 => secret_value(),
        1 => proptest::collection::btree_map(name(), secret_value(), 0..3).prop_map(|m| Value::Object(Map::from_iter(m))),
        1 => proptest::collection::vec(
                proptest::collection::btree_map(name(), secret_value(), 0..3).prop_map(|m| Value::Object(Map::from_iter(m))), 0..3)
            .prop_map(Value::Array),
    ];
    prop_oneof![
        6 => proptest::collection::btree_map(name(), member, 0..6).prop_map(|m| Value::Object(Map::from_iter(m))),
        1 => json_value(NAMES),
    ]
    .boxed()
}

fn tamper() -> BoxedStrategy<Tamper> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Tamper::FlipBit(i.index(1 << 16), b)),
        1 => any::<Index>().prop_map(|i| Tamper::Truncate(i.index(1 << 16))),
        1 => proptest::collection::vec(any::<u8>(), 1..4).prop_map(Tamper::Append),
        1 => Just(Tamper::OtherContext),
        1 => Just(Tamper::OtherKey),
    ]
    .boxed()
}

fn cases() -> BoxedStrategy<ConfigCase> {
    let example_schema = crate::manifest::example_config();
    prop_oneof![
        4 => (schema(), configs(), tamper()).prop_map(|(schema, config, tamper)| ConfigCase { schema, config, tamper }),
        1 => (configs(), tamper()).prop_map(move |(config, tamper)| ConfigCase { schema: example_schema.clone(), config, tamper }),
        1 => (json_value(NAMES), json_value(NAMES), tamper()).prop_map(|(schema, config, tamper)| ConfigCase { schema, config, tamper }),
    ]
    .boxed()
}

/// Whether `whole` holds everything `part` does (objects may have more members).
fn holds(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p.iter().all(|(k, v)| w.get(k).is_some_and(|wv| holds(wv, v))),
        _ => whole == part,
    }
}

/// Every string in `value` (members and items), for checks that none leaks.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn check(case: ConfigCase) -> TestCaseResult {
    let mut manifest = crate::manifest::example();
    manifest["config"] = case.schema.clone();
    let Ok(m) = Manifest::parse(manifest.to_string().as_bytes(), &kiosk_runtime::world::HOST_API_VERSION) else {
        return Ok(());
    };
    let schema = ConfigSchema::compile(&m.config).map_err(|e| TestCaseError::fail(format!("accepted schema: {e}")))?;
    let resolved = match schema.resolve(case.config.clone()) {
        Ok(resolved) => resolved,
        Err(e) => {
            let mut values = Vec::new();
            strings(&case.config, &mut values);
            let names = m.config.to_string();
            for problem in &e.problems {
                prop_assert!(problem.starts_with('/') && problem.contains(": "), "problem {:?}", problem);
                for v in values.iter().filter(|v| v.starts_with("sk-live-") && !names.contains(v.as_str())) {
                    prop_assert!(!problem.contains(v.as_str()), "problem {:?} quotes the value {:?}", problem, v);
                }
            }
            prop_assert!(!e.problems.is_empty());
            return Ok(());
        }
    };
    prop_assert!(holds(&resolved, &case.config), "resolving lost or changed a given value: {}", resolved);
    if let (Some(props), Some(given), Some(out)) =
        (m.config.get("properties").and_then(Value::as_object), case.config.as_object(), resolved.as_object())
    {
        for (name, prop) in props {
            if let Some(default) = prop.get("default").filter(|_| !given.contains_key(name)) {
                prop_assert!(out.get(name).is_some_and(|v| holds(v, default)), "default of {:?} not applied", name);
            }
        }
    }
    let again =
        schema.resolve(resolved.clone()).map_err(|e| TestCaseError::fail(format!("resolved config refused: {e}")))?;
    prop_assert_eq!(&again, &resolved, "resolving is not idempotent");

    // Sealing, as `Kiosk::set_config` and `full_config` do it.
    let pointers = schema.secret_pointers(&resolved);
    let mut public = resolved.clone();
    let mut secrets = Map::new();
    for ptr in &pointers {
        if let Some(v) = take_pointer(&mut public, ptr) {
            secrets.insert(ptr.clone(), v);
        }
    }
    for ptr in &pointers {
        prop_assert!(
            public.pointer(ptr).is_none_or(Value::is_null),
            "secret {:?} is still in the public part: {}",
            ptr,
            public
        );
    }
    let public_text = public.to_string();
    let stored: Value = serde_json::from_str(&public_text).unwrap();
    prop_assert_eq!(&stored, &public, "the public part does not read back as written");
    let plain = Value::Object(secrets.clone()).to_string();
    let sealer = Sealer::from_hex(KEY).unwrap();
    let context = "tenant-1/installation-1";
    let sealed = sealer.seal(plain.as_bytes(), context);
    let mut secret_texts = Vec::new();
    strings(&Value::Object(secrets.clone()), &mut secret_texts);
    for s in secret_texts.iter().filter(|s| s.len() >= 12) {
        prop_assert!(!sealed.windows(s.len()).any(|w| w == s.as_bytes()), "sealed bytes hold the secret {:?}", s);
    }
    let opened = sealer.open(&sealed, context).map_err(TestCaseError::fail)?;
    prop_assert_eq!(&opened, plain.as_bytes());
    let reopened: Map<String, Value> = serde_json::from_slice(&opened).unwrap();
    let mut full = stored;
    for (ptr, v) in reopened {
        prop_assert!(put_pointer(&mut full, &ptr, v), "secret {:?} could not be put back", ptr);
    }
    prop_assert_eq!(&full, &resolved, "public part plus secrets is not the configuration");

    // Tampered: refused, never panics.
    let mut bad = sealed.clone();
    let (bad_context, bad_sealer) = match &case.tamper {
        Tamper::FlipBit(i, bit) => {
            let i = i % bad.len();
            bad[i] ^= 1 << bit;
            (context, sealer.clone())
        }
        Tamper::Truncate(n) => {
            bad.truncate(n % bad.len());
            (context, sealer.clone())
        }
        Tamper::Append(extra) => {
            bad.extend(extra);
            (context, sealer.clone())
        }
        Tamper::OtherContext => ("tenant-1/installation-2", sealer.clone()),
        Tamper::OtherKey => (context, Sealer::from_hex(OTHER_KEY).unwrap()),
    };
    prop_assert!(bad_sealer.open(&bad, bad_context).is_err(), "a tampered sealed value opened: {:?}", case.tamper);
    Ok(())
}

#[test]
fn config() {
    fuzz("config", cases(), check);
}
