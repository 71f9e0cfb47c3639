//! Usage events and the sink they are handed to. The durable ledger (SPEC §7) is a
//! `MeteringSink`; `MemorySink` serves the CLI and tests.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a usage event came from (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl UsageSource {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Guest => "guest",
            Self::Report => "report",
            Self::Partner => "partner",
        }
    }

    /// The source named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Host, Self::Guest, Self::Report, Self::Partner].into_iter().find(|s| s.as_str() == name)
    }
}

/// One metered quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The largest quantity of one event: 2^53 - 1, exact in JSON and in every backend.
pub const MAX_QUANTITY: u64 = (1 << 53) - 1;

/// The longest idempotency key a partner or a guest may give, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sink refused or failed to store events.
#[derive(Debug, thiserror::Error)]
#[error("metering sink failed: {0}")]
pub struct MeteringSinkError(pub String);

/// What became of one submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Stored durably.
    Stored,
    /// The same (source, key, quantity) was stored before: counted once.
    Duplicate,
    /// Not stored, with the reason (e.g. the key was recorded with another quantity).
    Refused(String),
}

/// Receives the usage of completed calls. Called after the call's Store is gone, so an
/// implementation may do I/O.
#[async_trait::async_trait]
pub trait MeteringSink: Send + Sync {
    /// Stores `events` durably and says, per event, what became of it; `Err` means the
    /// sink failed and none of them counts.
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError>;
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

#[async_trait::async_trait]
impl MeteringSink for MemorySink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        let mut stored = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcomes = Vec::with_capacity(events.len());
        for e in events {
            let same_key = stored.iter().find(|s| s.source == e.source && s.idempotency_key == e.idempotency_key);
            outcomes.push(match same_key {
                Some(s) if s.quantity == e.quantity => SinkOutcome::Duplicate,
                Some(s) => {
                    SinkOutcome::Refused(format!("idempotency key already recorded with quantity {}", s.quantity))
                }
                None => {
                    stored.push(e.clone());
                    SinkOutcome::Stored
                }
            });
        }
        Ok(outcomes)
    }
}
