//! Zones and clusters.

use crate::resource::Inventory;
use crate::vm::VmWork;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Kernel};
use serde::{Deserialize, Serialize};

/// Creates a zone: the top of the infrastructure tree (clusters, storage and networks
/// belong to one). Replies with the zone's inventory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
}
flatstack_kernel::request!(CreateZone = "zone.create" => Inventory);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// Creates a cluster: hosts of one hypervisor type in a zone, the unit storage and L2
/// networks attach to. Replies with the cluster's inventory.
pub struct CreateCluster {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The zone it belongs to (a uuid: 32 lowercase hex digits); it must exist.
    pub zone_uuid: String,
    /// The hypervisor driver type of the cluster's hosts, e.g. `Simulator`: a registered
    /// type of the `hosts` driver kind; every host added must be of it.
    pub hypervisor_type: String,
}
flatstack_kernel::request!(CreateCluster = "cluster.create" => Inventory);

/// Hosts: a driver kind whose types are hypervisors (`Simulator`, `KVM`, ...).
pub struct Hosts;
impl flatstack_kernel::driver::DriverKind for Hosts {
    const KIND: &'static str = "hosts";
    type Factory = dyn HostDriver;
    fn fields(driver: &dyn HostDriver) -> Option<schemars::Schema> {
        driver.fields()
    }
}

/// What a hypervisor driver provides to the host plugin.
#[flatstack_kernel::async_trait]
pub trait HostDriver: Send + Sync {
    /// The driver's own table, keyed by the host uuid (joined inheritance), if it has one.
    fn table(&self) -> Option<&'static str>;
    /// Validates the driver's own create fields (those the base does not know) and
    /// returns its own record's columns.
    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault>;
    /// The JSON Schema of those fields (an object), published in the OpenAPI document and
    /// at `/v1/hosts/types`; `None` publishes nothing of them.
    fn fields(&self) -> Option<schemars::Schema> {
        None
    }
    /// Connects to the host; on success the host is `Connected`.
    async fn connect(&self, kernel: &Kernel, host: &Inventory) -> Result<(), Fault>;

    /// Starts (creates and boots) a VM on the host.
    async fn start_vm(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
    ) -> Result<(), Fault> {
        Err(unsupported_by(&host.host_type, "hosts", "start VMs"))
    }

    /// Stops a VM on the host; stopping a VM the host does not run is not an error.
    async fn stop_vm(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
    ) -> Result<(), Fault> {
        Err(unsupported_by(&host.host_type, "hosts", "stop VMs"))
    }

    /// The uuids of the VMs the host runs now: after the host reconnects, VMs left
    /// `Unknown` while it was lost become `Running` or `Stopped` by this answer.
    async fn running_vms(&self, _kernel: &Kernel, host: &HostRecord) -> Result<Vec<String>, Fault> {
        Err(unsupported_by(
            &host.host_type,
            "hosts",
            "report the VMs they run",
        ))
    }

    /// Reboots a running VM on the host.
    async fn reboot_vm(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
    ) -> Result<(), Fault> {
        Err(unsupported_by(&host.host_type, "hosts", "reboot VMs"))
    }

    /// Plugs a volume into a VM on the host (the VM may be running or stopped).
    async fn attach_volume(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        Err(unsupported_by(&host.host_type, "hosts", "attach volumes"))
    }

    /// Unplugs a volume from a VM on the host.
    async fn detach_volume(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        Err(unsupported_by(&host.host_type, "hosts", "detach volumes"))
    }

    /// Runs a command of the host's agent (as ZStack's KVM agent takes HTTP calls):
    /// what plugins need done on a host that the trait has no method for — a bridge, a
    /// tunnel, a daemon's status. The driver sends it and returns the agent's answer; a
    /// command the agent does not know is an error. Plugins that are not the host's owner
    /// send [`CallHostAgent`] rather than call this.
    async fn call_agent(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _command: &AgentCommand,
    ) -> Result<serde_json::Value, Fault> {
        Err(unsupported_by(
            &host.host_type,
            "hosts",
            "run agent commands",
        ))
    }
}

/// A command for a host's agent: a dotted name the agent knows (`daemon.status`,
/// `<namespace>.create`, ...) and its JSON body. Which commands exist is an agreement
/// between the plugin that sends them and the hypervisor driver's agent, not the host
/// plugin's business: it only carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCommand {
    /// The command, e.g. `daemon.status`: lowercase words joined by dots.
    pub name: String,
    /// Its arguments; `{}` if it takes none.
    #[serde(default = "empty_object")]
    pub body: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl AgentCommand {
    /// The command `name` with `body`.
    pub fn new(name: impl Into<String>, body: serde_json::Value) -> Self {
        AgentCommand {
            name: name.into(),
            body,
        }
    }

    /// Whether `name` is a command name: 1 to 100 bytes of lowercase words (`a-z`,
    /// digits, `-`, `_`) joined by dots.
    pub fn is_valid_name(name: &str) -> bool {
        name.len() <= 100
            && name.split('.').all(|word| {
                !word.is_empty()
                    && word.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    })
            })
    }
}

/// Runs a command on the addressed host's agent, through the host's driver, and replies
/// with the agent's answer. Addressed to the host: commands to one host run one at a time,
/// in the order sent. Inside `host.connect`, which runs on that same queue, call the
/// driver's [`HostDriver::call_agent`] instead (the request would wait for the connect).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallHostAgent {
    /// The command.
    pub command: AgentCommand,
}
flatstack_kernel::request!(CallHostAgent = "host.agent.call" => serde_json::Value, service HOST_SERVICE);

/// What a driver's default method answers: `<type> <things> cannot <what>`, e.g.
/// "KVM hosts cannot attach volumes".
pub(crate) fn unsupported_by(driver_type: &str, things: &str, what: &str) -> Fault {
    Fault::unavailable(format!("{driver_type} {things} cannot {what}"))
}

/// Adds a host to a cluster and connects it through its driver. Replies with the host's
/// inventory, `Connected`; a host that cannot be connected is not added (the error says
/// why).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateHost {
    /// The hypervisor driver, e.g. `Simulator`: the cluster's `hypervisor_type`.
    #[serde(rename = "type")]
    pub host_type: String,
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The cluster it joins (a uuid); it must exist.
    pub cluster_uuid: String,
    /// The address the node reaches the host at: an IPv4 or IPv6 address, unique among
    /// hosts.
    pub management_ip: String,
    /// vCPUs the host offers; at least 1.
    pub cpu_capacity: u32,
    /// Bytes of memory the host offers: 1 to 2^63-1.
    pub memory_capacity: u64,
    /// Driver-specific fields.
    #[serde(flatten)]
    pub driver: Inventory,
}
flatstack_kernel::request!(CreateHost = "host.create" => Inventory);

/// Reconnects a host (addressed to its uuid).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectHost {}
flatstack_kernel::request!(ReconnectHost = "host.reconnect" => Inventory);

/// What the host-connect extension point is given.
#[derive(Debug, Clone)]
pub struct HostConnection {
    /// The host's inventory, its driver's own fields joined.
    pub host: Inventory,
}

flatstack_kernel::extension_point!(
    /// Connecting a host: plugins prepare it (agents, bridges, storage mounts) and undo
    /// that if the connection fails later.
    HostConnect: DoUndoPoint, "host.connect",
    "While a host connects, after its driver reached it; undone if the connect fails later.",
    Context = HostConnection
);

/// Takes CPU and memory from a host (addressed to it) for a consumer (a VM's uuid);
/// `conflict` if it does not have them. The host records what the consumer holds in the
/// same transaction, so the take is never lost nor doubled: asking again for the same
/// consumer on the same host answers the host as it is and takes nothing more. The check
/// and the take are one conditional update, race-free across nodes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveCapacity {
    /// Who holds what is taken: a VM's uuid. Taking again for the same one takes nothing.
    pub consumer: String,
    /// vCPUs to take.
    pub cpu_num: u32,
    /// Bytes of memory to take.
    pub memory_size: u64,
}
flatstack_kernel::request!(ReserveCapacity = "host.capacity.reserve" => HostRecord, service HOST_SERVICE);

/// Gives back whatever a consumer holds on any host (sent to the host service, addressed
/// to no host: the host's record knows where). Idempotent: `true` if something was given
/// back, `false` if the consumer held nothing (already released, or never taken).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseCapacity {
    /// Whose capacity to give back: the uuid given to [`ReserveCapacity`].
    pub consumer: String,
}
flatstack_kernel::request!(ReleaseCapacity = "host.capacity.release" => bool, service HOST_SERVICE);

/// The service that owns hosts.
pub const HOST_SERVICE: &str = "host";

/// The service that owns zones.
pub const ZONE_SERVICE: &str = "zone";
/// The service that owns clusters.
pub const CLUSTER_SERVICE: &str = "cluster";

/// A zone, as the zone plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneRecord {
    /// The zone's uuid.
    pub uuid: String,
    /// Its name, as given at create or changed since.
    pub name: String,
}

/// What zones may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneQuery {
    /// Zones of exactly this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
crate::record!(ZoneRecord, query ZoneQuery, kind "zones", service ZONE_SERVICE, "zone.record");

/// A cluster, as the cluster plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterRecord {
    /// The cluster's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The zone it belongs to.
    pub zone_uuid: String,
    /// The hypervisor driver type of its hosts, e.g. `Simulator`.
    pub hypervisor_type: String,
}

/// What clusters may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterQuery {
    /// Clusters of this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_uuid: Option<String>,
}
crate::record!(ClusterRecord, query ClusterQuery, kind "clusters", service CLUSTER_SERVICE, "cluster.record");

/// Whether the management node reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HostStatus {
    /// Created or reconnecting: its driver is being reached.
    Connecting,
    /// Reached: VMs may be placed on it.
    Connected,
    /// Not reached: its VMs are `Unknown` until it is back.
    Disconnected,
}

impl HostStatus {
    /// The text rows and inventories hold, e.g. `Connected`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HostStatus::Connecting => "Connecting",
            HostStatus::Connected => "Connected",
            HostStatus::Disconnected => "Disconnected",
        }
    }
}

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an operator lets VMs be placed on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HostState {
    /// New VMs may be placed on it.
    Enabled,
    /// No new VM is placed on it; those it runs stay.
    Disabled,
}

impl HostState {
    /// The text rows and inventories hold, e.g. `Enabled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HostState::Enabled => "Enabled",
            HostState::Disabled => "Disabled",
        }
    }
}

/// A host, as the host plugin publishes it (its driver's own fields are the driver's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostRecord {
    /// The host's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The hypervisor driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub host_type: String,
    /// The cluster it is in.
    pub cluster_uuid: String,
    /// The IP address the node reaches it at.
    pub management_ip: String,
    /// Whether an operator lets VMs be placed on it.
    pub state: HostState,
    /// Whether the node reaches it.
    pub status: HostStatus,
    /// vCPUs it offers in all.
    pub cpu_capacity: u64,
    /// Bytes of memory it offers in all.
    pub memory_capacity: u64,
    /// vCPUs not taken by VMs ([`ReserveCapacity`]).
    pub available_cpu: u64,
    /// Bytes of memory not taken by VMs.
    pub available_memory: u64,
}

/// What hosts may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostQuery {
    /// Hosts of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uuid: Option<String>,
    /// Hosts with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HostStatus>,
    /// Hosts in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,
}
crate::record!(HostRecord, query HostQuery, kind "hosts", service HOST_SERVICE, "host.record");
