//! The global bound of installation logs (`[logs] max-bytes-total`): each installation's
//! lines are bounded when they are written; this sweep bounds their sum, whatever the
//! number of installations, by removing the oldest lines of any installation first.
//! One replica sweeps at a time (the `log-trim` row of `pass_leases`).

use std::sync::Arc;
use std::time::Duration;

use kiosk_store::StoreError;
use kiosk_store::logs::Trimmed;

use crate::lifecycle::Kiosk;

/// How often each replica looks at the total: the bound can be passed by at most what
/// every installation logs in this time.
pub const LOG_SWEEP_SECONDS: u64 = 10;
/// How long one sweep may hold the lease (a replica that dies mid-sweep frees it then).
const LEASE_MS: i64 = 60_000;

/// One sweep: `None` when another replica holds the lease.
pub async fn sweep(state: &Kiosk, replica: &str) -> Result<Option<Trimmed>, StoreError> {
    let now = kiosk_domain::metering::now_ms() as i64;
    if !state.store.lease_pass("log-trim", replica, now, LEASE_MS).await? {
        return Ok(None);
    }
    let trimmed = state.store.trim_logs_total(state.config.logs.max_bytes_total).await;
    // The ledger's record of applied calls is kept for its retention, not for ever.
    let horizon = now.saturating_sub(kiosk_store::ledger::APPLIED_CALLS_RETENTION_MS);
    if let Err(e) = state.store.forget_applied_calls(horizon).await {
        tracing::warn!(error = %e, "the ledger's applied call ids could not be trimmed: the next sweep tries again");
    }
    // Client idempotency keys: a retry past their retention runs the request again.
    let horizon = now.saturating_sub(kiosk_store::IDEMPOTENCY_RETENTION_MS);
    if let Err(e) = state.store.forget_idempotency_keys(horizon).await {
        tracing::warn!(error = %e, "expired idempotency keys could not be forgotten: the next sweep tries again");
    }
    if let Err(e) = state.store.release_pass("log-trim", replica).await {
        tracing::warn!(error = %e, "the log-trim lease could not be released: it expires");
    }
    let trimmed = trimmed?;
    if trimmed.lines > 0 {
        metrics::counter!("kiosk_log_lines_trimmed_total").increment(trimmed.lines);
        tracing::info!(
            lines = trimmed.lines,
            bytes = trimmed.bytes,
            max_bytes_total = state.config.logs.max_bytes_total,
            "installation logs over [logs] max-bytes-total: the oldest lines were removed"
        );
    }
    Ok(Some(trimmed))
}

/// Sweeps every `LOG_SWEEP_SECONDS` until the server stops.
pub fn spawn(state: Arc<Kiosk>) -> tokio::task::JoinHandle<()> {
    let replica = uuid::Uuid::new_v4().to_string();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(LOG_SWEEP_SECONDS));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = sweep(&state, &replica).await {
                tracing::warn!(error = %e, "the log sweep failed");
            }
        }
    })
}
