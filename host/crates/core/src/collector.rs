//! Collection of `usage.report` once per window per installation. Replicas sharing one
//! database coordinate through a lease row per (installation, window): whoever takes the
//! lease calls the app; a replica that dies mid-collection leaves a lease that expires,
//! and another (or the restarted one) collects the window then. The app's idempotency
//! keys make a repeated report harmless; the lease makes it rare.
//!
//! One app cannot stall collection: windows are collected concurrently (at most
//! `PARALLELISM` calls at once), each call under its own deadline; one tenant cannot take
//! it (`fair`): tenants take turns, and a tenant's calls at once stay within its
//! collection share (`[sandbox] tenant-collection-share`); a failing report is
//! retried with exponential backoff at most `MAX_ATTEMPTS` times and then recorded as
//! failed (`done = 2`, audited as `usage.collect-failed`), never retried forever.
//!
//! Collection yields to tenants' calls: while any run (or came in since the last look),
//! a pass leases at most `BUSY_BATCH` windows at once and rests between two collections
//! so that collecting takes about `BUSY_SHARE_PERCENT` of the time (`Pace`). Idle, it
//! runs `PARALLELISM` collections back to back.
//!
//! A collected window keeps what its report found on its row (`usage_windows.detail`,
//! read per installation through the API); the audit log gets one summary row per pass
//! (`usage.collect-pass`), written when the pass's last collection ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod fair;

pub use fair::Places;

use crate::lifecycle::Kiosk as AppState;
use kiosk_domain::metering::now_ms;
use kiosk_runtime::admission::Admission;
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

/// Windows leased at once while tenants' calls run: the last of them waits
/// `BUSY_BATCH − 1` rests before it starts, each bounded to keep that inside half the
/// lease (`Pace::max_wait`).
pub const BUSY_BATCH: usize = 4;

/// Share of the time collection takes while tenants' calls run, in percent: a pass
/// beside busy tenants takes longer (its backlog is hours) rather than slow their calls.
/// Measured (bench_collection, 10k windows beside four invokers on SQLite; their rate
/// during the pass against 10 s before and after it): 10% kept 0.95× over a 167 s pass;
/// 14% 0.85–0.95× over 112–115 s, 20% 0.86–0.88× over 81–84 s (run to run). Two starts
/// are `100 / BUSY_SHARE_PERCENT` (whole) times the cost apart: 10× here.
pub const BUSY_SHARE_PERCENT: u64 = 10;

/// The longest wait between two starts while tenants call (cost and rest): a slow report
/// raises the measured cost, and collection still goes on at five windows a second.
const MAX_REST: Duration = Duration::from_millis(200);

/// What a collection is taken to cost before one of the pass has ended (measured: 1-3 ms
/// on SQLite beside busy invokers), so a pass that starts while tenants call rests too.
const SEED_COST: Duration = Duration::from_millis(2);

/// Attempts of one window before it is recorded as failed.
pub const MAX_ATTEMPTS: i64 = 5;

/// One pass: for every installation, finds each completed window of the last
/// `MAX_BACKLOG` (since the installation existed) that is not collected yet (one read of
/// the closed windows), takes the leases it can in batches and starts collecting each
/// window as a task of its own, at most `PARALLELISM` at once, of one tenant at most its
/// share (read once per pass). Windows are taken oldest first, tenants in turn
/// (`fair::Schedule`). The pass waits for a free place, never for a given report: a slow
/// one holds one place (of its tenant's) until its deadline, and every other window goes
/// on. Returns how many collections it started (some may still run).
pub async fn collect_once(
    state: &Arc<AppState>,
    places: &Arc<Places>,
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
    let inactive = state.store.inactive().await?;
    let (suspended, disabled) = (inactive.suspended_tenants, inactive.disabled_partners);
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
    // Oldest windows first (stable: of one start, installations in turn), then tenants in
    // turn, each within its share: the operator's (tenant '', as the last replica started
    // wrote it) or the tenant's own, if lower.
    open.sort_by_key(|&(_, start)| start);
    let shares = state.store.collection_shares().await?;
    let default = shares.get("").copied().unwrap_or(state.config.sandbox.tenant_collection_share);
    let cap = |tenant: &str| fair::places_of(shares.get(tenant).map_or(default, |&own| own.min(default)));
    let mut schedule = fair::Schedule::new(open.iter().map(|&(i, start)| (rows[i].tenant.as_str(), (i, start))), cap);
    // Leases are taken in batches of as many windows as there are free places (one
    // transaction each); a window another replica holds is its to collect. The pass waits
    // for a place when all are busy — a slow report holds one until its deadline, the
    // others free up — and for one of a tenant's collections to end when every tenant
    // left is at its share, so it goes through every open window, never waiting for a
    // given report of another tenant.
    let tally = Arc::new(PassTally::default());
    let mut pace = Pace::new(state.runtime.admission(), Duration::from_millis(u64::try_from(lease_ms).unwrap_or(0)));
    // A pass whose every tenant left is at its share ends once it has run a tick: the
    // next pass (at once) reads the windows closed meanwhile, so other tenants' new
    // windows never wait behind one tenant's backlog; the windows left are not leased,
    // and the next pass takes them (the shares' counts outlive a pass, in `places`).
    let ends_after = tokio::time::Instant::now() + tick_of(window_ms);
    while !schedule.is_empty() {
        let Some(first) = places.slot().await else { break };
        let mut held = vec![first];
        let busy = pace.busy(state.runtime.admission());
        let batch = if busy { BUSY_BATCH } else { usize::MAX };
        while held.len() < batch {
            let Some(place) = places.try_slot() else { break };
            held.push(place);
        }
        // Made before looking, so a collection ending meanwhile is not missed.
        let freed = places.freed();
        let picked = places.take(&mut schedule, held, &|&(i, _): &(usize, i64)| rows[i].id.clone());
        if picked.is_empty() {
            tokio::select! {
                () = freed => continue,
                () = tokio::time::sleep_until(ends_after) => break,
            }
        }
        let batch: Vec<(String, i64)> = picked.iter().map(|(_, (i, start))| (rows[*i].id.clone(), *start)).collect();
        let taken: std::collections::HashSet<(String, i64)> =
            match state.store.lease_windows(&batch, replica, now_ms() as i64, lease_ms).await {
                Ok(taken) => taken.into_iter().collect(),
                Err(e) => {
                    // The collections already started still end, and the pass is audited.
                    drop(picked);
                    tally.ended(state, replica).await;
                    return Err(e);
                }
            };
        for (place, (i, this)) in picked {
            // Another replica holds the lease: the place and the tenant's count go back
            // now (`place` dropped).
            if !taken.contains(&(rows[i].id.clone(), this)) {
                continue;
            }
            // Only a batch leased while tenants called rests: it is small enough that its
            // last window starts well within its lease.
            if busy {
                pace.rest(state.runtime.admission(), tally.cost_us.load(Ordering::Relaxed)).await;
            }
            let (state, row, replica, tally) = (state.clone(), rows[i].clone(), replica.clone(), tally.clone());
            tokio::spawn(async move {
                let began = std::time::Instant::now();
                let closed = collect_window(&state, &row, this, window_ms, &replica).await;
                tally.cost(began.elapsed());
                let counter = match closed {
                    Ok(Closed::Collected) => &tally.collected,
                    Ok(Closed::GivenUp) => &tally.given_up,
                    Ok(Closed::Later) => &tally.later,
                    Err(e) => {
                        tracing::warn!(installation = %row.id, window = this, error = %e, "usage collection failed");
                        &tally.later
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                drop(place);
                tally.ended(&state, &replica).await;
            });
            started += 1;
        }
    }
    tally.ended(state, replica).await;
    Ok(started)
}

/// How one pass's collections ended, audited as one row when the last of them ends.
#[derive(Debug, Default)]
struct PassTally {
    collected: AtomicU64,
    given_up: AtomicU64,
    /// Failed attempts to retry (or stopped by a shutdown): collected by a later pass.
    later: AtomicU64,
    /// What one collection takes, µs (a moving average of the pass's collections).
    cost_us: AtomicU64,
}

impl PassTally {
    /// Folds one collection's duration into the moving average (weight 1/8).
    fn cost(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.cost_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.cost_us.store(new, Ordering::Relaxed);
    }

    /// Called by the pass and by each of its collections as they end (each with its own
    /// `Arc`): the last one writes the pass's audit row, if the pass collected anything.
    async fn ended(self: Arc<Self>, state: &AppState, replica: &str) {
        let Some(tally) = Arc::into_inner(self) else { return };
        let (collected, given_up, later) =
            (tally.collected.into_inner(), tally.given_up.into_inner(), tally.later.into_inner());
        if collected + given_up + later == 0 {
            return;
        }
        let detail = format!("{collected} windows collected, {given_up} given up, {later} to retry");
        if let Err(e) = state.store.audit_collection_pass(&format!("collector:{replica}"), &detail).await {
            tracing::warn!(error = %e, %detail, "cannot audit a collection pass");
        }
    }
}

/// Whether tenants are calling, and the rests that keep collection to its share then.
#[derive(Debug)]
struct Pace {
    /// Tenants' calls started at the last look.
    seen: u64,
    /// When the last collection started while tenants were calling.
    last: Option<tokio::time::Instant>,
    /// The longest wait between two starts: `MAX_REST`, or less so that a busy batch's
    /// last window starts within half its lease.
    max_wait: Duration,
}

impl Pace {
    fn new(admission: &Admission, lease: Duration) -> Self {
        let half = lease / 2 / u32::try_from(BUSY_BATCH).unwrap_or(4);
        Self { seen: admission.tenant_calls().started, last: None, max_wait: MAX_REST.min(half) }
    }

    /// Tenants' calls run now, or started since the last look.
    fn busy(&mut self, admission: &Admission) -> bool {
        let calls = admission.tenant_calls();
        let came = calls.started != self.seen;
        self.seen = calls.started;
        calls.running > 0 || came
    }

    /// Before a collection starts: while tenants call, waits until `cost × 100 ÷ share`
    /// after the last start (at most `max_wait`); idle, at once.
    async fn rest(&mut self, admission: &Admission, cost_us: u64) {
        let busy = self.busy(admission);
        let start = self.next_start(busy, tokio::time::Instant::now(), cost_us);
        tokio::time::sleep_until(start).await;
    }

    /// When the next collection may start, `now` given (`rest` without the clock).
    fn next_start(&mut self, busy: bool, now: tokio::time::Instant, cost_us: u64) -> tokio::time::Instant {
        if !busy {
            self.last = None;
            return now;
        }
        let start = match self.last {
            Some(last) => {
                let cost = if cost_us == 0 { SEED_COST } else { Duration::from_micros(cost_us) };
                let every = cost.saturating_mul(u32::try_from(100 / BUSY_SHARE_PERCENT).unwrap_or(4));
                (last + every.min(self.max_wait)).max(now)
            }
            None => now,
        };
        self.last = Some(start);
        start
    }
}

/// How a leased window's collection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Collected,
    GivenUp,
    /// Not closed: retried later (a failed attempt, or a shutdown).
    Later,
}

/// Closes a window with what its collection found (and its own audit row when
/// `audited`: a window given up) through the ledger's writer, so the windows that
/// concurrent collections finish are closed in one transaction (and with the usage being
/// committed then).
#[allow(clippy::too_many_arguments)]
async fn close(
    state: &AppState,
    installation: &str,
    window_start: i64,
    replica: &str,
    given_up: bool,
    audited: bool,
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
        audited,
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
) -> Result<Closed, StoreError> {
    let attempts = state.store.window_attempt_failed(&row.id, start, replica, error).await?;
    let target = format!("{}/{}", row.tenant, row.id);
    if attempts >= MAX_ATTEMPTS {
        let detail = format!("window {start}: gave up after {attempts} attempts: {error}");
        let actor = format!("collector:{replica}");
        close(state, &row.id, start, replica, true, true, &actor, "usage.collect-failed", &target, &detail).await?;
        tracing::warn!(installation = %row.id, window = start, %error, "usage collection failed for good");
        return Ok(Closed::GivenUp);
    }
    // Exponential backoff from an eighth of the window (at least 250 ms), at most a window.
    let base = (window_ms / 8).max(250);
    let backoff = base.saturating_mul(1_i64 << (attempts - 1).clamp(0, 20)).min(window_ms.max(base));
    state.store.postpone_window(&row.id, start, replica, now_ms() as i64 + backoff).await?;
    tracing::warn!(installation = %row.id, window = start, attempts, %error, "usage.report failed; will retry");
    Ok(Closed::Later)
}

/// Calls `usage.report` for one leased window.
async fn collect_window(
    state: &Arc<AppState>,
    row: &kiosk_store::InstallationRow,
    start: i64,
    window_ms: i64,
    replica: &str,
) -> Result<Closed, StoreError> {
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
            close(state, &row.id, start, replica, false, false, &actor, "usage.collect", &target, &detail).await?;
            Ok(Closed::Collected)
        }
        // Stopped by a shutdown: not the app's fault; the lease expires and the window is
        // collected then, by this replica restarted or another.
        Err(failure) if failure.kind == kiosk_runtime::error::CallErrorKind::ShuttingDown => Ok(Closed::Later),
        Err(failure) => attempt_failed(state, row, start, window_ms, replica, &failure.kind.to_string()).await,
    }
}

/// How often passes start: every quarter window, at most every 250 ms.
fn tick_of(window_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(window_ms / 4).unwrap_or(0)).max(Duration::from_millis(250))
}

/// Runs `collect_once` every quarter window (at least every 250 ms) until the process ends.
pub fn spawn(state: Arc<AppState>, window: Duration, lease: Duration) -> tokio::task::JoinHandle<()> {
    let replica: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let places = Arc::new(Places::new());
    let window_ms = window.as_millis().max(1) as i64;
    let lease_ms = lease.as_millis() as i64;
    let tick = tick_of(window_ms);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kiosk_runtime::admission::{AdmissionSettings, Origin};

    #[tokio::test]
    async fn collection_rests_while_tenants_call_and_not_when_idle() {
        let admission = Admission::new(AdmissionSettings::default(), 8);
        let mut pace = Pace::new(&admission, Duration::from_secs(600));
        let cost_us = 2_000;
        let now = tokio::time::Instant::now();
        // Idle: collections start at once, back to back.
        assert!(!pace.busy(&admission));
        for _ in 0..5 {
            assert_eq!(pace.next_start(false, now, cost_us), now);
        }
        // A tenant's call runs: the first start is at once, each next one cost × 100 ÷
        // share after the last.
        let call = admission.admit("t", Origin::Tenant).await.unwrap();
        assert!(pace.busy(&admission));
        let every = Duration::from_micros(cost_us * 100 / BUSY_SHARE_PERCENT);
        let starts: Vec<_> = (0..5).map(|_| pace.next_start(true, now, cost_us)).collect();
        assert_eq!(starts, (0..5).map(|i| now + every * i).collect::<Vec<_>>());
        // Time that passed already counts: a start late enough needs no rest.
        let late = starts[4] + every * 3;
        assert_eq!(pace.next_start(true, late, cost_us), late);
        // A slow collection's cost waits at most MAX_REST.
        assert_eq!(pace.next_start(true, late, 1_000_000), late + MAX_REST);
        // Before any collection of the pass ended, the seed cost stands in.
        let after = late + MAX_REST;
        assert_eq!(pace.next_start(true, after, 0), after + SEED_COST * (100 / BUSY_SHARE_PERCENT) as u32);
        // A short lease bounds the wait: a busy batch's last start within half of it.
        let mut short = Pace::new(&admission, Duration::from_millis(800));
        short.next_start(true, now, cost_us);
        assert_eq!(short.next_start(true, now, 1_000_000), now + Duration::from_millis(100));
        // The call ended, and none came since the last look: idle again.
        drop(call);
        assert!(!pace.busy(&admission));
        assert_eq!(pace.next_start(false, late, cost_us), late);
        // A call that came and went between two looks counts as busy once.
        drop(admission.admit("t", Origin::Tenant).await.unwrap());
        assert!(pace.busy(&admission));
        assert!(!pace.busy(&admission));
    }
}
