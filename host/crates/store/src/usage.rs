//! Usage-window leases for the collector (SPEC §7): one row per (installation, window);
//! `done` is 0 (open), 1 (collected) or 2 (given up). Closing a window (with what its
//! collection found, and the audit row of a window given up) is one transaction; a pass
//! is audited by one summary row.

use sqlx::Row as _;

use crate::audit::audit;
use crate::write::{Arg, WriteTx};
use crate::{Store, StoreError, ctx};

/// Windows leased per statement (2 parameters each, plus 3).
const LEASE_CHUNK: usize = 200;

impl Store {
    /// Takes the lease of (installation, window) for `replica` until `now + lease_ms` if
    /// nobody holds a live one and the window is not closed.
    pub async fn lease_window(
        &self,
        installation: &str,
        window_start: i64,
        replica: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO usage_windows (installation, window_start, done, lease_until) VALUES ($1, $2, 0, 0)
             ON CONFLICT (installation, window_start) DO NOTHING",
        )
        .bind(installation)
        .bind(window_start)
        .execute(&self.pool)
        .await
        .map_err(ctx("open usage window"))?;
        let taken = sqlx::query(
            "UPDATE usage_windows SET leased_by = $1, lease_until = $2
             WHERE installation = $3 AND window_start = $4 AND done = 0 AND lease_until < $5",
        )
        .bind(replica)
        .bind(now.saturating_add(lease_ms))
        .bind(installation)
        .bind(window_start)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(ctx("lease usage window"))?;
        Ok(taken.rows_affected() == 1)
    }

    /// Takes the leases of several (installation, window) pairs for `replica` in one
    /// transaction, as `lease_window` does each; returns the pairs it took.
    pub async fn lease_windows(
        &self,
        windows: &[(String, i64)],
        replica: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write_keeping_calls().await?;
        let mut taken = Vec::new();
        for chunk in windows.chunks(LEASE_CHUNK) {
            let marks: Vec<String> =
                (0..chunk.len()).map(|i| format!("(${}, ${}, 0, 0)", i * 2 + 1, i * 2 + 2)).collect();
            let sql = format!(
                "INSERT INTO usage_windows (installation, window_start, done, lease_until) VALUES {}
                 ON CONFLICT (installation, window_start) DO NOTHING",
                marks.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (installation, start) in chunk {
                query = query.bind(installation.as_str()).bind(*start);
            }
            query.execute(&mut *tx).await.map_err(ctx("open usage windows"))?;
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(installation = ${} AND window_start = ${})", i * 2 + 4, i * 2 + 5))
                .collect();
            let sql = format!(
                "UPDATE usage_windows SET leased_by = $1, lease_until = $2
                 WHERE done = 0 AND lease_until < $3 AND ({}) RETURNING installation, window_start",
                pairs.join(" OR ")
            );
            let mut query = sqlx::query(&sql).bind(replica).bind(now.saturating_add(lease_ms)).bind(now);
            for (installation, start) in chunk {
                query = query.bind(installation.as_str()).bind(*start);
            }
            for row in query.fetch_all(&mut *tx).await.map_err(ctx("lease usage windows"))? {
                taken.push((
                    row.try_get("installation").map_err(ctx("read usage windows"))?,
                    row.try_get("window_start").map_err(ctx("read usage windows"))?,
                ));
            }
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(taken)
    }

    /// The closed windows (collected or given up) of every installation from `from` on,
    /// by installation: one read per collection pass.
    pub async fn closed_windows_since(
        &self,
        from: i64,
    ) -> Result<std::collections::HashMap<String, std::collections::HashSet<i64>>, StoreError> {
        let rows =
            sqlx::query("SELECT installation, window_start FROM usage_windows WHERE window_start >= $1 AND done <> 0")
                .bind(from)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("read usage windows"))?;
        let mut closed: std::collections::HashMap<String, std::collections::HashSet<i64>> =
            std::collections::HashMap::new();
        for r in &rows {
            let installation: String = r.try_get("installation").map_err(ctx("read usage windows"))?;
            let start: i64 = r.try_get("window_start").map_err(ctx("read usage windows"))?;
            closed.entry(installation).or_default().insert(start);
        }
        Ok(closed)
    }

    /// The closed windows (collected or given up) of `installation` from `from` on.
    pub async fn closed_windows(&self, installation: &str, from: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT window_start FROM usage_windows WHERE installation = $1 AND window_start >= $2 AND done <> 0",
        )
        .bind(installation)
        .bind(from)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read usage windows"))?;
        rows.iter().map(|r| r.try_get("window_start")).collect::<Result<_, _>>().map_err(ctx("read usage windows"))
    }

    /// `installation`'s windows newest first, those starting before `before`, at most
    /// `limit`.
    pub async fn usage_windows_page(
        &self,
        installation: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<UsageWindowRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT window_start, done, attempts, detail, last_error FROM usage_windows
             WHERE installation = $1 AND window_start < $2 ORDER BY window_start DESC LIMIT $3",
        )
        .bind(installation)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("read usage windows"))?;
        rows.iter()
            .map(|r| {
                Ok(UsageWindowRow {
                    window_start: r.try_get("window_start")?,
                    done: r.try_get("done")?,
                    attempts: r.try_get("attempts")?,
                    detail: r.try_get("detail")?,
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read usage windows"))
    }

    /// Audits one collection pass of `replica` (its summary: the windows it collected and
    /// gave up), in a transaction of its own.
    pub async fn audit_collection_pass(&self, actor: &str, detail: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write_keeping_calls().await?;
        audit(&mut tx, actor, "usage.collect-pass", "usage", detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// Counts a failed attempt on a window `replica` holds; returns the attempts so far.
    pub async fn window_attempt_failed(
        &self,
        installation: &str,
        window_start: i64,
        replica: &str,
        error: &str,
    ) -> Result<i64, StoreError> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "UPDATE usage_windows SET attempts = attempts + 1, last_error = $1
             WHERE installation = $2 AND window_start = $3 AND leased_by = $4 RETURNING attempts",
        )
        .bind(error)
        .bind(installation)
        .bind(window_start)
        .bind(replica)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("record a failed collection"))?;
        row.map(|r| r.try_get("attempts"))
            .transpose()
            .map_err(ctx("record a failed collection"))
            .map(|a| a.unwrap_or(0))
    }

    /// Extends `replica`'s lease of a window to `until` (the next attempt's time).
    pub async fn postpone_window(
        &self,
        installation: &str,
        window_start: i64,
        replica: &str,
        until: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE usage_windows SET lease_until = $1 WHERE installation = $2 AND window_start = $3 AND leased_by = $4",
        )
        .bind(until)
        .bind(installation)
        .bind(window_start)
        .bind(replica)
        .execute(&self.pool)
        .await
        .map_err(ctx("schedule a collection retry"))?;
        Ok(())
    }
}

/// A window to close, with its audit row (`Ledger::close_window`: the writer closes the
/// windows of many collections in one transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClose {
    pub installation: String,
    pub window_start: i64,
    /// Closed only while this replica holds the lease.
    pub replica: String,
    /// `done = 2` (given up) rather than `done = 1` (collected).
    pub given_up: bool,
    /// Whether the close writes an audit row of its own (a window given up); a collected
    /// window keeps its detail on its row and is counted in its pass's summary row.
    pub audited: bool,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Closes a window this replica still holds; whether it did (a lease lost meanwhile
/// closes nothing).
pub(crate) async fn close_window_tx(tx: &mut impl WriteTx, close: &WindowClose) -> Result<bool, StoreError> {
    let closed = tx
        .execute(
            "close usage window",
            "UPDATE usage_windows SET done = $1, detail = $5
         WHERE installation = $2 AND window_start = $3 AND leased_by = $4 AND done = 0",
            &[
                Arg::Int(if close.given_up { 2 } else { 1 }),
                Arg::Text(&close.installation),
                Arg::Int(close.window_start),
                Arg::Text(&close.replica),
                Arg::Text(&close.detail),
            ],
        )
        .await?;
    if close.audited && closed == 1 {
        audit(tx, &close.actor, &close.action, &close.target, &close.detail).await?;
    }
    Ok(closed == 1)
}

/// One usage window of an installation as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWindowRow {
    pub window_start: i64,
    /// 0 open (not collected yet, or being retried), 1 collected, 2 given up.
    pub done: i64,
    pub attempts: i64,
    /// What the collection found (set when the window closed).
    pub detail: Option<String>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
}
