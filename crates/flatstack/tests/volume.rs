//! Volumes over HTTP: every VM's root volume, data volumes created, attached, detached and
//! deleted, with primary-storage capacity and the storage simulator kept exact.

mod common;

use common::cloud::{data_centre, simulated_volumes, vm_body, Dc, GIB};
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn free(node: &Node, dc: &Dc) -> u64 {
    node.get(&format!("/v1/primary-storage/{}", dc.ps)).await.1["inventory"]["available_capacity"]
        .as_u64()
        .expect("available_capacity")
}

async fn volume_action(node: &Node, volume: &str, body: Value) -> (StatusCode, Value) {
    node.post(&format!("/v1/volumes/{volume}/actions?wait=10"), body)
        .await
}

async fn delete(node: &Node, path: &str) -> (StatusCode, Value) {
    node.send(Method::DELETE, &format!("{path}?wait=10"), None)
        .await
}

#[tokio::test]
async fn volumes_live_with_vms_and_on_their_own() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let total = free(&node, &dc).await;

    // A VM gets a root volume the size of its image, on storage its cluster reaches.
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "vm")).await);
    let (_, roots) = node
        .get(&format!("/v1/volumes?vm_instance_uuid={vm}"))
        .await;
    assert_eq!(roots["total"], 1, "{roots}");
    let root = roots["inventories"][0].clone();
    assert_eq!(
        (&root["type"], &root["size"], &root["device_id"]),
        (&json!("Root"), &json!(1000), &json!(0))
    );
    assert_eq!(free(&node, &dc).await, total - 1000);
    let root_uuid = root["uuid"].clone();

    // A data volume: bad input is refused and takes nothing.
    for (body, field) in [
        (json!({"name": "d", "size": 0}), "size"),
        (
            json!({"name": "d", "size": GIB, "primary_storage_uuid": "0".repeat(32)}),
            "primary_storage_uuid",
        ),
        (json!({"name": "", "size": GIB}), "name"),
    ] {
        let (status, err) = node.post("/v1/volumes?wait=10", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["details"]["field"], field, "{err}");
    }
    let (status, err) = node
        .post(
            "/v1/volumes?wait=10",
            json!({"name": "huge", "size": total}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "more than is free: {err}");
    // A storage that fails to create the bytes holds nothing either.
    node.post(
        &format!("/v1/primary-storage/{}/actions?wait=10", dc.ps),
        json!({"action": "inject_failure", "operation": "create_volume", "fail": true, "once": true}),
    )
    .await;
    let (status, err) = node
        .post("/v1/volumes?wait=10", json!({"name": "d", "size": GIB}))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(node.count("volumes").await, 1);
    assert_eq!(free(&node, &dc).await, total - 1000);

    let data = node
        .create("volumes", json!({"name": "data", "size": 10 * GIB}))
        .await;
    let data_id = uuid(&data);
    assert_eq!(
        (
            &data["type"],
            &data["primary_storage_uuid"],
            &data["vm_instance_uuid"]
        ),
        (&json!("Data"), &json!(dc.ps), &Value::Null)
    );
    assert_eq!(free(&node, &dc).await, total - 1000 - 10 * GIB);

    // Attach: refused for a root volume, an unknown VM, or while the host fails.
    let root_id = uuid(&root);
    let attach = json!({"action": "attach", "vm_instance_uuid": vm});
    let (status, err) = volume_action(&node, &root_id, attach.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, err) = volume_action(
        &node,
        &data_id,
        json!({"action": "attach", "vm_instance_uuid": "0".repeat(32)}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let host = node.get(&format!("/v1/vm-instances/{vm}")).await.1["inventory"]["host_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    node.post(
        &format!("/v1/hosts/{host}/actions?wait=10"),
        json!({"action": "inject_failure", "operation": "attach_volume", "fail": true, "once": true}),
    )
    .await;
    let (status, err) = volume_action(&node, &data_id, attach.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(
        node.get(&format!("/v1/volumes/{data_id}")).await.1["inventory"]["vm_instance_uuid"],
        Value::Null,
        "a failed attach leaves it detached"
    );
    let (status, attached) = volume_action(&node, &data_id, attach.clone()).await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    assert_eq!(
        (
            &attached["inventory"]["vm_instance_uuid"],
            &attached["inventory"]["device_id"]
        ),
        (&json!(vm), &json!(1))
    );
    assert_eq!(
        volume_action(&node, &data_id, attach.clone()).await.0,
        StatusCode::CONFLICT,
        "already attached"
    );
    let (status, err) = delete(&node, &format!("/v1/volumes/{data_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "attached: {err}");
    let (status, err) = delete(&node, &format!("/v1/volumes/{root_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "a root volume: {err}");

    // Detach, and attach again; a destroyed VM's data volume survives it, detached.
    let (status, detached) = volume_action(&node, &data_id, json!({"action": "detach"})).await;
    assert_eq!(status, StatusCode::OK, "{detached}");
    assert_eq!(detached["inventory"]["vm_instance_uuid"], Value::Null);
    assert_eq!(
        volume_action(&node, &data_id, json!({"action": "detach"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        volume_action(&node, &data_id, attach).await.0,
        StatusCode::OK
    );
    let (status, err) = delete(&node, &format!("/v1/vm-instances/{vm}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    let (_, left) = node.get("/v1/volumes").await;
    assert_eq!(left["total"], 1, "the root volume went with its VM: {left}");
    assert_eq!(left["inventories"][0]["uuid"], json!(data_id));
    assert_eq!(left["inventories"][0]["vm_instance_uuid"], Value::Null);
    assert_eq!(free(&node, &dc).await, total - 10 * GIB);
    assert_eq!(simulated_volumes(&node, &dc.ps).await, json!([data_id]));

    let (status, err) = delete(&node, &format!("/v1/volumes/{data_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    assert_eq!(free(&node, &dc).await, total);
    // Service authors see the data volume's whole life in canonical events.
    let updates: Vec<Value> = common::events(dir.path(), "resource.updated")
        .await
        .into_iter()
        .filter(|e| e["uuid"] == json!(data_id))
        .map(|e| e["inventory"]["vm_instance_uuid"].clone())
        .collect();
    assert_eq!(
        updates,
        [json!(vm), Value::Null, json!(vm), Value::Null],
        "attach, detach, attach, detached by the VM's destroy"
    );
    // And the root volume's, created with its VM and deleted with it.
    let root_events = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| e["uuid"] == root_uuid)
            .map(|e| (e["kind"].clone(), e["inventory"]["type"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        root_events(common::events(dir.path(), "resource.created").await),
        [(json!("volumes"), json!("Root"))]
    );
    assert_eq!(
        root_events(common::events(dir.path(), "resource.deleted").await),
        [(json!("volumes"), Value::Null)]
    );
    for name in ["resource.created", "resource.deleted"] {
        let events = common::events(dir.path(), name).await;
        assert_eq!(
            events
                .iter()
                .filter(|e| e["uuid"] == json!(data_id))
                .count(),
            1,
            "{name}"
        );
    }
    assert_eq!(simulated_volumes(&node, &dc.ps).await, json!([]));
    assert_eq!(node.count("volumes").await, 0);
}

#[tokio::test]
async fn a_vm_goes_only_where_its_networks_and_storage_reach() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let l2 = node.get(&format!("/v1/l3-networks/{}", dc.l3)).await.1["inventory"]
        ["l2_network_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, plugin) in [
        (format!("/v1/l2-networks/{l2}"), "l3-network"),
        (format!("/v1/primary-storage/{}", dc.ps), "volume"),
    ] {
        let detach = json!({"action": "detach_cluster", "cluster_uuid": dc.cluster});
        let (status, reply) = node.post(&format!("{path}/actions?wait=10"), detach).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let (status, err) = node
            .post("/v1/vm-instances?wait=10", vm_body(&dc, "homeless"))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(err["error"]["details"]["step"], "host.allocate");
        assert_eq!(
            err["error"]["details"]["plugin"], plugin,
            "the filter that left no host is named: {err}"
        );
        assert_eq!(node.count("vm-instances").await, 0);
        assert_eq!(node.count("volumes").await, 0);
        let attach = json!({"action": "attach_cluster", "cluster_uuid": dc.cluster});
        let (status, reply) = node.post(&format!("{path}/actions?wait=10"), attach).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    // Both reachable again: placement spreads VMs, most free memory first.
    let first = node.create("vm-instances", vm_body(&dc, "a")).await;
    let second = node.create("vm-instances", vm_body(&dc, "b")).await;
    assert_ne!(first["host_uuid"], second["host_uuid"]);
}

/// Data volumes attached to one VM at once get distinct device ids: each attach reads the
/// VM's volumes and writes the next id in one write transaction, which no other write
/// overlaps (on PostgreSQL too).
#[tokio::test]
async fn racing_attaches_to_one_vm_get_distinct_device_ids() {
    let dir = common::data_dir();
    let node = std::sync::Arc::new(Node::start(dir.path()));
    let dc = data_centre(&node).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "vm")).await);
    let mut volumes = Vec::new();
    for i in 0..6 {
        let name = format!("d{i}");
        volumes.push(uuid(
            &node
                .create("volumes", json!({"name": name, "size": GIB}))
                .await,
        ));
    }
    let attaches: Vec<_> = volumes
        .iter()
        .map(|volume| {
            let (node, volume, vm) = (node.clone(), volume.clone(), vm.clone());
            tokio::spawn(async move {
                volume_action(
                    &node,
                    &volume,
                    json!({"action": "attach", "vm_instance_uuid": vm}),
                )
                .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for attach in attaches {
        let (status, reply) = attach.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{reply}");
        ids.push(reply["inventory"]["device_id"].as_i64().expect("device_id"));
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
}

/// An attach runs on the volume's queue, a destroy on the VM's: a VM destroyed while its
/// host attaches a volume is destroyed, and the attach fails, leaving the volume detached.
/// The host takes half a second to attach; the destroy detaches the VM's volumes, then
/// stalls giving back the VM's quota (a busy store, retried until the test calls it off),
/// so the attach ends between the two.
#[tokio::test]
async fn a_vm_destroyed_while_a_volume_is_being_attached_to_it_is_destroyed() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "vm")).await);
    let data = uuid(
        &node
            .create("volumes", json!({"name": "d", "size": GIB}))
            .await,
    );
    let host = node.get(&format!("/v1/vm-instances/{vm}")).await.1["inventory"]["host_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, armed) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=10"),
            json!({"action": "inject_failure", "operation": "attach_volume", "delay_ms": 500}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{armed}");
    let busy = json!({"point": "vm.create.reserve", "mode": "busy", "undo": true});
    let stall = node.create("fault-injections", busy).await;

    let (status, accepted) = node
        .post(
            &format!("/v1/volumes/{data}/actions"),
            json!({"action": "attach", "vm_instance_uuid": vm}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // Listed, not shown: a show waits on the volume's queue, behind the attach.
    let mut listed = Value::Null;
    for _ in 0..250 {
        listed = node.get("/v1/volumes?name=d").await.1;
        if listed["inventories"][0]["status"] == "Attaching" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(listed["inventories"][0]["status"], "Attaching", "{listed}");
    let destroy = tokio::spawn(
        node.http
            .delete(format!("{}/v1/vm-instances/{vm}?wait=30", node.base))
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/fault-injections/{}?wait=10", uuid(&stall)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let destroyed = destroy.await.unwrap().unwrap();
    assert_eq!(
        destroyed.status(),
        StatusCode::NO_CONTENT,
        "{}",
        destroyed.text().await.unwrap()
    );
    let (_, job) = node.get(accepted["location"].as_str().unwrap()).await;
    assert_eq!(
        (&job["state"], &job["status"]),
        (&json!("failed"), &json!(409)),
        "{job}"
    );
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("was destroyed"), "{job}");
    assert_eq!(node.count("vm-instances").await, 0);
    let (_, shown) = node.get(&format!("/v1/volumes/{data}")).await;
    assert_eq!(
        (
            &shown["inventory"]["status"],
            &shown["inventory"]["vm_instance_uuid"]
        ),
        (&json!("Ready"), &Value::Null),
        "{shown}"
    );
}
