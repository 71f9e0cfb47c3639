//! How the ledger's writer commits: groups gathered from the queue, written in one
//! transaction by the pool (`PoolWriter`) or by the ledger's own SQLite connection on a
//! thread of its own (`SqliteWriter`), each submitter written alone if its group fails,
//! and the metrics of every committed group.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::group::write_group;
use super::{Item, MAX_GROUP, MAX_GROUP_CALLS, Recorded, Submission, Written};
use crate::sqlite_reads::as_sqlx;
use crate::write::SqliteWriteTx;
use crate::{Store, StoreError, ctx};

/// Group commit without a timer: `first` and whatever queued up while the previous
/// transaction was in flight. A lone submitter pays one commit, no waiting; under load,
/// batches grow by themselves.
pub(super) fn gather(first: Item, rx: &mut mpsc::Receiver<Item>) -> Vec<Submission> {
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

/// Writes groups, each in one transaction of its own.
pub(super) trait GroupWriter {
    fn write(&mut self, group: &[Submission]) -> impl Future<Output = Result<Vec<Written>, StoreError>>;
}

/// Through the sqlx pool (PostgreSQL; SQLite without a file).
pub(super) struct PoolWriter(pub(super) Store);

impl GroupWriter for PoolWriter {
    async fn write(&mut self, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.0.begin_transaction().await?;
        let written = write_group(&mut tx, group).await?;
        tx.commit().await.map_err(ctx("commit usage"))?;
        Ok(written)
    }
}

/// On a rusqlite connection of the ledger's own, on the ledger's thread: a group's
/// statements run there, without sqlx's per-statement hand-over to a worker thread.
pub(super) struct SqliteWriter {
    conn: rusqlite::Connection,
    /// This process's turns at the writer lock (`Store::write_turn`).
    turns: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long the ledger's connection waits for another writer (an API write, another
/// process): as long as the pool's connections do.
const WRITER_BUSY_MS: u64 = 5_000;

impl SqliteWriter {
    pub(super) fn open(
        file: &std::path::Path,
        turns: std::sync::Arc<tokio::sync::Mutex<()>>,
    ) -> rusqlite::Result<Self> {
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
    pub(super) fn end_open_transaction(&self) {
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

/// Failures a test asks the ledger's writer to have (`Ledger::start_with_faults`): the
/// next `fail_groups` writes fail before their `COMMIT` (nothing written), the next
/// `lose_replies` writes commit and then fail as if the reply to `COMMIT` was lost.
#[derive(Debug, Default)]
pub struct LedgerFaults {
    pub fail_groups: AtomicUsize,
    pub lose_replies: AtomicUsize,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// A writer with the faults a test injects (none in production: `faults` is `None`).
pub(super) struct Faulty<W> {
    pub(super) inner: W,
    pub(super) faults: Option<Arc<LedgerFaults>>,
}

impl<W: GroupWriter> GroupWriter for Faulty<W> {
    async fn write(&mut self, group: &[Submission]) -> Result<Vec<Written>, StoreError> {
        let Some(faults) = self.faults.clone() else { return self.inner.write(group).await };
        let injected =
            |what: &str| StoreError { action: what.into(), source: sqlx::Error::Protocol("injected".into()) };
        if take_one(&faults.fail_groups) {
            return Err(injected("the group failed before its COMMIT (injected)"));
        }
        let written = self.inner.write(group).await?;
        if take_one(&faults.lose_replies) {
            drop(written);
            return Err(injected("the reply to COMMIT was lost (injected)"));
        }
        Ok(written)
    }
}

/// Writes a group in one transaction. If it fails, each submitter (a lone one too) is
/// written again in a transaction of its own, so only the one whose work the database
/// refuses gets the error. Re-writing is safe even when the failed transaction did commit and only its
/// reply was lost: the key makes an event that landed a duplicate, and a call whose id
/// is in `applied_calls` has its key-value changes and lines skipped.
pub(super) async fn commit_group(writer: &mut impl GroupWriter, mut group: Vec<Submission>) {
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
        Err(e) => {
            // A lone submitter is written again too: if only the reply to COMMIT was lost,
            // the retry finds its effects applied and answers it as it should have been.
            tracing::warn!(error = %e, submitters = group.len(), "ledger group commit failed; writing each submitter alone");
            for submission in group {
                match writer.write(std::slice::from_ref(&submission)).await {
                    Ok(mut written) => {
                        count_recorded(std::slice::from_ref(&submission), &written);
                        submission.answer(written.pop().unwrap_or(Ok(Vec::new())))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "ledger commit failed; nothing of this submitter was recorded");
                        let _ = submission.reply.send(Err(super::WriteFailure::of(&e)));
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
