//! Persistence with sqlx: SQLite in a file by default (created on first start, WAL
//! mode) or PostgreSQL. One set of queries over `AnyPool` (portable SQL with `$n`
//! placeholders, integers/text/bytes only); migrations per backend, embedded in the
//! binary and run at start.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, Row};

use kiosk_domain::kv::{KvChanges, KvEntries, KvScope, KvStore, KvStoreError, entry_size};
use kiosk_domain::metering::now_ms;
use kiosk_domain::upgrade::UpgradePolicy;

mod collection;
pub use collection::{UsageWindowRow, WindowClose};
mod egress;
pub use egress::{EgressPolicyRow, EgressSwitchRow, OperatorEgress};
pub mod ledger;
pub mod logs;
mod operator;
mod sqlite_reads;
use sqlite_reads::Columns as _;
mod write;
pub use operator::{CallContext, CallPolicy, LimitLayerRow, PartnerSummary, TenantSummary, VersionState};
use write::{Arg, WriteTx};
mod revocation;
mod watch;
pub use revocation::{
    BootstrapToken, CertUpdate, CertificateRow, DistrustedCert, NotInstallable, QuarantinedVersion, TokenRevocation,
    TokenRow, UpgradeRefused,
};
pub use watch::{NewWatch, RecordedTag, TagOutcome, TagOutcomeRow, WatchPoll, WatchRow};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Removes a scope's key-value data and its byte count.
async fn purge_kv(tx: &mut sqlx::Transaction<'_, sqlx::Any>, tenant: &str, id: &str) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM kv WHERE tenant = $1 AND installation = $2",
        "DELETE FROM kv_usage WHERE tenant = $1 AND installation = $2",
        "DELETE FROM installation_egress WHERE tenant = $1 AND installation = $2",
    ] {
        sqlx::query(sql).bind(tenant).bind(id).execute(&mut **tx).await.map_err(ctx("purge key-value data"))?;
    }
    Ok(())
}

/// Changed keys per size lookup (2 + n parameters; far under both backends' limits).
const KV_LOOKUP_CHUNK: usize = 200;

/// Applies `changes` to `scope` inside `tx` if the scope stays within `quota` bytes
/// afterwards; `Err(quota)` (nothing written) if it would not.
pub(crate) async fn kv_apply(
    tx: &mut impl WriteTx,
    scope: &KvScope,
    changes: &KvChanges,
    quota: u64,
) -> Result<Result<(), u64>, StoreError> {
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
) -> Result<Vec<Result<(), u64>>, StoreError> {
    if calls.iter().all(|(changes, _)| changes.is_empty()) {
        return Ok(vec![Ok(()); calls.len()]);
    }
    let (tenant, installation) = (Arg::Text(&scope.tenant), Arg::Text(&scope.installation));
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
            verdicts.push(Err(*quota));
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

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("database: {action}: {source}")]
pub struct StoreError {
    pub action: String,
    #[source]
    pub source: sqlx::Error,
}

fn ctx(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let action = action.into();
    move |source| StoreError { action, source }
}

/// A role a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Partner(String),
    Tenant(String),
}

impl Principal {
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Principal::Operator => ("operator", None),
            Principal::Partner(p) => ("partner", Some(p)),
            Principal::Tenant(t) => ("tenant", Some(t)),
        }
    }

    /// Who, for the audit log.
    pub fn actor(&self) -> String {
        match self.parts() {
            (role, Some(scope)) => format!("{role}:{scope}"),
            (role, None) => role.to_string(),
        }
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// A call's hot reads, inline, on SQLite files (`sqlite_reads`); `None` on
    /// PostgreSQL and in-memory databases.
    reader: Option<Arc<sqlite_reads::SqliteReader>>,
    /// Turns at SQLite's writer lock, in arrival order, for this process's writers (the
    /// ledger's thread and the pool's write transactions). See `write_turn`.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A stored app version.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub app: String,
    pub version: String,
    pub manifest: String,
    pub manifest_digest: String,
    pub component_digest: String,
    pub signer: String,
    pub reference: String,
    pub yanked: bool,
    pub created_ms: i64,
    /// No new installs or upgrades (signer revoked or removed, or the operator's call);
    /// running installations go on.
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
}

/// A stored installation.
#[derive(Debug, Clone)]
pub struct InstallationRow {
    pub id: String,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub config: String,
    pub secrets: Vec<u8>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Bumped by every write of the row; a write applies only if it is still the one
    /// read (`Changed` otherwise). A new installation starts at 0.
    pub row_version: i64,
    /// How far Kiosk upgrades it by itself.
    pub upgrade_policy: UpgradePolicy,
}

/// A conditional write of an installation found it changed (configured, upgraded or
/// uninstalled) since it was read at the row version the writer gave: nothing was
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed;

/// A stored entitlement.
#[derive(Debug, Clone)]
pub struct EntitlementRow {
    pub tenant: String,
    pub app: String,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// A registry the operator configured over the API.
#[derive(Debug, Clone)]
pub struct RegistryRow {
    pub host: String,
    pub insecure: bool,
    pub ca_pem: Option<String>,
    pub username: Option<String>,
    /// Sealed JSON of the password or token.
    pub secret: Option<Vec<u8>>,
    /// Repository prefixes per partner.
    pub partners: BTreeMap<String, Vec<String>>,
    /// Hosts the registry may redirect downloads to.
    pub blob_hosts: Vec<String>,
    /// Hosts of the registry's token service.
    pub token_hosts: Vec<String>,
    /// Its names may resolve to private addresses.
    pub private_addresses: bool,
}

/// An audit record.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Hex SHA-256 of a token secret, as stored.
/// The principal of a stored token's role and scope (`None` for a row no role reads).
fn principal_of(role: &str, scope: Option<String>) -> Option<Principal> {
    match (role, scope) {
        ("operator", _) => Some(Principal::Operator),
        ("partner", Some(p)) => Some(Principal::Partner(p)),
        ("tenant", Some(t)) => Some(Principal::Tenant(t)),
        _ => None,
    }
}

pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn version_row(r: &AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        app: r.try_get("app")?,
        version: r.try_get("version")?,
        manifest: r.try_get("manifest")?,
        manifest_digest: r.try_get("manifest_digest")?,
        component_digest: r.try_get("component_digest")?,
        signer: r.try_get("signer")?,
        reference: r.try_get("reference")?,
        yanked: r.try_get::<i64, _>("yanked")? != 0,
        created_ms: r.try_get("created_ms")?,
        quarantined: r.try_get::<i64, _>("quarantined")? != 0,
        quarantine_reason: r.try_get("quarantine_reason")?,
    })
}

fn installation_row(r: &impl sqlite_reads::Columns) -> Result<InstallationRow, sqlx::Error> {
    Ok(InstallationRow {
        id: r.text("id")?,
        tenant: r.text("tenant")?,
        app: r.text("app")?,
        version: r.text("version")?,
        config: r.text("config")?,
        secrets: r.bytes("secrets")?,
        created_ms: r.int("created_ms")?,
        updated_ms: r.int("updated_ms")?,
        row_version: r.int("row_version")?,
        upgrade_policy: r
            .text("upgrade_policy")?
            .parse()
            .map_err(|e: kiosk_domain::upgrade::UnknownPolicy| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// How long a pooled connection may sit idle and still be used without a ping first:
/// under load connections come back within milliseconds; after a second, a database
/// restart may have closed them.
const PING_IF_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Connections of the PostgreSQL pool: room for the requests' reads beside the ledger's
/// writer on a few cores (the server is CPU-bound long before it waits for one).
const PG_MAX_CONNECTIONS: u32 = 16;

/// The connection itself failed (closed, reset, terminated by the server), not the
/// statement: SQLSTATE class 08 (connection exception) or 57P01-57P03 (the server shut
/// down or is restarting), or an I/O error.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

const VERSION_COLUMNS: &str =
    "app, version, manifest, manifest_digest, component_digest, signer, reference, yanked, created_ms";
/// What a read of a version selects: the inserted columns plus the quarantine.
const VERSION_SELECT: &str = "app, version, manifest, manifest_digest, component_digest, signer, reference, yanked, \
     created_ms, quarantined, quarantine_reason";
/// The columns an insert of an installation writes (`row_version` starts at its default, 0).
const INSTALLATION_COLUMNS: &str = "id, tenant, app, version, config, secrets, created_ms, updated_ms, upgrade_policy";
/// What a read of an installation selects.
const INSTALLATION_SELECT: &str =
    "id, tenant, app, version, config, secrets, created_ms, updated_ms, row_version, upgrade_policy";

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and runs migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError {
                action: format!("unsupported database URL {url:?} (use sqlite://FILE or postgres://…)"),
                source: sqlx::Error::Configuration("unsupported scheme".into()),
            });
        };
        let mut file = None;
        if backend == Backend::Sqlite {
            // Create the file and switch to WAL once, with the native driver.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(ctx(format!("parse {url}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            file = Some(options.get_filename().to_path_buf());
            let pool = sqlx::SqlitePool::connect_with(options).await.map_err(ctx(format!("open {url}")))?;
            pool.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { PG_MAX_CONNECTIONS })
            // A connection back in use within `PING_IF_IDLE` is not pinged first: sqlx's
            // default pings on every acquire, a round trip per query that doubled the
            // PostgreSQL statements of a call (it pings on release as well). One idle
            // longer (across a database restart, say) is pinged, and replaced if dead.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Foreign keys and a write-lock wait per connection.
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(ctx(format!("connect to {}", redact(url))))?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|e| StoreError { action: "run migrations".into(), source: e.into() })?;
        // In-memory databases have no file another connection could open.
        let reader = match file.filter(|f| f.is_file()) {
            None => None,
            Some(file) => match sqlite_reads::SqliteReader::open(&file) {
                Ok(reader) => Some(Arc::new(reader)),
                Err(e) => {
                    tracing::warn!(error = %e, "the inline SQLite reader could not open the database: reads go through the pool");
                    None
                }
            },
        };
        Ok(Self { pool, backend, reader, turn: Arc::default() })
    }

    /// `read` of the statement `sql` (sqlx's text: `$n` parameters, bound by name) on
    /// the inline SQLite reader (`sqlite_reads`), prepared once per connection. `None`
    /// when there is no reader or it failed (logged): the caller reads through the pool.
    fn read_inline<T>(
        &self,
        what: &str,
        sql: &str,
        read: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<T>,
    ) -> Option<T> {
        let reader = self.reader.as_ref()?;
        match reader.read(|c| read(&mut c.prepare_cached(sql)?)) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, read = what, "inline SQLite read failed: reading through the pool");
                None
            }
        }
    }

    /// The SQLite database file, when the database is one (the ledger writes it on a
    /// connection of its own).
    pub(crate) fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.reader.as_deref().map(sqlite_reads::SqliteReader::path)
    }

    /// The pool, for modules that own their tables (the ledger).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`: the writer lock is
    /// taken first, so a transaction that reads before it writes waits (`busy_timeout`)
    /// for another connection's or process's commit instead of failing at its first
    /// write with `SQLITE_BUSY_SNAPSHOT` (517), which no timeout retries. It takes the
    /// lock in its turn (`write_turn`).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let _turn = self.write_turn().await;
                self.pool.begin_with("BEGIN IMMEDIATE").await
            }
            Backend::Postgres => {
                // A pooled connection that died within `PING_IF_IDLE` (the database
                // restarted) fails its `BEGIN`, before anything of the transaction was
                // sent: it is discarded and the next one tried, at most once per
                // connection the pool can hold, so a restart fails no write transaction.
                let mut tries = 0;
                loop {
                    match self.pool.begin().await {
                        Err(e) if tries < PG_MAX_CONNECTIONS && connection_lost(&e) => {
                            tries += 1;
                            tracing::warn!(error = %e, "a pooled PostgreSQL connection was lost: beginning on another");
                        }
                        begun => break begun,
                    }
                }
            }
        }
        .map_err(ctx("begin"))
    }

    /// Waits for this process's next turn at SQLite's writer lock; the lock is to be
    /// taken (`BEGIN IMMEDIATE`, or a single write statement) while the turn is held,
    /// and the turn given back once it is. `None` on PostgreSQL (row locks queue).
    ///
    /// Why: SQLite has no queue for its writer lock. A connection that finds it taken
    /// sleeps (1, 2, 5, 10 … ms) and tries again, so a writer that commits and begins
    /// again at once — the ledger's thread under load — wins nearly every time, and the
    /// collector's leases or an install waited seconds (usage collection beside four
    /// invokers fell from 298 to 20 windows/s). Turns are handed out in arrival order
    /// (tokio's mutex is fair), so each waiting writer takes the lock next.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.turn.lock().await),
            Backend::Postgres => None,
        }
    }

    /// The turns at SQLite's writer lock, for the ledger's thread (`write_turn`).
    pub(crate) fn write_turns(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.turn.clone()
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(ctx("ping"))?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // --- tokens -------------------------------------------------------------------

    /// Creates a token that never expires, with its audit row (`token.create`) in one
    /// transaction; returns (id, secret). Only the secret's hash is stored.
    pub async fn create_token(
        &self,
        principal: &Principal,
        label: &str,
        actor: &str,
    ) -> Result<(String, String), StoreError> {
        self.create_token_by(principal, label, None, actor).await
    }

    /// The principal a token secret stands for, if it is known, not revoked and not
    /// expired. Asked on every request: a revocation holds from the next request on.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        const SQL: &str = "SELECT role, scope FROM tokens WHERE hash = $1 AND revoked = 0 AND (expires_ms IS NULL OR expires_ms > $2)";
        let hash = token_hash(secret);
        let now = now_ms() as i64;
        let inline = self.read_inline("token", SQL, |statement| {
            let mut rows = statement.query(rusqlite::named_params! {"$1": hash, "$2": now})?;
            match rows.next()? {
                None => Ok(None),
                Some(row) => Ok(Some((row.get::<_, String>("role")?, row.get::<_, Option<String>>("scope")?))),
            }
        });
        if let Some(token) = inline {
            return Ok(token.and_then(|(role, scope)| principal_of(&role, scope)));
        }
        let row =
            sqlx::query(SQL).bind(&hash).bind(now).fetch_optional(&self.pool).await.map_err(ctx("authenticate"))?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role").map_err(ctx("read token"))?;
        let scope: Option<String> = row.try_get("scope").map_err(ctx("read token"))?;
        Ok(principal_of(&role, scope))
    }

    pub async fn count_operator_tokens(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM tokens WHERE role = 'operator' AND revoked = 0
             AND (expires_ms IS NULL OR expires_ms > $1)",
        )
        .bind(now_ms() as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(ctx("count tokens"))?;
        row.try_get("n").map_err(ctx("count tokens"))
    }

    // --- partners, certificates, tenants -------------------------------------------

    /// Creates a partner with its audit row (`partner.create`) in one transaction;
    /// `false` if it exists (nothing is written).
    pub async fn create_partner(&self, name: &str, display: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO partners (name, display, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(display)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create partner"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "partner.create", name, "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    pub async fn partner_exists(&self, name: &str) -> Result<bool, StoreError> {
        exists(&self.pool, "SELECT 1 FROM partners WHERE name = $1", name).await.map_err(ctx("find partner"))
    }

    /// Registers a certificate for `partner` (or replaces its bytes) with its audit row
    /// (`certificate.add` or `certificate.update`) in one transaction; `false` when the
    /// fingerprint belongs to another partner (nothing is written). The operator API
    /// uses `put_certificates`, which also merges and quarantines.
    pub async fn add_certificate(
        &self,
        partner: &str,
        fingerprint: &str,
        cert: &[u8],
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The write comes first: it takes the lock (SQLite's writer lock, PostgreSQL's
        // row lock) before anything is read.
        revocation::lock_partner(&mut tx, partner).await?;
        let known: Option<Vec<u8>> =
            sqlx::query("SELECT cert FROM partner_certs WHERE fingerprint = $1 AND partner = $2")
                .bind(fingerprint)
                .bind(partner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(ctx("find certificate"))?
                .map(|r| r.try_get("cert"))
                .transpose()
                .map_err(ctx("read certificate"))?;
        if known.as_deref() == Some(cert) {
            // Already registered as it is (`kiosk run` on every start): nothing to write.
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(true);
        }
        let done = sqlx::query(
            "INSERT INTO partner_certs (fingerprint, partner, cert, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (fingerprint) DO UPDATE SET cert = excluded.cert WHERE partner_certs.partner = excluded.partner",
        )
        .bind(fingerprint)
        .bind(partner)
        .bind(cert)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("add certificate"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        let action = if known.is_some() { "certificate.update" } else { "certificate.add" };
        audit(&mut tx, actor, action, partner, fingerprint).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    /// Every registered certificate: (partner, certificate bytes).
    pub async fn certificates(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT partner, cert FROM partner_certs ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list certificates"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("partner")?, r.try_get("cert")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read certificates"))
    }

    /// Creates a tenant with its audit row (`tenant.create`) in one transaction; `false`
    /// if it exists (nothing is written).
    pub async fn create_tenant(&self, id: &str, display: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO tenants (id, display, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(display)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("create tenant"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(false);
        }
        audit(&mut tx, actor, "tenant.create", id, "").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(true)
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, StoreError> {
        exists(&self.pool, "SELECT 1 FROM tenants WHERE id = $1", id).await.map_err(ctx("find tenant"))
    }

    // --- catalog --------------------------------------------------------------------

    /// Registers a verified version (and its app, on first version) in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn register_version(
        &self,
        manifest: &kiosk_domain::manifest::Manifest,
        manifest_json: &str,
        manifest_digest: &str,
        component_digest: &str,
        component: &[u8],
        signer: &str,
        reference: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let partner = manifest.app.split_once('/').map_or("", |(p, _)| p);
        // Serialised with a revocation or removal of the partner's certificates, so a
        // version verified just before its signer was distrusted starts quarantined.
        revocation::lock_partner(&mut tx, partner).await?;
        let categories = serde_json::to_string(&manifest.categories).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO apps (id, partner, display, description, categories, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET display = excluded.display, description = excluded.description,
             categories = excluded.categories",
        )
        .bind(&manifest.app)
        .bind(partner)
        .bind(&manifest.name)
        .bind(&manifest.description)
        .bind(categories)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record app"))?;
        sqlx::query("INSERT INTO components (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
            .bind(component_digest)
            .bind(component)
            .execute(&mut *tx)
            .await
            .map_err(ctx("store component"))?;
        let v = &manifest.version;
        sqlx::query(&format!(
            "INSERT INTO versions ({VERSION_COLUMNS}, major, minor, patch, prerelease)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12)"
        ))
        .bind(&manifest.app)
        .bind(v.to_string())
        .bind(manifest_json)
        .bind(manifest_digest)
        .bind(component_digest)
        .bind(signer)
        .bind(reference)
        .bind(now_ms() as i64)
        .bind(v.major as i64)
        .bind(v.minor as i64)
        .bind(v.patch as i64)
        .bind(v.pre.to_string())
        .execute(&mut *tx)
        .await
        .map_err(ctx(format!("record {}@{v}", manifest.app)))?;
        audit(
            &mut tx,
            actor,
            "version.register",
            &format!("{}@{v}", manifest.app),
            &format!("{manifest_digest} from {reference}"),
        )
        .await?;
        revocation::quarantine_if_distrusted(&mut tx, &manifest.app, &v.to_string(), signer, "kiosk").await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(())
    }

    pub async fn version(&self, app: &str, version: &str) -> Result<Option<VersionRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VERSION_SELECT} FROM versions WHERE app = $1 AND version = $2"))
            .bind(app)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("find version"))?;
        row.as_ref().map(version_row).transpose().map_err(ctx("read version"))
    }

    /// Versions of `app`, highest first.
    pub async fn versions(&self, app: &str) -> Result<Vec<VersionRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_SELECT} FROM versions WHERE app = $1 ORDER BY major DESC, minor DESC, patch DESC, created_ms DESC"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list versions"))?;
        rows.iter().map(version_row).collect::<Result<_, _>>().map_err(ctx("read versions"))
    }

    pub async fn set_yanked(&self, app: &str, version: &str, yanked: bool, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE versions SET yanked = $1 WHERE app = $2 AND version = $3")
            .bind(i64::from(yanked))
            .bind(app)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(ctx("yank version"))?;
        if done.rows_affected() == 1 {
            audit(
                &mut tx,
                actor,
                if yanked { "version.yank" } else { "version.unyank" },
                &format!("{app}@{version}"),
                "",
            )
            .await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM components WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("load component"))?;
        row.map(|r| r.try_get("bytes")).transpose().map_err(ctx("read component"))
    }

    /// Apps with their partner, display name, description and categories.
    pub async fn apps(&self) -> Result<Vec<(String, String, String, Vec<String>)>, StoreError> {
        let rows = sqlx::query("SELECT id, display, description, categories FROM apps ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list apps"))?;
        rows.iter()
            .map(|r| {
                let categories: String = r.try_get("categories")?;
                Ok((
                    r.try_get("id")?,
                    r.try_get("display")?,
                    r.try_get("description")?,
                    serde_json::from_str(&categories).unwrap_or_default(),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read apps"))
    }

    // --- entitlements ---------------------------------------------------------------

    pub async fn set_entitlement(&self, e: &EntitlementRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO entitlements (tenant, app, expires_ms, revoked, created_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, app) DO UPDATE SET expires_ms = excluded.expires_ms, revoked = excluded.revoked",
        )
        .bind(&e.tenant)
        .bind(&e.app)
        .bind(e.expires_ms)
        .bind(i64::from(e.revoked))
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("set entitlement"))?;
        let detail = format!("expires_ms={:?} revoked={}", e.expires_ms, e.revoked);
        audit(&mut tx, actor, "entitlement.set", &format!("{}:{}", e.tenant, e.app), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn entitlement(&self, tenant: &str, app: &str) -> Result<Option<EntitlementRow>, StoreError> {
        let row =
            sqlx::query("SELECT tenant, app, expires_ms, revoked FROM entitlements WHERE tenant = $1 AND app = $2")
                .bind(tenant)
                .bind(app)
                .fetch_optional(&self.pool)
                .await
                .map_err(ctx("find entitlement"))?;
        row.map(|r| {
            Ok(EntitlementRow {
                tenant: r.try_get("tenant")?,
                app: r.try_get("app")?,
                expires_ms: r.try_get("expires_ms")?,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
        .map_err(ctx("read entitlement"))
    }

    // --- installations --------------------------------------------------------------

    pub async fn insert_installation(&self, i: &InstallationRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO installations ({INSTALLATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&i.id)
        .bind(&i.tenant)
        .bind(&i.app)
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(i.created_ms)
        .bind(i.updated_ms)
        .bind(i.upgrade_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(ctx("record installation"))?;
        audit(
            &mut tx,
            actor,
            "installation.install",
            &format!("{}/{}", i.tenant, i.id),
            &format!("{}@{}", i.app, i.version),
        )
        .await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn installation(&self, tenant: &str, id: &str) -> Result<Option<InstallationRow>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {INSTALLATION_SELECT} FROM installations WHERE tenant = $1 AND id = $2"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(ctx("find installation"))?;
        row.as_ref().map(installation_row).transpose().map_err(ctx("read installation"))
    }

    pub async fn installations(&self, tenant: &str) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTALLATION_SELECT} FROM installations WHERE tenant = $1 ORDER BY created_ms, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// Every installation (exports: subscribed tenants' idle hours).
    pub async fn all_installations(&self) -> Result<Vec<InstallationRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {INSTALLATION_SELECT} FROM installations ORDER BY tenant, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("list installations"))?;
        rows.iter().map(installation_row).collect::<Result<_, _>>().map_err(ctx("read installations"))
    }

    /// Replaces an installation's version and configuration (configure) if the row is
    /// still at `i.row_version`, bumping it, with its audit row in one transaction;
    /// `Ok(Err(Changed))` (nothing written) if it changed or went since it was read.
    pub async fn update_installation(
        &self,
        i: &InstallationRow,
        action: &str,
        actor: &str,
    ) -> Result<Result<(), Changed>, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE installations SET version = $1, config = $2, secrets = $3, updated_ms = $4,
             row_version = row_version + 1 WHERE tenant = $5 AND id = $6 AND row_version = $7",
        )
        .bind(&i.version)
        .bind(&i.config)
        .bind(&i.secrets)
        .bind(now_ms() as i64)
        .bind(&i.tenant)
        .bind(&i.id)
        .bind(i.row_version)
        .execute(&mut *tx)
        .await
        .map_err(ctx("update installation"))?;
        if done.rows_affected() != 1 {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(Changed));
        }
        audit(&mut tx, actor, action, &format!("{}/{}", i.tenant, i.id), &format!("{}@{}", i.app, i.version)).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Removes an installation and its key-value data (its usage stays) if the row is
    /// still at `row_version`; `Ok(Err(Changed))` (nothing removed) if it changed or went
    /// since it was read. The removal is recorded (`uninstalled`), so usage reported
    /// later for the time it was installed is still accepted.
    pub async fn delete_installation(
        &self,
        tenant: &str,
        id: &str,
        row_version: i64,
        actor: &str,
    ) -> Result<Result<(), Changed>, StoreError> {
        self.delete_installation_noting(tenant, id, row_version, actor, None).await
    }

    /// `delete_installation`, also auditing (same transaction) why the app's uninstall
    /// hook did not succeed, when it did not.
    pub async fn delete_installation_noting(
        &self,
        tenant: &str,
        id: &str,
        row_version: i64,
        actor: &str,
        hook_failure: Option<&str>,
    ) -> Result<Result<(), Changed>, StoreError> {
        let mut tx = self.begin_write().await?;
        // The conditional delete comes first, so it takes the lock before anything is read.
        let row = sqlx::query(
            "DELETE FROM installations WHERE tenant = $1 AND id = $2 AND row_version = $3 RETURNING app, version",
        )
        .bind(tenant)
        .bind(id)
        .bind(row_version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ctx("delete installation"))?;
        let Some(row) = row else {
            tx.rollback().await.map_err(ctx("rollback"))?;
            return Ok(Err(Changed));
        };
        let (app, version): (String, String) = (
            row.try_get("app").map_err(ctx("read installation"))?,
            row.try_get("version").map_err(ctx("read installation"))?,
        );
        let detail = format!("{app}@{version}");
        sqlx::query(
            "INSERT INTO uninstalled (tenant, id, app, version, removed_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, id) DO NOTHING",
        )
        .bind(tenant)
        .bind(id)
        .bind(&app)
        .bind(&version)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(ctx("record the removed installation"))?;
        purge_kv(&mut tx, tenant, id).await?;
        // Its log lines go with it (ARCHITECTURE.md, "Decisions": what the app printed
        // may hold the tenant's data, and who may read it followed from the row).
        sqlx::query("DELETE FROM installation_logs WHERE tenant = $1 AND installation = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("purge log lines"))?;
        sqlx::query("DELETE FROM auto_upgrade_failures WHERE installation = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ctx("forget failed automatic upgrades"))?;
        if let Some(failure) = hook_failure {
            audit(&mut tx, actor, "installation.uninstall-hook-failed", &format!("{tenant}/{id}"), failure).await?;
        }
        audit(&mut tx, actor, "installation.uninstall", &format!("{tenant}/{id}"), &detail).await?;
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(Ok(()))
    }

    /// Removes key-value data written for an installation that was never recorded
    /// (an install whose hooks or record failed).
    pub async fn delete_installation_data(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        purge_kv(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    /// An installation of `app` by `tenant` that was uninstalled at or after `since_ms`:
    /// (installation id, version). For usage reported after an uninstall.
    pub async fn uninstalled_since(
        &self,
        tenant: &str,
        app: &str,
        since_ms: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version FROM uninstalled WHERE tenant = $1 AND app = $2 AND removed_ms >= $3
             ORDER BY removed_ms DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(app)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx("find past installation"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            row.try_get("id").map_err(ctx("read removed installation"))?,
            row.try_get("version").map_err(ctx("read removed installation"))?,
        )))
    }

    // --- key-value --------------------------------------------------------------------

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
        let rows = sqlx::query(SQL)
            .bind(&scope.tenant)
            .bind(&scope.installation)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("load key-value data"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect::<Result<BTreeMap<String, Vec<u8>>, sqlx::Error>>()
            .map_err(ctx("read key-value data"))
    }

    /// Applies `changes` in one transaction; refuses them (nothing written) over `quota`.
    pub async fn kv_commit(
        &self,
        scope: &KvScope,
        changes: KvChanges,
        quota: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let applied = kv_apply(&mut tx, scope, &changes, quota).await?;
        if applied.is_ok() {
            tx.commit().await.map_err(ctx("commit"))?;
        } else {
            tx.rollback().await.map_err(ctx("rollback"))?;
        }
        Ok(applied)
    }

    // --- registries -------------------------------------------------------------------

    /// Creates or replaces a registry's settings; `secret` is already sealed.
    pub async fn put_registry(&self, r: &RegistryRow, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO registries (host, insecure, ca_pem, username, secret, updated_ms, partners, blob_hosts,
             token_hosts, private_addresses) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (host) DO UPDATE SET insecure = excluded.insecure, ca_pem = excluded.ca_pem,
             username = excluded.username, secret = excluded.secret, updated_ms = excluded.updated_ms,
             partners = excluded.partners, blob_hosts = excluded.blob_hosts, token_hosts = excluded.token_hosts,
             private_addresses = excluded.private_addresses",
        )
        .bind(&r.host)
        .bind(i64::from(r.insecure))
        .bind(&r.ca_pem)
        .bind(&r.username)
        .bind(&r.secret)
        .bind(now_ms() as i64)
        .bind(serde_json::to_string(&r.partners).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&r.blob_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.token_hosts).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(r.private_addresses))
        .execute(&mut *tx)
        .await
        .map_err(ctx("store registry"))?;
        audit(&mut tx, actor, "registry.put", &r.host, "").await?;
        tx.commit().await.map_err(ctx("commit"))
    }

    pub async fn registries(&self) -> Result<Vec<RegistryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, insecure, ca_pem, username, secret, partners, blob_hosts, token_hosts, private_addresses
             FROM registries ORDER BY host",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("list registries"))?;
        rows.iter()
            .map(|r| {
                Ok(RegistryRow {
                    host: r.try_get("host")?,
                    insecure: r.try_get::<i64, _>("insecure")? != 0,
                    ca_pem: r.try_get("ca_pem")?,
                    username: r.try_get("username")?,
                    secret: r.try_get("secret")?,
                    partners: json_column(r.try_get("partners")?)?,
                    blob_hosts: json_column(r.try_get("blob_hosts")?)?,
                    token_hosts: json_column(r.try_get("token_hosts")?)?,
                    private_addresses: r.try_get::<i64, _>("private_addresses")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("read registries"))
    }

    pub async fn delete_registry(&self, host: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM registries WHERE host = $1")
            .bind(host)
            .execute(&mut *tx)
            .await
            .map_err(ctx("delete registry"))?;
        if done.rows_affected() == 1 {
            audit(&mut tx, actor, "registry.delete", host, "").await?;
        }
        tx.commit().await.map_err(ctx("commit"))?;
        Ok(done.rows_affected() == 1)
    }

    // --- audit ------------------------------------------------------------------------

    /// The newest `limit` audit records (the first page of `audit_page`).
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_page(None, limit).await
    }

    /// Row counts of every table, to check that a failed request changed nothing.
    pub async fn table_counts(&self) -> Result<BTreeMap<&'static str, i64>, StoreError> {
        let mut counts = BTreeMap::new();
        for table in [
            "tokens",
            "partners",
            "partner_certs",
            "tenants",
            "apps",
            "components",
            "versions",
            "entitlements",
            "installations",
            "kv",
            "kv_usage",
            "audit",
            "registries",
            "uninstalled",
            "distrusted_certs",
            "installation_logs",
            "limit_layers",
            "watches",
            "watch_tags",
            "auto_upgrade_failures",
        ] {
            let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .map_err(ctx(format!("count {table}")))?;
            counts.insert(table, row.try_get("n").map_err(ctx("count"))?);
        }
        Ok(counts)
    }
}

/// A JSON text column of the registries table.
fn json_column<T: serde::de::DeserializeOwned>(text: String) -> Result<T, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

async fn audit(tx: &mut impl WriteTx, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
    tx.execute(
        "write audit log",
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        &[Arg::Int(now_ms() as i64), actor.into(), action.into(), target.into(), detail.into()],
    )
    .await?;
    Ok(())
}

async fn exists(pool: &AnyPool, sql: &str, key: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(sql).bind(key).fetch_optional(pool).await?.is_some())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
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
            Ok(Err(quota)) => Err(KvStoreError::QuotaExceeded {
                tenant: scope.tenant.clone(),
                installation: scope.installation.clone(),
                quota,
            }),
            Err(e) => Err(kv_unavailable(e)),
        }
    }

    async fn purge(&self, _scope: &KvScope) -> Result<(), KvStoreError> {
        // Purged with the installation row, in one transaction (Store::delete_installation).
        Ok(())
    }
}
