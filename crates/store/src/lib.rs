//! Persistence for Flatstack: SQLite embedded by default, PostgreSQL for several nodes,
//! behind one API ([`Tx`]) so plugin code is the same on either. Transactions run on
//! SQLite through `rusqlite`, inline on the calling task, and on PostgreSQL through
//! `sqlx`; migrations and [`Store::pool`] use `sqlx`'s `Any` driver on both.
//!
//! - Each plugin brings its own migration stream ([`Store::migrate`]).
//! - Plugins write through a [`Tx`]: records and the canonical events that report them are
//!   committed together (the event log, `events.rs`); after commit the events are
//!   published on the in-process bus. [`Store::events`] reads the log in commit order for
//!   services outside the node; [`Store::prune_events`] keeps it to a retention by age and
//!   count.
//! - Generic row helpers map JSON objects to rows, so a resource's inventory is its row.
//! - Deleting is real and explicit: a row still referenced by a foreign key is refused with
//!   a `conflict` naming the resources (kinds and uuids) that refer to it ([`users`]).

#![warn(missing_docs)]

pub mod attach;
mod error;
mod events;
mod journal;
pub mod operation;
mod postgres;
pub mod recovery;
mod remote;
pub mod resource;
mod rows;
mod sqlite;
mod tx;
pub mod users;

pub use error::{Constraint, ConstraintKind, StoreError, StoreErrorKind};
pub(crate) use error::{Db, Repr};
pub use events::{
    EventCursor, EventPage, EventQuery, EventRetention, EventsGone, RawEventPage, PRUNE_BATCH,
};
pub use journal::Journal;
pub use tx::{now, Refs, ResourceLock, Tx, TRANSACTION_SECONDS};
pub use users::{TableKind, Users};

use flatstack_kernel::migration::Migration;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file: one node, the default.
    Sqlite,
    /// A PostgreSQL server, which several nodes may share.
    Postgres,
}

/// What every SQLite connection of a store runs first. WAL lets readers run beside the
/// writer. In WAL mode `synchronous = NORMAL` syncs the log at checkpoints rather than at
/// every commit: a commit is durable across a crash of the node, and the database always
/// consistent, but the last commits before a power failure or an OS crash may be lost
/// (`FULL`, SQLite's default, pays one fsync per commit for that: see
/// docs/performance.md). sqlx turns foreign keys on for SQLite; said again to be sure.
/// The log is copied back into the database (a checkpoint, with its fsync) every 10,000
/// pages (~40 MB) rather than SQLite's 1,000: a burst of creates pays a tenth of the
/// checkpoints (10,000 VMs: 8.2–9.0 s against 9.9–10.0 s, docs/performance.md), for a
/// larger log file between checkpoints.
pub const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_autocheckpoint = 10000",
];

/// A foreign key that points at a table: `(table, column)` of the referring rows.
pub type Referrer = (String, String);

/// A foreign key of a table: its column, and the table and column it refers to.
pub(crate) type Reference = (String, String, String);

/// What a column holds, from its declared type, as far as JSON values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Integer,
    Real,
    Text,
    /// Anything else (BOOLEAN, BLOB...): values are bound as they come.
    Other,
}

impl ColumnType {
    /// SQLite's rules for a declared type's affinity, which PostgreSQL's names fit too.
    fn of(declared: &str) -> ColumnType {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("INT") {
            ColumnType::Integer
        } else if ["CHAR", "CLOB", "TEXT"]
            .iter()
            .any(|t| declared.contains(t))
        {
            ColumnType::Text
        } else if ["REAL", "FLOA", "DOUB"]
            .iter()
            .any(|t| declared.contains(t))
        {
            ColumnType::Real
        } else {
            ColumnType::Other
        }
    }
}

/// Each table's columns and their types.
pub(crate) type Columns = Arc<BTreeMap<String, ColumnType>>;

/// How long [`Store::begin`] waits for the connection before it answers "busy", as the
/// pool's acquire timeout does.
const BEGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a write transaction begins on PostgreSQL: at READ COMMITTED, beside the others.
/// Write transactions run concurrently there, on this node and on every node sharing the
/// database, so a check and the write it decides never rely on running alone: they use a
/// constraint (a unique IP, a conditional `UPDATE ... WHERE available >= $n`), or lock the
/// resources they rely on ([`Tx::lock_resource`]). How long a lock is waited for is
/// bounded by the connection's `lock_timeout` ([`POSTGRES_SESSION`]).
pub(crate) const POSTGRES_WRITE_BEGIN: &str = "BEGIN";

/// What every PostgreSQL connection runs first: a statement waits at most 30 s for a
/// lock (then answers "busy", a 503), rather than for ever behind a stuck transaction.
const POSTGRES_SESSION: &str = "SET lock_timeout = '30s'";

/// What every connection of PostgreSQL's read pool runs first: [`POSTGRES_SESSION`], and
/// it refuses writes, in a transaction or out of one ([`Store::read_each`]).
const POSTGRES_READ_SESSION: &[&str] =
    &[POSTGRES_SESSION, "SET default_transaction_read_only = on"];

/// PostgreSQL: the connections each of the store's transactions' pools (writes, reads)
/// keeps at most.
pub(crate) const POSTGRES_CONNECTIONS: u32 = 16;

/// PostgreSQL: the connections [`Store::pool`] keeps at most: migrations, the event log's
/// numbering and readers, and tools.
const POSTGRES_POOL_CONNECTIONS: u32 = 4;

/// How a read transaction begins on PostgreSQL: on one snapshot, as of its first read, as
/// on SQLite; and PostgreSQL refuses writes in it too.
const POSTGRES_READ_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// The database of a management node.
pub struct Store {
    pool: AnyPool,
    /// SQLite: the connection every [`Tx`] runs on, a `rusqlite` one whose statements run
    /// on the calling task's thread, where sqlx's driver costs a round trip to the
    /// connection's own thread for every statement, `BEGIN` and `COMMIT` (see
    /// docs/performance.md). The pool serves the rest (migrations, [`Store::count`],
    /// [`Store::pool`]).
    writer: Option<sqlite::WriterSlot>,
    /// SQLite: connections for [`Store::read`], which read beside the writer.
    readers: Option<Arc<sqlite::Readers>>,
    /// PostgreSQL: the connections of write transactions ([`Store::begin`]), apart from
    /// the pool's (`postgres.rs` says why).
    writes: Option<Arc<postgres::Connections>>,
    /// PostgreSQL: the connections of reads ([`Store::read`], [`Store::read_each`]), apart
    /// from the writes', so that a write transaction that reads beside itself (a veto
    /// reading on its own snapshot) never waits for a connection that writers hold.
    reads: Option<Arc<postgres::Connections>>,
    /// PostgreSQL: the journal of committed write transactions, while one is kept
    /// ([`Store::keep_journal`]).
    postgres_journal: std::sync::Mutex<Option<Journal>>,
    backend: Backend,
    /// For each table, the tables/columns whose foreign keys refer to it.
    referrers: RwLock<BTreeMap<String, Vec<Referrer>>>,
    /// For each table plugins named, the resource kind its rows stand for.
    table_kinds: RwLock<BTreeMap<&'static str, TableKind>>,
    /// For each table, its foreign keys (to say which one a refused write broke).
    references: RwLock<BTreeMap<String, Vec<Reference>>>,
    /// For each table, its columns' types (see [`Tx`]'s use of them).
    columns: RwLock<BTreeMap<String, Columns>>,
    /// Transactions begun and committed through [`Tx`] (see [`Store::transactions`]).
    begun: AtomicU64,
    commits: AtomicU64,
    database_commits: AtomicU64,
    /// SQLite: transactions waiting for the writer (see [`Store::writers_waiting`]).
    writers_waiting: AtomicUsize,
    /// The operation journal's writes, committed in groups (`operation.rs`).
    journal_writes: std::sync::OnceLock<operation::JournalWrites>,
    /// Bumped when a transaction that emitted events commits ([`Store::events_committed`]).
    events_committed: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Opens `url` (`sqlite://path` or `postgres://...`).
    pub async fn open(url: &str) -> Result<Arc<Store>, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let options = AnyPoolOptions::new()
            // SQLite allows one writer; more connections only queue on its lock. On
            // PostgreSQL the pool serves only migrations and the event log's readers.
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                POSTGRES_POOL_CONNECTIONS
            });
        let (writes, reads) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => (
                Some(postgres::Connections::new(
                    url,
                    &[POSTGRES_SESSION],
                    true,
                    POSTGRES_CONNECTIONS,
                )?),
                Some(postgres::Connections::new(
                    url,
                    POSTGRES_READ_SESSION,
                    false,
                    POSTGRES_CONNECTIONS,
                )?),
            ),
        };
        let first = match backend {
            Backend::Sqlite => SQLITE_PRAGMAS,
            Backend::Postgres => &[POSTGRES_SESSION],
        };
        let pool = run_first(options, first).connect(url).await.db()?;
        let (writer, readers) = match backend {
            Backend::Sqlite => {
                // The same file as the pool's (which has created it if asked to).
                let options = SqliteConnectOptions::from_str(url).db()?;
                let writer = sqlite::Writer::open(options.get_filename())?;
                (
                    Some(sqlite::WriterSlot::new(writer)),
                    Some(sqlite::Readers::new(options.get_filename())),
                )
            }
            Backend::Postgres => (None, None),
        };
        Ok(Arc::new(Store {
            pool,
            writer,
            readers,
            writes,
            reads,
            postgres_journal: std::sync::Mutex::new(None),
            backend,
            referrers: RwLock::default(),
            table_kinds: RwLock::default(),
            references: RwLock::default(),
            columns: RwLock::default(),
            begun: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            database_commits: AtomicU64::new(0),
            writers_waiting: AtomicUsize::new(0),
            journal_writes: std::sync::OnceLock::new(),
            events_committed: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Opens (creating if needed) the SQLite database `flatstack.db` in `data_dir`.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::io(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let file = data_dir.join("flatstack.db");
        Self::open(&format!("sqlite://{}?mode=rwc", file.display())).await
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The `sqlx` pool (one connection on SQLite) that runs migrations and
    /// [`Store::count`]: for tests and tools. Plugins go through [`Tx`], never this.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies every plugin's migrations not yet applied, each in its own transaction,
    /// in the order of `streams` (plugin start order), and records them.
    pub async fn migrate(&self, streams: &[(String, Vec<Migration>)]) -> Result<(), StoreError> {
        let create = "CREATE TABLE IF NOT EXISTS schema_migrations (
            plugin TEXT NOT NULL, version BIGINT NOT NULL, description TEXT NOT NULL,
            PRIMARY KEY (plugin, version))";
        sqlx::query(create).execute(&self.pool).await.db()?;
        self.create_event_log().await?;
        for statement in operation::SCHEMA {
            sqlx::query(statement).execute(&self.pool).await.db()?;
        }
        // Journals recorded before operations had accounts (SQLite has no
        // `ADD COLUMN IF NOT EXISTS`): the probe fails only if the column is missing.
        let probe = "SELECT account_uuid FROM operations WHERE 1 = 0";
        if sqlx::query(probe).execute(&self.pool).await.is_err() {
            sqlx::query("ALTER TABLE operations ADD COLUMN account_uuid TEXT")
                .execute(&self.pool)
                .await
                .db()?;
        }
        for (plugin, stream) in streams {
            let applied: i64 = sqlx::query(
                "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE plugin = $1",
            )
            .bind(plugin.as_str())
            .fetch_one(&self.pool)
            .await
            .db()?
            .try_get::<i64, _>("v")
            .db()?;
            for m in stream.iter().filter(|m| i64::from(m.version) > applied) {
                let sql = match (self.backend, m.postgres) {
                    (Backend::Postgres, Some(pg)) => pg,
                    _ => m.sql,
                };
                let mut tx = self.pool.begin().await.db()?;
                sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|e| {
                    StoreError::from(Repr::Migration {
                        plugin: plugin.clone(),
                        version: m.version,
                        reason: e.to_string(),
                    })
                })?;
                sqlx::query(
                    "INSERT INTO schema_migrations (plugin, version, description) VALUES ($1, $2, $3)",
                )
                .bind(plugin.as_str())
                .bind(i64::from(m.version))
                .bind(m.description)
                .execute(&mut *tx)
                .await.db()?;
                tx.commit().await.db()?;
                tracing::info!(plugin = %plugin, version = m.version, "migration applied");
            }
        }
        self.load_referrers().await?;
        self.load_columns().await
    }

    /// Reads every table's columns and their declared types.
    async fn load_columns(&self) -> Result<(), StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT m.name AS tbl, c.name AS col, c.type AS ty
                 FROM sqlite_master m, pragma_table_info(m.name) c WHERE m.type = 'table'"
            }
            Backend::Postgres => {
                "SELECT table_name::text AS tbl, column_name::text AS col, data_type::text AS ty
                 FROM information_schema.columns WHERE table_schema = current_schema()"
            }
        };
        let mut tables: BTreeMap<String, BTreeMap<String, ColumnType>> = BTreeMap::new();
        for row in sqlx::query(sql).fetch_all(&self.pool).await.db()? {
            let declared: String = row.try_get("ty").db()?;
            tables
                .entry(row.try_get("tbl").db()?)
                .or_default()
                .insert(row.try_get("col").db()?, ColumnType::of(&declared));
        }
        *self.columns.write().unwrap_or_else(|e| e.into_inner()) = tables
            .into_iter()
            .map(|(table, columns)| (table, Arc::new(columns)))
            .collect();
        Ok(())
    }

    /// The columns of `table`, if the store has read them (after [`Store::migrate`]).
    pub(crate) fn columns_of(&self, table: &str) -> Option<Columns> {
        self.columns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
    }

    /// Reads which foreign keys point at which table, for explicit delete refusals.
    async fn load_referrers(&self) -> Result<(), StoreError> {
        let rows: Vec<AnyRow> = match self.backend {
            // A key that names no parent column refers to the parent's primary key: `uuid`
            // in every table that is referred to.
            Backend::Sqlite => {
                sqlx::query(
                    "SELECT m.name AS child, f.\"from\" AS col, f.\"table\" AS parent,
                            COALESCE(f.\"to\", 'uuid') AS parent_col
                     FROM sqlite_master m, pragma_foreign_key_list(m.name) f
                     WHERE m.type = 'table'",
                )
                .fetch_all(&self.pool)
                .await.db()?
            }
            Backend::Postgres => {
                sqlx::query(
                    "SELECT tc.table_name::text AS child, kcu.column_name::text AS col,
                            ccu.table_name::text AS parent, ccu.column_name::text AS parent_col
                     FROM information_schema.table_constraints tc
                     JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name
                     JOIN information_schema.constraint_column_usage ccu ON tc.constraint_name = ccu.constraint_name
                     WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()",
                )
                .fetch_all(&self.pool)
                .await.db()?
            }
        };
        let mut referrers: BTreeMap<String, Vec<Referrer>> = BTreeMap::new();
        let mut references: BTreeMap<String, Vec<Reference>> = BTreeMap::new();
        for row in rows {
            let parent: String = row.try_get("parent").db()?;
            let child: String = row.try_get("child").db()?;
            let column: String = row.try_get("col").db()?;
            references.entry(child.clone()).or_default().push((
                column.clone(),
                parent.clone(),
                row.try_get("parent_col").db()?,
            ));
            referrers.entry(parent).or_default().push((child, column));
        }
        self.index_foreign_keys(&referrers).await?;
        *self.referrers.write().unwrap_or_else(|e| e.into_inner()) = referrers;
        *self.references.write().unwrap_or_else(|e| e.into_inner()) = references;
        Ok(())
    }

    /// Indexes every foreign-key column that no index starts with (neither SQLite nor
    /// PostgreSQL indexes the referring side by itself), so that finding the rows referring
    /// to one — a VM's NICs, the refusal of a delete — reads those rows, not the whole table.
    async fn index_foreign_keys(
        &self,
        referrers: &BTreeMap<String, Vec<Referrer>>,
    ) -> Result<(), StoreError> {
        let first_columns = match self.backend {
            Backend::Sqlite => {
                "SELECT m.name AS tbl, i.name AS col
                 FROM sqlite_master m, pragma_index_list(m.name) l, pragma_index_info(l.name) i
                 WHERE m.type = 'table' AND i.seqno = 0"
            }
            Backend::Postgres => {
                "SELECT t.relname::text AS tbl, a.attname::text AS col
                 FROM pg_index x
                 JOIN pg_class t ON t.oid = x.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
                 WHERE n.nspname = current_schema()"
            }
        };
        let rows = sqlx::query(first_columns)
            .fetch_all(&self.pool)
            .await
            .db()?;
        let mut indexed = std::collections::BTreeSet::new();
        for row in rows {
            indexed.insert((
                row.try_get::<String, _>("tbl").db()?,
                row.try_get::<String, _>("col").db()?,
            ));
        }
        for (child, column) in referrers.values().flatten() {
            if indexed.contains(&(child.clone(), column.clone())) {
                continue;
            }
            rows::check_ident(child)?;
            rows::check_ident(column)?;
            let sql =
                format!("CREATE INDEX IF NOT EXISTS fk_{child}_{column} ON {child} ({column})");
            sqlx::query(&sql).execute(&self.pool).await.db()?;
            indexed.insert((child.clone(), column.clone()));
        }
        Ok(())
    }

    pub(crate) fn referrers_of(&self, table: &str) -> Vec<Referrer> {
        self.referrers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// Names the resource kind the rows of each table stand for (the [`TableKind`]s
    /// plugins registered; the `resource` plugin does this as it starts), so that a refused
    /// delete names resources, not tables. The first naming of a table is kept.
    pub fn name_tables(&self, kinds: impl IntoIterator<Item = TableKind>) {
        let mut named = self.table_kinds.write().unwrap_or_else(|e| e.into_inner());
        for kind in kinds {
            if let Some(first) = named.get(kind.table) {
                if *first != kind {
                    tracing::warn!(
                        table = kind.table,
                        first = first.kind,
                        second = kind.kind,
                        "a table named twice; the first naming is kept"
                    );
                }
                continue;
            }
            named.insert(kind.table, kind);
        }
    }

    /// The kind the rows of `table` stand for, if a plugin named it.
    pub fn table_kind(&self, table: &str) -> Option<TableKind> {
        self.table_kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .copied()
    }

    pub(crate) fn references_of(&self, table: &str) -> Vec<Reference> {
        self.references
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a transaction.
    pub async fn begin(self: &Arc<Self>) -> Result<Tx, StoreError> {
        Tx::begin(self.clone()).await
    }

    /// Starts a read-only transaction: it sees the database as of its first read and
    /// refuses to write. On SQLite it runs on a connection of its own, beside the writer,
    /// so it neither waits for [`Store::begin`]'s transactions nor holds them up. For reads
    /// that decide a write, use [`Store::begin`]: they must see what the write will change.
    pub async fn read(self: &Arc<Self>) -> Result<Tx, StoreError> {
        Tx::read(self.clone()).await
    }

    /// A read-only transaction in which each statement sees the database as of its own
    /// start: one statement costs no `BEGIN` and no `ROLLBACK` on PostgreSQL (three round
    /// trips become one), where [`Store::read`]'s statements share one snapshot. On SQLite
    /// it is [`Store::read`]. For a read of one statement (a record by uuid), or of several
    /// that need not agree with each other.
    pub async fn read_each(self: &Arc<Self>) -> Result<Tx, StoreError> {
        Tx::read_each(self.clone()).await
    }

    /// How many [`Tx`] have committed since the store was opened (migrations are not
    /// counted): what a workload writes, e.g. for benchmarks.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many [`Tx`] have begun since the store was opened, committed or not (a
    /// transaction dropped without commit, as reads are, rolls back).
    pub fn transactions(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// SQLite's transaction connection, once the previous [`Tx`] is done with it.
    pub(crate) async fn writer(&self) -> Result<Option<sqlite::Turn>, StoreError> {
        let Some(slot) = &self.writer else {
            return Ok(None);
        };
        // Counted while waiting: a transaction that commits meanwhile leaves its group
        // open for this one (see `sqlite::Writer`). Uncounted however the wait ends.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.writers_waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.writers_waiting);
        tokio::time::timeout(BEGIN_TIMEOUT, slot.turn.clone().lock_owned())
            .await
            .map(|turn| Some(sqlite::Turn::new(turn, slot.clone())))
            .map_err(|_| StoreError::pool_timed_out())
    }

    /// SQLite: transactions waiting to begin on the writer.
    pub(crate) fn writers_waiting(&self) -> usize {
        self.writers_waiting.load(Ordering::Relaxed)
    }

    /// SQLite: waits until the group commit numbered `number`, which the caller's
    /// transaction joined, has settled, committing it if the writer comes first to the
    /// caller (so a group never waits for a transaction that does not come).
    pub(crate) async fn settle_group(
        &self,
        slot: sqlite::WriterSlot,
        number: u64,
        mut settled: sqlite::Settled,
    ) -> Result<(), StoreError> {
        let outcome = |settled: &Option<Result<(), StoreError>>| match settled {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.duplicate()),
            None => Err(StoreError::io("a group commit was abandoned")),
        };
        let turn = slot.turn.clone().lock_owned();
        tokio::pin!(turn);
        let turn = loop {
            tokio::select! {
                biased;
                done = settled.wait_for(Option::is_some) => {
                    return match done {
                        Ok(done) => outcome(&done),
                        Err(_) => outcome(&None),
                    };
                }
                turn = &mut turn => break Some(turn),
                () = tokio::time::sleep(sqlite::STALLED) => {
                    // The holder may be waiting for this member: if it has run no
                    // statement for that long, it is rolled back (see `sqlite::Writer`).
                    let stalled = slot.lock().stalled_for().is_some_and(|idle| idle >= sqlite::STALLED);
                    if stalled {
                        break None;
                    }
                }
            }
        };
        let mut writer = slot.lock();
        if writer.group_number() == Some(number) {
            if turn.is_none() {
                tracing::warn!(
                    "a transaction held the writer without running a statement while a group \
                     commit waited for it: rolled back (a task holding a Tx while awaiting \
                     another's commit?)"
                );
                writer.rollback();
            }
            let committed = writer.flush()?;
            self.count_commits(committed);
            return Ok(());
        }
        drop(writer);
        drop(turn);
        let done = settled.borrow();
        outcome(&done)
    }

    /// PostgreSQL: a write transaction (see `postgres.rs`), and where to record its
    /// statements if a journal is kept.
    pub(crate) async fn postgres_write(
        &self,
    ) -> Result<(postgres::Connection, Option<journal::Recorded>), StoreError> {
        let conn = postgres_connections(&self.writes)?
            .acquire(BEGIN_TIMEOUT)
            .await?;
        let recorded = self
            .postgres_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
            .then(journal::Recorded::default);
        Ok((conn, recorded))
    }

    /// PostgreSQL: a write transaction that committed; into the journal if one is kept.
    pub(crate) fn postgres_committed(&self, recorded: Option<journal::Recorded>) {
        let mut kept = self
            .postgres_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (Some(journal), Some(recorded)) = (kept.as_mut(), recorded) {
            journal.append(recorded);
        }
        // Counted with the journal held, so that a journal taken meanwhile agrees.
        self.count_commits(1);
    }

    /// PostgreSQL: a read transaction ([`POSTGRES_READ_BEGIN`]), from the reads' pool.
    pub(crate) async fn postgres_read(&self) -> Result<postgres::Connection, StoreError> {
        let mut conn = self.postgres_read_connection().await?;
        conn.begin(POSTGRES_READ_BEGIN).await?;
        Ok(conn)
    }

    /// PostgreSQL: a connection of the reads' pool, for statements outside a transaction
    /// ([`Store::read_each`]).
    pub(crate) async fn postgres_read_connection(
        &self,
    ) -> Result<postgres::Connection, StoreError> {
        postgres_connections(&self.reads)?
            .acquire(BEGIN_TIMEOUT)
            .await
    }

    /// SQLite's transaction connection, or an error naming `what` needs it.
    async fn sqlite_writer(&self, what: &str) -> Result<sqlite::Turn, StoreError> {
        let turn = self
            .writer()
            .await?
            .ok_or_else(|| StoreError::io(format!("{what} is for SQLite stores only")))?;
        // Whatever follows runs outside any transaction: the group commit ends first.
        let committed = turn.lock().flush()?;
        self.count_commits(committed);
        Ok(turn)
    }

    /// Copies the database into a new SQLite file at `path`, between transactions
    /// (`VACUUM INTO`): e.g. the starting point on which to replay a [`Journal`].
    pub async fn snapshot(&self, path: &Path) -> Result<(), StoreError> {
        self.sqlite_writer("a snapshot")
            .await?
            .lock()
            .snapshot(path)
    }

    /// From now on, records what every committed write transaction executes, until
    /// [`Store::take_journal`]: for benchmarks, which replay it raw ([`Journal::replay`]
    /// on a SQLite copy, [`Journal::replay_postgres`] on a PostgreSQL one). Read-only
    /// transactions ([`Store::read`]) commit nothing and are not recorded.
    pub async fn keep_journal(&self) -> Result<(), StoreError> {
        match self.backend {
            // The count is read with the writer (or the journal) held, as commits count it.
            Backend::Sqlite => {
                let turn = self.sqlite_writer("a journal").await?;
                turn.lock().keep_journal(self.commits());
            }
            Backend::Postgres => {
                let mut kept = self
                    .postgres_journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                *kept = Some(Journal::new(Backend::Postgres, self.commits()));
            }
        }
        Ok(())
    }

    /// The journal kept since [`Store::keep_journal`], if any; stops keeping it.
    pub async fn take_journal(&self) -> Result<Option<Journal>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn = self.sqlite_writer("a journal").await?;
                let journal = turn.lock().take_journal(self.commits());
                journal
            }
            Backend::Postgres => self
                .postgres_journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(|j| j.taken(self.commits())),
        })
    }

    pub(crate) fn count_begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
    }

    /// `committed` transactions committed by one commit of the database (a group commit
    /// on SQLite, one transaction on PostgreSQL).
    pub(crate) fn count_commits(&self, committed: usize) {
        if committed > 0 {
            self.commits.fetch_add(committed as u64, Ordering::Relaxed);
            self.database_commits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many commits the database made for the [`Store::commits`] counted: fewer on
    /// SQLite, whose transactions commit in groups while others wait.
    pub fn database_commits(&self) -> u64 {
        self.database_commits.load(Ordering::Relaxed)
    }

    /// Closes the store's connections: the pool's, waiting for those in use, and on
    /// PostgreSQL the transactions' idle ones (those in use close as they are given back).
    pub async fn close(&self) {
        for connections in [&self.writes, &self.reads].into_iter().flatten() {
            connections.close().await;
        }
        self.pool.close().await;
    }

    /// Rows in `table` (for tests and introspection).
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        rows::check_ident(table)?;
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .db()?;
        row.try_get::<i64, _>("n").db()
    }
}

/// PostgreSQL's transactions' connections, `connections`; on SQLite, an error.
fn postgres_connections(
    connections: &Option<Arc<postgres::Connections>>,
) -> Result<&Arc<postgres::Connections>, StoreError> {
    connections
        .as_ref()
        .ok_or_else(|| StoreError::io("a PostgreSQL connection asked of a SQLite store"))
}

/// `options` whose every connection runs `statements` first, as the pool opens it (it
/// replaces connections over time, and these settings hold per connection).
fn run_first(options: AnyPoolOptions, statements: &'static [&'static str]) -> AnyPoolOptions {
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            for statement in statements {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
            Ok(())
        })
    })
}

/// Whether `error` says that the connection it came from is gone: an I/O or protocol
/// error, or PostgreSQL's connection exceptions (SQLSTATE class 08) and ends of a session by
/// the server (57P01 terminated by an administrator, 57P02 crash shutdown, 57P03 cannot
/// connect now...).
pub(crate) fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// `docs/plugins.md`, compiled and run as doc tests so the guide stays true. It lives here
/// because this crate sees every core crate the guide's examples use.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/plugins.md")]
pub struct PluginsGuide;

/// The core plugin of every distribution with a store: it owns the life-cycle extension
/// points that all resource kinds share (called through [`resource::ResourceTable`] and
/// [`attach::Attachments`]), declares their canonical events, and hands the store the
/// [`TableKind`]s plugins registered.
pub struct ResourcePlugin;

#[flatstack_kernel::async_trait]
impl flatstack_kernel::Plugin for ResourcePlugin {
    fn name(&self) -> &'static str {
        "resource"
    }

    fn description(&self) -> &'static str {
        "The life cycle every resource kind shares: its extension points and canonical events."
    }

    fn build(&self, b: &mut flatstack_kernel::PluginBuilder<'_>) {
        use flatstack_header::points::*;
        use flatstack_header::*;
        b.define_veto::<CreateCheck>()
            .define_do_undo::<Create>()
            .define_observe::<Created>()
            .define_veto::<UpdateCheck>()
            .define_veto::<DeleteCheck>()
            .define_observe::<Deleted>()
            .define_veto::<AttachCheck>()
            .define_observe::<Attached>()
            .define_veto::<DetachCheck>()
            .define_observe::<Detached>()
            .define_observe::<StateChanged>();
        b.event::<ResourceCreated>()
            .event::<ResourceUpdated>()
            .event::<ResourceDeleted>()
            .event::<ResourceAttached>()
            .event::<ResourceDetached>()
            .event::<ResourceStateChanged>();
    }

    async fn start(
        &self,
        kernel: &flatstack_kernel::Kernel,
    ) -> Result<(), flatstack_kernel::Fault> {
        if let Some(store) = kernel.get::<Store>() {
            store.name_tables(
                kernel
                    .registered::<TableKind>()
                    .into_iter()
                    .map(|(_, k)| *k),
            );
        }
        Ok(())
    }
}
