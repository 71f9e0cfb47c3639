//! One push of a sink of aggregates (`aggregate-seconds`): one record per customer, meter
//! and period, each period sent once, after it ended and settled. AWS deduplicates by
//! customer, dimension and hour and refuses a changed quantity, so a period's records
//! must be the same at every attempt:
//!
//! - an event counts in the period its `recorded_ms` falls in, or in the first period not
//!   yet sent (`sink_cursors.period_ms`) if that one is later: late usage is billed in
//!   the next period, never added to one already sent;
//! - a push sends the first period of the events after the cursor and takes, in commit
//!   order, every event up to the first of a later period. `recorded_ms` is read after a
//!   group's numbers are taken, so a later number has a later time, up to replicas'
//!   clocks apart: `settle-seconds` (5 minutes) covers that.
//!
//! Parked events marked for re-drive are sent once no ended period holds new events, in
//! the last period that ended: one no record was sent for yet.

use std::collections::{BTreeMap, HashSet};

use crate::records::{LedgerEvent, Parked};
use kiosk_domain::metering::now_ms;
use kiosk_store::export::{Lease, PushOutcome};

use super::Active;
use super::push::{deliver, record, refuse_locally};
use super::wire::{Record, aggregate_id};
use crate::error::Result;
use crate::lifecycle::Kiosk;

/// Events read at once while a period is gathered.
const PAGE: i64 = 10_000;

/// A customer's usage of a meter in the period being gathered.
#[derive(Default)]
struct Sum {
    quantity: i128,
    seqs: Vec<i64>,
}

/// One push of a sink of aggregates; whether another period may be ready.
pub(super) async fn period(kiosk: &Kiosk, sink: &Active, replica: &str, lease: Lease) -> Result<bool> {
    let settings = &sink.settings;
    let name = settings.name.as_str();
    let length = settings.period_ms();
    let now = now_ms() as i64;
    let settle = i64::from(settings.settle_seconds) * 1000;
    let bucket = |e: &LedgerEvent| e.recorded_ms.div_euclid(length).saturating_mul(length).max(lease.period_ms);
    let ended = |start: i64| start.saturating_add(length).saturating_add(settle) <= now;
    let mut page: Vec<LedgerEvent> = kiosk.store.usage_after(lease.cursor, PAGE).await?;
    // The period to send: the first new event's, if it ended. Else, if the operator
    // re-drove parked events, the last period that ended (never one that held new
    // events, so never one sent before with other records).
    let mut redrive: Vec<Parked> = Vec::new();
    let start = match page.first().map(bucket) {
        Some(start) if ended(start) => start,
        _ => {
            redrive = kiosk.store.parked(name, true, 0, PAGE).await?;
            if redrive.is_empty() {
                return Ok(false);
            }
            page.clear();
            (now - settle).div_euclid(length).saturating_mul(length).saturating_sub(length).max(lease.period_ms)
        }
    };
    if !ended(start) {
        return Ok(false);
    }
    let redriven: HashSet<i64> = redrive.iter().map(|p| p.event.seq).collect();
    let mut sums: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut parked: Vec<(i64, String)> = Vec::new();
    let mut add = |e: &LedgerEvent, parked: &mut Vec<(i64, String)>| match (
        settings.customer(&e.tenant),
        settings.meter(&e.app, &e.sku),
    ) {
        (Ok(customer), Ok(meter)) => {
            let sum = sums.entry((customer.to_string(), meter.to_string())).or_default();
            sum.quantity += i128::from(e.quantity);
            sum.seqs.push(e.seq);
        }
        (Err(why), _) | (_, Err(why)) => parked.push((e.seq, why)),
    };
    for p in &redrive {
        add(&p.event, &mut parked);
    }
    let mut cursor = lease.cursor;
    let mut later = false;
    'gather: loop {
        let full = page.len() as i64 == PAGE;
        for e in &page {
            if bucket(e) > start {
                later = true;
                break 'gather;
            }
            add(e, &mut parked);
            cursor = e.seq;
        }
        if !full || page.is_empty() {
            break;
        }
        page = kiosk.store.usage_after(cursor, PAGE).await?;
    }
    let records: Vec<Record<'_>> = sums
        .iter()
        .filter_map(|((customer, meter), sum)| match i64::try_from(sum.quantity) {
            Ok(quantity) => Some(Record {
                id: aggregate_id(customer, meter, start, length),
                customer,
                meter,
                quantity,
                time_ms: start,
                event: None,
                seqs: sum.seqs.clone(),
            }),
            Err(_) => {
                parked.extend(sum.seqs.iter().map(|s| (*s, "the period's sum does not fit 64 bits".to_string())));
                None
            }
        })
        .collect();
    let records = refuse_locally(sink, records, &mut parked);
    let Some(acknowledged) = deliver(kiosk, sink, replica, lease, &records, &mut parked).await? else {
        return Ok(false);
    };
    let parked_now: Vec<(i64, &str)> = parked.iter().map(|(s, r)| (*s, r.as_str())).collect();
    let outcome = PushOutcome {
        from: lease.cursor,
        cursor,
        sent: acknowledged.len() as i64,
        delivered_parked: acknowledged.into_iter().filter(|s| redriven.contains(s)).collect(),
        parked: parked_now,
        period_ms: Some(start.saturating_add(length)),
    };
    Ok(record(kiosk, sink, replica, &outcome, &redriven).await? && later)
}
