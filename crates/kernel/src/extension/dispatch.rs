//! The one dispatcher every extension call goes through.

use super::registry::{CallStats, Implementor, PointDescription, PointRegistry};
use super::remote::RemoteImplementors;
use super::{
    AsyncVeto, AsyncVetoPoint, DoUndo, DoUndoPoint, Filter, FilterPoint, Observe, ObservePoint,
    Release, ReleasePoint, Veto, VetoPoint,
};
use crate::fault::panic_message;
use crate::{Fault, FaultCode};
use futures::FutureExt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
// quanta reads the TSC: ~12 ns a read here against ~35 ns for `std::time::Instant`,
// which dominated the per-call overhead (docs/performance.md).
use quanta::Instant;
use std::time::Duration;
use tracing::Instrument;

/// One implementor of a veto point: both kinds share the point's one order.
pub(crate) enum VetoImp<P: VetoPoint> {
    Sync(Box<dyn Veto<P>>),
    Async(Box<dyn AsyncVeto<P>>),
}

/// Calls the implementors of extension points, in their assembled order.
pub struct Extensions {
    registry: PointRegistry,
    default_timeout: Duration,
    remote: RemoteImplementors,
}

impl Extensions {
    pub(crate) fn new(registry: PointRegistry, default_timeout: Duration) -> Self {
        Extensions {
            registry,
            default_timeout,
            remote: RemoteImplementors::default(),
        }
    }

    /// Every point with its semantics, owner, ordered implementors and their metrics.
    pub fn describe(&self) -> Vec<PointDescription> {
        self.registry.describe(&self.remote)
    }

    /// The implementors of remote points that run outside the node, and their transport.
    pub fn remote(&self) -> &RemoteImplementors {
        &self.remote
    }

    /// The plugins implementing veto point `P`, in calling order.
    pub fn veto_implementors<P: VetoPoint>(&self) -> Vec<String> {
        self.plugins::<VetoImp<P>>()
    }

    /// The plugins implementing do/undo point `P`, in calling order.
    pub fn do_undo_implementors<P: DoUndoPoint>(&self) -> Vec<String> {
        self.plugins::<dyn DoUndo<P>>()
    }

    fn plugins<I: ?Sized + Send + Sync + 'static>(&self) -> Vec<String> {
        self.registry
            .implementors::<I>()
            .map(|(imps, _)| imps.iter().map(|e| e.plugin.to_string()).collect())
            .unwrap_or_default()
    }

    /// Asks every implementor of `P`; the first refusal stops and is returned as a
    /// `vetoed` fault naming the plugin and the point (a `conflict` stays one). A panic is
    /// an `internal` fault. A point with asynchronous implementors is checked with
    /// [`Extensions::veto_async`]: here it is refused (`internal`), never half-checked.
    pub fn veto<P: VetoPoint>(&self, input: &P::Input) -> Result<(), Fault> {
        let Some((imps, _)) = self.registry.implementors::<VetoImp<P>>() else {
            return Ok(());
        };
        if let Some(e) = imps.iter().find(|e| matches!(*e.imp, VetoImp::Async(_))) {
            return Err(Fault::internal(format!(
                "`{}` has an asynchronous veto (plugin `{}`): its owner must await `veto_async`",
                P::NAME,
                e.plugin
            ))
            .with_detail("plugin", &*e.plugin)
            .with_detail("point", P::NAME));
        }
        check_sync::<P>(imps, input)
    }

    /// Like [`Extensions::veto`], awaiting the asynchronous implementors too: first every
    /// synchronous one (cheap; a refusal there spares the reads), then each asynchronous
    /// one, each in the point's order. An asynchronous check runs as every async extension
    /// call does: in a span, measured, bounded by the point's timeout and panic-contained;
    /// a time-out (`timeout`) or a panic (`internal`) refuses, naming plugin and point.
    ///
    /// Then, on a point services outside the node may implement, each of its remote
    /// implementors ([`remote`](super::remote)), in their order, each bounded by its own
    /// timeout; one that does not answer refuses or not by its failure policy.
    pub async fn veto_async<P: AsyncVetoPoint>(&self, input: &P::Input) -> Result<(), Fault> {
        if let Some((imps, timeout)) = self.registry.implementors::<VetoImp<P>>() {
            check_sync::<P>(imps, input)?;
            let timeout = timeout.unwrap_or(self.default_timeout);
            for e in imps {
                let VetoImp::Async(imp) = &*e.imp else {
                    continue;
                };
                if let Err(refusal) = contained(P::NAME, e, timeout, imp.check(input)).await? {
                    return Err(refused(P::NAME, &e.plugin, &e.stats, refusal));
                }
            }
        }
        if !P::REMOTE {
            return Ok(());
        }
        let Some(remotes) = self.remote.of(P::NAME) else {
            return Ok(());
        };
        let Some(json) = P::remote_input(input) else {
            return Ok(());
        };
        let span = tracing::debug_span!("remote extensions", point = P::NAME);
        async {
            for remote in remotes.iter() {
                if let Some(refusal) =
                    super::remote::ask(P::NAME, remote, self.remote.caller(), &json).await
                {
                    return Err(refusal);
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Runs every implementor of `P` in order. If one fails, those that completed are
    /// undone in reverse order and its fault is returned (naming plugin and point); an
    /// undo that fails there is attached to it ([`Fault::with_undo_failure`]: the fault
    /// says `rollback: "incomplete"` and lists each in `undo_failed`).
    pub async fn run<P: DoUndoPoint>(&self, ctx: &mut P::Context) -> Result<(), Fault> {
        let Some((imps, timeout)) = self.registry.implementors::<dyn DoUndo<P>>() else {
            return Ok(());
        };
        let timeout = timeout.unwrap_or(self.default_timeout);
        for (done, e) in imps.iter().enumerate() {
            if let Err(fault) = guarded(P::NAME, e, timeout, e.imp.run(ctx)).await {
                let failed = undo_all(P::NAME, &imps[..done], timeout, ctx).await;
                return Err(failed
                    .into_iter()
                    .fold(fault, |fault, undo| fault.with_undo_failure(None, undo)));
            }
        }
        Ok(())
    }

    /// Undoes every implementor of `P` in reverse order: a later step failed after a
    /// successful [`Extensions::run`]. Undo errors are logged and the rollback goes on;
    /// once every implementor has been undone (or tried), the first is returned with
    /// every failure attached to it (`undo_failed`, see [`Fault::with_undo_failure`]).
    pub async fn undo<P: DoUndoPoint>(&self, ctx: &mut P::Context) -> Result<(), Fault> {
        let Some((imps, timeout)) = self.registry.implementors::<dyn DoUndo<P>>() else {
            return Ok(());
        };
        let failed = undo_all(P::NAME, imps, timeout.unwrap_or(self.default_timeout), ctx).await;
        let Some(first) = failed.first().cloned() else {
            return Ok(());
        };
        let first = match failed.len() {
            1 => first,
            n => Fault {
                message: format!("{} (and {} more undo failures)", first.message, n - 1),
                ..first
            },
        };
        Err(failed
            .into_iter()
            .fold(first, |fault, undo| fault.with_undo_failure(None, undo)))
    }

    /// Has every implementor of `P` give back what it holds, in order, each even if an
    /// earlier one failed. The first failure is returned with every failure attached
    /// (`undo_failed`, `rollback: "incomplete"`, see [`Fault::with_undo_failure`]): what
    /// is left held, for the owner to release again.
    pub async fn release<P: ReleasePoint>(&self, ctx: &mut P::Context) -> Result<(), Fault> {
        let Some((imps, timeout)) = self.registry.implementors::<dyn Release<P>>() else {
            return Ok(());
        };
        let timeout = timeout.unwrap_or(self.default_timeout);
        let mut failed = Vec::new();
        for e in imps {
            if let Err(fault) = guarded(P::NAME, e, timeout, e.imp.release(ctx)).await {
                tracing::error!(point = P::NAME, plugin = &*e.plugin, %fault, "release failed; the others go on");
                failed.push(fault);
            }
        }
        let Some(first) = failed.first().cloned() else {
            return Ok(());
        };
        Err(failed.into_iter().fold(first, |fault, failure| {
            fault.with_undo_failure(None, failure)
        }))
    }

    /// Tells every implementor of `P`; failures are logged and counted, never returned.
    ///
    /// Then, on a point services outside the node may observe, each remote observer is
    /// sent the event; its delivery is bounded by its timeout, and a failure is logged and
    /// counted, never returned.
    pub async fn observe<P: ObservePoint>(&self, event: &P::Event) {
        if let Some((imps, timeout)) = self.registry.implementors::<dyn Observe<P>>() {
            let timeout = timeout.unwrap_or(self.default_timeout);
            for e in imps {
                if let Err(fault) = guarded(P::NAME, e, timeout, e.imp.observe(event)).await {
                    tracing::warn!(point = P::NAME, plugin = &*e.plugin, %fault, "observer failed");
                }
            }
        }
        if !P::REMOTE {
            return;
        }
        let Some(remotes) = self.remote.of(P::NAME) else {
            return;
        };
        let Some(json) = P::remote_event(event) else {
            return;
        };
        for remote in remotes.iter() {
            super::remote::notify(P::NAME, remote, self.remote.caller(), &json).await;
        }
    }

    /// Passes `candidates` through every filter of `P` in order. A filter that fails, or
    /// that leaves no candidate, stops the pipeline with a fault naming it.
    pub async fn filter<P: FilterPoint>(
        &self,
        input: &P::Input,
        mut candidates: Vec<P::Candidate>,
    ) -> Result<Vec<P::Candidate>, Fault> {
        let Some((imps, timeout)) = self.registry.implementors::<dyn Filter<P>>() else {
            return Ok(candidates);
        };
        let timeout = timeout.unwrap_or(self.default_timeout);
        for e in imps {
            if candidates.is_empty() {
                break;
            }
            candidates = guarded(P::NAME, e, timeout, e.imp.filter(input, candidates)).await?;
            if candidates.is_empty() {
                return Err(Fault::conflict(format!(
                    "no candidate left after the filter of plugin `{}` at `{}`",
                    e.plugin,
                    P::NAME
                ))
                .with_detail("plugin", &*e.plugin)
                .with_detail("point", P::NAME));
            }
        }
        Ok(candidates)
    }
}

/// The synchronous implementors of veto point `P`, in order; asynchronous ones are skipped.
fn check_sync<P: VetoPoint>(
    imps: &[Implementor<VetoImp<P>>],
    input: &P::Input,
) -> Result<(), Fault> {
    let mut start = Instant::now();
    for e in imps {
        let VetoImp::Sync(imp) = &*e.imp else {
            continue;
        };
        let span = tracing::debug_span!("extension", point = P::NAME, plugin = &*e.plugin);
        let entered = span.enter();
        let result = catch_unwind(AssertUnwindSafe(|| imp.check(input)));
        drop(entered);
        let now = Instant::now();
        e.stats.record(now - start);
        start = now;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return Err(refused(P::NAME, &e.plugin, &e.stats, refusal)),
            Err(payload) => {
                e.stats.panics.fetch_add(1, Relaxed);
                return Err(panicked(P::NAME, &e.plugin, &*payload));
            }
        }
    }
    Ok(())
}

/// A veto's refusal, counted and logged, as the fault the owner returns: a refusal because
/// of the current state stays a `conflict`; any other is a `vetoed`. Its details survive.
fn refused(point: &'static str, plugin: &str, stats: &CallStats, refusal: Fault) -> Fault {
    stats.vetoes.fetch_add(1, Relaxed);
    tracing::info!(point, plugin, %refusal, "vetoed");
    let code = match refusal.code {
        FaultCode::Conflict => FaultCode::Conflict,
        _ => FaultCode::Vetoed,
    };
    Fault {
        code,
        message: format!("plugin `{plugin}` vetoed `{point}`: {}", refusal.message),
        details: refusal.details,
    }
    .with_detail("plugin", plugin)
    .with_detail("point", point)
}

/// Undoes `done` in reverse order, going on past failures; returns every failure, in the
/// order they happened (each logged).
async fn undo_all<P: DoUndoPoint>(
    point: &'static str,
    done: &[Implementor<dyn DoUndo<P>>],
    timeout: Duration,
    ctx: &mut P::Context,
) -> Vec<Fault> {
    let mut failed = Vec::new();
    for e in done.iter().rev() {
        if let Err(fault) = guarded(point, e, timeout, e.imp.undo(ctx)).await {
            tracing::error!(point, plugin = &*e.plugin, %fault, "undo failed; rollback goes on");
            failed.push(fault);
        }
    }
    failed
}

/// Runs one async extension call with a span, metrics, a timeout and panic containment;
/// the call's own error is counted and named.
async fn guarded<I: ?Sized, T>(
    point: &'static str,
    e: &Implementor<I>,
    timeout: Duration,
    call: impl Future<Output = Result<T, Fault>>,
) -> Result<T, Fault> {
    contained(point, e, timeout, call).await?.map_err(|fault| {
        e.stats.errors.fetch_add(1, Relaxed);
        Fault {
            message: format!(
                "plugin `{}` failed at `{point}`: {}",
                e.plugin, fault.message
            ),
            ..fault
        }
        // Undo failures of its own (what it could not give back after it failed).
        .undo_failures_in(&[("plugin", &e.plugin), ("point", point)])
        .with_detail("plugin", &*e.plugin)
        .with_detail("point", point)
    })
}

/// Runs one async extension call in a span, measured, bounded by `timeout` and
/// panic-contained: `Err` is a panic or a time-out (counted, naming plugin and point);
/// `Ok` holds what the call returned, for the caller to judge.
async fn contained<I: ?Sized, T>(
    point: &'static str,
    e: &Implementor<I>,
    timeout: Duration,
    call: impl Future<Output = Result<T, Fault>>,
) -> Result<Result<T, Fault>, Fault> {
    let span = tracing::debug_span!("extension", point, plugin = &*e.plugin);
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind())
        .instrument(span)
        .await;
    e.stats.record(start.elapsed());
    match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(payload)) => {
            e.stats.panics.fetch_add(1, Relaxed);
            Err(panicked(point, &e.plugin, &*payload))
        }
        Err(_) => {
            e.stats.timeouts.fetch_add(1, Relaxed);
            Err(Fault::timeout(format!(
                "plugin `{}` did not finish `{point}` within {timeout:?}",
                e.plugin
            ))
            .with_detail("plugin", &*e.plugin)
            .with_detail("point", point))
        }
    }
}

fn panicked(point: &str, plugin: &str, payload: &(dyn std::any::Any + Send)) -> Fault {
    let message = panic_message(payload);
    tracing::error!(point, plugin, panic = %message, "extension panicked");
    Fault::internal(format!(
        "plugin `{plugin}` panicked in `{point}`: {message}"
    ))
    .with_detail("plugin", plugin)
    .with_detail("point", point)
}
