//! Recovery: a VM left in a transient state by an operation that did not finish (the node
//! stopped, or a release failed) is brought to a stable one — a create is undone, a
//! destroy finished, a start or a stop settled from what the host runs — and VMs are kept
//! in step with what their hosts run.
//!
//! Every operation on an existing VM runs on the VM's queue, and so does [`RecoverVm`]: a
//! VM it finds in a transient state has no live operation (its operation would be ahead of
//! it on the queue). A create runs on no VM's queue (the VM has no uuid until it starts),
//! so creates in progress are marked ([`Creating`]) and left alone.
//!
//! Every release works from what its owner recorded for the VM (host capacity, addresses,
//! volumes, leases, quota: each keyed by the VM's uuid), so it runs the same after a
//! restart, or twice.

use crate::{flow, read, work_of, VMS};
use flatstack_header::infra::{HostQuery, HostRecord, HostStatus, Hosts};
use flatstack_header::record;
use flatstack_header::vm::{
    state, VmAllocateVolumes, VmDestroyed, VmPostInstantiate, VmPreInstantiate, VmRelease,
    VmReserve, VmWork, VM_SERVICE,
};
use flatstack_header::Inventory;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{DoUndoPoint, ExtensionPoint, Fault, Kernel};
use flatstack_store::recovery::is_transient;
use flatstack_store::resource::{store, text};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The VMs whose create runs in this process.
fn creating() -> &'static Mutex<HashSet<String>> {
    static CREATING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CREATING.get_or_init(Mutex::default)
}

/// Marks a VM as being created by this process while it lives.
pub(crate) struct Creating(String);

impl Creating {
    pub(crate) fn mark(uuid: &str) -> Creating {
        creating()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uuid.to_owned());
        Creating(uuid.to_owned())
    }

    fn is_live(uuid: &str) -> bool {
        creating()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uuid)
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        creating()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Internal: brings the addressed VM out of a transient state (sent to its queue).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecoverVm {}

// Its reply: what became of the VM, its state or `removed`.
flatstack_kernel::request!(RecoverVm = "vm.recover" => String, service VM_SERVICE);

/// How many VMs are recovered at once.
const CONCURRENCY: usize = 32;

/// Recovers every VM in a transient state (or left `Destroyed`), each on its own queue.
pub(crate) async fn reconcile(kernel: Kernel) -> Result<(), Fault> {
    let pending = {
        let mut tx = store(&kernel)?.read().await?;
        tx.query(
            "SELECT uuid FROM vm_instances WHERE state IN ($1, $2, $3, $4, $5)",
            &[
                json!(state::CREATING),
                json!(state::STARTING),
                json!(state::STOPPING),
                json!(state::DESTROYING),
                json!(state::DESTROYED),
            ],
        )
        .await?
    };
    let uuids: Vec<String> = pending
        .iter()
        .map(|vm| text(vm, "uuid").to_owned())
        .filter(|uuid| !Creating::is_live(uuid))
        .collect();
    let results: Vec<Result<String, Fault>> = stream::iter(uuids)
        .map(|uuid| {
            let kernel = kernel.clone();
            async move {
                kernel
                    .ask(RecoverVm {})
                    .resource(uuid.as_str())
                    .await
                    .map_err(|fault| fault.with_detail("vm", uuid))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// On the VM's queue: settles it if it is (still) in a transient state.
pub(crate) async fn recover_vm(kernel: &Kernel, uuid: &str) -> Result<String, Fault> {
    let vm = match read(kernel, uuid).await {
        Ok(vm) => vm,
        Err(fault) if fault.code == flatstack_kernel::FaultCode::NotFound => {
            return Ok("removed".into())
        }
        Err(fault) => return Err(fault),
    };
    let current = text(&vm, "state").to_owned();
    let mut work = work_of(kernel, &vm).await?;
    let settled = match current.as_str() {
        state::CREATING if !Creating::is_live(uuid) => {
            undo_create(kernel, &mut work).await?;
            "removed".to_owned()
        }
        state::DESTROYING | state::DESTROYED => {
            if let Err(fault) = stop_on_host(kernel, &work).await {
                // What it holds stays held while it may run: tried again later.
                incomplete(&work, vec![("hypervisor.stop", fault)])?;
            }
            finish_destroy(kernel, &mut work).await?;
            "removed".to_owned()
        }
        state::STARTING | state::STOPPING => {
            let to = match running_on_host(kernel, &work).await {
                Some(true) => state::RUNNING,
                Some(false) => state::STOPPED,
                None => state::UNKNOWN,
            };
            VMS.set_state(kernel, uuid, "state", to).await?;
            to.to_owned()
        }
        _ => return Ok(current),
    };
    tracing::info!(vm = %uuid, from = %current, to = %settled, "recovered a VM");
    Ok(settled)
}

/// Whether the VM's host runs it; `None` if the host cannot be asked.
async fn running_on_host(kernel: &Kernel, work: &VmWork) -> Option<bool> {
    let (host, driver) = flow::host_driver(kernel, work).ok()?;
    match driver.running_vms(kernel, host).await {
        Ok(running) => Some(running.contains(&work.vm_uuid)),
        Err(fault) => {
            tracing::warn!(vm = %work.vm_uuid, %fault, "cannot ask the VM's host what it runs");
            None
        }
    }
}

/// Stops the VM on its host if it may run there. A host that cannot be asked is logged (its
/// VM, if it runs, is reported by the host sync once the host is back); a host asked that
/// fails to stop it is an error, for recovery to try again.
async fn stop_on_host(kernel: &Kernel, work: &VmWork) -> Result<(), Fault> {
    if work.host.is_none() {
        return Ok(());
    }
    let (host, driver) = match flow::host_driver(kernel, work) {
        Ok(found) => found,
        Err(fault) => {
            tracing::warn!(vm = %work.vm_uuid, %fault, "recovery cannot ask the VM's host to stop it");
            return Ok(());
        }
    };
    driver.stop_vm(kernel, host, work).await
}

/// Undoes an interrupted create: whatever of it ran, in reverse, then the row (never
/// announced, so its removal is not either).
async fn undo_create(kernel: &Kernel, work: &mut VmWork) -> Result<(), Fault> {
    let mut failed = Vec::new();
    if let Err(fault) = undo::<VmPostInstantiate>(kernel, work).await {
        failed.push((VmPostInstantiate::NAME, fault));
    }
    if let Err(fault) = stop_on_host(kernel, work).await {
        // What it holds stays held while it may run: tried again later.
        failed.push(("hypervisor.start", fault));
        return incomplete(work, failed);
    }
    failed.extend(release_all(kernel, work, Giving::Undo).await);
    incomplete(work, failed)?;
    flow::remove_record(kernel, &work.vm_uuid, false).await
}

/// The end of a destroy, after the VM is stopped: everything it holds released (plugins'
/// through `vm.release`, then its NICs and host capacity), then `Destroyed` and removed.
/// If a release fails the VM stays `Destroying`, and recovery tries again.
pub(crate) async fn finish_destroy(kernel: &Kernel, work: &mut VmWork) -> Result<(), Fault> {
    let failed = release_all(kernel, work, Giving::Release).await;
    incomplete(work, failed)?;
    let uuid = work.vm_uuid.clone();
    VMS.set_state(kernel, &uuid, "state", state::DESTROYED)
        .await?;
    flow::remove_record(kernel, &uuid, true).await?;
    kernel.extensions().observe::<VmDestroyed>(work).await;
    Ok(())
}

/// How plugins give back what a VM holds: undoing an interrupted create's steps, or
/// releasing at destroy.
#[derive(Clone, Copy)]
enum Giving {
    Undo,
    Release,
}

/// Everything a VM holds, given back in the reverse order of the create: each release
/// is attempted even if an earlier one failed; the failures are returned.
async fn release_all(
    kernel: &Kernel,
    work: &mut VmWork,
    giving: Giving,
) -> Vec<(&'static str, Fault)> {
    let mut failed = Vec::new();
    let undoing = matches!(giving, Giving::Undo);
    if !undoing {
        let released = again_while_transient(VmRelease::NAME, work, |work| {
            let kernel = kernel.clone();
            Box::pin(async move { kernel.extensions().release::<VmRelease>(work).await })
        })
        .await;
        if let Err(fault) = released {
            failed.push((VmRelease::NAME, fault));
        }
    }
    if undoing {
        if let Err(fault) = undo::<VmPreInstantiate>(kernel, work).await {
            failed.push((VmPreInstantiate::NAME, fault));
        }
    }
    if let Err(fault) = flow::release_nics(kernel, &work.vm_uuid).await {
        failed.push(("nic.allocate", fault));
    }
    if undoing {
        if let Err(fault) = undo::<VmAllocateVolumes>(kernel, work).await {
            failed.push((VmAllocateVolumes::NAME, fault));
        }
    }
    if let Err(fault) = flow::release_host(kernel, &work.vm_uuid).await {
        failed.push(("host.allocate", fault));
    }
    if undoing {
        if let Err(fault) = undo::<VmReserve>(kernel, work).await {
            failed.push((VmReserve::NAME, fault));
        }
    }
    failed
}

/// `Err` naming the steps whose release failed, if any (`rollback: "incomplete"`, each in
/// `undo_failed`).
fn incomplete(work: &VmWork, failed: Vec<(&'static str, Fault)>) -> Result<(), Fault> {
    let Some((_, first)) = failed.first() else {
        return Ok(());
    };
    let steps: Vec<&str> = failed.iter().map(|(step, _)| *step).collect();
    tracing::error!(vm = %work.vm_uuid, ?steps, "releasing what the VM holds failed; recovery will retry");
    let fault = Fault::new(
        first.code,
        format!(
            "VM {}: releasing what it holds failed ({}): {}; recovery will retry",
            work.vm_uuid,
            steps.join(", "),
            first.message
        ),
    );
    Err(failed.into_iter().fold(fault, |fault, (step, undo)| {
        fault.with_undo_failure(Some(step), undo)
    }))
}

/// Undoes every implementor of `P` for the VM, again while the failure is transient (the
/// store busy): implementors' undos work from their own records, so running them again is
/// safe.
async fn undo<P>(kernel: &Kernel, work: &mut VmWork) -> Result<(), Fault>
where
    P: DoUndoPoint<Context = VmWork>,
{
    again_while_transient(P::NAME, work, |work| {
        let kernel = kernel.clone();
        Box::pin(async move { kernel.extensions().undo::<P>(work).await })
    })
    .await
}

/// Calls `call` on the VM's work again while it fails transiently (the store busy).
async fn again_while_transient<F>(point: &str, work: &mut VmWork, mut call: F) -> Result<(), Fault>
where
    F: for<'w> FnMut(&'w mut VmWork) -> BoxFuture<'w, Result<(), Fault>>,
{
    let mut delay = Duration::from_millis(20);
    let mut tried = 1;
    loop {
        match call(work).await {
            Err(fault) if is_transient(&fault) && tried < flow::RETRIES => {
                tracing::warn!(point, vm = %work.vm_uuid, %fault, "failed transiently; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                tried += 1;
            }
            other => return other,
        }
    }
}

/// Compares each connected host's VMs with the database: a VM the database has `Running`
/// that its host does not run is settled on its own queue (it becomes `Stopped`); a VM a
/// host runs that the database does not place there is reported, never adopted.
pub(crate) async fn sync_hosts(kernel: Kernel) -> Result<(), Fault> {
    let (hosts, vms) = {
        let query = HostQuery {
            status: Some(HostStatus::Connected),
            ..HostQuery::default()
        };
        let hosts = record::find::<HostRecord>(&kernel, query).await?;
        let mut tx = store(&kernel)?.read().await?;
        let vms = tx
            .query(
                "SELECT uuid, host_uuid, state FROM vm_instances WHERE host_uuid IS NOT NULL",
                &[],
            )
            .await?;
        (hosts, vms)
    };
    for host in hosts {
        let host_uuid = host.uuid.as_str();
        let driver = kernel.drivers().get::<Hosts>(&host.host_type)?;
        let running: HashSet<String> = match driver.running_vms(&kernel, &host).await {
            Ok(running) => running.into_iter().collect(),
            Err(fault) => {
                tracing::warn!(host = %host_uuid, %fault, "cannot ask a host what it runs");
                continue;
            }
        };
        let placed: Vec<&Inventory> = vms
            .iter()
            .filter(|vm| text(vm, "host_uuid") == host_uuid)
            .collect();
        for vm in &placed {
            let uuid = text(vm, "uuid");
            if text(vm, "state") == state::RUNNING && !running.contains(uuid) {
                let settle = crate::host_status::SettleVm {
                    running: Some(false),
                };
                kernel
                    .ask(settle)
                    .resource(uuid)
                    .await
                    .map_err(|fault| fault.with_detail("vm", uuid))?;
            }
        }
        let known: HashSet<&str> = placed.iter().map(|vm| text(vm, "uuid")).collect();
        for uuid in running.iter().filter(|uuid| !known.contains(uuid.as_str())) {
            tracing::warn!(host = %host_uuid, vm = %uuid, "the host runs a VM the database does not place there; left alone");
        }
    }
    Ok(())
}
