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
}

/// Host capabilities the app asks for.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub key_value: bool,
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
    #[error("manifest field `hostApi`: the app requires host API {required} but this host implements {host}")]
    HostApi { required: semver::VersionReq, host: semver::Version },
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field: field.into(), rule: rule.into() }
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Manifest {
    /// Parses and validates a manifest against the host API version `host_api`.
    pub fn parse(bytes: &[u8], host_api: &semver::Version) -> Result<Self, ManifestError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            ManifestError::Format { path, message: e.into_inner().to_string() }
        })?;
        manifest.validate(host_api)?;
        Ok(manifest)
    }

    fn validate(&self, host_api: &semver::Version) -> Result<(), ManifestError> {
        if self.schema_version != 1 {
            return Err(invalid("schemaVersion", format!("must be 1, found {}", self.schema_version)));
        }
        match self.app.split_once('/') {
            Some((partner, name)) if is_slug(partner) && is_slug(name) => {}
            _ => {
                return Err(invalid(
                    "app",
                    format!("must be `partner/name` in lowercase letters, digits and '-', found {:?}", self.app),
                ));
            }
        }
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        for (i, c) in self.categories.iter().enumerate() {
            if !is_slug(c) {
                return Err(invalid(format!("categories[{i}]"), format!("{c:?} is not a lowercase slug")));
            }
        }
        if !self.host_api.matches(host_api) {
            return Err(ManifestError::HostApi { required: self.host_api.clone(), host: host_api.clone() });
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
        for (field, value) in
            [("limits.memoryMiB", self.limits.memory_mib), ("limits.timeoutMs", self.limits.timeout_ms)]
        {
            if value == Some(0) {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
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
        let problems: Vec<String> = self
            .validator
            .iter_errors(&config)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                // The message can quote the offending value, which may be a secret: name
                // the rule by its keyword and the place, never the value.
                format!("{at}: violates `{}`", schema_keyword(&e))
            })
            .collect();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError { problems }) }
    }

    /// The names of the `writeOnly` (secret) top-level properties.
    pub fn secret_properties(&self) -> Vec<String> {
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, p)| p.get("writeOnly").and_then(Value::as_bool) == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
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
        serde_json::from_str(include_str!("../../plugins-examples/budget-pacing/manifest.json")).unwrap()
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
    fn unknown_field_is_named_with_its_path() {
        let mut v = example();
        v["skus"][1]["price"] = 3.into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("skus[1]") && err.contains("unknown field `price`"), "{err}");
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
        assert!(err.contains("requires host API >=0.2.0") && err.contains("implements 0.1.0"), "{err}");
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
        assert!(err.to_string().contains("/: violates `required`"), "{err}");
        assert_eq!(schema.secret_properties(), ["apiKey"]);
    }
}
