//! A call's outbound HTTP (0.2.0 apps): the gate its requests pass, and afterwards their
//! lines and host-metered egress usage.

use std::sync::Arc;

use super::{AppVersion, Installation, Runtime};
use crate::egress::{CallEgress, EgressRecord};
use crate::logs::{Level, LogLine};
use crate::sandbox::HostState;
use kiosk_domain::metering::{MAX_QUANTITY, UsageEvent, UsageSource, now_ms};

impl Runtime {
    /// The gate of a call's outbound requests, for a 0.2.0 app.
    pub(super) fn call_egress(
        &self,
        app: &AppVersion,
        inst: &Installation,
        deadline: tokio::time::Instant,
    ) -> Option<CallEgress> {
        if !app.component.has_egress() {
            return None;
        }
        let partner = app.manifest.app.split_once('/').map_or("", |(p, _)| p).to_string();
        Some(CallEgress {
            egress: self.egress.clone(),
            app: app.egress.clone(),
            app_id: app.manifest.app.clone(),
            partner,
            tenant: inst.tenant.clone(),
            // No layer from the core (a registration probe, a test): nothing goes out.
            installation: inst.egress.clone().unwrap_or_default(),
            deadline,
            requests: 0,
            refusals: 0,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                self.egress.settings().max_concurrent_requests_per_call as usize,
            )),
            record: Arc::default(),
        })
    }

    /// A call's outbound requests into its lines and its host-metered egress usage.
    pub(super) fn take_egress(&self, app: &AppVersion, call_id: &str, state: &mut HostState, record: EgressRecord) {
        state.logs.extend(record.lines.iter().cloned());
        if record.unlogged_refusals > 0 {
            state.logs.push(LogLine {
                at_ms: now_ms(),
                level: Level::Warn,
                message: format!(
                    "kiosk: outbound: {} more refused requests not logged one by one",
                    record.unlogged_refusals
                ),
            });
        }
        state.logs.sort_by_key(|l| l.at_ms);
        for (_, sku, unit) in &app.egress.skus {
            let quantity = record.quantity(sku, *unit).min(MAX_QUANTITY);
            if quantity == 0 {
                continue;
            }
            state.usage.push(UsageEvent {
                tenant: state.who.tenant.clone(),
                installation: state.who.installation.clone(),
                app: state.who.app.clone(),
                version: state.who.version.clone(),
                sku: sku.clone(),
                quantity,
                at_ms: now_ms(),
                source: UsageSource::Host,
                idempotency_key: format!("{call_id}/egress/{sku}"),
            });
        }
    }
}
