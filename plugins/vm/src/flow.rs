//! The create-VM flow: each step undone in reverse if a later one fails.

use crate::VMS;
use flatstack_header::infra::{HostDriver, Hosts, ReleaseCapacity, ReserveCapacity, HOST_SERVICE};
use flatstack_header::network::{AllocateIp, ReleaseIp, L3_NETWORK_SERVICE};
use flatstack_header::vm::{
    state, CreateVm, HostFilter, HostSort, Nic, VmAllocateVolumes, VmPostInstantiate,
    VmPreInstantiate, VmReserve, VmWork,
};
use flatstack_header::{Inventory, ResourceCreated, ResourceDeleted};
use flatstack_kernel::flow::ExtensionStep;
use flatstack_kernel::{async_trait, Fault, Flow, Kernel, Step};
use flatstack_store::resource::{new_uuid, row, store, text};
use serde_json::json;

/// Where the create flow leaves the new VM's inventory, as its last step read it.
pub(crate) type Created = std::sync::Arc<std::sync::Mutex<Option<Inventory>>>;

/// The flow for one create request; `created` receives the VM's inventory.
pub(crate) fn create(kernel: &Kernel, msg: &CreateVm, created: &Created) -> Flow<VmWork> {
    Flow::new("vm.create")
        .step(ExtensionStep::<VmReserve>::new(kernel))
        .step(Record {
            kernel: kernel.clone(),
            msg: msg.clone(),
        })
        .step(AllocateHost(kernel.clone()))
        .step(ExtensionStep::<VmAllocateVolumes>::new(kernel))
        .step(AllocateNics(kernel.clone()))
        .step(ExtensionStep::<VmPreInstantiate>::new(kernel))
        .step(Hypervisor::start(kernel))
        .step(ExtensionStep::<VmPostInstantiate>::new(kernel))
        .step(MarkRunning {
            kernel: kernel.clone(),
            created: created.clone(),
        })
}

/// Writes the VM's row, `Creating`; removed again on rollback.
struct Record {
    kernel: Kernel,
    msg: CreateVm,
}

#[async_trait]
impl Step<VmWork> for Record {
    fn name(&self) -> &str {
        "vm.record"
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        let at = flatstack_store::now();
        let vm = row(json!({
            "uuid": work.vm_uuid, "name": self.msg.name, "description": self.msg.description,
            "owner": work.owner,
            "state": state::CREATING, "instance_offering_uuid": self.msg.instance_offering_uuid,
            "image_uuid": self.msg.image_uuid, "host_uuid": null,
            "cpu_num": work.cpu_num, "memory_size": work.memory_size,
            "created_at": at, "updated_at": at,
        }));
        let mut tx = store(&self.kernel)?.begin().await?;
        tx.insert(VMS.table, &vm).await?;
        tx.commit(self.kernel.bus()).await?;
        Ok(())
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        remove_record(&self.kernel, &work.vm_uuid, false).await
    }
}

/// Removes a VM's row and its NIC rows; `announce` records `resource.deleted` (a VM whose
/// create failed was never announced, so its removal is not either).
pub(crate) async fn remove_record(
    kernel: &Kernel,
    uuid: &str,
    announce: bool,
) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let mut filter = Inventory::new();
    filter.insert("vm_instance_uuid".into(), json!(uuid));
    for nic in tx.list("vm_nics", &filter).await? {
        tx.delete("vm_nics", text(&nic, "uuid")).await?;
    }
    tx.delete(VMS.table, uuid).await?;
    if announce {
        tx.emit(ResourceDeleted {
            kind: VMS.kind.to_owned(),
            uuid: uuid.to_owned(),
        })
        .await?;
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// Picks a host through the filter pipeline and reserves the VM's CPU and memory on it.
struct AllocateHost(Kernel);

#[async_trait]
impl Step<VmWork> for AllocateHost {
    fn name(&self) -> &str {
        "host.allocate"
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        let kernel = &self.0;
        let mut candidates = {
            let mut tx = store(kernel)?.read().await?;
            let mut filter = Inventory::new();
            filter.insert("status".into(), json!("Connected"));
            filter.insert("state".into(), json!("Enabled"));
            if let Some(host) = &work.requested_host {
                filter.insert("uuid".into(), json!(host));
            }
            tx.list("hosts", &filter).await?
        };
        if candidates.is_empty() {
            return Err(Fault::conflict(
                "no connected and enabled host to place the VM on",
            ));
        }
        candidates = kernel
            .extensions()
            .filter::<HostFilter>(work, candidates)
            .await?;
        candidates = kernel
            .extensions()
            .filter::<HostSort>(work, candidates)
            .await?;
        // Another create may have taken a candidate's capacity since it was read: the
        // reservation, serialised per host, is what decides.
        let mut last = None;
        for host in candidates {
            let reserve = ReserveCapacity {
                cpu_num: work.cpu_num,
                memory_size: work.memory_size,
            };
            match kernel
                .request(HOST_SERVICE, reserve)
                .resource(text(&host, "uuid"))
                .await
            {
                Ok(host) => {
                    // Recorded on the VM's row when it is marked running.
                    work.host = Some(host);
                    return Ok(());
                }
                Err(fault) => last = Some(fault),
            }
        }
        Err(last.unwrap_or_else(|| Fault::conflict("no host has room for the VM")))
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_host(&self.0, work).await
    }
}

/// Gives the VM's CPU and memory back to its host.
pub(crate) async fn release_host(kernel: &Kernel, work: &VmWork) -> Result<(), Fault> {
    let Some(host) = work.host_uuid() else {
        return Ok(());
    };
    let release = ReleaseCapacity {
        cpu_num: work.cpu_num,
        memory_size: work.memory_size,
    };
    kernel.request(HOST_SERVICE, release).resource(host).await?;
    Ok(())
}

/// Asks each L3 network for an address and records a NIC for it.
struct AllocateNics(Kernel);

#[async_trait]
impl Step<VmWork> for AllocateNics {
    fn name(&self) -> &str {
        "nic.allocate"
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        let kernel = &self.0;
        for l3 in work.l3_network_uuids.clone() {
            let address = kernel
                .request(L3_NETWORK_SERVICE, AllocateIp { ip: None })
                .resource(l3.as_str())
                .await?;
            let nic_uuid = new_uuid();
            // A locally administered MAC (02:...) from 40 random bits of the NIC's uuid.
            let mac = format!(
                "02:{}:{}:{}:{}:{}",
                &nic_uuid[0..2],
                &nic_uuid[2..4],
                &nic_uuid[4..6],
                &nic_uuid[6..8],
                &nic_uuid[8..10]
            );
            let nic = Nic {
                uuid: nic_uuid,
                l3_network_uuid: l3.clone(),
                ip: text(&address, "ip").to_owned(),
                mac,
            };
            // The NIC rows are written when the VM is marked running.
            work.nics.push(nic);
        }
        Ok(())
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_nics(&self.0, work).await
    }

    async fn cleanup(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_nics(&self.0, work).await
    }
}

/// Removes the VM's NIC rows and gives their addresses back.
pub(crate) async fn release_nics(kernel: &Kernel, work: &VmWork) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    for nic in &work.nics {
        if tx.exists("vm_nics", &nic.uuid).await? {
            tx.delete("vm_nics", &nic.uuid).await?;
        }
    }
    tx.commit(kernel.bus()).await?;
    for nic in &work.nics {
        let release = ReleaseIp { ip: nic.ip.clone() };
        if let Err(fault) = kernel
            .request(L3_NETWORK_SERVICE, release)
            .resource(nic.l3_network_uuid.as_str())
            .await
        {
            // Already released (e.g. a rollback that ran twice) is not an error here.
            if fault.code != flatstack_kernel::FaultCode::NotFound {
                return Err(fault);
            }
        }
    }
    Ok(())
}

/// The VM's host and its hypervisor driver; refused while the host is not `Connected`
/// (what the VM does there cannot be known, let alone changed).
pub(crate) fn host_driver<'w>(
    kernel: &Kernel,
    work: &'w VmWork,
) -> Result<(&'w Inventory, std::sync::Arc<dyn HostDriver>), Fault> {
    let host = work
        .host
        .as_ref()
        .ok_or_else(|| Fault::internal(format!("VM {} has no host", work.vm_uuid)))?;
    let status = text(host, "status");
    if status != "Connected" {
        return Err(Fault::conflict(format!(
            "host {} of VM {} is {status}: reconnect it first",
            text(host, "uuid"),
            work.vm_uuid
        ))
        .with_detail("host_status", status));
    }
    Ok((host, kernel.drivers().get::<Hosts>(text(host, "type"))?))
}

/// Asks the VM's host's driver to start or to stop it; undone by the opposite.
pub(crate) struct Hypervisor {
    kernel: Kernel,
    start: bool,
}

impl Hypervisor {
    pub(crate) fn start(kernel: &Kernel) -> Self {
        Hypervisor {
            kernel: kernel.clone(),
            start: true,
        }
    }

    pub(crate) fn stop(kernel: &Kernel) -> Self {
        Hypervisor {
            kernel: kernel.clone(),
            start: false,
        }
    }

    async fn power(&self, work: &VmWork, on: bool) -> Result<(), Fault> {
        let (host, driver) = host_driver(&self.kernel, work)?;
        if on {
            driver.start_vm(&self.kernel, host, work).await
        } else {
            driver.stop_vm(&self.kernel, host, work).await
        }
    }
}

#[async_trait]
impl Step<VmWork> for Hypervisor {
    fn name(&self) -> &str {
        if self.start {
            "hypervisor.start"
        } else {
            "hypervisor.stop"
        }
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        self.power(work, self.start).await
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        self.power(work, !self.start).await
    }
}

/// The VM is running: its host, its NICs, its state and its `resource.created` event, in
/// one transaction (the earlier steps keep them in the flow's work: fewer commits per
/// create, and a VM is never seen half-made).
struct MarkRunning {
    kernel: Kernel,
    created: Created,
}

#[async_trait]
impl Step<VmWork> for MarkRunning {
    fn name(&self) -> &str {
        "vm.running"
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        let kernel = &self.kernel;
        let mut tx = store(kernel)?.begin().await?;
        let at = flatstack_store::now();
        for nic in &work.nics {
            let nic_row = row(json!({"uuid": nic.uuid, "vm_instance_uuid": work.vm_uuid,
                "l3_network_uuid": nic.l3_network_uuid, "ip": nic.ip, "mac": nic.mac,
                "created_at": at, "updated_at": at}));
            tx.insert("vm_nics", &nic_row).await?;
        }
        tx.update(
            VMS.table,
            &work.vm_uuid,
            &row(json!({"state": state::RUNNING, "host_uuid": work.host_uuid(), "updated_at": at})),
        )
        .await?;
        let inventory = VMS.read(kernel, &mut tx, &work.vm_uuid).await?;
        tx.emit(ResourceCreated {
            kind: VMS.kind.to_owned(),
            uuid: work.vm_uuid.clone(),
            inventory: inventory.clone(),
        })
        .await?;
        tx.commit(kernel.bus()).await?;
        *self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inventory);
        Ok(())
    }
}
