//! The `Simulator` type of primary and backup storage: capacity only, no bytes.

use flatstack_header::storage::{BackupStorages, PrimaryStorages, StorageDriver};
use flatstack_header::Inventory;
use flatstack_kernel::{Fault, Plugin, PluginBuilder};
use std::sync::Arc;

struct Simulated;

impl StorageDriver for Simulated {
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
}

pub struct StorageSimulatorPlugin;

impl Plugin for StorageSimulatorPlugin {
    fn name(&self) -> &'static str {
        "storage-simulator"
    }

    fn description(&self) -> &'static str {
        "The Simulator type of primary and backup storage."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.driver::<PrimaryStorages>("Simulator", Arc::new(Simulated))
            .driver::<BackupStorages>("Simulator", Arc::new(Simulated));
    }
}
