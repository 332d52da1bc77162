//! Volumes: a VM's root disk (made with the VM) and data disks (made on their own, then
//! attached to and detached from VMs).

use crate::resource::Inventory;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Message, Request};
use serde::{Deserialize, Serialize};

/// The service that owns volumes; requests about one volume are addressed to its uuid.
pub const VOLUME_SERVICE: &str = "volume";

/// A volume's `type`.
pub mod kind {
    pub const ROOT: &str = "Root";
    pub const DATA: &str = "Data";
}

/// Creates a data volume on primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Bytes.
    pub size: u64,
    /// Where to put it; if not given, the connected primary storage with the most free space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_storage_uuid: Option<String>,
}
impl Message for CreateVolume {
    const NAME: &'static str = "volume.create";
}
impl Request for CreateVolume {
    type Reply = Inventory;
}

/// Attaches the addressed data volume to a VM whose host can reach its primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    pub vm_instance_uuid: String,
}
impl Message for AttachVolume {
    const NAME: &'static str = "volume.attach";
}
impl Request for AttachVolume {
    type Reply = Inventory;
}

/// Detaches the addressed data volume from its VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolume {}
impl Message for DetachVolume {
    const NAME: &'static str = "volume.detach";
}
impl Request for DetachVolume {
    type Reply = Inventory;
}
