//! Hosts: the hypervisors VMs run on. The host plugin owns the base record and the
//! connect flow; hypervisor drivers (types of the `Hosts` kind) do the rest.

use flatstack_header::infra::{
    AgentCommand, CallHostAgent, CreateHost, HostConnect, HostConnection, Hosts, ReconnectHost,
    ReleaseCapacity, ReserveCapacity,
};
use flatstack_header::infra::{ClusterRecord, HostRecord};
use flatstack_header::record;
use flatstack_header::{ApiAction, ApiResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::recovery::Reconciler;
use flatstack_store::resource::{check_name, row, store, text, ResourceTable};
use flatstack_store::TableKind;
use serde_json::{json, Value};
use std::net::IpAddr;

static HOSTS: ResourceTable = ResourceTable::new("hosts", "hosts")
    .filters(&["name", "cluster_uuid", "type", "status", "management_ip"])
    .joined(|kernel, host| {
        let host_type = host.get("type")?.as_str()?;
        kernel.drivers().get::<Hosts>(host_type).ok()?.table()
    });

pub struct HostPlugin;

impl Plugin for HostPlugin {
    fn name(&self) -> &'static str {
        "host"
    }

    fn description(&self) -> &'static str {
        "Hosts and their connect flow; hypervisors plug in as driver types."
    }

    fn requires(&self) -> &'static [&'static str] {
        &["cluster"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "hosts",
            "CREATE TABLE hosts (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                type TEXT NOT NULL, cluster_uuid TEXT NOT NULL REFERENCES clusters (uuid),
                management_ip TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL, status TEXT NOT NULL,
                cpu_capacity BIGINT NOT NULL, memory_capacity BIGINT NOT NULL,
                available_cpu BIGINT NOT NULL, available_memory BIGINT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ));
        b.migration(Migration::new(
            2,
            "what each consumer holds of a host",
            // One row per consumer (a VM), written in the transaction that takes the
            // capacity and removed in the one that gives it back: a release that runs twice
            // frees once, and a host with a row cannot be deleted.
            "CREATE TABLE host_allocations (
                consumer_uuid TEXT PRIMARY KEY,
                host_uuid TEXT NOT NULL REFERENCES hosts (uuid),
                cpu_num BIGINT NOT NULL, memory_size BIGINT NOT NULL,
                created_at TEXT NOT NULL)",
        ));
        b.driver_kind::<Hosts>().define_do_undo::<HostConnect>();
        // At start and then periodically: a host marked connected that no longer answers
        // its driver is `Disconnected` (its VMs become `Unknown`).
        b.register(Reconciler::periodic("hosts still answer", |kernel| {
            Box::pin(check_hosts(kernel))
        }));
        let mut service = b.service("host", ());
        HOSTS.serve(&mut service);
        HOSTS.serve_record::<HostRecord, _>(&mut service);
        service
            .handle::<CreateHost, _, _>(|_, msg, cx| async move { create(&cx.kernel, msg).await })
            .handle::<ReconnectHost, _, _>(|_, _, cx| async move {
                connect(&cx.kernel, cx.resource_id()?).await
            })
            .handle::<ReserveCapacity, _, _>(|_, msg, cx| async move {
                reserve(&cx.kernel, cx.resource_id()?, msg).await
            })
            .handle::<ReleaseCapacity, _, _>(|_, msg, cx| async move {
                release(&cx.kernel, &msg.consumer).await
            })
            .handle::<CallHostAgent, _, _>(|_, msg, cx| async move {
                call_agent(&cx.kernel, cx.resource_id()?, msg.command).await
            });
        b.register(ApiResource {
            path: "hosts",
            service: "host",
            create: CreateHost::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: Some("hosts"),
            inventory: Some(
                flatstack_header::inventory::schema::<flatstack_header::inventory::HostInventory>,
            ),
            filters: HOSTS.filters,
            actions: const { &[ApiAction::admin("reconnect", ReconnectHost::NAME)] },
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        // A host's allocations stand for the VMs that hold them (a VM being placed has one
        // before its row names the host): a delete refused for them names the VMs.
        b.register(HOSTS.table_kind()).register(TableKind::part(
            "host_allocations",
            "vm-instances",
            "consumer_uuid",
        ));
    }
}

async fn create(kernel: &Kernel, msg: CreateHost) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    let driver = kernel.drivers().get::<Hosts>(&msg.host_type)?;
    if msg.management_ip.parse::<IpAddr>().is_err() {
        return Err(Fault::invalid(
            "management_ip",
            format!("`{}` is not an IP address", msg.management_ip),
        ));
    }
    if msg.cpu_capacity == 0 {
        return Err(Fault::invalid(
            "cpu_capacity",
            "cpu_capacity must be at least 1",
        ));
    }
    let memory = i64::try_from(msg.memory_capacity)
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            Fault::invalid(
                "memory_capacity",
                "memory_capacity must be between 1 and 2^63-1 bytes",
            )
        })?;
    let own = driver.validate(&msg.driver)?;
    let cluster = record::named::<ClusterRecord>(kernel, "cluster_uuid", &msg.cluster_uuid).await?;
    if cluster.hypervisor_type != msg.host_type {
        return Err(Fault::invalid(
            "type",
            format!(
                "cluster {} holds {} hosts, not {}",
                msg.cluster_uuid, cluster.hypervisor_type, msg.host_type
            ),
        ));
    }
    {
        let mut tx = store(kernel)?.begin().await?;
        if tx
            .count_where("hosts", "management_ip", &json!(msg.management_ip))
            .await?
            > 0
        {
            return Err(Fault::conflict(format!(
                "a host with management_ip {} exists",
                msg.management_ip
            ))
            .with_detail("field", "management_ip"));
        }
    }
    let row = row(json!({
        "name": msg.name, "description": msg.description, "type": msg.host_type,
        "cluster_uuid": msg.cluster_uuid, "management_ip": msg.management_ip,
        "state": "Enabled", "status": "Connecting",
        "cpu_capacity": msg.cpu_capacity, "memory_capacity": memory,
        "available_cpu": msg.cpu_capacity, "available_memory": memory,
    }));
    let host = HOSTS.create_typed(kernel, row, driver.table(), own).await?;
    let uuid = text(&host, "uuid").to_owned();
    match connect(kernel, &uuid).await {
        Ok(host) => Ok(host),
        Err(fault) => {
            // A host that cannot be reached is not added: nothing is left behind, or the
            // error says what was.
            match HOSTS.remove(kernel, &uuid).await {
                Ok(()) => Err(fault),
                Err(cleanup) => {
                    tracing::error!(host = %uuid, %cleanup, "cannot remove a host that failed to connect");
                    Err(fault.with_undo_failure(Some("host.record"), cleanup))
                }
            }
        }
    }
}

/// Connects a host through its driver and the host-connect extension point; the host is
/// `Connected` on success and `Disconnected` on failure.
async fn connect(kernel: &Kernel, uuid: &str) -> Result<Inventory, Fault> {
    let host = {
        let mut tx = store(kernel)?.read().await?;
        HOSTS.read(kernel, &mut tx, uuid).await?
    };
    let host_type = text(&host, "type");
    let driver = kernel.drivers().get::<Hosts>(host_type)?;
    let mut connection = HostConnection { host };
    let connected = async {
        driver.connect(kernel, &connection.host).await?;
        kernel
            .extensions()
            .run::<HostConnect>(&mut connection)
            .await
    }
    .await;
    let status = if connected.is_ok() {
        "Connected"
    } else {
        "Disconnected"
    };
    let host = HOSTS.set_state(kernel, uuid, "status", status).await;
    match (connected, host) {
        (Ok(()), Ok(host)) => Ok(host),
        (Ok(()), Err(fault)) => {
            // The status write's fault is the answer, with the undo's if it failed (each
            // failed undo is logged by the dispatcher too).
            match kernel
                .extensions()
                .undo::<HostConnect>(&mut connection)
                .await
            {
                Ok(()) => Err(fault),
                Err(undo) => Err(fault.with_undo_failure(None, undo)),
            }
        }
        (Err(fault), _) => Err(fault),
    }
}

/// Carries a command to the host's agent through its driver. The host plugin knows no
/// command: it checks the name's shape, finds the host and its driver, and passes the
/// answer back.
async fn call_agent(kernel: &Kernel, uuid: &str, command: AgentCommand) -> Result<Value, Fault> {
    if !AgentCommand::is_valid_name(&command.name) {
        return Err(Fault::invalid(
            "name",
            format!(
                "`{}` is not an agent command name (lowercase words joined by dots)",
                command.name
            ),
        ));
    }
    let host: HostRecord = {
        let mut tx = store(kernel)?.read().await?;
        HOSTS.read_record(&mut tx, uuid).await?
    };
    let driver = kernel.drivers().get::<Hosts>(&host.host_type)?;
    driver.call_agent(kernel, &host, &command).await
}

/// Takes a consumer's CPU and memory from a host: the consumer's record and one
/// conditional update (never below zero, whatever else runs, on any node), in one
/// transaction of two statements. The record goes first: a consumer that already holds
/// capacity (a retried request) inserts nothing and takes nothing more.
async fn reserve(kernel: &Kernel, uuid: &str, msg: ReserveCapacity) -> Result<HostRecord, Fault> {
    let memory = i64::try_from(msg.memory_size)
        .map_err(|_| Fault::invalid("memory_size", "memory_size is too large"))?;
    let cpu = i64::from(msg.cpu_num);
    let mut tx = store(kernel)?.begin().await?;
    let record = row(json!({
        "consumer_uuid": msg.consumer, "host_uuid": uuid, "cpu_num": cpu,
        "memory_size": memory, "created_at": flatstack_store::now(),
    }));
    let recorded = tx
        .insert_allocation("host_allocations", &record)
        .await
        .map_err(|e| HOSTS.missing_as_not_found(uuid, e))?;
    if !recorded {
        let held = tx
            .allocation("host_allocations", &msg.consumer)
            .await?
            .unwrap_or_default();
        let on = text(&held, "host_uuid");
        if on == uuid {
            // Asked again (a retried request): it already holds it.
            return HOSTS.read_record(&mut tx, uuid).await;
        }
        return Err(Fault::conflict(format!(
            "{} already holds capacity on host {on}",
            msg.consumer
        )));
    }
    let taken = tx
        .query(
            "UPDATE hosts SET available_cpu = available_cpu - $1,
                 available_memory = available_memory - $2, updated_at = $3
             WHERE uuid = $4 AND available_cpu >= $1 AND available_memory >= $2
             RETURNING *",
            &[
                json!(cpu),
                json!(memory),
                json!(flatstack_store::now()),
                json!(uuid),
            ],
        )
        .await?;
    let Some(taken) = taken.into_iter().next() else {
        // Dropped, the transaction takes the record back too.
        let host: HostRecord = HOSTS.read_record(&mut tx, uuid).await?;
        return Err(Fault::conflict(format!(
            "host {uuid} has {} vCPUs and {} bytes free; {cpu} and {memory} are needed",
            host.available_cpu, host.available_memory,
        )));
    };
    let host: HostRecord = HOSTS.record(&mut tx, taken).await?;
    tx.commit(kernel.bus()).await?;
    Ok(host)
}

/// Gives back what a consumer holds, wherever it is; `false` if it holds nothing. The
/// record's delete decides, so two releases of one consumer free once.
async fn release(kernel: &Kernel, consumer: &str) -> Result<bool, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let Some(held) = tx.take_allocation("host_allocations", consumer).await? else {
        return Ok(false);
    };
    let amount = |column: &str| held.get(column).and_then(Value::as_i64).unwrap_or(0);
    tx.statement(
        "UPDATE hosts SET available_cpu = available_cpu + $1,
             available_memory = available_memory + $2, updated_at = $3
         WHERE uuid = $4",
        &[
            json!(amount("cpu_num")),
            json!(amount("memory_size")),
            json!(flatstack_store::now()),
            json!(text(&held, "host_uuid")),
        ],
    )
    .await?;
    tx.commit(kernel.bus()).await?;
    Ok(true)
}

/// Asks each connected host's driver whether it still answers; one that does not is
/// `Disconnected` (and its VMs `Unknown`).
async fn check_hosts(kernel: Kernel) -> Result<(), Fault> {
    let hosts = {
        let mut tx = store(&kernel)?.read().await?;
        let mut filter = Inventory::new();
        filter.insert("status".into(), json!("Connected"));
        tx.list("hosts", &filter).await?
    };
    for host in hosts {
        let uuid = text(&host, "uuid");
        let driver = kernel.drivers().get::<Hosts>(text(&host, "type"))?;
        if let Err(fault) = driver.connect(&kernel, &host).await {
            tracing::warn!(host = %uuid, %fault, "a connected host does not answer: Disconnected");
            HOSTS
                .set_state(&kernel, uuid, "status", "Disconnected")
                .await?;
        }
    }
    Ok(())
}
