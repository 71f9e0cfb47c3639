//! Usage events and the sink they are handed to. The durable ledger (SPEC §7) is a
//! `MeteringSink`; `MemorySink` serves the CLI and tests.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where a usage event came from (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsageSource {
    /// One unit per successful call of an operation a SKU lists.
    Host,
    /// The guest's `metering.record-usage` during a call.
    Guest,
    /// The guest's `usage.report`, collected per window.
    Report,
    /// The partner usage API.
    Partner,
}

/// One metered quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    pub tenant: String,
    pub installation: String,
    pub app: String,
    pub version: String,
    pub sku: String,
    pub quantity: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub source: UsageSource,
    /// Unique per (source, key): the same key again is the same event.
    pub idempotency_key: String,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sink refused or failed to store events.
#[derive(Debug, thiserror::Error)]
#[error("metering sink failed: {0}")]
pub struct MeteringSinkError(pub String);

/// Receives the usage of completed calls. Called after the call's Store is gone, so an
/// implementation may do I/O.
pub trait MeteringSink: Send + Sync {
    /// Stores `events` durably (or fails, and then none of them counts).
    fn submit(&self, events: &[UsageEvent]) -> Result<(), MeteringSinkError>;
}

/// An in-memory sink.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<UsageEvent>>,
}

impl MemorySink {
    /// Everything submitted so far.
    pub fn events(&self) -> Vec<UsageEvent> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl MeteringSink for MemorySink {
    fn submit(&self, events: &[UsageEvent]) -> Result<(), MeteringSinkError> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(events);
        Ok(())
    }
}
