//! Messages every resource service answers, and the canonical events of every resource.
//!
//! The same message names are used by every service: the bus routes by service id.

use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Event, Message, Request};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A resource's JSON view.
pub type Inventory = Map<String, Value>;

/// A page of inventories.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InventoryList {
    pub inventories: Vec<Inventory>,
    pub total: u64,
}

/// Reads one resource; addressed to the resource's uuid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetResource {}
impl Message for GetResource {
    const NAME: &'static str = "resource.get";
}
impl Request for GetResource {
    type Reply = Inventory;
}

/// Lists resources; `filters` are column = value pairs the API resource allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListResources {
    #[serde(default)]
    pub filters: Map<String, Value>,
}
impl Message for ListResources {
    const NAME: &'static str = "resource.list";
}
impl Request for ListResources {
    type Reply = InventoryList;
}

/// Changes the common fields of one resource; addressed to its uuid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}
impl Message for UpdateResource {
    const NAME: &'static str = "resource.update";
}
impl Request for UpdateResource {
    type Reply = Inventory;
}

/// Deletes one resource; refused with `conflict` while others still refer to it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteResource {}
impl Message for DeleteResource {
    const NAME: &'static str = "resource.delete";
}
impl Request for DeleteResource {
    type Reply = ();
}

/// Canonical event: a resource was created (written in the same transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceCreated {
    /// The API path of the kind, e.g. `zones`.
    pub kind: String,
    pub uuid: String,
    pub inventory: Inventory,
}
impl Message for ResourceCreated {
    const NAME: &'static str = "resource.created";
}
impl Event for ResourceCreated {}

/// Canonical event: a resource changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceUpdated {
    pub kind: String,
    pub uuid: String,
    pub inventory: Inventory,
}
impl Message for ResourceUpdated {
    const NAME: &'static str = "resource.updated";
}
impl Event for ResourceUpdated {}

/// Canonical event: a resource was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceDeleted {
    pub kind: String,
    pub uuid: String,
}
impl Message for ResourceDeleted {
    const NAME: &'static str = "resource.deleted";
}
impl Event for ResourceDeleted {}

/// What the life-cycle extension points of every resource kind are given.
#[derive(Debug, Clone)]
pub struct ResourceChange {
    /// The API path of the kind, e.g. `zones`.
    pub kind: &'static str,
    pub uuid: String,
    /// The resource as it is (or, before a create, as it will be).
    pub inventory: Inventory,
}

/// One resource attached to (or detached from) another: a storage to a cluster, an L2
/// network to a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attachment {
    /// The API path of the attached resource's kind, e.g. `primary-storage`.
    pub kind: String,
    pub uuid: String,
    /// The API path of the kind it is attached to, e.g. `clusters`.
    pub target_kind: String,
    pub target_uuid: String,
}

/// Canonical event: a resource was attached to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceAttached(pub Attachment);
impl Message for ResourceAttached {
    const NAME: &'static str = "resource.attached";
}
impl Event for ResourceAttached {}

/// Canonical event: a resource was detached from another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceDetached(pub Attachment);
impl Message for ResourceDetached {
    const NAME: &'static str = "resource.detached";
}
impl Event for ResourceDetached {}

/// A resource's state or status changed (a host became `Disconnected`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StateChange {
    pub kind: String,
    pub uuid: String,
    /// The column that changed, e.g. `status`.
    pub field: String,
    pub from: String,
    pub to: String,
}

/// Canonical event: a resource's state or status changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceStateChanged(pub StateChange);
impl Message for ResourceStateChanged {
    const NAME: &'static str = "resource.state-changed";
}
impl Event for ResourceStateChanged {}

pub mod points {
    //! Life-cycle extension points shared by every resource kind; implementors look at
    //! `kind` to pick the resources they care about.

    use super::ResourceChange;
    use flatstack_kernel::{AsyncVetoPoint, DoUndoPoint, ExtensionPoint, ObservePoint, VetoPoint};

    /// Before a resource is created: refuse to stop it (nothing is written yet).
    pub struct CreateCheck;
    impl ExtensionPoint for CreateCheck {
        const NAME: &'static str = "resource.create.pre-check";
        const DESCRIPTION: &'static str =
            "Before any resource is created; a refusal stops the create and nothing is written.";
    }
    impl VetoPoint for CreateCheck {
        type Input = ResourceChange;
    }

    /// While a resource is created, before it is written: do work that is undone if the
    /// write fails. The context holds the row about to be written (with its uuid).
    pub struct Create;
    impl ExtensionPoint for Create {
        const NAME: &'static str = "resource.create";
        const DESCRIPTION: &'static str =
            "During a create, before the row is written; undone if the write fails.";
    }
    impl DoUndoPoint for Create {
        type Context = ResourceChange;
    }

    /// After a resource was created and committed.
    pub struct Created;
    impl ExtensionPoint for Created {
        const NAME: &'static str = "resource.created";
        const DESCRIPTION: &'static str = "After a resource is created and committed.";
    }
    impl ObservePoint for Created {
        type Event = ResourceChange;
    }

    /// Before a resource is updated.
    pub struct UpdateCheck;
    impl ExtensionPoint for UpdateCheck {
        const NAME: &'static str = "resource.update.pre-check";
        const DESCRIPTION: &'static str =
            "Before a resource's common fields change; the inventory is the new one.";
    }
    impl VetoPoint for UpdateCheck {
        type Input = ResourceChange;
    }

    /// Before a resource is deleted: refuse to keep it — e.g. because resources of the
    /// implementor's own kinds still use it (a VM its image). The owner awaits it inside
    /// the delete's transaction, so an asynchronous veto reads the store through
    /// `Store::read` (never `begin`: the owner holds the writer), and on SQLite reads
    /// exactly what the delete will change.
    pub struct DeleteCheck;
    impl ExtensionPoint for DeleteCheck {
        const NAME: &'static str = "resource.delete.pre-check";
        const DESCRIPTION: &'static str =
            "Before a resource is deleted; a refusal (e.g. it is still in use) keeps it. May be asynchronous: read the store, never write it.";
    }
    impl VetoPoint for DeleteCheck {
        type Input = ResourceChange;
    }
    impl AsyncVetoPoint for DeleteCheck {}

    /// Before a resource is attached to another: refuse to keep them apart.
    pub struct AttachCheck;
    impl ExtensionPoint for AttachCheck {
        const NAME: &'static str = "resource.attach.pre-check";
        const DESCRIPTION: &'static str =
            "Before a resource is attached to another (e.g. storage to a cluster).";
    }
    impl VetoPoint for AttachCheck {
        type Input = super::Attachment;
    }

    /// After a resource was attached to another and committed.
    pub struct Attached;
    impl ExtensionPoint for Attached {
        const NAME: &'static str = "resource.attached";
        const DESCRIPTION: &'static str = "After a resource is attached to another and committed.";
    }
    impl ObservePoint for Attached {
        type Event = super::Attachment;
    }

    /// Before a resource is detached from another: refuse to keep them together — e.g.
    /// because resources of the implementor's kinds use the one through the other (the
    /// volumes of a cluster's VMs on a primary storage). Awaited like [`DeleteCheck`],
    /// inside the detach's transaction.
    pub struct DetachCheck;
    impl ExtensionPoint for DetachCheck {
        const NAME: &'static str = "resource.detach.pre-check";
        const DESCRIPTION: &'static str =
            "Before a resource is detached from another; a refusal (e.g. it is still used through it) keeps them attached. May be asynchronous: read the store, never write it.";
    }
    impl VetoPoint for DetachCheck {
        type Input = super::Attachment;
    }
    impl AsyncVetoPoint for DetachCheck {}

    /// After a resource was detached from another and committed.
    pub struct Detached;
    impl ExtensionPoint for Detached {
        const NAME: &'static str = "resource.detached";
        const DESCRIPTION: &'static str =
            "After a resource is detached from another and committed.";
    }
    impl ObservePoint for Detached {
        type Event = super::Attachment;
    }

    /// After a resource's state or status changed and was committed.
    pub struct StateChanged;
    impl ExtensionPoint for StateChanged {
        const NAME: &'static str = "resource.state-changed";
        const DESCRIPTION: &'static str =
            "After a resource's state or status changed (e.g. a host disconnected).";
    }
    impl ObservePoint for StateChanged {
        type Event = super::StateChange;
    }

    /// After a resource was deleted and committed.
    pub struct Deleted;
    impl ExtensionPoint for Deleted {
        const NAME: &'static str = "resource.deleted";
        const DESCRIPTION: &'static str = "After a resource is deleted and committed.";
    }
    impl ObservePoint for Deleted {
        type Event = ResourceChange;
    }
}
