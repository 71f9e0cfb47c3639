//! The app manifest (SPEC §3): parsing with unknown fields refused by name, validation,
//! and the configuration schema (defaults, validation against JSON Schema 2020-12).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::limits::RequestedLimits;

/// A parsed and validated app manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    /// `partner/name`.
    pub app: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    pub version: semver::Version,
    /// Semver requirement on the WIT world version the host implements.
    pub host_api: semver::VersionReq,
    pub skus: Vec<Sku>,
    /// JSON Schema (2020-12) of the installation configuration.
    #[serde(default = "empty_object_schema")]
    pub config: Value,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub licensing: Licensing,
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Who publishes the app (catalog metadata, `catalog_meta`).
    #[serde(default)]
    pub publisher: Option<crate::catalog_meta::Publisher>,
    /// What changed in this version: plain text, shown as text (`catalog_meta`).
    #[serde(default)]
    pub changelog: Option<String>,
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

/// A billable unit the app version declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sku {
    pub id: String,
    pub unit: String,
    #[serde(default)]
    pub description: String,
    /// Operations whose every successful call meters one unit of this SKU.
    #[serde(default)]
    pub operations: Vec<String>,
    /// Metered by the host on outbound traffic to a declared destination (0.2.0 apps).
    #[serde(default)]
    pub outbound: Option<crate::egress::SkuOutbound>,
}

impl Sku {
    /// Whether the host alone meters this SKU (per operation or on outbound traffic).
    pub fn host_metered(&self) -> bool {
        !self.operations.is_empty() || self.outbound.is_some()
    }
}

/// Host capabilities the app asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub key_value: bool,
    /// What a 0.2.0 app may reach over HTTP (the most; the operator and the tenant may
    /// narrow it). Checked by `Manifest::outbound`.
    #[serde(default)]
    pub outbound: Vec<crate::egress::OutboundEntry>,
}

/// How the app is licensed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Licensing {
    #[serde(default)]
    pub model: LicensingModel,
    #[serde(default)]
    pub requires_entitlement: bool,
}

/// The pricing model of an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LicensingModel {
    #[default]
    Free,
    Usage,
    Subscription,
}

/// Why a manifest was refused. Every variant names the field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for the app manifest format: {path}: {message}")]
    Format { path: String, message: String },
    #[error("manifest field `{field}`: {rule}")]
    Invalid { field: String, rule: String },
    #[error(
        "manifest field `hostApi`: the app requires host API {required} but this host serves kiosk:app up to {host}"
    )]
    HostApi { required: semver::VersionReq, host: semver::Version },
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field: field.into(), rule: rule.into() }
}

/// Every world version a host whose newest is `newest` serves: each published minor
/// version of its major up to `newest` (a published world is never dropped).
pub fn served_worlds(newest: &semver::Version) -> impl Iterator<Item = semver::Version> + use<> {
    let newest = newest.clone();
    let first = if newest.major == 0 { 1 } else { 0 };
    (first..=newest.minor).map(move |minor| semver::Version::new(newest.major, minor, 0))
}

/// Whether `s` is a lowercase slug: 1-64 of a-z, 0-9 and '-', not starting with '-'.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Manifest {
    /// The app's id (checked by `parse`).
    pub fn app_id(&self) -> Option<crate::ids::AppId> {
        crate::ids::AppId::parse(&self.app).ok()
    }

    /// Parses and validates a manifest against the host API version `host_api`.
    pub fn parse(bytes: &[u8], host_api: &semver::Version) -> Result<Self, ManifestError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            ManifestError::Format { path, message: e.into_inner().to_string() }
        })?;
        // One JSON document: nothing may follow it but white space.
        de.end().map_err(|e| ManifestError::Format { path: "(top level)".into(), message: e.to_string() })?;
        manifest.validate(host_api)?;
        Ok(manifest)
    }

    fn validate(&self, host_api: &semver::Version) -> Result<(), ManifestError> {
        if self.schema_version != 1 {
            return Err(invalid("schemaVersion", format!("must be 1, found {}", self.schema_version)));
        }
        if crate::ids::AppId::parse(&self.app).is_err() {
            return Err(invalid(
                "app",
                format!("must be `partner/name` in lowercase letters, digits and '-', found {:?}", self.app),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        for (i, c) in self.categories.iter().enumerate() {
            if !is_slug(c) {
                return Err(invalid(format!("categories[{i}]"), format!("{c:?} is not a lowercase slug")));
            }
        }
        if served_worlds(host_api).all(|world| !self.host_api.matches(&world)) {
            return Err(ManifestError::HostApi { required: self.host_api.clone(), host: host_api.clone() });
        }
        let outbound = crate::egress::check_entries(&self.capabilities.outbound).map_err(|(f, r)| invalid(f, r))?;
        if !outbound.is_empty() && !self.host_api.matches(&semver::Version::new(0, 2, 0)) {
            return Err(invalid(
                "capabilities.outbound",
                format!("outbound HTTP needs kiosk:app@0.2.0, which `hostApi` {} excludes", self.host_api),
            ));
        }
        let mut seen = HashSet::new();
        for (i, sku) in self.skus.iter().enumerate() {
            if !is_slug(&sku.id) {
                return Err(invalid(format!("skus[{i}].id"), format!("{:?} is not a lowercase slug", sku.id)));
            }
            if !seen.insert(sku.id.as_str()) {
                return Err(invalid(format!("skus[{i}].id"), format!("SKU id {:?} is declared twice", sku.id)));
            }
            if sku.unit.trim().is_empty() {
                return Err(invalid(format!("skus[{i}].unit"), "must not be empty"));
            }
            for (j, op) in sku.operations.iter().enumerate() {
                if op.is_empty() {
                    return Err(invalid(format!("skus[{i}].operations[{j}]"), "must not be empty"));
                }
            }
            if let Some(egress) = &sku.outbound {
                if !sku.operations.is_empty() {
                    return Err(invalid(
                        format!("skus[{i}].outbound"),
                        "a SKU is metered per operation or on outbound traffic, not both",
                    ));
                }
                let declared = crate::net::Destination::parse(&egress.destination)
                    .ok()
                    .is_some_and(|d| outbound.iter().any(|o| o.target == crate::egress::Target::Fixed(d.clone())));
                if !declared {
                    return Err(invalid(
                        format!("skus[{i}].outbound.destination"),
                        format!("{:?} is not a destination of capabilities.outbound", egress.destination),
                    ));
                }
            }
        }
        let schema_bytes = serde_json::to_vec(&self.config).map_or(usize::MAX, |v| v.len());
        if schema_bytes > MAX_SCHEMA_BYTES {
            return Err(invalid(
                "config",
                format!("the configuration schema is {schema_bytes} bytes; at most {MAX_SCHEMA_BYTES} are accepted"),
            ));
        }
        if let Err(e) = jsonschema::meta::validate(&self.config) {
            return Err(invalid(format!("config{}", e.instance_path()), format!("not a valid JSON Schema: {e}")));
        }
        if self.config.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "config.type",
                "the configuration schema must describe an object (`\"type\": \"object\"`)",
            ));
        }
        ConfigSchema::compile(&self.config)?;
        crate::catalog_meta::check(self.publisher.as_ref(), self.changelog.as_deref())
            .map_err(|(f, r)| invalid(f, r))?;
        for (field, value) in
            [("limits.memoryMiB", self.limits.memory_mib), ("limits.timeoutMs", self.limits.timeout_ms)]
        {
            if value == Some(0) {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The checked `capabilities.outbound` entries (checked by `parse`, so never an
    /// error for a parsed manifest).
    pub fn outbound(&self) -> Vec<crate::egress::Outbound> {
        crate::egress::check_entries(&self.capabilities.outbound).unwrap_or_default()
    }

    /// The SKU ids this version declares.
    pub fn sku_ids(&self) -> impl Iterator<Item = &str> {
        self.skus.iter().map(|s| s.id.as_str())
    }

    /// The SKUs metered by the host for each successful call of `operation`.
    pub fn skus_for_operation<'a>(&'a self, operation: &'a str) -> impl Iterator<Item = &'a Sku> {
        self.skus.iter().filter(move |s| s.operations.iter().any(|o| o == operation))
    }
}

/// Largest configuration schema accepted at registration, bytes (serialised JSON). A
/// form of a few hundred fields fits; a schema built to exhaust the validator does not.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Largest compiled size of one `pattern`/`patternProperties` regex, bytes.
const MAX_REGEX_BYTES: usize = 1024 * 1024;

/// A compiled configuration schema.
#[derive(Debug)]
pub struct ConfigSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("configuration is not valid: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One entry per violation: `<json pointer>: <rule>`.
    pub problems: Vec<String>,
}

impl ConfigSchema {
    /// Compiles `schema` (already checked against the meta-schema). `pattern` and
    /// `patternProperties` run on the `regex` crate, whose matching time is linear in
    /// the input: a pattern it cannot run (backreferences, lookaround) is refused here,
    /// at registration, naming the schema.
    pub fn compile(schema: &Value) -> Result<Self, ManifestError> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_pattern_options(
                jsonschema::PatternOptions::regex().size_limit(MAX_REGEX_BYTES).dfa_size_limit(MAX_REGEX_BYTES),
            )
            .build(schema)
            .map_err(|e| invalid("config", format!("schema does not compile: {e}")))?;
        Ok(Self { schema: schema.clone(), validator })
    }

    /// Applies the schema's `default`s to absent properties, then validates. Returns the
    /// configuration the app will see.
    pub fn resolve(&self, mut config: Value) -> Result<Value, ConfigError> {
        apply_defaults(&self.schema, &mut config);
        use jsonschema::error::ValidationErrorKind;
        let problems: Vec<String> = self
            .validator
            .iter_errors(&config)
            .flat_map(|e| {
                let at = e.instance_path().to_string();
                // A missing or unexpected property is named by its own pointer (its name is
                // the schema's or the caller's, never a value).
                match e.kind() {
                    ValidationErrorKind::Required { property } => {
                        let name = property.as_str().map(pointer_token).unwrap_or_default();
                        return vec![format!("{at}/{name}: is required")];
                    }
                    ValidationErrorKind::AdditionalProperties { unexpected } => {
                        return unexpected
                            .iter()
                            .map(|n| format!("{at}/{}: is not allowed", pointer_token(n)))
                            .collect();
                    }
                    _ => {}
                }
                let at = if at.is_empty() { "/".to_string() } else { at };
                // The message can quote the offending value, which may be a secret: name
                // the rule by its keyword and the place, never the value.
                vec![format!("{at}: violates `{}`", schema_keyword(&e))]
            })
            .collect();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
    }

    /// The JSON pointers of the values in `config` that the schema marks `writeOnly`
    /// (secrets), wherever the mark sits: nested properties, array items and
    /// `prefixItems`, `additionalProperties`/`patternProperties`, behind local `$ref`s
    /// (`$defs`), and in `allOf`/`anyOf`/`oneOf`/`if`/`then`/`else`/`dependentSchemas`.
    /// When in doubt (a branch the value may not take, a pattern that does not compile)
    /// a value counts as secret: hiding too much is safe, leaking is not.
    pub fn secret_pointers(&self, config: &Value) -> Vec<String> {
        let mut out = Vec::new();
        collect_secrets(&self.schema, &self.schema, config, "", &mut out, 0);
        out.sort();
        out.dedup();
        // A secret inside a secret is covered by the outer one.
        let mut kept: Vec<String> = Vec::new();
        for p in out {
            if !kept.iter().any(|k| p.starts_with(&format!("{k}/"))) {
                kept.push(p);
            }
        }
        // The whole configuration is secret (`writeOnly` on the root schema, or a root the
        // walk could not follow): the root's pointer cannot be taken out of the public
        // part, so each of its members is a secret.
        if kept.iter().any(String::is_empty) {
            kept = match config {
                Value::Object(map) => map.keys().map(|k| format!("/{}", escape_pointer(k))).collect(),
                Value::Array(items) => (0..items.len()).map(|i| format!("/{i}")).collect(),
                _ => Vec::new(),
            };
            kept.sort();
        }
        kept
    }
}

/// Deepest schema nesting (and `$ref` chain) followed when looking for secrets.
const MAX_SECRET_DEPTH: u32 = 64;

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn collect_secrets(schema: &Value, root: &Value, value: &Value, at: &str, out: &mut Vec<String>, depth: u32) {
    let Some(obj) = schema.as_object() else { return };
    if depth > MAX_SECRET_DEPTH {
        // A schema this deep is refused nowhere else; err on the safe side.
        out.push(at.to_string());
        return;
    }
    if obj.get("writeOnly").and_then(Value::as_bool) == Some(true) {
        out.push(at.to_string());
        return;
    }
    let next = depth + 1;
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        match target.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(resolved) => collect_secrets(resolved, root, value, at, out, next),
            // Only local references can be resolved (the schema is self-contained).
            None => out.push(at.to_string()),
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            collect_secrets(sub, root, value, at, out, next);
        }
    }
    for key in ["if", "then", "else"] {
        if let Some(sub) = obj.get(key) {
            collect_secrets(sub, root, value, at, out, next);
        }
    }
    match value {
        Value::Object(map) => {
            let props = obj.get("properties").and_then(Value::as_object);
            let patterns = obj.get("patternProperties").and_then(Value::as_object);
            let dependent = obj.get("dependentSchemas").and_then(Value::as_object);
            for (k, v) in map {
                let here = format!("{at}/{}", escape_pointer(k));
                let mut matched = false;
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    matched = true;
                    collect_secrets(ps, root, v, &here, out, next);
                }
                for (pattern, ps) in patterns.into_iter().flatten() {
                    if regex::Regex::new(pattern).map_or(true, |re| re.is_match(k)) {
                        matched = true;
                        collect_secrets(ps, root, v, &here, out, next);
                    }
                }
                if !matched && let Some(extra) = obj.get("additionalProperties") {
                    collect_secrets(extra, root, v, &here, out, next);
                }
                if let Some(ds) = dependent.and_then(|d| d.get(k)) {
                    collect_secrets(ds, root, value, at, out, next);
                }
            }
        }
        Value::Array(items) => {
            let prefix = obj.get("prefixItems").and_then(Value::as_array);
            for (i, v) in items.iter().enumerate() {
                let here = format!("{at}/{i}");
                match prefix.and_then(|p| p.get(i)) {
                    Some(ps) => collect_secrets(ps, root, v, &here, out, next),
                    None => {
                        if let Some(items_schema) = obj.get("items") {
                            collect_secrets(items_schema, root, v, &here, out, next);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Removes the value at JSON pointer `ptr` from `value` and returns it.
pub fn take_pointer(value: &mut Value, ptr: &str) -> Option<Value> {
    let (parent, last) = ptr.rsplit_once('/')?;
    let key = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent)? {
        Value::Object(map) => map.remove(&key),
        Value::Array(items) => {
            let i: usize = key.parse().ok()?;
            // Arrays keep their shape: the secret's place holds null in the public part.
            items.get_mut(i).map(Value::take)
        }
        _ => None,
    }
}

/// Puts `v` at JSON pointer `ptr` in `value`, creating missing objects on the way
/// (array elements are only replaced, never created).
pub fn put_pointer(value: &mut Value, ptr: &str, v: Value) -> bool {
    let mut node = value;
    let mut segments: Vec<String> = ptr.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    let Some(last) = segments.pop() else { return false };
    for seg in segments {
        node = match node {
            Value::Object(map) => map.entry(seg).or_insert_with(|| Value::Object(Default::default())),
            Value::Array(items) => match seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last, v);
            true
        }
        Value::Array(items) => match last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            Some(slot) => {
                *slot = v;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// One RFC 6901 reference token.
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn schema_keyword(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.schema_path().to_string();
    path.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("schema").to_string()
}

/// Fills absent object properties with their schema `default`, recursively.
fn apply_defaults(schema: &Value, value: &mut Value) {
    let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), value.as_object_mut()) else {
        return;
    };
    for (name, prop_schema) in props {
        if !obj.contains_key(name)
            && let Some(default) = prop_schema.get("default")
        {
            obj.insert(name.clone(), default.clone());
        }
        if let Some(child) = obj.get_mut(name) {
            apply_defaults(prop_schema, child);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: semver::Version = semver::Version::new(0, 1, 0);

    fn example() -> Value {
        serde_json::from_str(include_str!("../../../../plugins-examples/budget-pacing/manifest.json")).unwrap()
    }

    fn parse(v: &Value) -> Result<Manifest, ManifestError> {
        Manifest::parse(v.to_string().as_bytes(), &HOST)
    }

    #[test]
    fn the_example_manifest_parses() {
        let m = parse(&example()).unwrap();
        assert_eq!(m.app, "acme/budget-pacing");
        assert_eq!(m.skus_for_operation("evaluate").map(|s| s.id.as_str()).collect::<Vec<_>>(), ["pacing-check"]);
    }

    #[test]
    fn a_pattern_needing_backtracking_or_an_oversized_schema_is_refused() {
        let mut v = example();
        v["config"]["properties"]["threshold"] = json!({"type": "string", "pattern": "^(\\w+)*\\1$"});
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("config") && err.contains("schema does not compile"), "{err}");
        // Patterns that backtrack catastrophically elsewhere compile and run in linear time.
        v["config"]["properties"]["threshold"] = json!({"type": "string", "pattern": "^(a+)+$"});
        let m = parse(&v).unwrap();
        let schema = ConfigSchema::compile(&m.config).unwrap();
        let started = std::time::Instant::now();
        let refused = schema.resolve(json!({"apiKey": "k", "threshold": format!("{}!", "a".repeat(100_000))}));
        assert!(refused.unwrap_err().problems[0].contains("/threshold: violates `pattern`"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        let mut big = example();
        let props: serde_json::Map<String, Value> =
            (0..3_000).map(|i| (format!("field{i}"), json!({"type": "string", "description": "x"}))).collect();
        big["config"]["properties"] = Value::Object(props);
        let err = parse(&big).unwrap_err().to_string();
        assert!(err.contains("at most 65536 are accepted"), "{err}");
    }

    #[test]
    fn secrets_are_found_wherever_the_schema_marks_them() {
        let schema = ConfigSchema::compile(&json!({
            "type": "object",
            "$defs": {"password": {"type": "string", "writeOnly": true}},
            "properties": {
                "auth": {"type": "object", "properties": {"token": {"type": "string", "writeOnly": true}, "user": {"type": "string"}}},
                "db": {"type": "object", "properties": {"password": {"$ref": "#/$defs/password"}}},
                "servers": {"type": "array", "items": {"type": "object", "properties": {"key": {"writeOnly": true}}}},
                "either": {"anyOf": [{"type": "string", "writeOnly": true}, {"type": "number"}]},
                "headers": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": true}},
                "plain": {"type": "string"}
            }
        }))
        .unwrap();
        let config = json!({
            "auth": {"token": "t", "user": "u"}, "db": {"password": "p"},
            "servers": [{"key": "k0"}, {"key": "k1"}], "either": "e", "headers": {"x-api/key": "h"}, "plain": "ok"
        });
        assert_eq!(
            schema.secret_pointers(&config),
            ["/auth/token", "/db/password", "/either", "/headers/x-api~1key", "/servers/0/key", "/servers/1/key"]
        );
        let mut public = config.clone();
        let secrets: Vec<(String, Value)> = schema
            .secret_pointers(&config)
            .into_iter()
            .map(|p| {
                let v = take_pointer(&mut public, &p).unwrap();
                (p, v)
            })
            .collect();
        assert_eq!(public, json!({"auth": {"user": "u"}, "db": {}, "servers": [{}, {}], "headers": {}, "plain": "ok"}));
        for (p, v) in secrets {
            assert!(put_pointer(&mut public, &p, v));
        }
        assert_eq!(public, config);
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let mut v = example();
        v["skus"][1]["price"] = 3.into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("skus[1]") && err.contains("unknown field `price`"), "{err}");
    }

    #[test]
    fn catalog_metadata_is_optional_and_every_refusal_names_its_field() {
        let mut v = example();
        v["publisher"] = json!({"name": "Acme Apps", "homepage": "https://acme.example/apps"});
        v["changelog"] = "Faster checks.\n- <b>markup</b> stays text".into();
        let m = parse(&v).unwrap();
        assert_eq!(m.publisher.unwrap().homepage.as_deref(), Some("https://acme.example/apps"));
        v["publisher"]["logo"] = "x".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("publisher") && err.contains("unknown field `logo`"), "{err}");
        v["publisher"] = json!({"name": "Acme", "homepage": "javascript:alert(1)"});
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("`publisher.homepage`") && err.contains("https://"), "{err}");
        v["publisher"] = json!({"name": "Acme"});
        v["changelog"] = "a\u{0}b".into();
        assert!(parse(&v).unwrap_err().to_string().contains("`changelog`"));
    }

    #[test]
    fn duplicate_sku_is_refused() {
        let mut v = example();
        v["skus"][1]["id"] = "pacing-check".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("skus[1].id") && err.contains("declared twice"), "{err}");
    }

    #[test]
    fn host_api_range_must_be_met() {
        let mut v = example();
        v["hostApi"] = ">=0.2.0".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("requires host API >=0.2.0") && err.contains("up to 0.1.0"), "{err}");
    }

    #[test]
    fn a_host_serves_every_published_world_and_outbound_needs_0_2() {
        let newest = semver::Version::new(0, 2, 0);
        let mut v = example();
        assert!(Manifest::parse(v.to_string().as_bytes(), &newest).is_ok(), "0.1.0 apps stay served");
        v["capabilities"]["outbound"] = serde_json::json!([{"destination": "https://api.acme.example"}]);
        let err = Manifest::parse(v.to_string().as_bytes(), &newest).unwrap_err().to_string();
        assert!(err.contains("capabilities.outbound") && err.contains("0.2.0"), "{err}");
        v["hostApi"] = ">=0.2.0, <0.3.0".into();
        assert!(Manifest::parse(v.to_string().as_bytes(), &newest).is_ok());
        v["capabilities"]["outbound"] = serde_json::json!([{"destination": "https://127.1"}]);
        let err = Manifest::parse(v.to_string().as_bytes(), &newest).unwrap_err().to_string();
        assert!(err.contains("capabilities.outbound[0].destination"), "{err}");
    }

    #[test]
    fn config_must_be_a_json_schema() {
        let mut v = example();
        v["config"]["properties"]["threshold"]["type"] = "decimal".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("config") && err.contains("not a valid JSON Schema"), "{err}");
    }

    #[test]
    fn bad_semver_is_named() {
        let mut v = example();
        v["version"] = "1.4".into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn config_defaults_apply_and_violations_name_the_field_not_the_secret() {
        let m = parse(&example()).unwrap();
        let schema = ConfigSchema::compile(&m.config).unwrap();
        let config = schema.resolve(serde_json::json!({"apiKey": "k"})).unwrap();
        assert_eq!(config["threshold"], 0.1);
        let err = schema.resolve(serde_json::json!({"apiKey": "", "threshold": 3})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/threshold: violates `maximum`"), "{text}");
        assert!(text.contains("/apiKey: violates `minLength`"), "{text}");
        let err = schema.resolve(serde_json::json!({"threshold": 0.2})).unwrap_err();
        assert!(err.to_string().contains("/apiKey: is required"), "{err}");
        let err = schema.resolve(serde_json::json!({"apiKey": "k", "extra/one": 1})).unwrap_err();
        assert!(err.to_string().contains("/extra~1one: is not allowed"), "{err}");
        assert_eq!(schema.secret_pointers(&json!({"apiKey": "k", "threshold": 1})), ["/apiKey"]);
    }
}
