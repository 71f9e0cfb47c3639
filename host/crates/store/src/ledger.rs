//! The metering ledger: usage events stored once per (source, idempotency key), durable
//! before they are acknowledged, with group commit: the events of all submitters that
//! queued up while the previous transaction was being written go into the next one, and
//! each submitter is answered only after that transaction committed.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use crate::collection::{WindowClose, close_window_tx};
use crate::logs::{LogBatch, LogBounds, NewLogLine, append_logs_tx};
use crate::sqlite_reads::{Columns as _, as_sqlx};
use crate::write::{self, Arg, SqliteWriteTx, WriteTx};
use crate::{Store, StoreError, ctx, kv_apply_many};
use kiosk_domain::effects::{CallCommitter, CallEffects, CallLines, CommitError, KvWrite};
use kiosk_domain::kv::{KvChanges, KvScope, KvStoreError};
use kiosk_domain::metering::{MeteringSink, MeteringSinkError, SinkOutcome, UsageEvent, UsageSource, now_ms};

/// Largest quantity of one event (SPEC §7): 2^53 − 1, exact in every JSON reader and
/// far inside the `BIGINT` column, so no stored quantity is ever negative.
pub use kiosk_domain::metering::MAX_QUANTITY;

/// Longest idempotency key a submitter may give (SPEC §7).
pub use kiosk_domain::metering::MAX_IDEMPOTENCY_KEY_BYTES as MAX_SUBMITTED_KEY_BYTES;

/// Longest stored key: the submitter's key plus the namespace the host puts before it (a
/// partner name and `/`, or an installation id and `/report/`: at most 72 bytes).
pub const MAX_KEY_BYTES: usize = MAX_SUBMITTED_KEY_BYTES + 72;

/// Why the ledger refused an event it cannot store. Checked per event before any
/// transaction, behind the same checks at the API and in the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("quantity must be positive")]
    ZeroQuantity,
    #[error("quantity {quantity} is over the maximum of 2^53 - 1 ({MAX_QUANTITY})")]
    QuantityTooLarge { quantity: u64 },
    #[error("{field} contains U+0000 (NUL), which the ledger does not store")]
    InvalidText { field: &'static str },
    #[error("the idempotency key is empty")]
    EmptyKey,
    #[error("the idempotency key is {bytes} bytes; at most {MAX_KEY_BYTES}")]
    KeyTooLong { bytes: usize },
    #[error("time {at_ms} ms is out of range")]
    TimeOutOfRange { at_ms: u64 },
}

/// Serialized as its human reason, like the API's other refusals.
impl serde::Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why `e` cannot be stored, if it cannot.
pub fn refusal(e: &UsageEvent) -> Option<Refusal> {
    let texts = [
        ("tenant", &e.tenant),
        ("installation", &e.installation),
        ("app", &e.app),
        ("version", &e.version),
        ("sku", &e.sku),
        ("idempotency key", &e.idempotency_key),
    ];
    if let Some((field, _)) = texts.iter().find(|(_, text)| text.contains('\0')) {
        return Some(Refusal::InvalidText { field });
    }
    if e.quantity == 0 {
        return Some(Refusal::ZeroQuantity);
    }
    if e.quantity > MAX_QUANTITY {
        return Some(Refusal::QuantityTooLarge { quantity: e.quantity });
    }
    if e.idempotency_key.is_empty() {
        return Some(Refusal::EmptyKey);
    }
    if e.idempotency_key.len() > MAX_KEY_BYTES {
        return Some(Refusal::KeyTooLong { bytes: e.idempotency_key.len() });
    }
    if i64::try_from(e.at_ms).is_err() {
        return Some(Refusal::TimeOutOfRange { at_ms: e.at_ms });
    }
    None
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Recorded {
    /// Newly recorded.
    Recorded,
    /// The same (source, key, quantity) was recorded before: counted once.
    Duplicate,
    /// The same (source, key) was recorded with another quantity: refused.
    Conflict { recorded_quantity: u64 },
    /// The ledger cannot store this event: refused, nothing recorded.
    Refused { reason: Refusal },
}

impl Recorded {
    /// The event counts (now or from before).
    pub fn counted(&self) -> bool {
        matches!(self, Self::Recorded | Self::Duplicate)
    }
}

/// The ledger is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ledger is shut down")]
    Closed,
}

/// What a submission came to: its events' outcomes, or the key-value quota its changes
/// would have exceeded (then nothing of it was written).
type Written = Result<Vec<Recorded>, u64>;

impl LedgerError {
    /// As a store error (a writer that is gone reads as a closed pool).
    pub fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Closed => StoreError { action: "the ledger's writer".into(), source: sqlx::Error::PoolClosed },
        }
    }
}

type Reply = oneshot::Sender<Result<Written, String>>;

/// A call's key-value changes and lines, written with its usage.
#[derive(Debug)]
struct CallWork {
    scope: KvScope,
    kv: Option<KvWrite>,
    lines: Option<(CallLines, LogBounds)>,
}

/// Handle to the group-commit writer: the one writer of calls' effects (key-value
/// changes, usage, lines) and of submitted usage.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Item>,
}

/// One submission to the writer.
type Item = (Vec<UsageEvent>, Option<CallWork>, Option<WindowClose>, Reply);

/// Most events in one transaction.
const MAX_GROUP: usize = 2_000;

/// Most calls in one transaction (each may carry key-value changes and lines).
const MAX_GROUP_CALLS: usize = 256;

/// Rows per multi-row usage insert (10 parameters each).
const USAGE_CHUNK: usize = 100;

/// The quantity of a stored row. Quantities are bound as `i64` and are at most 2^53 − 1
/// since the ledger refuses more; a row written before that check holds the bits of the
/// `u64` that was submitted, and reads back as that `u64` (never negative).
pub fn stored_quantity(column: i64) -> u64 {
    column as u64
}

impl Ledger {
    /// Starts the writer: on a SQLite file, a thread of its own with its own rusqlite
    /// connection (`SqliteWriter`); otherwise (PostgreSQL, in-memory SQLite, or if that
    /// connection cannot be opened) a task on the current tokio runtime writing through
    /// the pool.
    pub fn start(store: Store) -> Self {
        if let Some(file) = store.sqlite_file() {
            match SqliteWriter::open(file, store.write_turns()) {
                Ok(mut writer) => {
                    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
                    let spawned = std::thread::Builder::new().name("kiosk-ledger".into()).spawn(move || {
                        while let Some(first) = rx.blocking_recv() {
                            let group = gather(first, &mut rx);
                            // `SqliteWriter` never suspends, so one poll writes the group.
                            if write::poll_once(commit_group(&mut writer, group)).is_none() {
                                tracing::error!("the ledger's SQLite writer suspended; its group was dropped");
                                writer.end_open_transaction();
                            }
                        }
                    });
                    match spawned {
                        Ok(_) => return Self { tx },
                        Err(e) => {
                            tracing::warn!(error = %e, "could not start the ledger's writer thread: writing through the pool")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the ledger's SQLite connection could not be opened: writing through the pool")
                }
            }
        }
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let mut writer = PoolWriter(store);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let group = gather(first, &mut rx);
                commit_group(&mut writer, group).await;
            }
        });
        Self { tx }
    }

    /// Records `events`; returns once they are committed (or refused: conflicts, and
    /// events the ledger cannot store). The events of one call are committed together or
    /// not at all; another submitter's failure never fails them.
    pub async fn record(&self, events: Vec<UsageEvent>) -> Result<Vec<Recorded>, LedgerError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match self.submit(events, None).await? {
            Ok(outcomes) => Ok(outcomes),
            Err(_) => Err(LedgerError::Closed),
        }
    }

    /// Commits a completed call's effects — key-value changes (within `kv.quota`), usage
    /// and lines — in one transaction shared with the other calls that completed
    /// meanwhile; returns once it committed. `Ok(Err(quota))`: the changes would exceed
    /// the quota, and nothing of the call was written.
    pub async fn commit_call(&self, effects: CallEffects, logs: LogBounds) -> Result<Written, LedgerError> {
        let work = CallWork { scope: effects.scope, kv: effects.kv, lines: effects.lines.map(|l| (l, logs)) };
        self.submit(effects.usage, Some(work)).await
    }

    /// Closes a collected (or given-up) usage window with its audit row, in one
    /// transaction shared with whatever else is being committed; returns once it is.
    pub async fn close_window(&self, close: WindowClose) -> Result<(), LedgerError> {
        self.send(Vec::new(), None, Some(close)).await.map(drop)
    }

    async fn submit(&self, events: Vec<UsageEvent>, work: Option<CallWork>) -> Result<Written, LedgerError> {
        self.send(events, work, None).await
    }

    async fn send(
        &self,
        events: Vec<UsageEvent>,
        work: Option<CallWork>,
        close: Option<WindowClose>,
    ) -> Result<Written, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((events, work, close, reply)).await.map_err(|_| LedgerError::Closed)?;
        match answer.await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(message)) => Err(LedgerError::Store(StoreError {
                action: "group commit".into(),
                source: sqlx::Error::Protocol(message),
            })),
            Err(_) => Err(LedgerError::Closed),
        }
    }
}

/// One submitter's work in a group: those of its events the ledger refused up front are
/// answered without being written.
struct Submission {
    events: Vec<UsageEvent>,
    refused: Vec<Option<Refusal>>,
    work: Option<CallWork>,
    close: Option<WindowClose>,
    reply: Reply,
}

impl Submission {
    fn new(events: Vec<UsageEvent>, work: Option<CallWork>, close: Option<WindowClose>, reply: Reply) -> Self {
        let refused = events.iter().map(refusal).collect();
        Self { events, refused, work, close, reply }
    }

    fn writable(&self) -> impl Iterator<Item = &UsageEvent> {
        self.events.iter().zip(&self.refused).filter(|(_, r)| r.is_none()).map(|(e, _)| e)
    }

    /// The scope it writes in, for the order of a group (locks taken in one order).
    fn scope(&self) -> Option<&KvScope> {
        self.work.as_ref().map(|w| &w.scope)
    }

    /// Answers with `written` (the outcomes of `writable`, in order, or the quota) and
    /// the refusals.
    fn answer(self, written: Written) {
        let written = match written {
            Ok(written) => written,
            Err(quota) => {
                let _ = self.reply.send(Ok(Err(quota)));
                return;
            }
        };
        let mut written = written.into_iter();
        let outcomes = self
            .refused
            .into_iter()
            .map(|r| match r {
                Some(reason) => Some(Recorded::Refused { reason }),
                None => written.next(),
            })
            .collect::<Option<Vec<_>>>()
            .map(Ok)
            .ok_or_else(|| "the ledger lost track of an event".to_string());
        let _ = self.reply.send(outcomes);
    }
}

/// Group commit without a timer: `first` and whatever queued up while the previous
/// transaction was in flight. A lone submitter pays one commit, no waiting; under load,
/// batches grow by themselves.
fn gather(first: Item, rx: &mut mpsc::Receiver<Item>) -> Vec<Submission> {
    let (events, work, close, reply) = first;
    let mut size = events.len();
    let mut group = vec![Submission::new(events, work, close, reply)];
    while size < MAX_GROUP && group.len() < MAX_GROUP_CALLS {
        match rx.try_recv() {
            Ok((events, work, close, reply)) => {
                size += events.len();
                group.push(Submission::new(events, work, close, reply));
            }
            Err(_) => break,
        }
    }
    group
}

/// Submissions queued for the writer before senders wait.
const QUEUE: usize = 4_096;

/// Writes groups, each in one transaction of its own.
trait GroupWriter {
    fn write(&mut self, group: &[Submission]) -> impl Future<Output = Result<Vec<Written>, StoreError>>;
}

/// Through the sqlx pool (PostgreSQL; SQLite without a file).
struct PoolWriter(Store);

impl GroupWriter for PoolWriter {
    async fn write(&mut self, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.0.begin_write().await?;
        let written = write_group(&mut tx, group).await?;
        tx.commit().await.map_err(ctx("commit usage"))?;
        Ok(written)
    }
}

/// On a rusqlite connection of the ledger's own, on the ledger's thread: a group's
/// statements run there, without sqlx's per-statement hand-over to a worker thread.
struct SqliteWriter {
    conn: rusqlite::Connection,
    /// This process's turns at the writer lock (`Store::write_turn`).
    turns: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long the ledger's connection waits for another writer (an API write, another
/// process): as long as the pool's connections do.
const WRITER_BUSY_MS: u64 = 5_000;

impl SqliteWriter {
    fn open(file: &std::path::Path, turns: std::sync::Arc<tokio::sync::Mutex<()>>) -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_millis(WRITER_BUSY_MS))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Durable before the answer: every commit syncs the WAL (what sqlx's connections
        // use too, SQLite's default).
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The group write's statements differ only in their row counts: room for the
        // common ones (a statement missing from the cache is prepared again, nothing more).
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Self { conn, turns })
    }

    /// Rolls back a transaction left open (a failed `ROLLBACK`, a group dropped), so the
    /// connection never keeps SQLite's writer lock past its group.
    fn end_open_transaction(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.run("ROLLBACK", "roll back a transaction left open")
        {
            tracing::error!(error = %e, "the ledger could not end a transaction left open");
        }
    }

    fn run(&self, sql: &str, what: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(|e| StoreError { action: what.into(), source: as_sqlx(e) })
    }
}

impl GroupWriter for SqliteWriter {
    async fn write(&mut self, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
        // `BEGIN IMMEDIATE`, as `Store::begin_write`: the writer lock first, in its turn
        // (this thread blocks for it: nothing else runs here).
        self.end_open_transaction();
        {
            let _turn = self.turns.blocking_lock();
            self.run("BEGIN IMMEDIATE", "begin")?;
        }
        let written = write_group(&mut SqliteWriteTx { conn: &self.conn }, group).await;
        let committed = written.and_then(|written| self.run("COMMIT", "commit usage").map(|()| written));
        if committed.is_err()
            && !self.conn.is_autocommit()
            && let Err(e) = self.run("ROLLBACK", "roll back usage")
        {
            tracing::error!(error = %e, "the ledger could not roll back a failed group");
        }
        committed
    }
}

/// Writes a group in one transaction. If it fails, each submitter is written again in a
/// transaction of its own, so only the one whose work the database refuses gets the
/// error (re-writing is safe: the failed transaction wrote nothing, and the key makes an
/// event that did land a duplicate).
async fn commit_group(writer: &mut impl GroupWriter, mut group: Vec<Submission>) {
    // Calls in scope order: every group takes its row locks in the same order, so two
    // replicas' groups never wait on each other in a cycle.
    group.sort_by(|a, b| {
        a.scope().map(|s| (&s.tenant, &s.installation)).cmp(&b.scope().map(|s| (&s.tenant, &s.installation)))
    });
    let started = std::time::Instant::now();
    let result = writer.write(&group).await;
    match result {
        Ok(written) => {
            metrics::histogram!("kiosk_ledger_commit_seconds").record(started.elapsed().as_secs_f64());
            count_recorded(&group, &written);
            for (submission, written) in group.into_iter().zip(written) {
                submission.answer(written);
            }
        }
        Err(e) if group.len() == 1 => {
            tracing::error!(error = %e, "ledger commit failed; nothing in it was recorded");
            for submission in group {
                let _ = submission.reply.send(Err(e.to_string()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, submitters = group.len(), "ledger group commit failed; writing each submitter alone");
            for submission in group {
                match writer.write(std::slice::from_ref(&submission)).await {
                    Ok(mut written) => {
                        count_recorded(std::slice::from_ref(&submission), &written);
                        submission.answer(written.pop().unwrap_or(Ok(Vec::new())))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "ledger commit failed; nothing of this submitter was recorded");
                        let _ = submission.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}

/// The metrics of a committed group: its size and the events newly recorded per source.
fn count_recorded(group: &[Submission], written: &[Written]) {
    let mut size = 0;
    for (submission, written) in group.iter().zip(written) {
        let Ok(outcomes) = written else { continue };
        size += outcomes.len();
        for (e, outcome) in submission.writable().zip(outcomes) {
            if matches!(outcome, Recorded::Recorded) {
                metrics::counter!("kiosk_usage_events_total", "source" => e.source.as_str()).increment(1);
            }
        }
    }
    metrics::histogram!("kiosk_ledger_batch_size").record(size as f64);
}

/// One transaction's statements for `group`, a few whatever its size: per scope, the
/// key-value changes of its calls in order (`kv_apply_many`: a call over the quota is
/// refused and nothing of it is written); per installation, the lines of the calls kept
/// (`append_logs_tx`); then every kept event in multi-row inserts. The caller begins and
/// commits the transaction.
async fn write_group(tx: &mut impl WriteTx, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
    let mut refused: Vec<Option<u64>> = vec![None; group.len()];
    // The group is in scope order, so these maps visit scopes in lock order too.
    let mut by_scope: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, submission) in group.iter().enumerate() {
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
    let mut by_log: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, submission) in group.iter().enumerate() {
        if let Some(CallWork { scope, lines: Some(_), .. }) = &submission.work
            && refused[i].is_none()
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
    for close in group.iter().filter_map(|s| s.close.as_ref()) {
        close_window_tx(tx, close).await?;
    }
    Ok(group
        .iter()
        .zip(refused)
        .map(|(submission, refused)| match refused {
            Some(quota) => Err(quota),
            None => Ok(outcomes.by_ref().take(submission.writable().count()).collect()),
        })
        .collect())
}

/// Inserts `events` (multi-row, `ON CONFLICT DO NOTHING … RETURNING` the keys that were
/// new) and reads back the quantity of every key that was already there: recorded,
/// duplicate or conflict per event, in order. An event whose key came earlier in the same
/// group is a duplicate (or conflict) of that one, as if written after it.
async fn record_events(tx: &mut impl WriteTx, events: &[&UsageEvent]) -> Result<Vec<Recorded>, StoreError> {
    let now = now_ms() as i64;
    let mut inserted: HashSet<(&str, &str)> = HashSet::new();
    for chunk in events.chunks(USAGE_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO usage_events (source, idem_key, tenant, installation, app, version, sku, quantity, at_ms, recorded_ms) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p = i * 10;
            sql.push('(');
            sql.push_str(&(1..=10).map(|k| format!("${}", p + k)).collect::<Vec<_>>().join(", "));
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (source, idem_key) DO NOTHING RETURNING source, idem_key");
        let args: Vec<Arg<'_>> = chunk
            .iter()
            .flat_map(|e| {
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

/// The runtime's metering sink on top of the ledger: `submit` returns after the commit,
/// so a call's answer is sent only once its usage is durable.
#[derive(Debug, Clone)]
pub struct LedgerSink {
    pub ledger: Ledger,
}

fn sink_outcome(o: Recorded) -> SinkOutcome {
    match o {
        Recorded::Recorded => SinkOutcome::Stored,
        Recorded::Duplicate => SinkOutcome::Duplicate,
        Recorded::Conflict { recorded_quantity } => {
            SinkOutcome::Refused(format!("idempotency key already recorded with quantity {recorded_quantity}"))
        }
        Recorded::Refused { reason } => SinkOutcome::Refused(reason.to_string()),
    }
}

#[async_trait::async_trait]
impl MeteringSink for LedgerSink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        let outcomes = self.ledger.record(events.to_vec()).await.map_err(|e| {
            tracing::error!(error = %e, "the ledger failed to record a call's usage");
            MeteringSinkError("the usage ledger is unavailable; see the server log".into())
        })?;
        Ok(outcomes.into_iter().map(sink_outcome).collect())
    }
}

/// The runtime's committer on top of the ledger: a call's key-value changes, usage and
/// lines in one group-committed transaction, durable before the call's answer is sent.
#[derive(Debug, Clone)]
pub struct LedgerCommitter {
    pub ledger: Ledger,
    /// How much of each installation's log is kept.
    pub logs: LogBounds,
}

#[async_trait::async_trait]
impl CallCommitter for LedgerCommitter {
    async fn commit(&self, effects: CallEffects) -> Result<Vec<SinkOutcome>, CommitError> {
        let scope = effects.scope.clone();
        match self.ledger.commit_call(effects, self.logs).await {
            Ok(Ok(outcomes)) => Ok(outcomes.into_iter().map(sink_outcome).collect()),
            Ok(Err(quota)) => Err(CommitError::Kv(KvStoreError::QuotaExceeded {
                tenant: scope.tenant,
                installation: scope.installation,
                quota,
            })),
            Err(e) => {
                tracing::error!(error = %e, "the ledger failed to commit a call's effects");
                Err(CommitError::Unavailable("the database did not commit the call; see the server log".into()))
            }
        }
    }
}

/// One stored event, for reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredUsage {
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub sku: String,
    pub quantity: i64,
    pub at_ms: i64,
    pub source: UsageSource,
}

/// Events with `from <= at_ms < to`, optionally of one tenant or of one partner's apps.
pub async fn usage_between(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    tenant: Option<&str>,
    partner: Option<&str>,
) -> Result<Vec<StoredUsage>, StoreError> {
    let err = |source| StoreError { action: "read usage".into(), source };
    let rows = sqlx::query(
        "SELECT tenant, app, version, sku, quantity, at_ms, source FROM usage_events
         WHERE at_ms >= $1 AND at_ms < $2 AND ($3 = '' OR tenant = $3) AND ($4 = '' OR app LIKE $5)
         ORDER BY at_ms",
    )
    .bind(from_ms)
    .bind(to_ms)
    .bind(tenant.unwrap_or(""))
    .bind(partner.unwrap_or(""))
    .bind(format!("{}/%", partner.unwrap_or("")))
    .fetch_all(store.pool())
    .await
    .map_err(err)?;
    rows.iter()
        .map(|r| {
            Ok(StoredUsage {
                tenant: r.try_get("tenant")?,
                app: r.try_get("app")?,
                version: r.try_get("version")?,
                sku: r.try_get("sku")?,
                quantity: r.try_get("quantity")?,
                at_ms: r.try_get("at_ms")?,
                source: {
                    let name: String = r.try_get("source")?;
                    UsageSource::parse(&name).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown usage source {name:?} in usage_events").into())
                    })?
                },
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(err)
}
