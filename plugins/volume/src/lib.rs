//! Volumes: every VM's root volume, made with the VM through `vm.volume.allocate` on
//! primary storage its host's cluster reaches (the VM plugin does not know this plugin
//! exists), and data volumes, created on their own and attached to and detached from VMs.
//! A volume's bytes are its storage driver's business; its capacity is the primary storage
//! service's, reserved through requests addressed to the storage so it never over-commits.

mod in_use;

use flatstack_header::infra::Hosts;
use flatstack_header::storage::{
    PrimaryStorages, ReleaseStorage, ReserveStorage, StorageDriver, PRIMARY_STORAGE_SERVICE,
};
use flatstack_header::vm::{state as vm_state, HostFilter, VmAllocateVolumes, VmWork};
use flatstack_header::volume::{kind, AttachVolume, CreateVolume, DetachVolume, VOLUME_SERVICE};
use flatstack_header::{
    ApiAction, ApiResource, DeleteResource, Inventory, ResourceCreated, ResourceDeleted,
    ResourceUpdated,
};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, DoUndo, Fault, Filter, Kernel, KernelRef, Message, Plugin, PluginBuilder,
};
use flatstack_store::resource::{check_name, new_uuid, row, store, text, ResourceTable};
use flatstack_store::Tx;
use serde_json::{json, Value};
use std::sync::Arc;

static VOLUMES: ResourceTable = ResourceTable {
    kind: "volumes",
    table: "volumes",
    filters: &[
        "name",
        "type",
        "status",
        "vm_instance_uuid",
        "primary_storage_uuid",
    ],
    joined: None,
    before_delete: None,
    decorate: None,
};

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
        let kernel = b.kernel();
        b.do_undo::<VmAllocateVolumes>(RootVolume(kernel.clone()));
        // Only hosts whose cluster reaches primary storage with room for the root volume
        // are candidates, so the allocator does not pick one the volume step would refuse.
        b.filter::<HostFilter>(ReachesStorage(kernel));
        let mut service = b.service(VOLUME_SERVICE, ());
        VOLUMES.serve_reads(&mut service);
        service
            .handle::<CreateVolume, _, _>(|_, msg, cx| async move {
                create_data_volume(&cx.kernel, msg).await
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
            driver_kind: None,
            filters: VOLUMES.filters,
            actions: &[
                ApiAction {
                    name: "attach",
                    message: AttachVolume::NAME,
                },
                ApiAction {
                    name: "detach",
                    message: DetachVolume::NAME,
                },
            ],
            children: &[],
        });
        in_use::build(b);
    }
}

/// Primary storage and its driver.
struct Storage {
    record: Inventory,
    driver: Arc<dyn StorageDriver>,
}

impl Storage {
    async fn load(kernel: &Kernel, uuid: &str) -> Result<Option<Storage>, Fault> {
        let mut tx = store(kernel)?.read().await?;
        tx.get("primary_storage", uuid)
            .await?
            .map(|record| Storage::of(kernel, record))
            .transpose()
    }

    /// The storage of `record`, with its type's driver.
    fn of(kernel: &Kernel, record: Inventory) -> Result<Storage, Fault> {
        let driver = kernel
            .drivers()
            .get::<PrimaryStorages>(text(&record, "type"))?;
        Ok(Storage { record, driver })
    }

    fn uuid(&self) -> &str {
        text(&self.record, "uuid")
    }

    /// Reserves the volume's bytes, then has the driver create it; nothing is held if
    /// either fails.
    async fn allocate(&self, kernel: &Kernel, volume: &Inventory) -> Result<(), Fault> {
        let size = volume.get("size").and_then(Value::as_u64).unwrap_or(0);
        kernel
            .request(PRIMARY_STORAGE_SERVICE, ReserveStorage { size })
            .resource(self.uuid())
            .await?;
        if let Err(fault) = self
            .driver
            .create_volume(kernel, &self.record, volume)
            .await
        {
            self.release(kernel, size).await?;
            return Err(fault);
        }
        Ok(())
    }

    /// Deletes the volume's bytes and gives its capacity back.
    async fn free(&self, kernel: &Kernel, volume: &Inventory) -> Result<(), Fault> {
        self.driver
            .delete_volume(kernel, &self.record, volume)
            .await?;
        let size = volume.get("size").and_then(Value::as_u64).unwrap_or(0);
        self.release(kernel, size).await
    }

    async fn release(&self, kernel: &Kernel, size: u64) -> Result<(), Fault> {
        kernel
            .request(PRIMARY_STORAGE_SERVICE, ReleaseStorage { size })
            .resource(self.uuid())
            .await?;
        Ok(())
    }
}

/// Connected primary storage attached to `cluster` with `size` bytes free, most free first.
async fn candidates(
    kernel: &Kernel,
    tx: &mut Tx,
    cluster: &str,
    size: u64,
) -> Result<Vec<Storage>, Fault> {
    let mut filter = Inventory::new();
    filter.insert("cluster_uuid".into(), json!(cluster));
    let mut found = Vec::new();
    for reference in tx
        .list_by(
            "primary_storage_cluster_refs",
            &filter,
            &["primary_storage_uuid"],
        )
        .await?
    {
        let Some(ps) = tx
            .get("primary_storage", text(&reference, "primary_storage_uuid"))
            .await?
        else {
            continue;
        };
        let free = ps
            .get("available_capacity")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if text(&ps, "status") == "Connected" && free >= size {
            found.push((free, ps));
        }
    }
    found.sort_by_key(|(free, _)| std::cmp::Reverse(*free));
    found
        .into_iter()
        .map(|(_, record)| Storage::of(kernel, record))
        .collect()
}

/// The size of the root volume of a VM of `image`.
async fn image_size(tx: &mut Tx, image: &str) -> Result<u64, Fault> {
    let image = tx
        .get("images", image)
        .await?
        .ok_or_else(|| Fault::conflict(format!("image {image} is gone")))?;
    Ok(image.get("size").and_then(Value::as_u64).unwrap_or(0))
}

/// Keeps the hosts whose cluster reaches connected primary storage with room for the VM's
/// root volume.
struct ReachesStorage(KernelRef);

#[async_trait]
impl Filter<HostFilter> for ReachesStorage {
    async fn filter(&self, vm: &VmWork, hosts: Vec<Inventory>) -> Result<Vec<Inventory>, Fault> {
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.read().await?;
        let size = image_size(&mut tx, &vm.image_uuid).await?;
        let mut reachable = std::collections::BTreeMap::new();
        let mut kept = Vec::new();
        for host in hosts {
            let cluster = text(&host, "cluster_uuid").to_owned();
            let ok = match reachable.get(&cluster) {
                Some(ok) => *ok,
                None => {
                    let ok = !candidates(&kernel, &mut tx, &cluster, size)
                        .await?
                        .is_empty();
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

fn volume_row(name: &str, description: &str, volume_type: &str, size: u64, ps: &str) -> Inventory {
    let at = flatstack_store::now();
    row(json!({
        "uuid": new_uuid(), "name": name, "description": description, "type": volume_type,
        "status": "Ready", "size": size, "primary_storage_uuid": ps,
        "vm_instance_uuid": null, "device_id": null, "image_uuid": null,
        "created_at": at, "updated_at": at,
    }))
}

/// The root volume of a new VM: the image's size, on primary storage the VM's host reaches.
struct RootVolume(KernelRef);

#[async_trait]
impl DoUndo<VmAllocateVolumes> for RootVolume {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let host = vm
            .host
            .clone()
            .ok_or_else(|| Fault::internal("the VM has no host yet"))?;
        let cluster = text(&host, "cluster_uuid");
        let (size, candidates) = {
            let mut tx = store(&kernel)?.read().await?;
            let size = image_size(&mut tx, &vm.image_uuid).await?;
            (size, candidates(&kernel, &mut tx, cluster, size).await?)
        };
        // Another create may take the space first: the reservation, one at a time per
        // storage, is what decides.
        let mut last = None;
        for storage in candidates {
            let ps = storage.uuid().to_owned();
            let mut volume =
                volume_row(&format!("ROOT-for-{}", vm.name), "", kind::ROOT, size, &ps);
            volume.insert("vm_instance_uuid".into(), json!(vm.vm_uuid));
            volume.insert("device_id".into(), json!(0));
            volume.insert("image_uuid".into(), json!(vm.image_uuid));
            match storage.allocate(&kernel, &volume).await {
                Ok(()) => {
                    let written = async {
                        // Announced with its row, as every volume is: billing and other
                        // services see root volumes too (and their removal if the
                        // VM's create is undone).
                        let mut tx = store(&kernel)?.begin().await?;
                        tx.insert(VOLUMES.table, &volume).await?;
                        tx.emit(ResourceCreated {
                            kind: VOLUMES.kind.to_owned(),
                            uuid: text(&volume, "uuid").to_owned(),
                            inventory: volume.clone(),
                        })
                        .await?;
                        tx.commit(kernel.bus()).await?;
                        Ok::<(), Fault>(())
                    }
                    .await;
                    if let Err(fault) = written {
                        storage.free(&kernel, &volume).await?;
                        return Err(fault);
                    }
                    return Ok(());
                }
                Err(fault) if fault.code == flatstack_kernel::FaultCode::Conflict => {
                    last = Some(fault)
                }
                Err(fault) => return Err(fault),
            }
        }
        Err(last.unwrap_or_else(|| {
            Fault::conflict(format!(
                "no connected primary storage attached to cluster {cluster} has {size} bytes free"
            ))
        }))
    }

    /// Deletes the VM's root volume and detaches its data volumes (a destroyed VM's data
    /// volumes outlive it).
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let volumes = {
            let mut tx = store(&kernel)?.read().await?;
            let mut filter = Inventory::new();
            filter.insert("vm_instance_uuid".into(), json!(vm.vm_uuid));
            tx.list(VOLUMES.table, &filter).await?
        };
        for volume in volumes {
            let uuid = text(&volume, "uuid");
            if text(&volume, "type") == kind::ROOT {
                if let Some(storage) =
                    Storage::load(&kernel, text(&volume, "primary_storage_uuid")).await?
                {
                    storage.free(&kernel, &volume).await?;
                }
                let mut tx = store(&kernel)?.begin().await?;
                tx.delete(VOLUMES.table, uuid).await?;
                tx.emit(ResourceDeleted {
                    kind: VOLUMES.kind.to_owned(),
                    uuid: uuid.to_owned(),
                })
                .await?;
                tx.commit(kernel.bus()).await?;
            } else {
                set_attachment(&kernel, uuid, None).await?;
            }
        }
        Ok(())
    }
}

async fn create_data_volume(kernel: &Kernel, msg: CreateVolume) -> Result<Inventory, Fault> {
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
            let mut tx = store(kernel)?.begin().await?;
            let mut filter = Inventory::new();
            filter.insert("status".into(), json!("Connected"));
            let all = tx.list("primary_storage", &filter).await?;
            let most_free = all.iter().max_by_key(|ps| {
                ps.get("available_capacity")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            });
            match most_free {
                Some(ps) => text(ps, "uuid").to_owned(),
                None => return Err(Fault::conflict("there is no connected primary storage")),
            }
        }
    };
    let storage = Storage::load(kernel, &ps).await?.ok_or_else(|| {
        Fault::invalid("primary_storage_uuid", format!("no primary storage {ps}"))
    })?;
    let volume = volume_row(&msg.name, &msg.description, kind::DATA, msg.size, &ps);
    storage.allocate(kernel, &volume).await?;
    match VOLUMES.create_row(kernel, volume.clone()).await {
        Ok(inventory) => Ok(inventory),
        Err(fault) => {
            storage.free(kernel, &volume).await?;
            Err(fault)
        }
    }
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

async fn delete_data_volume(kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
    let volume = data_volume(kernel, uuid, "delete").await?;
    if let Some(vm) = volume.get("vm_instance_uuid").and_then(Value::as_str) {
        return Err(Fault::conflict(format!(
            "volume {uuid} is attached to VM {vm}; detach it first"
        )));
    }
    if let Some(storage) = Storage::load(kernel, text(&volume, "primary_storage_uuid")).await? {
        storage.free(kernel, &volume).await?;
    }
    VOLUMES.remove(kernel, uuid).await
}

/// The VM a volume is to be (or is) attached to, its host, and the host's driver.
struct Target {
    work: VmWork,
    host: Inventory,
    driver: Arc<dyn flatstack_header::infra::HostDriver>,
}

async fn target(kernel: &Kernel, vm_uuid: &str, field: &str) -> Result<Target, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let vm = tx
        .get("vm_instances", vm_uuid)
        .await?
        .ok_or_else(|| Fault::invalid(field, format!("no VM {vm_uuid}")))?;
    let current = text(&vm, "state");
    if current != vm_state::RUNNING && current != vm_state::STOPPED {
        return Err(Fault::conflict(format!(
            "VM {vm_uuid} is {current}; volumes attach to and detach from running or stopped VMs"
        ))
        .with_detail("state", current));
    }
    let host = match vm.get("host_uuid").and_then(Value::as_str) {
        Some(host) => tx.get("hosts", host).await?,
        None => None,
    }
    .ok_or_else(|| Fault::conflict(format!("VM {vm_uuid} has no host")))?;
    let driver = kernel.drivers().get::<Hosts>(text(&host, "type"))?;
    let work = VmWork {
        vm_uuid: vm_uuid.to_owned(),
        name: text(&vm, "name").to_owned(),
        owner: text(&vm, "owner").to_owned(),
        host: Some(host.clone()),
        ..VmWork::default()
    };
    Ok(Target { work, host, driver })
}

async fn attach(kernel: &Kernel, uuid: &str, vm_uuid: &str) -> Result<Inventory, Fault> {
    let volume = data_volume(kernel, uuid, "attach").await?;
    if let Some(vm) = volume.get("vm_instance_uuid").and_then(Value::as_str) {
        return Err(Fault::conflict(format!(
            "volume {uuid} is already attached to VM {vm}"
        )));
    }
    let target = target(kernel, vm_uuid, "vm_instance_uuid").await?;
    let cluster = text(&target.host, "cluster_uuid");
    let ps = text(&volume, "primary_storage_uuid");
    let reachable = {
        let mut tx = store(kernel)?.begin().await?;
        let mut filter = Inventory::new();
        filter.insert("primary_storage_uuid".into(), json!(ps));
        filter.insert("cluster_uuid".into(), json!(cluster));
        !tx.list_by(
            "primary_storage_cluster_refs",
            &filter,
            &["primary_storage_uuid"],
        )
        .await?
        .is_empty()
    };
    if !reachable {
        return Err(Fault::conflict(format!(
            "VM {vm_uuid}'s cluster {cluster} cannot reach primary storage {ps}"
        )));
    }
    target
        .driver
        .attach_volume(kernel, &target.host, &target.work, &volume)
        .await?;
    set_attachment(kernel, uuid, Some(vm_uuid)).await?;
    read(kernel, uuid).await
}

async fn detach(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let volume = data_volume(kernel, uuid, "detach").await?;
    let Some(vm_uuid) = volume.get("vm_instance_uuid").and_then(Value::as_str) else {
        return Err(Fault::conflict(format!("volume {uuid} is not attached")));
    };
    let target = target(kernel, vm_uuid, "vm_instance_uuid").await?;
    target
        .driver
        .detach_volume(kernel, &target.host, &target.work, &volume)
        .await?;
    set_attachment(kernel, uuid, None).await?;
    read(kernel, uuid).await
}

/// Records a data volume as attached to `vm` (with the next free device id) or detached.
async fn set_attachment(kernel: &Kernel, uuid: &str, vm: Option<&str>) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let device = match vm {
        Some(vm) => {
            let mut filter = Inventory::new();
            filter.insert("vm_instance_uuid".into(), json!(vm));
            let used = tx.list(VOLUMES.table, &filter).await?;
            let next = used
                .iter()
                .filter_map(|v| v.get("device_id").and_then(Value::as_i64))
                .max()
                .map_or(1, |d| d + 1);
            json!(next)
        }
        None => Value::Null,
    };
    tx.update(
        VOLUMES.table,
        uuid,
        &row(json!({"vm_instance_uuid": vm, "device_id": device,
            "updated_at": flatstack_store::now()})),
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
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}
