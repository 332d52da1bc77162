//! The `Simulator` hypervisor: in-process hosts for tests and demos. Every host operation
//! can be made to fail or to be slow through the API (`inject_failure` on a host), per
//! host, once or until cleared.
//!
//! A simulated host has an agent that answers generic commands ([`HostDriver::call_agent`]):
//! `daemon.status` (the daemons the host runs: its `daemons` field, set at create and by
//! the `set_daemons` action), and `<namespace>.create` / `.delete` / `.get` / `.list`,
//! which keep objects of any plugin's namespace (a tunnel port, a bridge) in the data
//! directory ([`AgentState`]). `inject_failure` takes a command's name as its operation,
//! to make one host refuse one command; `GET /v1/hosts/{uuid}/agent-objects` lists what a
//! host's agent holds and `forget_agent_state` makes it lose it, as a reboot would.

use flatstack_header::api::ApiChildExtension;
use flatstack_header::infra::HostRecord;
use flatstack_header::infra::{AgentCommand, HostDriver, Hosts};
use flatstack_header::points::Deleted;
use flatstack_header::vm::VmWork;
use flatstack_header::{
    ApiAction, ApiActionExtension, DataDir, Inventory, InventoryList, ResourceChange,
};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, json_schema, JsonSchema, Schema};
use flatstack_kernel::{
    async_trait, Fault, Kernel, Message, Observe, Plugin, PluginBuilder, Request,
};
use flatstack_simulator::{AgentState, Injections, Ledger, Simulated};
use flatstack_store::resource::{store, text};
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

/// The simulated hosts' own table.
const TABLE: &str = "simulator_hosts";

/// The simulated hosts: their injected failures, the VMs they run and what their agents
/// hold.
pub struct Simulator {
    injections: Injections,
    /// VM uuid → the uuid of the simulated host that runs it; kept in the data directory,
    /// since hosts outlive the management node.
    vms: Ledger,
    /// What each host's agent holds and the commands it received; kept there too.
    agents: AgentState,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            injections: Injections::new(OPERATIONS).with_agent_commands(),
            vms: Ledger::default(),
            agents: AgentState::default(),
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
        let mut objects = Inventory::new();
        for (namespace, _, _) in self.agents.objects(host, None) {
            let count = objects.entry(namespace).or_insert(json!(0));
            *count = json!(count.as_u64().unwrap_or(0) + 1);
        }
        inventory.insert("agent_objects".into(), Value::Object(objects));
        inventory.insert("agent_commands".into(), json!(self.agents.commands(host)));
        inventory
    }
}

/// Daemon names: lowercase words, e.g. `openvswitch`, `libvirtd`, `ceph-osd`.
fn is_daemon_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Checks a `daemons` list (comma-separated names, empty for none) and returns it with
/// each name once, in the order given.
fn daemons(value: &Value) -> Result<String, Fault> {
    let bad = || {
        Fault::invalid(
            "daemons",
            format!(
                "daemons must be daemon names (lowercase letters, digits, `-`, `_`, `.`) \
                 separated by commas, e.g. \"openvswitch,libvirtd\", or empty; not {value}"
            ),
        )
    };
    let text = value.as_str().ok_or_else(bad)?;
    let mut names: Vec<&str> = Vec::new();
    if !text.is_empty() {
        for name in text.split(',') {
            if !is_daemon_name(name) {
                return Err(bad());
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names.join(","))
}

struct Driver(Arc<Simulator>);

#[async_trait]
impl HostDriver for Driver {
    fn table(&self) -> Option<&'static str> {
        Some(TABLE)
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
                "daemons" => {
                    own.insert("daemons".into(), json!(daemons(value)?));
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
        // A simulated host is a bare machine unless told what it runs.
        own.entry("daemons").or_insert(json!(""));
        Ok(own)
    }

    fn fields(&self) -> Option<Schema> {
        Some(json_schema!({
            "type": "object",
            "properties": {
                "latency_ms": {
                    "description": "What every call to the simulated host waits, in milliseconds.",
                    "type": "integer", "minimum": 0, "maximum": 60000, "default": 0
                },
                "daemons": {
                    "description": "The daemons the simulated host runs, as its agent's `daemon.status` answers: names separated by commas, e.g. `openvswitch,libvirtd`. Empty (the default): none. Changed with the `set_daemons` action.",
                    "type": "string", "default": "",
                    "pattern": "^([a-z0-9_.-]{1,64}(,[a-z0-9_.-]{1,64})*)?$"
                }
            },
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

    /// The simulated agent: plays what is armed for the command, answers it, and notes
    /// it (the host's report lists the last ones).
    async fn call_agent(
        &self,
        kernel: &Kernel,
        host: &HostRecord,
        command: &AgentCommand,
    ) -> Result<Value, Fault> {
        let uuid = host.uuid.as_str();
        let answer = async {
            self.0.injections.perform(uuid, &command.name).await?;
            if command.name == "daemon.status" {
                return daemon_status(kernel, uuid, &command.body).await;
            }
            self.0.agents.run(uuid, command).unwrap_or_else(|| {
                Err(Fault::invalid(
                    "name",
                    format!(
                        "the simulated agent does not know `{}` (it knows daemon.status and \
                         <namespace>.create, .delete, .get and .list)",
                        command.name
                    ),
                ))
            })
        }
        .await;
        self.0.agents.note(uuid, command, &answer);
        answer
    }
}

/// `daemon.status`: `{"daemons": [...]}`, the daemons the host runs, and with
/// `{"daemon": name}` also `"running"`, whether that one runs.
async fn daemon_status(kernel: &Kernel, host: &str, body: &Value) -> Result<Value, Fault> {
    let row = {
        let mut tx = store(kernel)?.read().await?;
        tx.get(TABLE, host).await?
    };
    let row = row.ok_or_else(|| Fault::not_found(format!("no simulated host {host}")))?;
    let running: Vec<&str> = text(&row, "daemons")
        .split(',')
        .filter(|name| !name.is_empty())
        .collect();
    let mut answer = json!({"daemons": running});
    if let Some(daemon) = body.get("daemon") {
        let daemon = daemon.as_str().ok_or_else(|| {
            Fault::invalid(
                "daemon",
                "`daemon` must be a daemon's name, e.g. openvswitch",
            )
        })?;
        answer["daemon"] = json!(daemon);
        answer["running"] = json!(running.contains(&daemon));
    }
    Ok(answer)
}

/// Sets the daemons the addressed simulated host runs (what `daemon.status` answers from
/// now on; a host connected before keeps its status until it reconnects).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDaemons {
    /// Names separated by commas, e.g. `openvswitch,libvirtd`; empty for none.
    pub daemons: String,
}

impl Message for SetDaemons {
    const NAME: &'static str = "simulator.set-daemons";
}

impl Request for SetDaemons {
    type Reply = Inventory;
}

/// Makes the addressed simulated host's agent lose what it holds — of one namespace (e.g.
/// `ovs.tunnel`) or all — as a host that rebooted would: what a test needs to see a
/// plugin repair it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetAgentState {
    /// Only this namespace's objects; all if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Message for ForgetAgentState {
    const NAME: &'static str = "simulator.forget-agent-state";
}

impl Request for ForgetAgentState {
    type Reply = Inventory;
}

/// What the addressed simulated host's agent holds (`GET /v1/hosts/{uuid}/agent-objects`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAgentObjects {}

impl Message for ListAgentObjects {
    const NAME: &'static str = "simulator.agent-object.list";
}

impl Request for ListAgentObjects {
    type Reply = InventoryList;
}

/// One object a simulated host's agent holds, as `GET /v1/hosts/{uuid}/agent-objects`
/// lists it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentObjectInventory {
    /// The host.
    pub host_uuid: String,
    /// The commands' namespace, e.g. `ovs.tunnel` for `ovs.tunnel.create`.
    pub namespace: String,
    /// Its id in the namespace.
    pub id: String,
    /// The body of the command that created it.
    pub object: Value,
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
            self.0.agents.clear(&change.uuid, None);
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
            let dir = dir.0.join("simulator");
            let cannot = |path: std::path::PathBuf| {
                move |e: std::io::Error| {
                    Fault::unavailable(format!(
                        "cannot open the simulator's state {}: {e}",
                        path.display()
                    ))
                }
            };
            let path = dir.join("host-vms.log");
            self.simulator.vms.open(&path).map_err(cannot(path))?;
            let path = dir.join("host-agents.log");
            self.simulator.agents.open(&path).map_err(cannot(path))?;
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
        b.migration(Migration::new(
            2,
            "the daemons simulated hosts run",
            "ALTER TABLE simulator_hosts ADD COLUMN daemons TEXT NOT NULL DEFAULT ''",
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
            })
            .handle::<SetDaemons, _, _>(|simulator, msg, cx| async move {
                let host = cx.resource_id()?;
                let daemons = daemons(&json!(msg.daemons))?;
                let mut tx = store(&cx.kernel)?.begin().await?;
                let changed = tx
                    .statement(
                        "UPDATE simulator_hosts SET daemons = $1 WHERE uuid = $2",
                        &[json!(daemons), json!(host)],
                    )
                    .await?;
                if changed == 0 {
                    return Err(Fault::invalid(
                        "uuid",
                        format!("host {host} is not a Simulator host"),
                    ));
                }
                tx.commit(cx.kernel.bus()).await?;
                let mut report = simulator.report(host);
                report.insert("daemons".into(), json!(daemons));
                Ok(report)
            })
            .handle::<ForgetAgentState, _, _>(|simulator, msg, cx| async move {
                let host = cx.resource_id()?;
                simulator.agents.clear(host, msg.namespace.as_deref());
                Ok(simulator.report(host))
            })
            .handle::<ListAgentObjects, _, _>(|simulator, _, cx| async move {
                let host = cx.resource_id()?;
                let inventories: Vec<Inventory> = simulator
                    .agents
                    .objects(host, None)
                    .into_iter()
                    .map(|(namespace, id, object)| {
                        let row = json!({"host_uuid": host, "namespace": namespace, "id": id,
                            "object": object});
                        match row {
                            Value::Object(row) => row,
                            _ => Inventory::new(),
                        }
                    })
                    .collect();
                Ok(InventoryList {
                    next: None,
                    total: inventories.len() as u64,
                    inventories,
                })
            });
        for (name, message) in [
            ("power_off_vm", PowerOffVm::NAME),
            ("set_daemons", SetDaemons::NAME),
            ("forget_agent_state", ForgetAgentState::NAME),
        ] {
            b.register(ApiActionExtension {
                path: "hosts",
                service: "simulator-vms",
                action: ApiAction::admin(name, message),
            });
        }
        // GET /v1/hosts/{uuid}/agent-objects
        b.register(
            ApiChildExtension::new(
                "hosts",
                "agent-objects",
                "simulator-vms",
                ListAgentObjects::NAME,
            )
            .with_inventory(flatstack_header::inventory::schema::<AgentObjectInventory>),
        );
    }
}
