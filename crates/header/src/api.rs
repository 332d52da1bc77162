//! How a plugin exposes a resource kind over the API. The HTTP layer generates its routes
//! (and the OpenAPI document) from these descriptors; a plugin registers one with
//! `PluginBuilder::register(ApiResource { .. })`.

use crate::identity::Access;

/// A collection `/v1/{path}` served by bus service `service`.
///
/// `POST /v1/{path}` sends `create` (a message of the service) with the request body;
/// `GET`, `PATCH` and `DELETE` send the common [`crate::resource`] messages.
#[derive(Debug, Clone)]
pub struct ApiResource {
    /// The URL segment, plural and kebab-case: `zones`, `l2-networks`.
    pub path: &'static str,
    /// The bus service that owns the kind.
    pub service: &'static str,
    /// The name of the create message.
    pub create: &'static str,
    /// The driver kind whose registered types `GET /v1/{path}/types` lists, if typed.
    pub driver_kind: Option<&'static str>,
    /// Query parameters `GET /v1/{path}` accepts as filters (column names).
    pub filters: &'static [&'static str],
    /// `POST /v1/{path}/{uuid}/actions` with `{"action": name, ...}`.
    pub actions: &'static [ApiAction],
    /// Sub-collections: `/v1/{path}/{uuid}/{child.path}`.
    pub children: &'static [ApiChild],
    /// The JSON Schema of the kind's inventory, as the API answers it (e.g.
    /// `Some(inventory::schema::<ZoneInventory>)`, see [`crate::inventory`]); for a typed
    /// kind, without its drivers' own fields, which each type publishes. `None`: an
    /// object of any fields.
    pub inventory: Option<fn() -> flatstack_kernel::schemars::Schema>,
    /// Who may see and change the kind's resources ([`Access`]); `Access::Admin` unless
    /// the plugin says otherwise.
    pub access: Access,
    /// Its create request or answer holds a secret (a password, a token shown once): the
    /// create runs at once and answers `201`, never written to the job journal.
    pub holds_secrets: bool,
}

/// An action on one resource: the body (without `action`) is sent as `message`, with the
/// resource's uuid as the addressed resource.
#[derive(Debug, Clone)]
pub struct ApiAction {
    /// The action's name, snake_case: the body's `action` field, e.g. `attach_cluster`.
    pub name: &'static str,
    /// The name of the message sent, e.g. `host.reconnect`.
    pub message: &'static str,
    /// Members may run it on their account's resources of an [`Access::Owned`] kind;
    /// otherwise it is admin-only.
    pub member: bool,
}

impl ApiAction {
    /// An action only admins may run.
    pub const fn admin(name: &'static str, message: &'static str) -> Self {
        ApiAction {
            name,
            message,
            member: false,
        }
    }

    /// An action members may run on their own account's resources.
    pub const fn member(name: &'static str, message: &'static str) -> Self {
        ApiAction {
            name,
            message,
            member: true,
        }
    }
}

/// A sub-collection of a resource, e.g. the IP ranges of an L3 network.
#[derive(Debug, Clone)]
pub struct ApiChild {
    /// The URL segment under one resource, kebab-case, e.g. `ip-ranges`.
    pub path: &'static str,
    /// Create message; the parent's uuid is the addressed resource.
    pub create: &'static str,
    /// List message; the parent's uuid is the addressed resource.
    pub list: &'static str,
    /// The JSON Schema of one of its rows, as the list answers them; `None`: those of the
    /// kind whose create `create` is (an L3 network's IP ranges), or any object.
    pub inventory: Option<fn() -> flatstack_kernel::schemars::Schema>,
}

/// An action a driver adds to another plugin's resource kind, served by the driver's own
/// service: e.g. the simulator's failure injection on `/v1/hosts/{uuid}/actions`.
#[derive(Debug, Clone)]
pub struct ApiActionExtension {
    /// The `path` of the resource kind it extends.
    pub path: &'static str,
    /// The service that handles it (the resource's uuid is the addressed resource).
    pub service: &'static str,
    /// The action and the message it sends.
    pub action: ApiAction,
}

/// A child collection a plugin adds to another plugin's resource kind, served by its own
/// service: `GET /v1/{path}/{uuid}/{child}` sends `list` (and `POST` sends `create`, if
/// it has one), addressed to the parent's uuid — e.g. the tunnels an overlay-network
/// plugin keeps for each L2 network. The API answers `404` for a parent that does not
/// exist before the service is asked. Registered with `PluginBuilder::register`; the
/// distribution refuses at assembly one on a kind no enabled plugin serves, or whose
/// segment another child of that kind already has (`flatstack_api::check`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiChildExtension {
    /// The `path` of the resource kind it extends, e.g. `l2-networks`.
    pub path: &'static str,
    /// The URL segment under one resource of that kind, e.g. `vxlan-tunnels`.
    pub child: &'static str,
    /// The service that answers its messages.
    pub service: &'static str,
    /// The list message (its reply an `InventoryList`).
    pub list: &'static str,
    /// The create message, if the API may create one (`POST`); `None` lists only.
    pub create: Option<&'static str>,
    /// The JSON Schema of one of its rows, as the list answers them (`None`: any object).
    pub inventory: Option<fn() -> flatstack_kernel::schemars::Schema>,
}

impl ApiChildExtension {
    /// `GET /v1/{path}/{uuid}/{child}`, answered by `service` with message `list`.
    pub const fn new(
        path: &'static str,
        child: &'static str,
        service: &'static str,
        list: &'static str,
    ) -> Self {
        ApiChildExtension {
            path,
            child,
            service,
            list,
            create: None,
            inventory: None,
        }
    }

    /// Also `POST /v1/{path}/{uuid}/{child}`, which sends `create` as a job.
    pub const fn with_create(mut self, create: &'static str) -> Self {
        self.create = Some(create);
        self
    }

    /// Documents its rows with `schema` (e.g. `inventory::schema::<TunnelInventory>`).
    pub const fn with_inventory(
        mut self,
        schema: fn() -> flatstack_kernel::schemars::Schema,
    ) -> Self {
        self.inventory = Some(schema);
        self
    }
}
