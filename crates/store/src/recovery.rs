//! Recovery and reconciliation. At start, before the API accepts requests, every plugin
//! that owns resources with transient states (`Creating`, `Destroying`, `Starting`...) gets
//! them back to a stable one — finishing or undoing what was in flight from what its
//! records say — and then every operation a stopped node left `running` is closed with what
//! recovery made of it. Reconcilers marked periodic (keeping hosts and the database in
//! sync, say) run again every so often.
//!
//! A plugin registers a [`Reconciler`] in its `build`; they run in plugin start order, so
//! hosts are checked before the VMs on them.

use crate::operation::{Operation, Verb};
use flatstack_header::GetResource;
use flatstack_kernel::bus::Envelope;
use flatstack_kernel::{Fault, FaultCode, Kernel, Message};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A plugin's recovery of its own resources, made with [`Reconciler::at_start`] or
/// [`Reconciler::periodic`] and registered in `build` (`b.register(..)`).
#[non_exhaustive]
pub struct Reconciler {
    /// What it reconciles, for logs.
    pub name: &'static str,
    /// Also run periodically, not only at start. A periodic reconciler must leave alone
    /// resources that an operation is working on (their transient states say so).
    pub periodic: bool,
    /// The work: settles the plugin's resources from its own records. A failure is
    /// reported and the other reconcilers still run.
    pub run: fn(Kernel) -> BoxFuture<'static, Result<(), Fault>>,
}

impl Reconciler {
    /// Runs at start only.
    pub fn at_start(
        name: &'static str,
        run: fn(Kernel) -> BoxFuture<'static, Result<(), Fault>>,
    ) -> Self {
        Reconciler {
            name,
            periodic: false,
            run,
        }
    }

    /// Runs at start and then periodically.
    pub fn periodic(
        name: &'static str,
        run: fn(Kernel) -> BoxFuture<'static, Result<(), Fault>>,
    ) -> Self {
        Reconciler {
            name,
            periodic: true,
            run,
        }
    }
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Operations a stopped node had left running, now closed.
    pub operations: usize,
    /// The first reconciler's failure, if one failed (the others still ran, and every
    /// interrupted operation was closed).
    pub failure: Option<Fault>,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// Settles everything a stopped node left in flight: every reconciler, then every running
/// operation. Run once at start, before serving. A reconciler that fails is reported; the
/// others still run.
pub async fn recover(kernel: &Kernel) -> Result<Recovered, Fault> {
    let started = Instant::now();
    let store = crate::resource::store(kernel)?;
    let failure = run_reconcilers(kernel, false).await.err();
    let running = store.running_operations().await?;
    let operations = running.len();
    for op in running {
        let outcome = settle(kernel, &op).await;
        store.finish_operation(&op.uuid, &outcome, true).await?;
        tracing::info!(job = %op.uuid, kind = %op.kind, resource = ?op.resource_uuid,
            succeeded = outcome.is_ok(), "recovered an operation interrupted by a stop");
    }
    Ok(Recovered {
        operations,
        failure,
        elapsed: started.elapsed(),
    })
}

/// Runs the periodic reconcilers once (the node calls it on a timer).
pub async fn sync(kernel: &Kernel) -> Result<(), Fault> {
    run_reconcilers(kernel, true).await
}

async fn run_reconcilers(kernel: &Kernel, periodic_only: bool) -> Result<(), Fault> {
    let mut first_failure = None;
    for (plugin, reconciler) in kernel.registered::<Reconciler>() {
        if periodic_only && !reconciler.periodic {
            continue;
        }
        if let Err(fault) = (reconciler.run)(kernel.clone()).await {
            tracing::error!(plugin, reconciler = reconciler.name, %fault, "reconciliation failed");
            first_failure.get_or_insert(
                fault
                    .with_detail("plugin", plugin)
                    .with_detail("reconciler", reconciler.name),
            );
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// What recovery made of an interrupted operation, once the reconcilers ran: a create whose
/// resource exists (in a stable state) succeeded; a delete whose resource is gone
/// succeeded; anything else was interrupted, and says what its resource is now.
async fn settle(kernel: &Kernel, op: &Operation) -> Result<Value, Fault> {
    let current = match &op.resource_uuid {
        Some(uuid) => {
            let get = Envelope {
                service: op.service.clone(),
                resource: Some(uuid.clone()),
                message: GetResource::NAME.to_owned(),
                body: json!({}),
                operation: None,
            };
            match kernel.bus().request_json(get, None).await {
                Ok(inventory) => Some(inventory),
                Err(fault) if fault.code == FaultCode::NotFound => None,
                Err(fault) => return Err(fault),
            }
        }
        None => None,
    };
    let interrupted = |what: &str| {
        Fault::new(
            FaultCode::Unavailable,
            format!("the node stopped while this operation ran; {what}"),
        )
        .with_detail("interrupted", true)
    };
    match (op.verb, current) {
        (Verb::Create, Some(inventory)) => Ok(inventory),
        (Verb::Create, None) if op.resource_uuid.is_some() => {
            Err(interrupted("recovery undid what it had done"))
        }
        (Verb::Create, None) => Err(interrupted(
            "it had created nothing that recovery could find; retry it",
        )),
        (Verb::Delete, None) => Ok(Value::Null),
        (_, Some(inventory)) => Err(interrupted(
            "recovery settled its resource; read it for its current state",
        )
        .with_detail("resource", inventory)),
        (_, None) => Err(interrupted("its resource no longer exists")),
    }
}

/// Retries `attempt` with back-off while it fails with a transient fault (the database
/// busy), up to `tries` times: releases and undos must not be forgotten because
/// the store was briefly busy.
pub async fn retry<T, F, Fut>(what: &str, tries: u32, mut attempt: F) -> Result<T, Fault>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Fault>>,
{
    let mut delay = Duration::from_millis(20);
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(fault) if is_transient(&fault) && tried < tries => {
                tracing::warn!(what, %fault, tried, "transient failure; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                tried += 1;
            }
            other => return other,
        }
    }
}

/// A fault that may pass if tried again ([`FaultCode::is_transient`]).
pub fn is_transient(fault: &Fault) -> bool {
    fault.code.is_transient()
}
