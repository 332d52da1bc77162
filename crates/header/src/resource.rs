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

pub mod points {
    //! Life-cycle extension points shared by every resource kind; implementors look at
    //! `kind` to pick the resources they care about.

    use super::ResourceChange;
    use flatstack_kernel::{DoUndoPoint, ExtensionPoint, ObservePoint, VetoPoint};

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

    /// Before a resource is deleted: refuse to keep it.
    pub struct DeleteCheck;
    impl ExtensionPoint for DeleteCheck {
        const NAME: &'static str = "resource.delete.pre-check";
        const DESCRIPTION: &'static str = "Before a resource is deleted; a refusal keeps it.";
    }
    impl VetoPoint for DeleteCheck {
        type Input = ResourceChange;
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
