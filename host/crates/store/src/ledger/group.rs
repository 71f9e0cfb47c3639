//! What one group's transaction writes, a few statements whatever its size: the calls'
//! key-value changes per scope, their lines per installation, every usage event (new,
//! duplicate or conflict) and the usage windows closed with them.

use std::collections::{BTreeMap, HashSet};

use kiosk_domain::effects::CallLines;
use kiosk_domain::kv::{KvChanges, KvScope, QuotaHit};
use kiosk_domain::metering::{UsageEvent, now_ms};

use super::{CallWork, Recorded, Submission, Written, stored_quantity};
use crate::kv::kv_apply_many;
use crate::logs::{LogBatch, NewLogLine, append_logs_tx};
use crate::sqlite_reads::Columns as _;
use crate::usage::{WindowClose, close_window_tx};
use crate::write::{Arg, WriteTx};
use crate::{StoreError, ctx};

/// Rows per multi-row usage insert (11 parameters each).
const USAGE_CHUNK: usize = 90;

/// One transaction's statements for `group`, a few whatever its size: per scope, the
/// key-value changes of its calls in order (`kv_apply_many`: a call over the quota is
/// refused and nothing of it is written); per installation, the lines of the calls kept
/// (`append_logs_tx`); then every kept event in multi-row inserts. The caller begins and
/// commits the transaction.
pub(super) async fn write_group(tx: &mut impl WriteTx, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
    let mut refused: Vec<Option<QuotaHit>> = vec![None; group.len()];
    // Calls whose effects a transaction that committed already applied (only its reply
    // was lost): their key-value changes and lines are skipped, their usage comes out
    // as duplicates.
    let done = mark_applied(tx, group).await?;
    // The group is in scope order, so these maps visit scopes in lock order too.
    let mut by_scope: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, submission) in group.iter().enumerate() {
        if done[i] {
            continue;
        }
        if let Some(CallWork { scope, kv: Some(_), .. }) = &submission.work {
            by_scope.entry((scope.tenant.as_str(), scope.installation.as_str())).or_default().push(i);
        }
    }
    for ((tenant, installation), calls) in &by_scope {
        let scope = KvScope { tenant: (*tenant).to_string(), installation: (*installation).to_string() };
        let changes: Vec<(&KvChanges, u64)> = calls
            .iter()
            .filter_map(|&i| group[i].work.as_ref().and_then(|w| w.kv.as_ref()).map(|kv| (&kv.changes, kv.quota)))
            .collect();
        for (&i, verdict) in calls.iter().zip(kv_apply_many(tx, &scope, &changes).await?) {
            refused[i] = verdict.err();
        }
    }
    // A call refused over its quota applied nothing: it is not marked.
    let unmark: Vec<&str> = group
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_some())
        .filter_map(|(s, _)| s.work.as_ref().map(|w| w.call_id.as_str()))
        .collect();
    for chunk in unmark.chunks(MARK_CHUNK) {
        let marks: Vec<String> = (1..=chunk.len()).map(|k| format!("${k}")).collect();
        let sql = format!("DELETE FROM applied_calls WHERE call_id IN ({})", marks.join(", "));
        let args: Vec<Arg<'_>> = chunk.iter().map(|id| Arg::Text(id)).collect();
        tx.execute("unmark refused calls", &sql, &args).await?;
    }
    let mut by_log: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, submission) in group.iter().enumerate() {
        if let Some(CallWork { scope, lines: Some(_), .. }) = &submission.work
            && refused[i].is_none()
            && !done[i]
        {
            by_log.entry((scope.tenant.as_str(), scope.installation.as_str())).or_default().push(i);
        }
    }
    for ((tenant, installation), calls) in &by_log {
        let mut bounds = None;
        let owned: Vec<(&CallLines, Vec<NewLogLine>)> = calls
            .iter()
            .filter_map(|&i| group[i].work.as_ref().and_then(|w| w.lines.as_ref()))
            .map(|(lines, b)| {
                bounds = Some(*b);
                let kept = lines
                    .lines
                    .iter()
                    .map(|l| NewLogLine {
                        at_ms: i64::try_from(l.at_ms).unwrap_or(i64::MAX),
                        level: l.level.to_string(),
                        message: l.message.clone(),
                    })
                    .collect();
                (lines, kept)
            })
            .collect();
        let batches: Vec<LogBatch<'_>> = owned
            .iter()
            .map(|(l, kept)| LogBatch { call_id: &l.call_id, operation: &l.operation, lines: kept })
            .collect();
        if let Some(bounds) = bounds {
            // An installation uninstalled while the calls ran: their lines go with it.
            append_logs_tx(tx, tenant, installation, &batches, bounds).await?;
        }
    }
    let events: Vec<&UsageEvent> = group
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .flat_map(|(submission, _)| submission.writable())
        .collect();
    let mut outcomes = record_events(tx, &events).await?.into_iter();
    let mut collected = Vec::new();
    for close in group.iter().filter_map(|s| s.close.as_ref()) {
        if close_window_tx(tx, close).await? && !close.given_up {
            collected.push(close);
        }
    }
    audit_collected(tx, &collected).await?;
    Ok(group
        .iter()
        .zip(refused)
        .map(|(submission, refused)| match refused {
            Some(quota) => Err(quota),
            None => Ok(outcomes.by_ref().take(submission.writable().count()).collect()),
        })
        .collect())
}

/// One audit row (`usage.windows-collected`) per group for the windows it closes as
/// collected, naming each (`installation@window_start`), in the transaction that closes
/// them: a window is collected if and only if the audit says so, even when the pass's own
/// summary row (`usage.collect-pass`, written at its end) never comes because the process
/// died mid-pass. (A window given up has its own row: `WindowClose::audited`.)
async fn audit_collected(tx: &mut impl WriteTx, collected: &[&WindowClose]) -> Result<(), StoreError> {
    let mut by_actor: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for close in collected {
        by_actor
            .entry(close.actor.as_str())
            .or_default()
            .push(format!("{}@{}", close.installation, close.window_start));
    }
    for (actor, windows) in by_actor {
        let detail = format!("{} windows collected: {}", windows.len(), windows.join(" "));
        crate::audit::audit(tx, actor, "usage.windows-collected", "usage", &detail).await?;
    }
    Ok(())
}

/// Rows per multi-row insert of applied call ids (2 parameters each).
const MARK_CHUNK: usize = 200;

/// Records the id of every call in `group` as applied (`applied_calls`, multi-row,
/// `ON CONFLICT DO NOTHING … RETURNING` the ids that were new); per submission, `true`
/// if its call was applied before — by a transaction that committed though its writer
/// saw an error — or earlier in this group. On PostgreSQL an id inserted by a
/// transaction still in flight waits for it, so the answer is never a guess.
async fn mark_applied(tx: &mut impl WriteTx, group: &[Submission]) -> Result<Vec<bool>, StoreError> {
    let ids: Vec<&str> = group.iter().filter_map(|s| s.work.as_ref().map(|w| w.call_id.as_str())).collect();
    let mut new: HashSet<String> = HashSet::with_capacity(ids.len());
    let now = now_ms() as i64;
    for chunk in ids.chunks(MARK_CHUNK) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", i * 2 + 1, i * 2 + 2)).collect();
        let sql = format!(
            "INSERT INTO applied_calls (call_id, at_ms) VALUES {} ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
            rows.join(", ")
        );
        let args: Vec<Arg<'_>> = chunk.iter().flat_map(|id| [Arg::Text(id), Arg::Int(now)]).collect();
        for row in tx.fetch_all("mark applied calls", &sql, &args).await? {
            new.insert(row.text("call_id").map_err(ctx("read applied calls"))?);
        }
    }
    Ok(group
        .iter()
        .map(|s| match &s.work {
            // `remove`: a second call of the same id in one group is a repeat of the first.
            Some(work) => !new.remove(&work.call_id),
            None => false,
        })
        .collect())
}

/// Takes `count` numbers of the ledger's commit order (`usage_seq`) and returns the one
/// before the first. The row stays locked until this transaction ends, so numbers become
/// visible in order: a sink that has read number n has seen every smaller one that will
/// ever exist. Numbers of events that turn out duplicates are simply never used.
async fn take_numbers(tx: &mut impl WriteTx, count: usize) -> Result<i64, StoreError> {
    if count == 0 {
        return Ok(0);
    }
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let row = tx
        .fetch_optional(
            "number usage events",
            "UPDATE usage_seq SET next = next + $1 WHERE id = 1 RETURNING next",
            &[Arg::Int(count)],
        )
        .await?
        .ok_or_else(|| StoreError { action: "number usage events".into(), source: sqlx::Error::RowNotFound })?;
    let next: i64 = row.int("next").map_err(ctx("number usage events"))?;
    Ok(next - count)
}

/// Inserts `events` (multi-row, `ON CONFLICT DO NOTHING … RETURNING` the keys that were
/// new) and reads back the quantity of every key that was already there: recorded,
/// duplicate or conflict per event, in order. An event whose key came earlier in the same
/// group is a duplicate (or conflict) of that one, as if written after it.
async fn record_events(tx: &mut impl WriteTx, events: &[&UsageEvent]) -> Result<Vec<Recorded>, StoreError> {
    let mut inserted: HashSet<(&str, &str)> = HashSet::new();
    let mut seq = take_numbers(tx, events.len()).await?;
    // Read once the numbers are ours: later numbers are booked no earlier on this clock.
    let now = now_ms() as i64;
    for chunk in events.chunks(USAGE_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO usage_events (source, idem_key, tenant, installation, app, version, sku, quantity, at_ms, recorded_ms, seq) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p = i * 11;
            sql.push('(');
            sql.push_str(&(1..=11).map(|k| format!("${}", p + k)).collect::<Vec<_>>().join(", "));
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (source, idem_key) DO NOTHING RETURNING source, idem_key");
        let args: Vec<Arg<'_>> = chunk
            .iter()
            .flat_map(|e| {
                seq += 1;
                [
                    Arg::Text(e.source.as_str()),
                    Arg::Text(&e.idempotency_key),
                    Arg::Text(&e.tenant),
                    Arg::Text(&e.installation),
                    Arg::Text(&e.app),
                    Arg::Text(&e.version),
                    Arg::Text(&e.sku),
                    // Both fit: `refusal` passed (quantity <= 2^53 - 1, at_ms <= i64::MAX).
                    Arg::Int(e.quantity as i64),
                    Arg::Int(e.at_ms as i64),
                    Arg::Int(now),
                    Arg::Int(seq),
                ]
            })
            .collect();
        for row in tx.fetch_all("record usage", &sql, &args).await? {
            let source = row.text("source").map_err(ctx("read recorded usage"))?;
            let key = row.text("idem_key").map_err(ctx("read recorded usage"))?;
            if let Some(e) = chunk.iter().find(|e| e.source.as_str() == source && e.idempotency_key == key) {
                inserted.insert((e.source.as_str(), e.idempotency_key.as_str()));
            }
        }
    }
    let mut outcomes = Vec::with_capacity(events.len());
    let mut first_seen: HashSet<(&str, &str)> = HashSet::new();
    for e in events {
        let id = (e.source.as_str(), e.idempotency_key.as_str());
        if inserted.contains(&id) && first_seen.insert(id) {
            outcomes.push(Recorded::Recorded);
            continue;
        }
        let row = tx
            .fetch_optional(
                "read recorded usage",
                "SELECT quantity FROM usage_events WHERE source = $1 AND idem_key = $2",
                &[Arg::Text(e.source.as_str()), Arg::Text(&e.idempotency_key)],
            )
            .await?
            .ok_or_else(|| ctx("read recorded usage")(sqlx::Error::RowNotFound))?;
        let recorded = stored_quantity(row.int("quantity").map_err(ctx("read recorded usage"))?);
        outcomes.push(if recorded == e.quantity {
            Recorded::Duplicate
        } else {
            Recorded::Conflict { recorded_quantity: recorded }
        });
    }
    Ok(outcomes)
}
