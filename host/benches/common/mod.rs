//! What the benchmarks share.

use kiosk::metering::{MeteringSink, MeteringSinkError, SinkOutcome, UsageEvent};

/// Discards usage, so a benchmark measures the call, not a sink.
pub struct NullSink;

#[async_trait::async_trait]
impl MeteringSink for NullSink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        Ok(vec![SinkOutcome::Stored; events.len()])
    }
}
