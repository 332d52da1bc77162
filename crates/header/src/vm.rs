//! VM instances: messages, states, and the extension points of their life cycle.

use crate::infra::HostRecord;
use crate::resource::{Inventory, InventoryList};
use crate::storage::ImageRecord;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::Slots;
use serde::{Deserialize, Serialize};

/// The service that owns VMs; requests about one VM are addressed to its uuid, so they
/// run one after another.
pub const VM_SERVICE: &str = "vm";

/// A VM's life-cycle state. `Creating`, `Starting`, `Stopping` and `Destroying` are
/// transient: an operation is working on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VmState {
    /// Being created: recorded, its resources being allocated (transient).
    Creating,
    /// Being started by its host's driver (transient).
    Starting,
    /// Running on its host.
    Running,
    /// Being stopped by its host's driver (transient).
    Stopping,
    /// Stopped: placed on its host, holding its resources, not running.
    Stopped,
    /// Being destroyed: stopped, its resources being given back (transient).
    Destroying,
    /// Destroyed: everything it held given back.
    Destroyed,
    /// Its host is not reached: nobody knows.
    Unknown,
}

impl VmState {
    /// The text rows and inventories hold, e.g. `Running`.
    pub const fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "Creating",
            VmState::Starting => "Starting",
            VmState::Running => "Running",
            VmState::Stopping => "Stopping",
            VmState::Stopped => "Stopped",
            VmState::Destroying => "Destroying",
            VmState::Destroyed => "Destroyed",
            VmState::Unknown => "Unknown",
        }
    }

    /// Whether an operation is working on a VM in this state.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            VmState::Creating | VmState::Starting | VmState::Stopping | VmState::Destroying
        )
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`VmState`]s as the text the VM's row and inventory hold.
pub mod state {
    use super::VmState;
    /// [`VmState::Creating`].
    pub const CREATING: &str = VmState::Creating.as_str();
    /// [`VmState::Starting`].
    pub const STARTING: &str = VmState::Starting.as_str();
    /// [`VmState::Running`].
    pub const RUNNING: &str = VmState::Running.as_str();
    /// [`VmState::Stopping`].
    pub const STOPPING: &str = VmState::Stopping.as_str();
    /// [`VmState::Stopped`].
    pub const STOPPED: &str = VmState::Stopped.as_str();
    /// [`VmState::Destroying`].
    pub const DESTROYING: &str = VmState::Destroying.as_str();
    /// [`VmState::Destroyed`].
    pub const DESTROYED: &str = VmState::Destroyed.as_str();
    /// [`VmState::Unknown`].
    pub const UNKNOWN: &str = VmState::Unknown.as_str();
}

/// A VM, as the VM plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmRecord {
    /// The VM's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The account it belongs to (quotas count per account).
    pub account_uuid: String,
    /// Where it is in its life cycle.
    pub state: VmState,
    /// Where it runs (or ran last); `None` until placed.
    pub host_uuid: Option<String>,
    /// The offering it was created from.
    pub instance_offering_uuid: String,
    /// The image its root volume was made from.
    pub image_uuid: String,
    /// Its vCPUs (the offering's at create).
    pub cpu_num: u32,
    /// Its bytes of memory (the offering's at create).
    pub memory_size: u64,
}

/// What VMs may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmQuery {
    /// VMs placed on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<String>,
    /// VMs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VmState>,
    /// VMs of this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_uuid: Option<String>,
}
crate::record!(VmRecord, query VmQuery, kind "vm-instances", service VM_SERVICE, "vm.record");

/// Creates a VM and starts it: a host chosen (or the one asked for), its root volume made
/// from the image, a NIC on each L3 network. Replies with the VM's inventory, `Running`;
/// a create that fails leaves nothing behind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// The account the VM belongs to: set by the node from the caller (an admin may name
    /// another account); the admin account if not given.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// Its shape: the offering's vCPUs and memory (a uuid).
    pub instance_offering_uuid: String,
    /// The image its root volume is made from (a uuid).
    pub image_uuid: String,
    /// The L3 networks it gets a NIC on, in this order (uuids): one or more, each once.
    pub l3_network_uuids: Vec<String>,
    /// Place the VM on this host instead of letting the allocator choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<String>,
    /// Place the VM only on hosts that carry every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_tags: Vec<String>,
}

flatstack_kernel::request!(CreateVm = "vm.create" => Inventory);

macro_rules! vm_action {
    ($(#[$doc:meta])* $name:ident, $wire:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {}
        flatstack_kernel::request!($name = $wire => Inventory);
    };
}
vm_action!(
    /// Starts a stopped VM (addressed to its uuid).
    StartVm, "vm.start"
);
vm_action!(
    /// Stops a running VM (addressed to its uuid).
    StopVm, "vm.stop"
);
vm_action!(
    /// Reboots a running VM (addressed to its uuid).
    RebootVm, "vm.reboot"
);

/// A NIC of a VM on one L3 network, with the L2 network under it and that network's type
/// (what a network plugin needs to wire it: a VLAN, a tunnel...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Nic {
    /// The NIC's uuid.
    pub uuid: String,
    /// The L3 network its address is on.
    pub l3_network_uuid: String,
    /// The L2 network under that L3 network.
    pub l2_network_uuid: String,
    /// The L2 network's driver type, e.g. `L2VlanNetwork`.
    pub l2_type: String,
    /// Its IPv4 address, dotted.
    pub ip: String,
    /// Its MAC address, lowercase hex in colon-separated pairs, e.g. `02:1f:3a:9c:40:7e`;
    /// unique.
    pub mac: String,
}

/// A VM's NIC as the VM plugin publishes it, with where its VM is: what another plugin
/// asks to know which VMs (and hosts) use a network — e.g. "is any other VM on this host
/// still on the network", or the hosts a tunnel mesh must join. A VM being created is seen
/// with its NICs and host from the moment they are allocated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NicRecord {
    /// The NIC's uuid.
    pub uuid: String,
    /// The VM it belongs to.
    pub vm_instance_uuid: String,
    /// The state of its VM (`Creating` included).
    pub vm_state: VmState,
    /// Its VM's host; `None` until placed.
    pub host_uuid: Option<String>,
    /// The L3 network its address is on.
    pub l3_network_uuid: String,
    /// The L2 network under that L3 network.
    pub l2_network_uuid: String,
    /// The L2 network's driver type.
    pub l2_type: String,
    /// Its IP address on the L3 network.
    pub ip: String,
    /// Its MAC address, `02:xx:xx:xx:xx:xx` (locally administered).
    pub mac: String,
}

/// What NICs may be found by; every field set must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicQuery {
    /// The NICs of this VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_instance_uuid: Option<String>,
    /// The NICs on this L3 network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_network_uuid: Option<String>,
    /// The NICs on this L2 network (through any of its L3 networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_network_uuid: Option<String>,
    /// The NICs of VMs placed on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<String>,
}
crate::record!(NicRecord, query NicQuery, kind "vm-nics", service VM_SERVICE, "vm.nic.record");

/// The NICs on one L2 network (addressed to the network's uuid), as an inventory list:
/// `GET /v1/l2-networks/{uuid}/vm-nics`, which the VM plugin adds to the L2 kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListNetworkNics {}
flatstack_kernel::request!(ListNetworkNics = "vm.nic.list-of-l2-network" => InventoryList);

/// An L3 network a VM is asked to have a NIC on, with the L2 network under it: known from
/// the create's first step, before any NIC exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmNetwork {
    /// The L3 network asked for.
    pub l3_network_uuid: String,
    /// The L2 network under it.
    pub l2_network_uuid: String,
    /// The L2 network's driver type, e.g. `L2VlanNetwork`.
    pub l2_type: String,
    /// The clusters the L2 network was attached to when the create read it (the host
    /// filters use them rather than asking again); `None` in a context rebuilt from a
    /// stored VM, where whoever needs them asks the L2 network's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_cluster_uuids: Option<Vec<String>>,
}

/// What the VM's create (and start, stop, destroy) flows carry from step to step; every VM
/// extension point is given it.
///
/// A do/undo point's `undo` runs only when the operation it took part in fails (or, after
/// a stop, when recovery undoes an interrupted create): it compensates its own `run`, and
/// may find in [`VmWork::slots`] what that run put there. Giving back what the VM holds
/// when it is destroyed is [`VmRelease`], a point of its own.
#[derive(Debug, Clone, Default)]
pub struct VmWork {
    /// The VM's uuid: the consumer plugins record what they take for it under.
    pub vm_uuid: String,
    /// Its name.
    pub name: String,
    /// The account it belongs to.
    pub account_uuid: String,
    /// Its vCPUs.
    pub cpu_num: u32,
    /// Its bytes of memory.
    pub memory_size: u64,
    /// The image its root volume is made from.
    pub image_uuid: String,
    /// The image, as its owner published it when the create began (its size for the root
    /// volume); `None` in a context rebuilt from a stored VM.
    pub image: Option<ImageRecord>,
    /// The L3 networks it has (or gets) a NIC on, in order.
    pub l3_network_uuids: Vec<String>,
    /// Asked for by the caller.
    pub requested_host: Option<String>,
    /// Tags every candidate host must carry.
    pub host_tags: Vec<String>,
    /// The L3 networks asked for (in `l3_network_uuids`' order), with their L2 networks.
    pub networks: Vec<VmNetwork>,
    /// The host the VM is placed on, once allocated (and recorded on its row).
    pub host: Option<HostRecord>,
    /// Its NICs, once allocated (and recorded).
    pub nics: Vec<Nic>,
    /// Each plugin's own state for this operation, keyed by a type of its own: what a
    /// `run` leaves there, its `undo` finds. In memory: when recovery undoes a create a
    /// stop interrupted, the slots are empty, and an undo works from its own records.
    pub slots: Slots,
}

impl VmWork {
    /// The uuid of the host the VM is placed on, once allocated.
    pub fn host_uuid(&self) -> Option<&str> {
        self.host.as_ref().map(|h| h.uuid.as_str())
    }
}

flatstack_kernel::extension_point!(
    /// Before anything is done for a new VM: quotas and policies refuse here, in the node
    /// or from outside it (a remote implementor is shown [`remote_vm_create`]).
    VmCreateCheck: RemoteVetoPoint, "vm.create.pre-check",
    "Before a VM is created; a refusal stops the create before anything is allocated.",
    Input = VmWork, remote = remote_vm_create
);

/// What a service outside the node implementing `vm.create.pre-check` is shown of the VM
/// about to be created (docs/integration.md): a published projection of [`VmWork`].
#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoteVmCreate<'a> {
    /// The uuid the VM will have.
    pub vm_uuid: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The account it will belong to.
    pub account_uuid: &'a str,
    /// Its vCPUs.
    pub cpu_num: u32,
    /// Its bytes of memory.
    pub memory_size: u64,
    /// The image of its root volume.
    pub image_uuid: &'a str,
    /// The L3 networks it gets a NIC on, in order.
    pub l3_network_uuids: &'a [String],
    /// The host asked for, if any.
    pub requested_host: Option<&'a str>,
    /// Tags every candidate host must carry.
    pub host_tags: &'a [String],
}

/// What a service outside the node observing `vm.started` or `vm.destroyed` is sent of
/// the VM (docs/integration.md).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoteVm<'a> {
    /// The VM's uuid.
    pub vm_uuid: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The account it belongs to.
    pub account_uuid: &'a str,
    /// Its vCPUs.
    pub cpu_num: u32,
    /// Its bytes of memory.
    pub memory_size: u64,
    /// The image of its root volume.
    pub image_uuid: &'a str,
    /// The host it runs (ran) on.
    pub host_uuid: Option<&'a str>,
    /// The L3 networks it has a NIC on, in order.
    pub l3_network_uuids: &'a [String],
}

/// [`RemoteVm`] of `work`, as JSON.
pub fn remote_vm(work: &VmWork) -> serde_json::Value {
    flatstack_kernel::extension::remote::to_remote_input(&RemoteVm {
        vm_uuid: &work.vm_uuid,
        name: &work.name,
        account_uuid: &work.account_uuid,
        cpu_num: work.cpu_num,
        memory_size: work.memory_size,
        image_uuid: &work.image_uuid,
        host_uuid: work.host_uuid(),
        l3_network_uuids: &work.l3_network_uuids,
    })
}

/// [`RemoteVmCreate`] of `work`, as JSON.
pub fn remote_vm_create(work: &VmWork) -> serde_json::Value {
    flatstack_kernel::extension::remote::to_remote_input(&RemoteVmCreate {
        vm_uuid: &work.vm_uuid,
        name: &work.name,
        account_uuid: &work.account_uuid,
        cpu_num: work.cpu_num,
        memory_size: work.memory_size,
        image_uuid: &work.image_uuid,
        l3_network_uuids: &work.l3_network_uuids,
        requested_host: work.requested_host.as_deref(),
        host_tags: &work.host_tags,
    })
}
flatstack_kernel::extension_point!(
    /// The first step of a create: take what the VM will count against (quotas); undone
    /// if the create fails (given back at destroy through [`VmRelease`]).
    VmReserve: DoUndoPoint, "vm.create.reserve",
    "First step of a VM create, before anything is allocated; undone if the create fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// Narrows the hosts a VM may be placed on (state, capacity, tags, networks...).
    HostFilter: FilterPoint, "vm.host-allocate.filter",
    "Narrows the candidate hosts of a new VM, in order; the first remaining host is used.",
    Input = VmWork, Candidate = HostRecord
);
flatstack_kernel::extension_point!(
    /// Orders the hosts left by the filters; they are tried in that order until one takes
    /// the VM (placement strategies: spread, pack, affinity...).
    HostSort: FilterPoint, "vm.host-allocate.sort",
    "Orders the candidate hosts a new VM's filters left; the allocator tries them in order.",
    Input = VmWork, Candidate = HostRecord
);
flatstack_kernel::extension_point!(
    /// After the host is chosen: storage plugins allocate the VM's root volume on primary
    /// storage the host can reach.
    VmAllocateVolumes: DoUndoPoint, "vm.volume.allocate",
    "After a new VM's host is allocated: its root volume is allocated on primary storage the host reaches; undone if the create fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// After the host and NICs are allocated, before the hypervisor starts the VM:
    /// network services (DHCP leases, tunnels) are set up here and torn down on failure.
    VmPreInstantiate: DoUndoPoint, "vm.pre-instantiate",
    "Before the hypervisor starts a new VM, with its host and NICs; undone if the start fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// After the hypervisor started a new VM, before it is marked running: plugins that
    /// need the VM up (guest agents, monitoring) join here, and are undone — the VM
    /// stopped again — if they fail.
    VmPostInstantiate: DoUndoPoint, "vm.post-instantiate",
    "After the hypervisor started a new VM, before it is Running; undone, and the VM stopped, if a later step fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// Before a stopped VM is started: policies refuse here.
    VmStartCheck: VetoPoint, "vm.start.pre-check",
    "Before a stopped VM is started; a refusal leaves it stopped.",
    Input = VmWork
);
flatstack_kernel::extension_point!(
    /// Before the hypervisor starts a stopped VM: set up what it needs on its host.
    VmPreStart: DoUndoPoint, "vm.pre-start",
    "Before the hypervisor starts a stopped VM; undone if the start fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// Before a running VM is stopped: policies refuse here.
    VmStopCheck: VetoPoint, "vm.stop.pre-check",
    "Before a running VM is stopped; a refusal leaves it running.",
    Input = VmWork
);
flatstack_kernel::extension_point!(
    /// Before the hypervisor stops a running VM.
    VmPreStop: DoUndoPoint, "vm.pre-stop",
    "Before the hypervisor stops a running VM; undone if the stop fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// Before a running VM is rebooted: policies refuse here.
    VmRebootCheck: VetoPoint, "vm.reboot.pre-check",
    "Before a running VM is rebooted; a refusal leaves it as it is.",
    Input = VmWork
);
flatstack_kernel::extension_point!(
    /// Before a VM is destroyed: policies (deletion protection...) refuse here.
    VmDestroyCheck: VetoPoint, "vm.destroy.pre-check",
    "Before a VM is destroyed; a refusal leaves it as it is.",
    Input = VmWork
);
flatstack_kernel::extension_point!(
    /// Before a VM is stopped for good and its resources released.
    VmPreDestroy: DoUndoPoint, "vm.pre-destroy",
    "Before a VM is destroyed, while it still holds everything; undone if stopping it fails.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// A VM is destroyed (stopped on its host, `Destroying`): every plugin gives back what
    /// it holds for the VM — quota, root volume, leases, tunnels — from its own records.
    /// Every implementor runs even if another fails; the VM stays `Destroying` and the
    /// release runs again (recovery) until all succeed, so a release must be the same when
    /// run twice.
    VmRelease: ReleasePoint, "vm.release",
    "When a VM is destroyed: give back what you hold for it, from your own records; run again until it succeeds.",
    Context = VmWork
);
flatstack_kernel::extension_point!(
    /// A VM is running (after create or start). Services outside the node may observe it ([`RemoteVm`]).
    VmStarted: RemoteObservePoint, "vm.started",
    "After a VM started (created or started again).",
    Event = VmWork, remote = remote_vm
);
flatstack_kernel::extension_point!(
    /// A VM stopped.
    VmStopped: ObservePoint, "vm.stopped",
    "After a VM stopped.",
    Event = VmWork
);
flatstack_kernel::extension_point!(
    /// A VM rebooted.
    VmRebooted: ObservePoint, "vm.rebooted",
    "After a VM rebooted.",
    Event = VmWork
);
flatstack_kernel::extension_point!(
    /// A VM was destroyed and everything it held released. Services outside the node may observe it ([`RemoteVm`]).
    VmDestroyed: RemoteObservePoint, "vm.destroyed",
    "After a VM was destroyed and its host capacity, volumes, IPs and NICs released.",
    Event = VmWork, remote = remote_vm
);
