//! The flow engine: a chain of async steps over a typed shared context.
//!
//! On failure, the failing step's own `cleanup` runs, then every completed step's
//! `rollback` in reverse order; rollback errors are logged and the rollback goes on, and
//! the flow's fault carries them (`rollback: "incomplete"`, `undo_failed`).
//! A panicking step is a failure like any other. Each step's duration is recorded.

use crate::extension::DoUndoPoint;
use crate::fault::panic_message;
use crate::{Fault, Kernel};
use async_trait::async_trait;
use futures::FutureExt;
use serde::Serialize;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
// quanta reads the TSC: ~12 ns a read here against ~35 ns for `std::time::Instant`,
// which dominated the per-call overhead (docs/performance.md).
use quanta::Instant;
use std::time::Duration;
use tracing::Instrument;

/// One step of a flow over context `C`.
#[async_trait]
pub trait Step<C: Send>: Send + Sync {
    /// Shown in reports, errors and traces.
    fn name(&self) -> &str;

    /// `true` to skip this step for this run (it then needs no rollback).
    fn skip(&self, _ctx: &C) -> bool {
        false
    }

    /// Does the step. On `Err` its own `cleanup` runs, then every completed step's
    /// `rollback`, in reverse.
    async fn run(&self, ctx: &mut C) -> Result<(), Fault>;

    /// Undoes a successful `run` because a later step failed.
    async fn rollback(&self, _ctx: &mut C) -> Result<(), Fault> {
        Ok(())
    }

    /// Cleans up after this step's own `run` failed part-way.
    async fn cleanup(&self, _ctx: &mut C) -> Result<(), Fault> {
        Ok(())
    }

    /// `true` to keep what this step did, rather than roll it back, once the undo of a
    /// later step (or the failed step's cleanup) has failed: a step that records the
    /// flow's subject where recovery finds it (a VM's row, `Creating`) keeps it, so that
    /// what the failed undo left held is found and released again later. Its outcome is
    /// then [`StepOutcome::Kept`].
    fn keep_if_rollback_incomplete(&self) -> bool {
        false
    }
}

/// What happened to one step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Ran, and kept (the flow succeeded).
    Done,
    /// Skipped ([`Step::skip`]).
    Skipped,
    /// Its `run` failed: the flow's failure (its cleanup ran).
    Failed,
    /// Ran, then rolled back because a later step failed.
    RolledBack,
    /// Its rollback (or, for the failed step, its cleanup) failed; logged, rollback went on,
    /// and the flow's fault says so (`rollback: "incomplete"`, `undo_failed`).
    RollbackFailed,
    /// Not rolled back, as it asks once an undo has failed
    /// ([`Step::keep_if_rollback_incomplete`]).
    Kept,
    /// Not reached because an earlier step failed.
    NotRun,
}

/// One step of a report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepRecord<'a> {
    /// The step's [`Step::name`].
    pub step: &'a str,
    /// What happened to it.
    pub outcome: StepOutcome,
    /// Time spent in `run` (zero if skipped or not run).
    pub duration: Duration,
}

/// What happened to each step of one run.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// The flow's name.
    pub flow: Arc<str>,
    /// Shared with the flow, so a run copies no step names.
    names: Arc<[String]>,
    results: Vec<(StepOutcome, Duration)>,
    /// The whole run, rollback included.
    pub duration: Duration,
}

impl FlowReport {
    /// Every step in order.
    pub fn steps(&self) -> impl Iterator<Item = StepRecord<'_>> {
        self.names
            .iter()
            .zip(&self.results)
            .map(|(step, &(outcome, duration))| StepRecord {
                step,
                outcome,
                duration,
            })
    }

    /// What happened to the step named `step`, if the flow has one.
    pub fn outcome(&self, step: &str) -> Option<StepOutcome> {
        self.steps().find(|s| s.step == step).map(|s| s.outcome)
    }
}

impl Serialize for FlowReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Report<'a> {
            flow: &'a str,
            steps: Vec<StepRecord<'a>>,
            duration: Duration,
        }
        Report {
            flow: &self.flow,
            steps: self.steps().collect(),
            duration: self.duration,
        }
        .serialize(serializer)
    }
}

/// A failed run: the fault (with `details.flow` and `details.step`) and the report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{fault}")]
pub struct FlowFailure {
    /// The failing step's fault, with every rollback failure attached.
    pub fault: Fault,
    /// What happened to each step.
    pub report: FlowReport,
}

/// A named chain of steps; build once, run many times.
pub struct Flow<C> {
    name: Arc<str>,
    names: Arc<[String]>,
    steps: Vec<Arc<dyn Step<C>>>,
}

impl<C: Send + 'static> Flow<C> {
    /// A flow with no steps yet; `name` is shown in reports, faults and traces.
    pub fn new(name: &str) -> Self {
        Flow {
            name: Arc::from(name),
            names: Arc::new([]),
            steps: Vec::new(),
        }
    }

    /// Adds `step` after the others.
    pub fn step(mut self, step: impl Step<C> + 'static) -> Self {
        let mut names = self.names.to_vec();
        names.push(step.name().to_owned());
        self.names = names.into();
        self.steps.push(Arc::new(step));
        self
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step names in order.
    pub fn steps(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Runs the steps in order; on failure rolls back and returns the failing fault.
    pub async fn run(&self, ctx: &mut C) -> Result<FlowReport, Box<FlowFailure>> {
        let started = Instant::now();
        let mut records = vec![(StepOutcome::NotRun, Duration::ZERO); self.steps.len()];
        let mut clock = started;
        let noted = crate::progress::Noted::start();
        for (i, step) in self.steps.iter().enumerate() {
            if step.skip(ctx) {
                records[i].0 = StepOutcome::Skipped;
                continue;
            }
            if let Some(noted) = &noted {
                noted.step(&self.name, step.name());
            }
            // One clock read per step: a step's time runs from the end of the previous one.
            let begun = clock;
            let span = tracing::debug_span!("flow.step", flow = %self.name, step = step.name());
            let result = contained(step.name(), step.run(ctx)).instrument(span).await;
            clock = Instant::now();
            records[i].1 = clock - begun;
            if let Err(fault) = result {
                records[i].0 = StepOutcome::Failed;
                // A refusal (no room, a veto, bad input) is the flow working as meant; the
                // rest is worth an operator's look.
                if fault.code.is_refusal() {
                    tracing::debug!(flow = %self.name, step = step.name(), %fault, "step refused; rolling back");
                } else {
                    tracing::warn!(flow = %self.name, step = step.name(), %fault, "step failed; rolling back");
                }
                // Undo failures of the step's own run (a do/undo point's implementors
                // that completed before one failed) are its cleanup's.
                let mut fault = fault.undo_failures_in(&[("step", step.name())]);
                if let Err(cleanup) = contained(step.name(), step.cleanup(ctx)).await {
                    tracing::error!(flow = %self.name, step = step.name(), fault = %cleanup, "cleanup failed; rolling back");
                    fault = fault.with_undo_failure(Some(step.name()), cleanup);
                }
                if fault.rollback_incomplete() {
                    records[i].0 = StepOutcome::RollbackFailed;
                }
                let fault = self.roll_back(&mut records, i, ctx, fault).await;
                let fault = fault
                    .with_detail("flow", &*self.name)
                    .with_detail("step", step.name());
                return Err(Box::new(FlowFailure {
                    fault,
                    report: self.report(records, started, Instant::now()),
                }));
            }
            records[i].0 = StepOutcome::Done;
        }
        Ok(self.report(records, started, clock))
    }

    /// Rolls back the steps before `failed` that completed, in reverse; returns `fault` with
    /// every rollback failure attached.
    async fn roll_back(
        &self,
        records: &mut [(StepOutcome, Duration)],
        failed: usize,
        ctx: &mut C,
        mut fault: Fault,
    ) -> Fault {
        let noted = crate::progress::Noted::start();
        for j in (0..failed).rev() {
            if records[j].0 != StepOutcome::Done {
                continue;
            }
            let step = &self.steps[j];
            if fault.rollback_incomplete() && step.keep_if_rollback_incomplete() {
                records[j].0 = StepOutcome::Kept;
                continue;
            }
            if let Some(noted) = &noted {
                noted.step(&self.name, &format!("undoing {}", step.name()));
            }
            records[j].0 = match contained(step.name(), step.rollback(ctx)).await {
                Ok(()) => StepOutcome::RolledBack,
                Err(undo) => {
                    tracing::error!(flow = %self.name, step = step.name(), fault = %undo, "rollback failed; going on");
                    fault = fault.with_undo_failure(Some(step.name()), undo);
                    StepOutcome::RollbackFailed
                }
            };
        }
        fault
    }

    fn report(
        &self,
        results: Vec<(StepOutcome, Duration)>,
        started: Instant,
        ended: Instant,
    ) -> FlowReport {
        FlowReport {
            flow: self.name.clone(),
            names: self.names.clone(),
            results,
            duration: ended - started,
        }
    }
}

async fn contained(
    step: &str,
    call: impl std::future::Future<Output = Result<(), Fault>>,
) -> Result<(), Fault> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            Err(Fault::internal(format!(
                "step `{step}` panicked: {}",
                panic_message(&*payload)
            )))
        })
}

/// A step that runs the do/undo implementors of extension point `P` (whose context is the
/// flow's), so flows and extension points compose.
pub struct ExtensionStep<P> {
    kernel: Kernel,
    _point: PhantomData<fn() -> P>,
}

impl<P: DoUndoPoint> ExtensionStep<P> {
    /// A step that calls `P` through `kernel`'s extensions.
    pub fn new(kernel: &Kernel) -> Self {
        ExtensionStep {
            kernel: kernel.clone(),
            _point: PhantomData,
        }
    }
}

#[async_trait]
impl<P: DoUndoPoint> Step<P::Context> for ExtensionStep<P> {
    fn name(&self) -> &str {
        P::NAME
    }

    async fn run(&self, ctx: &mut P::Context) -> Result<(), Fault> {
        // On failure the dispatcher has already undone the implementors that completed,
        // which is this step's own cleanup.
        self.kernel.extensions().run::<P>(ctx).await
    }

    /// Undoes every implementor; again, with a growing pause, while the failure is
    /// transient (the store busy): an undo must not be given up for a moment's contention,
    /// and implementors' undos are idempotent (they work from what their run recorded).
    async fn rollback(&self, ctx: &mut P::Context) -> Result<(), Fault> {
        let mut pause = UNDO_FIRST_PAUSE;
        for _ in 1..UNDO_TRIES {
            match self.kernel.extensions().undo::<P>(ctx).await {
                Err(fault) if fault.code.is_transient() => {
                    tracing::warn!(point = P::NAME, %fault, "undo failed transiently; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
        self.kernel.extensions().undo::<P>(ctx).await
    }
}

/// How many times [`ExtensionStep`] tries an undo that fails transiently, and its first
/// pause between tries (doubled each time: 20 ms … 1.3 s in all).
const UNDO_TRIES: u32 = 7;
const UNDO_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
