//! The `Simulator` hypervisor: in-process hosts for tests and demos. Every host operation
//! can be made to fail or to be slow through the API (`inject_failure` on a host), per
//! host, once or until cleared.

use flatstack_header::infra::{HostDriver, Hosts};
use flatstack_header::points::Deleted;
use flatstack_header::vm::VmWork;
use flatstack_header::{ApiAction, ApiActionExtension, Inventory, ResourceChange};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, Fault, Kernel, Message, Observe, Plugin, PluginBuilder, Request,
};
use flatstack_store::resource::text;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Makes a simulated host operation fail or be slow (addressed to the host's uuid).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectFailure {
    /// The operation: `connect` (more come with the VM life cycle).
    pub operation: String,
    /// Fail the operation (after any delay).
    #[serde(default)]
    pub fail: bool,
    /// Delay the operation by this many milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Apply to the next call only.
    #[serde(default)]
    pub once: bool,
}
impl Message for InjectFailure {
    const NAME: &'static str = "simulator.inject-failure";
}
impl Request for InjectFailure {
    type Reply = Inventory;
}

/// Removes every injected failure of a host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearFailures {}
impl Message for ClearFailures {
    const NAME: &'static str = "simulator.clear-failures";
}
impl Request for ClearFailures {
    type Reply = Inventory;
}

/// Operations the simulator can make misbehave.
pub const OPERATIONS: &[&str] = &["connect", "start_vm", "stop_vm", "reboot_vm"];

#[derive(Debug, Clone)]
struct Injection {
    fail: bool,
    delay: Duration,
    once: bool,
}

/// The simulated hosts' injected failures, by (host uuid, operation), and the VMs they run.
#[derive(Default)]
pub struct Simulator {
    injections: Mutex<HashMap<(String, String), Injection>>,
    /// VM uuid → host uuid of every VM a simulated host runs.
    vms: Mutex<HashMap<String, String>>,
}

impl Simulator {
    fn injections(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Injection>> {
        self.injections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Plays what was injected for `operation` on `host`: a delay, then a failure.
    pub async fn perform(&self, host: &str, operation: &str) -> Result<(), Fault> {
        let key = (host.to_owned(), operation.to_owned());
        let injection = {
            let mut all = self.injections();
            let found = all.get(&key).cloned();
            if found.as_ref().is_some_and(|i| i.once) {
                all.remove(&key);
            }
            found
        };
        let Some(injection) = injection else {
            return Ok(());
        };
        tokio::time::sleep(injection.delay).await;
        if injection.fail {
            return Err(Fault::unavailable(format!(
                "simulated failure of `{operation}` on host {host}"
            ))
            .with_detail("host", host)
            .with_detail("operation", operation));
        }
        Ok(())
    }

    fn vms(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.vms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The VMs each simulated host runs, by host uuid (sorted VM uuids).
    pub fn running(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (vm, host) in self.vms().iter() {
            out.entry(host.clone()).or_default().push(vm.clone());
        }
        out.values_mut().for_each(|v| v.sort());
        out
    }

    fn summary(&self, host: &str) -> Inventory {
        let mut out = Inventory::new();
        for ((h, op), i) in self.injections().iter() {
            if h == host {
                out.insert(
                    op.clone(),
                    json!({"fail": i.fail, "delay_ms": i.delay.as_millis() as u64, "once": i.once}),
                );
            }
        }
        let mut running: Vec<String> = self
            .vms()
            .iter()
            .filter(|(_, h)| *h == host)
            .map(|(vm, _)| vm.clone())
            .collect();
        running.sort();
        let mut inventory = Inventory::new();
        inventory.insert("host_uuid".into(), json!(host));
        inventory.insert("injected".into(), Value::Object(out));
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

    async fn connect(&self, _kernel: &Kernel, host: &Inventory) -> Result<(), Fault> {
        let uuid = text(host, "uuid");
        let latency = host.get("latency_ms").and_then(Value::as_u64).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(latency)).await;
        self.0.perform(uuid, "connect").await
    }

    async fn start_vm(&self, _kernel: &Kernel, host: &Inventory, vm: &VmWork) -> Result<(), Fault> {
        let uuid = text(host, "uuid");
        self.0.perform(uuid, "start_vm").await?;
        self.0.vms().insert(vm.vm_uuid.clone(), uuid.to_owned());
        Ok(())
    }

    async fn stop_vm(&self, _kernel: &Kernel, host: &Inventory, vm: &VmWork) -> Result<(), Fault> {
        let uuid = text(host, "uuid");
        self.0.perform(uuid, "stop_vm").await?;
        self.0.vms().remove(&vm.vm_uuid);
        Ok(())
    }

    async fn reboot_vm(
        &self,
        _kernel: &Kernel,
        host: &Inventory,
        vm: &VmWork,
    ) -> Result<(), Fault> {
        let uuid = text(host, "uuid");
        self.0.perform(uuid, "reboot_vm").await?;
        if !self.0.vms().contains_key(&vm.vm_uuid) {
            return Err(Fault::conflict(format!(
                "host {uuid} does not run VM {}",
                vm.vm_uuid
            )));
        }
        Ok(())
    }
}

/// Forgets a deleted host's injections.
struct Forget(Arc<Simulator>);

#[async_trait]
impl Observe<Deleted> for Forget {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind == "hosts" {
            self.0
                .injections()
                .retain(|(host, _), _| host != &change.uuid);
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

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "simulator hosts",
            "CREATE TABLE simulator_hosts (
                uuid TEXT PRIMARY KEY REFERENCES hosts (uuid), latency_ms BIGINT NOT NULL)",
        ));
        b.driver::<Hosts>("Simulator", Arc::new(Driver(self.simulator.clone())));
        b.observe::<Deleted>(Forget(self.simulator.clone()));
        b.service_arc("simulator", self.simulator.clone())
            .handle::<InjectFailure, _, _>(|sim, msg, cx| async move {
                let host = cx.resource_id()?.to_owned();
                if !OPERATIONS.contains(&msg.operation.as_str()) {
                    return Err(Fault::invalid(
                        "operation",
                        format!(
                            "unknown operation `{}` (known: {})",
                            msg.operation,
                            OPERATIONS.join(", ")
                        ),
                    ));
                }
                let injection = Injection {
                    fail: msg.fail,
                    delay: Duration::from_millis(msg.delay_ms),
                    once: msg.once,
                };
                sim.injections()
                    .insert((host.clone(), msg.operation), injection);
                Ok(sim.summary(&host))
            })
            .handle::<ClearFailures, _, _>(|sim, _, cx| async move {
                let host = cx.resource_id()?.to_owned();
                sim.injections().retain(|(h, _), _| h != &host);
                Ok(sim.summary(&host))
            });
        for (name, message) in [
            ("inject_failure", InjectFailure::NAME),
            ("clear_failures", ClearFailures::NAME),
        ] {
            b.register(ApiActionExtension {
                path: "hosts",
                service: "simulator",
                action: ApiAction { name, message },
            });
        }
    }
}
