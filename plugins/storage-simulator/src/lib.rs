//! The `Simulator` type of primary and backup storage: capacity and a list of the volumes
//! it holds, no bytes. Volume operations can be made to fail or to be slow through the API
//! (`inject_failure` on a primary storage).

use flatstack_header::storage::{BackupStorages, PrimaryStorages, StorageDriver};
use flatstack_header::Inventory;
use flatstack_kernel::{async_trait, Fault, Kernel, Plugin, PluginBuilder};
use flatstack_simulator::{Injections, Simulated};
use flatstack_store::resource::text;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Operations the simulator can make misbehave.
pub const OPERATIONS: &[&str] = &["create_volume", "delete_volume"];

/// The simulated storages: injected failures and the volumes each holds.
struct Simulator {
    injections: Injections,
    /// Volume uuid → primary storage uuid.
    volumes: Mutex<HashMap<String, String>>,
}

impl Simulator {
    fn volumes(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.volumes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Simulated for Simulator {
    fn injections(&self) -> &Injections {
        &self.injections
    }

    /// What is armed for the storage and the volumes it holds.
    fn report(&self, storage: &str) -> Inventory {
        let mut held: Vec<String> = self
            .volumes()
            .iter()
            .filter(|(_, ps)| *ps == storage)
            .map(|(volume, _)| volume.clone())
            .collect();
        held.sort();
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

    async fn create_volume(
        &self,
        _kernel: &Kernel,
        storage: &Inventory,
        volume: &Inventory,
    ) -> Result<(), Fault> {
        let ps = text(storage, "uuid");
        self.0.injections.perform(ps, "create_volume").await?;
        self.0
            .volumes()
            .insert(text(volume, "uuid").to_owned(), ps.to_owned());
        Ok(())
    }

    async fn delete_volume(
        &self,
        _kernel: &Kernel,
        storage: &Inventory,
        volume: &Inventory,
    ) -> Result<(), Fault> {
        self.0
            .injections
            .perform(text(storage, "uuid"), "delete_volume")
            .await?;
        self.0.volumes().remove(text(volume, "uuid"));
        Ok(())
    }
}

pub struct StorageSimulatorPlugin;

impl Plugin for StorageSimulatorPlugin {
    fn name(&self) -> &'static str {
        "storage-simulator"
    }

    fn description(&self) -> &'static str {
        "The Simulator type of primary and backup storage, with failure injection."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        let simulator = Arc::new(Simulator {
            injections: Injections::new(OPERATIONS),
            volumes: Mutex::default(),
        });
        let driver = Arc::new(Driver(simulator.clone()));
        b.driver::<PrimaryStorages>("Simulator", driver.clone())
            .driver::<BackupStorages>("Simulator", driver);
        flatstack_simulator::serve(b, "primary-storage", "storage-simulator", simulator);
    }
}
