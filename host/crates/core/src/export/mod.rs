//! Usage pushed to billing systems (`[[sinks]]`): each sink reads the ledger in commit
//! order after its cursor (`usage_events.seq`), names each event's tenant and SKU as the
//! billing system knows them, POSTs a signed batch, and moves its cursor only after the
//! receiver acknowledged — in the transaction that parks what could not be sent (an
//! unmapped tenant or SKU, a receiver's refusal for good), with the reason. A receiver
//! out of reach or failing is retried with backoff and jitter; the cursor waits. One
//! replica pushes a sink at a time (the lease in its `sink_cursors` row); one that dies
//! mid-push leaves the lease to expire, and the next sends the same events with the same
//! ids, which the receiver deduplicates.
//!
//! Invariant: the ledger is the only source of what a sink must receive; nothing here
//! keeps usage of its own.

pub mod settings;
pub mod wire;

mod aggregate;
mod api;
mod client;
mod deliver;
mod push;
mod pushers;

pub use api::SinkSource;
pub use pushers::spawn;

use std::time::Duration;

use crate::records::{Parked, SinkState};
use kiosk_domain::metering::now_ms;

use crate::error::{Failure, Result};
use crate::lifecycle::Kiosk;
use settings::SinkSettings;

/// How often an idle sink looks for new usage.
const TICK: Duration = Duration::from_millis(500);
/// The share of the time the export takes while tenants' calls run (the collector's is
/// 10%): a push of 500 events costs ~7 ms of CPU, so the export keeps ~10,000 events/s
/// beside calls that use every core, and calls keep ~90% of their rate.
pub const BUSY_SHARE_PERCENT: u32 = 20;
/// The longest rest between two pushes while tenants call.
const MAX_REST: Duration = Duration::from_secs(2);
/// How often each replica refreshes a sink's gauges (lag, parked, alert).
const GAUGES: Duration = Duration::from_secs(10);
/// The longest a retry waits (the backoff doubles from 1 s up to this).
const MAX_BACKOFF_MS: i64 = 300_000;

/// A sink ready to push: its settings, signing key and HTTP client.
struct Active {
    settings: SinkSettings,
    key: Vec<u8>,
    http: reqwest::Client,
    lease_ms: i64,
    /// A sink set through the API: when it was set. A push checks it first, so no push
    /// that begins after a change or removal goes out with the settings before it.
    version: Option<i64>,
}

/// One push of `sink` if this replica holds (or takes) its lease; whether more is likely
/// waiting.
async fn push_once(kiosk: &Kiosk, sink: &Active, replica: &str) -> Result<bool> {
    if let Some(version) = sink.version
        && kiosk.store.api_sink_version(&sink.settings.name).await? != Some(version)
    {
        return Ok(false); // replaced or removed: its watcher restarts or stops this pusher
    }
    let now = now_ms() as i64;
    let Some(lease) = kiosk.store.lease_sink(&sink.settings.name, replica, now, sink.lease_ms).await? else {
        return Ok(false);
    };
    if sink.settings.period_ms() > 0 {
        aggregate::period(kiosk, sink, replica, lease).await
    } else {
        push::events(kiosk, sink, replica, lease).await
    }
}

/// 1 s doubling per failed attempt, up to `MAX_BACKOFF_MS`, with ±20% jitter so
/// replicas and sinks do not retry in step.
fn backoff(attempts: i64) -> i64 {
    let base = 1000i64.saturating_mul(1i64 << attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
    let jitter = rand::random_range(-(base / 5)..=base / 5);
    (base + jitter).max(100)
}

/// A sink as the operator reads it: its settings (never its key) and state.
#[derive(Debug, Clone)]
pub struct SinkView {
    pub settings: SinkSettings,
    /// Where the operator set it.
    pub source: SinkSource,
    pub state: SinkState,
    /// Seconds since the oldest event not yet sent was recorded (0: nothing waits).
    pub lag_seconds: f64,
    /// The lag reached the sink's `alert-lag-seconds`: the receiver's deadline is near.
    pub lagging: bool,
}

impl Kiosk {
    /// Every sink, the config file's then the API's, with its state.
    pub async fn sinks(&self) -> Result<Vec<SinkView>> {
        let mut views = Vec::new();
        for (settings, source) in self.all_sinks().await? {
            views.push(self.view(settings, source).await?);
        }
        Ok(views)
    }

    /// One sink with its state.
    pub async fn sink(&self, name: &str) -> Result<SinkView> {
        let (settings, source) = self.find_sink(name).await?;
        self.view(settings, source).await
    }

    async fn view(&self, settings: SinkSettings, source: SinkSource) -> Result<SinkView> {
        let name = settings.name.as_str();
        let state = self.store.sink_state(name).await?.unwrap_or_else(|| SinkState {
            sink: name.to_string(),
            cursor: 0,
            last_success_ms: None,
            last_error: None,
            attempts: 0,
            next_attempt_ms: 0,
            sent: 0,
            parked: 0,
            oldest_unsent_ms: None,
            period_ms: 0,
        });
        let lag_seconds = state.oldest_unsent_ms.map_or(0.0, |t| (now_ms() as i64 - t).max(0) as f64 / 1000.0);
        metrics::gauge!("kiosk_export_lag_seconds", "sink" => name.to_string()).set(lag_seconds);
        metrics::gauge!("kiosk_export_parked", "sink" => name.to_string()).set(state.parked as f64);
        let lagging = lag_seconds >= settings.alert_lag_seconds() as f64;
        metrics::gauge!("kiosk_export_lagging", "sink" => name.to_string()).set(f64::from(u8::from(lagging)));
        Ok(SinkView { settings, source, state, lag_seconds, lagging })
    }

    /// A page of `name`'s parked events, oldest first, after `after` (a `seq`).
    pub async fn sink_parked(&self, name: &str, after: i64, limit: i64) -> Result<Vec<Parked>> {
        self.find_sink(name).await?;
        Ok(self.store.parked(name, false, after, limit).await?)
    }

    /// Sends `name`'s parked events again (through the mapping as it is now); how many.
    pub async fn redrive_sink(&self, name: &str) -> Result<u64> {
        self.find_sink(name).await?;
        Ok(self.store.redrive_parked(name).await?)
    }

    /// Sends every event recorded from `from_ms` on to `name` again; the new cursor.
    pub async fn replay_sink(&self, name: &str, from_ms: i64) -> Result<i64> {
        let period = self.find_sink(name).await?.0.period_ms();
        // A sink of aggregates sends whole periods again: from the start of the one holding
        // `from_ms`, so a period is never sent again with part of its events.
        let from_ms = if period > 0 { from_ms.div_euclid(period).saturating_mul(period) } else { from_ms };
        self.store
            .replay_sink(name, from_ms, period)
            .await?
            .ok_or_else(|| Failure::not_found(format!("sink {name:?} has not started yet; retry")).field("sink"))
    }
}
