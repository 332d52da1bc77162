//! VMs follow their host's connection: when a host is lost (`Disconnected`), the VMs it
//! was running become `Unknown` — they may run on, or not, and nothing can be asked of the
//! host; when it is `Connected` again, its driver says which VMs it runs and each `Unknown`
//! VM becomes `Running` or `Stopped` accordingly (ZStack's VM state sync after a host
//! reconnects).

use crate::{read, VMS};
use flatstack_header::infra::{self, HostRecord, Hosts};
use flatstack_header::points::StateChanged;
use flatstack_header::record;
use flatstack_header::vm::{state, VM_SERVICE};
use flatstack_header::{Inventory, StateChange};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{async_trait, Fault, Kernel, KernelRef, Observe};
use flatstack_store::resource::{store, text};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Internal: settles one VM's state after its host was lost or came back. The VM plugin
/// sends it to the VM's own queue, so it never overlaps an operation on the VM; a VM that
/// has moved on meanwhile (stopped, destroyed) is left as it is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SettleVm {
    /// `None`: the host is lost (a `Running` VM becomes `Unknown`). `Some(running)`: the
    /// host is back and runs the VM or not (an `Unknown` VM becomes `Running` or
    /// `Stopped`); `Some(false)` for a `Running` VM: the host sync found it not running
    /// (it becomes `Stopped` if the host, asked again, says so).
    pub(crate) running: Option<bool>,
}

flatstack_kernel::request!(SettleVm = "vm.settle" => Inventory, service VM_SERVICE);

pub(crate) async fn settle(
    kernel: &Kernel,
    uuid: &str,
    running: Option<bool>,
) -> Result<Inventory, Fault> {
    let vm = read(kernel, uuid).await?;
    let to = match (text(&vm, "state"), running) {
        (state::RUNNING, None) => state::UNKNOWN,
        (state::UNKNOWN, Some(true)) => state::RUNNING,
        (state::UNKNOWN, Some(false)) => state::STOPPED,
        // The host sync saw it not running: ask again, now that nothing else can change
        // the VM (this runs on its queue), before calling it stopped.
        (state::RUNNING, Some(false)) => {
            let work = crate::work_of(kernel, &vm).await?;
            let (host, driver) = crate::flow::host_driver(kernel, &work)?;
            if driver
                .running_vms(kernel, host)
                .await?
                .contains(&work.vm_uuid)
            {
                return Ok(vm);
            }
            tracing::warn!(vm = %uuid, "the VM's host does not run it: it is Stopped");
            state::STOPPED
        }
        _ => return Ok(vm),
    };
    VMS.set_state(kernel, uuid, "state", to).await
}

/// Watches hosts' `status` and settles the VMs of a host that was lost or is back.
pub(crate) struct HostStatus(pub(crate) KernelRef);

#[async_trait]
impl Observe<StateChanged> for HostStatus {
    async fn observe(&self, change: &StateChange) -> Result<(), Fault> {
        if change.kind != "hosts" || change.field != "status" {
            return Ok(());
        }
        let settled = match change.to.as_str() {
            s if s == infra::HostStatus::Disconnected.as_str() => state::RUNNING,
            s if s == infra::HostStatus::Connected.as_str() => state::UNKNOWN,
            _ => return Ok(()),
        };
        let kernel = self.0.get()?;
        let host = record::get::<HostRecord>(&kernel, &change.uuid)
            .await?
            .ok_or_else(|| Fault::not_found(format!("no host {}", change.uuid)))?;
        let vms = {
            let mut tx = store(&kernel)?.read().await?;
            let mut filter = Inventory::new();
            filter.insert("host_uuid".into(), json!(change.uuid));
            filter.insert("state".into(), json!(settled));
            tx.list(VMS.table, &filter).await?
        };
        if vms.is_empty() {
            return Ok(());
        }
        let running = if settled == state::UNKNOWN {
            let driver = kernel.drivers().get::<Hosts>(&host.host_type)?;
            Some(driver.running_vms(&kernel, &host).await?)
        } else {
            None
        };
        for vm in vms {
            let uuid = text(&vm, "uuid").to_owned();
            let settle = SettleVm {
                running: running.as_ref().map(|running| running.contains(&uuid)),
            };
            // Sent, not awaited: an operation on the VM may be waiting for this host's
            // queue, where this observer runs.
            let kernel = kernel.clone();
            tokio::spawn(async move {
                let settled = kernel.ask(settle).resource(&uuid).await;
                if let Err(fault) = settled {
                    tracing::warn!(vm = %uuid, %fault, "settling the VM's state failed");
                }
            });
        }
        Ok(())
    }
}
