//! Sandbox limits: the operator's ceiling, the app's request, and the effective limits
//! of one call. An app's request or a tenant override can only tighten the ceiling.

use serde::{Deserialize, Serialize};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

/// Operator-wide sandbox limits (the `[sandbox]` table of the operator config).
/// Each field's default is in `Default` with the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SandboxLimits {
    /// Linear memory per instance, MiB.
    pub memory_mib: u64,
    /// Wall time per call, milliseconds.
    pub timeout_ms: u64,
    /// Fuel per call (instruction budget); `None` disables fuel metering.
    pub fuel: Option<u64>,
    /// Wasm stack per call, KiB (engine-wide).
    pub max_wasm_stack_kib: u64,
    /// Elements per table.
    pub table_elements: u64,
    /// Tables per component instance.
    pub tables: u32,
    /// Linear memories per component instance.
    pub memories: u32,
    /// Core instances per component instance.
    pub instances: u32,
    /// Bytes of input per call.
    pub max_input_bytes: u64,
    /// Bytes of output per call.
    pub max_output_bytes: u64,
    /// Bytes of log text per call; more fails the call.
    pub max_log_bytes_per_call: u64,
    /// Bytes of log text kept per installation (oldest lines dropped first).
    pub log_buffer_bytes: u64,
    /// Key-value bytes (keys + values) per installation.
    pub kv_quota_bytes: u64,
    /// Key-value bytes of all of one tenant's installations together (a tenant's own
    /// quota, `PUT /v1/tenants/{t}/quotas`, may only be lower).
    pub tenant_kv_bytes: u64,
    /// Installations one tenant may have at once (its own quota may only be lower).
    pub tenant_installations: u64,
    /// Percent (1-100) of the collector's concurrent report calls (`PARALLELISM` per
    /// replica) one tenant's installations may hold at once (its own may only be lower).
    pub tenant_collection_share: u64,
    /// Longest key-value key, bytes.
    pub kv_max_key_bytes: u32,
    /// Usage events one call may record through `metering.record-usage`.
    pub max_usage_events_per_call: u32,
    /// Sandboxes that can exist at once (pooling allocator slots).
    pub max_concurrent_instances: u32,
    /// Bytes one `wasi:random` call may ask for.
    pub max_random_bytes: u64,
    /// Resource handles (WASI streams, pollables, component handles) a call may hold.
    pub max_handles: u32,
    /// Bytes the host copies out of the guest in one host call or one export result.
    pub max_host_copy_bytes: u64,
    /// `[sandbox.defaults]`: what a call gets when no app cap, manifest or tenant
    /// override asks for less; each at most its ceiling (the values above).
    pub defaults: LimitValues,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            // Enough for a Rust app working on a few MB of JSON; apps may ask for less.
            memory_mib: 64,
            // Marketplace calls are interactive; a second is generous.
            timeout_ms: 1_000,
            // Epoch interruption already bounds time; fuel costs ~10% speed, so opt-in.
            fuel: None,
            // 512 KiB allows deep but not unbounded recursion; wasmtime's default.
            max_wasm_stack_kib: 512,
            // Rust components use a few hundred entries; a ComponentizeJS (StarlingMonkey)
            // component needs 7,694 in its function table, so 20,000 leaves room for it
            // and for bigger JS apps.
            table_elements: 20_000,
            // A wasm32-wasip2 Rust component has 2-3 tables across its core instances;
            // componentize-py and ComponentizeJS components share one function table
            // between their linked modules, so 8 is ample.
            tables: 8,
            // Components built today have one memory (adapters and componentize-py's
            // linked libraries import the main module's memory).
            memories: 2,
            // A Rust component is 3-5 core instances (main, shims, fixups); a
            // componentize-py component is 14 (libpython, libc, its linked libraries,
            // adapter and shims), so 32 runs Python apps with room to spare.
            instances: 32,
            // JSON inputs of marketplace operations are small; 1 MiB is generous.
            max_input_bytes: MIB,
            max_output_bytes: MIB,
            // Logs are for diagnostics, not data transfer.
            max_log_bytes_per_call: 64 * 1024,
            log_buffer_bytes: 256 * 1024,
            // Config, cursors and small lists; bigger data belongs in the partner's backend.
            kv_quota_bytes: MIB,
            // A quarter of what a full installation quota of full installations would
            // hold: one tenant cannot make the operator store more than this.
            tenant_kv_bytes: 256 * MIB,
            // Tens of apps, or an installation per campaign, fit; a script creating
            // installations in a loop stops here.
            tenant_installations: 1_000,
            // Four tenants can fill the collector, one cannot take it all.
            tenant_collection_share: 25,
            kv_max_key_bytes: 512,
            max_usage_events_per_call: 1_000,
            // Two cores serve far fewer concurrent calls than this; slots are cheap
            // virtual memory reservations.
            max_concurrent_instances: 256,
            // UUIDs and nonces need bytes, not megabytes; wasmtime's default is 64 MiB.
            max_random_bytes: 64 * 1024,
            // A call holds a handful of streams and pollables; wasmtime allows ~1M.
            max_handles: 1_000,
            // Above the input/output caps (1 MiB each) with room for a key-value value;
            // wasmtime's default of 128 MiB would let one call make the host allocate that.
            max_host_copy_bytes: 4 * MIB,
            // No defaults below the ceilings unless the operator sets them.
            defaults: LimitValues::default(),
        }
    }
}

/// What an app version's manifest asks for (`limits` in SPEC §3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestedLimits {
    /// Linear memory, MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: Option<u64>,
    /// Wall time per call, milliseconds.
    pub timeout_ms: Option<u64>,
}

/// The limits one call runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLimits {
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
    pub table_elements: u64,
    pub tables: u32,
    pub memories: u32,
    pub instances: u32,
    pub max_input_bytes: u64,
    pub max_output_bytes: u64,
    pub max_log_bytes_per_call: u64,
    pub kv_quota_bytes: u64,
    pub kv_max_key_bytes: u32,
    pub max_usage_events_per_call: u32,
    pub max_random_bytes: u64,
    pub max_handles: u32,
    pub max_host_copy_bytes: u64,
}

impl SandboxLimits {
    /// The limits for calls of an app that asked for `requested`: each value is the
    /// smaller of the operator's ceiling and the request.
    pub fn for_app(&self, requested: &RequestedLimits) -> CallLimits {
        let tighten = |ceiling: u64, asked: Option<u64>| asked.map_or(ceiling, |a| a.min(ceiling));
        CallLimits {
            memory_bytes: tighten(self.memory_mib, requested.memory_mib) * MIB,
            timeout_ms: tighten(self.timeout_ms, requested.timeout_ms),
            fuel: self.fuel,
            table_elements: self.table_elements,
            tables: self.tables,
            memories: self.memories,
            instances: self.instances,
            max_input_bytes: self.max_input_bytes,
            max_output_bytes: self.max_output_bytes,
            max_log_bytes_per_call: self.max_log_bytes_per_call,
            kv_quota_bytes: self.kv_quota_bytes,
            kv_max_key_bytes: self.kv_max_key_bytes,
            max_usage_events_per_call: self.max_usage_events_per_call,
            max_random_bytes: self.max_random_bytes,
            max_handles: self.max_handles,
            max_host_copy_bytes: self.max_host_copy_bytes,
        }
    }

    /// Checks that the limits can run anything at all.
    pub fn validate(&self) -> Result<(), String> {
        let positive: [(&str, u64); 11] = [
            ("tenant-kv-bytes", self.tenant_kv_bytes),
            ("tenant-installations", self.tenant_installations),
            ("memory-mib", self.memory_mib),
            ("timeout-ms", self.timeout_ms),
            ("max-wasm-stack-kib", self.max_wasm_stack_kib),
            ("table-elements", self.table_elements),
            ("instances", u64::from(self.instances)),
            ("max-concurrent-instances", u64::from(self.max_concurrent_instances)),
            ("max-output-bytes", self.max_output_bytes),
            ("max-handles", u64::from(self.max_handles)),
            ("max-host-copy-bytes", self.max_host_copy_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("sandbox.{name} must be greater than 0"));
            }
        }
        if !(1..=100).contains(&self.tenant_collection_share) {
            return Err(format!(
                "sandbox.tenant-collection-share is {} but must be a percent from 1 to 100",
                self.tenant_collection_share
            ));
        }
        if self.memory_mib > 4096 {
            return Err(format!("sandbox.memory-mib is {} but wasm32 memories hold at most 4096 MiB", self.memory_mib));
        }
        let biggest_copy = self.max_input_bytes.max(self.max_output_bytes).max(self.kv_quota_bytes);
        if self.max_host_copy_bytes < biggest_copy {
            return Err(format!(
                "sandbox.max-host-copy-bytes is {} but must be at least the largest input, output or key-value \
                 quota ({biggest_copy} bytes), or such calls could never complete",
                self.max_host_copy_bytes
            ));
        }
        if self.timeout_ms > 3_600_000 {
            return Err(format!("sandbox.timeout-ms is {} but a call may last at most one hour", self.timeout_ms));
        }
        if self.fuel == Some(0) {
            return Err("sandbox.fuel must be greater than 0 (omit it to disable fuel)".into());
        }
        self.defaults.check(self).map_err(|e| format!("sandbox.defaults: {e}"))?;
        Ok(())
    }
}

// --- layers -------------------------------------------------------------------------

/// A limit that can be layered per call below its ceiling: operator defaults, per-app
/// caps, the manifest's request and per-tenant overrides each only tighten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    MemoryMib,
    TimeoutMs,
    Fuel,
    MaxInputBytes,
    MaxOutputBytes,
    MaxLogBytesPerCall,
    KvQuotaBytes,
    MaxUsageEventsPerCall,
    TableElements,
    Instances,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::MemoryMib,
        Limit::TimeoutMs,
        Limit::Fuel,
        Limit::MaxInputBytes,
        Limit::MaxOutputBytes,
        Limit::MaxLogBytesPerCall,
        Limit::KvQuotaBytes,
        Limit::MaxUsageEventsPerCall,
        Limit::TableElements,
        Limit::Instances,
    ];

    /// The name in the API (and accepted in `[sandbox.defaults]`).
    pub fn name(self) -> &'static str {
        match self {
            Limit::MemoryMib => "memoryMiB",
            Limit::TimeoutMs => "timeoutMs",
            Limit::Fuel => "fuel",
            Limit::MaxInputBytes => "maxInputBytes",
            Limit::MaxOutputBytes => "maxOutputBytes",
            Limit::MaxLogBytesPerCall => "maxLogBytesPerCall",
            Limit::KvQuotaBytes => "kvQuotaBytes",
            Limit::MaxUsageEventsPerCall => "maxUsageEventsPerCall",
            Limit::TableElements => "tableElements",
            Limit::Instances => "instances",
        }
    }

    /// The unit, as messages show it after a value.
    pub fn unit(self) -> &'static str {
        match self {
            Limit::MemoryMib => " MiB",
            Limit::TimeoutMs => " ms",
            Limit::Fuel => " fuel",
            Limit::MaxInputBytes | Limit::MaxOutputBytes | Limit::MaxLogBytesPerCall | Limit::KvQuotaBytes => " bytes",
            Limit::MaxUsageEventsPerCall => " events",
            Limit::TableElements => " elements",
            Limit::Instances => " instances",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The operator's ceiling; `None` for fuel when the operator set no fuel budget
    /// (fuel is then off engine-wide and cannot be layered).
    pub fn ceiling(self, c: &SandboxLimits) -> Option<u64> {
        Some(match self {
            Limit::MemoryMib => c.memory_mib,
            Limit::TimeoutMs => c.timeout_ms,
            Limit::Fuel => return c.fuel,
            Limit::MaxInputBytes => c.max_input_bytes,
            Limit::MaxOutputBytes => c.max_output_bytes,
            Limit::MaxLogBytesPerCall => c.max_log_bytes_per_call,
            Limit::KvQuotaBytes => c.kv_quota_bytes,
            Limit::MaxUsageEventsPerCall => u64::from(c.max_usage_events_per_call),
            Limit::TableElements => c.table_elements,
            Limit::Instances => u64::from(c.instances),
        })
    }
}

/// Values of one layer (operator defaults, an app's cap, a tenant's override): absent
/// means "inherit". Stored as this JSON in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitValues {
    #[serde(rename = "memoryMiB", alias = "memory-mib", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(alias = "timeout-ms", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(alias = "max-input-bytes", skip_serializing_if = "Option::is_none")]
    pub max_input_bytes: Option<u64>,
    #[serde(alias = "max-output-bytes", skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    #[serde(alias = "max-log-bytes-per-call", skip_serializing_if = "Option::is_none")]
    pub max_log_bytes_per_call: Option<u64>,
    #[serde(alias = "kv-quota-bytes", skip_serializing_if = "Option::is_none")]
    pub kv_quota_bytes: Option<u64>,
    #[serde(alias = "max-usage-events-per-call", skip_serializing_if = "Option::is_none")]
    pub max_usage_events_per_call: Option<u64>,
    #[serde(alias = "table-elements", skip_serializing_if = "Option::is_none")]
    pub table_elements: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
}

/// A layer's value refused: names the field; `above_ceiling` when it exceeds the
/// operator's ceiling (else it is not a valid number at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct LimitError {
    pub field: String,
    pub detail: String,
    pub above_ceiling: bool,
}

/// Largest integer a JSON number written with a fraction or exponent can stand for
/// exactly (2^53).
const EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

impl LimitValues {
    pub fn get(&self, limit: Limit) -> Option<u64> {
        *self.slot_ref(limit)
    }

    pub fn set(&mut self, limit: Limit, value: Option<u64>) {
        *self.slot(limit) = value;
    }

    fn slot_ref(&self, limit: Limit) -> &Option<u64> {
        match limit {
            Limit::MemoryMib => &self.memory_mib,
            Limit::TimeoutMs => &self.timeout_ms,
            Limit::Fuel => &self.fuel,
            Limit::MaxInputBytes => &self.max_input_bytes,
            Limit::MaxOutputBytes => &self.max_output_bytes,
            Limit::MaxLogBytesPerCall => &self.max_log_bytes_per_call,
            Limit::KvQuotaBytes => &self.kv_quota_bytes,
            Limit::MaxUsageEventsPerCall => &self.max_usage_events_per_call,
            Limit::TableElements => &self.table_elements,
            Limit::Instances => &self.instances,
        }
    }

    fn slot(&mut self, limit: Limit) -> &mut Option<u64> {
        match limit {
            Limit::MemoryMib => &mut self.memory_mib,
            Limit::TimeoutMs => &mut self.timeout_ms,
            Limit::Fuel => &mut self.fuel,
            Limit::MaxInputBytes => &mut self.max_input_bytes,
            Limit::MaxOutputBytes => &mut self.max_output_bytes,
            Limit::MaxLogBytesPerCall => &mut self.max_log_bytes_per_call,
            Limit::KvQuotaBytes => &mut self.kv_quota_bytes,
            Limit::MaxUsageEventsPerCall => &mut self.max_usage_events_per_call,
            Limit::TableElements => &mut self.table_elements,
            Limit::Instances => &mut self.instances,
        }
    }

    pub fn is_empty(&self) -> bool {
        Limit::ALL.iter().all(|l| self.get(*l).is_none())
    }

    /// `self` with the values `over` sets replacing its own.
    pub fn overlaid(&self, over: &LimitValues) -> LimitValues {
        let mut out = self.clone();
        for l in Limit::ALL {
            if let Some(v) = over.get(l) {
                out.set(l, Some(v));
            }
        }
        out
    }

    /// A layer as a caller sent it (a JSON object; absent or null = inherit), checked
    /// against the ceiling: every value a whole number from 1 to its ceiling. Errors
    /// name the field, and the ceiling when the value exceeds it.
    pub fn from_json(body: &Value, ceiling: &SandboxLimits) -> Result<Self, LimitError> {
        let Value::Object(members) = body else {
            return Err(LimitError {
                field: String::new(),
                detail: "the body must be a JSON object of limits".into(),
                above_ceiling: false,
            });
        };
        let mut values = LimitValues::default();
        for (name, value) in members {
            let Some(limit) = Limit::from_name(name) else {
                let known: Vec<&str> = Limit::ALL.iter().map(|l| l.name()).collect();
                return Err(LimitError {
                    field: crate::text::sanitize(name).chars().take(64).collect(),
                    detail: format!(
                        "{:?} is not a limit that can be layered (use {})",
                        crate::text::sanitize(name).chars().take(64).collect::<String>(),
                        known.join(", ")
                    ),
                    above_ceiling: false,
                });
            };
            let bad = |what: &str| LimitError {
                field: limit.name().into(),
                detail: format!("{} must be a whole number from 1 to its ceiling, found {what}", limit.name()),
                above_ceiling: false,
            };
            let number = match value {
                Value::Null => continue,
                Value::Number(n) => n,
                Value::String(_) => return Err(bad("a string")),
                Value::Bool(_) => return Err(bad("a boolean")),
                Value::Array(_) => return Err(bad("an array")),
                Value::Object(_) => return Err(bad("an object")),
            };
            let v = if let Some(v) = number.as_u64() {
                v
            } else if number.as_i64().is_some() {
                return Err(bad("a negative number"));
            } else {
                match number.as_f64() {
                    Some(f) if f.fract() == 0.0 && (0.0..=EXACT_FLOAT).contains(&f) => f as u64,
                    Some(f) if f < 0.0 => return Err(bad("a negative number")),
                    _ => return Err(bad("a number that is not a whole number in range")),
                }
            };
            values.set(limit, Some(v));
        }
        values.check(ceiling)?;
        Ok(values)
    }

    /// Every value set is 1 to its ceiling (fuel only when the ceiling enables it).
    pub fn check(&self, ceiling: &SandboxLimits) -> Result<(), LimitError> {
        for limit in Limit::ALL {
            let Some(v) = self.get(limit) else { continue };
            let Some(max) = limit.ceiling(ceiling) else {
                return Err(LimitError {
                    field: limit.name().into(),
                    detail: format!(
                        "{} cannot be set: the operator ceiling enables no fuel metering (set sandbox.fuel)",
                        limit.name()
                    ),
                    above_ceiling: true,
                });
            };
            if v == 0 {
                return Err(LimitError {
                    field: limit.name().into(),
                    detail: format!("{} must be at least 1", limit.name()),
                    above_ceiling: false,
                });
            }
            if v > max {
                return Err(LimitError {
                    field: limit.name().into(),
                    detail: format!("{} {v} exceeds the operator ceiling of {max}{}", limit.name(), limit.unit()),
                    above_ceiling: true,
                });
            }
        }
        Ok(())
    }
}

/// Which layer a call's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Ceiling,
    Default,
    App,
    Manifest,
    Tenant,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Ceiling => "ceiling",
            Source::Default => "default",
            Source::App => "app",
            Source::Manifest => "manifest",
            Source::Tenant => "tenant",
        }
    }
}

/// The layers below the ceiling that apply to one installation's calls, highest first.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Operator defaults: the config file's `[sandbox.defaults]` overlaid by the API's.
    pub defaults: LimitValues,
    /// The operator's cap for the app.
    pub app: LimitValues,
    /// The app version's manifest `limits`.
    pub manifest: RequestedLimits,
    /// The tenant's override.
    pub tenant: LimitValues,
    /// The tenant's override for this app (applied after the tenant's).
    pub tenant_app: LimitValues,
}

/// The limits one installation's calls run under, with where each value comes from.
#[derive(Debug, Clone)]
pub struct Effective {
    /// Each layerable value and its source (fuel absent when fuel is off).
    pub values: Vec<(Limit, u64, Source)>,
    pub limits: CallLimits,
}

impl Effective {
    pub fn get(&self, limit: Limit) -> Option<(u64, Source)> {
        self.values.iter().find(|(l, ..)| *l == limit).map(|(_, v, s)| (*v, *s))
    }
}

impl SandboxLimits {
    /// The effective limits under `layers`: each value starts at the ceiling and every
    /// layer below can only lower it; the source is the layer that set the value in
    /// effect (the highest one, on a tie).
    pub fn effective(&self, layers: &Layers) -> Effective {
        let manifest = LimitValues {
            memory_mib: layers.manifest.memory_mib,
            timeout_ms: layers.manifest.timeout_ms,
            ..LimitValues::default()
        };
        let order: [(&LimitValues, Source); 5] = [
            (&layers.defaults, Source::Default),
            (&layers.app, Source::App),
            (&manifest, Source::Manifest),
            (&layers.tenant, Source::Tenant),
            (&layers.tenant_app, Source::Tenant),
        ];
        let mut values = Vec::with_capacity(Limit::ALL.len());
        for limit in Limit::ALL {
            let Some(mut value) = limit.ceiling(self) else { continue };
            let mut source = Source::Ceiling;
            for (layer, layer_source) in &order {
                if let Some(v) = layer.get(limit)
                    && v < value
                {
                    value = v;
                    source = *layer_source;
                }
            }
            values.push((limit, value, source));
        }
        let get = |limit: Limit| values.iter().find(|(l, ..)| *l == limit).map(|(_, v, _)| *v);
        let ceiling = |limit: Limit| limit.ceiling(self).unwrap_or(0);
        let value = |limit: Limit| get(limit).unwrap_or_else(|| ceiling(limit));
        let narrow = |limit: Limit, max: u32| u32::try_from(value(limit)).unwrap_or(max).min(max);
        let limits = CallLimits {
            memory_bytes: value(Limit::MemoryMib).saturating_mul(MIB),
            timeout_ms: value(Limit::TimeoutMs),
            fuel: get(Limit::Fuel),
            table_elements: value(Limit::TableElements),
            tables: self.tables,
            memories: self.memories,
            instances: narrow(Limit::Instances, self.instances),
            max_input_bytes: value(Limit::MaxInputBytes),
            max_output_bytes: value(Limit::MaxOutputBytes),
            max_log_bytes_per_call: value(Limit::MaxLogBytesPerCall),
            kv_quota_bytes: value(Limit::KvQuotaBytes),
            kv_max_key_bytes: self.kv_max_key_bytes,
            max_usage_events_per_call: narrow(Limit::MaxUsageEventsPerCall, self.max_usage_events_per_call),
            max_random_bytes: self.max_random_bytes,
            max_handles: self.max_handles,
            max_host_copy_bytes: self.max_host_copy_bytes,
        };
        Effective { values, limits }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_app_request_only_tightens_the_ceiling() {
        let ceiling = SandboxLimits { memory_mib: 64, timeout_ms: 500, ..Default::default() };
        let asks_more = RequestedLimits { memory_mib: Some(1024), timeout_ms: Some(60_000) };
        let limits = ceiling.for_app(&asks_more);
        assert_eq!(limits.memory_bytes, 64 * MIB);
        assert_eq!(limits.timeout_ms, 500);
        let asks_less = RequestedLimits { memory_mib: Some(16), timeout_ms: Some(50) };
        let limits = ceiling.for_app(&asks_less);
        assert_eq!(limits.memory_bytes, 16 * MIB);
        assert_eq!(limits.timeout_ms, 50);
    }

    #[test]
    fn layers_only_tighten_and_name_their_source() {
        let ceiling = SandboxLimits { timeout_ms: 1_000, ..Default::default() };
        let layers = Layers {
            defaults: LimitValues { timeout_ms: Some(800), ..Default::default() },
            app: LimitValues { timeout_ms: Some(900), memory_mib: Some(16), ..Default::default() },
            manifest: RequestedLimits { memory_mib: Some(32), timeout_ms: Some(500) },
            tenant: LimitValues { timeout_ms: Some(50), ..Default::default() },
            tenant_app: LimitValues::default(),
        };
        let e = ceiling.effective(&layers);
        assert_eq!(e.get(Limit::TimeoutMs), Some((50, Source::Tenant)));
        assert_eq!(e.get(Limit::MemoryMib), Some((16, Source::App)));
        assert_eq!(e.get(Limit::Instances), Some((32, Source::Ceiling)));
        assert_eq!(e.get(Limit::Fuel), None, "fuel is off");
        assert_eq!(e.limits.timeout_ms, 50);
        assert_eq!(e.limits.memory_bytes, 16 * MIB);
    }

    #[test]
    fn a_layer_above_the_ceiling_or_not_a_number_is_refused_by_name() {
        let ceiling = SandboxLimits { timeout_ms: 1_000, ..Default::default() };
        let refused = |body: Value| LimitValues::from_json(&body, &ceiling).unwrap_err();
        let e = refused(serde_json::json!({"timeoutMs": 5000}));
        assert_eq!(e.field, "timeoutMs");
        assert_eq!(e.detail, "timeoutMs 5000 exceeds the operator ceiling of 1000 ms");
        assert!(e.above_ceiling);
        for bad in [
            serde_json::json!({"timeoutMs": -1}),
            serde_json::json!({"timeoutMs": 1e300}),
            serde_json::json!({"timeoutMs": "5"}),
            serde_json::json!({"timeoutMs": 0}),
            serde_json::from_str::<Value>(r#"{"timeoutMs": 18446744073709551616}"#).unwrap(),
        ] {
            assert_eq!(refused(bad.clone()).field, "timeoutMs", "{bad}");
        }
        assert_eq!(refused(serde_json::json!({"fuel": 5})).field, "fuel", "fuel is off");
        assert_eq!(refused(serde_json::json!({"timeout": 5})).field, "timeout");
        let ok = LimitValues::from_json(&serde_json::json!({"timeoutMs": 5.0, "memoryMiB": null}), &ceiling).unwrap();
        assert_eq!(ok, LimitValues { timeout_ms: Some(5), ..Default::default() });
    }

    #[test]
    fn unknown_operator_setting_is_refused_by_name() {
        let err = toml::from_str::<SandboxLimits>("memory-mib = 8\nmemroy = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `memroy`"), "{err}");
    }
}
