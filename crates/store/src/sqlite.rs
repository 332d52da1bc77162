//! SQLite's transaction connection, run inline: each statement executes on the calling
//! task's thread with `rusqlite`, from a cache of prepared statements, instead of a round
//! trip to a driver thread (sqlx's SQLite driver costs ~30–50 µs of thread wake-ups per
//! statement on a small VM; the statements themselves take a few µs: see
//! docs/performance.md).
//!
//! What may block the worker longer: a `COMMIT` that triggers WAL's automatic checkpoint
//! (every 10,000 pages of log) syncs the database file, and a statement that meets a lock
//! held by another connection (the pool's, e.g. migrations) waits up to SQLite's busy
//! timeout (5 s). Both are rare while the node serves: the pool does not write then.

use crate::journal::Journal;
use crate::rows::{sqlite_to_json, Param};
use crate::{Backend, StoreError, SQLITE_PRAGMAS};
use crate::{Db, Repr};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Distinct statements kept prepared: every helper of `Tx` over every table of the
/// distribution, with room to spare (a statement not in it is only prepared again).
const STATEMENT_CACHE: usize = 512;

/// Opens the database file at `path` with the store's pragmas.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).db()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    for pragma in SQLITE_PRAGMAS {
        // `journal_mode` answers with a row: read it rather than `execute`.
        let mut statement = conn.prepare(pragma).db()?;
        let mut rows = statement.query([]).db()?;
        while rows.next().db()?.is_some() {}
    }
    Ok(conn)
}

/// SQLite's one connection for transactions, used by one `Tx` at a time, and what its
/// committed transactions executed while a [`Journal`] is kept.
pub(crate) struct Writer {
    conn: Connection,
    journal: Option<Journal>,
}

impl Writer {
    pub(crate) fn open(path: &Path) -> Result<Writer, StoreError> {
        Ok(Writer {
            conn: open(path)?,
            journal: None,
        })
    }

    pub(crate) fn begin(&mut self) -> Result<(), StoreError> {
        // Dropped transactions roll back as they go; this is only a safety net.
        self.rollback();
        // IMMEDIATE: the write lock is taken now, waiting (busy timeout) while another
        // connection writes (a prune through the pool, say). A deferred transaction would
        // read first and fail at once (SQLITE_BUSY_SNAPSHOT) when it then wrote after such
        // a write: seen as 1 create in 10,000 answering 503 "database is busy".
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .db()?
            .raw_execute()
            .db()?;
        if let Some(journal) = &mut self.journal {
            journal.begin();
        }
        Ok(())
    }

    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("COMMIT")
            .db()?
            .raw_execute()
            .db()?;
        if let Some(journal) = &mut self.journal {
            journal.commit();
        }
        Ok(())
    }

    /// Rolls back the transaction left open, if any.
    pub(crate) fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a dropped transaction failed");
            }
        }
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut statement = prepare(&self.conn, sql, params, self.journal.as_mut(), None)?;
        Ok(statement.raw_execute().db()? as u64)
    }

    /// The rows of a query as JSON objects, at most `limit`.
    pub(crate) fn fetch(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let statement = prepare(&self.conn, sql, params, self.journal.as_mut(), Some(limit))?;
        read_rows(statement, limit)
    }

    /// Copies the database, as it is between transactions, into a new file at `path`.
    pub(crate) fn snapshot(&self, path: &Path) -> Result<(), StoreError> {
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::io(format!("not a UTF-8 path: {}", path.display())))?;
        self.conn.execute("VACUUM INTO ?1", [path]).db()?;
        Ok(())
    }

    pub(crate) fn keep_journal(&mut self, commits: u64) {
        self.journal = Some(Journal::new(Backend::Sqlite, commits));
    }

    pub(crate) fn take_journal(&mut self, commits: u64) -> Option<Journal> {
        self.journal.take().map(|journal| journal.taken(commits))
    }
}

/// `sql` from the connection's cache with `params` bound, recorded in `journal` if one is
/// kept (`rows`: how many rows a query will read; `None` for a statement run for effect).
fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    params: &[Param<'_>],
    journal: Option<&mut Journal>,
    rows: Option<usize>,
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(sql).db()?;
    let params = ordered(&statement, params)?;
    if let Some(journal) = journal {
        journal.record(sql, &params, rows);
    }
    for (index, param) in params.iter().enumerate() {
        statement.raw_bind_parameter(index + 1, param).db()?;
    }
    Ok(statement)
}

/// The statement's parameters in order: `$n` (or `?n`) takes `params[n - 1]`, wherever it
/// is in the text, as sqlx does; any other parameter takes the next one in order.
fn ordered<'p, 'a>(
    statement: &rusqlite::Statement<'_>,
    params: &'p [Param<'a>],
) -> Result<Vec<&'p Param<'a>>, StoreError> {
    let count = statement.parameter_count();
    (1..=count)
        .map(|index| {
            let n = statement
                .parameter_name(index)
                .and_then(|name| name.strip_prefix(['$', '?']))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(index);
            n.checked_sub(1)
                .and_then(|i| params.get(i))
                .ok_or(StoreError::from(Repr::Sqlite(
                    rusqlite::Error::InvalidParameterCount(params.len(), count),
                )))
        })
        .collect()
}

/// The rows of a bound statement as JSON objects, at most `limit`.
fn read_rows(
    mut statement: rusqlite::CachedStatement<'_>,
    limit: usize,
) -> Result<Vec<Map<String, Value>>, StoreError> {
    let names: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while out.len() < limit {
        match rows.next().db()? {
            Some(row) => out.push(sqlite_to_json(row, &names)?),
            None => break,
        }
    }
    Ok(out)
}

/// Connections for read-only transactions, beside the writer: in WAL mode they read a
/// consistent snapshot while it writes, so reads neither wait for the writer nor hold it
/// up. One per read transaction in progress, opened on demand and kept for the next.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Idle read connections kept open: as many as there are usually reads at once.
const IDLE_READERS: usize = 8;

impl Readers {
    pub(crate) fn new(path: &Path) -> Arc<Readers> {
        Arc::new(Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A read connection with a transaction begun on it.
    pub(crate) fn begin(self: &Arc<Self>) -> Result<Reader, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open(&self.path)?;
                // Refuse writes in SQLite too, not only in `Tx`.
                conn.execute_batch("PRAGMA query_only = ON").db()?;
                conn
            }
        };
        conn.prepare_cached("BEGIN").db()?.raw_execute().db()?;
        Ok(Reader {
            conn: Some(conn),
            readers: self.clone(),
        })
    }
}

/// A read connection in a transaction; it ends the transaction and goes back to the
/// idle ones when dropped.
pub(crate) struct Reader {
    conn: Option<Connection>,
    readers: Arc<Readers>,
}

impl Reader {
    pub(crate) fn fetch(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::io("read connection already released"))?;
        read_rows(prepare(conn, sql, params, None, Some(limit))?, limit)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // A connection whose transaction cannot end is not reused.
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return;
        }
        let mut idle = self
            .readers
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}
