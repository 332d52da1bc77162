//! Inventories: each kind's JSON view as the API answers it (`{"inventory": ...}`), typed,
//! so that the OpenAPI document gives every field its schema. A kind's owner names its
//! inventory in its [`crate::ApiResource`] (`inventory: Some(schema::<ZoneInventory>)`).
//!
//! An inventory is the kind's row (its migration's columns), what its `decorate` adds and,
//! for a typed kind, its driver's own columns: those are not here but in the driver's
//! published fields ([`flatstack_kernel::driver::DriverKind::fields`]), and the document
//! makes one variant per type. Fields are closed (`deny_unknown_fields`): a column added
//! without its field here is a schema a client would refuse, which the client test sees.

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
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A cluster of hosts of one hypervisor type.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub zone_uuid: String,
    /// The hypervisor driver type of its hosts, e.g. `Simulator`.
    pub hypervisor_type: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A host; its driver's own fields come with it (one variant per type in the document).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    /// The hypervisor driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub host_type: String,
    pub cluster_uuid: String,
    pub management_ip: String,
    pub state: HostState,
    pub status: HostStatus,
    /// vCPUs.
    pub cpu_capacity: u64,
    /// Bytes.
    pub memory_capacity: u64,
    pub available_cpu: u64,
    pub available_memory: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// Primary or backup storage; its driver's own fields come with it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupStorageInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    /// The storage driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub storage_type: String,
    pub zone_uuid: String,
    pub url: String,
    pub status: StorageStatus,
    /// Bytes.
    pub total_capacity: u64,
    pub available_capacity: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// Primary storage: backup storage's fields and the clusters it is attached to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimaryStorageInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    /// The storage driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub storage_type: String,
    pub zone_uuid: String,
    pub url: String,
    pub status: StorageStatus,
    /// Bytes.
    pub total_capacity: u64,
    pub available_capacity: u64,
    pub attached_cluster_uuids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An image's disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Qcow2,
    Raw,
    Iso,
    Vmdk,
}

/// Whether an image can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageStatus {
    Ready,
}

/// An image on backup storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub format: ImageFormat,
    /// Bytes.
    pub size: u64,
    pub status: ImageStatus,
    /// The backup storage that hold it.
    pub backup_storage_uuids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A CPU/memory shape for VMs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceOfferingInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub cpu_num: u64,
    /// Bytes.
    pub memory_size: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// An L2 network; its driver's own fields (e.g. `vlan`) come with it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2NetworkInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    /// Its driver, e.g. `L2NoVlanNetwork`.
    #[serde(rename = "type")]
    pub l2_type: String,
    pub zone_uuid: String,
    pub physical_interface: String,
    /// The clusters it is attached to.
    pub attached_cluster_uuids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An L2 network's attachment to a cluster (`/v1/l2-networks/{uuid}/clusters`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2ClusterAttachment {
    pub l2_network_uuid: String,
    pub cluster_uuid: String,
    pub created_at: String,
}

/// An L3 network on an L2 network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L3NetworkInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub l2_network_uuid: String,
    pub zone_uuid: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An IPv4 range of an L3 network.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRangeInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub l3_network_uuid: String,
    pub start_ip: String,
    pub end_ip: String,
    pub netmask: String,
    pub gateway: String,
    /// e.g. `192.168.0.0/24`.
    pub network_cidr: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A NIC of a VM.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicInventory {
    pub uuid: String,
    pub vm_instance_uuid: String,
    pub l3_network_uuid: String,
    /// The L2 network under the L3 network (none on NICs recorded before it was kept).
    pub l2_network_uuid: Option<String>,
    /// That L2 network's type, e.g. `L2VlanNetwork`.
    pub l2_type: Option<String>,
    pub ip: String,
    pub mac: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A VM instance.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub state: VmState,
    pub instance_offering_uuid: String,
    pub image_uuid: String,
    /// Where it runs (or ran last); none until placed.
    pub host_uuid: Option<String>,
    pub cpu_num: u64,
    /// Bytes.
    pub memory_size: u64,
    pub nics: Vec<NicInventory>,
    pub created_at: String,
    pub updated_at: String,
}

/// A volume's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeType {
    Root,
    Data,
}

/// Where a volume is; all but `Ready` are transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeStatus {
    Creating,
    Ready,
    Attaching,
    Detaching,
    Deleting,
}

/// A volume on primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub volume_type: VolumeType,
    pub status: VolumeStatus,
    /// Bytes.
    pub size: u64,
    pub primary_storage_uuid: String,
    /// The VM it is attached to, if any.
    pub vm_instance_uuid: Option<String>,
    pub device_id: Option<u64>,
    /// The image a root volume was made from.
    pub image_uuid: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}
