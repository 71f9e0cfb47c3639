//! Client idempotency keys (`idempotency_keys`): a tenant's request sent with an
//! `Idempotency-Key` has its first answer written in the same transaction as the call's
//! effects, so the answer is kept if and only if the effects are. A retry (on any replica,
//! within `IDEMPOTENCY_RETENTION_MS`) reads it back; two requests racing with one key
//! both run, and the second to commit finds the first's answer and keeps nothing of its
//! own (on PostgreSQL its insert waits for the first's transaction).

use sqlx::Row as _;

use kiosk_domain::kv::QuotaHit;
use kiosk_domain::metering::now_ms;

use crate::ledger::{HeldRefused, HookEffects, write_held};
use crate::write::{Arg, WriteTx};
use crate::{Store, StoreError, ctx};

/// How long a key's answer is kept: Stripe keeps keys for 24 hours, and a client retries
/// within minutes of a failure.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// The first answer to a request with a given key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// What was asked (a digest the caller computes), to refuse the key reused for another
    /// request.
    pub fingerprint: String,
    pub call_id: String,
    /// The answer as the caller serialised it.
    pub answer: String,
    pub at_ms: i64,
}

/// A request's key, what was asked and the answer to keep.
#[derive(Debug, Clone, Copy)]
pub struct KeyedAnswer<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub call_id: &'a str,
    pub answer: &'a str,
}

/// What became of a keyed call's effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedWrite {
    /// The effects and the answer are kept.
    Written,
    /// Another request with the key committed first: its answer; nothing of this call is
    /// kept.
    Existing(StoredAnswer),
    /// The call's key-value changes would pass a quota: nothing is kept.
    OverQuota(QuotaHit),
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredAnswer, sqlx::Error> {
    Ok(StoredAnswer {
        fingerprint: row.try_get("fingerprint")?,
        call_id: row.try_get("call_id")?,
        answer: row.try_get("answer")?,
        at_ms: row.try_get("at_ms")?,
    })
}

const READ: &str =
    "SELECT fingerprint, call_id, answer, at_ms FROM idempotency_keys WHERE tenant = $1 AND idem_key = $2";

/// Keeps `keyed`'s answer inside `tx`, unless the key holds one (returned; nothing is
/// written then). A key past its retention is free again. On PostgreSQL an insert of a key
/// another transaction holds waits for it, so two requests racing with one key keep one.
pub(crate) async fn keep_answer(
    tx: &mut crate::WriteTransaction,
    keyed: KeyedAnswer<'_>,
) -> Result<Option<StoredAnswer>, StoreError> {
    let now = now_ms() as i64;
    tx.execute(
        "forget an expired idempotency key",
        "DELETE FROM idempotency_keys WHERE tenant = $1 AND idem_key = $2 AND at_ms < $3",
        &[Arg::Text(keyed.tenant), Arg::Text(keyed.key), Arg::Int(now - IDEMPOTENCY_RETENTION_MS)],
    )
    .await?;
    let inserted = tx
        .execute(
            "keep an idempotency key",
            "INSERT INTO idempotency_keys (tenant, idem_key, fingerprint, call_id, answer, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, idem_key) DO NOTHING",
            &[
                Arg::Text(keyed.tenant),
                Arg::Text(keyed.key),
                Arg::Text(keyed.fingerprint),
                Arg::Text(keyed.call_id),
                Arg::Text(keyed.answer),
                Arg::Int(now),
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(None);
    }
    let row = sqlx::query(READ)
        .bind(keyed.tenant)
        .bind(keyed.key)
        .fetch_one(&mut **tx)
        .await
        .map_err(ctx("read an idempotency key"))?;
    stored(&row).map(Some).map_err(ctx("read an idempotency key"))
}

/// Keeps `held`'s key and answer (if it has one) inside `tx` before anything else the
/// transaction writes, so a racing copy of the request waits for this one (PostgreSQL) and
/// finds its answer rather than the row it moved; `held` without its key, or the answer a
/// copy kept first.
pub(crate) async fn key_first<'a>(
    tx: &mut crate::WriteTransaction,
    held: HookEffects<'a>,
) -> Result<Result<HookEffects<'a>, Box<StoredAnswer>>, StoreError> {
    if let Some(keyed) = held.keyed
        && let Some(used) = keep_answer(tx, keyed).await?
    {
        return Ok(Err(Box::new(used)));
    }
    Ok(Ok(held.keyed(None)))
}

impl Store {
    /// The answer kept for `key` of `tenant`, if any (and not older than the retention).
    pub async fn keyed_answer(&self, tenant: &str, key: &str) -> Result<Option<StoredAnswer>, StoreError> {
        let row = sqlx::query(&format!("{READ} AND at_ms >= $3"))
            .bind(tenant)
            .bind(key)
            .bind(now_ms() as i64 - IDEMPOTENCY_RETENTION_MS)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("read an idempotency key"))?;
        row.as_ref().map(stored).transpose().map_err(ctx("read an idempotency key"))
    }

    /// Keeps a keyed call's effects (`held`: usage, key-value changes, lines) and its answer
    /// in one transaction, unless another request with the key committed first.
    pub async fn record_keyed_call(&self, held: HookEffects<'_>) -> Result<KeyedWrite, StoreError> {
        let mut tx = self.begin_write_keeping_calls().await?;
        match write_held(&mut tx, held).await? {
            Ok(()) => {
                tx.commit().await.map_err(ctx("commit"))?;
                Ok(KeyedWrite::Written)
            }
            Err(refused) => {
                tx.rollback().await.map_err(ctx("rollback"))?;
                Ok(match refused {
                    HeldRefused::Quota(quota) => KeyedWrite::OverQuota(quota),
                    HeldRefused::KeyUsed(used) => KeyedWrite::Existing(*used),
                })
            }
        }
    }

    /// Forgets the answers kept before `before_ms`; how many.
    pub async fn forget_idempotency_keys(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(ctx("forget idempotency keys"))?;
        Ok(done.rows_affected())
    }
}
