//! Failure and delay injection for simulated resources: what the simulator drivers (hosts,
//! primary storage) share. A driver asks [`Injections::perform`] before each operation;
//! operators arm injections through the `inject_failure` / `clear_failures` actions that
//! [`serve`] adds to a resource kind's API.

use flatstack_header::infra::AgentCommand;
use flatstack_header::{ApiAction, ApiActionExtension, Inventory};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Message, PluginBuilder, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Makes an operation on the addressed simulated resource fail or be slow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectFailure {
    /// The operation, e.g. `start_vm` on a host or `create_volume` on primary storage;
    /// on a simulated host also an agent command, e.g. `daemon.status`.
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

/// Removes every injected failure of the addressed resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearFailures {}
impl Message for ClearFailures {
    const NAME: &'static str = "simulator.clear-failures";
}
impl Request for ClearFailures {
    type Reply = Inventory;
}

/// The longest delay one may inject: long enough for any timeout test, short enough that a
/// typo cannot wedge a resource's queue for hours.
pub const MAX_DELAY_MS: u64 = 600_000;

#[derive(Debug, Clone)]
struct Injection {
    fail: bool,
    delay: Duration,
    once: bool,
}

/// The injections of one kind of simulated resource, by (resource uuid, operation).
pub struct Injections {
    operations: &'static [&'static str],
    /// Whether an agent command's name (with a dot, e.g. `ovs.tunnel.create`) is an
    /// operation too.
    agent_commands: bool,
    armed: Mutex<HashMap<(String, String), Injection>>,
}

impl Injections {
    /// Injections for resources whose operations are `operations`.
    pub fn new(operations: &'static [&'static str]) -> Self {
        Injections {
            operations,
            agent_commands: false,
            armed: Mutex::new(HashMap::new()),
        }
    }

    /// Also accepts, as an operation, the name of any agent command (lowercase words
    /// joined by dots, at least two): the simulated agent plays what is armed for a
    /// command before it runs it, so a test can make one host refuse one command.
    pub fn with_agent_commands(mut self) -> Self {
        self.agent_commands = true;
        self
    }

    fn knows(&self, operation: &str) -> bool {
        self.operations.contains(&operation)
            || (self.agent_commands
                && operation.contains('.')
                && AgentCommand::is_valid_name(operation))
    }

    fn armed(&self) -> MutexGuard<'_, HashMap<(String, String), Injection>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Plays what was injected for `operation` on `resource`: a delay, then a failure.
    pub async fn perform(&self, resource: &str, operation: &str) -> Result<(), Fault> {
        let injection = {
            let mut armed = self.armed();
            if armed.is_empty() {
                return Ok(());
            }
            let key = (resource.to_owned(), operation.to_owned());
            let found = armed.get(&key).cloned();
            if found.as_ref().is_some_and(|i| i.once) {
                armed.remove(&key);
            }
            found
        };
        let Some(injection) = injection else {
            return Ok(());
        };
        tokio::time::sleep(injection.delay).await;
        if injection.fail {
            return Err(Fault::unavailable(format!(
                "simulated failure of `{operation}` on {resource}"
            ))
            .with_detail("resource", resource)
            .with_detail("operation", operation));
        }
        Ok(())
    }

    /// Arms an injection; refuses an unknown operation or an absurd delay.
    pub fn inject(&self, resource: &str, msg: InjectFailure) -> Result<(), Fault> {
        if !self.knows(&msg.operation) {
            let commands = if self.agent_commands {
                ", or an agent command such as `daemon.status`"
            } else {
                ""
            };
            return Err(Fault::invalid(
                "operation",
                format!(
                    "unknown operation `{}` (known: {}{commands})",
                    msg.operation,
                    self.operations.join(", ")
                ),
            ));
        }
        if msg.delay_ms > MAX_DELAY_MS {
            return Err(Fault::invalid(
                "delay_ms",
                format!("delay_ms must be at most {MAX_DELAY_MS}"),
            ));
        }
        if !msg.fail && msg.delay_ms == 0 {
            return Err(Fault::invalid(
                "fail",
                "inject a failure (`fail: true`), a delay (`delay_ms`), or both",
            ));
        }
        let injection = Injection {
            fail: msg.fail,
            delay: Duration::from_millis(msg.delay_ms),
            once: msg.once,
        };
        self.armed()
            .insert((resource.to_owned(), msg.operation), injection);
        Ok(())
    }

    /// Removes every injection of `resource`.
    pub fn clear(&self, resource: &str) {
        self.armed().retain(|(r, _), _| r != resource);
    }

    /// What is armed for `resource`, by operation.
    pub fn summary(&self, resource: &str) -> Inventory {
        let mut out = Inventory::new();
        for ((r, op), i) in self.armed().iter() {
            if r == resource {
                out.insert(
                    op.clone(),
                    json!({"fail": i.fail, "delay_ms": i.delay.as_millis() as u64, "once": i.once}),
                );
            }
        }
        out
    }
}

/// A simulator's state, as its failure-injection actions see it.
pub trait Simulated: Send + Sync + 'static {
    fn injections(&self) -> &Injections;

    /// What the actions answer about one resource: by default what is armed for it.
    fn report(&self, resource: &str) -> Inventory {
        let mut report = Inventory::new();
        report.insert("uuid".into(), json!(resource));
        report.insert(
            "injected".into(),
            serde_json::Value::Object(self.injections().summary(resource)),
        );
        report
    }
}

/// Adds `inject_failure` and `clear_failures` to the API of the resources at `path`
/// (e.g. `hosts`), served by a new service `service` over `state`.
pub fn serve<S: Simulated>(
    b: &mut PluginBuilder<'_>,
    path: &'static str,
    service: &'static str,
    state: Arc<S>,
) {
    b.service_arc(service, state)
        .handle::<InjectFailure, _, _>(|state, msg, cx| async move {
            let resource = cx.resource_id()?;
            state.injections().inject(resource, msg)?;
            Ok(state.report(resource))
        })
        .handle::<ClearFailures, _, _>(|state, _, cx| async move {
            let resource = cx.resource_id()?;
            state.injections().clear(resource);
            Ok(state.report(resource))
        });
    for (name, message) in [
        ("inject_failure", InjectFailure::NAME),
        ("clear_failures", ClearFailures::NAME),
    ] {
        b.register(ApiActionExtension {
            path,
            service,
            action: ApiAction::admin(name, message),
        });
    }
}

/// What simulated resources keep that outlives the management node — the VMs a simulated
/// host runs, as a real host keeps running them while the node restarts: a map kept in
/// memory and, once [`Ledger::open`]ed, in an append-only file of the data directory
/// (`+key value` / `-key` lines), replayed and compacted when opened. Appends are not
/// synced: like a real host's state they survive the node's crash, not the machine's.
#[derive(Default)]
pub struct Ledger {
    entries: Mutex<HashMap<String, String>>,
    file: Mutex<Option<std::fs::File>>,
}

impl Ledger {
    /// Loads the entries kept in `path` (if any) in place of those in memory, rewrites the
    /// file with just them, and from now on records every change there.
    pub fn open(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // A last line without its newline was cut short by a crash: skipped.
                for line in text
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'))
                {
                    if let Some((key, value)) =
                        line.strip_prefix('+').and_then(|l| l.split_once(' '))
                    {
                        entries.insert(key.to_owned(), value.to_owned());
                    } else if let Some(key) = line.strip_prefix('-') {
                        entries.remove(key);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Compacted through a new file and a rename, so a crash now loses nothing.
        let fresh = path.with_extension("new");
        let mut file = std::fs::File::create(&fresh)?;
        let mut text = String::new();
        for (key, value) in &entries {
            text.push_str(&format!("+{key} {value}\n"));
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&fresh, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        *self.lock_entries() = entries;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
        Ok(())
    }

    fn lock_entries(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, line: String) {
        use std::io::Write;
        if let Some(file) = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            if let Err(error) = file.write_all(line.as_bytes()) {
                tracing::error!(%error, "the simulator cannot record its state");
            }
        }
    }

    /// Keys and values are uuids: nothing else is accepted (they are written as lines).
    fn checked(text: &str) -> bool {
        !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: &str, value: &str) {
        if !Self::checked(key) || !Self::checked(value) {
            tracing::error!(key, value, "the simulator keeps only uuids");
            return;
        }
        let mut entries = self.lock_entries();
        entries.insert(key.to_owned(), value.to_owned());
        // Under the entries' lock, so the file's order is the map's.
        self.record(format!("+{key} {value}\n"));
    }

    /// Removes `key`; its value if it had one.
    pub fn remove(&self, key: &str) -> Option<String> {
        let mut entries = self.lock_entries();
        let removed = entries.remove(key);
        if removed.is_some() {
            self.record(format!("-{key}\n"));
        }
        removed
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock_entries().get(key).cloned()
    }

    /// The keys whose value is `value`, sorted.
    pub fn keys_with(&self, value: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock_entries()
            .iter()
            .filter(|(_, v)| v.as_str() == value)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Removes every key whose value is `value`.
    pub fn remove_with(&self, value: &str) {
        for key in self.keys_with(value) {
            self.remove(&key);
        }
    }
}

/// What simulated agents hold, by resource (a host's uuid): generic objects by namespace
/// and id, which the commands `<namespace>.create`, `.delete`, `.get` and `.list` keep —
/// the simulator knows no namespace, so any plugin's commands work on it (a tunnel port,
/// a bridge, a mount) — and the last commands each resource received. Objects are kept
/// like the [`Ledger`], once [`AgentState::open`]ed, in an append-only file of JSON lines
/// in the data directory, since hosts outlive the node; the commands only in memory.
#[derive(Default)]
pub struct AgentState {
    objects: Mutex<BTreeMap<String, Namespaces>>,
    commands: Mutex<HashMap<String, VecDeque<Value>>>,
    file: Mutex<Option<std::fs::File>>,
}

/// One resource's objects: namespace → id → object.
type Namespaces = BTreeMap<String, BTreeMap<String, Value>>;

/// How many of a resource's last commands are kept.
const COMMANDS_KEPT: usize = 200;

/// One line of the agent state's file.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum AgentLine {
    Put {
        resource: String,
        namespace: String,
        id: String,
        object: Value,
    },
    Delete {
        resource: String,
        namespace: String,
        id: String,
    },
    Clear {
        resource: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
}

impl AgentState {
    /// Loads what `path` keeps (if anything), rewrites it with just that, and from now on
    /// records every change there.
    pub fn open(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut objects = BTreeMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // A last line without its newline was cut short by a crash: skipped.
                for line in text
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'))
                {
                    match serde_json::from_str::<AgentLine>(line) {
                        Ok(line) => Self::apply(&mut objects, line),
                        Err(error) => {
                            tracing::warn!(%error, "the simulator skips a line of its agents' state")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fresh = path.with_extension("new");
        let mut file = std::fs::File::create(&fresh)?;
        let mut text = String::new();
        for (resource, namespaces) in &objects {
            for (namespace, ids) in namespaces {
                for (id, object) in ids {
                    let line = AgentLine::Put {
                        resource: resource.clone(),
                        namespace: namespace.clone(),
                        id: id.clone(),
                        object: object.clone(),
                    };
                    text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
                    text.push('\n');
                }
            }
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&fresh, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        *self.lock_objects() = objects;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
        Ok(())
    }

    fn lock_objects(&self) -> MutexGuard<'_, BTreeMap<String, Namespaces>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(objects: &mut BTreeMap<String, Namespaces>, line: AgentLine) {
        match line {
            AgentLine::Put {
                resource,
                namespace,
                id,
                object,
            } => {
                objects
                    .entry(resource)
                    .or_default()
                    .entry(namespace)
                    .or_default()
                    .insert(id, object);
            }
            AgentLine::Delete {
                resource,
                namespace,
                id,
            } => {
                if let Some(ids) = objects
                    .get_mut(&resource)
                    .and_then(|namespaces| namespaces.get_mut(&namespace))
                {
                    ids.remove(&id);
                }
            }
            AgentLine::Clear {
                resource,
                namespace: None,
            } => {
                objects.remove(&resource);
            }
            AgentLine::Clear {
                resource,
                namespace: Some(namespace),
            } => {
                if let Some(namespaces) = objects.get_mut(&resource) {
                    namespaces.remove(&namespace);
                }
            }
        }
    }

    /// Applies `line` in memory and appends it to the file, under the objects' lock so
    /// that the file's order is the map's.
    fn change(&self, line: AgentLine) {
        use std::io::Write;
        let mut objects = self.lock_objects();
        let text = serde_json::to_string(&line);
        Self::apply(&mut objects, line);
        if let Some(file) = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let written = text
                .map_err(std::io::Error::other)
                .and_then(|text| file.write_all(format!("{text}\n").as_bytes()));
            if let Err(error) = written {
                tracing::error!(%error, "the simulator cannot record its agents' state");
            }
        }
    }

    /// Notes that `resource` received `command` and how it ended (the last
    /// [`COMMANDS_KEPT`] are kept).
    pub fn note(&self, resource: &str, command: &AgentCommand, outcome: &Result<Value, Fault>) {
        let mut commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        let log = commands.entry(resource.to_owned()).or_default();
        if log.len() == COMMANDS_KEPT {
            log.pop_front();
        }
        let mut entry = json!({"name": command.name, "body": command.body, "ok": outcome.is_ok()});
        if let Err(fault) = outcome {
            entry["error"] = json!(fault.message);
        }
        log.push_back(entry);
    }

    /// The last commands `resource` received, oldest first.
    pub fn commands(&self, resource: &str) -> Vec<Value> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(resource)
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs one of the generic commands on `resource`'s objects: `<namespace>.create`
    /// (`{"id": ..., ...}`: keeps the body as the object; again with the same id replaces
    /// it), `<namespace>.delete` (`{"id": ...}`; deleting what is not there is not an
    /// error), `<namespace>.get` (`{"id": ...}`) and `<namespace>.list` (`{}`, or
    /// fields every object listed must have, e.g. `{"network": "n1"}`). `None` if
    /// `command` is none of them.
    pub fn run(&self, resource: &str, command: &AgentCommand) -> Option<Result<Value, Fault>> {
        let (namespace, verb) = command.name.rsplit_once('.')?;
        let id = || -> Result<String, Fault> {
            command
                .body
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty() && id.len() <= 255)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Fault::invalid(
                        "id",
                        format!("`{}` needs `id`: 1 to 255 bytes of text", command.name),
                    )
                })
        };
        let answer = match verb {
            "create" => id().map(|id| {
                let created = self.get(resource, namespace, &id).is_none();
                self.change(AgentLine::Put {
                    resource: resource.to_owned(),
                    namespace: namespace.to_owned(),
                    id,
                    object: command.body.clone(),
                });
                json!({"created": created, "object": command.body})
            }),
            "delete" => id().map(|id| {
                let deleted = self.get(resource, namespace, &id).is_some();
                if deleted {
                    self.change(AgentLine::Delete {
                        resource: resource.to_owned(),
                        namespace: namespace.to_owned(),
                        id,
                    });
                }
                json!({"deleted": deleted})
            }),
            "get" => id().map(|id| json!({"object": self.get(resource, namespace, &id)})),
            "list" => {
                let wanted = command.body.as_object().cloned().unwrap_or_default();
                let objects: Vec<Value> = self
                    .objects(resource, Some(namespace))
                    .into_iter()
                    .map(|(_, _, object)| object)
                    .filter(|object| wanted.iter().all(|(k, v)| object.get(k) == Some(v)))
                    .collect();
                Ok(json!({"objects": objects}))
            }
            _ => return None,
        };
        Some(answer)
    }

    /// The object `id` of `namespace` on `resource`.
    pub fn get(&self, resource: &str, namespace: &str, id: &str) -> Option<Value> {
        self.lock_objects()
            .get(resource)?
            .get(namespace)?
            .get(id)
            .cloned()
    }

    /// `resource`'s objects as (namespace, id, object), of one namespace or all, sorted.
    pub fn objects(&self, resource: &str, namespace: Option<&str>) -> Vec<(String, String, Value)> {
        let objects = self.lock_objects();
        let Some(namespaces) = objects.get(resource) else {
            return Vec::new();
        };
        namespaces
            .iter()
            .filter(|(ns, _)| namespace.is_none_or(|wanted| wanted == ns.as_str()))
            .flat_map(|(ns, ids)| {
                ids.iter()
                    .map(move |(id, object)| (ns.clone(), id.clone(), object.clone()))
            })
            .collect()
    }

    /// Forgets `resource`'s objects of `namespace`, or all of them (as a host that
    /// rebooted loses what its agent had set up); its commands too when all go.
    pub fn clear(&self, resource: &str, namespace: Option<&str>) {
        self.change(AgentLine::Clear {
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
        });
        if namespace.is_none() {
            self.commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(resource);
        }
    }
}

#[cfg(test)]
mod agent_tests {
    use super::{AgentCommand, AgentState};
    use serde_json::json;

    fn command(name: &str, body: serde_json::Value) -> AgentCommand {
        AgentCommand::new(name, body)
    }

    #[test]
    fn generic_commands_keep_objects_that_a_reopened_state_still_has() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sim").join("agents.log");
        let state = AgentState::default();
        state.open(&path).expect("open");
        let made = state
            .run(
                "h1",
                &command("x.port.create", json!({"id": "p1", "peer": "h2"})),
            )
            .expect("known")
            .expect("created");
        assert_eq!(made["created"], true);
        state
            .run(
                "h1",
                &command("x.port.create", json!({"id": "p2", "peer": "h3"})),
            )
            .expect("known")
            .expect("created");
        state
            .run(
                "h2",
                &command("x.port.create", json!({"id": "p1", "peer": "h1"})),
            )
            .expect("known")
            .expect("created");
        let gone = state
            .run("h1", &command("x.port.delete", json!({"id": "p2"})))
            .expect("known")
            .expect("deleted");
        assert_eq!(gone["deleted"], true);
        let again = state
            .run("h1", &command("x.port.delete", json!({"id": "p2"})))
            .expect("known")
            .expect("deleting nothing is no error");
        assert_eq!(again["deleted"], false);
        let refused = state
            .run("h1", &command("x.port.create", json!({"peer": "h9"})))
            .expect("known")
            .expect_err("no id");
        assert_eq!(refused.detail_str("field"), Some("id"));
        assert!(state
            .run("h1", &command("x.port.frobnicate", json!({})))
            .is_none());
        state.clear("h2", Some("x.port"));
        drop(state);

        let reopened = AgentState::default();
        reopened.open(&path).expect("reopen");
        let listed = reopened
            .run("h1", &command("x.port.list", json!({"peer": "h2"})))
            .expect("known")
            .expect("listed");
        assert_eq!(listed["objects"], json!([{"id": "p1", "peer": "h2"}]));
        assert_eq!(reopened.objects("h1", None).len(), 1);
        assert!(
            reopened.objects("h2", None).is_empty(),
            "cleared before the stop"
        );
    }
}

#[cfg(test)]
mod ledger_tests {
    use super::Ledger;

    #[test]
    fn a_ledger_reopened_has_what_was_recorded_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sim").join("vms.log");
        let ledger = Ledger::default();
        ledger.open(&path).expect("open");
        ledger.insert("vm1", "host1");
        ledger.insert("vm2", "host1");
        ledger.insert("vm3", "host2");
        ledger.remove("vm2");
        ledger.insert("bad key", "host1");
        drop(ledger);
        // A crash in the middle of a line.
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).expect("read") + "+vm4 ho",
        )
        .expect("write");
        let again = Ledger::default();
        again.open(&path).expect("reopen");
        assert_eq!(again.keys_with("host1"), vec!["vm1".to_owned()]);
        assert_eq!(again.keys_with("host2"), vec!["vm3".to_owned()]);
        assert_eq!(again.get("vm4"), None, "a torn last line is skipped");
        assert_eq!(again.get("bad key"), None);
    }
}
