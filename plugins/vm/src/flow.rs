//! The create-VM flow: each step undone in reverse if a later one fails.

use crate::VMS;
use flatstack_header::infra::{
    HostDriver, HostQuery, HostRecord, HostState, HostStatus, Hosts, ReleaseCapacity,
    ReserveCapacity,
};
use flatstack_header::network::{AllocateIp, ReleaseIps};
use flatstack_header::record::{self, Record as _};
use flatstack_header::storage::{ImageRecord, InstanceOfferingRecord};
use flatstack_header::vm::{
    state, CreateVm, HostFilter, HostSort, Nic, VmAllocateVolumes, VmPostInstantiate,
    VmPreInstantiate, VmReserve, VmWork,
};
use flatstack_header::{Inventory, ResourceCreated, ResourceDeleted};
use flatstack_kernel::flow::ExtensionStep;
use flatstack_kernel::{async_trait, Fault, Flow, Kernel, Step};
use flatstack_store::recovery::retry;
use flatstack_store::resource::{new_uuid, row, store, text};
use flatstack_store::ResourceLock;
use serde_json::json;

/// Where the create flow leaves the new VM's inventory, as its last step read it.
pub(crate) type Created = std::sync::Arc<std::sync::Mutex<Option<Inventory>>>;

/// The flow for one create request, done as `operation` if the request names one;
/// `created` receives the VM's inventory. The VM's row comes first, so that whatever is
/// taken for it after is taken by a VM recovery can find (`Creating`), whatever instant
/// the node stops at.
pub(crate) fn create(
    kernel: &Kernel,
    msg: &CreateVm,
    operation: Option<&str>,
    created: &Created,
) -> Flow<VmWork> {
    Flow::new("vm.create")
        .step(Record {
            kernel: kernel.clone(),
            msg: msg.clone(),
            operation: operation.map(str::to_owned),
        })
        .step(ExtensionStep::<VmReserve>::new(kernel))
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

/// Writes the VM's row, `Creating`, and links it to the operation; removed on rollback,
/// unless an undo failed.
struct Record {
    kernel: Kernel,
    msg: CreateVm,
    operation: Option<String>,
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
            "account_uuid": work.account_uuid,
            "state": state::CREATING, "instance_offering_uuid": self.msg.instance_offering_uuid,
            "image_uuid": self.msg.image_uuid, "host_uuid": null,
            "cpu_num": work.cpu_num, "memory_size": work.memory_size,
            "created_at": at, "updated_at": at,
        }));
        let mut tx = store(&self.kernel)?.begin().await?;
        // The image and offering may not be deleted while this row commits (their delete
        // holds them exclusively, see `ResourceTable::remove`).
        tx.lock_resource(
            &[
                (ImageRecord::KIND, &self.msg.image_uuid),
                (
                    InstanceOfferingRecord::KIND,
                    &self.msg.instance_offering_uuid,
                ),
            ],
            ResourceLock::Shared,
        )
        .await?;
        tx.insert(VMS.table, &vm).await?;
        if let Some(operation) = &self.operation {
            tx.link_operation(operation, &work.vm_uuid).await?;
        }
        tx.commit(self.kernel.bus()).await?;
        // Checked when the request was read, and again now that the row makes the VM a
        // user of them: a delete of either committed before the row is seen gone here;
        // one after is refused by its veto, which sees the row.
        let (image, offering) = futures::try_join!(
            record::get::<ImageRecord>(&self.kernel, &self.msg.image_uuid),
            record::get::<InstanceOfferingRecord>(&self.kernel, &self.msg.instance_offering_uuid),
        )?;
        let gone = match (image, offering) {
            (None, _) => Some(("image_uuid", "image", &self.msg.image_uuid)),
            (_, None) => Some((
                "instance_offering_uuid",
                "instance offering",
                &self.msg.instance_offering_uuid,
            )),
            _ => None,
        };
        if let Some((field, what, uuid)) = gone {
            let fault = Fault::conflict(format!(
                "{what} {uuid} was deleted while VM {} was being created",
                work.vm_uuid
            ))
            .with_detail("field", field);
            // This step failed, so the flow does not roll it back: undo it here (what is
            // left if that fails too, recovery removes).
            return Err(match self.rollback(work).await {
                Ok(()) => fault,
                Err(undo) => fault.with_undo_failure(Some(self.name()), undo),
            });
        }
        Ok(())
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        retry("remove the VM's row", RETRIES, || {
            remove_record(&self.kernel, &work.vm_uuid, false)
        })
        .await
    }

    /// The row, `Creating`, is how recovery finds what a failed undo left held: it undoes
    /// the create again (every release works from records and runs twice safely).
    fn keep_if_rollback_incomplete(&self) -> bool {
        true
    }
}

/// Removes a VM's row and its NIC rows; `announce` records `resource.deleted` (a VM whose
/// create failed was never announced, so its removal is not either). Already gone is done.
pub(crate) async fn remove_record(
    kernel: &Kernel,
    uuid: &str,
    announce: bool,
) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    if !tx.exists(VMS.table, uuid).await? {
        return Ok(());
    }
    tx.delete_where("vm_nics", "vm_instance_uuid", uuid).await?;
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
        let query = HostQuery {
            status: Some(HostStatus::Connected),
            state: Some(HostState::Enabled),
            ..HostQuery::default()
        };
        let mut candidates = record::find::<HostRecord>(kernel, query).await?;
        if let Some(host) = &work.requested_host {
            candidates.retain(|h| &h.uuid == host);
        }
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
                consumer: work.vm_uuid.clone(),
                cpu_num: work.cpu_num,
                memory_size: work.memory_size,
            };
            match kernel.ask(reserve).resource(&host.uuid).await {
                Ok(host) => {
                    // Recorded on the VM's row with its NICs.
                    work.host = Some(host);
                    return Ok(());
                }
                Err(fault) => last = Some(fault),
            }
        }
        Err(last.unwrap_or_else(|| Fault::conflict("no host has room for the VM")))
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_host(&self.0, &work.vm_uuid).await
    }
}

/// Gives back the CPU and memory the VM holds, on whichever host: from the host's record
/// of what the VM holds, so it is the same after a restart or when run twice.
pub(crate) async fn release_host(kernel: &Kernel, vm_uuid: &str) -> Result<(), Fault> {
    retry("release host capacity", RETRIES, || async {
        let release = ReleaseCapacity {
            consumer: vm_uuid.to_owned(),
        };
        kernel.ask(release).await
    })
    .await?;
    Ok(())
}

/// How often a release is tried while the store answers that it is busy.
pub(crate) const RETRIES: u32 = 8;

/// Asks each L3 network for an address (held in the VM's name), then records the NICs and
/// the host on the VM's row: from then on the VM is seen with its host and NICs.
struct AllocateNics(Kernel);

#[async_trait]
impl Step<VmWork> for AllocateNics {
    fn name(&self) -> &str {
        "nic.allocate"
    }

    async fn run(&self, work: &mut VmWork) -> Result<(), Fault> {
        let kernel = &self.0;
        for l3 in work.l3_network_uuids.clone() {
            let allocate = AllocateIp {
                ip: None,
                consumer: Some(work.vm_uuid.clone()),
            };
            let address = kernel.ask(allocate).resource(l3.as_str()).await?;
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
            let network = work
                .networks
                .iter()
                .find(|n| n.l3_network_uuid == l3)
                .ok_or_else(|| Fault::internal(format!("no L2 network known for L3 {l3}")))?;
            work.nics.push(Nic {
                uuid: nic_uuid,
                l3_network_uuid: l3.clone(),
                l2_network_uuid: network.l2_network_uuid.clone(),
                l2_type: network.l2_type.clone(),
                ip: text(&address, "ip").to_owned(),
                mac,
            });
        }
        let mut tx = store(kernel)?.begin().await?;
        let at = flatstack_store::now();
        for nic in &work.nics {
            let nic_row = row(json!({"uuid": nic.uuid, "vm_instance_uuid": work.vm_uuid,
                "l3_network_uuid": nic.l3_network_uuid, "l2_network_uuid": nic.l2_network_uuid,
                "l2_type": nic.l2_type, "ip": nic.ip, "mac": nic.mac,
                "created_at": at, "updated_at": at}));
            tx.insert("vm_nics", &nic_row).await?;
        }
        tx.update(
            VMS.table,
            &work.vm_uuid,
            &row(json!({"host_uuid": work.host_uuid(), "updated_at": at})),
        )
        .await?;
        tx.commit(kernel.bus()).await?;
        Ok(())
    }

    async fn rollback(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_nics(&self.0, &work.vm_uuid).await
    }

    async fn cleanup(&self, work: &mut VmWork) -> Result<(), Fault> {
        release_nics(&self.0, &work.vm_uuid).await
    }
}

/// Removes the VM's NIC rows and gives back every address it holds: found by the VM's uuid,
/// so it is the same after a restart or when run twice.
pub(crate) async fn release_nics(kernel: &Kernel, vm_uuid: &str) -> Result<(), Fault> {
    retry("release NICs", RETRIES, || async {
        let mut tx = store(kernel)?.begin().await?;
        tx.delete_where("vm_nics", "vm_instance_uuid", vm_uuid)
            .await?;
        tx.commit(kernel.bus()).await?;
        let release = ReleaseIps {
            consumer: vm_uuid.to_owned(),
        };
        kernel.ask(release).await
    })
    .await?;
    Ok(())
}

/// The VM's host and its hypervisor driver; refused while the host is not `Connected`
/// (what the VM does there cannot be known, let alone changed).
pub(crate) fn host_driver<'w>(
    kernel: &Kernel,
    work: &'w VmWork,
) -> Result<(&'w HostRecord, std::sync::Arc<dyn HostDriver>), Fault> {
    let host = work
        .host
        .as_ref()
        .ok_or_else(|| Fault::internal(format!("VM {} has no host", work.vm_uuid)))?;
    if host.status != HostStatus::Connected {
        return Err(Fault::conflict(format!(
            "host {} of VM {} is {}: reconnect it first",
            host.uuid, work.vm_uuid, host.status
        ))
        .with_detail("host_status", host.status.as_str()));
    }
    Ok((host, kernel.drivers().get::<Hosts>(&host.host_type)?))
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

/// The VM is running: its state and its `resource.created` event, in one transaction.
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
        // The row as the update left it, in the same statement.
        let updated = tx
            .query(
                "UPDATE vm_instances SET state = $1, updated_at = $2 WHERE uuid = $3 RETURNING *",
                &[
                    json!(state::RUNNING),
                    json!(flatstack_store::now()),
                    json!(work.vm_uuid),
                ],
            )
            .await?;
        let row = updated
            .into_iter()
            .next()
            .ok_or_else(|| VMS.not_found(&work.vm_uuid))?;
        let inventory = VMS.inventory_of(kernel, &mut tx, row).await?;
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
