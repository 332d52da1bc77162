//! Failure and delay injection for simulated resources: what the simulator drivers (hosts,
//! primary storage) share. A driver asks [`Injections::perform`] before each operation;
//! operators arm injections through the `inject_failure` / `clear_failures` actions that
//! [`serve`] adds to a resource kind's API.

use flatstack_header::{ApiAction, ApiActionExtension, Inventory};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Message, PluginBuilder, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Makes an operation on the addressed simulated resource fail or be slow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectFailure {
    /// The operation, e.g. `start_vm` on a host or `create_volume` on primary storage.
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
    armed: Mutex<HashMap<(String, String), Injection>>,
}

impl Injections {
    /// Injections for resources whose operations are `operations`.
    pub fn new(operations: &'static [&'static str]) -> Self {
        Injections {
            operations,
            armed: Mutex::new(HashMap::new()),
        }
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
        if !self.operations.contains(&msg.operation.as_str()) {
            return Err(Fault::invalid(
                "operation",
                format!(
                    "unknown operation `{}` (known: {})",
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
            action: ApiAction { name, message },
        });
    }
}
