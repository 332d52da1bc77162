//! Flatstack's distribution as a library: [`Distribution`] is the whole `flatstack` program
//! — the management node (`serve`, `serve --demo`), its command-line client, `inspect`,
//! `openapi` and `bench` — over every in-tree plugin compiled in plus a program's own. The
//! in-tree binary is `Distribution::default().main()`; a plugin shipped out of tree is a
//! crate of its own whose `main` adds it:
//!
//! ```no_run
//! # use flatstack_kernel::{Plugin, PluginBuilder};
//! # struct MyPlugin;
//! # impl Plugin for MyPlugin {
//! #     fn name(&self) -> &'static str { "mine" }
//! #     fn build(&self, _b: &mut PluginBuilder<'_>) {}
//! # }
//! fn main() -> std::process::ExitCode {
//!     flatstack::Distribution::default().plugin(MyPlugin).main()
//! }
//! ```
//!
//! [`testing`] starts such a program's node on a temporary database for tests over HTTP
//! (`examples/out-of-tree-plugin` shows all of it).
#![warn(missing_docs)]

mod bench;
mod bench_amqp;
mod bench_auth;
mod bench_recovery;
mod cli;
mod cli_schema;
mod command;
mod demo;
mod distribution;
mod http;
mod lock;
mod metrics;
mod node;
mod profile;
pub mod testing;
pub mod token;
mod traces;

pub use distribution::Distribution;

/// What went wrong in the library's helpers (e.g. [`testing`]): a message with its chain
/// of causes (`{}` prints them all, on one line).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Error(anyhow::Error);

impl Error {
    pub(crate) fn msg(message: impl std::fmt::Display) -> Error {
        Error(anyhow::anyhow!("{message}"))
    }
}

impl Distribution {
    /// Runs the program `flatstack` with the process's command line over this
    /// distribution's plugins, and returns its exit code: a binary's `main` in one line.
    pub fn main(self) -> std::process::ExitCode {
        command::main(&self)
    }
}
