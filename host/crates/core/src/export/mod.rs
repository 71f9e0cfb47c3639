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

mod client;

use std::sync::Arc;
use std::time::Duration;

use crate::records::{LedgerEvent, Parked, SinkState};
use kiosk_domain::metering::now_ms;
use kiosk_store::export::PushOutcome;

use crate::error::{Failure, Result};
use crate::lifecycle::Kiosk;
use settings::{SinkSettings, SinkStart};
use wire::Mapped;

/// How often an idle sink looks for new usage.
const TICK: Duration = Duration::from_millis(500);
/// The share of the time the export takes while tenants' calls run (the collector's is
/// 10%): a push of 500 events costs ~7 ms of CPU, so the export keeps ~10,000 events/s
/// beside calls that use every core, and calls keep ~90% of their rate.
pub const BUSY_SHARE_PERCENT: u32 = 20;
/// The longest rest between two pushes while tenants call.
const MAX_REST: Duration = Duration::from_secs(2);
/// The longest a retry waits (the backoff doubles from 1 s up to this).
const MAX_BACKOFF_MS: i64 = 300_000;

/// A sink ready to push: its settings, signing key and HTTP client.
struct Active {
    settings: SinkSettings,
    key: Vec<u8>,
    http: reqwest::Client,
    lease_ms: i64,
}

/// What happened to one request.
enum Sent {
    Acknowledged,
    /// The receiver refused these events for good (400, 413 or 422).
    Refused(u16),
    /// Out of reach, failing, or asking to wait: retried later, the cursor waits.
    Failed(String),
}

/// Builds every configured sink (keys read, CA files loaded): a sink that cannot be
/// built stops the start, naming its setting.
fn activate(kiosk: &Kiosk) -> std::result::Result<Vec<Arc<Active>>, String> {
    kiosk
        .config
        .sinks
        .iter()
        .map(|s| {
            let key = s.secret()?;
            let http = client::build(s, &kiosk.config.egress.resolve)?;
            // A push is a few requests of at most `timeout-seconds` each (a refused batch is
            // split in two until the refused events are found); a replica that died holding
            // the lease is replaced after it.
            let lease_ms =
                i64::try_from(s.timeout_seconds.saturating_mul(4).saturating_add(10)).unwrap_or(i64::MAX) * 1000;
            Ok(Arc::new(Active { settings: s.clone(), key, http, lease_ms }))
        })
        .collect()
}

/// Starts one pusher per configured sink, in every replica (leases decide who works).
pub async fn spawn(kiosk: Arc<Kiosk>) -> anyhow::Result<()> {
    let sinks = activate(&kiosk).map_err(anyhow::Error::msg)?;
    let replica: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    for sink in sinks {
        let start = match sink.settings.start {
            SinkStart::Now => now_ms() as i64,
            SinkStart::Beginning => 0,
        };
        kiosk.store.ensure_sink(&sink.settings.name, start).await?;
        let (kiosk, replica) = (kiosk.clone(), replica.clone());
        tokio::spawn(async move {
            let mut seen = kiosk.runtime.admission().tenant_calls().started;
            loop {
                let began = tokio::time::Instant::now();
                let pushed = push_once(&kiosk, &sink, &replica).await;
                // While tenants call, the export takes about `BUSY_SHARE_PERCENT` of the
                // time: it rests for the rest (its lag drains when they stop).
                let calls = kiosk.runtime.admission().tenant_calls();
                if calls.running > 0 || calls.started != seen {
                    let rest = began.elapsed().saturating_mul(100 / BUSY_SHARE_PERCENT - 1);
                    tokio::time::sleep(rest.min(MAX_REST)).await;
                }
                seen = calls.started;
                match pushed {
                    // A full batch went out: more is likely waiting.
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(sink = %sink.settings.name, error = %e, "usage export failed"),
                }
                tokio::time::sleep(TICK).await;
            }
        });
    }
    Ok(())
}

/// One push of `sink` if this replica holds (or takes) its lease: parked events marked
/// for re-drive first, then new events after the cursor. Whether a full batch was read.
async fn push_once(kiosk: &Kiosk, sink: &Active, replica: &str) -> Result<bool> {
    let name = sink.settings.name.as_str();
    let now = now_ms() as i64;
    let Some((cursor, attempts)) = kiosk.store.lease_sink(name, replica, now, sink.lease_ms).await? else {
        return Ok(false);
    };
    let batch = i64::from(sink.settings.batch);
    let redrive: Vec<Parked> = kiosk.store.parked(name, true, 0, batch).await?;
    let fresh: Vec<LedgerEvent> = kiosk.store.usage_after(cursor, batch).await?;
    let full = fresh.len() as i64 == batch;
    if redrive.is_empty() && fresh.is_empty() {
        return Ok(false);
    }
    let mut parked: Vec<(i64, String)> = Vec::new();
    let mut mapped: Vec<Mapped<'_>> = Vec::new();
    // After a replay a parked event may also come after the cursor: sent once.
    let redriven: std::collections::HashSet<i64> = redrive.iter().map(|p| p.event.seq).collect();
    let events = redrive.iter().map(|p| &p.event).chain(fresh.iter().filter(|e| !redriven.contains(&e.seq)));
    for event in events {
        match (sink.settings.customer(&event.tenant), sink.settings.meter(&event.app, &event.sku)) {
            (Ok(customer), Ok(meter)) => mapped.push(Mapped { event, customer, meter }),
            (Err(why), _) | (_, Err(why)) => parked.push((event.seq, why)),
        }
    }
    // Bisect a refused batch down to the events the receiver refuses; any failure
    // stops the push (what was acknowledged is sent again next time, with its ids).
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut pending: Vec<&[Mapped<'_>]> = if mapped.is_empty() { Vec::new() } else { vec![&mapped[..]] };
    let mut first = true;
    while let Some(part) = pending.pop() {
        // The lease is renewed before each later request (a refused batch is split into
        // many): a push that lost it, or whose cursor a replay moved, stops and records
        // nothing. The first request goes under the lease just taken.
        if !std::mem::take(&mut first) {
            let renewed = kiosk.store.lease_sink(name, replica, now_ms() as i64, sink.lease_ms).await?;
            if renewed.map(|(c, _)| c) != Some(cursor) {
                return Ok(false);
            }
        }
        match send(sink, part).await {
            Sent::Acknowledged => acknowledged.extend(part.iter().map(|m| m.event.seq)),
            Sent::Refused(status) if part.len() == 1 => {
                parked.push((part[0].event.seq, format!("the receiver refused it (HTTP {status})")));
            }
            Sent::Refused(_) => {
                let (a, b) = part.split_at(part.len() / 2);
                pending.push(b);
                pending.push(a);
            }
            Sent::Failed(why) => {
                let wait = backoff(attempts);
                metrics::counter!("kiosk_export_failures_total", "sink" => name.to_string()).increment(1);
                tracing::warn!(sink = name, error = %why, retry_in_ms = wait, "a usage sink's receiver failed");
                kiosk.store.sink_failed(name, replica, &why, now_ms() as i64 + wait).await?;
                return Ok(false);
            }
        }
    }
    let parked_now: Vec<(i64, &str)> = parked.iter().map(|(s, r)| (*s, r.as_str())).collect();
    let outcome = PushOutcome {
        from: cursor,
        cursor: fresh.last().map_or(cursor, |e| e.seq),
        sent: acknowledged.len() as i64,
        // Any acknowledged event parked before (re-driven, or sent again after a replay).
        delivered_parked: acknowledged.clone(),
        parked: parked_now,
    };
    if kiosk.store.record_push(name, replica, now_ms() as i64, &outcome).await? {
        metrics::counter!("kiosk_export_events_total", "sink" => name.to_string()).increment(outcome.sent as u64);
        let newly = parked.iter().filter(|(s, _)| !redriven.contains(s)).count();
        metrics::counter!("kiosk_export_parked_total", "sink" => name.to_string()).increment(newly as u64);
        for (seq, why) in &parked {
            tracing::warn!(sink = name, seq, reason = %why, "a usage event was parked");
        }
    }
    Ok(full)
}

/// 1 s doubling per failed attempt, up to `MAX_BACKOFF_MS`, with ±20% jitter so
/// replicas and sinks do not retry in step.
fn backoff(attempts: i64) -> i64 {
    let base = 1000i64.saturating_mul(1i64 << attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
    let jitter = rand::random_range(-(base / 5)..=base / 5);
    (base + jitter).max(100)
}

/// POSTs one batch; what came of it (the receiver's words are never kept: only its status).
async fn send(sink: &Active, events: &[Mapped<'_>]) -> Sent {
    let (body, content_type) = wire::body(&sink.settings, events);
    let signature = wire::signature(&sink.key, now_ms() as i64 / 1000, &body);
    let request = sink
        .http
        .post(&sink.settings.endpoint)
        .header("content-type", content_type)
        .header("kiosk-signature", signature)
        .header("kiosk-sink", sink.settings.name.as_str())
        .body(body);
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Sent::Acknowledged,
                408 | 429 => Sent::Failed(format!("the receiver asked to wait (HTTP {status})")),
                300..=399 => {
                    Sent::Failed(format!("the receiver redirected (HTTP {status}), which Kiosk never follows"))
                }
                // What the events themselves can cause: the batch is split to find them.
                400 | 413 | 422 => Sent::Refused(status),
                // A wrong key, path or method refuses every batch alike: the sink's setting
                // is at fault, not the events, so nothing is parked and the cursor waits.
                _ => Sent::Failed(format!("the receiver answered HTTP {status}")),
            }
        }
        Err(e) => Sent::Failed(client::describe(&e)),
    }
}

/// A sink as the operator reads it: its settings (never its key) and state.
#[derive(Debug, Clone)]
pub struct SinkView {
    pub settings: SinkSettings,
    pub state: SinkState,
    /// Seconds since the oldest event not yet sent was recorded (0: nothing waits).
    pub lag_seconds: f64,
}

impl Kiosk {
    fn sink_settings(&self, name: &str) -> Result<&SinkSettings> {
        self.config
            .sinks
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Failure::not_found(format!("no sink {name:?} in the operator config")).field("sink"))
    }

    /// Every configured sink with its state.
    pub async fn sinks(&self) -> Result<Vec<SinkView>> {
        let mut views = Vec::new();
        for settings in &self.config.sinks {
            views.push(self.sink(&settings.name).await?);
        }
        Ok(views)
    }

    /// One sink with its state.
    pub async fn sink(&self, name: &str) -> Result<SinkView> {
        let settings = self.sink_settings(name)?.clone();
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
        });
        let lag_seconds = state.oldest_unsent_ms.map_or(0.0, |t| (now_ms() as i64 - t).max(0) as f64 / 1000.0);
        metrics::gauge!("kiosk_export_lag_seconds", "sink" => name.to_string()).set(lag_seconds);
        metrics::gauge!("kiosk_export_parked", "sink" => name.to_string()).set(state.parked as f64);
        Ok(SinkView { settings, state, lag_seconds })
    }

    /// A page of `name`'s parked events, oldest first, after `after` (a `seq`).
    pub async fn sink_parked(&self, name: &str, after: i64, limit: i64) -> Result<Vec<Parked>> {
        self.sink_settings(name)?;
        Ok(self.store.parked(name, false, after, limit).await?)
    }

    /// Sends `name`'s parked events again (through the mapping as it is now); how many.
    pub async fn redrive_sink(&self, name: &str) -> Result<u64> {
        self.sink_settings(name)?;
        Ok(self.store.redrive_parked(name).await?)
    }

    /// Sends every event recorded from `from_ms` on to `name` again; the new cursor.
    pub async fn replay_sink(&self, name: &str, from_ms: i64) -> Result<i64> {
        self.sink_settings(name)?;
        self.store
            .replay_sink(name, from_ms)
            .await?
            .ok_or_else(|| Failure::not_found(format!("sink {name:?} has not started yet; retry")).field("sink"))
    }
}
