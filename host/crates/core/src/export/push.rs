//! One push of a sink that sends a record per event, and the delivery every push shares:
//! records go out in requests of the sink's batch; a request refused for what it carries
//! is split until the refused records are found (those are parked); any failure stops the
//! push with the cursor where it was.

use std::collections::HashSet;
use std::time::Instant;

use crate::records::{LedgerEvent, Parked};
use kiosk_domain::metering::now_ms;
use kiosk_store::export::{Lease, PushOutcome};

use super::deliver::{self, Sent};
use super::wire::Record;
use super::{Active, backoff};
use crate::error::Result;
use crate::lifecycle::Kiosk;

/// What a delivery came to: the events acknowledged, or nothing (a failure was recorded,
/// or the lease was lost: the push writes nothing).
pub(super) type Delivered = Option<Vec<i64>>;

/// Sends `records`; refused ones are added to `parked`.
pub(super) async fn deliver(
    kiosk: &Kiosk,
    sink: &Active,
    replica: &str,
    lease: Lease,
    records: &[Record<'_>],
    parked: &mut Vec<(i64, String)>,
) -> Result<Delivered> {
    let name = sink.settings.name.as_str();
    let mut acknowledged: Vec<i64> = Vec::new();
    let per_request = sink.settings.batch() as usize;
    let mut pending: Vec<&[Record<'_>]> = records.chunks(per_request).rev().collect();
    let mut renewed = Instant::now();
    while let Some(part) = pending.pop() {
        // The lease is renewed before a request once a quarter of it has passed: a push
        // that lost it, or whose cursor a replay moved, stops and records nothing.
        if renewed.elapsed().as_millis() as i64 > sink.lease_ms / 4 {
            let again = kiosk.store.lease_sink(name, replica, now_ms() as i64, sink.lease_ms).await?;
            if again.map(|l| l.cursor) != Some(lease.cursor) {
                return Ok(None);
            }
            renewed = Instant::now();
        }
        match deliver::send(sink, part).await {
            Sent::Answered(outcome) => {
                for (record, refused) in part.iter().zip(outcome) {
                    match refused {
                        None => acknowledged.extend(&record.seqs),
                        Some(why) => parked.extend(record.seqs.iter().map(|s| (*s, why.clone()))),
                    }
                }
            }
            Sent::Refused(status) if part.len() == 1 => {
                let why = format!("the receiver refused it (HTTP {status})");
                parked.extend(part[0].seqs.iter().map(|s| (*s, why.clone())));
            }
            Sent::Refused(_) => {
                let (a, b) = part.split_at(part.len() / 2);
                pending.push(b);
                pending.push(a);
            }
            Sent::Failed(why) => {
                let wait = backoff(lease.attempts);
                metrics::counter!("kiosk_export_failures_total", "sink" => name.to_string()).increment(1);
                tracing::warn!(sink = name, error = %why, retry_in_ms = wait, "a usage sink's receiver failed");
                kiosk.store.sink_failed(name, replica, &why, now_ms() as i64 + wait).await?;
                return Ok(None);
            }
        }
    }
    Ok(Some(acknowledged))
}

/// Parks, before any request, a record the receiver would refuse for its age or size.
pub(super) fn refuse_locally<'a>(
    sink: &Active,
    records: Vec<Record<'a>>,
    parked: &mut Vec<(i64, String)>,
) -> Vec<Record<'a>> {
    let kind = sink.settings.kind;
    let now = now_ms() as i64;
    records
        .into_iter()
        .filter(|r| {
            let why = if kind.max_age_ms().is_some_and(|age| r.time_ms <= now.saturating_sub(age)) {
                format!(
                    "older than kind {} takes ({} hours)",
                    kind.as_str(),
                    kind.max_age_ms().unwrap_or(0) / 3_600_000
                )
            } else if kind == super::settings::SinkKind::AwsMarketplace
                && !(0..=i64::from(i32::MAX)).contains(&r.quantity)
            {
                "a quantity outside 0-2147483647, which kind aws-marketplace does not take".to_string()
            } else {
                return true;
            };
            parked.extend(r.seqs.iter().map(|s| (*s, why.clone())));
            false
        })
        .collect()
}

/// Writes a push's outcome and counts it; false if the push had lost its lease.
pub(super) async fn record(
    kiosk: &Kiosk,
    sink: &Active,
    replica: &str,
    outcome: &PushOutcome<'_>,
    redriven: &HashSet<i64>,
) -> Result<bool> {
    let name = sink.settings.name.as_str();
    if !kiosk.store.record_push(name, replica, now_ms() as i64, outcome).await? {
        return Ok(false);
    }
    metrics::counter!("kiosk_export_events_total", "sink" => name.to_string()).increment(outcome.sent as u64);
    let newly = outcome.parked.iter().filter(|(s, _)| !redriven.contains(s)).count();
    metrics::counter!("kiosk_export_parked_total", "sink" => name.to_string()).increment(newly as u64);
    for (seq, why) in &outcome.parked {
        tracing::warn!(sink = name, seq, reason = %why, "a usage event was parked");
    }
    Ok(true)
}

/// One push of a sink of records per event: parked events marked for re-drive first,
/// then new events after the cursor. Whether a full batch was read.
pub(super) async fn events(kiosk: &Kiosk, sink: &Active, replica: &str, lease: Lease) -> Result<bool> {
    let name = sink.settings.name.as_str();
    // Stripe takes an event a request; a push still reads a hundred.
    let batch = i64::from(if sink.settings.kind.max_batch() == 1 { 100 } else { sink.settings.batch() });
    let redrive: Vec<Parked> = kiosk.store.parked(name, true, 0, batch).await?;
    let fresh: Vec<LedgerEvent> = kiosk.store.usage_after(lease.cursor, batch).await?;
    let full = fresh.len() as i64 == batch;
    if redrive.is_empty() && fresh.is_empty() {
        return Ok(false);
    }
    let mut parked: Vec<(i64, String)> = Vec::new();
    // After a replay a parked event may also come after the cursor: sent once.
    let redriven: HashSet<i64> = redrive.iter().map(|p| p.event.seq).collect();
    let events = redrive.iter().map(|p| &p.event).chain(fresh.iter().filter(|e| !redriven.contains(&e.seq)));
    let mut records = Vec::new();
    for event in events {
        match (sink.settings.customer(&event.tenant), sink.settings.meter(&event.app, &event.sku)) {
            (Ok(customer), Ok(meter)) => records.push(Record::of_event(event, customer, meter)),
            (Err(why), _) | (_, Err(why)) => parked.push((event.seq, why)),
        }
    }
    let records = refuse_locally(sink, records, &mut parked);
    let Some(acknowledged) = deliver(kiosk, sink, replica, lease, &records, &mut parked).await? else {
        return Ok(false);
    };
    let parked_now: Vec<(i64, &str)> = parked.iter().map(|(s, r)| (*s, r.as_str())).collect();
    let outcome = PushOutcome {
        from: lease.cursor,
        cursor: fresh.last().map_or(lease.cursor, |e| e.seq),
        sent: acknowledged.len() as i64,
        delivered_parked: acknowledged.into_iter().filter(|s| redriven.contains(s)).collect(),
        parked: parked_now,
        period_ms: None,
    };
    record(kiosk, sink, replica, &outcome, &redriven).await?;
    Ok(full)
}
