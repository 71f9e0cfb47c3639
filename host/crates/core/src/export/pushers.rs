//! The pushers of a replica: one task per sink, the config file's from the start and the
//! API's as they come, change and go (watched every `WATCH`). A stopping replica stops its
//! pushers and gives their leases back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiosk_domain::metering::now_ms;
use tokio::task::AbortHandle;

use super::api::{seal_context, stored_settings};
use super::settings::{SinkSettings, SinkStart};
use super::{Active, BUSY_SHARE_PERCENT, GAUGES, MAX_REST, TICK, client, push_once};
use crate::lifecycle::Kiosk;

/// How often a replica looks for sinks set, changed or removed through the API: within
/// this (and the push in flight) every replica pushes what the operator set.
pub(super) const WATCH: Duration = Duration::from_secs(2);

/// A sink ready to push (its key and client built); an error names the setting at fault.
fn activate(kiosk: &Kiosk, settings: &SinkSettings, key: Vec<u8>, version: Option<i64>) -> Result<Arc<Active>, String> {
    let http = client::build(settings, &kiosk.config.egress.resolve)?;
    // A push is a few requests of at most `timeout-seconds` each (a refused batch is split
    // in two until the refused events are found; the lease is renewed along the way); a
    // replica that died holding the lease is replaced after it.
    let lease_ms =
        i64::try_from(settings.timeout_seconds.saturating_mul(4).saturating_add(10)).unwrap_or(i64::MAX) * 1000;
    Ok(Arc::new(Active { settings: settings.clone(), key, http, lease_ms, version }))
}

/// Starts the pushers of every sink in this replica (leases decide who works): the
/// config file's now (one that cannot be built stops the start, naming its setting), the
/// API's through a watcher.
pub async fn spawn(kiosk: Arc<Kiosk>) -> anyhow::Result<()> {
    let mut configured = Vec::new();
    for settings in &kiosk.config.sinks {
        let key = settings.secret().map_err(anyhow::Error::msg)?;
        configured.push(activate(&kiosk, settings, key, None).map_err(anyhow::Error::msg)?);
    }
    for sink in configured {
        let pusher = start(kiosk.clone(), sink).await?;
        kiosk.keep_pusher(pusher);
    }
    let watcher = tokio::spawn(watch(kiosk.clone()));
    kiosk.keep_pusher(watcher.abort_handle());
    Ok(())
}

/// Creates the sink's cursor if it has none and starts its pusher.
async fn start(kiosk: Arc<Kiosk>, sink: Arc<Active>) -> anyhow::Result<AbortHandle> {
    let start = match sink.settings.start {
        SinkStart::Now => now_ms() as i64,
        SinkStart::Beginning => 0,
    };
    kiosk.store.ensure_sink(&sink.settings.name, start).await?;
    Ok(tokio::spawn(run(kiosk, sink)).abort_handle())
}

/// A pusher: pushes while there is usage to send, rests while tenants call.
async fn run(kiosk: Arc<Kiosk>, sink: Arc<Active>) {
    let replica = kiosk.replica.clone();
    let mut seen = kiosk.runtime.admission().tenant_calls().started;
    let mut gauged = tokio::time::Instant::now() - GAUGES;
    loop {
        // The lag and parked gauges stay current without an API read.
        if gauged.elapsed() >= GAUGES {
            gauged = tokio::time::Instant::now();
            if let Err(e) = kiosk.sink(&sink.settings.name).await {
                tracing::warn!(sink = %sink.settings.name, error = %e, "a usage sink's state cannot be read");
            }
        }
        let began = tokio::time::Instant::now();
        let pushed = push_once(&kiosk, &sink, &replica).await;
        // While tenants call, the export takes about `BUSY_SHARE_PERCENT` of the time: it
        // rests for the rest (its lag drains when they stop).
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
}

/// Keeps this replica's pushers of API sinks in step with `api_sinks`: a new sink is
/// started, a changed one restarted with its new settings, a removed one stopped (its
/// lease given back).
async fn watch(kiosk: Arc<Kiosk>) {
    let mut running: HashMap<String, (i64, Option<AbortHandle>)> = HashMap::new();
    loop {
        match kiosk.store.api_sinks().await {
            Ok(rows) => {
                let live: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
                for row in rows {
                    if running.get(&row.name).map(|(at, _)| *at) == Some(row.updated_ms)
                        || kiosk.config.sinks.iter().any(|s| s.name == row.name)
                    {
                        continue;
                    }
                    if let Some((_, Some(old))) = running.remove(&row.name) {
                        old.abort();
                    }
                    let ready = stored_settings(&row)
                        .ok_or_else(|| "its stored settings cannot be read".to_string())
                        .and_then(|s| {
                            let key = kiosk.sealer.open(&row.secret, &seal_context(&row.name))?;
                            activate(&kiosk, &s, key, Some(row.updated_ms))
                        });
                    let handle = match ready {
                        Ok(sink) => match start(kiosk.clone(), sink).await {
                            Ok(handle) => Some(handle),
                            Err(e) => {
                                tracing::warn!(sink = %row.name, error = %e, "a usage sink cannot start");
                                continue; // tried again at the next look
                            }
                        },
                        Err(why) => {
                            tracing::warn!(sink = %row.name, error = %why, "a usage sink cannot start");
                            None
                        }
                    };
                    if let Some(h) = &handle {
                        kiosk.keep_pusher(h.clone());
                    }
                    running.insert(row.name.clone(), (row.updated_ms, handle));
                }
                let gone: Vec<String> = running.keys().filter(|n| !live.contains(n)).cloned().collect();
                for name in gone {
                    if let Some((_, Some(handle))) = running.remove(&name) {
                        handle.abort();
                    }
                    if let Err(e) = kiosk.store.release_sink(&name, &kiosk.replica).await {
                        tracing::warn!(sink = %name, error = %e, "a usage sink's lease could not be given back");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the sinks set through the API cannot be read"),
        }
        tokio::time::sleep(WATCH).await;
    }
}

impl Kiosk {
    fn keep_pusher(&self, pusher: AbortHandle) {
        let mut pushers = self.pushers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pushers.retain(|p| !p.is_finished());
        pushers.push(pusher);
    }

    /// Stops this replica's pushers and gives their leases back, so another replica takes
    /// each sink over at once rather than after the lease (a push stopped mid-request is
    /// sent again, under the same ids).
    pub async fn release_sinks(&self) {
        for pusher in self.pushers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            pusher.abort();
        }
        if let Err(e) = self.store.release_sinks(&self.replica).await {
            tracing::warn!(error = %e, "the usage sinks' leases could not be given back");
        }
    }
}
