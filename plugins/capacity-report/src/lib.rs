//! `capacity-report`: the white paper's hybrid form of an out-of-process service. A small
//! plugin inside the node collects what only the node knows — each host's CPU and memory,
//! in all and still free — and publishes it every N seconds as a canonical event,
//! `io.flatstack.hosts.capacity-reported.v1`, for services outside the node: over
//! RabbitMQ with `--amqp-url`, or `GET /v1/events?type=...` without a broker.
//!
//! Opt-in (`serve --enable capacity-report`): it writes one event per host per interval,
//! which would otherwise crowd the event log's retention of a node that needs none.

use flatstack_header::events::{CanonicalEvent, CanonicalType};
use flatstack_header::infra::{HostQuery, HostRecord, HostState, HostStatus};
use flatstack_header::{record, Record};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{async_trait, ConfigKey, Fault, Kernel, Plugin, PluginBuilder};
use flatstack_store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// How often each host's capacity is published.
pub const INTERVAL_SECS: ConfigKey<u64> = ConfigKey::new(
    "capacity-report.interval_secs",
    "Seconds between two reports of every host's capacity (1 to 86400).",
    || 60,
)
.with_validator(|secs| {
    if (1..=86_400).contains(secs) {
        Ok(())
    } else {
        Err(format!("{secs} is not 1 to 86400 seconds"))
    }
});

/// Canonical event: one host's capacity, as the node accounts it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostCapacityReported {
    /// Always `hosts`.
    pub kind: String,
    /// The host's uuid.
    pub uuid: String,
    /// Its cluster.
    pub cluster_uuid: String,
    /// Whether the node reaches it.
    pub status: HostStatus,
    /// Whether VMs may be placed on it.
    pub state: HostState,
    /// vCPUs it offers in all.
    pub cpu_capacity: u64,
    /// vCPUs not taken by VMs.
    pub available_cpu: u64,
    /// Bytes of memory it offers in all.
    pub memory_capacity: u64,
    /// Bytes of memory not taken by VMs.
    pub available_memory: u64,
}
flatstack_kernel::event!(HostCapacityReported = "hosts.capacity-reported");

impl CanonicalEvent for HostCapacityReported {
    const VERB: &'static str = "capacity-reported";
    const WHEN: &'static str =
        "Every `capacity-report.interval_secs`, for each host: its CPU and memory, in all and free.";
    fn kind(&self) -> &str {
        &self.kind
    }
    fn subject(&self) -> &str {
        &self.uuid
    }
}

impl From<HostRecord> for HostCapacityReported {
    fn from(host: HostRecord) -> Self {
        HostCapacityReported {
            kind: HostRecord::KIND.to_owned(),
            uuid: host.uuid,
            cluster_uuid: host.cluster_uuid,
            status: host.status,
            state: host.state,
            cpu_capacity: host.cpu_capacity,
            available_cpu: host.available_cpu,
            memory_capacity: host.memory_capacity,
            available_memory: host.available_memory,
        }
    }
}

/// The plugin; its reporting task runs between `start` and `stop`.
#[derive(Default)]
pub struct CapacityReportPlugin {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl Plugin for CapacityReportPlugin {
    fn name(&self) -> &'static str {
        "capacity-report"
    }

    fn description(&self) -> &'static str {
        "Publishes each host's capacity every N seconds as a canonical event (opt-in)."
    }

    fn opt_in(&self) -> bool {
        true
    }

    fn requires(&self) -> &'static [&'static str] {
        &["host"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.config(&INTERVAL_SECS);
        b.event::<HostCapacityReported>();
        b.register(CanonicalType::of::<HostCapacityReported>(HostRecord::KIND));
    }

    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        let every = Duration::from_secs(kernel.config().get(&INTERVAL_SECS));
        let kernel = kernel.downgrade();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(kernel) = kernel.upgrade() else {
                    return;
                };
                match report(&kernel).await {
                    Ok(hosts) => tracing::debug!(hosts, "host capacity reported"),
                    Err(fault) => tracing::warn!(%fault, "reporting host capacity failed"),
                }
            }
        });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    async fn stop(&self, _kernel: &Kernel) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Publishes every host's capacity, in one transaction; how many hosts.
pub async fn report(kernel: &Kernel) -> Result<usize, Fault> {
    let hosts = record::find::<HostRecord>(kernel, HostQuery::default()).await?;
    let store = kernel
        .get::<Store>()
        .ok_or_else(|| Fault::unavailable("capacity-report needs the store"))?;
    let mut tx = store.begin().await?;
    let count = hosts.len();
    for host in hosts {
        tx.emit(HostCapacityReported::from(host)).await?;
    }
    tx.commit(kernel.bus()).await?;
    Ok(count)
}
