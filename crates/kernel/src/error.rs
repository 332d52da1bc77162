//! Errors found while assembling or starting a kernel. Each names its culprit.

use std::time::Duration;

/// Why a kernel could not be assembled ([`crate::KernelBuilder::build`]) or started
/// ([`crate::Kernel::start`]). Plugin names are those of [`crate::Plugin::name`]; "first"
/// and "second" are the two plugins that declared the same thing, in plugin order.
/// More reasons may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum KernelError {
    /// The same plugin name twice in the distribution.
    #[error("plugin `{0}` is listed twice")]
    DuplicatePlugin(String),
    /// An enabled plugin `requires` one that is missing or disabled.
    #[error("plugin `{plugin}` requires plugin `{requires}`, which is not enabled")]
    MissingRequiredPlugin {
        /// The plugin with the requirement.
        plugin: String,
        /// The plugin it requires.
        requires: String,
    },
    /// Plugins require each other in a loop, listed in order along it.
    #[error("plugins require each other in a cycle: {}", .0.join(" -> "))]
    RequirementCycle(Vec<String>),
    /// Two plugins registered a driver type of the same name in one driver kind.
    #[error("{kind} type `{type_name}` is registered by both `{first}` and `{second}`")]
    DuplicateType {
        /// The driver kind, e.g. `hosts`.
        kind: String,
        /// The type's name, e.g. `Simulator`.
        type_name: String,
        /// The plugin that registered it first.
        first: String,
        /// The plugin that registered it again.
        second: String,
    },
    /// Two plugins defined (own) the same extension point.
    #[error("extension point `{point}` is defined by both `{first}` and `{second}`")]
    DuplicatePoint {
        /// The point's name, e.g. `vm.pre-instantiate`.
        point: String,
        /// The plugin that defined it first.
        first: String,
        /// The plugin that defined it again.
        second: String,
    },
    /// A plugin registered two implementations of one extension point.
    #[error("plugin `{plugin}` implements extension point `{point}` twice")]
    DuplicateImplementor {
        /// The point's name.
        point: String,
        /// The plugin.
        plugin: String,
    },
    /// The `before`/`after` constraints on a point's implementors contradict each other.
    #[error("ordering of extension point `{point}` has a cycle between plugins: {}", .plugins.join(", "))]
    OrderingCycle {
        /// The point's name.
        point: String,
        /// The plugins caught in the cycle.
        plugins: Vec<String>,
    },
    /// Two plugins declared a bus service of the same name.
    #[error("service `{service}` is provided by both `{first}` and `{second}`")]
    DuplicateService {
        /// The service's name, e.g. `vm`.
        service: String,
        /// The plugin that declared it first.
        first: String,
        /// The plugin that declared it again.
        second: String,
    },
    /// Two Rust types claim the same message name ([`crate::Message::NAME`]).
    #[error("message name `{name}` is used by two different types (`{first}`, `{second}`)")]
    DuplicateMessage {
        /// The message name, e.g. `vm.create`.
        name: String,
        /// The first type's name.
        first: String,
        /// The second type's name.
        second: String,
    },
    /// A service handles the same message twice.
    #[error("service `{service}` has two handlers for message `{message}`")]
    DuplicateHandler {
        /// The service's name.
        service: String,
        /// The message name.
        message: String,
    },
    /// Two plugins declared the same configuration key.
    #[error("configuration key `{key}` is declared by both `{first}` and `{second}`")]
    DuplicateConfigKey {
        /// The key, e.g. `vxlan.udp_port`.
        key: String,
        /// The plugin that declared it first.
        first: String,
        /// The plugin that declared it again.
        second: String,
    },
    /// A configuration value is of the wrong type, or refused by the key's validator.
    #[error("configuration key `{key}`: {reason}")]
    InvalidConfig {
        /// The key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A plugin's migration stream does not start at 1 and rise by one.
    #[error("migration {version} of plugin `{plugin}`: {reason}")]
    InvalidMigration {
        /// The plugin.
        plugin: String,
        /// The version found.
        version: u32,
        /// What was expected.
        reason: String,
    },
    /// The manifest cannot be read or parsed, or names a plugin or configuration key
    /// that does not exist.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A plugin's [`crate::Plugin::start`] returned an error.
    #[error("plugin `{plugin}` failed to start: {reason}")]
    StartFailed {
        /// The plugin.
        plugin: String,
        /// Its fault, as text.
        reason: String,
    },
    /// A plugin's [`crate::Plugin::start`] did not return in time.
    #[error("plugin `{plugin}` did not start within {after:?}")]
    StartTimedOut {
        /// The plugin.
        plugin: String,
        /// How long it was given.
        after: Duration,
    },
}
