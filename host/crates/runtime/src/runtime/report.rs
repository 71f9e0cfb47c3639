//! The usage-report path: `usage.report` for a window, its records sorted into accepted
//! and refused by the ledger's verdicts, and the windows reports are asked for.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::{AppVersion, CallOutcome, Installation, Runtime};
use crate::admission::Origin;
use crate::error::CallFailure;
use crate::exports::{Answer, Export};
use crate::world::UsageWindow;
use kiosk_domain::metering::{SinkOutcome, UsageEvent, UsageSource};

/// What `usage.report` returned, split into accepted events and refused records.
#[derive(Debug, Clone, Default)]
pub struct ReportedUsage {
    pub accepted: Vec<UsageEvent>,
    pub refused: Vec<RefusedRecord>,
    /// The sink's verdict per accepted event, before `report` sorts them.
    pub(crate) verdicts: Vec<SinkOutcome>,
}

/// A reported usage record the host refused, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedRecord {
    pub sku: String,
    pub quantity: u64,
    pub idempotency_key: String,
    pub reason: String,
}

impl Runtime {
    /// `usage.report` for `window`, called by the host (collection): every record is
    /// judged before anything is submitted (declared, guest-metered SKU; quantity
    /// 1..=2^53-1; key 1-200 bytes without NUL; at most `max-usage-events-per-call`
    /// records, else the whole report fails with a named limit); refused records come
    /// back with their reasons, and so do records the ledger refuses (a key recorded
    /// before with another quantity). Only accepted records count.
    pub async fn report(
        &self,
        app: &AppVersion,
        inst: &Installation,
        window: UsageWindow,
    ) -> Result<CallOutcome<ReportedUsage>, CallFailure> {
        let outcome = self.call(app, inst, Export::Report(window), Origin::Host).await?;
        let mut usage = outcome.usage;
        let result = match outcome.result {
            Ok(Answer::Reported(mut reported)) => {
                // The ledger's verdicts on the accepted records (already committed by `call`).
                let verdicts = std::mem::take(&mut reported.verdicts);
                let mut accepted = Vec::with_capacity(reported.accepted.len());
                for (event, verdict) in reported.accepted.drain(..).zip(verdicts) {
                    match verdict {
                        SinkOutcome::Stored | SinkOutcome::Duplicate => accepted.push(event),
                        SinkOutcome::Refused(reason) => reported.refused.push(RefusedRecord {
                            sku: event.sku.clone(),
                            quantity: event.quantity,
                            idempotency_key: event
                                .idempotency_key
                                .strip_prefix(&format!("{}/report/", inst.id))
                                .unwrap_or(&event.idempotency_key)
                                .to_string(),
                            reason,
                        }),
                    }
                }
                // What the call metered, less the report records the sink refused (keys are
                // unique within a call: `judge_report` refuses repeats).
                let refused: HashSet<String> =
                    reported.refused.iter().map(|r| format!("{}/report/{}", inst.id, r.idempotency_key)).collect();
                usage.retain(|u| u.source != UsageSource::Report || !refused.contains(&u.idempotency_key));
                reported.accepted = accepted;
                Ok(reported)
            }
            Ok(_) => Ok(ReportedUsage::default()),
            Err(refusal) => Err(refusal),
        };
        Ok(CallOutcome {
            call_id: outcome.call_id,
            result,
            usage,
            logs: outcome.logs,
            logs_kept: outcome.logs_kept,
            held: outcome.held,
        })
    }
}

/// The usage window `[start, start + len)` containing `at_ms`, aligned to `len`.
pub fn window_containing(at_ms: u64, len: Duration) -> UsageWindow {
    let len = len.as_millis() as u64;
    let start = at_ms - at_ms % len;
    UsageWindow { start_ms: start, end_ms: start + len }
}
