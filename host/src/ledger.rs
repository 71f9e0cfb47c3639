//! The metering ledger: usage events stored once per (source, idempotency key), durable
//! before they are acknowledged, with group commit: the events of all submitters that
//! queued up while the previous transaction was being written go into the next one, and
//! each submitter is answered only after that transaction committed.

use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use crate::metering::{MeteringSink, MeteringSinkError, SinkOutcome, UsageEvent, UsageSource, now_ms};
use crate::store::{Store, StoreError};

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Recorded {
    /// Newly recorded.
    Recorded,
    /// The same (source, key, quantity) was recorded before: counted once.
    Duplicate,
    /// The same (source, key) was recorded with another quantity: refused.
    Conflict { recorded_quantity: u64 },
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

fn source_name(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Host => "host",
        UsageSource::Guest => "guest",
        UsageSource::Report => "report",
        UsageSource::Partner => "partner",
    }
}

impl Ledger {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Vec<UsageEvent>, Reply)>(4_096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Group commit without a timer: take whatever queued up while the previous
                // transaction was in flight. A lone submitter pays one commit, no waiting;
                // under load, batches grow by themselves.
                let mut group = vec![first];
                let mut size = group[0].0.len();
                while size < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(next) => {
                            size += next.0.len();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let events: Vec<&UsageEvent> = group.iter().flat_map(|g| g.0.iter()).collect();
                match write_group(&store, &events).await {
                    Ok(outcomes) => {
                        let mut outcomes = outcomes.into_iter();
                        for (events, reply) in group {
                            let mine = outcomes.by_ref().take(events.len()).collect();
                            let _ = reply.send(Ok(mine));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "ledger group commit failed; nothing in it was recorded");
                        for (_, reply) in group {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Records `events`; returns once they are committed (or refused as conflicts).
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
        .bind(source_name(e.source))
        .bind(&e.idempotency_key)
        .bind(&e.tenant)
        .bind(&e.installation)
        .bind(&e.app)
        .bind(&e.version)
        .bind(&e.sku)
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
            .bind(source_name(e.source))
            .bind(&e.idempotency_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(err("read recorded usage"))?;
        let recorded: i64 = row.try_get("quantity").map_err(err("read recorded usage"))?;
        outcomes.push(if recorded as u64 == e.quantity {
            Recorded::Duplicate
        } else {
            Recorded::Conflict { recorded_quantity: recorded as u64 }
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
    pub source: String,
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
                source: r.try_get("source")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(err)
}
