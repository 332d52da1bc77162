//! Observer plugins: typed extension points.
//!
//! An extension point is a marker type implementing [`ExtensionPoint`] plus one of the five
//! semantic traits ([`VetoPoint`], [`DoUndoPoint`], [`ReleasePoint`], [`ObservePoint`],
//! [`FilterPoint`]). Its implementors implement the matching trait ([`Veto`], [`DoUndo`],
//! [`Release`], [`Observe`], [`Filter`]) for that marker, so the compiler checks every call;
//! nothing is looked up by string.
//! A veto point whose owner awaits its check ([`AsyncVetoPoint`]) also takes [`AsyncVeto`]s:
//! refusals that must first read something (the store, another service).
//!
//! Every call goes through [`Extensions`], the one dispatcher: it opens a `tracing` span,
//! records per-(point, plugin) metrics, bounds async calls with a timeout and turns a panic
//! into a [`Fault`] naming the plugin.

mod dispatch;
mod order;
mod registry;
pub mod remote;

pub use dispatch::Extensions;
pub(crate) use dispatch::VetoImp;
pub use order::OrderSpec;
pub(crate) use registry::PointsBuilder;
pub use registry::{
    ImplementorDescription, PointDescription, StatsSnapshot, EXTENSION_CALL_SECONDS,
};

use crate::Fault;
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;

/// How the owner of a point uses what its implementors return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantics {
    /// Pre-check; the first refusal stops the flow. Synchronous, or also asynchronous on
    /// an [`AsyncVetoPoint`] (its synchronous implementors first, then the others).
    Veto,
    /// Asynchronous work with compensation (`run`, then `undo` in reverse on failure).
    DoUndo,
    /// Giving back what a resource holds when it goes (a VM destroyed): every implementor
    /// runs even if another failed; the failures are returned, for the owner to retry.
    Release,
    /// After the fact; errors are logged and counted, never abort.
    Observe,
    /// Each implementor narrows a candidate list.
    Filter,
}

/// Metadata every extension point declares.
pub trait ExtensionPoint: Send + Sync + 'static {
    /// Stable, dotted name shown by introspection, e.g. `vm.create.pre-check`.
    const NAME: &'static str;
    /// One sentence for plugin authors: when the owner calls it and what it expects.
    const DESCRIPTION: &'static str;
    /// Bound on each async call; `None` uses the kernel's `extension.timeout_ms`.
    const TIMEOUT: Option<Duration> = None;
    /// Whether services outside the node may implement it ([`remote`]).
    const REMOTE: bool = false;
}

/// A point whose implementors may refuse an operation before it starts.
pub trait VetoPoint: ExtensionPoint {
    /// What each implementor is shown (read-only).
    type Input: ?Sized + Sync + 'static;
}

/// A veto point whose owner calls [`Extensions::veto_async`], so that its implementors may
/// also be [`AsyncVeto`]s, which wait — typically for a read of the store. The owner awaits
/// the check where it would have called [`Extensions::veto`]; a synchronous call on a point
/// with asynchronous implementors is refused as a bug (`internal`), never half-checked.
pub trait AsyncVetoPoint: VetoPoint {
    /// What the point's remote implementors are shown of `input` ([`remote`]); `None`
    /// (the default): the point takes no remote implementors.
    fn remote_input(_input: &Self::Input) -> Option<serde_json::Value> {
        None
    }
}

/// A point whose implementors do work that can be undone if a later step fails.
pub trait DoUndoPoint: ExtensionPoint {
    /// What the implementors work on, in turn: each may add to it for the next ones and
    /// for its own `undo`.
    type Context: Send + 'static;
}

/// A point whose implementors give back what a resource holds, when it goes: distinct from
/// a [`DoUndoPoint`]'s undo, which compensates a `run` inside a failing operation.
pub trait ReleasePoint: ExtensionPoint {
    /// What the implementors are given: which resource goes (implementors find what they
    /// hold for it in their own records).
    type Context: Send + 'static;
}

/// A point whose implementors are told that something happened.
pub trait ObservePoint: ExtensionPoint {
    /// What happened, as each observer is shown it.
    type Event: Sync + 'static;
    /// What the point's remote observers are sent of `event` ([`remote`]); `None` (the
    /// default): the point takes no remote observers.
    fn remote_event(_event: &Self::Event) -> Option<serde_json::Value> {
        None
    }
}

/// A point whose implementors narrow a list of candidates (e.g. hosts for a VM).
pub trait FilterPoint: ExtensionPoint {
    /// What the candidates are filtered for (e.g. the VM to place).
    type Input: ?Sized + Sync + 'static;
    /// One candidate (e.g. a host's record).
    type Candidate: Send + 'static;
}

/// Implemented by a plugin that may refuse the operation of point `P`.
pub trait Veto<P: VetoPoint>: Send + Sync + 'static {
    /// `Err` refuses; the dispatcher turns it into a `vetoed` fault naming plugin and point.
    fn check(&self, input: &P::Input) -> Result<(), Fault>;
}

/// Implemented by a plugin that may refuse the operation of point `P` only once it has read
/// something: e.g. the store, to find what still uses a resource about to be deleted.
/// Registered with `PluginBuilder::veto_async` on an [`AsyncVetoPoint`]; called after the
/// point's synchronous vetoes, in the point's order, each bounded by the point's timeout
/// (the kernel's `extension.timeout_ms` by default) and panic-contained. A time-out or a
/// panic stops the check as a refusal would (`timeout`, `internal`), so nothing goes
/// unchecked. The owner may hold resources while it waits (the store's owners hold the
/// one writer): read, never write, and never wait for something the owner holds.
#[async_trait]
pub trait AsyncVeto<P: VetoPoint>: Send + Sync + 'static {
    /// `Err` refuses, exactly as [`Veto::check`] does.
    async fn check(&self, input: &P::Input) -> Result<(), Fault>;
}

/// Implemented by a plugin that takes part in the work of point `P` and can undo it.
#[async_trait]
pub trait DoUndo<P: DoUndoPoint>: Send + Sync + 'static {
    /// Does this plugin's part. `Err` fails the point: the implementors that ran before
    /// are undone in reverse, and the fault is returned to the owner.
    async fn run(&self, ctx: &mut P::Context) -> Result<(), Fault>;
    /// Compensates `run`, which may have completed, half happened or, after a restart,
    /// not run in this process at all: work from your own records, and be idempotent. An
    /// error is logged and attached to the fault the owner gets; the rollback goes on.
    async fn undo(&self, ctx: &mut P::Context) -> Result<(), Fault>;
}

/// Implemented by a plugin that holds something for a resource and gives it back at point
/// `P` (e.g. a VM's DHCP lease when the VM is destroyed). Works from the implementor's own
/// records, so that it is the same when run twice, or after a restart: the owner calls it
/// again until it succeeds.
#[async_trait]
pub trait Release<P: ReleasePoint>: Send + Sync + 'static {
    /// Gives back what this plugin holds for the resource; nothing held is success.
    async fn release(&self, ctx: &mut P::Context) -> Result<(), Fault>;
}

/// Implemented by a plugin that observes the events of point `P`.
#[async_trait]
pub trait Observe<P: ObservePoint>: Send + Sync + 'static {
    /// Reacts to the event. An `Err` is logged and counted, and changes nothing for the
    /// owner or the other observers.
    async fn observe(&self, event: &P::Event) -> Result<(), Fault>;
}

/// Implemented by a plugin that narrows the candidates of point `P`.
#[async_trait]
pub trait Filter<P: FilterPoint>: Send + Sync + 'static {
    /// Returns the candidates that pass, in order of preference.
    async fn filter(
        &self,
        input: &P::Input,
        candidates: Vec<P::Candidate>,
    ) -> Result<Vec<P::Candidate>, Fault>;
}
