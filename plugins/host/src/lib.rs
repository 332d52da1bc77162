//! Hosts: the hypervisors VMs run on. The host plugin owns the base record and the
//! connect flow; hypervisor drivers (types of the `Hosts` kind) do the rest.

use flatstack_header::infra::{
    CreateHost, HostConnect, HostConnection, Hosts, ReconnectHost, ReleaseCapacity, ReserveCapacity,
};
use flatstack_header::{ApiAction, ApiResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, store, text, ResourceTable};
use serde_json::{json, Value};
use std::net::IpAddr;

static HOSTS: ResourceTable = ResourceTable {
    kind: "hosts",
    table: "hosts",
    filters: &["name", "cluster_uuid", "type", "status", "management_ip"],
    joined: Some(|kernel, host| {
        let host_type = host.get("type")?.as_str()?;
        kernel.drivers().get::<Hosts>(host_type).ok()?.table()
    }),
    before_delete: None,
    decorate: None,
};

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
        b.driver_kind::<Hosts>().define_do_undo::<HostConnect>();
        let mut service = b.service("host", ());
        HOSTS.serve(&mut service);
        service
            .handle::<CreateHost, _, _>(|_, msg, cx| async move { create(&cx.kernel, msg).await })
            .handle::<ReconnectHost, _, _>(|_, _, cx| async move {
                connect(&cx.kernel, cx.resource_id()?).await
            })
            .handle::<ReserveCapacity, _, _>(|_, msg, cx| async move {
                let (cpu, memory) = amounts(msg.cpu_num, msg.memory_size)?;
                change_capacity(&cx.kernel, cx.resource_id()?, -cpu, -memory).await
            })
            .handle::<ReleaseCapacity, _, _>(|_, msg, cx| async move {
                let (cpu, memory) = amounts(msg.cpu_num, msg.memory_size)?;
                change_capacity(&cx.kernel, cx.resource_id()?, cpu, memory).await
            });
        b.register(ApiResource {
            path: "hosts",
            service: "host",
            create: CreateHost::NAME,
            driver_kind: Some("hosts"),
            filters: HOSTS.filters,
            actions: &[ApiAction {
                name: "reconnect",
                message: ReconnectHost::NAME,
            }],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(HOSTS.table_kind());
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
    {
        let mut tx = store(kernel)?.begin().await?;
        let cluster = tx
            .get("clusters", &msg.cluster_uuid)
            .await?
            .ok_or_else(|| {
                Fault::invalid("cluster_uuid", format!("no cluster {}", msg.cluster_uuid))
            })?;
        if cluster.get("hypervisor_type").and_then(Value::as_str) != Some(msg.host_type.as_str()) {
            return Err(Fault::invalid(
                "type",
                format!(
                    "cluster {} holds {} hosts, not {}",
                    msg.cluster_uuid,
                    cluster
                        .get("hypervisor_type")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    msg.host_type
                ),
            ));
        }
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
            // A host that cannot be reached is not added: nothing is left behind.
            if let Err(cleanup) = HOSTS.remove(kernel, &uuid).await {
                tracing::error!(host = %uuid, %cleanup, "cannot remove a host that failed to connect");
            }
            Err(fault)
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
            // A failed undo is logged by the dispatcher; the status write's fault is the
            // answer.
            let _ = kernel
                .extensions()
                .undo::<HostConnect>(&mut connection)
                .await;
            Err(fault)
        }
        (Err(fault), _) => Err(fault),
    }
}

fn amounts(cpu: u32, memory: u64) -> Result<(i64, i64), Fault> {
    let memory = i64::try_from(memory)
        .map_err(|_| Fault::invalid("memory_size", "memory_size is too large"))?;
    Ok((i64::from(cpu), memory))
}

/// Adds `cpu` and `memory` (negative: takes) to a host's available capacity. Requests for
/// one host are serialised by the bus, so read-check-write needs no lock; capacity never
/// goes below zero nor above the host's total.
async fn change_capacity(
    kernel: &Kernel,
    uuid: &str,
    cpu: i64,
    memory: i64,
) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let host = HOSTS.read(kernel, &mut tx, uuid).await?;
    let number = |column: &str| host.get(column).and_then(Value::as_i64).unwrap_or(0);
    let (available_cpu, available_memory) = (
        number("available_cpu") + cpu,
        number("available_memory") + memory,
    );
    if available_cpu < 0 || available_memory < 0 {
        return Err(Fault::conflict(format!(
            "host {uuid} has {} vCPUs and {} bytes free; {} and {} are needed",
            number("available_cpu"),
            number("available_memory"),
            -cpu,
            -memory
        )));
    }
    if available_cpu > number("cpu_capacity") || available_memory > number("memory_capacity") {
        return Err(Fault::internal(format!(
            "host {uuid}: releasing more capacity than was reserved"
        )));
    }
    let changes =
        row(json!({"available_cpu": available_cpu, "available_memory": available_memory}));
    tx.update("hosts", uuid, &changes).await?;
    tx.commit(kernel.bus()).await?;
    // The host as it now is, without reading it again.
    let mut host = host;
    host.extend(changes);
    Ok(host)
}
