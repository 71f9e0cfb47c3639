//! Guest log lines per installation (`installation_logs`, migration 0010): written by
//! the core after every call (never while a wasmtime Store is held), read by the tenant,
//! the operator and the app's partner through the API, from any replica.
//!
//! Each installation's lines carry their own cursor (`seq`), handed out by bumping
//! `installations.log_seq` in the writing transaction: that statement takes the
//! installation's row lock, so writers of one installation commit in cursor order (a
//! reader following the cursor never skips a line committed late) and nothing is
//! written for an installation that is gone. The same transaction trims the oldest
//! lines beyond the operator's bound. Log lines are not audited: they are a record
//! themselves, and a call is not a change of state the audit log follows.

use sqlx::Row;

use crate::sqlite_reads::Columns as _;
use crate::write::{Arg, WriteTx};
use crate::{Store, StoreError, ctx};

/// One line to append (the runtime sanitised and capped its message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogLine {
    pub at_ms: i64,
    pub level: String,
    pub message: String,
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLineRow {
    /// The installation's cursor: increases with every line written.
    pub seq: i64,
    pub at_ms: i64,
    pub call_id: String,
    pub operation: String,
    pub level: String,
    pub message: String,
}

/// How much of an installation's log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub max_lines: u64,
    pub max_bytes: u64,
}

/// Rows per multi-row insert (9 parameters each, well under SQLite's 32,766).
const INSERT_CHUNK: usize = 100;

/// Oldest lines read per step of the global trim: one write transaction removes at
/// most this many lines, so the writer lock is held briefly.
const TRIM_STEP: i64 = 2000;

/// Bytes of log messages kept across all installations.
const LOG_BYTES_TOTAL: &str = "SELECT CAST(COALESCE(SUM(log_bytes), 0) AS BIGINT) AS n FROM installations";

/// What one global trim removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub lines: u64,
    pub bytes: u64,
}

impl Store {
    /// Bytes of log messages kept across all installations (`installations.log_bytes`).
    pub async fn log_bytes_total(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(LOG_BYTES_TOTAL).fetch_one(&self.pool).await.map_err(ctx("count log bytes"))?;
        row.try_get("n").map_err(ctx("count log bytes"))
    }

    /// Removes the oldest lines across all installations (by time) until the messages
    /// kept take at most `max_bytes`. Each installation loses a prefix of its cursor
    /// range, so its readers' cursors stay valid; each step is one write transaction of
    /// at most `TRIM_STEP` lines, which re-reads the total under the writer lock.
    pub async fn trim_logs_total(&self, max_bytes: u64) -> Result<Trimmed, StoreError> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let mut trimmed = Trimmed::default();
        // A read first: most sweeps find nothing to do and take no writer lock.
        if self.log_bytes_total().await? <= max_bytes {
            return Ok(trimmed);
        }
        loop {
            let mut tx = self.begin_write_keeping_calls().await?;
            let total: i64 = sqlx::query(LOG_BYTES_TOTAL)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("n"))
                .map_err(ctx("count log bytes"))?;
            let mut excess = total.saturating_sub(max_bytes);
            if excess <= 0 {
                tx.commit().await.map_err(ctx("commit"))?;
                return Ok(trimmed);
            }
            let oldest = sqlx::query(
                "SELECT tenant, installation, seq, bytes FROM installation_logs ORDER BY at_ms, tenant, installation, seq
                 LIMIT $1",
            )
            .bind(TRIM_STEP)
            .fetch_all(&mut *tx)
            .await
            .map_err(ctx("read the oldest log lines"))?;
            if oldest.is_empty() {
                tx.commit().await.map_err(ctx("commit"))?;
                return Ok(trimmed);
            }
            // The newest cursor to cut at, per installation, until the excess is covered.
            let mut cuts: std::collections::BTreeMap<(String, String), i64> = std::collections::BTreeMap::new();
            for row in &oldest {
                let read = |name| row.try_get::<i64, _>(name).map_err(ctx("read the oldest log lines"));
                let key = (
                    row.try_get::<String, _>("tenant").map_err(ctx("read the oldest log lines"))?,
                    row.try_get::<String, _>("installation").map_err(ctx("read the oldest log lines"))?,
                );
                let seq = read("seq")?;
                let cut = cuts.entry(key).or_insert(seq);
                *cut = (*cut).max(seq);
                excess = excess.saturating_sub(read("bytes")?);
                if excess <= 0 {
                    break;
                }
            }
            for ((tenant, installation), cut) in &cuts {
                let gone = sqlx::query(
                    "DELETE FROM installation_logs WHERE tenant = $1 AND installation = $2 AND seq <= $3 RETURNING bytes",
                )
                .bind(tenant)
                .bind(installation)
                .bind(*cut)
                .fetch_all(&mut *tx)
                .await
                .map_err(ctx("trim log lines"))?;
                let mut bytes: i64 = 0;
                for row in &gone {
                    bytes = bytes.saturating_add(row.try_get::<i64, _>("bytes").map_err(ctx("trim log lines"))?);
                }
                sqlx::query(
                    "UPDATE installations SET log_bytes = CASE WHEN log_bytes > $3 THEN log_bytes - $3 ELSE 0 END
                     WHERE tenant = $1 AND id = $2",
                )
                .bind(tenant)
                .bind(installation)
                .bind(bytes)
                .execute(&mut *tx)
                .await
                .map_err(ctx("count log bytes"))?;
                trimmed.lines = trimmed.lines.saturating_add(gone.len() as u64);
                trimmed.bytes = trimmed.bytes.saturating_add(u64::try_from(bytes).unwrap_or(0));
            }
            tx.commit().await.map_err(ctx("commit"))?;
        }
    }

    /// Appends one call's lines to an installation's log and trims the oldest lines
    /// beyond `bounds`, in one transaction. Only the newest `bounds.max_lines` lines of
    /// the call are written (older ones would be trimmed at once). Returns `false`
    /// (nothing written) when the installation does not exist (never recorded, or
    /// uninstalled meanwhile).
    pub async fn append_logs(
        &self,
        tenant: &str,
        installation: &str,
        call_id: &str,
        operation: &str,
        lines: &[NewLogLine],
        bounds: LogBounds,
    ) -> Result<bool, StoreError> {
        if lines.is_empty() || bounds.max_lines == 0 {
            return Ok(true);
        }
        let mut tx = self.begin_write_keeping_calls().await?;
        let batch = LogBatch { call_id, operation, lines };
        let written = append_logs_tx(&mut tx, tenant, installation, &[batch], bounds).await?;
        if written {
            tx.commit().await.map_err(ctx("commit"))?;
        } else {
            tx.rollback().await.map_err(ctx("rollback"))?;
        }
        Ok(written)
    }

    /// An installation's lines after cursor `since` (exclusive), oldest first, at most
    /// `limit`.
    pub async fn logs(
        &self,
        tenant: &str,
        installation: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<LogLineRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, call_id, operation, level, message FROM installation_logs
             WHERE tenant = $1 AND installation = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(tenant)
        .bind(installation)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read log lines"))?;
        rows.iter()
            .map(|r| {
                Ok(LogLineRow {
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    call_id: r.try_get("call_id")?,
                    operation: r.try_get("operation")?,
                    level: r.try_get("level")?,
                    message: r.try_get("message")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read log lines"))
    }

    /// Lines kept for an installation and their bytes (for tests and the operator).
    pub async fn log_usage(&self, tenant: &str, installation: &str) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b FROM installation_logs
             WHERE tenant = $1 AND installation = $2",
        )
        .bind(tenant)
        .bind(installation)
        .fetch_one(&self.pool)
        .await
        .map_err(ctx("measure log lines"))?;
        let n: i64 = row.try_get("n").map_err(ctx("measure log lines"))?;
        let b: i64 = row.try_get("b").map_err(ctx("measure log lines"))?;
        Ok((n, b))
    }
}

/// The lines of one call, for `append_logs_tx`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBatch<'a> {
    pub call_id: &'a str,
    pub operation: &'a str,
    pub lines: &'a [NewLogLine],
}

/// `Store::append_logs` inside `tx`, for the lines of several calls of one installation
/// in order (the ledger's writer puts the lines of a group's calls in its transaction):
/// one cursor update, multi-row inserts, one trim. `false`, nothing written, if the
/// installation is gone.
pub(crate) async fn append_logs_tx(
    tx: &mut impl WriteTx,
    tenant: &str,
    installation: &str,
    calls: &[LogBatch<'_>],
    bounds: LogBounds,
) -> Result<bool, StoreError> {
    // Only the newest `max_lines` of a call (older ones would be trimmed at once).
    let keep = usize::try_from(bounds.max_lines).unwrap_or(usize::MAX);
    let lines: Vec<(&LogBatch<'_>, &NewLogLine)> =
        calls.iter().flat_map(|c| c.lines[c.lines.len().saturating_sub(keep)..].iter().map(move |l| (c, l))).collect();
    if lines.is_empty() {
        return Ok(true);
    }
    let count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
    let added: i64 =
        lines.iter().map(|(_, l)| i64::try_from(l.message.len()).unwrap_or(i64::MAX)).fold(0, i64::saturating_add);
    let scope = [Arg::Text(tenant), Arg::Text(installation)];
    // Takes the installation's row lock (PostgreSQL) or the writer lock (SQLite)
    // before anything else, hands out the cursors and counts the bytes.
    let head = tx
        .fetch_optional(
            "reserve log cursors",
            "UPDATE installations SET log_seq = log_seq + $3, log_bytes = log_bytes + $4 WHERE tenant = $1 AND id = $2
             RETURNING log_seq, log_bytes",
            &[scope[0], scope[1], Arg::Int(count), Arg::Int(added)],
        )
        .await?;
    let Some(head) = head else {
        return Ok(false);
    };
    let last = head.int("log_seq").map_err(ctx("read log cursor"))?;
    let mut held = head.int("log_bytes").map_err(ctx("read log cursor"))?;
    let first = last - count + 1;
    let message_bytes: Vec<i64> =
        lines.iter().map(|(_, line)| i64::try_from(line.message.len()).unwrap_or(i64::MAX)).collect();
    for (chunk_index, chunk) in lines.chunks(INSERT_CHUNK).enumerate() {
        let mut sql = String::from(
            "INSERT INTO installation_logs (tenant, installation, seq, at_ms, call_id, operation, level, message, \
             bytes) VALUES ",
        );
        for i in 0..chunk.len() {
            let p = i * 9;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&(1..=9).map(|k| format!("${}", p + k)).collect::<Vec<_>>().join(", "));
            sql.push(')');
        }
        let mut args = Vec::with_capacity(chunk.len() * 9);
        for (i, (call, line)) in chunk.iter().enumerate() {
            let n = chunk_index * INSERT_CHUNK + i;
            args.extend([
                scope[0],
                scope[1],
                Arg::Int(first + n as i64),
                Arg::Int(line.at_ms),
                Arg::Text(call.call_id),
                Arg::Text(call.operation),
                Arg::Text(&line.level),
                Arg::Text(&line.message),
                Arg::Int(message_bytes[n]),
            ]);
        }
        tx.execute("write log lines", &sql, &args).await?;
    }
    // The oldest lines beyond the line bound go (an index range: the cursors are dense),
    // then, while the bytes are over their bound, the oldest of the rest. Only the lines
    // removed are read.
    let max_lines = i64::try_from(bounds.max_lines).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(bounds.max_bytes).unwrap_or(i64::MAX);
    let before = held;
    let mut removed: i64 = 0;
    let oldest_kept = last.saturating_sub(max_lines);
    if oldest_kept > 0 {
        let gone = tx
            .fetch_all(
                "trim log lines",
                "DELETE FROM installation_logs WHERE tenant = $1 AND installation = $2 AND seq <= $3 RETURNING bytes",
                &[scope[0], scope[1], Arg::Int(oldest_kept)],
            )
            .await?;
        for row in gone {
            removed = removed.saturating_add(row.int("bytes").map_err(ctx("trim log lines"))?);
        }
    }
    held = held.saturating_sub(removed);
    while held > max_bytes {
        let oldest = tx
            .fetch_all(
                "trim log lines",
                "SELECT seq, bytes FROM installation_logs WHERE tenant = $1 AND installation = $2 ORDER BY seq LIMIT 256",
                &scope,
            )
            .await?;
        if oldest.is_empty() {
            held = 0;
            break;
        }
        let mut cut = 0;
        for row in &oldest {
            cut = row.int("seq").map_err(ctx("trim log lines"))?;
            held = held.saturating_sub(row.int("bytes").map_err(ctx("trim log lines"))?);
            if held <= max_bytes {
                break;
            }
        }
        tx.execute(
            "trim log lines",
            "DELETE FROM installation_logs WHERE tenant = $1 AND installation = $2 AND seq <= $3",
            &[scope[0], scope[1], Arg::Int(cut)],
        )
        .await?;
    }
    if held != before {
        tx.execute(
            "count log bytes",
            "UPDATE installations SET log_bytes = $3 WHERE tenant = $1 AND id = $2",
            &[scope[0], scope[1], Arg::Int(held.max(0))],
        )
        .await?;
    }
    Ok(true)
}
