//! A journal of what a store's committed transactions executed, statement by statement
//! with the values bound: kept on demand ([`crate::Store::keep_journal`]) so that a
//! benchmark can time the very same writes replayed raw, without Flatstack on top. On
//! SQLite it records what the one transaction connection ran; on PostgreSQL, what this
//! node's write transactions sent (each statement as sent, after the store's rewriting of
//! NULLs and booleans, with the values bound), in the order their commits returned (a
//! transaction that depends on another's writes begins after that one has committed, so
//! the replay meets the same rows).

use crate::rows::Param;
use crate::Db;
use crate::{sqlite, Backend, StoreError, POSTGRES_WRITE_BEGIN};
use rusqlite::types::Value;
use sqlx::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

/// The statements of every committed transaction, in commit order, from
/// [`crate::Store::take_journal`]; [`Journal::replay`] runs them again on another database.
pub struct Journal {
    backend: Backend,
    committed: Vec<Vec<Statement>>,
    /// The statements of the transaction in progress, kept if it commits.
    open: Vec<Statement>,
    /// SQLite: transactions committed into the group commit in progress, kept if it
    /// commits (see `sqlite::Writer`).
    grouped: Vec<Vec<Statement>>,
    /// The store's commit count when it began, and how many it counted until taken.
    counted_from: u64,
    counted: u64,
}

struct Statement {
    sql: String,
    params: Vec<Value>,
    /// For a query, how many of its rows were read at most; `None` for a statement run
    /// for its effect.
    rows: Option<usize>,
}

impl Statement {
    fn new(sql: &str, params: &[&Param<'_>], rows: Option<usize>) -> Statement {
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
        Statement {
            sql: sql.to_owned(),
            params,
            rows,
        }
    }
}

/// PostgreSQL: what one write transaction sent, for the journal if it commits
/// ([`Journal::append`]). Transactions run side by side there, so each records its own.
#[derive(Default)]
pub(crate) struct Recorded {
    statements: Vec<Statement>,
    /// A statement failed, which aborts the transaction there: its `COMMIT` commits
    /// nothing, so it is not kept.
    failed: bool,
}

impl Recorded {
    /// A statement sent as `sql` with `params`, which succeeded or not.
    pub(crate) fn record(
        &mut self,
        succeeded: bool,
        sql: &str,
        params: &[&Param<'_>],
        rows: Option<usize>,
    ) {
        if succeeded {
            self.statements.push(Statement::new(sql, params, rows));
        } else {
            self.failed = true;
        }
    }
}

impl Journal {
    /// A journal begun when the store had counted `commits` commits.
    pub(crate) fn new(backend: Backend, commits: u64) -> Journal {
        Journal {
            backend,
            committed: Vec::new(),
            open: Vec::new(),
            grouped: Vec::new(),
            counted_from: commits,
            counted: 0,
        }
    }

    /// Ends it when the store had counted `commits` commits.
    pub(crate) fn taken(mut self, commits: u64) -> Journal {
        self.counted = commits - self.counted_from;
        self
    }

    /// How many commits the store counted while it was kept (read with the writer held at
    /// both ends, so no commit falls between the count and the journal).
    pub fn commits(&self) -> u64 {
        self.counted
    }

    /// The backend whose transactions it recorded, and on which it replays.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn begin(&mut self) {
        self.open.clear();
    }

    /// PostgreSQL: a write transaction that committed, with what it recorded.
    pub(crate) fn append(&mut self, recorded: Recorded) {
        if !recorded.failed {
            self.committed.push(recorded.statements);
        }
    }

    /// SQLite: the transaction in progress joined the group commit in progress.
    pub(crate) fn group(&mut self) {
        let open = std::mem::take(&mut self.open);
        self.grouped.push(open);
    }

    /// SQLite: the group commit in progress committed (`true`) or rolled back.
    pub(crate) fn settle_group(&mut self, committed: bool) {
        let grouped = std::mem::take(&mut self.grouped);
        if committed {
            self.committed.extend(grouped);
        }
    }

    pub(crate) fn record(&mut self, sql: &str, params: &[&Param<'_>], rows: Option<usize>) {
        self.open.push(Statement::new(sql, params, rows));
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
    /// took. Any statement that fails stops the replay with its error. A journal of a
    /// PostgreSQL store replays with [`Journal::replay_postgres`].
    pub fn replay(&self, path: &Path) -> Result<Duration, StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::io(
                "a PostgreSQL journal replays on PostgreSQL (Journal::replay_postgres)",
            ));
        }
        let conn = sqlite::open(path)?;
        let started = Instant::now();
        for transaction in &self.committed {
            conn.prepare_cached("BEGIN").db()?.raw_execute().db()?;
            for statement in transaction {
                let mut prepared = conn.prepare_cached(&statement.sql).db()?;
                for (index, value) in statement.params.iter().enumerate() {
                    prepared.raw_bind_parameter(index + 1, value).db()?;
                }
                match statement.rows {
                    None => {
                        prepared.raw_execute().db()?;
                    }
                    Some(limit) => {
                        let mut rows = prepared.raw_query();
                        let mut read = 0;
                        while read < limit && rows.next().db()?.is_some() {
                            read += 1;
                        }
                    }
                }
            }
            conn.prepare_cached("COMMIT").db()?.raw_execute().db()?;
        }
        Ok(started.elapsed())
    }

    /// Runs every committed transaction of a PostgreSQL store's journal again, in commit
    /// order, one after another, on one connection to the database at `url` (sqlx's `Any`
    /// driver with its default cache of prepared statements, as the store's pooled
    /// connections): each begun as the store begins a write transaction, the statements
    /// as the store sent them with the same values, then `COMMIT`. On a copy of the
    /// database as it was when the journal began, the same writes with the same outcome.
    /// How long it took (connecting aside). Any statement that fails stops the replay
    /// with its error.
    pub async fn replay_postgres(&self, url: &str) -> Result<Duration, StoreError> {
        if self.backend != Backend::Postgres {
            return Err(StoreError::io(
                "a SQLite journal replays on SQLite (Journal::replay)",
            ));
        }
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await.db()?;
        let started = Instant::now();
        for transaction in &self.committed {
            let mut tx = conn.begin_with(POSTGRES_WRITE_BEGIN).await.db()?;
            for statement in transaction {
                let mut query = sqlx::query(&statement.sql);
                for value in &statement.params {
                    query = match value {
                        Value::Null => query.bind(None::<String>),
                        Value::Integer(i) => query.bind(*i),
                        Value::Real(f) => query.bind(*f),
                        Value::Text(s) => query.bind(s.as_str()),
                        Value::Blob(_) => {
                            return Err(StoreError::io("a BLOB in a PostgreSQL journal"))
                        }
                    };
                }
                match statement.rows {
                    None => {
                        query.execute(&mut *tx).await.db()?;
                    }
                    Some(1) => {
                        query.fetch_optional(&mut *tx).await.db()?;
                    }
                    Some(_) => {
                        query.fetch_all(&mut *tx).await.db()?;
                    }
                }
            }
            tx.commit().await.db()?;
        }
        let took = started.elapsed();
        conn.close().await.db()?;
        Ok(took)
    }
}
