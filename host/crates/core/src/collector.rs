//! Collection of `usage.report` once per window per installation. Replicas sharing one
//! database coordinate through a lease row per (installation, window): whoever takes the
//! lease calls the app; a replica that dies mid-collection leaves a lease that expires,
//! and another (or the restarted one) collects the window then. The app's idempotency
//! keys make a repeated report harmless; the lease makes it rare.
//!
//! One app cannot stall collection: windows are collected concurrently (at most
//! `PARALLELISM` calls at once), each call under its own deadline; a failing report is
//! retried with exponential backoff at most `MAX_ATTEMPTS` times and then recorded as
//! failed (`done = 2`, audited as `usage.collect-failed`), never retried forever.

use std::sync::Arc;
use std::time::Duration;

use crate::lifecycle::Kiosk as AppState;
use kiosk_domain::metering::now_ms;
use kiosk_runtime::world::UsageWindow;
use kiosk_store::StoreError;

/// Takes the lease of (installation, window) for `replica` if nobody holds a live one and
/// the window is not collected yet.
pub async fn claim(
    state: &AppState,
    installation: &str,
    window_start: i64,
    replica: &str,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    state.store.lease_window(installation, window_start, replica, now_ms() as i64, lease_ms).await
}

/// Windows a pass looks back over: a replica (or the whole fleet) that was down catches
/// up on this many windows per installation.
pub const MAX_BACKLOG: i64 = 48;

/// Report calls one replica runs at once.
pub const PARALLELISM: usize = 16;

/// Attempts of one window before it is recorded as failed.
pub const MAX_ATTEMPTS: i64 = 5;

/// One pass: for every installation, finds each completed window of the last
/// `MAX_BACKLOG` (since the installation existed) that is not collected yet (one read of
/// the closed windows), takes the leases it can in batches and starts collecting each
/// window as a task of its own, at most `PARALLELISM` at once. The pass waits for a free
/// place, never for a given report: a slow one holds one place until its deadline, and
/// every other window goes on. Returns how many collections it started (some may still
/// run).
pub async fn collect_once(
    state: &Arc<AppState>,
    places: &Arc<tokio::sync::Semaphore>,
    replica: &Arc<str>,
    window_ms: i64,
    lease_ms: i64,
) -> Result<usize, StoreError> {
    let now = now_ms() as i64;
    let last = (now / window_ms - 1) * window_ms;
    let mut started = 0;
    // The oldest completed window not collected yet, for `kiosk_collection_lag_seconds`.
    let mut oldest: Option<i64> = None;
    let lag = |oldest: Option<i64>| {
        let seconds = oldest.map_or(0.0, |start| (now - (start + window_ms)).max(0) as f64 / 1000.0);
        metrics::gauge!("kiosk_collection_lag_seconds").set(seconds);
    };
    // A suspended tenant's or a disabled partner's installations are not collected.
    let (suspended, disabled) = state.store.inactive().await?;
    let rows = state.store.all_installations().await?;
    // Every open window of the backlog, from one read of the closed ones.
    let closed = state.store.closed_windows_since(last - (MAX_BACKLOG - 1) * window_ms).await?;
    let mut open: Vec<(usize, i64)> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let partner = kiosk_domain::ids::AppId::parse(&row.app).map(|a| a.partner().to_string()).unwrap_or_default();
        if suspended.contains(&row.tenant) || disabled.contains(&partner) {
            continue;
        }
        let first = (row.created_ms / window_ms * window_ms).max(last - (MAX_BACKLOG - 1) * window_ms);
        let done = closed.get(&row.id);
        let mut start = first;
        while start <= last {
            if !done.is_some_and(|d| d.contains(&start)) {
                oldest = Some(oldest.map_or(start, |o| o.min(start)));
                open.push((index, start));
            }
            start += window_ms;
        }
    }
    lag(oldest);
    // Leases are taken in batches of as many windows as there are free places (one
    // transaction each); a window another replica holds is skipped. The pass waits for a
    // place when all are busy — a slow report holds one until its deadline, the others
    // free up — so it goes through every open window, never waiting for a given report.
    let index: std::collections::HashMap<&str, usize> =
        rows.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let mut next = open.iter().peekable();
    while next.peek().is_some() {
        let Ok(first) = places.clone().acquire_owned().await else { break };
        let mut held = vec![first];
        while let Ok(place) = places.clone().try_acquire_owned() {
            held.push(place);
        }
        let batch: Vec<(String, i64)> =
            next.by_ref().take(held.len()).map(|&(i, start)| (rows[i].id.clone(), start)).collect();
        let taken = state.store.lease_windows(&batch, replica, now_ms() as i64, lease_ms).await?;
        for (installation, this) in taken {
            let (Some(&i), Some(place)) = (index.get(installation.as_str()), held.pop()) else { continue };
            let (state, row, replica) = (state.clone(), rows[i].clone(), replica.clone());
            tokio::spawn(async move {
                if let Err(e) = collect_window(&state, &row, this, window_ms, &replica).await {
                    tracing::warn!(installation = %row.id, window = this, error = %e, "usage collection failed");
                }
                drop(place);
            });
            started += 1;
        }
        // The places of windows another replica held go back here.
    }
    Ok(started)
}

/// Closes a window with its audit row through the ledger's writer, so the windows that
/// concurrent collections finish are closed in one transaction (and with the usage being
/// committed then).
#[allow(clippy::too_many_arguments)]
async fn close(
    state: &AppState,
    installation: &str,
    window_start: i64,
    replica: &str,
    given_up: bool,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let close = kiosk_store::WindowClose {
        installation: installation.into(),
        window_start,
        replica: replica.into(),
        given_up,
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
    };
    state.ledger.close_window(close).await.map_err(kiosk_store::ledger::LedgerError::into_store)
}

/// Records a failed attempt: the lease is extended by the backoff (the next attempt's
/// time), and after `MAX_ATTEMPTS` the window is closed as failed and audited.
async fn attempt_failed(
    state: &AppState,
    row: &kiosk_store::InstallationRow,
    start: i64,
    window_ms: i64,
    replica: &str,
    error: &str,
) -> Result<bool, StoreError> {
    let attempts = state.store.window_attempt_failed(&row.id, start, replica, error).await?;
    let target = format!("{}/{}", row.tenant, row.id);
    if attempts >= MAX_ATTEMPTS {
        let detail = format!("window {start}: gave up after {attempts} attempts: {error}");
        let actor = format!("collector:{replica}");
        close(state, &row.id, start, replica, true, &actor, "usage.collect-failed", &target, &detail).await?;
        tracing::warn!(installation = %row.id, window = start, %error, "usage collection failed for good");
        return Ok(true);
    }
    // Exponential backoff from an eighth of the window (at least 250 ms), at most a window.
    let base = (window_ms / 8).max(250);
    let backoff = base.saturating_mul(1_i64 << (attempts - 1).clamp(0, 20)).min(window_ms.max(base));
    state.store.postpone_window(&row.id, start, replica, now_ms() as i64 + backoff).await?;
    tracing::warn!(installation = %row.id, window = start, attempts, %error, "usage.report failed; will retry");
    Ok(false)
}

/// Calls `usage.report` for one leased window; `true` once the window is closed.
async fn collect_window(
    state: &Arc<AppState>,
    row: &kiosk_store::InstallationRow,
    start: i64,
    window_ms: i64,
    replica: &str,
) -> Result<bool, StoreError> {
    let window = UsageWindow { start_ms: start as u64, end_ms: (start + window_ms) as u64 };
    // The layered limits apply to report calls like to any other (suspended tenants and
    // disabled partners were filtered out when the pass listed installations).
    let loaded = match state.installed_app(row).await {
        Ok(app) => state.admit_call(&row.tenant, &app, crate::operator::Purpose::Leave).await,
        Err(e) => Err(e),
    };
    let app = match loaded {
        Ok(app) => app,
        Err(e) => {
            return attempt_failed(
                state,
                row,
                start,
                window_ms,
                replica,
                &format!("cannot load the app: {}", e.detail),
            )
            .await;
        }
    };
    match state.collect_report(&app, row, window).await {
        Ok(report) => {
            let detail = match &report.result {
                Ok(r) => {
                    let reasons: Vec<String> = r.refused.iter().take(10).map(|x| x.reason.clone()).collect();
                    format!(
                        "window {start}: {} records, {} refused{}",
                        r.accepted.len(),
                        r.refused.len(),
                        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) }
                    )
                }
                Err(refusal) => format!("window {start}: the app refused: {}", refusal.message),
            };
            let target = format!("{}/{}", row.tenant, row.id);
            let actor = format!("collector:{replica}");
            close(state, &row.id, start, replica, false, &actor, "usage.collect", &target, &detail).await?;
            Ok(true)
        }
        // Stopped by a shutdown: not the app's fault; the lease expires and the window is
        // collected then, by this replica restarted or another.
        Err(failure) if failure.kind == kiosk_runtime::error::CallErrorKind::ShuttingDown => Ok(false),
        Err(failure) => attempt_failed(state, row, start, window_ms, replica, &failure.kind.to_string()).await,
    }
}

/// Runs `collect_once` every quarter window (at least every 250 ms) until the process ends.
pub fn spawn(state: Arc<AppState>, window: Duration, lease: Duration) -> tokio::task::JoinHandle<()> {
    let replica: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let places = Arc::new(tokio::sync::Semaphore::new(PARALLELISM));
    let window_ms = window.as_millis().max(1) as i64;
    let lease_ms = lease.as_millis() as i64;
    let tick = (window / 4).max(Duration::from_millis(250));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = collect_once(&state, &places, &replica, window_ms, lease_ms).await {
                tracing::warn!(error = %e, "usage collection pass failed");
            }
        }
    })
}
