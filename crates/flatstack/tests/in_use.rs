//! Nothing orphaned across plugins: what VMs use — their image, their offering, the
//! primary storage their volumes are on, the L2 network their NICs reach — cannot be
//! deleted or detached from under them. Each refusal is `409`, names the VMs (kinds and
//! uuids, never tables) and changes nothing; once the VMs are destroyed it goes through.

mod common;

use common::cloud::{act, data_centre, snapshot, vm_body, Dc};
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Sends `method path body`, asserts `409`, and returns the error.
async fn refused(node: &Node, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, reply) = node.send(method, path, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{path}: {reply}");
    let error = reply["error"].clone();
    assert_eq!(error["code"], "conflict", "{error}");
    error
}

/// The `(kind, uuid)`s a refusal names, as given.
fn users(error: &Value) -> Vec<(String, String)> {
    error["details"]["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {error}"))
        .iter()
        .map(|u| {
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["uuid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `(vm-instances, uuid)` of each of `vms`, sorted as refusals list them.
fn vm_users(vms: &[&String]) -> Vec<(String, String)> {
    let mut named: Vec<(String, String)> = vms
        .iter()
        .map(|vm| ("vm-instances".to_owned(), (*vm).clone()))
        .collect();
    named.sort();
    named
}

/// A readable message, naming the kind and each VM, and never a table.
fn names_vms(error: &Value, vms: &[&String]) {
    let message = error["message"].as_str().unwrap();
    let mut first = vms.to_vec();
    first.sort();
    assert!(
        message.contains(&format!("it is still used by vm-instances {}", first[0])),
        "{message}"
    );
    for vm in vms {
        assert!(message.contains(vm.as_str()), "{message}");
    }
    assert!(
        !message.contains("vm_instances")
            && !message.contains("vm_nics")
            && !message.contains("volumes"),
        "{message}"
    );
}

async fn destroy(node: &Node, vm: &str) {
    let (status, reply) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{vm}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{reply}");
}

async fn action(node: &Node, path: &str, body: Value) -> (StatusCode, Value) {
    node.post(&format!("{path}/actions?wait=10"), body).await
}

async fn l2_of(node: &Node, dc: &Dc) -> String {
    let (_, l3) = node.get(&format!("/v1/l3-networks/{}", dc.l3)).await;
    l3["inventory"]["l2_network_uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The clusters `path` (a storage or an L2 network) is attached to, sorted.
async fn attached(node: &Node, path: &str) -> Value {
    if path.starts_with("/v1/l2-networks/") {
        let (status, reply) = node.get(&format!("{path}/clusters")).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let mut clusters: Vec<&str> = reply["inventories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cluster_uuid"].as_str().unwrap())
            .collect();
        clusters.sort();
        return json!(clusters);
    }
    let (status, reply) = node.get(path).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["inventory"]["attached_cluster_uuids"].clone()
}

/// A second cluster of the zone, with nothing in it.
async fn empty_cluster(node: &Node, dc: &Dc) -> String {
    uuid(
        &node
            .create(
                "clusters",
                json!({"name": "c2", "zone_uuid": dc.zone, "hypervisor_type": "Simulator"}),
            )
            .await,
    )
}

#[tokio::test]
async fn an_image_or_offering_that_vms_use_cannot_be_deleted() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let a = uuid(&node.create("vm-instances", vm_body(&dc, "a")).await);
    let b = uuid(&node.create("vm-instances", vm_body(&dc, "b")).await);
    // A stopped VM still uses them.
    assert_eq!(act(&node, &b, "stop").await.0, StatusCode::OK);
    let before = snapshot(&node, dir.path(), &dc).await;
    for (kind, what) in [("images", &dc.image), ("instance-offerings", &dc.offering)] {
        let error = refused(
            &node,
            Method::DELETE,
            &format!("/v1/{kind}/{what}?wait=10"),
            None,
        )
        .await;
        assert_eq!(users(&error), vm_users(&[&a, &b]), "{error}");
        assert_eq!(error["details"]["user_counts"], json!({"vm-instances": 2}));
        names_vms(&error, &[&a, &b]);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("cannot delete {kind} {what}")),
            "{error}"
        );
        let (status, kept) = node.get(&format!("/v1/{kind}/{what}")).await;
        assert_eq!(status, StatusCode::OK, "{kind} still there: {kept}");
        assert_eq!(node.count(kind).await, 1, "still listed");
    }
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "nothing changed"
    );
    for vm in [&a, &b] {
        assert_eq!(
            node.get(&format!("/v1/vm-instances/{vm}")).await.1["inventory"]["image_uuid"],
            dc.image.as_str()
        );
    }

    // One VM left is still a user.
    destroy(&node, &a).await;
    let error = refused(
        &node,
        Method::DELETE,
        &format!("/v1/images/{}?wait=10", dc.image),
        None,
    )
    .await;
    assert_eq!(users(&error), vm_users(&[&b]));

    destroy(&node, &b).await;
    for (kind, what) in [("images", &dc.image), ("instance-offerings", &dc.offering)] {
        let (status, reply) = node
            .send(Method::DELETE, &format!("/v1/{kind}/{what}?wait=10"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {reply}");
        assert_eq!(node.count(kind).await, 0);
    }
}

#[tokio::test]
async fn primary_storage_holding_the_volumes_of_a_clusters_vms_stays_attached_to_it() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let other = empty_cluster(&node, &dc).await;
    let ps = format!("/v1/primary-storage/{}", dc.ps);
    let (status, reply) = action(
        &node,
        &ps,
        json!({"action": "attach_cluster", "cluster_uuid": other}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "a")).await);
    // A data volume attached to the VM counts too; a loose one does not.
    let data = uuid(
        &node
            .create(
                "volumes",
                json!({"name": "d", "size": 1000, "primary_storage_uuid": dc.ps}),
            )
            .await,
    );
    let (status, reply) = action(
        &node,
        &format!("/v1/volumes/{data}"),
        json!({"action": "attach", "vm_instance_uuid": vm}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let before = snapshot(&node, dir.path(), &dc).await;

    let error = refused(
        &node,
        Method::POST,
        &format!("{ps}/actions?wait=10"),
        Some(json!({"action": "detach_cluster", "cluster_uuid": dc.cluster})),
    )
    .await;
    assert_eq!(users(&error), vm_users(&[&vm]), "{error}");
    names_vms(&error, &[&vm]);
    assert_eq!(error["details"]["plugin"], "volume");
    assert_eq!(error["details"]["point"], "resource.detach.pre-check");
    let mut both = vec![dc.cluster.clone(), other.clone()];
    both.sort();
    assert_eq!(attached(&node, &ps).await, json!(both), "still attached");
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "nothing changed"
    );

    // The other cluster has no VM on it: that attachment can go.
    let (status, reply) = action(
        &node,
        &ps,
        json!({"action": "detach_cluster", "cluster_uuid": other}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    destroy(&node, &vm).await;
    let (status, reply) = action(
        &node,
        &ps,
        json!({"action": "detach_cluster", "cluster_uuid": dc.cluster}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(attached(&node, &ps).await, json!([]));
}

#[tokio::test]
async fn an_l2_network_that_nics_of_a_clusters_vms_use_stays_attached_to_it() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let l2 = format!("/v1/l2-networks/{}", l2_of(&node, &dc).await);
    let other = empty_cluster(&node, &dc).await;
    let (status, reply) = action(
        &node,
        &l2,
        json!({"action": "attach_cluster", "cluster_uuid": other}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let a = uuid(&node.create("vm-instances", vm_body(&dc, "a")).await);
    let b = uuid(&node.create("vm-instances", vm_body(&dc, "b")).await);
    assert_eq!(act(&node, &b, "stop").await.0, StatusCode::OK);
    let before = snapshot(&node, dir.path(), &dc).await;

    let error = refused(
        &node,
        Method::POST,
        &format!("{l2}/actions?wait=10"),
        Some(json!({"action": "detach_cluster", "cluster_uuid": dc.cluster})),
    )
    .await;
    assert_eq!(users(&error), vm_users(&[&a, &b]), "{error}");
    names_vms(&error, &[&a, &b]);
    assert_eq!(error["details"]["plugin"], "vm");
    let mut both = vec![dc.cluster.clone(), other.clone()];
    both.sort();
    assert_eq!(attached(&node, &l2).await, json!(both), "still attached");
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "nothing changed"
    );

    let (status, reply) = action(
        &node,
        &l2,
        json!({"action": "detach_cluster", "cluster_uuid": other}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "no VM of that cluster: {reply}");

    destroy(&node, &a).await;
    destroy(&node, &b).await;
    let (status, reply) = action(
        &node,
        &l2,
        json!({"action": "detach_cluster", "cluster_uuid": dc.cluster}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(attached(&node, &l2).await, json!([]));
}

/// A VM counts from the moment its row exists: one held half-created (a hang injected
/// before the hypervisor starts it: its row, root volume, addresses, NICs and host exist)
/// keeps everything it is being made of.
#[tokio::test]
async fn a_vm_being_created_is_a_user_already() {
    let dir = common::data_dir();
    let node = Node::start_with_manifest(dir.path(), "[config]\nextension.timeout_ms = 4000\n");
    let dc = data_centre(&node).await;
    let l2 = format!("/v1/l2-networks/{}", l2_of(&node, &dc).await);
    let (status, reply) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.pre-instantiate", "mode": "hang", "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, accepted) = node.post("/v1/vm-instances", vm_body(&dc, "slow")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // Wait until it has its root volume: it is then at (or about to reach) the hang.
    let mut vm = Value::Null;
    for _ in 0..200 {
        let (_, volumes) = node.get("/v1/volumes").await;
        if let Some(volume) = volumes["inventories"].as_array().and_then(|v| v.first()) {
            vm = volume["vm_instance_uuid"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let vm = vm.as_str().expect("a root volume appeared").to_owned();
    let (_, creating) = node.get(&format!("/v1/vm-instances/{vm}")).await;
    assert_eq!(creating["inventory"]["state"], "Creating", "{creating}");

    for (method, path, body) in [
        (
            Method::DELETE,
            format!("/v1/images/{}?wait=10", dc.image),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/instance-offerings/{}?wait=10", dc.offering),
            None,
        ),
        (
            Method::POST,
            format!("/v1/primary-storage/{}/actions?wait=10", dc.ps),
            Some(json!({"action": "detach_cluster", "cluster_uuid": dc.cluster})),
        ),
        (
            Method::POST,
            format!("{l2}/actions?wait=10"),
            Some(json!({"action": "detach_cluster", "cluster_uuid": dc.cluster})),
        ),
    ] {
        let error = refused(&node, method, &path, body).await;
        assert_eq!(users(&error), vm_users(&[&vm]), "{path}: {error}");
    }

    // The hang times out, the create rolls back, and nothing is used any more.
    let location = accepted["location"].as_str().unwrap().to_owned();
    let mut job = Value::Null;
    for _ in 0..100 {
        job = node.get(&location).await.1;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(node.count("vm-instances").await, 0);
    let (status, reply) = action(
        &node,
        &l2,
        json!({"action": "detach_cluster", "cluster_uuid": dc.cluster}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = action(
        &node,
        &format!("/v1/primary-storage/{}", dc.ps),
        json!({"action": "detach_cluster", "cluster_uuid": dc.cluster}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    for (kind, what) in [("images", &dc.image), ("instance-offerings", &dc.offering)] {
        let (status, reply) = node
            .send(Method::DELETE, &format!("/v1/{kind}/{what}?wait=10"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {reply}");
    }
}

/// The create's side of the race: a create checks its offering before its VM has a row,
/// and its row is the first thing it records; from then on the VM is a user. Held just
/// after (a delay at its first step), a delete of its offering is refused naming it, and
/// the create goes on to make a whole VM.
#[tokio::test]
async fn a_create_holds_its_offering_from_its_first_step() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let (status, reply) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.create.reserve", "mode": "delay", "delay_ms": 1500, "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, accepted) = node.post("/v1/vm-instances", vm_body(&dc, "late")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // Wait until the create is held (the injection fired): its row exists.
    for _ in 0..200 {
        let (_, armed) = node.get("/v1/fault-injections").await;
        if armed["total"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, vms) = node.get("/v1/vm-instances").await;
    let vm = vms["inventories"][0]["uuid"].clone();
    assert_eq!(vms["inventories"][0]["state"], "Creating", "{vms}");
    let (status, reply) = node
        .send(
            Method::DELETE,
            &format!("/v1/instance-offerings/{}?wait=10", dc.offering),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    assert_eq!(
        reply["error"]["details"]["users"],
        json!([{"kind": "vm-instances", "uuid": vm}]),
        "{reply}"
    );

    let location = accepted["location"].as_str().unwrap().to_owned();
    let mut job = Value::Null;
    for _ in 0..100 {
        job = node.get(&location).await.1;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["instance_offering_uuid"], json!(dc.offering));
}

/// The store's own refusal — a row still referred to by foreign keys — names the
/// resources too: a host's VMs, an L3 network's VMs (through their NICs and leases,
/// each VM once), a zone's clusters and networks.
#[tokio::test]
async fn a_delete_refused_by_the_store_names_resources_not_tables() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let a = uuid(&node.create("vm-instances", vm_body(&dc, "a")).await);
    let b = uuid(&node.create("vm-instances", vm_body(&dc, "b")).await);
    let (_, vms) = node.get("/v1/vm-instances").await;
    for host in &dc.hosts {
        let on_host: Vec<&String> = [&a, &b]
            .into_iter()
            .filter(|vm| {
                vms["inventories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["uuid"] == vm.as_str() && v["host_uuid"] == host.as_str())
            })
            .collect();
        if on_host.is_empty() {
            continue;
        }
        let error = refused(
            &node,
            Method::DELETE,
            &format!("/v1/hosts/{host}?wait=10"),
            None,
        )
        .await;
        assert_eq!(users(&error), vm_users(&on_host), "{error}");
        names_vms(&error, &on_host);
    }

    let error = refused(
        &node,
        Method::DELETE,
        &format!("/v1/l3-networks/{}?wait=10", dc.l3),
        None,
    )
    .await;
    let named = users(&error);
    let vms: Vec<(String, String)> = named
        .iter()
        .filter(|(kind, _)| kind == "vm-instances")
        .cloned()
        .collect();
    assert_eq!(vms, vm_users(&[&a, &b]), "each VM once: {error}");
    assert_eq!(
        error["details"]["user_counts"]["vm-instances"], 2,
        "{error}"
    );
    assert!(
        named.iter().any(|(kind, _)| kind == "ip-ranges"),
        "its range: {error}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        !message.contains("vm_nics")
            && !message.contains("dhcp_leases")
            && !message.contains("ip_ranges"),
        "{message}"
    );

    let error = refused(
        &node,
        Method::DELETE,
        &format!("/v1/zones/{}?wait=10", dc.zone),
        None,
    )
    .await;
    let kinds: Vec<String> = users(&error).into_iter().map(|(kind, _)| kind).collect();
    for kind in [
        "clusters",
        "l2-networks",
        "primary-storage",
        "backup-storage",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {error}");
    }
    assert!(
        users(&error).contains(&("clusters".to_owned(), dc.cluster.clone())),
        "{error}"
    );
    assert_eq!(node.count("zones").await, 1);
    assert_eq!(node.count("hosts").await, 2);
    assert_eq!(node.count("l3-networks").await, 1);
}

/// The vetoes are listed with the others, marked asynchronous, with their metrics.
#[tokio::test]
async fn the_asynchronous_vetoes_are_listed() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/images/{}?wait=10", dc.image),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, points) = node.get("/v1/extension-points").await;
    let implementors = |point: &str| -> Vec<Value> {
        points["extension_points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == point)
            .unwrap_or_else(|| panic!("{point} listed"))["implementors"]
            .as_array()
            .unwrap()
            .clone()
    };
    let delete = implementors("resource.delete.pre-check");
    let vm = delete
        .iter()
        .find(|i| i["plugin"] == "vm")
        .expect("the VM plugin's veto");
    assert_eq!(vm["async_veto"], true);
    assert_eq!(vm["stats"]["calls"], 1, "asked about the image: {vm}");
    let detach: Vec<String> = implementors("resource.detach.pre-check")
        .into_iter()
        .filter(|i| i["async_veto"] == true)
        .map(|i| i["plugin"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(detach, ["vm", "volume"]);
}
