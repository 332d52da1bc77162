//! VM instances. The VM plugin knows the minimum: it records the VM, reserves CPU and
//! memory on a host chosen through the host-filter pipeline, lets storage plugins allocate
//! its root volume (`vm.volume.allocate`), asks the L3 networks for addresses, lets plugins
//! prepare the host (`vm.pre-instantiate`), and asks the host's driver to start it — as
//! one flow, rolled back step by step if anything fails. Start, stop, reboot and destroy
//! each have a veto point before, a do/undo point during and observers after.
//! Requests about one VM are addressed to its uuid, so they run one after another.
//! A VM whose host is lost becomes `Unknown` until the host is back and says whether it
//! runs the VM (`host_status.rs`).

mod flow;
mod host_status;
mod in_use;
mod nics;
mod recovery;

use flatstack_header::infra::HostRecord;
use flatstack_header::network::{L2NetworkRecord, L3NetworkRecord};
use flatstack_header::record;
use flatstack_header::storage::{ImageRecord, InstanceOfferingRecord};
use flatstack_header::vm::VmRecord;
use flatstack_header::vm::{
    state, CreateVm, HostFilter, HostSort, Nic, RebootVm, StartVm, StopVm, VmAllocateVolumes,
    VmCreateCheck, VmDestroyCheck, VmDestroyed, VmNetwork, VmPostInstantiate, VmPreDestroy,
    VmPreInstantiate, VmPreStart, VmPreStop, VmRebootCheck, VmRebooted, VmRelease, VmReserve,
    VmStartCheck, VmStarted, VmStopCheck, VmStopped, VmWork, VM_SERVICE,
};
use flatstack_header::{ApiAction, ApiResource, DeleteResource, Inventory};
use flatstack_kernel::flow::ExtensionStep;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{async_trait, Fault, Filter, Flow, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::recovery::Reconciler;
use flatstack_store::resource::{check_name, store, text, ResourceTable};
use flatstack_store::Tx;
use serde_json::{json, Value};

pub(crate) static VMS: ResourceTable = ResourceTable::new("vm-instances", "vm_instances")
    .filters(&["name", "state", "host_uuid", "account_uuid"])
    .decorate(|tx, vm| Box::pin(nics_of(tx, vm)));

pub struct VmPlugin;

impl Plugin for VmPlugin {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn description(&self) -> &'static str {
        "VM instances: the create flow, start, stop, reboot and destroy."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its tables refer to hosts and L3 networks; it reads images and offerings.
        &["host", "l3-network", "image", "instance-offering"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "vm instances and their nics",
            "CREATE TABLE vm_instances (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                owner TEXT NOT NULL, state TEXT NOT NULL, instance_offering_uuid TEXT NOT NULL,
                image_uuid TEXT NOT NULL, host_uuid TEXT REFERENCES hosts (uuid),
                cpu_num BIGINT NOT NULL, memory_size BIGINT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE vm_nics (
                uuid TEXT PRIMARY KEY,
                vm_instance_uuid TEXT NOT NULL REFERENCES vm_instances (uuid),
                l3_network_uuid TEXT NOT NULL REFERENCES l3_networks (uuid),
                ip TEXT NOT NULL, mac TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);",
        ));
        b.migration(Migration::new(
            2,
            "each nic's L2 network and its type",
            "ALTER TABLE vm_nics ADD COLUMN l2_network_uuid TEXT;
             ALTER TABLE vm_nics ADD COLUMN l2_type TEXT;",
        ));
        b.migration(Migration::new(
            3,
            "VMs belong to accounts",
            "ALTER TABLE vm_instances RENAME COLUMN owner TO account_uuid;
             UPDATE vm_instances SET account_uuid = '00000000000000000000000000000001'
                WHERE account_uuid = 'admin';",
        ));
        b.define_veto::<VmCreateCheck>()
            .define_do_undo::<VmReserve>()
            .define_filter::<HostFilter>()
            .define_filter::<HostSort>()
            .define_do_undo::<VmAllocateVolumes>()
            .define_do_undo::<VmPreInstantiate>()
            .define_do_undo::<VmPostInstantiate>()
            .define_veto::<VmStartCheck>()
            .define_do_undo::<VmPreStart>()
            .define_veto::<VmStopCheck>()
            .define_do_undo::<VmPreStop>()
            .define_veto::<VmRebootCheck>()
            .define_veto::<VmDestroyCheck>()
            .define_do_undo::<VmPreDestroy>()
            .define_release::<VmRelease>()
            .define_observe::<VmStarted>()
            .define_observe::<VmStopped>()
            .define_observe::<VmRebooted>()
            .define_observe::<VmDestroyed>();
        // The allocator's own filter: enough free CPU and memory. Others (tags, ...) plug in
        // beside it; it goes first so they see only hosts that could take the VM.
        b.filter::<HostFilter>(HasCapacity).order(-100);
        // The default placement spreads VMs: most free memory first. A strategy plugin's
        // sort placed after it has the last word.
        b.filter::<HostSort>(MostFreeMemory).order(-100);
        b.observe::<flatstack_header::points::StateChanged>(host_status::HostStatus(b.kernel()));

        let mut service = b.service(VM_SERVICE, ());
        VMS.serve_reads(&mut service);
        VMS.serve_record::<VmRecord, _>(&mut service);
        nics::serve(&mut service);
        service
            .handle::<CreateVm, _, _>(|_, msg, cx| async move {
                create(&cx.kernel, cx.operation.as_deref(), msg).await
            })
            .handle::<StartVm, _, _>(|_, _, cx| async move {
                power(&cx.kernel, cx.resource_id()?, Power::On).await
            })
            .handle::<StopVm, _, _>(|_, _, cx| async move {
                power(&cx.kernel, cx.resource_id()?, Power::Off).await
            })
            .handle::<RebootVm, _, _>(|_, _, cx| async move {
                reboot(&cx.kernel, cx.resource_id()?).await
            })
            .handle::<host_status::SettleVm, _, _>(|_, msg, cx| async move {
                host_status::settle(&cx.kernel, cx.resource_id()?, msg.running).await
            })
            .handle::<recovery::RecoverVm, _, _>(|_, _, cx| async move {
                recovery::recover_vm(&cx.kernel, cx.resource_id()?).await
            })
            .handle::<DeleteResource, _, _>(|_, _, cx| async move {
                destroy(&cx.kernel, cx.resource_id()?).await
            });
        // First: the VMs' recovery below rebuilds contexts from NICs that must have them.
        b.register(Reconciler::at_start("NICs' L2 networks", |kernel| {
            Box::pin(nics::fill_l2_networks(kernel))
        }));
        b.register(Reconciler::periodic("VMs in transient states", |kernel| {
            Box::pin(recovery::reconcile(kernel))
        }));
        b.register(Reconciler::periodic(
            "VMs against what their hosts run",
            |kernel| Box::pin(recovery::sync_hosts(kernel)),
        ));
        b.register(nics::ON_L2_NETWORKS);
        b.register(ApiResource {
            path: "vm-instances",
            service: VM_SERVICE,
            create: CreateVm::NAME,
            access: flatstack_header::identity::Access::Owned,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(
                flatstack_header::inventory::schema::<flatstack_header::inventory::VmInventory>,
            ),
            filters: VMS.filters,
            actions: const {
                &[
                    ApiAction::member("start", StartVm::NAME),
                    ApiAction::member("stop", StopVm::NAME),
                    ApiAction::member("reboot", RebootVm::NAME),
                ]
            },
            children: &[],
        });
        in_use::build(b);
    }
}

/// Keeps the hosts with enough free CPU and memory.
struct HasCapacity;

#[async_trait]
impl Filter<HostFilter> for HasCapacity {
    async fn filter(&self, vm: &VmWork, hosts: Vec<HostRecord>) -> Result<Vec<HostRecord>, Fault> {
        Ok(hosts
            .into_iter()
            .filter(|h| {
                h.available_cpu >= u64::from(vm.cpu_num) && h.available_memory >= vm.memory_size
            })
            .collect())
    }
}

/// Orders hosts by free memory, most first.
struct MostFreeMemory;

#[async_trait]
impl Filter<HostSort> for MostFreeMemory {
    async fn filter(
        &self,
        _: &VmWork,
        mut hosts: Vec<HostRecord>,
    ) -> Result<Vec<HostRecord>, Fault> {
        hosts.sort_by_key(|h| std::cmp::Reverse(h.available_memory));
        Ok(hosts)
    }
}

/// Shows a VM's NICs.
async fn nics_of(tx: &mut Tx, vm: &mut Inventory) -> Result<(), Fault> {
    let mut filter = Inventory::new();
    filter.insert("vm_instance_uuid".into(), json!(text(vm, "uuid")));
    let nics = tx.list("vm_nics", &filter).await?;
    vm.insert("nics".into(), json!(nics));
    Ok(())
}

async fn create(
    kernel: &Kernel,
    operation: Option<&str>,
    msg: CreateVm,
) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    if msg.l3_network_uuids.is_empty() {
        return Err(Fault::invalid(
            "l3_network_uuids",
            "name one or more L3 networks",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = msg.l3_network_uuids.iter().find(|l3| !seen.insert(*l3)) {
        return Err(Fault::invalid(
            "l3_network_uuids",
            format!("L3 network {twice} is named twice"),
        ));
    }
    // What the request names, from the plugins that own it, all at once.
    let networks = msg
        .l3_network_uuids
        .iter()
        .map(|l3| record::named::<L3NetworkRecord>(kernel, "l3_network_uuids", l3));
    let (offering, image, l3s, _host) = futures::try_join!(
        record::named::<InstanceOfferingRecord>(
            kernel,
            "instance_offering_uuid",
            &msg.instance_offering_uuid
        ),
        record::named::<ImageRecord>(kernel, "image_uuid", &msg.image_uuid),
        futures::future::try_join_all(networks),
        async {
            match &msg.host_uuid {
                Some(host) => record::named::<HostRecord>(kernel, "host_uuid", host)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        },
    )?;
    // Another account's private network is answered as a missing one: its existence does
    // not leak.
    if let Some(private) = l3s.iter().find(|l3| !l3.usable_by(&msg.account_uuid)) {
        return Err(Fault::invalid(
            "l3_network_uuids",
            format!("no l3-network {}", private.uuid),
        ));
    }
    if !image.usable_by(&msg.account_uuid) {
        return Err(Fault::invalid(
            "image_uuid",
            format!("no image {}", image.uuid),
        ));
    }
    let networks = networks_of(kernel, &l3s).await?;
    let mut work = VmWork {
        vm_uuid: flatstack_store::resource::new_uuid(),
        name: msg.name.clone(),
        account_uuid: msg.account_uuid.clone(),
        cpu_num: offering.cpu_num,
        memory_size: offering.memory_size,
        image_uuid: msg.image_uuid.clone(),
        image: Some(image),
        l3_network_uuids: msg.l3_network_uuids.clone(),
        requested_host: msg.host_uuid.clone(),
        host_tags: msg.host_tags.clone(),
        networks,
        host: None,
        nics: Vec::new(),
        slots: Default::default(),
    };
    kernel
        .extensions()
        .veto_async::<VmCreateCheck>(&work)
        .await?;
    let created = flow::Created::default();
    let flow = flow::create(kernel, &msg, operation, &created);
    // Periodic recovery leaves this VM alone while its create runs (a create runs on no
    // VM's queue: the VM has no uuid until it starts).
    let _live = recovery::Creating::mark(&work.vm_uuid);
    flow.run(&mut work).await.map_err(|failure| {
        // Steps whose undo failed left something held: the fault names them
        // (`rollback_failed`, `undo_failed`), and the VM's row is kept `Creating`, so that
        // recovery undoes the create again once this mark is gone.
        if failure.fault.rollback_incomplete() {
            tracing::error!(vm = %work.vm_uuid, steps = %failure.fault.details["rollback_failed"], "the create's rollback is incomplete; recovery will undo it again");
        }
        failure.fault
    })?;
    kernel.extensions().observe::<VmStarted>(&work).await;
    let inventory = created
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match inventory {
        Some(inventory) => Ok(inventory),
        None => read(kernel, &work.vm_uuid).await,
    }
}

/// The L2 network under each L3 network, from its owner (each L2 network asked once).
async fn networks_of(kernel: &Kernel, l3s: &[L3NetworkRecord]) -> Result<Vec<VmNetwork>, Fault> {
    let l2_uuids: std::collections::BTreeSet<&str> =
        l3s.iter().map(|l3| l3.l2_network_uuid.as_str()).collect();
    let l2s = futures::future::try_join_all(
        l2_uuids
            .into_iter()
            .map(|l2| record::named::<L2NetworkRecord>(kernel, "l3_network_uuids", l2)),
    )
    .await?;
    Ok(l3s
        .iter()
        .filter_map(|l3| {
            let l2 = l2s.iter().find(|l2| l2.uuid == l3.l2_network_uuid)?;
            Some(VmNetwork {
                l3_network_uuid: l3.uuid.clone(),
                l2_network_uuid: l2.uuid.clone(),
                l2_type: l2.l2_type.clone(),
                attached_cluster_uuids: Some(l2.attached_cluster_uuids.clone()),
            })
        })
        .collect())
}

pub(crate) async fn read(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.read().await?;
    VMS.read(kernel, &mut tx, uuid).await
}

/// Rebuilds what the flows carry from a stored VM.
async fn work_of(kernel: &Kernel, vm: &Inventory) -> Result<VmWork, Fault> {
    let host = match vm.get("host_uuid").and_then(Value::as_str) {
        Some(h) => record::get::<HostRecord>(kernel, h).await?,
        None => None,
    };
    // Every NIC has its L2 network: recorded with it, or (an older node's) filled in at
    // start, before recovery rebuilds any context (`nics::fill_l2_networks`).
    let nics: Vec<Nic> = vm
        .get("nics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| Nic {
            uuid: text_value(n, "uuid"),
            l3_network_uuid: text_value(n, "l3_network_uuid"),
            l2_network_uuid: text_value(n, "l2_network_uuid"),
            l2_type: text_value(n, "l2_type"),
            ip: text_value(n, "ip"),
            mac: text_value(n, "mac"),
        })
        .collect();
    let networks = nics
        .iter()
        .map(|n| VmNetwork {
            l3_network_uuid: n.l3_network_uuid.clone(),
            l2_network_uuid: n.l2_network_uuid.clone(),
            l2_type: n.l2_type.clone(),
            attached_cluster_uuids: None,
        })
        .collect();
    Ok(VmWork {
        vm_uuid: text(vm, "uuid").to_owned(),
        name: text(vm, "name").to_owned(),
        account_uuid: text(vm, "account_uuid").to_owned(),
        cpu_num: vm
            .get("cpu_num")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
        memory_size: vm.get("memory_size").and_then(Value::as_u64).unwrap_or(0),
        image_uuid: text(vm, "image_uuid").to_owned(),
        image: None,
        l3_network_uuids: nics.iter().map(|n| n.l3_network_uuid.clone()).collect(),
        requested_host: None,
        host_tags: Vec::new(),
        networks,
        host,
        nics,
        slots: Default::default(),
    })
}

fn text_value(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The VM, refused with `conflict` unless it is in one of `allowed`.
async fn in_state(
    kernel: &Kernel,
    uuid: &str,
    action: &str,
    allowed: &[&str],
) -> Result<Inventory, Fault> {
    let vm = read(kernel, uuid).await?;
    let current = text(&vm, "state");
    if !allowed.contains(&current) {
        return Err(
            Fault::conflict(format!("cannot {action} VM {uuid}: it is {current}"))
                .with_detail("state", current),
        );
    }
    Ok(vm)
}

/// Start or stop: the two power transitions, which differ only in their states, their
/// extension points and the driver call.
#[derive(Clone, Copy)]
enum Power {
    On,
    Off,
}

impl Power {
    /// (verb, the states it starts from, through, to). A VM left `Unknown` by a lost host
    /// can be stopped once the host is back, not started: it may be running.
    fn states(
        self,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static str,
    ) {
        match self {
            Power::On => ("start", &[state::STOPPED], state::STARTING, state::RUNNING),
            Power::Off => (
                "stop",
                &[state::RUNNING, state::UNKNOWN],
                state::STOPPING,
                state::STOPPED,
            ),
        }
    }
}

/// Moves a VM `from` → `through` → `to`: the veto, then a flow of the do/undo point and
/// the driver call, then the observers; back to `from` if the flow fails.
async fn power(kernel: &Kernel, uuid: &str, power: Power) -> Result<Inventory, Fault> {
    let (verb, allowed, through, to) = power.states();
    let vm = in_state(kernel, uuid, verb, allowed).await?;
    let from = text(&vm, "state").to_owned();
    let mut work = work_of(kernel, &vm).await?;
    // Refused before any state changes if the host is not there to ask.
    flow::host_driver(kernel, &work)?;
    let flow = match power {
        Power::On => {
            kernel.extensions().veto::<VmStartCheck>(&work)?;
            Flow::new("vm.start")
                .step(ExtensionStep::<VmPreStart>::new(kernel))
                .step(flow::Hypervisor::start(kernel))
        }
        Power::Off => {
            kernel.extensions().veto::<VmStopCheck>(&work)?;
            Flow::new("vm.stop")
                .step(ExtensionStep::<VmPreStop>::new(kernel))
                .step(flow::Hypervisor::stop(kernel))
        }
    };
    VMS.set_state(kernel, uuid, "state", through).await?;
    if let Err(failure) = flow.run(&mut work).await {
        return Err(back_to(kernel, uuid, &from, failure.fault).await);
    }
    VMS.set_state(kernel, uuid, "state", to).await?;
    match power {
        Power::On => kernel.extensions().observe::<VmStarted>(&work).await,
        Power::Off => kernel.extensions().observe::<VmStopped>(&work).await,
    }
    read(kernel, uuid).await
}

async fn reboot(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let vm = in_state(kernel, uuid, "reboot", &[state::RUNNING]).await?;
    let work = work_of(kernel, &vm).await?;
    kernel.extensions().veto::<VmRebootCheck>(&work)?;
    let (host, driver) = flow::host_driver(kernel, &work)?;
    driver.reboot_vm(kernel, host, &work).await?;
    kernel.extensions().observe::<VmRebooted>(&work).await;
    read(kernel, uuid).await
}

/// The veto, then a flow that prepares (`vm.pre-destroy`) and stops the VM, which leaves
/// it as it was if it fails; then everything it holds is released in the reverse order of
/// the create, and it is removed. From `Destroying` on, a stop of the node at any instant
/// is finished by recovery.
async fn destroy(kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
    let vm = in_state(
        kernel,
        uuid,
        "destroy",
        &[state::RUNNING, state::STOPPED, state::UNKNOWN],
    )
    .await?;
    let previous = text(&vm, "state").to_owned();
    let mut work = work_of(kernel, &vm).await?;
    kernel.extensions().veto::<VmDestroyCheck>(&work)?;
    let mut stop = Flow::new("vm.destroy").step(ExtensionStep::<VmPreDestroy>::new(kernel));
    if previous != state::STOPPED {
        flow::host_driver(kernel, &work)?;
        stop = stop.step(flow::Hypervisor::stop(kernel));
    }
    VMS.set_state(kernel, uuid, "state", state::DESTROYING)
        .await?;
    if let Err(failure) = stop.run(&mut work).await {
        return Err(back_to(kernel, uuid, &previous, failure.fault).await);
    }
    recovery::finish_destroy(kernel, &mut work).await
}

/// Puts a VM whose operation failed with `fault` back in state `from`; the fault is the
/// answer, with the state's write if that failed too (the VM is then left in its transient
/// state, which recovery settles).
async fn back_to(kernel: &Kernel, uuid: &str, from: &str, fault: Fault) -> Fault {
    match VMS.set_state(kernel, uuid, "state", from).await {
        Ok(_) => fault,
        Err(undo) => {
            tracing::error!(vm = %uuid, state = %from, fault = %undo, "cannot put the VM back; recovery will settle it");
            fault.with_undo_failure(Some("vm.state"), undo)
        }
    }
}
