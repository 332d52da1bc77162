//! DHCP: the network service that hands each NIC its address. It takes part in the VM's
//! create through `vm.pre-instantiate` — recording a lease (IP ↔ MAC) for every NIC, and
//! removing them if the create fails later or when the VM is destroyed. The VM plugin does
//! not know it exists.

use flatstack_header::vm::{VmPreInstantiate, VmRelease, VmWork};
use flatstack_header::{ApiAction, ApiActionExtension, Inventory, InventoryList};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, DoUndo, Fault, KernelRef, Message, Plugin, PluginBuilder, Release, Request,
};
use flatstack_store::resource::{row, store};
use flatstack_store::TableKind;
use serde::{Deserialize, Serialize};
use serde_json::json;

const LEASES: &str = "dhcp_leases";

/// The DHCP leases of an L3 network (addressed to it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListLeases {}
impl Message for ListLeases {
    const NAME: &'static str = "dhcp.lease.list";
}
impl Request for ListLeases {
    type Reply = InventoryList;
}

struct Leases(KernelRef);

#[async_trait]
impl DoUndo<VmPreInstantiate> for Leases {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.begin().await?;
        for nic in &vm.nics {
            let lease = row(json!({
                "l3_network_uuid": nic.l3_network_uuid, "ip": nic.ip, "mac": nic.mac,
                "vm_instance_uuid": vm.vm_uuid, "created_at": flatstack_store::now(),
            }));
            tx.insert(LEASES, &lease).await?;
        }
        tx.commit(kernel.bus()).await?;
        Ok(())
    }

    /// Removes the VM's leases, found by its uuid (not from the NICs in memory): after a
    /// restart, or run twice, it is the same.
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.begin().await?;
        tx.delete_where(LEASES, "vm_instance_uuid", &vm.vm_uuid)
            .await?;
        tx.commit(kernel.bus()).await?;
        Ok(())
    }
}

/// At destroy, the same as undoing the create: from the same records.
#[async_trait]
impl Release<VmRelease> for Leases {
    async fn release(&self, vm: &mut VmWork) -> Result<(), Fault> {
        DoUndo::<VmPreInstantiate>::undo(self, vm).await
    }
}

pub struct DhcpPlugin;

impl Plugin for DhcpPlugin {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    fn description(&self) -> &'static str {
        "DHCP leases for every VM NIC, set up before the VM starts."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its leases refer to L3 networks.
        &["l3-network"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "dhcp leases",
            "CREATE TABLE dhcp_leases (
                l3_network_uuid TEXT NOT NULL REFERENCES l3_networks (uuid),
                ip TEXT NOT NULL, mac TEXT NOT NULL, vm_instance_uuid TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (l3_network_uuid, ip))",
        ));
        b.migration(Migration::new(
            2,
            "dhcp leases by vm",
            "CREATE INDEX dhcp_leases_by_vm ON dhcp_leases (vm_instance_uuid)",
        ));
        let kernel = b.kernel();
        b.do_undo::<VmPreInstantiate>(Leases(kernel.clone()));
        b.release::<VmRelease>(Leases(kernel));
        b.service("dhcp", ())
            .handle::<ListLeases, _, _>(|_, _, cx| async move {
                let mut tx = store(&cx.kernel)?.begin().await?;
                let mut filter = Inventory::new();
                filter.insert("l3_network_uuid".into(), json!(cx.resource_id()?));
                let inventories = tx.list_by(LEASES, &filter, &["ip"]).await?;
                Ok(InventoryList {
                    next: None,
                    total: inventories.len() as u64,
                    inventories,
                })
            });
        b.register(ApiActionExtension {
            path: "l3-networks",
            service: "dhcp",
            action: ApiAction::admin("list_dhcp_leases", ListLeases::NAME),
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(TableKind::part(LEASES, "vm-instances", "vm_instance_uuid"));
    }
}
