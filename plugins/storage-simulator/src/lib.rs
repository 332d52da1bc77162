//! The `Simulator` type of primary and backup storage: capacity and a list of the volumes
//! it holds, no bytes. Volume operations can be made to fail or to be slow through the API
//! (`inject_failure` on a primary storage).

use flatstack_header::storage::PrimaryStorageRecord;
use flatstack_header::storage::{BackupStorages, PrimaryStorages, StorageDriver};
use flatstack_header::{DataDir, Inventory};
use flatstack_kernel::schemars::{json_schema, Schema};
use flatstack_kernel::{async_trait, Fault, Kernel, Plugin, PluginBuilder};
use flatstack_simulator::{Injections, Ledger, Simulated};
use flatstack_store::resource::text;
use serde_json::{json, Value};
use std::sync::Arc;

/// Operations the simulator can make misbehave.
pub const OPERATIONS: &[&str] = &["create_volume", "delete_volume"];

/// The simulated storages: injected failures and the volumes each holds.
struct Simulator {
    injections: Injections,
    /// Volume uuid → primary storage uuid; kept in the data directory, since storage
    /// outlives the management node.
    volumes: Ledger,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            injections: Injections::new(OPERATIONS),
            volumes: Ledger::default(),
        }
    }
}

impl Simulated for Simulator {
    fn injections(&self) -> &Injections {
        &self.injections
    }

    /// What is armed for the storage and the volumes it holds.
    fn report(&self, storage: &str) -> Inventory {
        let held = self.volumes.keys_with(storage);
        let mut report = Inventory::new();
        report.insert("primary_storage_uuid".into(), json!(storage));
        report.insert(
            "injected".into(),
            Value::Object(self.injections.summary(storage)),
        );
        report.insert("volume_uuids".into(), json!(held));
        report
    }
}

struct Driver(Arc<Simulator>);

#[async_trait]
impl StorageDriver for Driver {
    fn table(&self) -> Option<&'static str> {
        // Nothing of its own to keep: the base record is the whole simulated storage.
        None
    }

    fn validate(&self, url: &str, params: &Inventory) -> Result<Inventory, Fault> {
        if !url.starts_with('/') {
            return Err(Fault::invalid(
                "url",
                "a Simulator storage url is an absolute path, e.g. /sim/ps1",
            ));
        }
        if let Some(field) = params.keys().next() {
            return Err(Fault::invalid(
                field,
                format!("unknown field `{field}` for Simulator storage"),
            ));
        }
        Ok(Inventory::new())
    }

    fn fields(&self) -> Option<Schema> {
        // None: the base's fields are all it takes.
        Some(json_schema!({"type": "object", "additionalProperties": false}))
    }

    async fn create_volume(
        &self,
        _kernel: &Kernel,
        storage: &PrimaryStorageRecord,
        volume: &Inventory,
    ) -> Result<(), Fault> {
        let ps = storage.uuid.as_str();
        self.0.injections.perform(ps, "create_volume").await?;
        self.0.volumes.insert(text(volume, "uuid"), ps);
        Ok(())
    }

    async fn delete_volume(
        &self,
        _kernel: &Kernel,
        storage: &PrimaryStorageRecord,
        volume: &Inventory,
    ) -> Result<(), Fault> {
        self.0
            .injections
            .perform(&storage.uuid, "delete_volume")
            .await?;
        self.0.volumes.remove(text(volume, "uuid"));
        Ok(())
    }
}

#[derive(Default)]
pub struct StorageSimulatorPlugin {
    simulator: Arc<Simulator>,
}

#[async_trait]
impl Plugin for StorageSimulatorPlugin {
    fn name(&self) -> &'static str {
        "storage-simulator"
    }

    fn description(&self) -> &'static str {
        "The Simulator type of primary and backup storage, with failure injection."
    }

    /// Reopens the volumes the simulated storages held before the node stopped, from the
    /// data directory (none: they start empty).
    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        if let Some(dir) = kernel.get::<DataDir>() {
            let path = dir.0.join("simulator").join("storage-volumes.log");
            self.simulator.volumes.open(&path).map_err(|e| {
                Fault::unavailable(format!(
                    "cannot open the simulator's state {}: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        let simulator = self.simulator.clone();
        let driver = Arc::new(Driver(simulator.clone()));
        b.driver::<PrimaryStorages>("Simulator", driver.clone())
            .driver::<BackupStorages>("Simulator", driver);
        flatstack_simulator::serve(b, "primary-storage", "storage-simulator", simulator);
    }
}
