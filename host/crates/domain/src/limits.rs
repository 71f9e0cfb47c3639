//! Sandbox limits: the operator's ceiling, the app's request, and the effective limits
//! of one call. An app's request or a tenant override can only tighten the ceiling.

use serde::Deserialize;

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
            // Rust components use a few hundred entries; 10k leaves room for big apps.
            table_elements: 10_000,
            // A wasm32-wasip2 Rust component has 2-3 tables across its core instances.
            tables: 8,
            // Components built today have one memory (plus none for adapters).
            memories: 2,
            // A Rust component is 3-5 core instances (main, shims, fixups).
            instances: 16,
            // JSON inputs of marketplace operations are small; 1 MiB is generous.
            max_input_bytes: MIB,
            max_output_bytes: MIB,
            // Logs are for diagnostics, not data transfer.
            max_log_bytes_per_call: 64 * 1024,
            log_buffer_bytes: 256 * 1024,
            // Config, cursors and small lists; bigger data belongs in the partner's backend.
            kv_quota_bytes: MIB,
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
        let positive: [(&str, u64); 9] = [
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
        Ok(())
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
    fn unknown_operator_setting_is_refused_by_name() {
        let err = toml::from_str::<SandboxLimits>("memory-mib = 8\nmemroy = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `memroy`"), "{err}");
    }
}
