use flatstack_kernel::Fault;
use rusqlite::ffi::{
    SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE,
};
use std::fmt;

/// Why a store operation failed. Into a [`Fault`] it is a `409` for a refused constraint,
/// `503` when the database is busy or unreachable, and otherwise a `500` whose text only
/// the node's log has.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database (through `sqlx`).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's transaction connection (`rusqlite`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A unique or foreign-key constraint refused a write.
    #[error("{0}")]
    Constraint(Constraint),
    /// A plugin's migration failed; it was rolled back.
    #[error("migration {version} of plugin `{plugin}` failed: {reason}")]
    Migration {
        /// The plugin.
        plugin: String,
        /// The migration's version.
        version: u32,
        /// The database's error.
        reason: String,
    },
    /// Anything else outside the database: a file, the journal's writer.
    #[error("{0}")]
    Io(String),
    /// A write in a transaction from [`crate::Store::read`].
    #[error("a read-only transaction cannot run `{0}`")]
    ReadOnly(String),
    /// A table or column name that is not `[a-z_][a-z0-9_]*`.
    #[error("not a valid SQL identifier: `{0}`")]
    Identifier(String),
    /// A value that cannot be stored in or read from its column.
    #[error("cannot store value of column `{column}`: {reason}")]
    Value {
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
}

/// A refused constraint in terms of the data — table, columns, value — never the
/// constraint's name or the statement, which mean nothing to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Whether a unique (or primary-key) constraint refused the statement.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Constraint(c) => c.kind == ConstraintKind::Unique,
            StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.extended_code,
                SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }

    /// This error as a [`StoreError::Constraint`] if a unique or foreign-key constraint
    /// refused `sql`; any other error as it is.
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
        match &self {
            StoreError::Database(sqlx::Error::Database(db)) => {
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
                StoreError::Constraint(match pg {
                    Some(pg) => Constraint::from_postgres(kind, pg.table(), detail),
                    // SQLite through the pool (sqlx's driver), not through `Tx`.
                    None => Constraint::from_sqlite(kind, Some(db.message())),
                })
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, message)) => {
                let kind = match failure.extended_code {
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => {
                        ConstraintKind::Unique
                    }
                    SQLITE_CONSTRAINT_FOREIGNKEY => foreign_key,
                    _ => return self,
                };
                StoreError::Constraint(Constraint::from_sqlite(kind, message.as_deref()))
            }
            _ => self,
        }
    }

    /// Whether the database was too busy to run it (worth retrying): SQLite's lock held too
    /// long, no pooled connection in time, or PostgreSQL aborting a transaction that lost a
    /// serialization or deadlock race, or waited too long for a lock.
    fn is_busy(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| matches!(&*code, "40001" | "40P01" | "55P03")),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }

    /// Whether the database server could not be reached or dropped the connection.
    fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
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
        match &e {
            StoreError::Constraint(constraint) => constraint.fault(),
            _ if e.is_busy() => {
                tracing::warn!(error = %e, "the database is busy");
                Fault::unavailable("the database is busy; try again")
            }
            _ if e.is_unreachable() => {
                tracing::error!(error = %e, "the database is unreachable");
                Fault::unavailable("the database is unreachable")
            }
            // Column names and values, from code: nothing to hide.
            StoreError::Identifier(_) | StoreError::Value { .. } => Fault::internal(e.to_string()),
            _ => {
                tracing::error!(error = %e, "database error");
                Fault::internal("database error (the node's log has the details)")
            }
        }
    }
}
