//! The metering ledger: usage events stored once per (source, idempotency key), durable
//! before they are acknowledged, with group commit: the events of all submitters that
//! queued up while the previous transaction was being written go into the next one, and
//! each submitter is answered only after that transaction committed.
//!
//! `mod.rs` holds the handle (`Ledger`) and what a submitter sees; `writer` gathers
//! and commits groups, `group` writes one group's statements, `sinks` plugs the ledger
//! into the runtime, and `reads` reads stored usage back.

use kiosk_domain::effects::{CallEffects, CallLines, KvWrite};
use kiosk_domain::kv::{KvScope, QuotaHit};
use kiosk_domain::metering::UsageEvent;
use tokio::sync::{mpsc, oneshot};

use crate::idempotency::{KeyedAnswer, StoredAnswer};
use crate::logs::LogBounds;
use crate::usage::WindowClose;
use crate::write;
use crate::{Store, StoreError};
use writer::{Faulty, PoolWriter, SqliteWriter, commit_group, gather};

pub use writer::LedgerFaults;

mod checkpoint;
mod group;
mod reads;
mod sinks;
mod writer;

pub use reads::{StoredUsage, usage_between};
pub use sinks::{LedgerCommitter, LedgerSink};

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
type Written = Result<Vec<Recorded>, QuotaHit>;

impl LedgerError {
    /// As a store error (a writer that is gone reads as a closed pool).
    pub fn into_store(self) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Closed => StoreError { action: "the ledger's writer".into(), source: sqlx::Error::PoolClosed },
        }
    }
}

type Reply = oneshot::Sender<Result<Written, WriteFailure>>;

/// Why the writer could not write a submission: its text (for the server log) and
/// whether the database was out of reach (`StoreError::is_unavailable`), which the
/// submitter's caller answers as 503 with `Retry-After` rather than 500.
#[derive(Debug)]
pub(super) struct WriteFailure {
    message: String,
    unavailable: bool,
}

impl WriteFailure {
    pub(super) fn of(e: &StoreError) -> Self {
        Self { message: e.to_string(), unavailable: e.is_unavailable() }
    }
}

/// A call's key-value changes and lines, written with its usage.
#[derive(Debug)]
struct CallWork {
    /// Applied at most once (`applied_calls`).
    call_id: String,
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
        Self::start_faulty(store, None)
    }

    /// `start`, its writer failing as `faults` says (tests of the retry paths).
    #[cfg(feature = "testing")]
    pub fn start_with_faults(store: Store, faults: std::sync::Arc<LedgerFaults>) -> Self {
        Self::start_faulty(store, Some(faults))
    }

    fn start_faulty(store: Store, faults: Option<std::sync::Arc<LedgerFaults>>) -> Self {
        if let Some(file) = store.sqlite_file() {
            match SqliteWriter::open(file, store.write_turns()) {
                Ok(writer) => {
                    // Most of each checkpoint's copying off this thread (`checkpoint`).
                    let checkpointer = checkpoint::Checkpointer::start(file);
                    let mut writer = Faulty { inner: writer, faults: faults.clone() };
                    let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
                    let spawned = std::thread::Builder::new().name("kiosk-ledger".into()).spawn(move || {
                        // Stops the checkpointer when the writer ends.
                        let _checkpointer = checkpointer;
                        while let Some(first) = rx.blocking_recv() {
                            let group = gather(first, &mut rx);
                            // `SqliteWriter` never suspends, so one poll writes the group.
                            if write::poll_once(commit_group(&mut writer, group)).is_none() {
                                tracing::error!("the ledger's SQLite writer suspended; its group was dropped");
                                writer.inner.end_open_transaction();
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
        let mut writer = Faulty { inner: PoolWriter(store), faults };
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
        let work = CallWork {
            call_id: effects.call_id,
            scope: effects.scope,
            kv: effects.kv,
            lines: effects.lines.map(|l| (l, logs)),
        };
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
            // The writer's failure keeps its kind: out of reach reads as an I/O error.
            Ok(Err(WriteFailure { message, unavailable })) => Err(LedgerError::Store(StoreError {
                action: "group commit".into(),
                source: if unavailable {
                    sqlx::Error::Io(std::io::Error::other(message))
                } else {
                    sqlx::Error::Protocol(message)
                },
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
            .ok_or_else(|| WriteFailure { message: "the ledger lost track of an event".into(), unavailable: false });
        let _ = self.reply.send(outcomes);
    }
}

/// Submissions queued for the writer before senders wait.
const QUEUE: usize = 4_096;

/// How long a call's id stays in `applied_calls`: a submitter is written again within
/// seconds of its failed group, so an hour is ample.
pub const APPLIED_CALLS_RETENTION_MS: i64 = 60 * 60 * 1000;

impl Store {
    /// Forgets the ids of calls applied before `before_ms` (`applied_calls`); how many.
    pub async fn forget_applied_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM applied_calls WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(crate::ctx("forget applied calls"))?;
        Ok(done.rows_affected())
    }
}

/// Lifecycle hooks' effects (held by the runtime: `Installation::holding_effects`),
/// written in the transaction that writes the installation's row.
#[derive(Debug, Clone, Copy)]
pub struct HookEffects<'a> {
    pub calls: &'a [CallEffects],
    pub logs: LogBounds,
    /// A client's idempotency key and the answer to keep with the effects, if it sent one.
    pub keyed: Option<KeyedAnswer<'a>>,
}

impl<'a> HookEffects<'a> {
    /// No hook effects.
    pub fn none() -> Self {
        HookEffects { calls: &[], logs: LogBounds { max_lines: 0, max_bytes: 0 }, keyed: None }
    }

    /// `calls`' effects, their lines kept within `logs`.
    pub fn of(calls: &'a [CallEffects], logs: LogBounds) -> Self {
        HookEffects { calls, logs, keyed: None }
    }

    /// With a client's key and answer (`Store::record_keyed_call`, keyed installs).
    pub fn keyed(self, keyed: Option<KeyedAnswer<'a>>) -> Self {
        HookEffects { keyed, ..self }
    }
}

/// Why held effects were not written (the caller rolls back: nothing of them is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldRefused {
    /// A call's key-value changes would pass this quota.
    Quota(QuotaHit),
    /// Another request with the client's key committed first: its answer.
    KeyUsed(Box<StoredAnswer>),
}

/// Writes `held` inside `tx` as the ledger writes a group (each call at most once, its
/// key-value changes within its quota, its usage and lines), and the client's key with
/// its answer first; `Err` if the key was used or a call's changes would pass its quota —
/// the caller rolls back, so nothing of any is kept.
pub(crate) async fn write_held(
    tx: &mut crate::WriteTransaction,
    held: HookEffects<'_>,
) -> Result<Result<(), HeldRefused>, StoreError> {
    if let Some(keyed) = held.keyed
        && let Some(used) = crate::idempotency::keep_answer(tx, keyed).await?
    {
        return Ok(Err(HeldRefused::KeyUsed(Box::new(used))));
    }
    if held.calls.is_empty() {
        return Ok(Ok(()));
    }
    let group: Vec<Submission> = held
        .calls
        .iter()
        .cloned()
        .map(|effects| {
            let work = CallWork {
                call_id: effects.call_id,
                scope: effects.scope,
                kv: effects.kv,
                lines: effects.lines.map(|l| (l, held.logs)),
            };
            // Nobody waits on this answer: the writes' verdicts come back here.
            Submission::new(effects.usage, Some(work), None, oneshot::channel().0)
        })
        .collect();
    for written in group::write_group(tx, &group).await? {
        if let Err(quota) = written {
            return Ok(Err(HeldRefused::Quota(quota)));
        }
    }
    Ok(Ok(()))
}
