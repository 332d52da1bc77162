//! Flatstack's cloud vocabulary, shared by plugins that must not depend on each other:
//! API resource descriptors, the common resource messages and events, driver kinds and
//! extension points. No logic lives here.

#![warn(missing_docs)]

pub mod api;
pub mod events;
pub mod identity;
pub mod infra;
pub mod inventory;
pub mod network;
pub mod record;
pub mod resource;
pub mod storage;
pub mod vm;
pub mod volume;

pub use record::{FindRecords, GetRecord, Record};

pub use api::{ApiAction, ApiActionExtension, ApiChild, ApiResource};

/// The node's data directory, provided to the kernel (`KernelBuilder::provide`) for plugins
/// that keep files of their own there (the Simulator's hosts keep the VMs they run, as real
/// hosts outlive the management node). A kernel assembled without one (tests) has none.
#[derive(Debug, Clone)]
pub struct DataDir(
    /// The directory: the node's `--data-dir`.
    pub std::path::PathBuf,
);
pub use resource::{
    points, Attachment, DeleteResource, GetResource, Inventory, InventoryList, ListResources,
    PageQuery, ResourceAttached, ResourceChange, ResourceCreated, ResourceDeleted,
    ResourceDetached, ResourceStateChanged, ResourceUpdated, StateChange, UpdateResource,
};
