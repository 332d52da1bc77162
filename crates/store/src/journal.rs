//! A journal of what a SQLite store's committed transactions executed, statement by
//! statement with the values bound: kept on demand ([`crate::Store::keep_journal`]) so
//! that a benchmark can time the very same writes replayed raw, without Flatstack on top.

use crate::rows::Param;
use crate::{sqlite, StoreError};
use rusqlite::types::Value;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Journal {
    committed: Vec<Vec<Statement>>,
    /// The statements of the transaction in progress, kept if it commits.
    open: Vec<Statement>,
}

struct Statement {
    sql: String,
    params: Vec<Value>,
    /// For a query, how many of its rows were read at most; `None` for a statement run
    /// for its effect.
    rows: Option<usize>,
}

impl Journal {
    pub(crate) fn begin(&mut self) {
        self.open.clear();
    }

    pub(crate) fn commit(&mut self) {
        self.committed.push(std::mem::take(&mut self.open));
    }

    pub(crate) fn record(&mut self, sql: &str, params: &[&Param<'_>], rows: Option<usize>) {
        let params = params
            .iter()
            .map(|param| match param {
                Param::Null => Value::Null,
                Param::Bool(b) => Value::Integer(i64::from(*b)),
                Param::Int(i) => Value::Integer(*i),
                Param::Real(f) => Value::Real(*f),
                Param::Text(s) => Value::Text(s.to_string()),
            })
            .collect();
        self.open.push(Statement {
            sql: sql.to_owned(),
            params,
            rows,
        });
    }

    /// Committed transactions recorded.
    pub fn transactions(&self) -> usize {
        self.committed.len()
    }

    /// Statements of the committed transactions (neither `BEGIN` nor `COMMIT` counted).
    pub fn statements(&self) -> usize {
        self.committed.iter().map(Vec::len).sum()
    }

    /// Runs every committed transaction again, in commit order, one after another on
    /// this thread, against the SQLite database at `path` (opened with the store's
    /// pragmas and the same cache of prepared statements): on a copy of the database as
    /// it was when the journal began, the same writes with the same outcome. How long it
    /// took. Any statement that fails stops the replay with its error.
    pub fn replay(&self, path: &Path) -> Result<Duration, StoreError> {
        let conn = sqlite::open(path)?;
        let started = Instant::now();
        for transaction in &self.committed {
            conn.prepare_cached("BEGIN")?.raw_execute()?;
            for statement in transaction {
                let mut prepared = conn.prepare_cached(&statement.sql)?;
                for (index, value) in statement.params.iter().enumerate() {
                    prepared.raw_bind_parameter(index + 1, value)?;
                }
                match statement.rows {
                    None => {
                        prepared.raw_execute()?;
                    }
                    Some(limit) => {
                        let mut rows = prepared.raw_query();
                        let mut read = 0;
                        while read < limit && rows.next()?.is_some() {
                            read += 1;
                        }
                    }
                }
            }
            conn.prepare_cached("COMMIT")?.raw_execute()?;
        }
        Ok(started.elapsed())
    }
}
