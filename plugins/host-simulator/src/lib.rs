//! The `Simulator` hypervisor: in-process hosts for tests and demos. Every host operation
//! can be made to fail or to be slow through the API (`inject_failure` on a host), per
//! host, once or until cleared.

use flatstack_header::infra::HostRecord;
use flatstack_header::infra::{HostDriver, Hosts};
use flatstack_header::points::Deleted;
use flatstack_header::vm::VmWork;
use flatstack_header::{ApiAction, ApiActionExtension, DataDir, Inventory, ResourceChange};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, json_schema, JsonSchema, Schema};
use flatstack_kernel::{
    async_trait, Fault, Kernel, Message, Observe, Plugin, PluginBuilder, Request,
};
use flatstack_simulator::{Injections, Ledger, Simulated};
use flatstack_store::resource::text;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Operations the simulator can make misbehave.
pub const OPERATIONS: &[&str] = &[
    "connect",
    "start_vm",
    "stop_vm",
    "reboot_vm",
    "attach_volume",
    "detach_volume",
];

/// The simulated hosts: their injected failures and the VMs they run.
pub struct Simulator {
    injections: Injections,
    /// VM uuid → host uuid of every VM a simulated host runs.
    /// VM uuid → the uuid of the simulated host that runs it; kept in the data directory,
    /// since hosts outlive the management node.
    vms: Ledger,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            injections: Injections::new(OPERATIONS),
            vms: Ledger::default(),
        }
    }
}

impl Simulated for Simulator {
    fn injections(&self) -> &Injections {
        &self.injections
    }

    /// What is armed for the host and the VMs it runs.
    fn report(&self, host: &str) -> Inventory {
        let running = self.vms.keys_with(host);
        let mut inventory = Inventory::new();
        inventory.insert("host_uuid".into(), json!(host));
        inventory.insert(
            "injected".into(),
            Value::Object(self.injections.summary(host)),
        );
        inventory.insert("vm_uuids".into(), json!(running));
        inventory
    }
}

struct Driver(Arc<Simulator>);

#[async_trait]
impl HostDriver for Driver {
    fn table(&self) -> Option<&'static str> {
        Some("simulator_hosts")
    }

    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault> {
        let mut own = Inventory::new();
        for (key, value) in params {
            match key.as_str() {
                "latency_ms" => {
                    let ms = value.as_u64().filter(|ms| *ms <= 60_000).ok_or_else(|| {
                        Fault::invalid(
                            "latency_ms",
                            "latency_ms must be an integer from 0 to 60000",
                        )
                    })?;
                    own.insert("latency_ms".into(), json!(ms));
                }
                other => {
                    return Err(Fault::invalid(
                        other,
                        format!("unknown field `{other}` for a Simulator host"),
                    ))
                }
            }
        }
        own.entry("latency_ms").or_insert(json!(0));
        Ok(own)
    }

    fn fields(&self) -> Option<Schema> {
        Some(json_schema!({
            "type": "object",
            "properties": {"latency_ms": {
                "description": "What every call to the simulated host waits, in milliseconds.",
                "type": "integer", "minimum": 0, "maximum": 60000, "default": 0
            }},
            "additionalProperties": false
        }))
    }

    async fn connect(&self, _kernel: &Kernel, host: &Inventory) -> Result<(), Fault> {
        let uuid = text(host, "uuid");
        let latency = host.get("latency_ms").and_then(Value::as_u64).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(latency)).await;
        self.0.injections.perform(uuid, "connect").await
    }

    async fn start_vm(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        vm: &VmWork,
    ) -> Result<(), Fault> {
        let uuid = host.uuid.as_str();
        self.0.injections.perform(uuid, "start_vm").await?;
        self.0.vms.insert(&vm.vm_uuid, uuid);
        Ok(())
    }

    async fn stop_vm(&self, _kernel: &Kernel, host: &HostRecord, vm: &VmWork) -> Result<(), Fault> {
        let uuid = host.uuid.as_str();
        self.0.injections.perform(uuid, "stop_vm").await?;
        self.0.vms.remove(&vm.vm_uuid);
        Ok(())
    }

    async fn running_vms(&self, _kernel: &Kernel, host: &HostRecord) -> Result<Vec<String>, Fault> {
        let uuid = host.uuid.as_str();
        Ok(self.0.vms.keys_with(uuid))
    }

    async fn reboot_vm(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        vm: &VmWork,
    ) -> Result<(), Fault> {
        let uuid = host.uuid.as_str();
        self.0.injections.perform(uuid, "reboot_vm").await?;
        if self.0.vms.get(&vm.vm_uuid).is_none() {
            return Err(Fault::conflict(format!(
                "host {uuid} does not run VM {}",
                vm.vm_uuid
            )));
        }
        Ok(())
    }

    async fn attach_volume(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        self.0
            .injections
            .perform(host.uuid.as_str(), "attach_volume")
            .await
    }

    async fn detach_volume(
        &self,
        _kernel: &Kernel,
        host: &HostRecord,
        _vm: &VmWork,
        _volume: &Inventory,
    ) -> Result<(), Fault> {
        self.0
            .injections
            .perform(host.uuid.as_str(), "detach_volume")
            .await
    }
}

/// Powers a VM off on the addressed simulated host behind the management node's back, as
/// a guest shutdown or a crash would: what a test needs to see the node find out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerOffVm {
    pub vm_uuid: String,
}

impl Message for PowerOffVm {
    const NAME: &'static str = "simulator.power-off-vm";
}

impl Request for PowerOffVm {
    type Reply = Inventory;
}

/// Forgets a deleted host's injections.
struct Forget(Arc<Simulator>);

#[async_trait]
impl Observe<Deleted> for Forget {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind == "hosts" {
            self.0.injections.clear(&change.uuid);
            self.0.vms.remove_with(&change.uuid);
        }
        Ok(())
    }
}

pub struct SimulatorPlugin {
    simulator: Arc<Simulator>,
}

impl Default for SimulatorPlugin {
    fn default() -> Self {
        SimulatorPlugin {
            simulator: Arc::new(Simulator::default()),
        }
    }
}

#[async_trait]
impl Plugin for SimulatorPlugin {
    fn name(&self) -> &'static str {
        "host-simulator"
    }

    fn description(&self) -> &'static str {
        "The Simulator hypervisor: in-process hosts with failure injection."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its table extends `hosts`.
        &["host"]
    }

    /// Reopens what the simulated hosts ran before the node stopped, from the data
    /// directory (none: they start empty, as in tests that assemble a kernel alone).
    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        if let Some(dir) = kernel.get::<DataDir>() {
            let path = dir.0.join("simulator").join("host-vms.log");
            self.simulator.vms.open(&path).map_err(|e| {
                Fault::unavailable(format!(
                    "cannot open the simulator's state {}: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "simulator hosts",
            "CREATE TABLE simulator_hosts (
                uuid TEXT PRIMARY KEY REFERENCES hosts (uuid), latency_ms BIGINT NOT NULL)",
        ));
        b.driver::<Hosts>("Simulator", Arc::new(Driver(self.simulator.clone())));
        b.observe::<Deleted>(Forget(self.simulator.clone()));
        flatstack_simulator::serve(b, "hosts", "simulator", self.simulator.clone());
        b.service_arc("simulator-vms", self.simulator.clone())
            .handle::<PowerOffVm, _, _>(|simulator, msg, cx| async move {
                let host = cx.resource_id()?;
                if simulator.vms.get(&msg.vm_uuid).as_deref() != Some(host) {
                    return Err(Fault::not_found(format!(
                        "simulated host {host} does not run VM {}",
                        msg.vm_uuid
                    ))
                    .with_detail("field", "vm_uuid"));
                }
                simulator.vms.remove(&msg.vm_uuid);
                Ok(simulator.report(host))
            });
        b.register(ApiActionExtension {
            path: "hosts",
            service: "simulator-vms",
            action: ApiAction {
                name: "power_off_vm",
                message: PowerOffVm::NAME,
            },
        });
    }
}
