//! Key-value snapshots read together on PostgreSQL: the snapshots that calls ask for
//! while earlier reads are in flight go out in one statement, as the ledger's group
//! commit does for writes.
//!
//! Why: every call reads its installation's key-value snapshot before it runs, and on
//! PostgreSQL that read was nearly half of the statements the database ran per call
//! (`log_statement` over a bench run: 7,091 snapshot reads beside 582 group commits of
//! ~16 statements), each a round trip that costs PostgreSQL more in wake-ups and socket
//! work than in the read itself. No timer: a lone read goes out at once; under load,
//! batches grow by themselves.
//!
//! What it must keep: a snapshot is read by a statement that starts after the call asked
//! for it, so it holds every commit answered before the call began (the same as a read of
//! its own). Deliberately absent: a cache of snapshots — calls change them, and a call
//! behind a load balancer must see what its previous call wrote on another replica.

use std::collections::HashMap;

use kiosk_domain::kv::{KvEntries, KvScope};
use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Scopes per statement (two parameters each).
const MAX_BATCH: usize = 64;
/// How long a batch's statement may take before its callers get a 503 to retry: far
/// beyond a healthy read (milliseconds), short enough that a stalled connection (a
/// half-open socket after a failover) does not hold every call's snapshot behind it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Reads waiting for a batch; a full queue makes callers wait their turn.
const QUEUE: usize = 4_096;

type Reply = oneshot::Sender<Result<KvEntries, StoreError>>;

/// The handle calls read through (`Store::kv_load` on PostgreSQL).
#[derive(Debug, Clone)]
pub(crate) struct KvBatcher {
    tx: mpsc::Sender<(KvScope, Reply)>,
}

impl KvBatcher {
    /// Starts the batching task on the current runtime; it ends when every handle is
    /// dropped.
    pub(crate) fn start(pool: sqlx::AnyPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    pub(crate) async fn load(&self, scope: &KvScope) -> Result<KvEntries, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError { action: "read key-value data".into(), source: sqlx::Error::PoolClosed };
        self.tx.send((scope.clone(), reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Answers batches one at a time: reads that arrive while one is in flight gather into the
/// next. Measured at 16 connections (this 2-core machine, same runs): with four batches in
/// flight every batch held one scope and nothing changed; with one, PostgreSQL's CPU per
/// call went from 410–431 to 321–384 µs and the rate up 5–20%. A lone read goes at once.
async fn run(pool: sqlx::AnyPool, mut rx: mpsc::Receiver<(KvScope, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        answer(&pool, batch).await;
    }
}

/// Reads the batch's scopes in one statement and answers each caller with its own.
async fn answer(pool: &sqlx::AnyPool, batch: Vec<(KvScope, Reply)>) {
    let mut scopes: Vec<&KvScope> = Vec::new();
    for (scope, _) in &batch {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let pairs: Vec<String> = (0..scopes.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
    let sql = format!(
        "SELECT tenant, installation, key, value FROM kv WHERE (tenant, installation) IN ({})",
        pairs.join(", ")
    );
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        crate::read_once_more("read key-value data", || {
            scopes
                .iter()
                .fold(sqlx::query(&sql), |q, s| q.bind(s.tenant.as_str()).bind(s.installation.as_str()))
                .fetch_all(pool)
        }),
    )
    .await
    .unwrap_or_else(|_| {
        let late = std::io::Error::new(std::io::ErrorKind::TimedOut, "the key-value read took too long");
        Err(StoreError { action: "read key-value data".into(), source: sqlx::Error::Io(late) })
    });
    let rows = match read {
        Ok(rows) => rows,
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(shared(&e)));
            }
            return;
        }
    };
    let mut by_scope: HashMap<(String, String), KvEntries> = HashMap::new();
    for row in &rows {
        let decoded = (|| -> Result<_, sqlx::Error> {
            Ok((row.try_get("tenant")?, row.try_get("installation")?, row.try_get("key")?, row.try_get("value")?))
        })();
        match decoded {
            Ok((tenant, installation, key, value)) => {
                by_scope.entry((tenant, installation)).or_default().insert(key, value);
            }
            Err(e) => {
                let e = StoreError { action: "read key-value data".into(), source: e };
                for (_, reply) in batch {
                    let _ = reply.send(Err(shared(&e)));
                }
                return;
            }
        }
    }
    for (scope, reply) in batch {
        let key = (scope.tenant, scope.installation);
        let _ = reply.send(Ok(by_scope.get(&key).cloned().unwrap_or_default()));
    }
}

/// One failure for each of a batch's callers: the same action and text, and the same
/// answer to `is_unavailable` (503 to retry, or not).
fn shared(e: &StoreError) -> StoreError {
    let text = e.source.to_string();
    let source =
        if e.is_unavailable() { sqlx::Error::Io(std::io::Error::other(text)) } else { sqlx::Error::Protocol(text) };
    StoreError { action: e.action.clone(), source }
}
