//! Zones: the top of the infrastructure tree.

use flatstack_header::infra::CreateZone;
use flatstack_header::infra::ZoneRecord;
use flatstack_header::ApiResource;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, ResourceTable};
use serde_json::json;

static ZONES: ResourceTable = ResourceTable::new("zones", "zones").filters(&["name"]);

pub struct ZonePlugin;

impl Plugin for ZonePlugin {
    fn name(&self) -> &'static str {
        "zone"
    }

    fn description(&self) -> &'static str {
        "Zones: the top of the infrastructure tree."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "zones",
            "CREATE TABLE zones (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ));
        let mut service = b.service("zone", ());
        ZONES.serve(&mut service);
        ZONES.serve_record::<ZoneRecord, _>(&mut service);
        service.handle::<CreateZone, _, _>(|_, msg, cx| async move {
            check_name(&msg.name)?;
            let row = row(json!({"name": msg.name, "description": msg.description}));
            ZONES.create_row(&cx.kernel, row).await
        });
        b.register(ApiResource {
            path: "zones",
            service: "zone",
            create: CreateZone::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(
                flatstack_header::inventory::schema::<flatstack_header::inventory::ZoneInventory>,
            ),
            filters: ZONES.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(ZONES.table_kind());
    }
}
