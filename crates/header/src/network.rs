//! L2 networks (typed: `L2NoVlanNetwork`, `L2VlanNetwork`, ...), L3 networks, their IP
//! ranges, and IP address management.

use crate::resource::{Inventory, InventoryList};
use flatstack_kernel::driver::{DriverKind, Resource};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Kernel};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The bus service that owns L2 networks.
pub const L2_NETWORK_SERVICE: &str = "l2-network";
/// The bus service that owns L3 networks and their IP addresses.
pub const L3_NETWORK_SERVICE: &str = "l3-network";
/// The bus service that owns IP ranges as resources of their own (show, update, delete).
pub const IP_RANGE_SERVICE: &str = "ip-range";
/// The base L2 type: a plain bridge on a physical interface, no tagging.
pub const L2_NO_VLAN: &str = "L2NoVlanNetwork";

/// L2 networks: a driver kind whose types are the ways to build one.
pub struct L2Networks;
impl DriverKind for L2Networks {
    const KIND: &'static str = "l2-networks";
    type Factory = dyn L2NetworkDriver;
    fn fields(driver: &dyn L2NetworkDriver) -> Option<schemars::Schema> {
        driver.fields()
    }
}

/// What an L2 network type provides to the l2-network plugin.
pub trait L2NetworkDriver: Send + Sync {
    /// The driver's own table, keyed by the network uuid (joined inheritance), if any.
    fn table(&self) -> Option<&'static str>;

    /// Validates the driver's own create fields (those the base does not know) and
    /// returns its own record's columns.
    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault>;

    /// The JSON Schema of those fields (an object), published in the OpenAPI document and
    /// at `/v1/l2-networks/types`; `None` publishes nothing of them.
    fn fields(&self) -> Option<schemars::Schema> {
        None
    }

    /// Columns of the driver's own record that, with the zone and the physical
    /// interface, identify a network of this type: a second one is a conflict. The base
    /// checks it inside the create transaction.
    fn unique_per_interface(&self) -> &'static [&'static str] {
        &[]
    }

    /// The concrete object that handles the messages addressed to `network` (its
    /// inventory). A driver handles what differs and delegates the rest to the base
    /// (`L2_NO_VLAN`), which it finds in the kind's type registry.
    fn resource(&self, kernel: &Kernel, network: Inventory) -> Result<Arc<dyn Resource>, Fault>;
}

/// Creates an L2 network; `type` names its driver, whose own fields come flattened.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateL2Network {
    /// The L2 driver, e.g. `L2NoVlanNetwork`, `L2VlanNetwork`.
    #[serde(rename = "type")]
    pub l2_type: String,
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The zone it belongs to (a uuid: 32 lowercase hex digits); it must exist.
    pub zone_uuid: String,
    /// The hosts' interface the network is built on, e.g. `eth0`: 1 to 15 printable
    /// ASCII characters, no `/` or spaces.
    pub physical_interface: String,
    /// Driver-specific fields (e.g. `vlan`, 1 to 4094, for `L2VlanNetwork`), checked by
    /// the driver: a field it does not know is refused.
    #[serde(flatten)]
    pub driver: Inventory,
}
flatstack_kernel::request!(CreateL2Network = "l2.create" => Inventory);

/// Attaches an L2 network (the addressed resource) to a cluster of its zone, so the
/// cluster's hosts can carry it. Replies with the L2 network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachL2Cluster {
    /// The cluster (a uuid), in the network's zone.
    pub cluster_uuid: String,
}
flatstack_kernel::request!(AttachL2Cluster = "l2.attach-cluster" => Inventory);

/// Detaches an L2 network (the addressed resource) from a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachL2Cluster {
    /// The cluster (a uuid) it is attached to.
    pub cluster_uuid: String,
}
flatstack_kernel::request!(DetachL2Cluster = "l2.detach-cluster" => Inventory);

/// The clusters an L2 network (the addressed resource) is attached to: rows of
/// `{l2_network_uuid, cluster_uuid, created_at}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ListL2Clusters(pub crate::resource::PageQuery);
flatstack_kernel::request!(ListL2Clusters = "l2.cluster.list" => InventoryList);

/// Creates an L3 network (an IP subnet) on an L2 network; it takes the L2's zone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateL3Network {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The L2 network it is built on (a uuid); it must exist.
    pub l2_network_uuid: String,
    /// The account it belongs to: set by the node from the caller (an admin may name
    /// another account); the admin account if not given.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
    /// Whether every account sees it and may put VMs on it. Only admins share: a member's
    /// network is its account's alone. Shared if not given (an admin's networks are the
    /// cloud's).
    #[serde(default = "crate::identity::shared_by_default")]
    pub shared: bool,
}
flatstack_kernel::request!(CreateL3Network = "l3.create" => Inventory);

/// Adds an IPv4 range to an L3 network. Addressed to the L3 network (the
/// `/v1/l3-networks/{uuid}/ip-ranges` route); sent unaddressed to the `ip-range` service
/// (`POST /v1/ip-ranges`) it needs `l3_network_uuid`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIpRange {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The first address handed out, dotted IPv4, e.g. `192.168.0.10`.
    pub start_ip: String,
    /// The last address handed out (inclusive).
    pub end_ip: String,
    /// A contiguous IPv4 mask, e.g. `255.255.255.0`.
    pub netmask: String,
    /// In the subnet, outside `[start_ip, end_ip]`.
    pub gateway: String,
    /// The L3 network, when not given by the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_network_uuid: Option<String>,
}
flatstack_kernel::request!(CreateIpRange = "l3.ip-range.create" => Inventory);

/// The IP ranges of an L3 network (the addressed resource).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ListIpRanges(pub crate::resource::PageQuery);
flatstack_kernel::request!(ListIpRanges = "l3.ip-range.list" => InventoryList);

/// Allocates an IP address of an L3 network (the addressed resource): the lowest free
/// one of its ranges, or `ip` if given (`invalid_argument` outside the ranges, `conflict`
/// if taken). Replies with the allocation: `uuid`, `ip`, `ip_range_uuid`,
/// `l3_network_uuid`, `netmask`, `gateway`, timestamps. The address is recorded with its
/// `consumer` (a VM's uuid) in the same transaction, so [`ReleaseIps`] finds it whatever
/// happened after.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateIp {
    /// This address (dotted IPv4) rather than the lowest free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Who holds the address (a VM's uuid), for [`ReleaseIps`]; none for an address
    /// taken by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}
flatstack_kernel::request!(AllocateIp = "l3.ip.allocate" => Inventory, service L3_NETWORK_SERVICE);

/// Returns an allocated IP address to its L3 network (the addressed resource);
/// `not_found` if it is not allocated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseIp {
    /// The address, dotted IPv4.
    pub ip: String,
}
flatstack_kernel::request!(ReleaseIp = "l3.ip.release" => ());

/// Returns every address a consumer holds, on any L3 network (addressed to none).
/// Idempotent: replies how many were returned (0 if none were held).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseIps {
    /// The consumer given to [`AllocateIp`] (a VM's uuid).
    pub consumer: String,
}
flatstack_kernel::request!(ReleaseIps = "l3.ip.release-consumer" => u64, service L3_NETWORK_SERVICE);

/// How many addresses each IP range holds and how many are allocated (the capacity
/// gauges of `/metrics`); answered by the l3-network plugin, lowest range first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpUsage {}
flatstack_kernel::request!(IpUsage = "l3.ip-usage" => Vec<IpRangeUsage>, service L3_NETWORK_SERVICE);

/// One range's addresses, in [`IpUsage`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpRangeUsage {
    /// The range.
    pub ip_range_uuid: String,
    /// Its L3 network.
    pub l3_network_uuid: String,
    /// How many addresses it has, first to last.
    pub total: u64,
    /// How many of them are allocated.
    pub used: u64,
}

/// The allocated IP addresses of an L3 network (the addressed resource), lowest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIpAddresses {}
flatstack_kernel::request!(ListIpAddresses = "l3.ip.list" => InventoryList);

/// An L2 network, as the l2-network plugin publishes it (its driver's own fields are the
/// driver's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct L2NetworkRecord {
    /// The network's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Its driver, e.g. `L2NoVlanNetwork`.
    #[serde(rename = "type")]
    pub l2_type: String,
    /// The zone it belongs to.
    pub zone_uuid: String,
    /// The hosts' interface it is built on, e.g. `eth0`.
    pub physical_interface: String,
    /// The clusters it is attached to: their hosts reach it.
    pub attached_cluster_uuids: Vec<String>,
}

/// What L2 networks may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2NetworkQuery {
    /// Networks of this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_uuid: Option<String>,
    /// Networks of this driver type, e.g. `L2VlanNetwork`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub l2_type: Option<String>,
}
crate::record!(L2NetworkRecord, query L2NetworkQuery, kind "l2-networks", service L2_NETWORK_SERVICE, "l2-network.record", decorated);

/// An L3 network, as the l3-network plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct L3NetworkRecord {
    /// The network's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The L2 network it is built on.
    pub l2_network_uuid: String,
    /// The zone it belongs to (its L2 network's).
    pub zone_uuid: String,
    /// The account it belongs to.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
    /// Every account may use it; otherwise only its own account's VMs.
    #[serde(
        default = "crate::identity::shared_by_default",
        deserialize_with = "crate::identity::flag"
    )]
    pub shared: bool,
}

impl L3NetworkRecord {
    /// Whether VMs of `account` may have a NIC on it.
    pub fn usable_by(&self, account: &str) -> bool {
        self.shared || self.account_uuid == account
    }
}

/// What L3 networks may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L3NetworkQuery {
    /// Networks on this L2 network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_network_uuid: Option<String>,
    /// Networks of this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_uuid: Option<String>,
}
crate::record!(L3NetworkRecord, query L3NetworkQuery, kind "l3-networks", service L3_NETWORK_SERVICE, "l3-network.record");
