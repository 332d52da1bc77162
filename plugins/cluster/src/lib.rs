//! Clusters: groups of hosts of one hypervisor type, in a zone.

use flatstack_header::infra::{ClusterRecord, ZoneRecord};
use flatstack_header::infra::{CreateCluster, Hosts};
use flatstack_header::record;
use flatstack_header::ApiResource;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, ResourceTable};
use serde_json::json;

static CLUSTERS: ResourceTable =
    ResourceTable::new("clusters", "clusters").filters(&["name", "zone_uuid", "hypervisor_type"]);

pub struct ClusterPlugin;

impl Plugin for ClusterPlugin {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn description(&self) -> &'static str {
        "Clusters of hosts of one hypervisor type."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its table refers to zones.
        &["zone"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "clusters",
            "CREATE TABLE clusters (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                zone_uuid TEXT NOT NULL REFERENCES zones (uuid),
                hypervisor_type TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ));
        let mut service = b.service("cluster", ());
        CLUSTERS.serve(&mut service);
        CLUSTERS.serve_record::<ClusterRecord, _>(&mut service);
        service.handle::<CreateCluster, _, _>(|_, msg, cx| async move {
            check_name(&msg.name)?;
            cx.kernel
                .drivers()
                .get::<Hosts>(&msg.hypervisor_type)
                .map_err(|f| Fault::invalid("hypervisor_type", f.message))?;
            record::named::<ZoneRecord>(&cx.kernel, "zone_uuid", &msg.zone_uuid).await?;
            let row = row(json!({
                "name": msg.name, "description": msg.description,
                "zone_uuid": msg.zone_uuid, "hypervisor_type": msg.hypervisor_type,
            }));
            CLUSTERS.create_row(&cx.kernel, row).await
        });
        b.register(ApiResource {
            path: "clusters",
            service: "cluster",
            create: CreateCluster::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(flatstack_header::inventory::schema::<flatstack_header::inventory::ClusterInventory>),
            filters: CLUSTERS.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(CLUSTERS.table_kind());
    }
}
