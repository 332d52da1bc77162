//! L2 networks (both types), cluster attachment, L3 networks and IP ranges over HTTP.

mod common;

use common::{data_centre, rows, uuid, with, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;

async fn delete(node: &Node, path: &str) -> (StatusCode, Value) {
    node.send(Method::DELETE, &format!("{path}?wait=10"), None)
        .await
}

async fn patch(node: &Node, path: &str, body: Value) -> (StatusCode, Value) {
    node.send(Method::PATCH, &format!("{path}?wait=10"), Some(body))
        .await
}

async fn action(node: &Node, l2: &str, name: &str, cluster: &str) -> (StatusCode, Value) {
    node.post(
        &format!("/v1/l2-networks/{l2}/actions?wait=10"),
        json!({"action": name, "cluster_uuid": cluster}),
    )
    .await
}

fn vlan_l2(zone: &str, vlan: u64) -> Value {
    json!({"type": "L2VlanNetwork", "name": format!("vlan-{vlan}"), "zone_uuid": zone,
           "physical_interface": "eth0", "vlan": vlan})
}

fn flat_l2(zone: &str) -> Value {
    json!({"type": "L2NoVlanNetwork", "name": "flat", "description": "untagged",
           "zone_uuid": zone, "physical_interface": "eth1"})
}

fn ip_range(name: &str, start: &str, end: &str) -> Value {
    json!({"name": name, "start_ip": start, "end_ip": end,
           "netmask": "255.255.255.0", "gateway": "192.168.0.1"})
}

const TABLES: [&str; 7] = [
    "l2_networks",
    "l2_vlan_networks",
    "l2_cluster_refs",
    "l3_networks",
    "ip_ranges",
    "ip_addresses",
    "event_outbox",
];

async fn snapshot(dir: &Path) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(rows(dir, table).await);
    }
    counts
}

#[tokio::test]
async fn l2_networks_of_both_types_create_list_show_update_delete() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, _, _) = data_centre(&node).await;

    let flat = node.create("l2-networks", flat_l2(&zone)).await;
    assert_eq!(flat["type"], "L2NoVlanNetwork");
    assert_eq!(flat["physical_interface"], "eth1");
    assert_eq!(flat["description"], "untagged");
    assert!(flat.get("vlan").is_none());
    let vlan = node.create("l2-networks", vlan_l2(&zone, 100)).await;
    assert_eq!(vlan["type"], "L2VlanNetwork");
    assert_eq!(vlan["vlan"], 100, "the driver's record is joined in");
    assert_eq!(vlan["zone_uuid"], zone.as_str());
    assert_eq!(rows(dir.path(), "l2_vlan_networks").await, 1);
    // The same VLAN on another interface, or another VLAN on the same one, is fine.
    let other_if = node
        .create(
            "l2-networks",
            json!({"type": "L2VlanNetwork", "name": "v", "zone_uuid": zone,
                   "physical_interface": "eth2", "vlan": 100}),
        )
        .await;
    let other_vlan = node.create("l2-networks", vlan_l2(&zone, 4094)).await;

    assert_eq!(node.count("l2-networks").await, 4);
    let (_, vlans) = node.get("/v1/l2-networks?type=L2VlanNetwork").await;
    assert_eq!(vlans["total"], 3);
    assert!(vlans["inventories"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["vlan"].is_number()));
    let (_, on_eth0) = node
        .get(&format!(
            "/v1/l2-networks?zone_uuid={zone}&physical_interface=eth0"
        ))
        .await;
    assert_eq!(on_eth0["total"], 2);

    let id = uuid(&vlan);
    let (status, shown) = node.get(&format!("/v1/l2-networks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["inventory"]["vlan"], 100);
    let (status, patched) = patch(
        &node,
        &format!("/v1/l2-networks/{id}"),
        json!({"name": "renamed", "description": "tagged"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["inventory"]["name"], "renamed");
    let (_, shown) = node.get(&format!("/v1/l2-networks/{id}")).await;
    assert_eq!(shown["inventory"]["description"], "tagged");
    assert_eq!(shown["inventory"]["vlan"], 100);

    for net in [&flat, &vlan, &other_if, &other_vlan] {
        let (status, err) = delete(&node, &format!("/v1/l2-networks/{}", uuid(net))).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    }
    let (status, _) = node.get(&format!("/v1/l2-networks/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(rows(dir.path(), "l2_networks").await, 0);
    assert_eq!(
        rows(dir.path(), "l2_vlan_networks").await,
        0,
        "the driver's record goes with its network"
    );
}

#[tokio::test]
async fn l2_networks_attach_to_clusters_of_their_zone() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, host) = data_centre(&node).await;
    let vlan = uuid(&node.create("l2-networks", vlan_l2(&zone, 10)).await);
    let flat = uuid(&node.create("l2-networks", flat_l2(&zone)).await);

    let (status, reply) = action(&node, &vlan, "attach_cluster", &cluster).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["inventory"]["uuid"], vlan.as_str());
    assert_eq!(
        reply["inventory"]["vlan"], 10,
        "the VLAN network's attach went through its driver to the base"
    );
    // The child collection lists attachments; POSTing to it is the same attach.
    let (status, reply) = node
        .post(
            &format!("/v1/l2-networks/{flat}/clusters?wait=10"),
            json!({"cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, attached) = node.get(&format!("/v1/l2-networks/{vlan}/clusters")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(attached["total"], 1);
    assert_eq!(attached["inventories"][0]["cluster_uuid"], cluster.as_str());
    assert_eq!(rows(dir.path(), "l2_cluster_refs").await, 2);

    let (status, err) = action(&node, &vlan, "attach_cluster", &cluster).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["details"]["field"], "cluster_uuid");

    // Attached things cannot be deleted; each refusal names the other side.
    let mut both = [flat.as_str(), vlan.as_str()];
    both.sort();
    for (path, user) in [
        (
            format!("/v1/l2-networks/{vlan}"),
            format!("used by clusters {cluster};"),
        ),
        (
            format!("/v1/clusters/{cluster}"),
            format!("; l2-networks {};", both.join(", ")),
        ),
    ] {
        let (status, err) = delete(&node, &path).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(&user), "{err}");
        assert!(!message.contains("l2_cluster_refs"), "{err}");
    }
    assert_eq!(rows(dir.path(), "l2_networks").await, 2);

    for l2 in [&vlan, &flat] {
        let (status, reply) = action(&node, l2, "detach_cluster", &cluster).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let (status, err) = action(&node, &vlan, "detach_cluster", &cluster).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["details"]["field"], "cluster_uuid");
    assert_eq!(rows(dir.path(), "l2_cluster_refs").await, 0);
    assert_eq!(
        node.get(&format!("/v1/l2-networks/{vlan}/clusters"))
            .await
            .1["total"],
        0
    );
    // Detached, everything goes.
    for path in [
        format!("/v1/l2-networks/{vlan}"),
        format!("/v1/l2-networks/{flat}"),
        format!("/v1/hosts/{host}"),
        format!("/v1/clusters/{cluster}"),
        format!("/v1/zones/{zone}"),
    ] {
        let (status, err) = delete(&node, &path).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {err}");
    }
}

#[tokio::test]
async fn l3_networks_and_ip_ranges_create_list_show_update_delete() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, _, _) = data_centre(&node).await;
    let l2 = uuid(&node.create("l2-networks", vlan_l2(&zone, 100)).await);

    let l3 = node
        .create(
            "l3-networks",
            json!({"name": "l3", "description": "guests", "l2_network_uuid": l2}),
        )
        .await;
    assert_eq!(
        l3["zone_uuid"],
        zone.as_str(),
        "an L3 network takes its L2's zone"
    );
    assert_eq!(l3["l2_network_uuid"], l2.as_str());
    let l3 = uuid(&l3);
    assert_eq!(
        node.get(&format!("/v1/l3-networks?l2_network_uuid={l2}"))
            .await
            .1["total"],
        1
    );
    let (status, patched) = patch(
        &node,
        &format!("/v1/l3-networks/{l3}"),
        json!({"name": "public"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        node.get(&format!("/v1/l3-networks/{l3}")).await.1["inventory"]["name"],
        "public"
    );

    // Through the L3 network's child collection...
    let (status, reply) = node
        .post(
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=10"),
            ip_range("r1", "192.168.0.10", "192.168.0.100"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let r1 = reply["inventory"].clone();
    assert_eq!(r1["network_cidr"], "192.168.0.0/24");
    assert_eq!(r1["l3_network_uuid"], l3.as_str());
    assert_eq!(r1["gateway"], "192.168.0.1");
    // ...or as a resource of its own, naming the L3 network.
    let mut body = ip_range("r2", "192.168.0.101", "192.168.0.200");
    body["l3_network_uuid"] = json!(l3);
    let r2 = node.create("ip-ranges", body).await;
    assert_eq!(r2["l3_network_uuid"], l3.as_str());

    let (status, ranges) = node.get(&format!("/v1/l3-networks/{l3}/ip-ranges")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ranges["total"], 2);
    assert_eq!(
        node.get(&format!("/v1/ip-ranges?l3_network_uuid={l3}"))
            .await
            .1["total"],
        2
    );
    let (status, shown) = node.get(&format!("/v1/ip-ranges/{}", uuid(&r1))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["inventory"]["start_ip"], "192.168.0.10");
    let (status, patched) = patch(
        &node,
        &format!("/v1/ip-ranges/{}", uuid(&r1)),
        json!({"name": "first"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["inventory"]["name"], "first");

    // Referenced things cannot be deleted: the L2 under an L3, an L3 with ranges. The
    // refusal names the kind that refers to it.
    for (path, referrer) in [
        (format!("/v1/l2-networks/{l2}"), "used by l3-networks "),
        (format!("/v1/l3-networks/{l3}"), "used by ip-ranges "),
        (format!("/v1/zones/{zone}"), "; l2-networks "),
    ] {
        let (status, err) = delete(&node, &path).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(referrer),
            "{path}: {err}"
        );
    }
    for path in [
        format!("/v1/ip-ranges/{}", uuid(&r1)),
        format!("/v1/ip-ranges/{}", uuid(&r2)),
        format!("/v1/l3-networks/{l3}"),
        format!("/v1/l2-networks/{l2}"),
    ] {
        let (status, err) = delete(&node, &path).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {err}");
    }
    for table in [
        "ip_ranges",
        "l3_networks",
        "l2_networks",
        "l2_vlan_networks",
    ] {
        assert_eq!(rows(dir.path(), table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn bad_network_input_is_a_clear_error_and_changes_nothing() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, _) = data_centre(&node).await;
    let zone2 = uuid(&node.create("zones", json!({"name": "zone-2"})).await);
    let cluster2 = uuid(
        &node
            .create(
                "clusters",
                json!({"name": "c2", "zone_uuid": zone2, "hypervisor_type": "Simulator"}),
            )
            .await,
    );
    let l2 = uuid(&node.create("l2-networks", vlan_l2(&zone, 100)).await);
    let flat = uuid(&node.create("l2-networks", flat_l2(&zone)).await);
    let l3 = uuid(
        &node
            .create("l3-networks", json!({"name": "l3", "l2_network_uuid": l2}))
            .await,
    );
    let (status, reply) = node
        .post(
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=10"),
            ip_range("r1", "192.168.0.10", "192.168.0.100"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let before = snapshot(dir.path()).await;

    // Valid bodies with one field changed (null removes it).
    let vlan = |over: Value| with(vlan_l2(&zone, 200), over);
    let flat_body = |over: Value| with(flat_l2(&zone), over);
    let range = |over: Value| with(ip_range("r", "192.168.0.150", "192.168.0.160"), over);
    let l2_path = "/v1/l2-networks".to_owned();
    let l3_path = "/v1/l3-networks".to_owned();
    let ranges = format!("/v1/l3-networks/{l3}/ip-ranges");
    let actions = format!("/v1/l2-networks/{l2}/actions");
    let attach = |over: Value| {
        with(
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
            over,
        )
    };
    let nowhere = "0".repeat(32);
    let bad = StatusCode::BAD_REQUEST;
    let conflict = StatusCode::CONFLICT;

    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        // L2: common fields.
        (l2_path.clone(), vlan(json!({"type": null})), bad, "type"),
        (
            l2_path.clone(),
            vlan(json!({"type": "L2TokenRingNetwork"})),
            bad,
            "type",
        ),
        (l2_path.clone(), vlan(json!({"type": 7})), bad, "type"),
        (l2_path.clone(), vlan(json!({"name": null})), bad, "name"),
        (l2_path.clone(), vlan(json!({"name": 5})), bad, "name"),
        (l2_path.clone(), vlan(json!({"name": " "})), bad, "name"),
        (
            l2_path.clone(),
            vlan(json!({"zone_uuid": null})),
            bad,
            "zone_uuid",
        ),
        (
            l2_path.clone(),
            vlan(json!({"zone_uuid": nowhere})),
            bad,
            "zone_uuid",
        ),
        (
            l2_path.clone(),
            vlan(json!({"physical_interface": null})),
            bad,
            "physical_interface",
        ),
        (
            l2_path.clone(),
            vlan(json!({"physical_interface": ""})),
            bad,
            "physical_interface",
        ),
        (
            l2_path.clone(),
            vlan(json!({"physical_interface": "eth 0"})),
            bad,
            "physical_interface",
        ),
        (
            l2_path.clone(),
            vlan(json!({"physical_interface": "a-very-long-name"})),
            bad,
            "physical_interface",
        ),
        (
            l2_path.clone(),
            vlan(json!({"colour": "red"})),
            bad,
            "colour",
        ),
        // L2: the VLAN driver's field.
        (l2_path.clone(), vlan(json!({"vlan": null})), bad, "vlan"),
        (l2_path.clone(), vlan(json!({"vlan": 0})), bad, "vlan"),
        (l2_path.clone(), vlan(json!({"vlan": 4095})), bad, "vlan"),
        (l2_path.clone(), vlan(json!({"vlan": -1})), bad, "vlan"),
        (l2_path.clone(), vlan(json!({"vlan": 1.5})), bad, "vlan"),
        (l2_path.clone(), vlan(json!({"vlan": "200"})), bad, "vlan"),
        (
            l2_path.clone(),
            vlan(json!({"vlan": 100})),
            conflict,
            "vlan",
        ),
        (
            l2_path.clone(),
            flat_body(json!({"vlan": 100})),
            bad,
            "vlan",
        ),
        (
            l2_path.clone(),
            flat_body(json!({"physical_interface": 3})),
            bad,
            "physical_interface",
        ),
        // Attach and detach.
        (
            actions.clone(),
            attach(json!({"cluster_uuid": null})),
            bad,
            "cluster_uuid",
        ),
        (
            actions.clone(),
            attach(json!({"cluster_uuid": 5})),
            bad,
            "cluster_uuid",
        ),
        (
            actions.clone(),
            attach(json!({"cluster_uuid": nowhere})),
            bad,
            "cluster_uuid",
        ),
        (
            actions.clone(),
            attach(json!({"cluster_uuid": cluster2})),
            bad,
            "cluster_uuid",
        ),
        (actions.clone(), attach(json!({"bogus": 1})), bad, "bogus"),
        (
            actions.clone(),
            attach(json!({"action": "detach_cluster"})),
            conflict,
            "cluster_uuid",
        ),
        (
            actions.clone(),
            attach(json!({"action": "explode"})),
            bad,
            "action",
        ),
        // L3.
        (
            l3_path.clone(),
            json!({"name": "x"}),
            bad,
            "l2_network_uuid",
        ),
        (
            l3_path.clone(),
            json!({"name": "x", "l2_network_uuid": nowhere}),
            bad,
            "l2_network_uuid",
        ),
        (
            l3_path.clone(),
            json!({"name": "", "l2_network_uuid": l2}),
            bad,
            "name",
        ),
        (
            l3_path.clone(),
            json!({"name": "x", "l2_network_uuid": l2, "vlan": 1}),
            bad,
            "vlan",
        ),
        // IP ranges: each address field, then the range as a whole.
        (ranges.clone(), range(json!({"name": null})), bad, "name"),
        (
            ranges.clone(),
            range(json!({"start_ip": null})),
            bad,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"start_ip": 5})),
            bad,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"start_ip": "192.168.0"})),
            bad,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"start_ip": "192.168.0.256"})),
            bad,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"end_ip": "fe80::1"})),
            bad,
            "end_ip",
        ),
        (
            ranges.clone(),
            range(json!({"netmask": "255.255.0.255"})),
            bad,
            "netmask",
        ),
        (
            ranges.clone(),
            range(json!({"netmask": "0.0.0.0"})),
            bad,
            "netmask",
        ),
        (
            ranges.clone(),
            range(json!({"netmask": "24"})),
            bad,
            "netmask",
        ),
        (
            ranges.clone(),
            range(json!({"gateway": "gw"})),
            bad,
            "gateway",
        ),
        (
            ranges.clone(),
            range(json!({"end_ip": "192.168.0.140"})),
            bad,
            "end_ip",
        ),
        (
            ranges.clone(),
            range(json!({"end_ip": "192.168.1.160"})),
            bad,
            "end_ip",
        ),
        (
            ranges.clone(),
            range(json!({"end_ip": "192.168.0.255"})),
            bad,
            "end_ip",
        ),
        (
            ranges.clone(),
            range(json!({"gateway": "10.0.0.1"})),
            bad,
            "gateway",
        ),
        (
            ranges.clone(),
            range(json!({"gateway": "192.168.0.155"})),
            bad,
            "gateway",
        ),
        (
            ranges.clone(),
            range(json!({"l3_network_uuid": nowhere})),
            bad,
            "l3_network_uuid",
        ),
        (
            ranges.clone(),
            range(json!({"start_ip": "192.168.0.100"})),
            conflict,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"start_ip": "192.168.0.5", "end_ip": "192.168.0.250"})),
            conflict,
            "start_ip",
        ),
        (
            ranges.clone(),
            range(json!({"gateway": "192.168.0.254"})),
            conflict,
            "gateway",
        ),
        (
            ranges.clone(),
            range(json!({"netmask": "255.255.0.0"})),
            conflict,
            "netmask",
        ),
        (
            ranges.clone(),
            range(
                json!({"start_ip": "192.168.1.10", "end_ip": "192.168.1.20", "gateway": "192.168.1.1"}),
            ),
            conflict,
            "start_ip",
        ),
        (
            "/v1/ip-ranges".to_owned(),
            range(json!({})),
            bad,
            "l3_network_uuid",
        ),
        (
            "/v1/ip-ranges".to_owned(),
            range(json!({"l3_network_uuid": nowhere})),
            bad,
            "l3_network_uuid",
        ),
    ];
    for (path, body, expected, field) in cases {
        let (status, err) = node.post(&format!("{path}?wait=10"), body.clone()).await;
        assert_eq!(status, expected, "{path} {body}: {err}");
        assert_eq!(
            err["error"]["details"]["field"], field,
            "{path} {body}: {err}"
        );
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }

    // Unknown parents in the path are not found; bad updates name the field.
    let (status, err) = node
        .post(
            &format!("/v1/l3-networks/{nowhere}/ip-ranges?wait=10"),
            range(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = action(&node, &nowhere, "attach_cluster", &cluster).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(
        node.get(&format!("/v1/l2-networks/{nowhere}/clusters"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, err) = patch(
        &node,
        &format!("/v1/l2-networks/{flat}"),
        json!({"name": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["details"]["field"], "name");
    let (status, err) = node.get("/v1/l2-networks?vlan=100").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    assert_eq!(
        before,
        snapshot(dir.path()).await,
        "invalid input changed the database ({TABLES:?})"
    );
}

#[tokio::test]
async fn network_plugins_and_types_are_introspectable() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (status, types) = node.get("/v1/l2-networks/types").await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<(&str, &str)> = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["plugin"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("L2NoVlanNetwork", "l2-network"),
            ("L2VlanNetwork", "l2-vlan"),
            ("Openvswitch", "l2-openvswitch")
        ]
    );
    let (_, schemas) = node.get("/v1/schemas").await;
    for name in [
        "l2.create",
        "l2.attach-cluster",
        "l2.detach-cluster",
        "l3.create",
        "l3.ip-range.create",
        "l3.ip.allocate",
        "l3.ip.release",
    ] {
        assert_eq!(schemas["messages"][name]["kind"], "request", "{name}");
    }
    assert_eq!(schemas["messages"]["resource.attached"]["kind"], "event");
    let (_, doc) = node.get("/v1/openapi.json").await;
    for path in [
        "/v1/l2-networks",
        "/v1/l2-networks/{uuid}/actions",
        "/v1/l2-networks/types",
        "/v1/l3-networks/{uuid}/ip-ranges",
        "/v1/ip-ranges/{uuid}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}

/// The VLAN of a network is unique on its interface even when creates race: the check
/// and the insert are one write transaction, which no other write overlaps (on
/// PostgreSQL too, where transactions otherwise run side by side under READ COMMITTED).
#[tokio::test]
async fn racing_creates_of_one_vlan_make_one_network() {
    let dir = common::data_dir();
    let node = std::sync::Arc::new(Node::start(dir.path()));
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    let creates: Vec<_> = (0..8)
        .map(|_| {
            let (node, zone) = (node.clone(), zone.clone());
            tokio::spawn(async move {
                node.post("/v1/l2-networks?wait=10", vlan_l2(&zone, 300))
                    .await
            })
        })
        .collect();
    let mut made = 0;
    for create in creates {
        let (status, reply) = create.await.expect("task");
        match status {
            StatusCode::CREATED => made += 1,
            StatusCode::CONFLICT => {
                assert_eq!(reply["error"]["details"]["field"], "vlan", "{reply}")
            }
            other => panic!("{other}: {reply}"),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(rows(dir.path(), "l2_vlan_networks").await, 1);
}
