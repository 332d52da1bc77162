use flatstack_kernel::Fault;
use rusqlite::ffi::{
    SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's transaction connection (`rusqlite`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

impl StoreError {
    /// Whether a unique (or primary-key) constraint refused the statement.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.extended_code,
                SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Fault {
        match &e {
            StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Fault::conflict(format!("already exists: {}", db.message()))
            }
            StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                Fault::conflict(format!("still referenced: {}", db.message()))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, message)) => {
                let message = message.clone().unwrap_or_else(|| failure.to_string());
                match failure.extended_code {
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => {
                        Fault::conflict(format!("already exists: {message}"))
                    }
                    SQLITE_CONSTRAINT_FOREIGNKEY => {
                        Fault::conflict(format!("still referenced: {message}"))
                    }
                    _ if failure.code == rusqlite::ErrorCode::DatabaseBusy => {
                        Fault::unavailable("the database is busy")
                    }
                    _ => Fault::internal(e.to_string()),
                }
            }
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                Fault::unavailable("the database is busy")
            }
            _ => Fault::internal(e.to_string()),
        }
    }
}
