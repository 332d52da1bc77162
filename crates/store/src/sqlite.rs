//! SQLite's transaction connection, run inline: each statement executes on the calling
//! task's thread with `rusqlite`, from a cache of prepared statements, instead of a round
//! trip to a driver thread (sqlx's SQLite driver costs ~30–50 µs of thread wake-ups per
//! statement on a small VM; the statements themselves take a few µs: see
//! docs/performance.md).
//!
//! What may block the worker longer: a `COMMIT` that triggers WAL's automatic checkpoint
//! (every 10,000 pages of log) syncs the database file (the pages themselves are mostly
//! copied already, by the thread beside the writer: [`Checkpoints`]), and a statement that meets a lock
//! held by another connection (the pool's, e.g. migrations) waits up to SQLite's busy
//! timeout (5 s). Both are rare while the node serves: the pool does not write then.

use crate::journal::Journal;
use crate::rows::{sqlite_to_json, Param};
use crate::{Backend, StoreError, SQLITE_PRAGMAS};
use crate::{Db, Repr};
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedMutexGuard};

/// How long a group member waits for a holder of the writer that runs no statement before
/// it takes that holder for stalled on the member (see [`Writer`]).
pub(crate) const STALLED: Duration = Duration::from_secs(1);

/// SQLite's writer: whose turn it is to write (a fair async mutex: one `Tx` at a time) and
/// its connection (a plain mutex, held for one statement at a time, so that a group member
/// can end a stall while another holds the turn).
#[derive(Clone)]
pub(crate) struct WriterSlot {
    pub(crate) turn: Arc<tokio::sync::Mutex<()>>,
    writer: Arc<Mutex<Writer>>,
}

impl WriterSlot {
    pub(crate) fn new(writer: Writer) -> WriterSlot {
        WriterSlot {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            writer: Arc::new(Mutex::new(writer)),
        }
    }

    /// The connection, whoever's turn it is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The turn to write, held.
pub(crate) struct Turn {
    _turn: OwnedMutexGuard<()>,
    pub(crate) slot: WriterSlot,
}

impl Turn {
    pub(crate) fn new(turn: OwnedMutexGuard<()>, slot: WriterSlot) -> Turn {
        Turn { _turn: turn, slot }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.slot.lock()
    }
}

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

/// How long the checkpoint thread lets commits gather before it copies them.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// A thread beside the writer, on a connection of its own, that copies committed WAL
/// frames into the database file as commits come (`PRAGMA wal_checkpoint(PASSIVE)`, which
/// neither waits for the writer nor holds it up). The writer's own checkpoint, every
/// `wal_autocheckpoint` pages (it alone can reset the WAL, as it begins a transaction),
/// then finds little left to copy and sync: done by the writer alone, with the one writer
/// stopped, it took ~30 ms every ~150 creates, a quarter of the time under load
/// (docs/performance.md). Idle while nothing commits; ends when the writer is dropped.
struct Checkpoints(std::sync::mpsc::SyncSender<()>);

impl Checkpoints {
    fn start(path: &Path) -> Result<Checkpoints, StoreError> {
        let conn = open(path)?;
        // One pending wake-up is enough: commits that come meanwhile share it.
        let (committed, commits) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoints".into())
            .spawn(move || {
                while commits.recv().is_ok() {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        // The writer's own checkpoint still runs: nothing is lost.
                        tracing::debug!(%error, "a background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::io(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpoints(committed))
    }

    /// A `COMMIT` succeeded: frames to copy.
    fn committed(&self) {
        // Full: a wake-up is already pending. Disconnected: the thread failed, and the
        // writer's own checkpoints do the work.
        let _ = self.0.try_send(());
    }
}

/// SQLite's one connection for transactions, used by one `Tx` at a time, and what its
/// committed transactions executed while a [`Journal`] is kept.
///
/// **Group commit.** Each `Tx` is a savepoint inside one SQLite transaction. When it
/// commits while other transactions wait for the writer, it only releases its savepoint
/// and joins the *group* ([`Writer::join_group`]); the next transaction continues in the
/// same SQLite transaction, and the last of the group (no one waiting, or the group full)
/// `COMMIT`s for all ([`Writer::flush`]). A commit costs SQLite a WAL append of every page
/// it changed plus file locks (~45 µs here, whatever its size): shared by a group, it is
/// paid once. A member's `Tx::commit` returns only once its group has committed, so a
/// commit still means durable, and a group that fails fails for each member. What a
/// member reads of an earlier member's writes, it can only have committed with them.
///
/// A member waits for whoever holds the writer after it. Should that holder wait in turn
/// for the member (a task holding a `Tx` while it awaits another task's commit), neither
/// would move: so a member that has waited [`STALLED`] while the holder ran no statement
/// rolls the holder's transaction back, commits the group, and the holder's next use of its
/// `Tx` fails as "busy" (as a database breaks a deadlock by aborting one of its parties).
pub(crate) struct Writer {
    conn: Connection,
    /// Told of each `COMMIT`; stops with the writer.
    checkpoints: Checkpoints,
    journal: Option<Journal>,
    /// The `Tx` in progress, by number: its savepoint is open.
    savepoint: Option<u64>,
    /// How many `Tx` have begun: the next one's number.
    begun: u64,
    /// When the `Tx` in progress last ran a statement (or began).
    last_statement: Instant,
    /// The transactions committed into SQLite's open transaction, waiting for its `COMMIT`.
    group: Option<Group>,
    /// How many groups have been begun: the next one's number.
    groups: u64,
}

/// What the members of a group learn when it settles: committed, or why not.
pub(crate) type Settled = watch::Receiver<Option<Result<(), StoreError>>>;

struct Group {
    number: u64,
    members: usize,
    settled: watch::Sender<Option<Result<(), StoreError>>>,
}

/// A transaction's savepoint: one at a time, so one name.
const SAVEPOINT: &str = "SAVEPOINT tx";
const RELEASE: &str = "RELEASE tx";

impl Writer {
    pub(crate) fn open(path: &Path) -> Result<Writer, StoreError> {
        Ok(Writer {
            conn: open(path)?,
            checkpoints: Checkpoints::start(path)?,
            journal: None,
            savepoint: None,
            begun: 0,
            last_statement: Instant::now(),
            group: None,
            groups: 0,
        })
    }

    fn run(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql).db()?.raw_execute().db()?;
        Ok(())
    }

    /// Begins a `Tx`: its number, which its statements must show ([`Writer::check`]).
    pub(crate) fn begin(&mut self) -> Result<u64, StoreError> {
        // Dropped transactions roll back as they go; this is only a safety net.
        self.rollback();
        if self.group.is_some() && self.conn.is_autocommit() {
            // SQLite rolled the group's transaction back (an I/O error, say): its members
            // learn it, and this transaction starts afresh.
            let _ = self.flush();
        }
        if self.conn.is_autocommit() {
            // IMMEDIATE: the write lock is taken now, waiting (busy timeout) while another
            // connection writes (a prune through the pool, say). A deferred transaction
            // would read first and fail at once (SQLITE_BUSY_SNAPSHOT) when it then wrote
            // after such a write: seen as 1 create in 10,000 answering 503 "database is busy".
            self.run("BEGIN IMMEDIATE")?;
        }
        if let Err(e) = self.run(SAVEPOINT) {
            self.end_if_alone();
            return Err(e);
        }
        self.begun += 1;
        self.savepoint = Some(self.begun);
        self.last_statement = Instant::now();
        if let Some(journal) = &mut self.journal {
            journal.begin();
        }
        Ok(self.begun)
    }

    /// Whether `Tx` number `tx` is still in progress (not rolled back to end a stall).
    pub(crate) fn check(&mut self, tx: u64) -> Result<(), StoreError> {
        if self.savepoint != Some(tx) {
            return Err(StoreError::aborted());
        }
        self.last_statement = Instant::now();
        Ok(())
    }

    /// Ends the transaction in progress into the group commit (its writes are kept in
    /// SQLite's open transaction until [`Writer::flush`]); how many the group now holds.
    pub(crate) fn join_group(&mut self) -> Result<usize, StoreError> {
        self.run(RELEASE)?;
        self.savepoint = None;
        if let Some(journal) = &mut self.journal {
            journal.group();
        }
        let groups = &mut self.groups;
        let group = self.group.get_or_insert_with(|| {
            *groups += 1;
            Group {
                number: *groups,
                members: 0,
                settled: watch::channel(None).0,
            }
        });
        group.members += 1;
        Ok(group.members)
    }

    /// The number of the group in progress, if any.
    pub(crate) fn group_number(&self) -> Option<u64> {
        self.group.as_ref().map(|group| group.number)
    }

    /// The group in progress, for a member that waits for it to settle.
    pub(crate) fn group(&self) -> Option<(u64, Settled)> {
        self.group
            .as_ref()
            .map(|group| (group.number, group.settled.subscribe()))
    }

    /// Commits SQLite's open transaction, and with it the group: how many transactions it
    /// committed. Every member learns the outcome.
    pub(crate) fn flush(&mut self) -> Result<usize, StoreError> {
        let Some(group) = self.group.take() else {
            self.end_if_alone();
            return Ok(0);
        };
        let done = if self.conn.is_autocommit() {
            Err(StoreError::io(
                "SQLite rolled back the transactions of a group commit",
            ))
        } else {
            self.run("COMMIT")
        };
        if done.is_ok() {
            self.checkpoints.committed();
        }
        if done.is_err() && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a failed group commit failed");
            }
        }
        if let Some(journal) = &mut self.journal {
            journal.settle_group(done.is_ok());
        }
        group.settled.send_replace(Some(
            done.as_ref().map(|_| ()).map_err(StoreError::duplicate),
        ));
        done.map(|()| group.members)
    }

    /// Commits the transaction in progress, with the group if any: how many it committed.
    pub(crate) fn commit(&mut self) -> Result<usize, StoreError> {
        self.join_group()?;
        self.flush()
    }

    /// Rolls back the transaction in progress, if any; the group it would have joined is
    /// kept for its members to commit.
    pub(crate) fn rollback(&mut self) {
        if self.savepoint.take().is_some() {
            if !self.conn.is_autocommit() {
                if let Err(e) = self.conn.execute_batch("ROLLBACK TO tx; RELEASE tx") {
                    tracing::warn!(error = %e, "rolling back a dropped transaction failed");
                    // The group cannot be told apart from this transaction's writes.
                    if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                        tracing::warn!(error = %e, "rolling back a group commit failed");
                    }
                }
            }
            if let Some(journal) = &mut self.journal {
                journal.begin();
            }
        }
        self.end_if_alone();
    }

    /// Rolls back `Tx` number `tx` if it is still in progress (dropped without commit).
    pub(crate) fn rollback_tx(&mut self, tx: u64) {
        if self.savepoint == Some(tx) {
            self.rollback();
        } else {
            self.end_if_alone();
        }
    }

    /// How long the `Tx` in progress, if any, has run no statement.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        self.savepoint.map(|_| self.last_statement.elapsed())
    }

    /// Ends SQLite's open transaction if it holds nothing to commit (no group, no
    /// savepoint), so that its write lock does not outlive the writer's use.
    fn end_if_alone(&mut self) {
        if self.group.is_none() && self.savepoint.is_none() && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "ending an empty transaction failed");
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
