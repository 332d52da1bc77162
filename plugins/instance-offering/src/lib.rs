//! Instance offerings: the CPU/memory shapes VMs are created with.

use flatstack_header::storage::CreateInstanceOffering;
use flatstack_header::storage::InstanceOfferingRecord;
use flatstack_header::ApiResource;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, ResourceTable};
use serde_json::json;

static OFFERINGS: ResourceTable =
    ResourceTable::new("instance-offerings", "instance_offerings").filters(&["name", "cpu_num"]);

pub struct InstanceOfferingPlugin;

impl Plugin for InstanceOfferingPlugin {
    fn name(&self) -> &'static str {
        "instance-offering"
    }

    fn description(&self) -> &'static str {
        "CPU/memory shapes for VMs."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "instance offerings",
            "CREATE TABLE instance_offerings (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                cpu_num BIGINT NOT NULL, memory_size BIGINT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ));
        let mut service = b.service("instance-offering", ());
        OFFERINGS.serve(&mut service);
        OFFERINGS.serve_record::<InstanceOfferingRecord, _>(&mut service);
        service.handle::<CreateInstanceOffering, _, _>(|_, msg, cx| async move {
            check_name(&msg.name)?;
            if msg.cpu_num == 0 || msg.cpu_num > 1024 {
                return Err(Fault::invalid("cpu_num", "cpu_num must be from 1 to 1024"));
            }
            let memory = i64::try_from(msg.memory_size)
                .ok()
                .filter(|m| *m >= 1 << 20)
                .ok_or_else(|| Fault::invalid("memory_size", "memory_size must be at least 1 MiB (1048576 bytes)"))?;
            let row = row(json!({"name": msg.name, "description": msg.description, "cpu_num": msg.cpu_num, "memory_size": memory}));
                        OFFERINGS
                .create_row(&cx.kernel, row)
                .await
        });
        b.register(ApiResource {
            path: "instance-offerings",
            service: "instance-offering",
            create: CreateInstanceOffering::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(
                flatstack_header::inventory::schema::<
                    flatstack_header::inventory::InstanceOfferingInventory,
                >,
            ),
            filters: OFFERINGS.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(OFFERINGS.table_kind());
    }
}
