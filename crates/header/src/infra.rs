//! Zones and clusters.

use crate::resource::Inventory;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{DoUndoPoint, ExtensionPoint, Fault, Kernel, Message, Request};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZone {
    pub name: String,
    #[serde(default)]
    pub description: String,
}
impl Message for CreateZone {
    const NAME: &'static str = "zone.create";
}
impl Request for CreateZone {
    type Reply = Inventory;
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub zone_uuid: String,
    /// The hypervisor driver type of the cluster's hosts, e.g. `Simulator`.
    pub hypervisor_type: String,
}
impl Message for CreateCluster {
    const NAME: &'static str = "cluster.create";
}
impl Request for CreateCluster {
    type Reply = Inventory;
}

/// Hosts: a driver kind whose types are hypervisors (`Simulator`, `KVM`, ...).
pub struct Hosts;
impl flatstack_kernel::driver::DriverKind for Hosts {
    const KIND: &'static str = "hosts";
    type Factory = dyn HostDriver;
}

/// What a hypervisor driver provides to the host plugin.
#[flatstack_kernel::async_trait]
pub trait HostDriver: Send + Sync {
    /// The driver's own table, keyed by the host uuid (joined inheritance), if it has one.
    fn table(&self) -> Option<&'static str>;
    /// Validates the driver's own create fields (those the base does not know) and
    /// returns its own record's columns.
    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault>;
    /// Connects to the host; on success the host is `Connected`.
    async fn connect(&self, kernel: &Kernel, host: &Inventory) -> Result<(), Fault>;
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateHost {
    /// The hypervisor driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub host_type: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub cluster_uuid: String,
    pub management_ip: String,
    /// vCPUs the host offers.
    pub cpu_capacity: u32,
    /// Bytes of memory the host offers.
    pub memory_capacity: u64,
    /// Driver-specific fields.
    #[serde(flatten)]
    pub driver: Inventory,
}
impl Message for CreateHost {
    const NAME: &'static str = "host.create";
}
impl Request for CreateHost {
    type Reply = Inventory;
}

/// Reconnects a host (addressed to its uuid).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectHost {}
impl Message for ReconnectHost {
    const NAME: &'static str = "host.reconnect";
}
impl Request for ReconnectHost {
    type Reply = Inventory;
}

/// What the host-connect extension point is given.
#[derive(Debug, Clone)]
pub struct HostConnection {
    pub host: Inventory,
}

/// Connecting a host: plugins prepare it (agents, bridges, storage mounts) and undo that
/// if the connection fails later.
pub struct HostConnect;
impl ExtensionPoint for HostConnect {
    const NAME: &'static str = "host.connect";
    const DESCRIPTION: &'static str =
        "While a host connects, after its driver reached it; undone if the connect fails later.";
}
impl DoUndoPoint for HostConnect {
    type Context = HostConnection;
}
