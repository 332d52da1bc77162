use flatstack_kernel::Fault;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {version} of plugin `{plugin}` failed: {reason}")]
    Migration {
        plugin: String,
        version: u32,
        reason: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("not a valid SQL identifier: `{0}`")]
    Identifier(String),
    #[error("cannot store value of column `{column}`: {reason}")]
    Value { column: String, reason: String },
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
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                Fault::unavailable("the database is busy")
            }
            _ => Fault::internal(e.to_string()),
        }
    }
}
