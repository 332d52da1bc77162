//! A small cloud for VM tests: one zone, one cluster of two simulator hosts, primary and
//! backup storage, an image, an offering and an L3 network of ten addresses; and a
//! snapshot of everything a VM operation could leak.

use super::{dump, uuid, Node};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;

pub const GIB: u64 = 1 << 30;

pub struct Dc {
    pub zone: String,
    pub cluster: String,
    pub ps: String,
    pub hosts: Vec<String>,
    pub l3: String,
    pub image: String,
    pub offering: String,
}

pub async fn data_centre(node: &Node) -> Dc {
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    let cluster = uuid(
        &node
            .create(
                "clusters",
                json!({"name": "c", "zone_uuid": zone, "hypervisor_type": "Simulator"}),
            )
            .await,
    );
    let mut hosts = Vec::new();
    for i in 1..=2 {
        let host = node
            .create("hosts", json!({"type": "Simulator", "name": format!("h{i}"), "cluster_uuid": cluster,
                "management_ip": format!("10.0.0.{i}"), "cpu_capacity": 8, "memory_capacity": 16 * GIB}))
            .await;
        hosts.push(uuid(&host));
    }
    let ps = uuid(&node.create("primary-storage", json!({"type": "Simulator", "name": "ps", "zone_uuid": zone, "url": "/sim/ps", "total_capacity": 1u64 << 40})).await);
    let (status, attached) = node
        .post(
            &format!("/v1/primary-storage/{ps}/actions?wait=10"),
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    let bs = uuid(&node.create("backup-storage", json!({"type": "Simulator", "name": "bs", "zone_uuid": zone, "url": "/sim/bs", "total_capacity": 1u64 << 40})).await);
    let image = uuid(&node.create("images", json!({"name": "cirros", "url": "http://example.invalid/c.qcow2", "format": "qcow2", "size": 1000, "backup_storage_uuids": [bs]})).await);
    let offering = uuid(
        &node
            .create(
                "instance-offerings",
                json!({"name": "small", "cpu_num": 2, "memory_size": 4 * GIB}),
            )
            .await,
    );
    let l2 = uuid(&node.create("l2-networks", json!({"type": "L2NoVlanNetwork", "name": "l2", "zone_uuid": zone, "physical_interface": "eth0"})).await);
    let (status, attached) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=10"),
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    let l3 = uuid(
        &node
            .create("l3-networks", json!({"name": "l3", "l2_network_uuid": l2}))
            .await,
    );
    let (status, range) = node
        .post(
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=10"),
            json!({"name": "r", "start_ip": "192.168.0.10",
            "end_ip": "192.168.0.19", "netmask": "255.255.255.0", "gateway": "192.168.0.1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{range}");
    Dc {
        zone,
        cluster,
        ps,
        hosts,
        l3,
        image,
        offering,
    }
}

pub fn vm_body(dc: &Dc, name: &str) -> Value {
    json!({"name": name, "instance_offering_uuid": dc.offering, "image_uuid": dc.image, "l3_network_uuids": [dc.l3]})
}

pub async fn simulated_vms(node: &Node, host: &str) -> Value {
    simulator_state(node, &format!("hosts/{host}"), "vm_uuids").await
}

/// `field` of what a simulator holds for the resource at `path` (`clear_failures`
/// answers its state: the VMs a host runs, the volumes a storage holds).
async fn simulator_state(node: &Node, path: &str, field: &str) -> Value {
    let (status, reply) = node
        .post(
            &format!("/v1/{path}/actions?wait=10"),
            json!({"action": "clear_failures"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["inventory"][field].clone()
}

/// Everything an operation could leak or change, as one comparable value: capacities,
/// what the simulators hold, and the full contents of every table a VM touches (without
/// `updated_at`, which a refused state change may bump).
pub async fn snapshot(node: &Node, dir: &Path, dc: &Dc) -> Value {
    let mut hosts = Vec::new();
    for h in &dc.hosts {
        let inv = node.get(&format!("/v1/hosts/{h}")).await.1["inventory"].clone();
        hosts.push(json!([inv["available_cpu"], inv["available_memory"]]));
        hosts.push(simulated_vms(node, h).await);
    }
    let ps = node.get(&format!("/v1/primary-storage/{}", dc.ps)).await.1["inventory"].clone();
    let tables = dump_tables(
        dir,
        &[
            "vm_instances",
            "vm_nics",
            "ip_addresses",
            "dhcp_leases",
            "volumes",
            "quota_usage",
            "host_allocations",
            "primary_storage_allocations",
            "quota_allocations",
        ],
    )
    .await;
    json!({
        "hosts": hosts,
        "primary_storage": [ps["available_capacity"], simulated_volumes(node, &dc.ps).await],
        "tables": tables,
    })
}

/// Each of `tables`, dumped whole (without `updated_at`), by name.
pub async fn dump_tables(dir: &Path, tables: &[&str]) -> Value {
    let mut dumped = serde_json::Map::new();
    for table in tables {
        dumped.insert((*table).into(), json!(dump(dir, table).await));
    }
    Value::Object(dumped)
}

/// The volumes the storage simulator holds on `ps`.
pub async fn simulated_volumes(node: &Node, ps: &str) -> Value {
    simulator_state(node, &format!("primary-storage/{ps}"), "volume_uuids").await
}

pub async fn act(node: &Node, vm: &str, action: &str) -> (StatusCode, Value) {
    node.post(
        &format!("/v1/vm-instances/{vm}/actions?wait=10"),
        json!({"action": action}),
    )
    .await
}
