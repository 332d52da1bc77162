//! Zones and clusters.

use crate::resource::Inventory;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Message, Request};
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
    type Factory = dyn HostFactory;
}

/// What a hypervisor driver provides. Connecting a host is the driver's business.
#[flatstack_kernel::async_trait]
pub trait HostFactory: Send + Sync {
    /// Validates the driver's own create fields and returns its own record's columns
    /// (stored in the driver's table, keyed by the host uuid).
    fn validate(
        &self,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, flatstack_kernel::Fault>;
    /// The driver's own table (joined to `hosts` by uuid).
    fn table(&self) -> &'static str;
}
