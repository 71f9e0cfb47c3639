//! Most of the SQLite file's WAL checkpointing, off the ledger's writer thread.
//!
//! Why: SQLite checkpoints automatically inside the `COMMIT` that takes the WAL past
//! 1,000 pages, on the committing connection — under load, the ledger's writer: it copies
//! the WAL's new pages into the database file and syncs it, and every call waiting for its
//! group's commit waits for that too. A thread of its own runs a `PASSIVE` checkpoint every
//! `EVERY`, which takes no writer lock: the ledger goes on appending meanwhile, and when
//! its automatic checkpoint comes, only the pages appended since are left to copy.
//!
//! The automatic checkpoint stays on the writer: the WAL starts over only at a write
//! transaction's start after a checkpoint that copied every frame, which a checkpoint
//! running beside the writer never does under load (measured: the WAL grew to 160 MB
//! with the ledger's automatic checkpoint off).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How often the WAL is checkpointed beside the writer: at the ledger's highest rates a
/// few thousand pages are appended a second, so the writer's own checkpoint at SQLite's
/// 1,000-page mark finds a few hundred left.
const EVERY: Duration = Duration::from_millis(200);

/// How long a checkpoint waits for a lock another connection holds (a `RESTART` or
/// `TRUNCATE` checkpoint of another process, a WAL recovery): it is tried again later.
const BUSY_MS: u64 = 100;

/// The checkpointer of a SQLite file; it stops when the handle is dropped (with the
/// ledger's writer thread that holds it). Without it the writer checkpoints alone.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing `file` every `EVERY` on a thread of its own. `None` (logged)
    /// if the thread or its connection cannot be had.
    pub(super) fn start(file: &std::path::Path) -> Option<Self> {
        let conn = match rusqlite::Connection::open_with_flags(
            file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| conn.busy_timeout(Duration::from_millis(BUSY_MS)).map(|()| conn))
        {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "the WAL checkpointer could not open the database: the ledger checkpoints alone");
                return None;
            }
        };
        let (stop, stopped) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("kiosk-checkpoint".into()).spawn(move || run(&conn, &stopped));
        match spawned {
            Ok(_) => Some(Self { _stop: stop }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the WAL checkpointer: the ledger checkpoints alone");
                None
            }
        }
    }
}

fn run(conn: &rusqlite::Connection, stopped: &Receiver<()>) {
    loop {
        match stopped.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let started = std::time::Instant::now();
        // (busy, WAL frames, frames checkpointed); a busy checkpoint is tried next time.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((_, frames, done)) => {
                metrics::histogram!("kiosk_sqlite_checkpoint_seconds").record(started.elapsed().as_secs_f64());
                metrics::gauge!("kiosk_sqlite_wal_frames").set(frames.max(0) as f64);
                tracing::trace!(frames, done, "WAL checkpoint");
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; tried again later"),
        }
    }
}
