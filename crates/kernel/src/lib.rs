//! Flatstack's plugin kernel. It knows nothing about clouds: it assembles plugins and gives
//! them typed extension points (observer plugins), driver type registries (strategy
//! plugins), a message bus with per-resource serial queues, a flow engine with rollback,
//! configuration and a life cycle. See `ARCHITECTURE.md` at the repository root for the map.

#![warn(missing_docs)]

pub mod bus;
pub mod config;
pub mod driver;
mod error;
pub mod extension;
mod fault;
pub mod flow;
mod kernel;
mod macros;
pub mod manifest;
pub mod migration;
mod plugin;
pub mod progress;
mod registry;
mod slots;
mod type_map;

pub use bus::{Addressed, Bus, Event, Message, MessageContext, Request};
pub use config::ConfigKey;
pub use error::KernelError;
pub use extension::{
    AsyncVeto, AsyncVetoPoint, DoUndo, DoUndoPoint, ExtensionPoint, Extensions, Filter,
    FilterPoint, Observe, ObservePoint, Release, ReleasePoint, Semantics, Veto, VetoPoint,
};
pub use fault::{Fault, FaultCode};
pub use flow::{Flow, Step};
pub use kernel::{
    Kernel, KernelBuilder, PluginDescription, WeakKernel, EXTENSION_TIMEOUT_MS, KERNEL,
    REQUEST_TIMEOUT_MS, START_TIMEOUT_MS,
};
pub use manifest::{Manifest, TlsFiles};
pub use plugin::{Contributions, KernelRef, Plugin, PluginBuilder};
pub use slots::Slots;

/// Re-exported so plugins need not depend on these crates themselves to implement traits.
pub use async_trait::async_trait;
pub use schemars;
