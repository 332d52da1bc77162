//! Messages every resource service answers, and the canonical events of every resource.
//!
//! The same message names are used by every service: the bus routes by service id.

use flatstack_kernel::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A resource's JSON view.
pub type Inventory = Map<String, Value>;

/// A page of inventories.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InventoryList {
    /// The resources, oldest first.
    pub inventories: Vec<Inventory>,
    /// How many resources matched, on every page.
    pub total: u64,
    /// The cursor of the next page (`?cursor=`); absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How a page of a list is asked for: the `limit`, `cursor` and `sort` of a list's query.
/// A child collection's list message carries it (`GET /v1/{kind}/{uuid}/{child}?limit=`),
/// as the serde-transparent newtype `struct ListThings(pub PageQuery)`; a kind's own list
/// takes the same three among its filters ([`ListResources`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many rows (1 to the list's maximum, which is also the default).
    #[serde(
        default,
        deserialize_with = "number_or_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Columns to sort by, comma-separated, each `-`-prefixed for descending
    /// (`name,-created_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

/// A count given as a JSON number or, as a query string has it, as text.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(u64),
        Text(String),
    }
    match Option::<Count>::deserialize(d)? {
        None => Ok(None),
        Some(Count::Number(n)) => Ok(Some(n)),
        Some(Count::Text(t)) => t
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a count"))),
    }
}

/// Reads one resource; addressed to the resource's uuid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetResource {}
// A read: a `GET` answers at once, never behind an operation on the resource.
flatstack_kernel::request!(GetResource = "resource.get" => Inventory, reads);

/// A filter of [`ListResources`] on a shareable kind ([`crate::identity::Access::Shared`]):
/// the resources of the account it names and the shared ones
/// (`account_uuid = $1 OR shared`).
pub const VISIBLE_TO: &str = "visible_to";

/// Lists resources; `filters` are column = value pairs the API resource allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListResources {
    /// Column name to the value it must equal; only columns the kind allows (its
    /// `filters`), the value converted to the column's type.
    #[serde(default)]
    pub filters: Map<String, Value>,
}
flatstack_kernel::request!(ListResources = "resource.list" => InventoryList);

/// Changes the common fields of one resource; addressed to its uuid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    /// A new name: 1 to 255 bytes, not only whitespace; unchanged if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description; unchanged if absent.
    #[serde(default)]
    pub description: Option<String>,
}
flatstack_kernel::request!(UpdateResource = "resource.update" => Inventory);

/// Deletes one resource; refused with `conflict` while others still refer to it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteResource {}
flatstack_kernel::request!(DeleteResource = "resource.delete" => ());

/// Canonical event: a resource was created (written in the same transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceCreated {
    /// The API path of the kind, e.g. `zones`.
    pub kind: String,
    /// The resource's uuid.
    pub uuid: String,
    /// The resource as created (its inventory).
    pub inventory: Inventory,
}
flatstack_kernel::event!(ResourceCreated = "resource.created");

/// Canonical event: a resource changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceUpdated {
    /// The API path of the kind, e.g. `zones`.
    pub kind: String,
    /// The resource's uuid.
    pub uuid: String,
    /// The resource as it is now.
    pub inventory: Inventory,
}
flatstack_kernel::event!(ResourceUpdated = "resource.updated");

/// Canonical event: a resource was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceDeleted {
    /// The API path of the kind, e.g. `zones`.
    pub kind: String,
    /// The uuid the resource had.
    pub uuid: String,
}
flatstack_kernel::event!(ResourceDeleted = "resource.deleted");

/// What the life-cycle extension points of every resource kind are given.
#[derive(Debug, Clone)]
pub struct ResourceChange {
    /// The API path of the kind, e.g. `zones`.
    pub kind: &'static str,
    /// The resource's uuid (before a create, the one it will have).
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
    /// The attached resource's uuid.
    pub uuid: String,
    /// The API path of the kind it is attached to, e.g. `clusters`.
    pub target_kind: String,
    /// The uuid of the resource it is attached to.
    pub target_uuid: String,
}

/// Canonical event: a resource was attached to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceAttached(pub Attachment);
flatstack_kernel::event!(ResourceAttached = "resource.attached");

/// Canonical event: a resource was detached from another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceDetached(pub Attachment);
flatstack_kernel::event!(ResourceDetached = "resource.detached");

/// A resource's state or status changed (a host became `Disconnected`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StateChange {
    /// The API path of the kind, e.g. `hosts`.
    pub kind: String,
    /// The resource's uuid.
    pub uuid: String,
    /// The column that changed, e.g. `status`.
    pub field: String,
    /// The value before, e.g. `Connected`.
    pub from: String,
    /// The value now, e.g. `Disconnected`.
    pub to: String,
}

/// Canonical event: a resource's state or status changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ResourceStateChanged(pub StateChange);
flatstack_kernel::event!(ResourceStateChanged = "resource.state-changed");

pub mod points {
    //! Life-cycle extension points shared by every resource kind; implementors look at
    //! `kind` to pick the resources they care about.

    use super::ResourceChange;

    flatstack_kernel::extension_point!(
        /// Before a resource is created: refuse to stop it (nothing is written yet).
        CreateCheck: VetoPoint, "resource.create.pre-check",
        "Before any resource is created; a refusal stops the create and nothing is written.",
        Input = ResourceChange
    );

    flatstack_kernel::extension_point!(
        /// While a resource is created, before it is written: do work that is undone if the
        /// write fails. The context holds the row about to be written (with its uuid).
        Create: DoUndoPoint, "resource.create",
        "During a create, before the row is written; undone if the write fails.",
        Context = ResourceChange
    );

    flatstack_kernel::extension_point!(
        /// After a resource was created and committed.
        Created: ObservePoint, "resource.created",
        "After a resource is created and committed.",
        Event = ResourceChange
    );

    flatstack_kernel::extension_point!(
        /// Before a resource is updated.
        UpdateCheck: VetoPoint, "resource.update.pre-check",
        "Before a resource's common fields change; the inventory is the new one.",
        Input = ResourceChange
    );

    flatstack_kernel::extension_point!(
        /// Before a resource is deleted: refuse to keep it — e.g. because resources of the
        /// implementor's own kinds still use it (a VM its image). The owner awaits it inside
        /// the delete's transaction, so an asynchronous veto reads the store through
        /// `Store::read` (never `begin`: the owner holds the writer), and on SQLite reads
        /// exactly what the delete will change.
        DeleteCheck: AsyncVetoPoint, "resource.delete.pre-check",
        "Before a resource is deleted; a refusal (e.g. it is still in use) keeps it. May be asynchronous: read the store, never write it.",
        Input = ResourceChange
    );

    flatstack_kernel::extension_point!(
        /// Before a resource is attached to another: refuse to keep them apart.
        AttachCheck: VetoPoint, "resource.attach.pre-check",
        "Before a resource is attached to another (e.g. storage to a cluster).",
        Input = super::Attachment
    );

    flatstack_kernel::extension_point!(
        /// After a resource was attached to another and committed.
        Attached: ObservePoint, "resource.attached",
        "After a resource is attached to another and committed.",
        Event = super::Attachment
    );

    flatstack_kernel::extension_point!(
        /// Before a resource is detached from another: refuse to keep them together — e.g.
        /// because resources of the implementor's kinds use the one through the other (the
        /// volumes of a cluster's VMs on a primary storage). Awaited like [`DeleteCheck`],
        /// inside the detach's transaction.
        DetachCheck: AsyncVetoPoint, "resource.detach.pre-check",
        "Before a resource is detached from another; a refusal (e.g. it is still used through it) keeps them attached. May be asynchronous: read the store, never write it.",
        Input = super::Attachment
    );

    flatstack_kernel::extension_point!(
        /// After a resource was detached from another and committed.
        Detached: ObservePoint, "resource.detached",
        "After a resource is detached from another and committed.",
        Event = super::Attachment
    );

    flatstack_kernel::extension_point!(
        /// After a resource's state or status changed and was committed.
        StateChanged: ObservePoint, "resource.state-changed",
        "After a resource's state or status changed (e.g. a host disconnected).",
        Event = super::StateChange
    );

    flatstack_kernel::extension_point!(
        /// After a resource was deleted and committed.
        Deleted: ObservePoint, "resource.deleted",
        "After a resource is deleted and committed.",
        Event = ResourceChange
    );
}
