//! Installations' key-value data (`kv`, with each scope's byte count in `kv_usage`):
//! the snapshot a call reads, changes applied within the scope's quota (alone, or the
//! calls of a ledger group in order), the purge that goes with an installation, and
//! `DbKv`, the runtime's key-value storage on top of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::Row as _;

use kiosk_domain::kv::{KvChanges, KvEntries, KvScope, KvStore, KvStoreError, QuotaHit, entry_size};

use crate::sqlite_reads::Columns as _;
use crate::write::{Arg, WriteTx};
use crate::{Store, StoreError, ctx};

/// Removes a scope's key-value data and its byte count.
pub(crate) async fn purge_kv(tx: &mut crate::WriteTransaction, tenant: &str, id: &str) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM kv WHERE tenant = $1 AND installation = $2",
        "DELETE FROM kv_usage WHERE tenant = $1 AND installation = $2",
        "DELETE FROM installation_egress WHERE tenant = $1 AND installation = $2",
    ] {
        sqlx::query(sql).bind(tenant).bind(id).execute(&mut **tx).await.map_err(ctx("purge key-value data"))?;
    }
    Ok(())
}

/// The tenant's key-value budget for calls that may grow `scope`: the bytes of its
/// other installations and its quota (`tenant_quotas`: the lower of its own row and the
/// operator's, tenant ''), or `None` when no quota applies or no call sets a value.
/// The tenant's row is locked first — before any scope's byte count, in every writer —
/// so two transactions growing two installations of one tenant (two replicas) judge
/// the sum one after the other.
async fn tenant_budget(
    tx: &mut impl WriteTx,
    scope: &KvScope,
    calls: &[(&KvChanges, u64)],
) -> Result<Option<(i128, u64)>, StoreError> {
    if !calls.iter().any(|(changes, _)| changes.values().any(Option::is_some)) {
        return Ok(None);
    }
    let tenant = Arg::Text(&scope.tenant);
    let quota = tx
        .fetch_optional(
            "read the tenant's key-value quota",
            "SELECT MIN(kv_bytes) AS q FROM tenant_quotas WHERE tenant IN ($1, '') AND kv_bytes IS NOT NULL",
            &[tenant],
        )
        .await?
        .and_then(|row| row.int("q").ok());
    let Some(quota) = quota else { return Ok(None) };
    tx.execute("lock the tenant", "UPDATE tenants SET display = display WHERE id = $1", &[tenant]).await?;
    let others = tx
        .fetch_optional(
            "sum the tenant's key-value bytes",
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS n FROM kv_usage WHERE tenant = $1 AND installation <> $2",
            &[tenant, Arg::Text(&scope.installation)],
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()
        .map_err(ctx("read the tenant's key-value bytes"))?
        .unwrap_or(0);
    Ok(Some((i128::from(others), u64::try_from(quota).unwrap_or(0))))
}

/// Changed keys per size lookup (2 + n parameters; far under both backends' limits).
const KV_LOOKUP_CHUNK: usize = 200;

/// Applies `changes` to `scope` inside `tx` if the scope stays within `quota` bytes
/// afterwards (and the tenant within its quota); `Err` (nothing written) if not.
pub(crate) async fn kv_apply(
    tx: &mut impl WriteTx,
    scope: &KvScope,
    changes: &KvChanges,
    quota: u64,
) -> Result<Result<(), QuotaHit>, StoreError> {
    let mut verdicts = kv_apply_many(tx, scope, &[(changes, quota)]).await?;
    Ok(verdicts.pop().unwrap_or(Ok(())))
}

/// Rows per multi-row key-value upsert (4 parameters each).
const KV_UPSERT_CHUNK: usize = 100;

/// Applies the change sets of several calls of one scope, in order, inside `tx`: each
/// call whose changes keep the scope within its quota (judged after the calls before it)
/// is applied, the others are refused with their quota (nothing of theirs written). The
/// scope's byte count (`kv_usage`) is locked first — the writer lock on SQLite, the row
/// lock on PostgreSQL — so concurrent writers of one scope (two replicas) apply their
/// deltas one after the other; then only the changed keys' stored sizes are read, never
/// the whole scope, and the net result is written in a few multi-row statements
/// whatever the number of calls.
pub(crate) async fn kv_apply_many(
    tx: &mut impl WriteTx,
    scope: &KvScope,
    calls: &[(&KvChanges, u64)],
) -> Result<Vec<Result<(), QuotaHit>>, StoreError> {
    if calls.iter().all(|(changes, _)| changes.is_empty()) {
        return Ok(vec![Ok(()); calls.len()]);
    }
    let (tenant, installation) = (Arg::Text(&scope.tenant), Arg::Text(&scope.installation));
    let tenant_budget = tenant_budget(tx, scope, calls).await?;
    let held = tx
        .fetch_optional(
            "lock key-value usage",
            "INSERT INTO kv_usage (tenant, installation, bytes) VALUES ($1, $2, 0)
             ON CONFLICT (tenant, installation) DO UPDATE SET bytes = kv_usage.bytes RETURNING bytes",
            &[tenant, installation],
        )
        .await?;
    let held: i64 = match held {
        Some(row) => row.int("bytes").map_err(ctx("read key-value usage"))?,
        None => return Err(ctx("lock key-value usage")(sqlx::Error::RowNotFound)),
    };
    // The stored size of every key any of the calls changes.
    let keys: std::collections::BTreeSet<&str> =
        calls.iter().flat_map(|(changes, _)| changes.keys().map(String::as_str)).collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut sizes: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for chunk in keys.chunks(KV_LOOKUP_CHUNK) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT key, CAST(length(value) AS BIGINT) AS n FROM kv WHERE tenant = $1 AND installation = $2 AND key IN ({})",
            marks.join(", ")
        );
        let args: Vec<Arg<'_>> = [tenant, installation].into_iter().chain(chunk.iter().map(|k| Arg::Text(k))).collect();
        for row in tx.fetch_all("measure changed keys", &sql, &args).await? {
            let key = row.text("key").map_err(ctx("read changed keys"))?;
            let n = row.int("n").map_err(ctx("read changed keys"))?;
            let size = (key.len() as u64).saturating_add(u64::try_from(n).unwrap_or(0));
            sizes.insert(key, size);
        }
    }
    // Each call in order against the sizes the calls before it left; sums in i128, which
    // no key or value count can overflow.
    let mut total = i128::from(held);
    let mut finals: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
    let mut verdicts = Vec::with_capacity(calls.len());
    for (changes, quota) in calls {
        let mut next = total;
        for (key, value) in changes.iter() {
            next -= i128::from(sizes.get(key.as_str()).copied().unwrap_or(0));
            if let Some(v) = value {
                next += i128::from(entry_size(key, v));
            }
        }
        if next > i128::from(*quota) {
            verdicts.push(Err(QuotaHit::Installation(*quota)));
            continue;
        }
        // A call that grows the scope must keep the tenant within its quota (one that
        // shrinks it always may, even over a quota lowered since).
        if let Some((others, tenant_quota)) = tenant_budget
            && next > total
            && others + next > i128::from(tenant_quota)
        {
            verdicts.push(Err(QuotaHit::Tenant(tenant_quota)));
            continue;
        }
        total = next;
        for (key, value) in changes.iter() {
            match value {
                Some(v) => sizes.insert(key.clone(), entry_size(key, v)),
                None => sizes.remove(key.as_str()),
            };
            finals.insert(key.as_str(), value.as_deref());
        }
        verdicts.push(Ok(()));
    }
    if finals.is_empty() {
        return Ok(verdicts);
    }
    let bytes = i64::try_from(total.max(0)).unwrap_or(i64::MAX);
    tx.execute(
        "count key-value usage",
        "UPDATE kv_usage SET bytes = $3 WHERE tenant = $1 AND installation = $2",
        &[tenant, installation, Arg::Int(bytes)],
    )
    .await?;
    let puts: Vec<(&str, &[u8])> = finals.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
    for chunk in puts.chunks(KV_UPSERT_CHUNK) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, ${})", i * 4 + 1, i * 4 + 2, i * 4 + 3, i * 4 + 4))
            .collect();
        let sql = format!(
            "INSERT INTO kv (tenant, installation, key, value) VALUES {}
             ON CONFLICT (tenant, installation, key) DO UPDATE SET value = excluded.value",
            rows.join(", ")
        );
        let args: Vec<Arg<'_>> =
            chunk.iter().flat_map(|(key, value)| [tenant, installation, Arg::Text(key), Arg::Blob(value)]).collect();
        tx.execute("write key-value data", &sql, &args).await?;
    }
    let deletes: Vec<&str> = finals.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
    for chunk in deletes.chunks(KV_LOOKUP_CHUNK) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!("DELETE FROM kv WHERE tenant = $1 AND installation = $2 AND key IN ({})", marks.join(", "));
        let args: Vec<Arg<'_>> = [tenant, installation].into_iter().chain(chunk.iter().map(|k| Arg::Text(k))).collect();
        tx.execute("delete key-value data", &sql, &args).await?;
    }
    Ok(verdicts)
}

impl Store {
    pub async fn kv_load(&self, scope: &KvScope) -> Result<KvEntries, StoreError> {
        const SQL: &str = "SELECT key, value FROM kv WHERE tenant = $1 AND installation = $2";
        let inline = self.read_inline("key-value snapshot", SQL, |statement| {
            let params = rusqlite::named_params! {"$1": scope.tenant, "$2": scope.installation};
            let rows = statement.query_map(params, |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
            rows.collect::<rusqlite::Result<KvEntries>>()
        });
        if let Some(entries) = inline {
            return Ok(entries);
        }
        if let Some(batch) = &self.kv_batch {
            return batch.load(scope).await;
        }
        let rows = crate::read_once_more("load key-value data", || {
            sqlx::query(SQL).bind(scope.tenant.as_str()).bind(scope.installation.as_str()).fetch_all(&self.pool)
        })
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect::<Result<BTreeMap<String, Vec<u8>>, sqlx::Error>>()
            .map_err(ctx("read key-value data"))
    }

    /// Applies `changes` in one transaction; refuses them (nothing written) over `quota`
    /// or over the tenant's quota.
    pub async fn kv_commit(
        &self,
        scope: &KvScope,
        changes: KvChanges,
        quota: u64,
    ) -> Result<Result<(), QuotaHit>, StoreError> {
        let mut tx = self.begin_write_keeping_calls().await?;
        let applied = kv_apply(&mut tx, scope, &changes, quota).await?;
        if applied.is_ok() {
            tx.commit().await.map_err(ctx("commit"))?;
        } else {
            tx.rollback().await.map_err(ctx("rollback"))?;
        }
        Ok(applied)
    }
}

/// Key-value storage of installations in the database (the runtime calls it before
/// and after a Store exists, never during). Database error text is logged, never
/// handed on: it could reach a caller.
#[derive(Debug, Clone)]
pub struct DbKv {
    pub store: Store,
}

fn kv_unavailable(e: StoreError) -> KvStoreError {
    tracing::error!(error = %e, "key-value storage failed");
    KvStoreError::Unavailable("the database did not answer; see the server log".into())
}

#[async_trait::async_trait]
impl KvStore for DbKv {
    async fn load(&self, scope: &KvScope) -> Result<Arc<KvEntries>, KvStoreError> {
        self.store.kv_load(scope).await.map(Arc::new).map_err(kv_unavailable)
    }

    async fn commit(&self, scope: &KvScope, changes: KvChanges, quota: u64) -> Result<(), KvStoreError> {
        match self.store.kv_commit(scope, changes, quota).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(hit)) => Err(hit.into_error(scope)),
            Err(e) => Err(kv_unavailable(e)),
        }
    }

    async fn purge(&self, _scope: &KvScope) -> Result<(), KvStoreError> {
        // Purged with the installation row, in one transaction (Store::delete_installation).
        Ok(())
    }
}
