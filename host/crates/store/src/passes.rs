//! Pass leases (`pass_leases`): a periodic pass (automatic upgrades, the log trim) is run
//! by one replica at a time, the one holding its lease. Not audited, like the other
//! leases.

use crate::{Store, StoreError, ctx};

impl Store {
    /// Takes the lease of the pass `name` (one replica runs it at a time) for `replica`
    /// until `now + lease_ms`, if nobody holds a live one.
    pub async fn lease_pass(&self, name: &str, replica: &str, now: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done =
            sqlx::query("UPDATE pass_leases SET leased_by = $1, lease_until = $2 WHERE name = $3 AND lease_until < $4")
                .bind(replica)
                .bind(now.saturating_add(lease_ms))
                .bind(name)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(ctx("lease pass"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease of the pass `name` back, if `replica` holds it.
    pub async fn release_pass(&self, name: &str, replica: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE pass_leases SET lease_until = 0, leased_by = NULL WHERE name = $1 AND leased_by = $2")
            .bind(name)
            .bind(replica)
            .execute(&self.pool)
            .await
            .map_err(ctx("release pass"))?;
        Ok(())
    }
}
