//! VXLAN L2 networks, as a plugin shipped out of Flatstack's tree. It shows each way a
//! plugin adds to the node, in one `build`:
//!
//! - **a driver type with its own fields and table**: `L2VxlanNetwork`, an L2 network
//!   with a `vni`, kept in `vxlan_networks` (joined to the base `l2_networks` by uuid);
//!   everything else is the `L2NoVlanNetwork` base's, found in the type registry;
//! - **a do/undo extension on a VM point**: on `vm.pre-instantiate`, a tunnel endpoint
//!   for each NIC of a new VM on a VXLAN network, recorded in `vxlan_tunnels` (its host,
//!   its VNI, the UDP port); undone — exactly the rows this create made, kept in its
//!   typed slot of the context — if the create fails later; and given back — the VM's
//!   rows removed — when the VM is destroyed (`vm.release`);
//! - **a veto that reads the store**: deleting a VXLAN network is refused (`409`, naming
//!   the VMs) while VMs' tunnels are on it;
//! - **a child collection on another plugin's kind**: `GET /v1/l2-networks/{uuid}/
//!   vxlan-tunnels`, served by this plugin's service;
//! - **a configuration key**: `vxlan.udp_port` (default 4789), set in the manifest's
//!   `[config]`.

use flatstack_header::api::ApiChildExtension;
use flatstack_header::network::{L2NetworkDriver, L2Networks, L2_NO_VLAN};
use flatstack_header::points::DeleteCheck;
use flatstack_header::vm::{VmPreInstantiate, VmRelease, VmWork};
use flatstack_header::{Inventory, InventoryList, ResourceChange};
use flatstack_kernel::driver::{Handled, Incoming, Resource};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, json_schema, JsonSchema, Schema};
use flatstack_kernel::{
    async_trait, AsyncVeto, ConfigKey, DoUndo, Fault, Kernel, KernelRef, Message, MessageContext,
    Plugin, PluginBuilder, Release, Request,
};
use flatstack_store::resource::{new_uuid, row, store};
use flatstack_store::{TableKind, Users};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// The type name.
pub const L2_VXLAN: &str = "L2VxlanNetwork";
/// The plugin's name (in the manifest and in every error).
pub const PLUGIN: &str = "vxlan";
/// The service that lists tunnels.
pub const SERVICE: &str = "vxlan";
/// The child collection's segment under an L2 network.
pub const TUNNELS_PATH: &str = "vxlan-tunnels";
/// VXLAN network identifiers are 24 bits; 0 is not used.
const VNIS: RangeInclusive<i64> = 1..=16_777_215;
const NETWORKS: &str = "vxlan_networks";
const TUNNELS: &str = "vxlan_tunnels";

/// The UDP port of the tunnels recorded from now on.
pub const UDP_PORT: ConfigKey<u16> = ConfigKey::new(
    "vxlan.udp_port",
    "The UDP port of VXLAN tunnels (IANA's is 4789; Linux's first default was 8472).",
    || 4789,
)
.with_validator(|port| {
    if *port == 0 {
        Err("must be a port, 1 to 65535".into())
    } else {
        Ok(())
    }
});

/// The tunnels of an L2 network (addressed to it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTunnels {}
impl Message for ListTunnels {
    const NAME: &'static str = "vxlan.tunnel.list";
}
impl Request for ListTunnels {
    type Reply = InventoryList;
}

/// The plugin: add it to a distribution with `Distribution::default().plugin(VxlanPlugin)`.
pub struct VxlanPlugin;

impl Plugin for VxlanPlugin {
    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn description(&self) -> &'static str {
        "The L2VxlanNetwork type, and a tunnel endpoint for each VM NIC on one."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its tables refer to L2 networks; it takes part in the VM's create and reads L3
        // networks' records.
        &["l2-network", "l3-network", "vm"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "vxlan networks and tunnels",
            "CREATE TABLE vxlan_networks (
                uuid TEXT PRIMARY KEY REFERENCES l2_networks (uuid), vni BIGINT NOT NULL);
             CREATE TABLE vxlan_tunnels (
                uuid TEXT PRIMARY KEY,
                l2_network_uuid TEXT NOT NULL REFERENCES l2_networks (uuid),
                vm_instance_uuid TEXT NOT NULL, nic_uuid TEXT NOT NULL,
                host_uuid TEXT NOT NULL, vni BIGINT NOT NULL, udp_port BIGINT NOT NULL,
                created_at TEXT NOT NULL);
             CREATE INDEX vxlan_tunnels_by_vm ON vxlan_tunnels (vm_instance_uuid)",
        ));
        b.config(&UDP_PORT);
        b.driver::<L2Networks>(L2_VXLAN, Arc::new(VxlanDriver));
        let kernel = b.kernel();
        b.do_undo::<VmPreInstantiate>(Tunnels(kernel.clone()));
        b.release::<VmRelease>(Tunnels(kernel.clone()));
        b.veto_async::<DeleteCheck>(InUse(kernel));
        b.service(SERVICE, ())
            .handle::<ListTunnels, _, _>(|_, _, cx| async move {
                let mut tx = store(&cx.kernel)?.read().await?;
                let mut filter = Inventory::new();
                filter.insert("l2_network_uuid".into(), json!(cx.resource_id()?));
                let inventories = tx.list(TUNNELS, &filter).await?;
                Ok(InventoryList {
                    next: None,
                    total: inventories.len() as u64,
                    inventories,
                })
            });
        b.register(
            ApiChildExtension::new("l2-networks", TUNNELS_PATH, SERVICE, ListTunnels::NAME)
                .with_inventory(flatstack_header::inventory::schema::<TunnelInventory>),
        );
        // A refusal names a tunnel's VM, not the table.
        b.register(TableKind::part(TUNNELS, "vm-instances", "vm_instance_uuid"));
    }
}

/// A tunnel, as `GET /v1/l2-networks/{uuid}/vxlan-tunnels` lists it (the OpenAPI
/// document's schema of its rows).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelInventory {
    pub uuid: String,
    pub l2_network_uuid: String,
    pub vm_instance_uuid: String,
    pub nic_uuid: String,
    pub host_uuid: String,
    pub vni: u32,
    pub udp_port: u16,
    pub created_at: String,
}

/// Validates and stores a VXLAN network's own field, `vni`.
struct VxlanDriver;

impl L2NetworkDriver for VxlanDriver {
    fn table(&self) -> Option<&'static str> {
        Some(NETWORKS)
    }

    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault> {
        let mut own = Inventory::new();
        for (key, value) in params {
            if key != "vni" {
                return Err(Fault::invalid(
                    key,
                    format!("unknown field `{key}` for an {L2_VXLAN}"),
                ));
            }
            let vni = value.as_i64().filter(|v| VNIS.contains(v)).ok_or_else(|| {
                Fault::invalid(
                    "vni",
                    format!("vni must be an integer from 1 to 16777215, not {value}"),
                )
            })?;
            own.insert("vni".into(), json!(vni));
        }
        if !own.contains_key("vni") {
            return Err(Fault::invalid(
                "vni",
                format!("an {L2_VXLAN} needs `vni` (1 to 16777215)"),
            ));
        }
        Ok(own)
    }

    fn fields(&self) -> Option<Schema> {
        // Published in the OpenAPI document: a client built from it sends `vni`.
        Some(json_schema!({
            "type": "object",
            "properties": {"vni": {
                "description": "The VXLAN network identifier.",
                "type": "integer", "minimum": VNIS.start(), "maximum": VNIS.end()
            }},
            "required": ["vni"],
            "additionalProperties": false
        }))
    }

    fn unique_per_interface(&self) -> &'static [&'static str] {
        &["vni"]
    }

    fn resource(&self, kernel: &Kernel, network: Inventory) -> Result<Arc<dyn Resource>, Fault> {
        // The base comes from the type registry: a plugin never links another's code.
        let base = kernel
            .drivers()
            .get::<L2Networks>(L2_NO_VLAN)?
            .resource(kernel, network)?;
        Ok(Arc::new(Vxlan { base }))
    }
}

/// One VXLAN network: attach, detach and the rest are the base's.
struct Vxlan {
    base: Arc<dyn Resource>,
}

#[async_trait]
impl Resource for Vxlan {
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
        self.base.handle(msg, cx).await
    }
}

/// A tunnel endpoint on the VM's host for each of its NICs on a VXLAN network.
struct Tunnels(KernelRef);

/// The tunnels this create made: what its undo removes, and only those.
#[derive(Clone, Default)]
struct Made(Vec<String>);

#[async_trait]
impl DoUndo<VmPreInstantiate> for Tunnels {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let host = vm
            .host_uuid()
            .ok_or_else(|| Fault::internal("a VM reaches vm.pre-instantiate with its host"))?
            .to_owned();
        // Each NIC comes with its L2 network and type: a VM with no VXLAN NIC costs nothing.
        let ours: Vec<_> = vm.nics.iter().filter(|n| n.l2_type == L2_VXLAN).collect();
        if ours.is_empty() {
            vm.slots.insert(Made::default());
            return Ok(());
        }
        let store = store(&kernel)?;
        let mut read = store.read().await?;
        let mut tunnels = Vec::new();
        for nic in ours {
            let network = read
                .get(NETWORKS, &nic.l2_network_uuid)
                .await?
                .ok_or_else(|| {
                    Fault::conflict(format!("VXLAN network {} is gone", nic.l2_network_uuid))
                })?;
            tunnels.push((
                nic.uuid.clone(),
                nic.l2_network_uuid.clone(),
                network["vni"].clone(),
            ));
        }
        drop(read);
        let port = kernel.config().get(&UDP_PORT);
        let mut made = Vec::new();
        let mut tx = store.begin().await?;
        for (nic, l2, vni) in tunnels {
            let uuid = new_uuid();
            let tunnel = row(json!({
                "uuid": uuid, "l2_network_uuid": l2, "vm_instance_uuid": vm.vm_uuid,
                "nic_uuid": nic, "host_uuid": host, "vni": vni, "udp_port": port,
                "created_at": flatstack_store::now(),
            }));
            tx.insert(TUNNELS, &tunnel).await?;
            made.push(uuid);
        }
        tx.commit(kernel.bus()).await?;
        vm.slots.insert(Made(made));
        Ok(())
    }

    /// Removes the tunnels this create made (its slot says which). After a restart the
    /// slot is empty: recovery's undo then removes the VM's tunnels by its uuid.
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let made = vm.slots.remove::<Made>();
        if made.as_ref().is_some_and(|m| m.0.is_empty()) {
            return Ok(());
        }
        let mut tx = store(&kernel)?.begin().await?;
        match made {
            Some(Made(made)) => {
                for uuid in made {
                    tx.delete(TUNNELS, &uuid).await?;
                }
            }
            None => {
                tx.delete_where(TUNNELS, "vm_instance_uuid", &vm.vm_uuid)
                    .await?;
            }
        }
        tx.commit(kernel.bus()).await?;
        Ok(())
    }
}

#[async_trait]
impl Release<VmRelease> for Tunnels {
    /// The VM is destroyed: its tunnels go, found by its uuid (so the same when run twice).
    async fn release(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let store = store(&kernel)?;
        // Most VMs have none: looked for beside the writer first.
        let mut read = store.read().await?;
        let held = read
            .count_where(TUNNELS, "vm_instance_uuid", &json!(vm.vm_uuid))
            .await?;
        drop(read);
        if held == 0 {
            return Ok(());
        }
        let mut tx = store.begin().await?;
        tx.delete_where(TUNNELS, "vm_instance_uuid", &vm.vm_uuid)
            .await?;
        tx.commit(kernel.bus()).await?;
        Ok(())
    }
}

/// Refuses to delete an L2 network while VMs' tunnels are on it, naming the VMs.
struct InUse(KernelRef);

#[async_trait]
impl AsyncVeto<DeleteCheck> for InUse {
    async fn check(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind != "l2-networks" {
            return Ok(());
        }
        let kernel = self.0.get()?;
        // The delete holds the writer: read beside it, never begin.
        let mut tx = store(&kernel)?.read().await?;
        let mut users = Users::new();
        users
            .query(
                &mut tx,
                "vm-instances",
                "SELECT DISTINCT vm_instance_uuid AS u FROM vxlan_tunnels WHERE l2_network_uuid = $1",
                &[json!(change.uuid)],
            )
            .await?;
        users.check(&format!(
            "cannot delete l2-networks {}: VXLAN tunnels of VMs are on it",
            change.uuid
        ))
    }
}
