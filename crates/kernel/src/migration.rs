//! Schema migrations: each plugin declares its own versioned stream; the store applies
//! them (the kernel only checks that each stream is well-formed).

use crate::KernelError;
use serde::Serialize;

/// One step of a plugin's schema. `sql` is portable SQL; `postgres` overrides it on
/// PostgreSQL where the dialects differ.
///
/// ```
/// # use flatstack_kernel::migration::Migration;
/// const V1: Migration = Migration::new(1, "racks", "CREATE TABLE racks (uuid TEXT PRIMARY KEY)");
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Migration {
    /// Its place in the plugin's stream: the first is 1, each next one more. Applied once,
    /// in order; never change one that has shipped, add the next.
    pub version: u32,
    /// What it does, in a few words, for logs and introspection.
    pub description: &'static str,
    /// The statements (`;`-separated), for SQLite and for PostgreSQL unless `postgres`
    /// says otherwise.
    pub sql: &'static str,
    /// PostgreSQL's own statements, where its dialect differs.
    pub postgres: Option<&'static str>,
}

impl Migration {
    /// Version `version` of a plugin's schema, the same SQL on both backends.
    pub const fn new(version: u32, description: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            description,
            sql,
            postgres: None,
        }
    }

    /// Gives PostgreSQL its own statements instead of `sql`.
    pub const fn postgres(mut self, sql: &'static str) -> Self {
        self.postgres = Some(sql);
        self
    }
}

/// Checks that a plugin's versions start at 1 and rise by one.
pub(crate) fn check_stream(plugin: &str, stream: &[Migration]) -> Result<(), KernelError> {
    for (i, m) in stream.iter().enumerate() {
        let expected = u32::try_from(i).map_or(u32::MAX, |i| i + 1);
        if m.version != expected {
            return Err(KernelError::InvalidMigration {
                plugin: plugin.to_owned(),
                version: m.version,
                reason: format!(
                    "expected version {expected} (versions start at 1 and rise by one)"
                ),
            });
        }
    }
    Ok(())
}
