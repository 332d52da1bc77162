//! Volumes: every VM's root volume, made with the VM through `vm.volume.allocate` on
//! primary storage its host's cluster reaches (the VM plugin does not know this plugin
//! exists), and data volumes, created on their own and attached to and detached from VMs.
//! A volume's bytes are its storage driver's business; its capacity is the primary storage
//! service's, reserved through requests addressed to the storage so it never over-commits.

mod in_use;

use flatstack_header::infra::HostRecord;
use flatstack_header::infra::Hosts;
use flatstack_header::record;
use flatstack_header::storage::{
    ImageRecord, PrimaryStorageQuery, PrimaryStorageRecord, StorageStatus,
};
use flatstack_header::storage::{PrimaryStorages, ReleaseStorage, ReserveStorage, StorageDriver};
use flatstack_header::vm::{HostFilter, VmAllocateVolumes, VmRelease, VmWork};
use flatstack_header::vm::{VmRecord, VmState};
use flatstack_header::volume::{kind, AttachVolume, CreateVolume, DetachVolume, VOLUME_SERVICE};
use flatstack_header::{
    ApiAction, ApiResource, Attachment, DeleteResource, Inventory, Record, ResourceAttached,
    ResourceCreated, ResourceDeleted, ResourceDetached, ResourceUpdated,
};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, DoUndo, Fault, Filter, Kernel, KernelRef, Message, Plugin, PluginBuilder, Release,
};
use flatstack_store::recovery::{retry, Reconciler};
use flatstack_store::resource::{
    check_name, derived_uuid, new_uuid, row, store, text, ResourceTable,
};
use flatstack_store::ResourceLock;
use serde_json::{json, Value};
use std::sync::Arc;

static VOLUMES: ResourceTable = ResourceTable::new("volumes", "volumes").filters(&[
    "name",
    "type",
    "status",
    "vm_instance_uuid",
    "primary_storage_uuid",
    "account_uuid",
]);

pub struct VolumePlugin;

impl Plugin for VolumePlugin {
    fn name(&self) -> &'static str {
        "volume"
    }

    fn description(&self) -> &'static str {
        "Volumes: VMs' root volumes and data volumes on primary storage."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its table refers to primary storage and VMs.
        &["storage", "vm"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "volumes",
            "CREATE TABLE volumes (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                type TEXT NOT NULL, status TEXT NOT NULL, size BIGINT NOT NULL,
                primary_storage_uuid TEXT NOT NULL REFERENCES primary_storage (uuid),
                vm_instance_uuid TEXT REFERENCES vm_instances (uuid),
                device_id BIGINT, image_uuid TEXT,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ));
        b.migration(Migration::new(
            2,
            "volumes belong to accounts",
            "ALTER TABLE volumes ADD COLUMN account_uuid TEXT NOT NULL
                DEFAULT '00000000000000000000000000000001'",
        ));
        let kernel = b.kernel();
        b.do_undo::<VmAllocateVolumes>(RootVolume(kernel.clone()));
        b.release::<VmRelease>(RootVolume(kernel.clone()));
        // Only hosts whose cluster reaches primary storage with room for the root volume
        // are candidates, so the allocator does not pick one the volume step would refuse.
        b.filter::<HostFilter>(ReachesStorage(kernel));
        b.register(Reconciler::at_start(
            "volumes in transient states",
            |kernel| Box::pin(reconcile(kernel)),
        ));
        let mut service = b.service(VOLUME_SERVICE, ());
        VOLUMES.serve_reads(&mut service);
        service
            .handle::<CreateVolume, _, _>(|_, msg, cx| async move {
                create_data_volume(&cx.kernel, cx.operation.as_deref(), msg).await
            })
            .handle::<AttachVolume, _, _>(|_, msg, cx| async move {
                attach(&cx.kernel, cx.resource_id()?, &msg.vm_instance_uuid).await
            })
            .handle::<DetachVolume, _, _>(|_, _, cx| async move {
                detach(&cx.kernel, cx.resource_id()?).await
            })
            .handle::<DeleteResource, _, _>(|_, _, cx| async move {
                delete_data_volume(&cx.kernel, cx.resource_id()?).await
            });
        b.register(ApiResource {
            path: "volumes",
            service: VOLUME_SERVICE,
            create: CreateVolume::NAME,
            access: flatstack_header::identity::Access::Owned,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(
                flatstack_header::inventory::schema::<flatstack_header::inventory::VolumeInventory>,
            ),
            filters: VOLUMES.filters,
            actions: const {
                &[
                    ApiAction::member("attach", AttachVolume::NAME),
                    ApiAction::member("detach", DetachVolume::NAME),
                ]
            },
            children: &[],
        });
        in_use::build(b);
    }
}

/// Primary storage and its driver.
struct Storage {
    record: PrimaryStorageRecord,
    driver: Arc<dyn StorageDriver>,
}

impl Storage {
    async fn load(kernel: &Kernel, uuid: &str) -> Result<Option<Storage>, Fault> {
        record::get::<PrimaryStorageRecord>(kernel, uuid)
            .await?
            .map(|record| Storage::of(kernel, record))
            .transpose()
    }

    /// The storage of `record`, with its type's driver.
    fn of(kernel: &Kernel, record: PrimaryStorageRecord) -> Result<Storage, Fault> {
        let driver = kernel
            .drivers()
            .get::<PrimaryStorages>(&record.storage_type)?;
        Ok(Storage { record, driver })
    }

    fn uuid(&self) -> &str {
        &self.record.uuid
    }

    /// Takes `size` bytes of this storage for volume `consumer`; asking again for the same
    /// volume takes nothing more.
    async fn reserve(&self, kernel: &Kernel, consumer: &str, size: u64) -> Result<(), Fault> {
        let reserve = ReserveStorage {
            consumer: consumer.to_owned(),
            size,
        };
        kernel.ask(reserve).resource(self.uuid()).await?;
        Ok(())
    }
}

/// Gives back the bytes volume `consumer` holds, wherever they are; safe to run twice, and
/// retried while the store is briefly unavailable.
async fn release(kernel: &Kernel, consumer: &str) -> Result<(), Fault> {
    retry("release primary storage", 5, || async {
        let release = ReleaseStorage {
            consumer: consumer.to_owned(),
        };
        kernel.ask(release).await
    })
    .await?;
    Ok(())
}

/// Deletes a volume's bytes (if its storage is still there) and gives back what it holds;
/// safe to run twice.
async fn free(kernel: &Kernel, volume: &Inventory) -> Result<(), Fault> {
    if let Some(storage) = Storage::load(kernel, text(volume, "primary_storage_uuid")).await? {
        storage
            .driver
            .delete_volume(kernel, &storage.record, volume)
            .await?;
    }
    release(kernel, text(volume, "uuid")).await
}

/// Removes a volume's row; `announce` records `resource.deleted` (a volume that was never
/// announced is not either).
async fn remove_row(kernel: &Kernel, uuid: &str, announce: bool) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    if !tx.exists(VOLUMES.table, uuid).await? {
        return Ok(());
    }
    tx.delete(VOLUMES.table, uuid).await?;
    if announce {
        tx.emit(ResourceDeleted {
            kind: VOLUMES.kind.to_owned(),
            uuid: uuid.to_owned(),
        })
        .await?;
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// `conflict` unless the primary storage `uuid` is still attached to `cluster`: checked once
/// a root volume's row is committed (a detach after it sees the volume and is refused).
async fn still_attached(kernel: &Kernel, uuid: &str, cluster: &str) -> Result<(), Fault> {
    let attached = record::get::<PrimaryStorageRecord>(kernel, uuid)
        .await?
        .is_some_and(|ps| ps.attached_cluster_uuids.iter().any(|c| c == cluster));
    if attached {
        return Ok(());
    }
    Err(Fault::conflict(format!(
        "primary storage {uuid} was detached from cluster {cluster} while a root volume was placed on it"
    )))
}

/// Connected primary storage attached to `cluster` with `size` bytes free, most free first.
async fn candidates(kernel: &Kernel, cluster: &str, size: u64) -> Result<Vec<Storage>, Fault> {
    let query = PrimaryStorageQuery {
        status: Some(StorageStatus::Connected),
        ..PrimaryStorageQuery::default()
    };
    let mut found: Vec<PrimaryStorageRecord> = record::find(kernel, query)
        .await?
        .into_iter()
        .filter(|ps: &PrimaryStorageRecord| {
            ps.available_capacity >= size && ps.attached_cluster_uuids.iter().any(|c| c == cluster)
        })
        .collect();
    found.sort_by_key(|ps| std::cmp::Reverse(ps.available_capacity));
    found
        .into_iter()
        .map(|record| Storage::of(kernel, record))
        .collect()
}

/// The size of the VM's root volume: its image's, as the create read it (or, in a context
/// rebuilt from a stored VM, as its owner says now).
async fn image_size(kernel: &Kernel, vm: &VmWork) -> Result<u64, Fault> {
    if let Some(image) = &vm.image {
        return Ok(image.size);
    }
    let image = record::get::<ImageRecord>(kernel, &vm.image_uuid)
        .await?
        .ok_or_else(|| Fault::conflict(format!("image {} is gone", vm.image_uuid)))?;
    Ok(image.size)
}

/// Keeps the hosts whose cluster reaches connected primary storage with room for the VM's
/// root volume.
struct ReachesStorage(KernelRef);

#[async_trait]
impl Filter<HostFilter> for ReachesStorage {
    async fn filter(&self, vm: &VmWork, hosts: Vec<HostRecord>) -> Result<Vec<HostRecord>, Fault> {
        let kernel = self.0.get()?;
        let size = image_size(&kernel, vm).await?;
        let mut reachable = std::collections::BTreeMap::new();
        let mut kept = Vec::new();
        for host in hosts {
            let cluster = host.cluster_uuid.clone();
            let ok = match reachable.get(&cluster) {
                Some(ok) => *ok,
                None => {
                    let ok = !candidates(&kernel, &cluster, size).await?.is_empty();
                    reachable.insert(cluster, ok);
                    ok
                }
            };
            if ok {
                kept.push(host);
            }
        }
        Ok(kept)
    }
}

fn volume_row(
    name: &str,
    description: &str,
    volume_type: &str,
    size: u64,
    ps: &str,
    account: &str,
) -> Inventory {
    let at = flatstack_store::now();
    row(json!({
        "uuid": new_uuid(), "name": name, "description": description, "type": volume_type,
        "account_uuid": account,
        "status": "Ready", "size": size, "primary_storage_uuid": ps,
        "vm_instance_uuid": null, "device_id": null, "image_uuid": null,
        "created_at": at, "updated_at": at,
    }))
}

/// The uuid of a VM's root volume: derived from the VM's, so that the bytes taken for it
/// are found from the VM alone, even if the node stopped before the volume's row was written.
fn root_volume_uuid(vm: &str) -> String {
    derived_uuid(vm, "root-volume")
}

/// The root volume of a new VM: the image's size, on primary storage the VM's host reaches.
/// Its bytes are reserved first (the reservation, one at a time per storage, decides among
/// concurrent creates), then its row is written and announced, then the driver makes it.
struct RootVolume(KernelRef);

/// At destroy, the same as undoing the create: from the same records.
#[async_trait]
impl Release<VmRelease> for RootVolume {
    async fn release(&self, vm: &mut VmWork) -> Result<(), Fault> {
        DoUndo::<VmAllocateVolumes>::undo(self, vm).await
    }
}

#[async_trait]
impl DoUndo<VmAllocateVolumes> for RootVolume {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let host = vm
            .host
            .clone()
            .ok_or_else(|| Fault::internal("the VM has no host yet"))?;
        let size = image_size(&kernel, vm).await?;
        let candidates = candidates(&kernel, &host.cluster_uuid, size).await?;
        let uuid = root_volume_uuid(&vm.vm_uuid);
        let mut chosen = None;
        let mut last = None;
        for storage in candidates {
            match storage.reserve(&kernel, &uuid, size).await {
                Ok(()) => {
                    chosen = Some(storage);
                    break;
                }
                Err(fault) if fault.code == flatstack_kernel::FaultCode::Conflict => {
                    last = Some(fault)
                }
                Err(fault) => return Err(fault),
            }
        }
        let Some(storage) = chosen else {
            return Err(last.unwrap_or_else(|| {
                Fault::conflict(format!(
                    "no connected primary storage attached to cluster {} has {size} bytes free",
                    host.cluster_uuid
                ))
            }));
        };
        let mut volume = volume_row(
            &format!("ROOT-for-{}", vm.name),
            "",
            kind::ROOT,
            size,
            storage.uuid(),
            &vm.account_uuid,
        );
        volume.insert("uuid".into(), json!(uuid));
        volume.insert("vm_instance_uuid".into(), json!(vm.vm_uuid));
        volume.insert("device_id".into(), json!(0));
        volume.insert("image_uuid".into(), json!(vm.image_uuid));
        let made = async {
            // Announced with its row, as every volume is: billing and other services see
            // root volumes too (and their removal if the VM's create is undone).
            let mut tx = store(&kernel)?.begin().await?;
            // The storage may not be detached from the cluster while this row commits
            // (the detach holds it exclusively through its vetoes); one that committed
            // before is seen by the check below.
            tx.lock_resource(
                &[(PrimaryStorageRecord::KIND, storage.uuid())],
                ResourceLock::Shared,
            )
            .await?;
            tx.insert(VOLUMES.table, &volume).await?;
            tx.emit(ResourceCreated {
                kind: VOLUMES.kind.to_owned(),
                uuid: uuid.clone(),
                inventory: volume.clone(),
            })
            .await?;
            tx.commit(kernel.bus()).await?;
            still_attached(&kernel, storage.uuid(), &host.cluster_uuid).await?;
            storage
                .driver
                .create_volume(&kernel, &storage.record, &volume)
                .await
        }
        .await;
        if let Err(fault) = made {
            // This implementor failed, so the flow will not undo it: leave nothing held, or
            // say what was left (the VM's recovery discards it again).
            return Err(match discard_root_volume(&kernel, &vm.vm_uuid).await {
                Ok(()) => fault,
                Err(undo) => fault.with_undo_failure(None, undo),
            });
        }
        Ok(())
    }

    /// Deletes the VM's root volume and detaches its data volumes (a destroyed VM's data
    /// volumes outlive it). Works from the stored rows and the root volume's derived uuid,
    /// so it is the same after a restart or when run twice.
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        discard_root_volume(&kernel, &vm.vm_uuid).await?;
        for volume in volumes_of(&kernel, &vm.vm_uuid).await? {
            set_detached(&kernel, text(&volume, "uuid")).await?;
        }
        Ok(())
    }
}

/// The volumes attached to (or being attached to) a VM.
async fn volumes_of(kernel: &Kernel, vm: &str) -> Result<Vec<Inventory>, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let mut filter = Inventory::new();
    filter.insert("vm_instance_uuid".into(), json!(vm));
    Ok(tx.list(VOLUMES.table, &filter).await?)
}

/// Deletes a VM's root volume, if it has one, and gives back the bytes reserved for it,
/// whether or not its row was written.
async fn discard_root_volume(kernel: &Kernel, vm: &str) -> Result<(), Fault> {
    let uuid = root_volume_uuid(vm);
    let stored = {
        let mut tx = store(kernel)?.read().await?;
        tx.get(VOLUMES.table, &uuid).await?
    };
    match stored {
        Some(volume) => {
            free(kernel, &volume).await?;
            remove_row(kernel, &uuid, true).await
        }
        None => release(kernel, &uuid).await,
    }
}

/// A data volume: its row first (`Creating`, linked to the operation, not announced), then
/// its bytes and the driver's volume, then `Ready` and announced. A stop at any instant
/// leaves a `Creating` row that recovery undoes.
async fn create_data_volume(
    kernel: &Kernel,
    operation: Option<&str>,
    msg: CreateVolume,
) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    if msg.size == 0 || i64::try_from(msg.size).is_err() {
        return Err(Fault::invalid(
            "size",
            "size must be between 1 and 2^63-1 bytes",
        ));
    }
    let ps = match &msg.primary_storage_uuid {
        Some(ps) => ps.clone(),
        None => {
            let query = PrimaryStorageQuery {
                status: Some(StorageStatus::Connected),
                ..PrimaryStorageQuery::default()
            };
            let all: Vec<PrimaryStorageRecord> = record::find(kernel, query).await?;
            match all.into_iter().max_by_key(|ps| ps.available_capacity) {
                Some(ps) => ps.uuid,
                None => return Err(Fault::conflict("there is no connected primary storage")),
            }
        }
    };
    let storage = Storage::load(kernel, &ps).await?.ok_or_else(|| {
        Fault::invalid("primary_storage_uuid", format!("no primary storage {ps}"))
    })?;
    let mut volume = volume_row(
        &msg.name,
        &msg.description,
        kind::DATA,
        msg.size,
        &ps,
        &msg.account_uuid,
    );
    volume.insert("status".into(), json!(status::CREATING));
    let uuid = text(&volume, "uuid").to_owned();
    {
        let mut tx = store(kernel)?.begin().await?;
        tx.insert(VOLUMES.table, &volume).await?;
        if let Some(operation) = operation {
            tx.link_operation(operation, &uuid).await?;
        }
        tx.commit(kernel.bus()).await?;
    }
    let made = async {
        storage.reserve(kernel, &uuid, msg.size).await?;
        storage
            .driver
            .create_volume(kernel, &storage.record, &volume)
            .await
    }
    .await;
    if let Err(fault) = made {
        // What failed is the answer; an undo that fails too is on it, and leaves the row
        // `Creating`, which recovery undoes at the next start.
        let undone = async {
            free(kernel, &volume).await?;
            remove_row(kernel, &uuid, false).await
        }
        .await;
        return Err(match undone {
            Ok(()) => fault,
            Err(undo) => fault.with_undo_failure(Some("volume.create"), undo),
        });
    }
    let mut tx = store(kernel)?.begin().await?;
    tx.update(VOLUMES.table, &uuid, &row(json!({"status": status::READY})))
        .await?;
    let inventory = VOLUMES.read(kernel, &mut tx, &uuid).await?;
    tx.emit(ResourceCreated {
        kind: VOLUMES.kind.to_owned(),
        uuid: uuid.clone(),
        inventory: inventory.clone(),
    })
    .await?;
    tx.commit(kernel.bus()).await?;
    Ok(inventory)
}

/// A volume's status while it is stable (`Ready`) and while an operation is on it.
mod status {
    pub const READY: &str = "Ready";
    pub const CREATING: &str = "Creating";
    pub const DELETING: &str = "Deleting";
    pub const ATTACHING: &str = "Attaching";
    pub const DETACHING: &str = "Detaching";
}

/// Moves a volume from status `from` to `to` if it is still in `from` (one conditional
/// update); `conflict` naming its status otherwise.
async fn transition(kernel: &Kernel, uuid: &str, from: &str, to: &str) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let moved = tx
        .statement(
            "UPDATE volumes SET status = $1, updated_at = $2 WHERE uuid = $3 AND status = $4",
            &[
                json!(to),
                json!(flatstack_store::now()),
                json!(uuid),
                json!(from),
            ],
        )
        .await?;
    if moved == 0 {
        let current = VOLUMES.read(kernel, &mut tx, uuid).await?;
        let status = text(&current, "status");
        return Err(
            Fault::conflict(format!("volume {uuid} is {status}, not {from}"))
                .with_detail("status", status),
        );
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}

async fn read(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    VOLUMES.read(kernel, &mut tx, uuid).await
}

/// A data volume, refused with `conflict` if it is a root volume (which lives and dies
/// with its VM).
async fn data_volume(kernel: &Kernel, uuid: &str, action: &str) -> Result<Inventory, Fault> {
    let volume = read(kernel, uuid).await?;
    if text(&volume, "type") != kind::DATA {
        return Err(Fault::conflict(format!(
            "cannot {action} root volume {uuid}: it lives and dies with its VM"
        )));
    }
    Ok(volume)
}

/// `Deleting` first, so that a stop in the middle is finished by recovery.
async fn delete_data_volume(kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
    let volume = data_volume(kernel, uuid, "delete").await?;
    if let Some(vm) = volume.get("vm_instance_uuid").and_then(Value::as_str) {
        return Err(Fault::conflict(format!(
            "volume {uuid} is attached to VM {vm}; detach it first"
        )));
    }
    transition(kernel, uuid, status::READY, status::DELETING).await?;
    free(kernel, &volume).await?;
    remove_row(kernel, uuid, true).await
}

/// The VM a volume is to be (or is) attached to, its host, and the host's driver.
struct Target {
    work: VmWork,
    host: HostRecord,
    driver: Arc<dyn flatstack_header::infra::HostDriver>,
}

async fn target(kernel: &Kernel, vm_uuid: &str, field: &str) -> Result<Target, Fault> {
    let vm: VmRecord = record::named(kernel, field, vm_uuid).await?;
    if vm.state != VmState::Running && vm.state != VmState::Stopped {
        return Err(Fault::conflict(format!(
            "VM {vm_uuid} is {}; volumes attach to and detach from running or stopped VMs",
            vm.state
        ))
        .with_detail("state", vm.state.as_str()));
    }
    let host = match &vm.host_uuid {
        Some(host) => record::get::<HostRecord>(kernel, host).await?,
        None => None,
    }
    .ok_or_else(|| Fault::conflict(format!("VM {vm_uuid} has no host")))?;
    let driver = kernel.drivers().get::<Hosts>(&host.host_type)?;
    let work = VmWork {
        vm_uuid: vm_uuid.to_owned(),
        name: vm.name,
        account_uuid: vm.account_uuid,
        host: Some(host.clone()),
        ..VmWork::default()
    };
    Ok(Target { work, host, driver })
}

/// Marks the volume `Attaching` to the VM (while the VM is running or stopped: a VM being
/// destroyed gets no new volume), asks the host's driver, then records it attached.
async fn attach(kernel: &Kernel, uuid: &str, vm_uuid: &str) -> Result<Inventory, Fault> {
    let volume = data_volume(kernel, uuid, "attach").await?;
    if let Some(vm) = volume.get("vm_instance_uuid").and_then(Value::as_str) {
        return Err(Fault::conflict(format!(
            "volume {uuid} is already attached to VM {vm}"
        )));
    }
    let target = target(kernel, vm_uuid, "vm_instance_uuid").await?;
    // A volume is attached only to a VM of its own account: another's answers as absent.
    if target.work.account_uuid != text(&volume, "account_uuid") {
        return Err(
            Fault::not_found(format!("no VM {vm_uuid}")).with_detail("field", "vm_instance_uuid")
        );
    }
    let cluster = &target.host.cluster_uuid;
    let ps = text(&volume, "primary_storage_uuid");
    let reachable = record::get::<PrimaryStorageRecord>(kernel, ps)
        .await?
        .is_some_and(|ps| ps.attached_cluster_uuids.contains(cluster));
    if !reachable {
        return Err(Fault::conflict(format!(
            "VM {vm_uuid}'s cluster {cluster} cannot reach primary storage {ps}"
        )));
    }
    {
        let mut tx = store(kernel)?.begin().await?;
        let marked = tx
            .statement(
                "UPDATE volumes SET status = $1, vm_instance_uuid = $2, updated_at = $3
                 WHERE uuid = $4 AND status = $5 AND vm_instance_uuid IS NULL",
                &[
                    json!(status::ATTACHING),
                    json!(vm_uuid),
                    json!(flatstack_store::now()),
                    json!(uuid),
                    json!(status::READY),
                ],
            )
            .await?;
        if marked == 0 {
            return Err(Fault::conflict(format!(
                "volume {uuid} cannot be attached to VM {vm_uuid} now: it changed"
            )));
        }
        tx.commit(kernel.bus()).await?;
    }
    // Marked first, checked after: a destroy that began before this mark is seen here; one
    // that begins after it finds the volume marked with the VM and releases it.
    let vm = record::get::<VmRecord>(kernel, vm_uuid).await?;
    if !vm.is_some_and(|vm| matches!(vm.state, VmState::Running | VmState::Stopped)) {
        abandon_attach(kernel, uuid).await?;
        return Err(Fault::conflict(format!(
            "volume {uuid} cannot be attached to VM {vm_uuid} now: the VM changed"
        )));
    }
    if let Err(fault) = target
        .driver
        .attach_volume(kernel, &target.host, &target.work, &volume)
        .await
    {
        return Err(match abandon_attach(kernel, uuid).await {
            Ok(()) => fault,
            Err(undo) => fault.with_undo_failure(Some("volume.attach"), undo),
        });
    }
    if !finish_attach(kernel, uuid, vm_uuid).await? {
        // The VM's destroy, which runs on the VM's queue, not this volume's, released the
        // volume meanwhile (and may have removed the VM): the host gives it back too.
        if let Err(fault) = target
            .driver
            .detach_volume(kernel, &target.host, &target.work, &volume)
            .await
        {
            tracing::warn!(volume = %uuid, vm = %vm_uuid, %fault, "cannot detach a volume from a VM destroyed while it was attached");
        }
        return Err(Fault::conflict(format!(
            "VM {vm_uuid} was destroyed while volume {uuid} was being attached to it"
        )));
    }
    read(kernel, uuid).await
}

/// Records an attach done: the volume attached to the VM with the next free device id,
/// if it is still `Attaching` to it (one conditional update); `false` if the VM's destroy
/// has released it meanwhile.
async fn finish_attach(kernel: &Kernel, uuid: &str, vm: &str) -> Result<bool, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    // Attaches of other volumes to the VM run beside this one: the VM held exclusively
    // until the device id is written, so two never take the same.
    tx.lock_resource(&[(VmRecord::KIND, vm)], ResourceLock::Exclusive)
        .await?;
    let attached = tx
        .statement(
            "UPDATE volumes SET status = $1, updated_at = $2,
                 device_id = (SELECT COALESCE(MAX(device_id), 0) + 1 FROM volumes
                              WHERE vm_instance_uuid = $3)
             WHERE uuid = $4 AND status = $5 AND vm_instance_uuid = $3",
            &[
                json!(status::READY),
                json!(flatstack_store::now()),
                json!(vm),
                json!(uuid),
                json!(status::ATTACHING),
            ],
        )
        .await?;
    if attached == 0 {
        return Ok(false);
    }
    let inventory = VOLUMES.read(kernel, &mut tx, uuid).await?;
    tx.emit(ResourceUpdated {
        kind: VOLUMES.kind.to_owned(),
        uuid: uuid.to_owned(),
        inventory,
    })
    .await?;
    tx.emit(ResourceAttached(vm_attachment(uuid, vm))).await?;
    tx.commit(kernel.bus()).await?;
    Ok(true)
}

/// A volume as attached to (or detached from) a VM, for the canonical events.
fn vm_attachment(volume: &str, vm: &str) -> Attachment {
    Attachment {
        kind: VOLUMES.kind.to_owned(),
        uuid: volume.to_owned(),
        target_kind: VmRecord::KIND.to_owned(),
        target_uuid: vm.to_owned(),
    }
}

/// Back from `Attaching` to detached, as it was: it never was attached, so nothing is
/// announced.
async fn abandon_attach(kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    tx.statement(
        "UPDATE volumes SET status = $1, vm_instance_uuid = NULL, device_id = NULL,
             updated_at = $2
         WHERE uuid = $3 AND status = $4",
        &[
            json!(status::READY),
            json!(flatstack_store::now()),
            json!(uuid),
            json!(status::ATTACHING),
        ],
    )
    .await?;
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// Marks the volume `Detaching`, asks the host's driver, then records it detached.
async fn detach(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let volume = data_volume(kernel, uuid, "detach").await?;
    let Some(vm_uuid) = volume.get("vm_instance_uuid").and_then(Value::as_str) else {
        return Err(Fault::conflict(format!("volume {uuid} is not attached")));
    };
    let target = target(kernel, vm_uuid, "vm_instance_uuid").await?;
    transition(kernel, uuid, status::READY, status::DETACHING).await?;
    if let Err(fault) = target
        .driver
        .detach_volume(kernel, &target.host, &target.work, &volume)
        .await
    {
        return Err(
            match transition(kernel, uuid, status::DETACHING, status::READY).await {
                Ok(()) => fault,
                Err(undo) => fault.with_undo_failure(Some("volume.detach"), undo),
            },
        );
    }
    set_detached(kernel, uuid).await?;
    read(kernel, uuid).await
}

/// Recovery at start: settles every volume an interrupted operation left in a transient
/// status. A create is undone, a delete finished; an attach or a detach ends detached (the
/// host is asked to detach it, if it can be reached).
async fn reconcile(kernel: Kernel) -> Result<(), Fault> {
    let pending = {
        let mut tx = store(&kernel)?.read().await?;
        tx.query(
            "SELECT * FROM volumes WHERE status IN ($1, $2, $3, $4) ORDER BY uuid",
            &[
                json!(status::CREATING),
                json!(status::DELETING),
                json!(status::ATTACHING),
                json!(status::DETACHING),
            ],
        )
        .await?
    };
    for volume in pending {
        let uuid = text(&volume, "uuid");
        match text(&volume, "status") {
            status::CREATING => {
                free(&kernel, &volume).await?;
                remove_row(&kernel, uuid, false).await?;
            }
            status::DELETING => {
                free(&kernel, &volume).await?;
                remove_row(&kernel, uuid, true).await?;
            }
            _ => {
                if let Some(vm) = volume.get("vm_instance_uuid").and_then(Value::as_str) {
                    let detached = async {
                        let target = target(&kernel, vm, "vm_instance_uuid").await?;
                        target
                            .driver
                            .detach_volume(&kernel, &target.host, &target.work, &volume)
                            .await
                    }
                    .await;
                    if let Err(fault) = detached {
                        tracing::warn!(volume = %uuid, vm, %fault, "recovery could not ask the host to detach a volume");
                    }
                }
                if text(&volume, "status") == status::ATTACHING {
                    abandon_attach(&kernel, uuid).await?;
                } else {
                    set_detached(&kernel, uuid).await?;
                }
            }
        }
        tracing::info!(volume = %uuid, status = text(&volume, "status"), "recovered a volume");
    }
    Ok(())
}

/// Records a volume detached (and `Ready`); an attach is recorded by [`finish_attach`].
async fn set_detached(kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let before = VOLUMES.read(kernel, &mut tx, uuid).await?;
    tx.update(
        VOLUMES.table,
        uuid,
        &row(json!({"vm_instance_uuid": null, "device_id": null, "status": status::READY})),
    )
    .await?;
    // Data volumes are announced (created, updated, deleted); root volumes live and die
    // inside their VM's announced life cycle.
    let inventory = VOLUMES.read(kernel, &mut tx, uuid).await?;
    if text(&inventory, "type") == kind::DATA {
        tx.emit(ResourceUpdated {
            kind: VOLUMES.kind.to_owned(),
            uuid: uuid.to_owned(),
            inventory,
        })
        .await?;
        if let Some(vm) = before.get("vm_instance_uuid").and_then(|v| v.as_str()) {
            tx.emit(ResourceDetached(vm_attachment(uuid, vm))).await?;
        }
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}
