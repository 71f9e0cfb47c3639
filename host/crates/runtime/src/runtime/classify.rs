//! Naming the limit or cause behind a failed call from wasmtime's error.

use wasmtime::{Store, Trap};

use super::{MAX_APP_TEXT_BYTES, Runtime};
use crate::error::CallErrorKind;
use crate::logs;
use crate::sandbox::{HostState, LimitHit, StderrLimitExceeded};
use kiosk_domain::limits::CallLimits;

impl Runtime {
    /// Names the limit or cause behind a failed call.
    ///
    /// Limits wasmtime and wasmtime-wasi enforce on our behalf (host copies, handles,
    /// random bytes) surface as errors of private types; they are recognised by their
    /// messages, which `tests/all/sandbox.rs` pins for the wasmtime version in use.
    pub(super) fn classify(
        &self,
        err: wasmtime::Error,
        store: &Store<HostState>,
        limits: &CallLimits,
    ) -> CallErrorKind {
        if let Some(kind) = err.downcast_ref::<CallErrorKind>() {
            return kind.clone();
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                return CallErrorKind::Timeout { limit_ms: limits.timeout_ms };
            }
            Some(Trap::OutOfFuel) => {
                return CallErrorKind::FuelExhausted { fuel: limits.fuel.unwrap_or(0) };
            }
            Some(Trap::StackOverflow) => {
                return CallErrorKind::StackOverflow { limit_kib: self.limits.max_wasm_stack_kib };
            }
            _ => {}
        }
        let state = store.data();
        if state.stderr.overflowed() || err.downcast_ref::<StderrLimitExceeded>().is_some() {
            return CallErrorKind::StderrLimit { limit_bytes: limits.max_log_bytes_per_call };
        }
        match state.limiter.hit {
            Some(LimitHit::Log) => return CallErrorKind::LogLimit { limit_bytes: limits.max_log_bytes_per_call },
            Some(LimitHit::Memory) => return CallErrorKind::MemoryLimit { limit_bytes: limits.memory_bytes },
            Some(LimitHit::Table) => return CallErrorKind::TableLimit { limit_elements: limits.table_elements },
            None => {}
        }
        if let Some(wasmtime::component::ResourceTableError::Full) =
            err.downcast_ref::<wasmtime::component::ResourceTableError>()
        {
            return CallErrorKind::HandleLimit { limit: limits.max_handles };
        }
        let text = format!("{err:#}");
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallErrorKind::HostCopyLimit { limit_bytes: limits.max_host_copy_bytes };
        }
        if text.contains("store handle limit exceeded") || text.contains("resource table has no free keys") {
            return CallErrorKind::HandleLimit { limit: limits.max_handles };
        }
        if text.contains("requested len") && text.contains("exceeds limit") {
            return CallErrorKind::RandomLimit { limit_bytes: limits.max_random_bytes };
        }
        CallErrorKind::Trap {
            message: match err.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => logs::sanitize_capped(&text, MAX_APP_TEXT_BYTES),
            },
        }
    }
}
