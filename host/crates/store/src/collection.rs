//! Usage-window leases for the collector (SPEC §7): one row per (installation, window);
//! `done` is 0 (open), 1 (collected) or 2 (given up). Closing a window and its audit row
//! commit in one transaction.

use sqlx::Row as _;

use super::{Store, StoreError, audit, ctx};

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

    /// Closes a window `replica` holds as collected (`done = 1`) or given up (`done = 2`),
    /// with its audit row, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn close_window(
        &self,
        installation: &str,
        window_start: i64,
        replica: &str,
        given_up: bool,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE usage_windows SET done = $1 WHERE installation = $2 AND window_start = $3 AND leased_by = $4",
        )
        .bind(if given_up { 2_i64 } else { 1 })
        .bind(installation)
        .bind(window_start)
        .bind(replica)
        .execute(&mut *tx)
        .await
        .map_err(ctx("close usage window"))?;
        audit(&mut tx, actor, action, target, detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(())
    }

    /// Counts a failed attempt on a window `replica` holds; returns the attempts so far.
    pub async fn window_attempt_failed(
        &self,
        installation: &str,
        window_start: i64,
        replica: &str,
        error: &str,
    ) -> Result<i64, StoreError> {
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
