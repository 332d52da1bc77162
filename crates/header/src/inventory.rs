//! Inventories: each kind's JSON view as the API answers it (`{"inventory": ...}`), typed,
//! so that the OpenAPI document gives every field its schema. A kind's owner names its
//! inventory in its [`crate::ApiResource`] (`inventory: Some(schema::<ZoneInventory>)`).
//!
//! An inventory is the kind's row (its migration's columns), what its `decorate` adds and,
//! for a typed kind, its driver's own columns: those are not here but in the driver's
//! published fields ([`flatstack_kernel::driver::DriverKind::fields`]), and the document
//! makes one variant per type. Fields are closed (`deny_unknown_fields`): a column added
//! without its field here is a schema a client would refuse, which the client test sees.
//!
//! Fields may say how a table shows them, as schema extensions the client reads from the
//! OpenAPI document: `x-column` (shown by default, in this order, after the uuid),
//! `x-unit = "bytes"` (shown as `1.0 GiB`), and for an array of objects `x-column-each`
//! (the field of each shown, comma-separated) with `x-column-header`. An out-of-tree
//! plugin's inventory declares its columns the same way.

use crate::infra::{HostState, HostStatus};
use crate::storage::StorageStatus;
use crate::vm::VmState;
use flatstack_kernel::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// The JSON Schema of `T`: what an [`crate::ApiResource`]'s `inventory` points at.
pub fn schema<T: JsonSchema>() -> schemars::Schema {
    schemars::schema_for!(T)
}

/// A zone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A cluster of hosts of one hypervisor type.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The zone it belongs to.
    #[schemars(extend("x-column" = 3))]
    pub zone_uuid: String,
    /// The hypervisor driver type of its hosts, e.g. `Simulator`.
    #[schemars(extend("x-column" = 2))]
    pub hypervisor_type: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A host; its driver's own fields come with it (one variant per type in the document).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The hypervisor driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    #[schemars(extend("x-column" = 4))]
    pub host_type: String,
    /// The cluster it belongs to.
    pub cluster_uuid: String,
    /// The address the management node reaches it at.
    #[schemars(extend("x-column" = 5))]
    pub management_ip: String,
    /// Whether it takes new work (`Enabled`) or not (`Disabled`).
    #[schemars(extend("x-column" = 3))]
    pub state: HostState,
    /// Its status, as its owner last saw it.
    #[schemars(extend("x-column" = 2))]
    pub status: HostStatus,
    /// vCPUs.
    pub cpu_capacity: u64,
    /// Bytes.
    pub memory_capacity: u64,
    /// vCPUs not held by any VM.
    #[schemars(extend("x-column" = 6))]
    pub available_cpu: u64,
    /// Bytes of memory not held by any VM.
    #[schemars(extend("x-column" = 7, "x-unit" = "bytes"))]
    pub available_memory: u64,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// Primary or backup storage; its driver's own fields come with it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupStorageInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The storage driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    #[schemars(extend("x-column" = 3))]
    pub storage_type: String,
    /// The zone it belongs to.
    pub zone_uuid: String,
    /// Where it is, as its driver understands it.
    pub url: String,
    /// Its status, as its owner last saw it.
    #[schemars(extend("x-column" = 2))]
    pub status: StorageStatus,
    /// Bytes.
    #[schemars(extend("x-column" = 4, "x-unit" = "bytes"))]
    pub total_capacity: u64,
    /// Bytes not held by anything.
    #[schemars(extend("x-column" = 5, "x-unit" = "bytes"))]
    pub available_capacity: u64,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// Primary storage: backup storage's fields and the clusters it is attached to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimaryStorageInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The storage driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    #[schemars(extend("x-column" = 3))]
    pub storage_type: String,
    /// The zone it belongs to.
    pub zone_uuid: String,
    /// Where it is, as its driver understands it.
    pub url: String,
    /// Its status, as its owner last saw it.
    #[schemars(extend("x-column" = 2))]
    pub status: StorageStatus,
    /// Bytes.
    #[schemars(extend("x-column" = 4, "x-unit" = "bytes"))]
    pub total_capacity: u64,
    /// Bytes not held by anything.
    #[schemars(extend("x-column" = 5, "x-unit" = "bytes"))]
    pub available_capacity: u64,
    /// The clusters attached to it.
    pub attached_cluster_uuids: Vec<String>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// An image's disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// QEMU copy-on-write, version 2.
    Qcow2,
    /// A raw disk image.
    Raw,
    /// An ISO 9660 CD image.
    Iso,
    /// VMware's disk format.
    Vmdk,
}

/// Whether an image can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageStatus {
    /// Placed on its backup storage; VMs can be made from it.
    Ready,
}

/// An image on backup storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// Where its bytes are fetched from.
    pub url: String,
    /// The image format.
    #[schemars(extend("x-column" = 3))]
    pub format: ImageFormat,
    /// Bytes.
    #[schemars(extend("x-column" = 4, "x-unit" = "bytes"))]
    pub size: u64,
    /// Whether VMs can be made from it.
    #[schemars(extend("x-column" = 2))]
    pub status: ImageStatus,
    /// The backup storage that hold it.
    pub backup_storage_uuids: Vec<String>,
    /// The account it belongs to.
    pub account_uuid: String,
    /// Every account sees it and may make VMs from it (only admins share).
    #[schemars(extend("x-column" = 5))]
    pub shared: bool,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A CPU/memory shape for VMs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceOfferingInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// vCPUs.
    #[schemars(extend("x-column" = 2))]
    pub cpu_num: u64,
    /// Bytes.
    #[schemars(extend("x-column" = 3, "x-unit" = "bytes"))]
    pub memory_size: u64,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// An L2 network; its driver's own fields (e.g. `vlan`) come with it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2NetworkInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// Its driver, e.g. `L2NoVlanNetwork`.
    #[serde(rename = "type")]
    #[schemars(extend("x-column" = 2))]
    pub l2_type: String,
    /// The zone it belongs to.
    #[schemars(extend("x-column" = 4))]
    pub zone_uuid: String,
    /// The host interface it is carried on (a Linux interface name).
    #[schemars(extend("x-column" = 3))]
    pub physical_interface: String,
    /// The clusters it is attached to.
    pub attached_cluster_uuids: Vec<String>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// An L2 network's attachment to a cluster (`/v1/l2-networks/{uuid}/clusters`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2ClusterAttachment {
    /// The L2 network under it.
    pub l2_network_uuid: String,
    /// The cluster it belongs to.
    pub cluster_uuid: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
}

/// An L3 network on an L2 network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L3NetworkInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The L2 network under it.
    #[schemars(extend("x-column" = 2))]
    pub l2_network_uuid: String,
    /// The zone it belongs to.
    #[schemars(extend("x-column" = 3))]
    pub zone_uuid: String,
    /// The account it belongs to.
    pub account_uuid: String,
    /// Every account sees it and may put VMs on it (only admins share).
    #[schemars(extend("x-column" = 4))]
    pub shared: bool,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// An IPv4 range of an L3 network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRangeInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The L3 network it is on.
    pub l3_network_uuid: String,
    /// The first address of the range.
    #[schemars(extend("x-column" = 2))]
    pub start_ip: String,
    /// The last address of the range.
    #[schemars(extend("x-column" = 3))]
    pub end_ip: String,
    /// The netmask of the range.
    #[schemars(extend("x-column" = 4))]
    pub netmask: String,
    /// The gateway of the range.
    #[schemars(extend("x-column" = 5))]
    pub gateway: String,
    /// e.g. `192.168.0.0/24`.
    pub network_cidr: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A NIC of a VM.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// The VM it belongs to.
    pub vm_instance_uuid: String,
    /// The L3 network it is on.
    pub l3_network_uuid: String,
    /// The L2 network under the L3 network (none on NICs recorded before it was kept).
    pub l2_network_uuid: Option<String>,
    /// That L2 network's type, e.g. `L2VlanNetwork`.
    pub l2_type: Option<String>,
    /// Its IP address.
    pub ip: String,
    /// Its MAC address (`02:…`, locally administered).
    pub mac: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A VM instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    /// The account it belongs to (quotas count per account).
    pub account_uuid: String,
    /// Its life-cycle state; `Creating`, `Starting`, `Stopping` and `Destroying` are transient.
    #[schemars(extend("x-column" = 2))]
    pub state: VmState,
    /// The instance offering it was made with.
    pub instance_offering_uuid: String,
    /// The image it was made from.
    pub image_uuid: String,
    /// Where it runs (or ran last); none until placed.
    #[schemars(extend("x-column" = 3))]
    pub host_uuid: Option<String>,
    /// vCPUs.
    #[schemars(extend("x-column" = 5))]
    pub cpu_num: u64,
    /// Bytes.
    #[schemars(extend("x-column" = 6, "x-unit" = "bytes"))]
    pub memory_size: u64,
    /// Its NICs.
    #[schemars(extend("x-column" = 4, "x-column-header" = "IPS", "x-column-each" = "ip"))]
    pub nics: Vec<NicInventory>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}

/// A volume's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeType {
    /// A VM's root disk, made from its image with the VM and destroyed with it.
    Root,
    /// A disk of its own, attached to and detached from VMs.
    Data,
}

/// Where a volume is; all but `Ready` are transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeStatus {
    /// Its bytes are being made.
    Creating,
    /// Stable: detached, or attached to its VM.
    Ready,
    /// Being attached to a VM.
    Attaching,
    /// Being detached from its VM.
    Detaching,
    /// Being deleted.
    Deleting,
}

/// A volume on primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeInventory {
    /// Its uuid: 32 lowercase hex characters.
    pub uuid: String,
    /// Its name (1–255 bytes; not unique).
    #[schemars(extend("x-column" = 1))]
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
    #[serde(rename = "type")]
    /// Root or data.
    #[schemars(extend("x-column" = 3))]
    pub volume_type: VolumeType,
    /// Where it is in its life cycle.
    #[schemars(extend("x-column" = 2))]
    pub status: VolumeStatus,
    /// Bytes.
    #[schemars(extend("x-column" = 4, "x-unit" = "bytes"))]
    pub size: u64,
    /// The primary storage it is on.
    pub primary_storage_uuid: String,
    /// The VM it is attached to, if any.
    #[schemars(extend("x-column" = 5))]
    pub vm_instance_uuid: Option<String>,
    /// Its device index on the VM; absent when detached.
    pub device_id: Option<u64>,
    /// The image a root volume was made from.
    pub image_uuid: Option<String>,
    /// The account it belongs to (a root volume: its VM's).
    pub account_uuid: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: String,
}
