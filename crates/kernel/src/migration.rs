//! Schema migrations: each plugin declares its own versioned stream; the store applies
//! them (the kernel only checks that each stream is well-formed).

use crate::KernelError;
use serde::Serialize;

/// One step of a plugin's schema. `sql` is portable SQL; `postgres` overrides it on
/// PostgreSQL where the dialects differ.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
    pub postgres: Option<&'static str>,
}

impl Migration {
    pub const fn new(version: u32, description: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            description,
            sql,
            postgres: None,
        }
    }

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
