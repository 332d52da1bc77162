//! Errors found while assembling or starting a kernel. Each names its culprit.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("plugin `{0}` is listed twice")]
    DuplicatePlugin(String),
    #[error("plugin `{plugin}` requires plugin `{requires}`, which is not enabled")]
    MissingRequiredPlugin { plugin: String, requires: String },
    #[error("plugins require each other in a cycle: {}", .0.join(" -> "))]
    RequirementCycle(Vec<String>),
    #[error("{kind} type `{type_name}` is registered by both `{first}` and `{second}`")]
    DuplicateType {
        kind: String,
        type_name: String,
        first: String,
        second: String,
    },
    #[error("extension point `{point}` is defined by both `{first}` and `{second}`")]
    DuplicatePoint {
        point: String,
        first: String,
        second: String,
    },
    #[error("plugin `{plugin}` implements extension point `{point}` twice")]
    DuplicateImplementor { point: String, plugin: String },
    #[error("ordering of extension point `{point}` has a cycle between plugins: {}", .plugins.join(", "))]
    OrderingCycle { point: String, plugins: Vec<String> },
    #[error("service `{service}` is provided by both `{first}` and `{second}`")]
    DuplicateService {
        service: String,
        first: String,
        second: String,
    },
    #[error("message name `{name}` is used by two different types (`{first}`, `{second}`)")]
    DuplicateMessage {
        name: String,
        first: String,
        second: String,
    },
    #[error("service `{service}` has two handlers for message `{message}`")]
    DuplicateHandler { service: String, message: String },
    #[error("configuration key `{key}` is declared by both `{first}` and `{second}`")]
    DuplicateConfigKey {
        key: String,
        first: String,
        second: String,
    },
    #[error("configuration key `{key}`: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("migration {version} of plugin `{plugin}`: {reason}")]
    InvalidMigration {
        plugin: String,
        version: u32,
        reason: String,
    },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("plugin `{plugin}` failed to start: {reason}")]
    StartFailed { plugin: String, reason: String },
    #[error("plugin `{plugin}` did not start within {after:?}")]
    StartTimedOut { plugin: String, after: Duration },
}
