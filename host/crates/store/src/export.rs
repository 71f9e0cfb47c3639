//! The usage export's state (`sink_cursors`, `sink_parked`) and its reads of the ledger
//! in commit order (`usage_events.seq`): what a sink must receive is derived from the
//! ledger, and a sink's cursor moves only after its receiver acknowledged (or the
//! events were parked), in one transaction, by the replica holding the sink's lease.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, ctx};

/// One usage event as the ledger holds it, with its place in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    pub seq: i64,
    pub source: String,
    pub idem_key: String,
    pub tenant: String,
    pub installation: String,
    pub app: String,
    pub version: String,
    pub sku: String,
    pub quantity: i64,
    pub at_ms: i64,
    pub recorded_ms: i64,
}

/// The cursor before the first event recorded at or after `$2` (every event when none is:
/// the last `seq`). By the first such `seq`, not by the last one recorded before: clocks of
/// replicas differ, so `recorded_ms` does not follow `seq` exactly.
const BEFORE_RECORDED: &str = "COALESCE((SELECT MIN(seq) FROM usage_events WHERE recorded_ms >= $2) - 1,
    (SELECT COALESCE(MAX(seq), 0) FROM usage_events))";

const EVENT_COLUMNS: &str =
    "seq, source, idem_key, tenant, installation, app, version, sku, quantity, at_ms, recorded_ms";

fn ledger_event(r: &AnyRow) -> Result<LedgerEvent, sqlx::Error> {
    Ok(LedgerEvent {
        seq: r.try_get("seq")?,
        source: r.try_get("source")?,
        idem_key: r.try_get("idem_key")?,
        tenant: r.try_get("tenant")?,
        installation: r.try_get("installation")?,
        app: r.try_get("app")?,
        version: r.try_get("version")?,
        sku: r.try_get("sku")?,
        quantity: r.try_get("quantity")?,
        at_ms: r.try_get("at_ms")?,
        recorded_ms: r.try_get("recorded_ms")?,
    })
}

/// A sink's state as the exporter and the operator read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkState {
    pub sink: String,
    /// Every event at or below this `seq` was acknowledged or parked.
    pub cursor: i64,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// No push before this time (the retry's backoff).
    pub next_attempt_ms: i64,
    /// Events acknowledged by the receiver, all time.
    pub sent: i64,
    pub parked: i64,
    /// When the oldest event not yet sent was recorded (none: nothing waits).
    pub oldest_unsent_ms: Option<i64>,
    /// For a sink of aggregates: the start of the first period not yet sent.
    pub period_ms: i64,
}

/// A sink's lease as its pusher holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub cursor: i64,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// For a sink of aggregates: the start of the first period not yet sent.
    pub period_ms: i64,
}

/// A parked event with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub event: LedgerEvent,
    pub reason: String,
    pub parked_ms: i64,
    pub redrive: bool,
}

/// What one push did, written at once.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome<'a> {
    /// The cursor the push started from: nothing is written if it moved meanwhile (a
    /// replay), so a replay is never undone by a push that was in flight.
    pub from: i64,
    /// The new cursor (unchanged when the push only re-drove parked events).
    pub cursor: i64,
    /// Events the receiver acknowledged.
    pub sent: i64,
    /// Events parked now, with their reasons.
    pub parked: Vec<(i64, &'a str)>,
    /// Re-driven events acknowledged now (no longer parked; one the cursor passed is
    /// unparked anyway).
    pub delivered_parked: Vec<i64>,
    /// For a sink of aggregates: the start of the first period not yet sent, after it.
    pub period_ms: Option<i64>,
}

impl Store {
    /// Creates `sink`'s row if it has none, starting after every event recorded before
    /// `start_ms` (`0`: from the ledger's beginning).
    pub async fn ensure_sink(&self, sink: &str, start_ms: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let sql = format!(
            "INSERT INTO sink_cursors (sink, cursor) VALUES ($1, {BEFORE_RECORDED}) ON CONFLICT (sink) DO NOTHING"
        );
        sqlx::query(&sql)
            .bind(sink)
            .bind(start_ms)
            .execute(&self.pool)
            .await
            .map_err(ctx(format!("create sink {sink}")))?;
        Ok(())
    }

    /// Takes `sink`'s lease for `replica` until `now + lease_ms` if nobody holds a live
    /// one (or holds it itself) and its backoff has passed; the cursor and the failed
    /// attempts since the last success.
    pub async fn lease_sink(
        &self,
        sink: &str,
        replica: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE sink_cursors SET leased_by = $1, lease_until = $2
             WHERE sink = $3 AND (lease_until < $4 OR leased_by = $1) AND next_attempt_ms <= $4
             RETURNING cursor, attempts, period_ms",
        )
        .bind(replica)
        .bind(now.saturating_add(lease_ms))
        .bind(sink)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx(format!("lease sink {sink}")))?;
        row.map(|r| {
            Ok(Lease {
                cursor: r.try_get("cursor")?,
                attempts: r.try_get("attempts")?,
                period_ms: r.try_get("period_ms")?,
            })
        })
        .transpose()
        .map_err(ctx(format!("lease sink {sink}")))
    }

    /// Up to `limit` events after `cursor`, in commit order.
    pub async fn usage_after(&self, cursor: i64, limit: i64) -> Result<Vec<LedgerEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM usage_events WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("read usage to export"))?;
        rows.iter().map(ledger_event).collect::<Result<_, _>>().map_err(ctx("read usage to export"))
    }

    /// `sink`'s parked events, oldest first: only those marked for re-drive when
    /// `redrive_only`; at most `limit`, after `after` (a `seq`).
    pub async fn parked(
        &self,
        sink: &str,
        redrive_only: bool,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Parked>, StoreError> {
        let columns: Vec<String> = EVENT_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
        let sql = format!(
            "SELECT {}, p.reason, p.parked_ms, p.redrive FROM sink_parked p
             JOIN usage_events u ON u.seq = p.seq
             WHERE p.sink = $1 AND p.seq > $2 AND p.redrive >= $3 ORDER BY p.seq LIMIT $4",
            columns.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(sink)
            .bind(after)
            .bind(i64::from(redrive_only))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx(format!("read sink {sink}'s parked usage")))?;
        rows.iter()
            .map(|r| {
                Ok(Parked {
                    event: ledger_event(r)?,
                    reason: r.try_get("reason")?,
                    parked_ms: r.try_get("parked_ms")?,
                    redrive: r.try_get::<i64, _>("redrive")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(format!("read sink {sink}'s parked usage")))
    }

    /// Writes what one push did, if `replica` still holds `sink`'s lease and its cursor
    /// is still where the push began (else nothing: another replica took over, or a
    /// replay moved the cursor; the events are sent again and the receiver deduplicates
    /// them by id).
    pub async fn record_push(
        &self,
        sink: &str,
        replica: &str,
        now: i64,
        outcome: &PushOutcome<'_>,
    ) -> Result<bool, StoreError> {
        let what = format!("record sink {sink}'s push");
        let mut tx = self.begin_write_keeping_calls().await?;
        let held = sqlx::query(
            "UPDATE sink_cursors SET cursor = $5, sent = sent + $1,
             last_success_ms = CASE WHEN $1 > 0 THEN $2 ELSE last_success_ms END, last_error = NULL, attempts = 0,
             next_attempt_ms = 0, period_ms = COALESCE($7, period_ms)
             WHERE sink = $3 AND leased_by = $4 AND cursor = $6",
        )
        .bind(outcome.sent)
        .bind(now)
        .bind(sink)
        .bind(replica)
        .bind(outcome.cursor)
        .bind(outcome.from)
        .bind(outcome.period_ms)
        .execute(&mut *tx)
        .await
        .map_err(ctx(what.clone()))?;
        if held.rows_affected() != 1 {
            return Ok(false);
        }
        // Every event the cursor passed was acknowledged or is parked below: one parked
        // before (sent again after a replay) is no longer.
        sqlx::query("DELETE FROM sink_parked WHERE sink = $1 AND seq > $2 AND seq <= $3")
            .bind(sink)
            .bind(outcome.from)
            .bind(outcome.cursor)
            .execute(&mut *tx)
            .await
            .map_err(ctx(what.clone()))?;
        for (seq, reason) in &outcome.parked {
            sqlx::query(
                "INSERT INTO sink_parked (sink, seq, reason, parked_ms, redrive) VALUES ($1, $2, $3, $4, 0)
                 ON CONFLICT (sink, seq) DO UPDATE SET reason = $3, parked_ms = $4, redrive = 0",
            )
            .bind(sink)
            .bind(*seq)
            .bind(*reason)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(ctx(what.clone()))?;
        }
        for chunk in outcome.delivered_parked.chunks(1000) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("DELETE FROM sink_parked WHERE sink = $1 AND seq IN ({})", marks.join(", "));
            let mut query = sqlx::query(&sql).bind(sink);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut *tx).await.map_err(ctx(what.clone()))?;
        }
        tx.commit().await.map_err(ctx(what))?;
        Ok(true)
    }

    /// Records a failed push of `sink` (a receiver out of reach or failing): the cursor
    /// stays, the next attempt waits until `next_attempt_ms`.
    pub async fn sink_failed(
        &self,
        sink: &str,
        replica: &str,
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE sink_cursors SET attempts = attempts + 1, last_error = $1, next_attempt_ms = $2
             WHERE sink = $3 AND leased_by = $4",
        )
        .bind(error)
        .bind(next_attempt_ms)
        .bind(sink)
        .bind(replica)
        .execute(&self.pool)
        .await
        .map_err(ctx(format!("record sink {sink}'s failure")))?;
        Ok(())
    }

    /// Gives `sink`'s lease back, if `replica` holds it.
    pub async fn release_sink(&self, sink: &str, replica: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE sink_cursors SET lease_until = 0 WHERE sink = $1 AND leased_by = $2")
            .bind(sink)
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(ctx(format!("release sink {sink}")))?;
        Ok(())
    }

    /// `sink`'s state (none: no such sink row yet).
    pub async fn sink_state(&self, sink: &str) -> Result<Option<SinkState>, StoreError> {
        let what = format!("read sink {sink}");
        let row = sqlx::query(
            "SELECT c.sink, c.cursor, c.last_success_ms, c.last_error, c.attempts, c.next_attempt_ms, c.sent,
                c.period_ms,
                (SELECT COUNT(*) FROM sink_parked p WHERE p.sink = c.sink) AS parked,
                (SELECT u.recorded_ms FROM usage_events u WHERE u.seq > c.cursor ORDER BY u.seq LIMIT 1)
                    AS oldest_unsent_ms
             FROM sink_cursors c WHERE c.sink = $1",
        )
        .bind(sink)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx(what.clone()))?;
        row.map(|r| {
            Ok(SinkState {
                sink: r.try_get("sink")?,
                cursor: r.try_get("cursor")?,
                last_success_ms: r.try_get("last_success_ms")?,
                last_error: r.try_get("last_error")?,
                attempts: r.try_get("attempts")?,
                next_attempt_ms: r.try_get("next_attempt_ms")?,
                sent: r.try_get("sent")?,
                parked: r.try_get("parked")?,
                oldest_unsent_ms: r.try_get("oldest_unsent_ms")?,
                period_ms: r.try_get("period_ms")?,
            })
        })
        .transpose()
        .map_err(ctx(what))
    }

    /// Marks every parked event of `sink` for re-drive (the next push sends them again,
    /// through the mapping as it is now); how many.
    pub async fn redrive_parked(&self, sink: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE sink_parked SET redrive = 1 WHERE sink = $1")
            .bind(sink)
            .execute(&self.pool)
            .await
            .map_err(ctx(format!("re-drive sink {sink}")))?;
        sqlx::query("UPDATE sink_cursors SET next_attempt_ms = 0 WHERE sink = $1")
            .bind(sink)
            .execute(&self.pool)
            .await
            .map_err(ctx(format!("re-drive sink {sink}")))?;
        Ok(done.rows_affected())
    }

    /// Moves `sink`'s cursor back (never on) so that every event recorded from `from_ms`
    /// on is sent again; the new cursor. Resent events keep their ids: a receiver that
    /// deduplicates counts them once. A sink of aggregates (`period_ms` > 0, its length)
    /// sends again every period from the one holding `from_ms`, with the same ids.
    pub async fn replay_sink(&self, sink: &str, from_ms: i64, period_ms: i64) -> Result<Option<i64>, StoreError> {
        let _turn = self.write_turn().await;
        // Never forward: events after the cursor are sent anyway.
        let before = BEFORE_RECORDED.replace("$2", "$1");
        let sql = format!(
            "UPDATE sink_cursors SET cursor = CASE WHEN cursor > {before} THEN {before} ELSE cursor END,
             period_ms = CASE WHEN period_ms > $3 THEN $3 ELSE period_ms END,
             next_attempt_ms = 0 WHERE sink = $2 RETURNING cursor"
        );
        let period_from =
            if period_ms > 0 { from_ms.div_euclid(period_ms).saturating_mul(period_ms) } else { i64::MAX };
        let row = sqlx::query(&sql)
            .bind(from_ms)
            .bind(sink)
            .bind(period_from)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx(format!("replay sink {sink}")))?;
        row.map(|r| r.try_get("cursor")).transpose().map_err(ctx(format!("replay sink {sink}")))
    }
}

/// One (tenant, app, version, SKU) of the events recorded in a period: a statement's
/// raw line. Quantities are summed in two halves by SQL (each far from overflowing) and
/// put together in `u128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementGroup {
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub sku: String,
    pub quantity: u128,
    pub events: i64,
    pub first_seq: i64,
    pub last_seq: i64,
}

impl Store {
    /// The events recorded (`recorded_ms`) in `[from_ms, to_ms)` of `tenant`, or of
    /// `partner`'s apps, by (tenant, app, version, SKU), in that order.
    pub async fn statement_groups(
        &self,
        tenant: Option<&str>,
        partner: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StatementGroup>, StoreError> {
        let prefix = partner.map(|p| format!("{p}/")).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT tenant, app, version, sku,
                CAST(SUM(quantity / 4294967296) AS BIGINT) AS hi, CAST(SUM(quantity % 4294967296) AS BIGINT) AS lo,
                COUNT(*) AS n, COALESCE(MIN(seq), 0) AS first_seq, COALESCE(MAX(seq), 0) AS last_seq
             FROM usage_events
             WHERE recorded_ms >= $1 AND recorded_ms < $2 AND ($3 = '' OR tenant = $3)
               AND ($4 = '' OR substr(app, 1, CAST($5 AS INTEGER)) = $4)
             GROUP BY tenant, app, version, sku ORDER BY tenant, app, version, sku",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(tenant.unwrap_or(""))
        .bind(prefix.as_str())
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read a statement's usage"))?;
        rows.iter()
            .map(|r| {
                let hi: i64 = r.try_get("hi")?;
                let lo: i64 = r.try_get("lo")?;
                Ok(StatementGroup {
                    tenant: r.try_get("tenant")?,
                    app: r.try_get("app")?,
                    version: r.try_get("version")?,
                    sku: r.try_get("sku")?,
                    quantity: (u128::from(hi.unsigned_abs()) << 32) + u128::from(lo.unsigned_abs()),
                    events: r.try_get("n")?,
                    first_seq: r.try_get("first_seq")?,
                    last_seq: r.try_get("last_seq")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read a statement's usage"))
    }
}
