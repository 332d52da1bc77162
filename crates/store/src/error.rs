use flatstack_kernel::Fault;
use rusqlite::ffi::{
    SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE,
};
use std::fmt;

/// Why a store operation failed. What kind of failure it is ([`StoreError::kind`]) and, for
/// a refused write, which constraint refused it ([`StoreError::constraint`]) are public;
/// the database driver's own error is not (its text is in `Display`, and it is the
/// [`source`](std::error::Error::source)). Into a [`Fault`] it is a `409` for a refused
/// constraint, a `503` when the database is busy or unreachable, and otherwise a `500`
/// whose text only the node's log has.
#[derive(Debug)]
pub struct StoreError(Repr);

/// What kind of failure a [`StoreError`] is. More kinds may be added: match with a
/// wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A unique or foreign-key constraint refused a write: [`StoreError::constraint`] says
    /// which, when known.
    Constraint,
    /// The database was too busy to run it (a lock held too long, no connection in time,
    /// a PostgreSQL serialization or deadlock abort): trying again may work.
    Busy,
    /// The database server could not be reached, or dropped the connection.
    Unreachable,
    /// A plugin's migration failed (and was rolled back).
    Migration,
    /// A write in a transaction from [`crate::Store::read`].
    ReadOnly,
    /// A table or column name that is not an SQL identifier, or a value its column cannot
    /// hold: a bug in the caller's code.
    Invalid,
    /// Something outside the database failed: a file or directory, the journal's writer.
    Io,
    /// Any other database error.
    Database,
}

/// What a [`StoreError`] holds: the drivers' own errors stay in here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Repr {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's transaction connection (`rusqlite`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A unique or foreign-key constraint refused a write.
    #[error("{0}")]
    Constraint(Constraint),
    #[error("migration {version} of plugin `{plugin}` failed: {reason}")]
    Migration {
        plugin: String,
        version: u32,
        reason: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("a read-only transaction cannot run `{0}`")]
    ReadOnly(String),
    #[error("not a valid SQL identifier: `{0}`")]
    Identifier(String),
    #[error("cannot store value of column `{column}`: {reason}")]
    Value { column: String, reason: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Repr::Database(e) => Some(e),
            Repr::Sqlite(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Repr> for StoreError {
    fn from(repr: Repr) -> StoreError {
        StoreError(repr)
    }
}

/// `result.db()?`: a driver's error (`sqlx`, `rusqlite`) as a [`StoreError`], inside this
/// crate only, so that no conversion from their types is public API.
pub(crate) trait Db<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<Repr>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError(e.into()))
    }
}

/// A refused constraint in terms of the data — table, columns, value — never the
/// constraint's name or the statement, which mean nothing to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Constraint {
    /// Which constraint refused the write.
    pub kind: ConstraintKind,
    /// The table written to, when known.
    pub table: Option<String>,
    /// The key's columns (unique), or the referring columns (foreign key), when known.
    pub columns: Vec<String>,
    /// The key's value as text (`(a, b)` for several columns), when known.
    pub value: Option<String>,
    /// The table referred to ([`ConstraintKind::MissingReference`]) or referring
    /// ([`ConstraintKind::StillReferenced`]), when known.
    pub other_table: Option<String>,
}

/// The kinds of constraint the store reports as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConstraintKind {
    /// Another row already has this key.
    Unique,
    /// The row refers to a row that does not exist.
    MissingReference,
    /// Other rows still refer to the row deleted (or whose key changed).
    StillReferenced,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = match self.columns.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(format!("({})", many.join(", "))),
        };
        let key = match (&columns, &self.value) {
            (Some(columns), Some(value)) => Some(format!("{columns} = {value}")),
            (Some(columns), None) => Some(columns.clone()),
            (None, _) => None,
        };
        match self.kind {
            ConstraintKind::Unique => {
                match &key {
                    Some(key) => write!(f, "{key} already exists")?,
                    None => write!(f, "the row already exists")?,
                }
                match &self.table {
                    Some(table) => write!(f, " in {table}"),
                    None => Ok(()),
                }
            }
            ConstraintKind::MissingReference => {
                match &key {
                    Some(key) => write!(f, "{key} refers to nothing")?,
                    None => write!(f, "the row refers to something that does not exist")?,
                }
                match &self.other_table {
                    Some(table) => write!(f, " in {table}"),
                    None => Ok(()),
                }
            }
            ConstraintKind::StillReferenced => {
                write!(f, "the row is still referred to")?;
                if let Some(table) = &self.other_table {
                    write!(f, " by {table}")?;
                }
                write!(f, "; delete or detach those first")
            }
        }
    }
}

impl Constraint {
    fn new(kind: ConstraintKind) -> Constraint {
        Constraint {
            kind,
            table: None,
            columns: Vec::new(),
            value: None,
            other_table: None,
        }
    }

    /// A `conflict` naming the field (the last column of the key: the leading ones
    /// usually scope it, as the network in `(l3_network_uuid, ip)`), and what is known.
    fn fault(&self) -> Fault {
        let mut fault = Fault::conflict(self.to_string());
        if let Some(field) = self.columns.last() {
            fault = fault.with_detail("field", field.as_str());
        }
        if self.columns.len() > 1 {
            fault = fault.with_detail("fields", self.columns.clone());
        }
        if let Some(value) = &self.value {
            fault = fault.with_detail("value", value.as_str());
        }
        match (self.kind, &self.other_table) {
            (ConstraintKind::MissingReference, Some(table)) => {
                fault.with_detail("referred_table", table.as_str())
            }
            (ConstraintKind::StillReferenced, Some(table)) => {
                fault.with_detail("referrers", vec![table.clone()])
            }
            _ => fault,
        }
    }

    /// What PostgreSQL says, e.g. `Key (a, b)=(x, y) already exists.`, `Key (a)=(x) is not
    /// present in table "t".`, `Key (uuid)=(x) is still referenced from table "t".`
    fn from_postgres(kind: ConstraintKind, table: Option<&str>, detail: Option<&str>) -> Self {
        let mut constraint = Constraint::new(kind);
        constraint.table = table.map(str::to_owned);
        let Some(detail) = detail.and_then(|d| d.strip_prefix("Key (")) else {
            return constraint;
        };
        let Some((columns, rest)) = detail.split_once(")=(") else {
            return constraint;
        };
        constraint.columns = columns.split(", ").map(str::to_owned).collect();
        let (value, tail) = match rest.rfind(") ") {
            Some(end) => (&rest[..end], &rest[end + 2..]),
            None => (rest, ""),
        };
        constraint.value = Some(if constraint.columns.len() > 1 {
            format!("({value})")
        } else {
            value.to_owned()
        });
        // The table is quoted at the end: `... in table "zones".`
        constraint.other_table = tail
            .split('"')
            .nth(1)
            .filter(|_| kind != ConstraintKind::Unique)
            .map(str::to_owned);
        constraint
    }

    /// What SQLite says: `UNIQUE constraint failed: t.a, t.b` (a foreign key failure names
    /// nothing).
    fn from_sqlite(kind: ConstraintKind, message: Option<&str>) -> Self {
        let mut constraint = Constraint::new(kind);
        if kind != ConstraintKind::Unique {
            return constraint;
        }
        let Some(columns) = message.and_then(|m| m.split_once(": ")).map(|(_, c)| c) else {
            return constraint;
        };
        for qualified in columns.split(", ") {
            let (table, column) = qualified.split_once('.').unwrap_or(("", qualified));
            if !table.is_empty() {
                constraint.table = Some(table.to_owned());
            }
            constraint.columns.push(column.to_owned());
        }
        constraint
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        match &self.0 {
            Repr::Constraint(_) => StoreErrorKind::Constraint,
            Repr::Migration { .. } => StoreErrorKind::Migration,
            Repr::Io(_) => StoreErrorKind::Io,
            Repr::ReadOnly(_) => StoreErrorKind::ReadOnly,
            Repr::Identifier(_) | Repr::Value { .. } => StoreErrorKind::Invalid,
            Repr::Database(_) | Repr::Sqlite(_) => {
                if self.is_busy() {
                    StoreErrorKind::Busy
                } else if self.is_unreachable() {
                    StoreErrorKind::Unreachable
                } else if self.violated().is_some() {
                    StoreErrorKind::Constraint
                } else {
                    StoreErrorKind::Database
                }
            }
        }
    }

    /// The constraint that refused a write, in terms of the data, when the store could
    /// tell (writes through [`crate::Tx`] always say).
    pub fn constraint(&self) -> Option<&Constraint> {
        match &self.0 {
            Repr::Constraint(constraint) => Some(constraint),
            _ => None,
        }
    }

    /// Whether a unique (or primary-key) constraint refused the statement.
    pub fn is_unique_violation(&self) -> bool {
        match &self.0 {
            Repr::Constraint(c) => c.kind == ConstraintKind::Unique,
            _ => self.violated() == Some(ConstraintKind::Unique),
        }
    }

    /// Something outside the database failed (a file, a task).
    pub(crate) fn io(message: impl Into<String>) -> StoreError {
        StoreError(Repr::Io(message.into()))
    }

    /// The same failure again, for each of the transactions of a group commit that failed
    /// (SQLite's own errors keep their code, and so their kind; others keep their text).
    pub(crate) fn duplicate(&self) -> StoreError {
        match &self.0 {
            Repr::Sqlite(rusqlite::Error::SqliteFailure(code, message)) => StoreError(
                Repr::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone())),
            ),
            _ => StoreError::io(self.to_string()),
        }
    }

    /// A transaction rolled back because it held SQLite's writer without running a
    /// statement while a group commit waited for it (see `sqlite::Writer`): busy.
    pub(crate) fn aborted() -> StoreError {
        StoreError(Repr::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("the transaction held the writer, idle, while others waited: rolled back".into()),
        )))
    }

    /// A write in a read-only transaction.
    pub(crate) fn read_only(sql: &str) -> StoreError {
        StoreError(Repr::ReadOnly(sql.to_owned()))
    }

    /// A table or column name that is not an SQL identifier.
    pub(crate) fn identifier(name: &str) -> StoreError {
        StoreError(Repr::Identifier(name.to_owned()))
    }

    /// No connection in time: the database is busy.
    pub(crate) fn pool_timed_out() -> StoreError {
        StoreError(Repr::Database(sqlx::Error::PoolTimedOut))
    }

    /// A refused constraint, as the store describes it.
    pub(crate) fn constraint_refused(constraint: Constraint) -> StoreError {
        StoreError(Repr::Constraint(constraint))
    }

    /// The constraint this error is, taken out of it; otherwise the error back.
    pub(crate) fn into_constraint(self) -> Result<Constraint, StoreError> {
        match self.0 {
            Repr::Constraint(constraint) => Ok(constraint),
            other => Err(StoreError(other)),
        }
    }

    /// Which kind of constraint a driver's error says refused the statement, if one did
    /// (before [`StoreError::classify`] has described it).
    fn violated(&self) -> Option<ConstraintKind> {
        match &self.0 {
            Repr::Database(sqlx::Error::Database(db)) => {
                if db.is_unique_violation() {
                    Some(ConstraintKind::Unique)
                } else if db.is_foreign_key_violation() {
                    Some(ConstraintKind::MissingReference)
                } else {
                    None
                }
            }
            Repr::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
                match failure.extended_code {
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => {
                        Some(ConstraintKind::Unique)
                    }
                    SQLITE_CONSTRAINT_FOREIGNKEY => Some(ConstraintKind::MissingReference),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// This error described as a refused constraint, in terms of the data, if a unique or
    /// foreign-key constraint refused `sql`; any other error as it is.
    pub(crate) fn classify(self, sql: &str) -> StoreError {
        let deleting = sql
            .trim_start()
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case("delete"));
        let foreign_key = if deleting {
            ConstraintKind::StillReferenced
        } else {
            ConstraintKind::MissingReference
        };
        match &self.0 {
            Repr::Database(sqlx::Error::Database(db)) => {
                let kind = if db.is_unique_violation() {
                    ConstraintKind::Unique
                } else if db.is_foreign_key_violation() {
                    foreign_key
                } else {
                    return self;
                };
                let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
                let detail = pg.and_then(|pg| pg.detail());
                // PostgreSQL's detail says which way a foreign key failed.
                let kind = match detail {
                    Some(d) if d.contains("is still referenced") => ConstraintKind::StillReferenced,
                    Some(d) if d.contains("is not present") => ConstraintKind::MissingReference,
                    _ => kind,
                };
                StoreError(Repr::Constraint(match pg {
                    Some(pg) => Constraint::from_postgres(kind, pg.table(), detail),
                    // SQLite through the pool (sqlx's driver), not through `Tx`.
                    None => Constraint::from_sqlite(kind, Some(db.message())),
                }))
            }
            Repr::Sqlite(rusqlite::Error::SqliteFailure(failure, message)) => {
                let kind = match failure.extended_code {
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => {
                        ConstraintKind::Unique
                    }
                    SQLITE_CONSTRAINT_FOREIGNKEY => foreign_key,
                    _ => return self,
                };
                StoreError(Repr::Constraint(Constraint::from_sqlite(
                    kind,
                    message.as_deref(),
                )))
            }
            _ => self,
        }
    }

    /// Whether the database was too busy to run it (worth retrying): SQLite's lock held too
    /// long, no pooled connection in time, or PostgreSQL aborting a transaction that lost a
    /// serialization or deadlock race, or waited too long for a lock.
    fn is_busy(&self) -> bool {
        match &self.0 {
            Repr::Database(sqlx::Error::PoolTimedOut) => true,
            Repr::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| matches!(&*code, "40001" | "40P01" | "55P03")),
            Repr::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }

    /// Whether the database server could not be reached or dropped the connection.
    fn is_unreachable(&self) -> bool {
        matches!(
            &self.0,
            Repr::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

/// What an API client is told. A refused constraint is a `conflict` about the data; every
/// other database error is logged here and answered with a generic `internal` fault (or
/// `unavailable` when retrying may help): its text may hold SQL or file paths.
impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Fault {
        // Errors from the pool (not through `Tx`) are not classified yet.
        let e = e.classify("");
        match &e.0 {
            Repr::Constraint(constraint) => constraint.fault(),
            _ if e.is_busy() => {
                tracing::warn!(error = %e, "the database is busy");
                Fault::unavailable("the database is busy; try again")
            }
            _ if e.is_unreachable() => {
                tracing::error!(error = %e, "the database is unreachable");
                Fault::unavailable("the database is unreachable")
            }
            // Column names and values, from code: nothing to hide.
            Repr::Identifier(_) | Repr::Value { .. } => Fault::internal(e.to_string()),
            _ => {
                tracing::error!(error = %e, "database error");
                Fault::internal("database error (the node's log has the details)")
            }
        }
    }
}
