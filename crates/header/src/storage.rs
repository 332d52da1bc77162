//! Primary storage (where volumes live), backup storage (where images live), images and
//! instance offerings.

use crate::resource::Inventory;
use flatstack_kernel::driver::DriverKind;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Kernel};
use serde::{Deserialize, Serialize};

/// What a storage driver provides to the plugin that owns its kind.
#[flatstack_kernel::async_trait]
pub trait StorageDriver: Send + Sync {
    /// The driver's own table, keyed by the storage uuid (joined inheritance), if any.
    fn table(&self) -> Option<&'static str>;
    /// Validates the driver's own create fields and returns its own record's columns.
    fn validate(&self, url: &str, params: &Inventory) -> Result<Inventory, Fault>;
    /// The JSON Schema of those fields (an object), published in the OpenAPI document and
    /// at `/v1/{kind}/types`; `None` publishes nothing of them.
    fn fields(&self) -> Option<schemars::Schema> {
        None
    }

    /// Creates a volume's bytes on the storage (primary storage only). `volume` is the
    /// volume's record as it will be stored: `uuid`, `size`, `type`, `image_uuid`...
    async fn create_volume(
        &self,
        _kernel: &Kernel,
        storage: &PrimaryStorageRecord,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        Err(crate::infra::unsupported_by(
            &storage.storage_type,
            "storage",
            "hold volumes",
        ))
    }

    /// Deletes a volume's bytes; deleting one that is not there is not an error.
    async fn delete_volume(
        &self,
        _kernel: &Kernel,
        storage: &PrimaryStorageRecord,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        Err(crate::infra::unsupported_by(
            &storage.storage_type,
            "storage",
            "hold volumes",
        ))
    }
}

/// The service that owns primary storage; capacity requests are addressed to one storage's
/// uuid, so they run one at a time and never over-commit it.
pub const PRIMARY_STORAGE_SERVICE: &str = "primary-storage";

/// Takes `size` bytes of the addressed primary storage for a consumer (a volume's uuid);
/// `conflict` if it has not got them. Recorded per consumer in the same transaction, as
/// host capacity is: asking again for the same consumer takes nothing more.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveStorage {
    /// Who holds the bytes: a volume's uuid. Taking again for it takes nothing more.
    pub consumer: String,
    /// Bytes to take.
    pub size: u64,
}
flatstack_kernel::request!(ReserveStorage = "primary-storage.capacity.reserve" => Inventory, service PRIMARY_STORAGE_SERVICE);

/// Gives back whatever bytes a consumer holds on any primary storage (addressed to none).
/// Idempotent: `true` if something was given back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseStorage {
    /// The consumer given to [`ReserveStorage`] (a volume's uuid).
    pub consumer: String,
}
flatstack_kernel::request!(ReleaseStorage = "primary-storage.capacity.release" => bool, service PRIMARY_STORAGE_SERVICE);

/// Primary storage: a driver kind (`Simulator`, `LocalStorage`, `NFS`, ...).
pub struct PrimaryStorages;
impl DriverKind for PrimaryStorages {
    const KIND: &'static str = "primary-storage";
    type Factory = dyn StorageDriver;
    fn fields(driver: &dyn StorageDriver) -> Option<schemars::Schema> {
        driver.fields()
    }
}

/// Backup storage: a driver kind.
pub struct BackupStorages;
impl DriverKind for BackupStorages {
    const KIND: &'static str = "backup-storage";
    type Factory = dyn StorageDriver;
    fn fields(driver: &dyn StorageDriver) -> Option<schemars::Schema> {
        driver.fields()
    }
}

/// Creates primary or backup storage (the same fields; the service decides which).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateStorage {
    /// The storage driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub storage_type: String,
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// The zone it belongs to (a uuid: 32 lowercase hex digits); it must exist.
    pub zone_uuid: String,
    /// Where the storage is, in its driver's terms (e.g. `nfs://host/export`); not empty,
    /// checked by the driver.
    pub url: String,
    /// Bytes it offers: 1 to 2^63-1.
    pub total_capacity: u64,
    /// Driver-specific fields, checked by the driver.
    #[serde(flatten)]
    pub driver: Inventory,
}

/// Creates primary storage, where VMs' volumes live. Replies with its inventory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CreatePrimaryStorage(pub CreateStorage);
flatstack_kernel::request!(CreatePrimaryStorage = "primary-storage.create" => Inventory);

/// Creates backup storage, where images live. Replies with its inventory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CreateBackupStorage(pub CreateStorage);
flatstack_kernel::request!(CreateBackupStorage = "backup-storage.create" => Inventory);

/// Attaches primary storage (the addressed resource) to a cluster of its zone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachPrimaryStorage {
    /// The cluster (a uuid), in the storage's zone.
    pub cluster_uuid: String,
}
flatstack_kernel::request!(AttachPrimaryStorage = "primary-storage.attach-cluster" => Inventory);

/// Detaches primary storage (the addressed resource) from a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachPrimaryStorage {
    /// The cluster (a uuid) it is attached to.
    pub cluster_uuid: String,
}
flatstack_kernel::request!(DetachPrimaryStorage = "primary-storage.detach-cluster" => Inventory);

/// Registers an image on one or more backup storages (taking `size` bytes on each).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImage {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// Where the image's bytes come from; not empty.
    pub url: String,
    /// `qcow2`, `raw`, `iso` or `vmdk`.
    #[schemars(with = "crate::inventory::ImageFormat")]
    pub format: String,
    /// Bytes, taken on each backup storage and the least a root volume made from it gets:
    /// 1 to 2^63-1.
    pub size: u64,
    /// The backup storages to keep it on (uuids): one or more, each once.
    pub backup_storage_uuids: Vec<String>,
    /// The account it belongs to: set by the node from the caller (an admin may name
    /// another account); the admin account if not given.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
    /// Whether every account sees it and may make VMs from it (a public image). Only
    /// admins share: a member's image is its account's alone. Shared if not given.
    #[serde(default = "crate::identity::shared_by_default")]
    pub shared: bool,
}
flatstack_kernel::request!(CreateImage = "image.create" => Inventory);

/// A CPU/memory shape for VMs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceOffering {
    /// Shown to people: 1 to 255 bytes, not only whitespace; need not be unique.
    pub name: String,
    /// Free text; empty if not given.
    #[serde(default)]
    pub description: String,
    /// vCPUs of a VM of this shape: 1 to 1024.
    pub cpu_num: u32,
    /// Bytes of memory of a VM of this shape: at least 1 MiB (1048576).
    pub memory_size: u64,
}
flatstack_kernel::request!(CreateInstanceOffering = "instance-offering.create" => Inventory);

/// Takes `size` bytes of the addressed backup storage for a consumer (an image's uuid);
/// `conflict` if it has not got them. One record per (consumer, backup storage), written
/// with the take: asking again takes nothing more. A consumer may hold bytes of several.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveBackupStorage {
    /// Who holds the bytes: an image's uuid.
    pub consumer: String,
    /// Bytes to take.
    pub size: u64,
}
flatstack_kernel::request!(ReserveBackupStorage = "backup-storage.capacity.reserve" => (), service BACKUP_STORAGE_SERVICE);

/// Gives back whatever bytes a consumer holds on any backup storage (addressed to none).
/// Idempotent: how many backup storages it held bytes of (`0` once released).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBackupStorage {
    /// The consumer given to [`ReserveBackupStorage`] (an image's uuid).
    pub consumer: String,
}
flatstack_kernel::request!(ReleaseBackupStorage = "backup-storage.capacity.release" => u32, service BACKUP_STORAGE_SERVICE);

/// Every consumer holding bytes of some backup storage: what its owner checks at start
/// against its own records, to give back what a stop left held by nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupStorageConsumers {}
flatstack_kernel::request!(BackupStorageConsumers = "backup-storage.capacity.consumers" => Vec<String>, service BACKUP_STORAGE_SERVICE);

/// The service that owns images.
pub const IMAGE_SERVICE: &str = "image";
/// The service that owns instance offerings.
pub const INSTANCE_OFFERING_SERVICE: &str = "instance-offering";
/// The service that owns backup storage.
pub const BACKUP_STORAGE_SERVICE: &str = "backup-storage";

/// Whether storage is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StorageStatus {
    /// Reached: volumes may be placed on it.
    Connected,
    /// Not reached: nothing new is placed on it.
    Disconnected,
}

impl StorageStatus {
    /// The text rows and inventories hold, e.g. `Connected`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StorageStatus::Connected => "Connected",
            StorageStatus::Disconnected => "Disconnected",
        }
    }
}

/// A primary storage, as the storage plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrimaryStorageRecord {
    /// The storage's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Its driver, e.g. `Simulator`.
    #[serde(rename = "type")]
    pub storage_type: String,
    /// The zone it belongs to.
    pub zone_uuid: String,
    /// Whether the node reaches it.
    pub status: StorageStatus,
    /// Bytes it offers in all.
    pub total_capacity: u64,
    /// Bytes not taken by volumes ([`ReserveStorage`]).
    pub available_capacity: u64,
    /// The clusters it is attached to: their hosts reach it.
    pub attached_cluster_uuids: Vec<String>,
}

/// What primary storage may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrimaryStorageQuery {
    /// Storage of this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_uuid: Option<String>,
    /// Storage with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StorageStatus>,
}
crate::record!(PrimaryStorageRecord, query PrimaryStorageQuery, kind "primary-storage", service PRIMARY_STORAGE_SERVICE, "primary-storage.record", decorated);

/// An image, as the image plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRecord {
    /// The image's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Where its bytes came from.
    pub url: String,
    /// e.g. `qcow2`, `raw`, `iso`.
    pub format: String,
    /// Bytes: what a root volume made from it needs at least.
    pub size: u64,
    /// The account it belongs to.
    #[serde(default = "crate::identity::admin_account")]
    pub account_uuid: String,
    /// Every account may make VMs from it; otherwise only its own account.
    #[serde(
        default = "crate::identity::shared_by_default",
        deserialize_with = "crate::identity::flag"
    )]
    pub shared: bool,
}

impl ImageRecord {
    /// Whether VMs of `account` may be made from it.
    pub fn usable_by(&self, account: &str) -> bool {
        self.shared || self.account_uuid == account
    }
}

/// What images may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    /// Images of this format, e.g. `qcow2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}
crate::record!(ImageRecord, query ImageQuery, kind "images", service IMAGE_SERVICE, "image.record");

/// An instance offering, as the instance-offering plugin publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceOfferingRecord {
    /// The offering's uuid.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// vCPUs of a VM of this shape.
    pub cpu_num: u32,
    /// Bytes of memory of a VM of this shape.
    pub memory_size: u64,
}

/// What instance offerings may be found by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceOfferingQuery {
    /// Offerings of exactly this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
crate::record!(InstanceOfferingRecord, query InstanceOfferingQuery, kind "instance-offerings", service INSTANCE_OFFERING_SERVICE, "instance-offering.record");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_its_shared_flag_as_stored_or_as_a_boolean() {
        let row = |shared: serde_json::Value| {
            serde_json::json!({"uuid": "i", "name": "n", "url": "u", "format": "raw",
                "size": 1, "account_uuid": "a", "shared": shared})
        };
        let read = |shared| serde_json::from_value::<ImageRecord>(row(shared)).expect("reads");
        assert!(!read(serde_json::json!(0)).shared);
        assert!(read(serde_json::json!(1)).shared);
        assert!(read(serde_json::json!(true)).shared);
        assert!(!read(serde_json::json!(false)).shared);
        assert!(serde_json::from_value::<ImageRecord>(row(serde_json::json!("yes"))).is_err());
        let mine = read(serde_json::json!(0));
        assert!(mine.usable_by("a") && !mine.usable_by("b"));
        assert!(read(serde_json::json!(1)).usable_by("b"));
    }
}
