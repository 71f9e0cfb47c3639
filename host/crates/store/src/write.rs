//! The statements of a write transaction, on either driver: the ledger's group write
//! (key-value changes, lines, usage, window closes) is written once, over `WriteTx`,
//! and runs on a sqlx transaction (PostgreSQL, in-memory SQLite) or, on a SQLite file,
//! on the ledger's own rusqlite connection on a thread of its own (`SqliteWriteTx`).
//!
//! Why two drivers for one write: sqlx's SQLite driver runs each connection on a worker
//! thread and hands every statement and row over channels; at 16 HTTP connections those
//! workers took about a third of the server's samples, most of it the ~10 statements of
//! each group write (perf, issue 12). rusqlite runs the same statements where they are
//! called. The SQL text is shared (`$n` parameters, written `?n` on rusqlite), and so is
//! every decision made from what the statements return.
//!
//! `SqliteWriteTx`'s futures never suspend: each statement runs to completion when it is
//! polled (its thread blocks on SQLite's locks, never on the async runtime), so the
//! writer thread drives a whole group with one poll (`poll_once`).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sqlx::any::AnyRow;

use crate::StoreError;
use crate::sqlite_reads::{Columns, as_sqlx};

/// One bound parameter: the integers, text and bytes the schema stores.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    Blob(&'a [u8]),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(text: &'a String) -> Self {
        Self::Text(text)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self::Blob(bytes)
    }
}

/// A write transaction that runs statements (sqlx's text, `$n` parameters).
/// `what` names the step for the error (`StoreError::action`).
pub(crate) trait WriteTx {
    type Row: Columns;

    /// Runs a statement that returns no rows; the number of rows it changed.
    fn execute(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> impl Future<Output = Result<u64, StoreError>>;

    /// Runs a statement and returns all its rows.
    fn fetch_all(
        &mut self,
        what: &str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>>;

    /// The first row of a statement, if any.
    fn fetch_optional(
        &mut self,
        what: &str,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> {
        async move { Ok(self.fetch_all(what, sql, args).await?.into_iter().next()) }
    }
}

fn failed(what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError { action: what.to_string(), source }
}

fn bind<'q>(sql: &'q str, args: &[Arg<'q>]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Text(text) => query.bind(text),
        Arg::Int(n) => query.bind(n),
        Arg::Blob(bytes) => query.bind(bytes),
    })
}

impl WriteTx for sqlx::Transaction<'_, sqlx::Any> {
    type Row = AnyRow;

    async fn execute(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let done = bind(sql, args).execute(&mut **self).await.map_err(failed(what))?;
        Ok(done.rows_affected())
    }

    async fn fetch_all(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<Vec<AnyRow>, StoreError> {
        bind(sql, args).fetch_all(&mut **self).await.map_err(failed(what))
    }
}

impl WriteTx for crate::WriteTransaction {
    type Row = AnyRow;

    async fn execute(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.inner().execute(what, sql, args).await
    }

    async fn fetch_all(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<Vec<AnyRow>, StoreError> {
        self.inner().fetch_all(what, sql, args).await
    }
}

/// A write transaction on a rusqlite connection that has begun one (`BEGIN IMMEDIATE`).
pub(crate) struct SqliteWriteTx<'c> {
    pub conn: &'c rusqlite::Connection,
}

/// A row read on rusqlite, owned (a statement's rows borrow it).
#[derive(Debug)]
pub(crate) struct OwnedRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

impl OwnedRow {
    fn value(&self, name: &str) -> Result<&rusqlite::types::Value, sqlx::Error> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| sqlx::Error::ColumnNotFound(name.to_string()))
    }
}

fn mismatch(name: &str, wanted: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("column {name:?} is not {wanted}").into())
}

impl Columns for OwnedRow {
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        self.opt_text(name)?.ok_or_else(|| mismatch(name, "text"))
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        use rusqlite::types::Value;
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            _ => Err(mismatch(name, "text")),
        }
    }
    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.opt_int(name)?.ok_or_else(|| mismatch(name, "an integer"))
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        use rusqlite::types::Value;
        match self.value(name)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(*n)),
            _ => Err(mismatch(name, "an integer")),
        }
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>, sqlx::Error> {
        use rusqlite::types::Value;
        match self.value(name)? {
            Value::Blob(bytes) => Ok(bytes.clone()),
            _ => Err(mismatch(name, "bytes")),
        }
    }
}

impl SqliteWriteTx<'_> {
    /// `sql` prepared (from the connection's cache) with `args` bound: each `$k` in the
    /// text takes `args[k - 1]`. The text is prepared with `?k` for `$k` (SQLite's
    /// numbered parameters: `?k` is parameter `k`), so binding is by index; a `$k` stays
    /// a named parameter whose index SQLite finds by a scan of all the names, which for
    /// a multi-row insert's thousand parameters was a measurable share of the writer.
    fn prepared(&self, sql: &str, args: &[Arg<'_>]) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut statement = self.conn.prepare_cached(&numbered(sql))?;
        for index in 1..=statement.parameter_count() {
            let arg = args
                .get(index - 1)
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(format!("?{index} of {sql:?}")))?;
            match *arg {
                Arg::Text(text) => statement.raw_bind_parameter(index, text)?,
                Arg::Int(n) => statement.raw_bind_parameter(index, n)?,
                Arg::Blob(bytes) => statement.raw_bind_parameter(index, bytes)?,
            }
        }
        Ok(statement)
    }

    fn rows(&self, sql: &str, args: &[Arg<'_>]) -> rusqlite::Result<Vec<OwnedRow>> {
        let mut statement = self.prepared(sql, args)?;
        let names: Arc<[String]> = statement.column_names().into_iter().map(str::to_string).collect();
        let columns = names.len();
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns).map(|i| owned(row.get_ref(i)?)).collect::<Result<_, _>>()?;
            out.push(OwnedRow { names: names.clone(), values });
        }
        Ok(out)
    }
}

impl WriteTx for SqliteWriteTx<'_> {
    type Row = OwnedRow;

    async fn execute(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let run = || -> rusqlite::Result<usize> { self.prepared(sql, args)?.raw_execute() };
        run().map(|n| n as u64).map_err(|e| failed(what)(as_sqlx(e)))
    }

    async fn fetch_all(&mut self, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<Vec<OwnedRow>, StoreError> {
        self.rows(sql, args).map_err(|e| failed(what)(as_sqlx(e)))
    }
}

/// A column's value, owned; text that is not UTF-8 (written by something else than
/// Kiosk) is an error, as it is on sqlx, never a panic.
fn owned(value: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<rusqlite::types::Value> {
    use rusqlite::types::{Value, ValueRef};
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(bytes) => {
            Value::Text(std::str::from_utf8(bytes).map_err(rusqlite::Error::Utf8Error)?.to_owned())
        }
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    })
}

/// `sql` with each `$k` (a `$` before a digit) written `?k`. The store's statements hold
/// no `$` in literals: every value is bound.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let before_digit = chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if c == '$' && before_digit { '?' } else { c });
    }
    out
}

/// Polls `future` once: its output if it completed. A future over `SqliteWriteTx` always
/// does (see the module's note); `None` would mean one awaited something else.
pub(crate) fn poll_once<T>(future: impl Future<Output = T>) -> Option<T> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statements_run_on_rusqlite_with_dollar_parameters_in_any_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").unwrap();
        let mut tx = SqliteWriteTx { conn: &conn };
        let changed = poll_once(tx.execute(
            "insert",
            "INSERT INTO t (b, n, k) VALUES ($3, $2, $1), ($4, $2, $5)",
            &[Arg::Text("a"), Arg::Int(7), Arg::Blob(b"xy"), Arg::Blob(b""), Arg::Text("b")],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(changed, 2);
        assert_eq!(numbered("a = $1 AND b IN ($12, $3) AND c = '$'"), "a = ?1 AND b IN (?12, ?3) AND c = '$'");
        let rows = poll_once(tx.fetch_all("read", "SELECT k, n, b FROM t WHERE n = $1 ORDER BY k", &[Arg::Int(7)]))
            .unwrap()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text("k").unwrap(), "a");
        assert_eq!(rows[0].int("n").unwrap(), 7);
        assert_eq!(rows[0].bytes("b").unwrap(), b"xy");
        assert_eq!(rows[1].bytes("b").unwrap(), b"");
        assert!(rows[0].int("k").is_err(), "text is not read as an integer");
        assert!(rows[0].text("missing").is_err());
        // A parameter the arguments do not cover is an error, not a NULL.
        let short = poll_once(tx.execute("insert", "INSERT INTO t (k, n) VALUES ($1, $2)", &[Arg::Text("c")])).unwrap();
        let error = short.unwrap_err();
        assert_eq!(error.action, "insert");
        let none =
            poll_once(tx.fetch_optional("read", "SELECT k FROM t WHERE k = $1", &[Arg::Text("zz")])).unwrap().unwrap();
        assert!(none.is_none());
        // Text that is not UTF-8 (written by another program) is an error, not a panic.
        conn.execute_batch("INSERT INTO t (k, n) VALUES (CAST(X'FF' AS TEXT), 9)").unwrap();
        let bad = poll_once(tx.fetch_all("read", "SELECT k FROM t WHERE n = $1", &[Arg::Int(9)])).unwrap();
        assert!(bad.is_err());
    }
}
