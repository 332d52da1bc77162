//! The host-agent command channel on simulated hosts, through the bus on a kernel with a
//! real SQLite store: `CallHostAgent` carried by the host plugin to the Simulator's agent,
//! its generic commands and `daemon.status`, a command refused by injection, and what the
//! agent holds surviving a restart of the node (simulated hosts outlive it).

use flatstack_header::infra::{
    AgentCommand, CallHostAgent, CreateCluster, CreateHost, CreateZone, CLUSTER_SERVICE,
    HOST_SERVICE, ZONE_SERVICE,
};
use flatstack_header::{DataDir, Inventory, InventoryList};
use flatstack_kernel::{Fault, FaultCode, Kernel};
use flatstack_plugin_cluster::ClusterPlugin;
use flatstack_plugin_host::HostPlugin;
use flatstack_plugin_host_simulator::{ListAgentObjects, SetDaemons, SimulatorPlugin};
use flatstack_plugin_zone::ZonePlugin;
use flatstack_simulator::InjectFailure;
use flatstack_store::{ResourcePlugin, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Like the node's start: open the store in `dir`, assemble, migrate, start.
async fn node(dir: &Path) -> Kernel {
    let store = Store::open_data_dir(dir).await.expect("store");
    let kernel = Kernel::builder()
        .provide(store.clone())
        .provide(Arc::new(DataDir(dir.to_owned())))
        .plugin(ResourcePlugin)
        .plugin(ZonePlugin)
        .plugin(ClusterPlugin)
        .plugin(HostPlugin)
        .plugin(SimulatorPlugin::default())
        .build()
        .expect("assembles");
    let streams: Vec<_> = kernel
        .plugins()
        .into_iter()
        .filter_map(|p| Some((p.name.clone(), kernel.migrations().get(&p.name)?.clone())))
        .collect();
    store.migrate(&streams).await.expect("migrates");
    kernel.start().await.expect("starts");
    kernel
}

fn uuid(inventory: &Inventory) -> String {
    inventory["uuid"].as_str().expect("a uuid").to_owned()
}

/// A zone and a cluster of Simulator hosts; the cluster's uuid.
async fn cluster(kernel: &Kernel) -> String {
    let zone = kernel
        .request(
            ZONE_SERVICE,
            CreateZone {
                name: "z".into(),
                description: String::new(),
            },
        )
        .await
        .expect("zone");
    let cluster = kernel
        .request(
            CLUSTER_SERVICE,
            CreateCluster {
                name: "c".into(),
                description: String::new(),
                zone_uuid: uuid(&zone),
                hypervisor_type: "Simulator".into(),
            },
        )
        .await
        .expect("cluster");
    uuid(&cluster)
}

async fn host(kernel: &Kernel, cluster: &str, ip: &str, fields: Value) -> Result<String, Fault> {
    let Value::Object(driver) = fields else {
        panic!("fields are an object");
    };
    let host = kernel
        .request(
            HOST_SERVICE,
            CreateHost {
                host_type: "Simulator".into(),
                name: ip.into(),
                description: String::new(),
                cluster_uuid: cluster.into(),
                management_ip: ip.into(),
                cpu_capacity: 8,
                memory_capacity: 1 << 34,
                driver,
            },
        )
        .await?;
    assert_eq!(host["status"], "Connected", "{host:?}");
    Ok(uuid(&host))
}

async fn call(kernel: &Kernel, host: &str, name: &str, body: Value) -> Result<Value, Fault> {
    kernel
        .ask(CallHostAgent {
            command: AgentCommand::new(name, body),
        })
        .resource(host)
        .await
}

async fn objects(kernel: &Kernel, host: &str) -> Vec<Inventory> {
    let list: InventoryList = kernel
        .request("simulator-vms", ListAgentObjects {})
        .resource(host)
        .await
        .expect("listed");
    list.inventories
}

#[tokio::test]
async fn a_simulated_host_answers_agent_commands_refuses_what_is_injected_and_keeps_its_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kernel = node(dir.path()).await;
    let cluster = cluster(&kernel).await;

    // The daemons a host runs: none by default, or what it is created with.
    let bare = host(&kernel, &cluster, "10.0.0.1", json!({}))
        .await
        .expect("host");
    let ovs = host(
        &kernel,
        &cluster,
        "10.0.0.2",
        json!({"daemons": "openvswitch,libvirtd"}),
    )
    .await
    .expect("host");
    let status = call(
        &kernel,
        &bare,
        "daemon.status",
        json!({"daemon": "openvswitch"}),
    )
    .await
    .expect("answered");
    assert_eq!(
        status,
        json!({"daemons": [], "daemon": "openvswitch", "running": false})
    );
    let status = call(
        &kernel,
        &ovs,
        "daemon.status",
        json!({"daemon": "openvswitch"}),
    )
    .await
    .expect("answered");
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["daemons"], json!(["openvswitch", "libvirtd"]));
    // ... changed by an action.
    kernel
        .request(
            "simulator-vms",
            SetDaemons {
                daemons: "openvswitch".into(),
            },
        )
        .resource(&bare)
        .await
        .expect("set");
    let status = call(
        &kernel,
        &bare,
        "daemon.status",
        json!({"daemon": "openvswitch"}),
    )
    .await
    .expect("answered");
    assert_eq!(status["running"], true, "{status}");
    let bad = kernel
        .request(
            "simulator-vms",
            SetDaemons {
                daemons: "Open vSwitch".into(),
            },
        )
        .resource(&bare)
        .await
        .expect_err("not a daemon name");
    assert_eq!(bad.detail_str("field"), Some("daemons"));
    let bad = host(
        &kernel,
        &cluster,
        "10.0.0.3",
        json!({"daemons": ["openvswitch"]}),
    )
    .await
    .expect_err("not a list of names");
    assert_eq!(bad.detail_str("field"), Some("daemons"));

    // Generic commands keep objects of any namespace, per host.
    let made = call(
        &kernel,
        &bare,
        "test.port.create",
        json!({"id": "p1", "peer": "10.0.0.2"}),
    )
    .await
    .expect("created");
    assert_eq!(made["created"], true);
    call(
        &kernel,
        &ovs,
        "test.port.create",
        json!({"id": "p1", "peer": "10.0.0.1"}),
    )
    .await
    .expect("created");
    let listed = call(&kernel, &bare, "test.port.list", json!({}))
        .await
        .expect("listed");
    assert_eq!(listed["objects"], json!([{"id": "p1", "peer": "10.0.0.2"}]));

    // Bad names and unknown commands are refused, naming the field.
    let refused = call(&kernel, &bare, "Test Port", json!({}))
        .await
        .expect_err("bad name");
    assert_eq!(refused.code, FaultCode::InvalidArgument);
    assert_eq!(refused.detail_str("field"), Some("name"));
    let refused = call(&kernel, &bare, "test.port.frobnicate", json!({}))
        .await
        .expect_err("unknown");
    assert_eq!(refused.detail_str("field"), Some("name"));

    // One host told to refuse one command refuses it; the other still answers.
    let injected = kernel
        .request(
            "simulator",
            InjectFailure {
                operation: "test.port.create".into(),
                fail: true,
                delay_ms: 0,
                once: false,
            },
        )
        .resource(&ovs)
        .await
        .expect("armed");
    assert_eq!(injected["injected"]["test.port.create"]["fail"], true);
    let refused = call(&kernel, &ovs, "test.port.create", json!({"id": "p2"}))
        .await
        .expect_err("refused");
    assert!(refused.message.contains("test.port.create"), "{refused}");
    call(&kernel, &bare, "test.port.create", json!({"id": "p2"}))
        .await
        .expect("another host builds it");
    let unknown = kernel
        .request(
            "simulator",
            InjectFailure {
                operation: "start_vmm".into(),
                fail: true,
                delay_ms: 0,
                once: false,
            },
        )
        .resource(&ovs)
        .await
        .expect_err("neither an operation nor a command");
    assert_eq!(unknown.detail_str("field"), Some("operation"));

    // A host that is not there is not found.
    let missing = call(
        &kernel,
        "0123456789abcdef0123456789abcdef",
        "daemon.status",
        json!({}),
    )
    .await
    .expect_err("no such host");
    assert_eq!(missing.code, FaultCode::NotFound);

    // The hosts outlive the node: what their agents hold is there after a restart.
    kernel.stop().await;
    drop(kernel);
    let kernel = node(dir.path()).await;
    let held: Vec<(Value, Value)> = objects(&kernel, &bare)
        .await
        .into_iter()
        .map(|o| (o["id"].clone(), o["namespace"].clone()))
        .collect();
    assert_eq!(
        held,
        [
            (json!("p1"), json!("test.port")),
            (json!("p2"), json!("test.port"))
        ]
    );
    assert_eq!(objects(&kernel, &ovs).await.len(), 1);
    let status = call(&kernel, &bare, "daemon.status", json!({}))
        .await
        .expect("answered");
    assert_eq!(status, json!({"daemons": ["openvswitch"]}));
}
