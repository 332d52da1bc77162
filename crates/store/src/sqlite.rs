//! SQLite's transaction connection, run inline: each statement executes on the calling
//! task's thread with `rusqlite`, from a cache of prepared statements, instead of a round
//! trip to a driver thread (sqlx's SQLite driver costs ~30–50 µs of thread wake-ups per
//! statement on a small VM; the statements themselves take a few µs: see
//! docs/performance.md).
//!
//! What may block the worker longer: a `COMMIT` that triggers WAL's automatic checkpoint
//! (every ~1,000 pages of log) syncs the database file, and a statement that meets a lock
//! held by another connection (the pool's, e.g. migrations) waits up to SQLite's busy
//! timeout (5 s). Both are rare while the node serves: the pool does not write then.

use crate::rows::{sqlite_to_json, Param};
use crate::{StoreError, SQLITE_PRAGMAS};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::path::Path;

/// Distinct statements kept prepared: every helper of `Tx` over every table of the
/// distribution, with room to spare (a statement not in it is only prepared again).
const STATEMENT_CACHE: usize = 512;

/// Opens the database file at `path` as the store's transaction connection, with the
/// store's pragmas.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    for pragma in SQLITE_PRAGMAS {
        // `journal_mode` answers with a row: read it rather than `execute`.
        let mut statement = conn.prepare(pragma)?;
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(conn)
}

/// Binds `params` to `statement`: `$n` (or `?n`) takes `params[n - 1]`, wherever it is in
/// the text, as sqlx does; any other parameter takes the next one in order.
fn bind(statement: &mut rusqlite::Statement<'_>, params: &[Param<'_>]) -> Result<(), StoreError> {
    let count = statement.parameter_count();
    for index in 1..=count {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix(['$', '?']))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(index);
        let param = n
            .checked_sub(1)
            .and_then(|i| params.get(i))
            .ok_or(rusqlite::Error::InvalidParameterCount(params.len(), count))?;
        statement.raw_bind_parameter(index, param)?;
    }
    Ok(())
}

/// Runs a statement that returns no rows; how many rows it changed.
pub(crate) fn execute(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    Ok(statement.raw_execute()? as u64)
}

/// The rows of a query as JSON objects, at most `limit`.
pub(crate) fn fetch(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
    limit: usize,
) -> Result<Vec<Map<String, Value>>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, params)?;
    let names: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while out.len() < limit {
        match rows.next()? {
            Some(row) => out.push(sqlite_to_json(row, &names)?),
            None => break,
        }
    }
    Ok(out)
}

/// Rolls back the transaction left open on `conn`, if any.
pub(crate) fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back a dropped transaction failed");
        }
    }
}
