//! PostgreSQL's connections for transactions: two small pools of the store's own (writes,
//! reads), because sqlx's pool costs a round trip per transaction that a create makes ~25
//! of: it tests every connection given back with a `Sync` to the server and waits for its
//! answer, on a task spawned for it. Here a connection whose transaction ended is given
//! back as it is; one left in a transaction (dropped without commit) is rolled back on a
//! task first, so that its locks and snapshot go at once; one whose state cannot be known
//! (a statement was under way when its future was dropped) is closed instead.
//!
//! A write connection also waits *inside* a transaction: a commit sends `COMMIT; BEGIN` in
//! one message, so the next write transaction on it begins without a round trip of its
//! own. A transaction that has only begun holds nothing (no snapshot, no lock, no
//! transaction id: they come with its first statement at READ COMMITTED), and nothing in
//! Flatstack's SQL reads the transaction's start time (timestamps come from the node).
//! A connection that died while idle fails its first statement, which did nothing: the
//! transaction is moved to another connection and the statement sent again
//! ([`Connection::done`]).

use crate::{Db, StoreError};
use sqlx::any::AnyConnectOptions;
use sqlx::AnyConnection;
use sqlx::{ConnectOptions, Connection as _, Executor, TransactionManager};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Manager = sqlx::any::AnyTransactionManager;

/// What a commit sends on a write connection: the transaction's end, and the next one's
/// beginning (see the module's comment).
const COMMIT_AND_BEGIN: &str = "COMMIT; BEGIN";

/// What a write transaction dropped without commit sends, likewise.
const ROLLBACK_AND_BEGIN: &str = "ROLLBACK; BEGIN";

/// A pool of PostgreSQL connections that run `session` first.
pub(crate) struct Connections {
    options: AnyConnectOptions,
    session: &'static [&'static str],
    /// Write connections wait in a begun transaction.
    writes: bool,
    idle: Mutex<Vec<AnyConnection>>,
    permits: Arc<Semaphore>,
    closed: std::sync::atomic::AtomicBool,
}

impl Connections {
    /// A pool of at most `max` connections to `url`, each running `session` when it opens;
    /// `writes`: its connections wait in a begun transaction. Nothing is opened yet.
    pub(crate) fn new(
        url: &str,
        session: &'static [&'static str],
        writes: bool,
        max: u32,
    ) -> Result<Arc<Connections>, StoreError> {
        let options: AnyConnectOptions = url.parse().db()?;
        Ok(Arc::new(Connections {
            // The statements are the store's own; sqlx would log each at INFO.
            options: options.disable_statement_logging(),
            session,
            writes,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max as usize)),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// A connection, waiting at most `timeout` for one to be free ("busy" then): an idle
    /// one, or a new one. A write connection comes in a begun transaction.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        timeout: std::time::Duration,
    ) -> Result<Connection, StoreError> {
        let permit = tokio::time::timeout(timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::pool_timed_out())?
            .map_err(|_| StoreError::io("the store is closed"))?;
        let mut connection = Connection {
            conn: None,
            pool: self.clone(),
            permit: Some(permit),
            busy: false,
            used: false,
            lost: 0,
        };
        connection.open().await?;
        Ok(connection)
    }

    /// Closes the idle connections; those in use are closed as they are given back.
    pub(crate) async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.permits.close();
        let idle = std::mem::take(&mut *self.lock_idle());
        for conn in idle {
            // Ending the session is a courtesy to the server; a dead one is simply gone.
            let _ = conn.close().await;
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<AnyConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection, its session set up.
    async fn connect(&self) -> Result<AnyConnection, StoreError> {
        let mut conn = self.options.connect().await.db()?;
        for statement in self.session {
            conn.execute(*statement).await.db()?;
        }
        Ok(conn)
    }
}

/// A connection taken from [`Connections`], given back when dropped: as it is if its
/// transaction ended (or, on a write connection, has only begun), after a rollback on a
/// task if one is left open, and closed if a statement was under way.
pub(crate) struct Connection {
    conn: Option<AnyConnection>,
    pool: Arc<Connections>,
    /// Its place among the pool's connections, held until it is back or gone.
    permit: Option<OwnedSemaphorePermit>,
    /// A statement is under way; if the connection is dropped meanwhile (its future was),
    /// what it has sent and received is unknown, and it is closed.
    busy: bool,
    /// A statement has run on it since it was taken: a lost connection is no longer
    /// replaced, since the transaction had done something.
    used: bool,
    /// Lost connections replaced so far.
    lost: u32,
}

impl Connection {
    /// Takes an idle connection or opens one; a write connection is then in a transaction.
    async fn open(&mut self) -> Result<(), StoreError> {
        loop {
            let idle = self.pool.lock_idle().pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => self.pool.connect().await?,
            };
            if self.pool.writes && Manager::get_transaction_depth(&conn) == 0 {
                self.busy = true;
                let begun = Manager::begin(&mut conn, None).await;
                self.busy = false;
                match begun {
                    Err(error) if self.lost_another(&error) => continue,
                    begun => begun.db()?,
                }
            }
            self.conn = Some(conn);
            return Ok(());
        }
    }

    /// Whether `error` lost the connection and another may be tried: a pool's worth of
    /// dead ones at most (a server restart kills them all at once).
    fn lost_another(&mut self, error: &sqlx::Error) -> bool {
        if !crate::connection_lost(error) || self.lost >= MAX_LOST {
            return false;
        }
        self.lost += 1;
        tracing::info!(%error, "a pooled PostgreSQL connection was lost; trying another");
        true
    }

    /// The connection for one statement, marked under way until [`Connection::done`].
    pub(crate) fn start(&mut self) -> Result<&mut AnyConnection, StoreError> {
        self.busy = true;
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::io("the connection was lost"))
    }

    /// The statement [`Connection::start`]ed has ended, with `error` if it failed. `true`:
    /// it lost the connection before doing anything that counts (the first statement of a
    /// transaction, or any statement outside one), and another connection is ready to
    /// send it again.
    pub(crate) async fn done(&mut self, error: Option<&sqlx::Error>) -> Result<bool, StoreError> {
        self.busy = false;
        // Outside a transaction (a read of each statement), each statement stands alone.
        let alone = !self.pool.writes
            && self
                .conn
                .as_ref()
                .is_some_and(|conn| Manager::get_transaction_depth(conn) == 0);
        let first = !self.used;
        self.used = true;
        let Some(error) = error.filter(|error| crate::connection_lost(error)) else {
            return Ok(false);
        };
        // Never given back.
        self.conn = None;
        if !(alone || first) || !self.lost_another(error) {
            return Ok(false);
        }
        self.used = false;
        self.open().await?;
        Ok(true)
    }

    /// Begins a transaction with `statement` (a read connection's).
    pub(crate) async fn begin(&mut self, statement: &'static str) -> Result<(), StoreError> {
        loop {
            let conn = self.start()?;
            let begun = Manager::begin(conn, Some(statement.into())).await;
            self.busy = false;
            match begun {
                Err(error) if self.lost_another(&error) => {
                    self.conn = None;
                    self.open().await?;
                }
                begun => {
                    // The transaction is known alive now: it is not moved if lost.
                    self.used = true;
                    return begun.db();
                }
            }
        }
    }

    /// Commits a write transaction and begins the next (one message); a connection whose
    /// commit failed is closed, what it did rolled back.
    pub(crate) async fn commit(&mut self) -> Result<(), StoreError> {
        let conn = self.start()?;
        let committed = conn.execute(sqlx::raw_sql(COMMIT_AND_BEGIN)).await;
        self.busy = false;
        if committed.is_err() {
            self.conn = None;
        }
        // Nothing left to undo on it.
        self.used = false;
        committed.map(|_| ()).db()
    }

    /// Ends a read transaction: rolled back, its snapshot released. A connection that
    /// fails it is closed; the read was over.
    pub(crate) async fn end_read(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.busy = true;
        if Manager::rollback(conn).await.is_err() {
            self.conn = None;
        }
        self.busy = false;
    }
}

/// How many lost connections a statement tries past, as many as a pool can hold.
const MAX_LOST: u32 = crate::POSTGRES_CONNECTIONS;

impl Drop for Connection {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let pool = self.pool.clone();
        if self.busy || pool.closed.load(std::sync::atomic::Ordering::Relaxed) {
            // Dropped: the session ends with the socket, and the server rolls back.
            return;
        }
        // A write transaction that did nothing is kept for the next write.
        let open = Manager::get_transaction_depth(&conn) > 0 && (self.used || !pool.writes);
        if !open {
            pool.lock_idle().push(conn);
            return;
        }
        // Left open (dropped without commit): rolled back now, on a task, so that its
        // locks and snapshot go at once, not when the connection is next used.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let ended = if pool.writes {
                conn.execute(sqlx::raw_sql(ROLLBACK_AND_BEGIN))
                    .await
                    .map(|_| ())
            } else {
                Manager::rollback(&mut conn).await
            };
            if ended.is_ok() && !pool.closed.load(std::sync::atomic::Ordering::Relaxed) {
                pool.lock_idle().push(conn);
            }
            drop(permit);
        });
    }
}
