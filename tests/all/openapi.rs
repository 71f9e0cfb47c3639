//! The API's contract: the OpenAPI document the routes generate (`GET /v1/openapi.json`)
//! is the committed snapshot `tests/snapshots/openapi.json`. A change to the API shows
//! up as a change of the snapshot in review; `KIOSK_UPDATE_SNAPSHOTS=1 cargo test
//! --release --test all openapi::` rewrites it.

use std::path::PathBuf;

use serde_json::Value;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots/openapi.json")
}

fn document() -> Value {
    serde_json::to_value(kiosk_server::openapi()).expect("the document serializes")
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// (path, method, operation) of every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((path.clone(), method.to_string(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_is_the_snapshot() {
    let mut actual = serde_json::to_string_pretty(&document()).unwrap();
    actual.push('\n');
    let path = snapshot_path();
    if std::env::var_os("KIOSK_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b);
        panic!(
            "the OpenAPI document differs from {} (first differing line: {:?}); if the change is \
             intended, run KIOSK_UPDATE_SNAPSHOTS=1 cargo test --release --test all openapi:: and commit the file",
            path.display(),
            first.map(|i| i + 1)
        );
    }
}

/// Every `$ref` names a schema the document defines (else generators refuse it).
#[test]
fn every_reference_resolves() {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    let dangling: Vec<&String> = found
        .iter()
        .filter(|r| r.strip_prefix("#/").is_none_or(|path| doc.pointer(&format!("/{path}")).is_none()))
        .collect();
    assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
}

/// Operation ids are unique (client generators name methods after them).
#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut seen = std::collections::BTreeMap::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId")).to_string();
        if let Some(first) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId {id} of {method} {path} is also {first}'s");
        }
    }
}

#[test]
fn every_success_has_a_schema() {
    let doc = document();
    let mut missing = Vec::new();
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !status.starts_with('2') || status == "204" {
                continue;
            }
            let content = response["content"].as_object();
            let typed = content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m.get("schema").is_some()));
            if !typed {
                missing.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert!(missing.is_empty(), "2xx responses without a schema: {missing:#?}");
}

#[test]
fn every_operation_but_health_and_the_document_needs_the_bearer_token() {
    let doc = document();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let public = ["/healthz", "/readyz", "/v1/openapi.json"];
    for (path, method, op) in operations(&doc) {
        let bearer = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if public.contains(&path.as_str()) {
            assert!(!bearer, "{method} {path} is public");
        } else {
            assert!(bearer, "{method} {path} declares the bearer security");
            assert!(op["responses"].get("401").is_some(), "{method} {path} declares 401");
        }
    }
}

#[test]
fn every_error_is_a_problem() {
    let doc = document();
    let resolve = |r: &Value| -> Value {
        match r["$ref"].as_str() {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap();
                doc["components"]["responses"][name].clone()
            }
            None => r.clone(),
        }
    };
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if !status.starts_with(['4', '5']) {
                continue;
            }
            let response = resolve(response);
            let content =
                response["content"].as_object().unwrap_or_else(|| panic!("{method} {path} {status}: content"));
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/problem+json"],
                "{method} {path} {status} is application/problem+json only"
            );
            assert_eq!(content["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem");
        }
    }
    assert!(doc["components"]["responses"]["Unauthorized"]["headers"].get("WWW-Authenticate").is_some());
}

#[test]
fn invoke_takes_any_json_value_and_partner_usage_records_are_typed() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let any = &schemas["AnyJson"];
    // One of the six JSON types, recursively, text without U+0000 at any depth.
    let types: Vec<&str> = any["oneOf"].as_array().unwrap().iter().filter_map(|t| t["type"].as_str()).collect();
    assert_eq!(types, ["object", "array", "string", "number", "boolean", "null"], "{any}");
    let object = &any["oneOf"][0];
    assert_eq!(object["additionalProperties"]["$ref"], "#/components/schemas/AnyJson", "{any}");
    assert_eq!(object["propertyNames"]["pattern"], any["oneOf"][2]["pattern"], "{any}");
    assert_eq!(any["oneOf"][1]["items"]["$ref"], "#/components/schemas/AnyJson", "{any}");
    let record = &schemas["PartnerUsageRecord"];
    let required: Vec<&str> = record["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for field in ["tenant", "app", "sku", "quantity", "timestampMs", "idempotencyKey"] {
        assert!(required.contains(&field), "{field} is required: {record}");
    }
    assert!(record["properties"].get("installation").is_some());
    assert!(!required.contains(&"installation"));
}

/// Every list is a page (`{items, next}`): no operation answers a bare array, and every
/// page is asked for with `limit` and a cursor (`after`; `since` for log lines, `before`
/// for usage windows, newest first).
#[test]
fn every_list_is_a_page() {
    let doc = document();
    let mut pages = 0;
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            for (media, content) in response["content"].as_object().into_iter().flatten() {
                let schema = &content["schema"];
                assert_ne!(schema["type"], "array", "{method} {path} {status} {media} is a bare array, not a page");
                let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/Page_"))
                else {
                    continue;
                };
                pages += 1;
                let page = &doc["components"]["schemas"][format!("Page_{name}")];
                assert_eq!(page["properties"]["items"]["type"], "array", "{method} {path}: {page}");
                assert!(page["properties"].get("next").is_some(), "{method} {path}: {page}");
                let query: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(query.contains(&"limit"), "{method} {path} takes limit: {query:?}");
                assert!(
                    ["after", "since", "before"].iter().any(|c| query.contains(c)),
                    "{method} {path} takes a cursor: {query:?}"
                );
            }
        }
    }
    assert!(pages >= 20, "{pages} pages");
}
