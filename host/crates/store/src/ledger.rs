//! The metering ledger: usage events stored once per (source, idempotency key), durable
//! before they are acknowledged, with group commit: the events of all submitters that
//! queued up while the previous transaction was being written go into the next one, and
//! each submitter is answered only after that transaction committed.

use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError};
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

type Reply = oneshot::Sender<Result<Vec<Recorded>, String>>;

/// Handle to the group-commit writer.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<(Vec<UsageEvent>, Reply)>,
}

/// Most events in one transaction.
const MAX_GROUP: usize = 2_000;

/// The quantity of a stored row. Quantities are bound as `i64` and are at most 2^53 − 1
/// since the ledger refuses more; a row written before that check holds the bits of the
/// `u64` that was submitted, and reads back as that `u64` (never negative).
pub fn stored_quantity(column: i64) -> u64 {
    column as u64
}

impl Ledger {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Vec<UsageEvent>, Reply)>(4_096);
        tokio::spawn(async move {
            while let Some((events, reply)) = rx.recv().await {
                // Group commit without a timer: take whatever queued up while the previous
                // transaction was in flight. A lone submitter pays one commit, no waiting;
                // under load, batches grow by themselves.
                let mut size = events.len();
                let mut group = vec![Submission::new(events, reply)];
                while size < MAX_GROUP {
                    match rx.try_recv() {
                        Ok((events, reply)) => {
                            size += events.len();
                            group.push(Submission::new(events, reply));
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&store, group).await;
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
        let (reply, answer) = oneshot::channel();
        self.tx.send((events, reply)).await.map_err(|_| LedgerError::Closed)?;
        match answer.await {
            Ok(Ok(outcomes)) => Ok(outcomes),
            Ok(Err(message)) => Err(LedgerError::Store(StoreError {
                action: "group commit".into(),
                source: sqlx::Error::Protocol(message),
            })),
            Err(_) => Err(LedgerError::Closed),
        }
    }
}

/// One submitter's events in a group: those the ledger refused up front are answered
/// without being written.
struct Submission {
    events: Vec<UsageEvent>,
    refused: Vec<Option<Refusal>>,
    reply: Reply,
}

impl Submission {
    fn new(events: Vec<UsageEvent>, reply: Reply) -> Self {
        let refused = events.iter().map(refusal).collect();
        Self { events, refused, reply }
    }

    fn writable(&self) -> impl Iterator<Item = &UsageEvent> {
        self.events.iter().zip(&self.refused).filter(|(_, r)| r.is_none()).map(|(e, _)| e)
    }

    /// Answers with `written` (the outcomes of `writable`, in order) and the refusals.
    fn answer(self, written: Vec<Recorded>) {
        let mut written = written.into_iter();
        let outcomes = self
            .refused
            .into_iter()
            .map(|r| match r {
                Some(reason) => Some(Recorded::Refused { reason }),
                None => written.next(),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "the ledger lost track of an event".to_string());
        let _ = self.reply.send(outcomes);
    }
}

/// Writes a group in one transaction. If it fails, each submitter is written again in a
/// transaction of its own, so only the one whose events the database refuses gets the
/// error (re-writing is safe: the key makes an event that did land a duplicate).
async fn commit_group(store: &Store, group: Vec<Submission>) {
    let all: Vec<&UsageEvent> = group.iter().flat_map(Submission::writable).collect();
    let result = if all.is_empty() { Ok(Vec::new()) } else { write_group(store, &all).await };
    drop(all);
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for submission in group {
                let mine = outcomes.by_ref().take(submission.writable().count()).collect();
                submission.answer(mine);
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
                let mine: Vec<&UsageEvent> = submission.writable().collect();
                let result = if mine.is_empty() { Ok(Vec::new()) } else { write_group(store, &mine).await };
                drop(mine);
                match result {
                    Ok(outcomes) => submission.answer(outcomes),
                    Err(e) => {
                        tracing::error!(error = %e, "ledger commit failed; nothing of this submitter was recorded");
                        let _ = submission.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}

async fn write_group(store: &Store, events: &[&UsageEvent]) -> Result<Vec<Recorded>, StoreError> {
    let err = |action: &'static str| move |source| StoreError { action: action.into(), source };
    let mut tx = store.pool().begin().await.map_err(err("begin"))?;
    let now = now_ms() as i64;
    let mut outcomes = Vec::with_capacity(events.len());
    for e in events {
        let inserted = sqlx::query(
            "INSERT INTO usage_events (source, idem_key, tenant, installation, app, version, sku, quantity, at_ms, recorded_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (source, idem_key) DO NOTHING",
        )
        .bind(e.source.as_str())
        .bind(&e.idempotency_key)
        .bind(&e.tenant)
        .bind(&e.installation)
        .bind(&e.app)
        .bind(&e.version)
        .bind(&e.sku)
        // Both fit: `refusal` passed (quantity <= 2^53 - 1, at_ms <= i64::MAX).
        .bind(e.quantity as i64)
        .bind(e.at_ms as i64)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err("record usage"))?;
        if inserted.rows_affected() == 1 {
            outcomes.push(Recorded::Recorded);
            continue;
        }
        let row = sqlx::query("SELECT quantity FROM usage_events WHERE source = $1 AND idem_key = $2")
            .bind(e.source.as_str())
            .bind(&e.idempotency_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(err("read recorded usage"))?;
        let recorded = stored_quantity(row.try_get("quantity").map_err(err("read recorded usage"))?);
        outcomes.push(if recorded == e.quantity {
            Recorded::Duplicate
        } else {
            Recorded::Conflict { recorded_quantity: recorded }
        });
    }
    tx.commit().await.map_err(err("commit usage"))?;
    Ok(outcomes)
}

/// The runtime's metering sink on top of the ledger: `submit` returns after the commit,
/// so a call's answer is sent only once its usage is durable.
#[derive(Debug, Clone)]
pub struct LedgerSink {
    pub ledger: Ledger,
}

#[async_trait::async_trait]
impl MeteringSink for LedgerSink {
    async fn submit(&self, events: &[UsageEvent]) -> Result<Vec<SinkOutcome>, MeteringSinkError> {
        let outcomes = self.ledger.record(events.to_vec()).await.map_err(|e| {
            tracing::error!(error = %e, "the ledger failed to record a call's usage");
            MeteringSinkError("the usage ledger is unavailable; see the server log".into())
        })?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                Recorded::Recorded => SinkOutcome::Stored,
                Recorded::Duplicate => SinkOutcome::Duplicate,
                Recorded::Conflict { recorded_quantity } => {
                    SinkOutcome::Refused(format!("idempotency key already recorded with quantity {recorded_quantity}"))
                }
                Recorded::Refused { reason } => SinkOutcome::Refused(reason.to_string()),
            })
            .collect())
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
