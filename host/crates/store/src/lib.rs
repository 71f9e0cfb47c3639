//! Persistence with sqlx: SQLite in a file by default (created on first start, WAL
//! mode) or PostgreSQL. One set of queries over `AnyPool` (portable SQL with `$n`
//! placeholders, integers/text/bytes only); migrations per backend, embedded in the
//! binary and run at start.
//!
//! The store is one type, `Store`, whose methods live beside the entity they read and
//! write: each module below holds its entity's `impl Store` methods, row structs and
//! SQL. This file keeps the connection (pool, inline SQLite reader, write turns), the
//! error type and the migrations.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

mod audit;
mod call_cache;
mod call_context;
mod catalog_meta;
mod certificates;
mod egress;
mod entitlements;
pub mod export;
mod idempotency;
mod installations;
mod kv;
mod kv_batch;
pub mod ledger;
mod limits;
pub mod logs;
mod partners;
mod passes;
mod private_apps;
mod registries;
mod sinks;
mod sqlite_reads;
mod tenant_quotas;
mod tenants;
mod tokens;
mod upgrades;
mod usage;
mod versions;
mod watches;
mod write;

pub use audit::AuditRow;
pub use call_cache::{FRESH as CALL_READS_FRESH, WriteTransaction};
pub use call_context::CallContext;
pub use catalog_meta::{NewIcon, VersionHead};
pub use certificates::{CertUpdate, CertificateRow, DistrustedCert};
pub use egress::{EgressPolicyRow, EgressSwitchRow, OperatorEgress};
pub use entitlements::EntitlementRow;
pub use idempotency::{IDEMPOTENCY_RETENTION_MS, KeyedAnswer, KeyedWrite, StoredAnswer};
pub use installations::{
    Changed, InstallationRow, LifecycleRefused, NotInstallable, RemovedInstallation, UpgradeRefused,
};
pub use kv::DbKv;
pub use limits::{CallPolicy, LimitLayerRow};
pub use partners::PartnerSummary;
pub use private_apps::{PRIVATE_QUOTA_EXCEEDED, PrivateAppPolicyRow, TenantRegistryRow};
pub use registries::RegistryRow;
pub use sinks::ApiSinkRow;
pub use tenant_quotas::{TenantQuotaRow, TenantUse};
pub use tenants::{Inactive, TenantSummary};
pub use tokens::{BootstrapToken, Principal, TokenRevocation, TokenRow, token_hash};
pub use usage::{UsageWindowRow, WindowClose};
pub use versions::{AppRow, QuarantinedVersion, VersionRow, VersionSigner, VersionState};
pub use watches::{NewWatch, RecordedTag, TagOutcome, TagOutcomeRow, WatchPoll, WatchRow};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("database: {action}: {source}")]
pub struct StoreError {
    pub action: String,
    #[source]
    pub source: sqlx::Error,
}

impl StoreError {
    /// Whether the database could not be reached or served the statement for a reason a
    /// retry may not meet: a dropped or refused connection, an exhausted or closed pool,
    /// a server shutting down or restarting or out of resources (PostgreSQL classes 08
    /// and 53, 57P01-57P03, 57P05), a busy, locked, full or failing SQLite file (any
    /// extended code of those). Anything else (a constraint, a bug) is not.
    pub fn is_unavailable(&self) -> bool {
        match &self.source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(e) => {
                let code = e.code().unwrap_or_default();
                if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite's codes come extended (IOERR_WRITE is 778, BUSY_SNAPSHOT 517):
                    // the primary code is the low byte. BUSY 5, LOCKED 6, IOERR 10, FULL
                    // 13, CANTOPEN 14.
                    return code.parse::<i32>().is_ok_and(|c| [5, 6, 10, 13, 14].contains(&(c & 0xff)));
                }
                // PostgreSQL: class 08 (connection), 53 (insufficient resources: disk
                // full, out of memory, too many connections), a server shutting down,
                // restarting or closing an idle session.
                code.starts_with("08")
                    || code.starts_with("53")
                    || ["57P01", "57P02", "57P03", "57P05"].contains(&code.as_ref())
            }
            _ => false,
        }
    }
}

fn ctx(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let action = action.into();
    move |source| StoreError { action, source }
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
    /// Tokens and call contexts read by this process (`call_cache`).
    cache: Arc<call_cache::CallCache>,
    /// Key-value snapshots read together, on PostgreSQL (`kv_batch`).
    kv_batch: Option<kv_batch::KvBatcher>,
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

/// A read on the pool, sent once more if the connection it went out on was lost (a
/// backend terminated, the database restarted): a read is safe to repeat, and the second
/// try goes out on another connection (sqlx pings a connection as it comes back and drops
/// a dead one). A second loss is the caller's (503 `storage-unavailable`).
pub(crate) async fn read_once_more<T, Fut>(what: &str, read: impl Fn() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match read().await {
        Err(e) if connection_lost(&e) => {
            tracing::warn!(error = %e, read = what, "a pooled connection was lost during a read: reading on another");
            read().await.map_err(ctx(what))
        }
        done => done.map_err(ctx(what)),
    }
}

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
                    // A connection sqlx still counts in a transaction is closed, not
                    // reused: on a full disk SQLite rolls back a failed COMMIT itself, the
                    // ROLLBACK of the dropped transaction then fails, and every later
                    // `BEGIN IMMEDIATE` on that connection would fail (faults::disk_full).
                    if sqlx::Connection::is_in_transaction(conn) {
                        return Ok(false);
                    }
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
        let kv_batch = (backend == Backend::Postgres).then(|| kv_batch::KvBatcher::start(pool.clone()));
        Ok(Self {
            pool,
            backend,
            reader,
            turn: Arc::default(),
            cache: Arc::new(call_cache::CallCache::new()),
            kv_batch,
        })
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
    ///
    /// Its end clears this process's call cache (`call_cache`): a change committed here
    /// holds from the next call here.
    pub async fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        Ok(WriteTransaction::new(self.begin_transaction().await?, Some(self.cache.clone())))
    }

    /// `begin_write` for the writes that change no token and no call context (log
    /// lines, leases, keyed answers, key-value data, watch outcomes): frequent ones that
    /// would otherwise empty the call cache for every tenant.
    pub(crate) async fn begin_write_keeping_calls(&self) -> Result<WriteTransaction, StoreError> {
        Ok(WriteTransaction::new(self.begin_transaction().await?, None))
    }

    /// `begin_write` without clearing the call cache, for the ledger's group commits
    /// (they write no token or call context).
    pub(crate) async fn begin_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
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
