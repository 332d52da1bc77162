//! Volumes: a VM's root disk (made with the VM) and data disks (made on their own, then
//! attached to and detached from VMs).

use crate::resource::Inventory;
use flatstack_kernel::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// The service that owns volumes; requests about one volume are addressed to its uuid.
pub const VOLUME_SERVICE: &str = "volume";

/// A volume's `type`.
pub mod kind {
    /// A VM's root disk: made from its image with the VM, destroyed with it.
    pub const ROOT: &str = "Root";
    /// A disk made on its own, attached to and detached from VMs.
    pub const DATA: &str = "Data";
}

/// Creates a data volume on primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// Bytes, taken from the primary storage's capacity: 1 to 2^63-1.
    pub size: u64,
    /// Where to put it; if not given, the connected primary storage with the most free space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_storage_uuid: Option<String>,
    /// The account it belongs to: set by the node from the caller (an admin may name
    /// another account); the admin account if not given.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
}
flatstack_kernel::request!(CreateVolume = "volume.create" => Inventory);

/// Attaches the addressed data volume to a VM whose host can reach its primary storage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The VM (a uuid); its host must reach the volume's primary storage.
    pub vm_instance_uuid: String,
}
flatstack_kernel::request!(AttachVolume = "volume.attach" => Inventory);

/// Detaches the addressed data volume from its VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolume {}
flatstack_kernel::request!(DetachVolume = "volume.detach" => Inventory);
