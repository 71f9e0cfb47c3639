//! The three reads every call makes on SQLite (its token, its context, its key-value
//! snapshot), run inline on the calling thread on a connection of their own.
//!
//! Why: sqlx's SQLite driver runs each connection on a worker thread and hands every
//! statement and every row over a channel, so each read costs two thread switches or
//! more. At 16 connections the server spent 44% of its samples in those workers and
//! 18% switching tasks, and 2% running the guest (perf, issue 12). These reads are
//! point lookups by primary key (the snapshot is bounded by the installation's
//! key-value quota), a few microseconds on a warm page cache, so they run where the
//! request runs, like the JSON parsing beside them. Writes are the ledger's (its own
//! rusqlite connection, `ledger::writer::SqliteWriter`) or sqlx's. WAL mode lets these readers run beside the writer; each
//! statement reads the newest committed state, so a revocation or suspension holds from
//! the next call, as before.
//!
//! A connection is `query_only` and waits at most `BUSY_MS` for a lock; any failure
//! here falls back to the same read through sqlx (`Store::read_inline`), which waits
//! longer. Statements are sqlx's text; their `$n` parameters are bound by name. PostgreSQL and in-memory SQLite databases have no reader.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long an inline read waits for a lock before giving the read to sqlx: a WAL
/// reader waits only while another connection recovers the WAL index, which is rare
/// and short.
const BUSY_MS: u64 = 50;
/// Idle connections kept: one per thread that reads at once is enough (reads never
/// hold one across an await), more only costs memory.
const MAX_IDLE: usize = 8;

#[derive(Debug)]
pub(crate) struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// A reader of the database file at `path` (already migrated by sqlx).
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let reader = Self { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) };
        let first = reader.connect()?;
        reader.idle.lock().unwrap_or_else(|p| p.into_inner()).push(first);
        Ok(reader)
    }

    /// The database file it reads.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_MS))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one) and gives the connection back.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let out = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        out
    }
}

/// A column read by name, from either driver's row.
pub(crate) trait Columns {
    fn text(&self, name: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, name: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, name: &str) -> Result<Vec<u8>, sqlx::Error>;
}

impl Columns for sqlx::any::AnyRow {
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        self.get(name).map_err(as_sqlx)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(name).map_err(as_sqlx)
    }
    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.get(name).map_err(as_sqlx)
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        self.get(name).map_err(as_sqlx)
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.get(name).map_err(as_sqlx)
    }
}

/// A rusqlite failure in the store's error type (logged by the caller, never shown).
pub(crate) fn as_sqlx(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_commit_of_another_connection_and_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("kiosk-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.db");
        let _ = std::fs::remove_file(&path);
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "wal").unwrap();
        writer.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").unwrap();
        let reader = SqliteReader::open(&path).unwrap();
        let count =
            |r: &SqliteReader| r.read(|c| c.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0)));
        assert_eq!(count(&reader).unwrap(), 0);
        writer.execute("INSERT INTO t VALUES ('a', 1)", []).unwrap();
        assert_eq!(count(&reader).unwrap(), 1, "the next read sees the commit");
        let refused = reader.read(|c| c.execute("INSERT INTO t VALUES ('b', 2)", []));
        assert!(refused.is_err(), "a reader's connection is query-only");
        assert_eq!(count(&reader).unwrap(), 1);
        // sqlx's `$n` parameters, bound by name, whatever order they appear in.
        let bound = reader.read(|c| {
            c.query_row(
                "SELECT v FROM t WHERE v = $2 AND k = $1",
                rusqlite::named_params! {"$1": "a", "$2": 1},
                |row| row.get::<_, i64>(0),
            )
        });
        assert_eq!(bound.unwrap(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
