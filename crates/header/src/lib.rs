//! Flatstack's cloud vocabulary, shared by plugins that must not depend on each other:
//! API resource descriptors, the common resource messages and events, driver kinds and
//! extension points. No logic lives here.

pub mod api;
pub mod infra;
pub mod network;
pub mod resource;
pub mod storage;
pub mod vm;
pub mod volume;

pub use api::{ApiAction, ApiActionExtension, ApiChild, ApiResource};
pub use resource::{
    points, Attachment, DeleteResource, GetResource, Inventory, InventoryList, ListResources,
    ResourceAttached, ResourceChange, ResourceCreated, ResourceDeleted, ResourceDetached,
    ResourceStateChanged, ResourceUpdated, StateChange, UpdateResource,
};
