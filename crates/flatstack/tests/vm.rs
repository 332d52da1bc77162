//! VMs over HTTP: the create flow, the life cycle and its state machine, and rollback that
//! leaves nothing behind when a step fails.

mod common;

use common::cloud::{act, data_centre, simulated_vms, snapshot, vm_body, GIB};
use common::{rows, uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_vm_lives_its_whole_life_cycle() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;

    let vm = node.create("vm-instances", vm_body(&dc, "vm1")).await;
    let id = uuid(&vm);
    assert_eq!(vm["state"], "Running");
    assert_eq!(vm["cpu_num"], 2);
    let host = vm["host_uuid"].as_str().unwrap().to_owned();
    assert!(dc.hosts.contains(&host));
    let nic = &vm["nics"][0];
    assert_eq!(nic["ip"], "192.168.0.10", "the lowest free address");
    assert!(nic["mac"].as_str().unwrap().starts_with("02:"));
    let placed = node.get(&format!("/v1/hosts/{host}")).await.1["inventory"].clone();
    assert_eq!(
        (
            placed["available_cpu"].as_u64(),
            placed["available_memory"].as_u64()
        ),
        (Some(6), Some(12 * GIB))
    );
    assert_eq!(simulated_vms(&node, &host).await, json!([id]));
    // The DHCP plugin took part through `vm.pre-instantiate`, unknown to the VM plugin.
    let (status, leases) = node
        .post(
            &format!("/v1/l3-networks/{}/actions?wait=10", dc.l3),
            json!({"action": "list_dhcp_leases"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{leases}");
    let lease = &leases["inventory"]["inventories"][0];
    assert_eq!(
        (&lease["ip"], &lease["mac"], &lease["vm_instance_uuid"]),
        (&nic["ip"], &nic["mac"], &json!(id))
    );

    let (status, err) = act(&node, &id, "start").await;
    assert_eq!(status, StatusCode::CONFLICT, "starting a running VM: {err}");
    let (status, stopped) = act(&node, &id, "stop").await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["inventory"]["state"], "Stopped");
    assert_eq!(simulated_vms(&node, &host).await, json!([]));
    assert_eq!(act(&node, &id, "stop").await.0, StatusCode::CONFLICT);
    assert_eq!(act(&node, &id, "reboot").await.0, StatusCode::CONFLICT);
    let (status, started) = act(&node, &id, "start").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["inventory"]["state"], "Running");
    let (status, rebooted) = act(&node, &id, "reboot").await;
    assert_eq!(status, StatusCode::OK, "{rebooted}");
    assert_eq!(rebooted["inventory"]["state"], "Running");

    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{id}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    assert_eq!(
        node.get(&format!("/v1/vm-instances/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "destroy released everything"
    );
    let created = common::events(dir.path(), "resource.created").await;
    assert!(created.iter().any(|e| e["kind"] == "vm-instances"
        && e["uuid"] == id.as_str()
        && e["inventory"]["state"] == "Running"));
    let deleted = common::events(dir.path(), "resource.deleted").await;
    assert!(deleted
        .iter()
        .any(|e| e["kind"] == "vm-instances" && e["uuid"] == id.as_str()));
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_behind() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;

    // The hypervisor refuses to start the VM on every host.
    for h in &dc.hosts {
        let (status, _) = node
            .post(
                &format!("/v1/hosts/{h}/actions?wait=10"),
                json!({"action": "inject_failure", "operation": "start_vm", "fail": true}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, err) = node
        .post("/v1/vm-instances?wait=10", vm_body(&dc, "doomed"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["details"]["step"], "hypervisor.start");
    assert_eq!(err["error"]["details"]["flow"], "vm.create");
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "rollback left something behind"
    );
    let announced = common::events(dir.path(), "resource.created").await;
    assert!(
        !announced.iter().any(|e| e["kind"] == "vm-instances"),
        "a failed create is never announced"
    );

    // No host can take it: refused before anything is held.
    let big = uuid(
        &node
            .create(
                "instance-offerings",
                json!({"name": "big", "cpu_num": 64, "memory_size": 4 * GIB}),
            )
            .await,
    );
    let mut body = vm_body(&dc, "too-big");
    body["instance_offering_uuid"] = json!(big);
    let (status, err) = node.post("/v1/vm-instances?wait=10", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);

    // Bad input changes nothing either.
    for (field, value) in [
        ("instance_offering_uuid", json!("0".repeat(32))),
        ("image_uuid", json!("0".repeat(32))),
        ("l3_network_uuids", json!([])),
        ("l3_network_uuids", json!(["0".repeat(32)])),
        ("host_uuid", json!("0".repeat(32))),
    ] {
        let mut body = vm_body(&dc, "bad");
        body[field] = value;
        let (status, err) = node.post("/v1/vm-instances?wait=10", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {err}");
        assert_eq!(err["error"]["details"]["field"], field);
    }
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);

    // Once the failure is cleared, the same create works.
    for h in &dc.hosts {
        node.post(
            &format!("/v1/hosts/{h}/actions?wait=10"),
            json!({"action": "clear_failures"}),
        )
        .await;
    }
    node.create("vm-instances", vm_body(&dc, "fine")).await;
}

#[tokio::test]
async fn a_failed_stop_keeps_the_vm_running() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let mut body = vm_body(&dc, "vm");
    body["host_uuid"] = json!(dc.hosts[1]);
    let vm = node.create("vm-instances", body).await;
    assert_eq!(vm["host_uuid"], dc.hosts[1].as_str(), "placed where asked");
    let id = uuid(&vm);
    node.post(
        &format!("/v1/hosts/{}/actions?wait=10", dc.hosts[1]),
        json!({"action": "inject_failure", "operation": "stop_vm", "fail": true, "once": true}),
    )
    .await;
    let (status, err) = act(&node, &id, "stop").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(
        node.get(&format!("/v1/vm-instances/{id}")).await.1["inventory"]["state"],
        "Running"
    );
    let (status, _) = act(&node, &id, "stop").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn host_tags_steer_placement() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let tagged = &dc.hosts[1];
    let (status, tags) = node
        .post(
            &format!("/v1/hosts/{tagged}/actions?wait=10"),
            json!({"action": "add_tag", "tag": "ssd"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tags}");
    assert_eq!(tags["inventory"]["tags"], json!(["ssd"]));
    let (status, err) = node
        .post(
            &format!("/v1/hosts/{tagged}/actions?wait=10"),
            json!({"action": "add_tag", "tag": "no spaces"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    for i in 0..3 {
        let mut body = vm_body(&dc, &format!("fast-{i}"));
        body["host_tags"] = json!(["ssd"]);
        let vm = node.create("vm-instances", body).await;
        assert_eq!(
            vm["host_uuid"],
            tagged.as_str(),
            "only the tagged host qualifies"
        );
    }
    let before = snapshot(&node, dir.path(), &dc).await;
    let mut body = vm_body(&dc, "gpu");
    body["host_tags"] = json!(["ssd", "gpu"]);
    let (status, err) = node.post("/v1/vm-instances?wait=10", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(
        err["error"]["details"]["plugin"], "host-tags",
        "the filter that emptied the list is named"
    );
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);

    let (status, _) = node
        .post(
            &format!("/v1/hosts/{tagged}/actions?wait=10"),
            json!({"action": "remove_tag", "tag": "ssd"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = node
        .post(
            &format!("/v1/hosts/{tagged}/actions?wait=10"),
            json!({"action": "remove_tag", "tag": "ssd"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "already removed");
}

#[tokio::test]
async fn quotas_refuse_what_would_exceed_them_and_free_on_destroy() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    node.create("quotas", json!({"name": "alice", "account_uuid": "alice", "max_vm_num": 2, "max_cpu_num": 100, "max_memory_size": 100 * GIB}))
        .await;
    let (status, err) = node
        .post("/v1/quotas?wait=10", json!({"name": "again", "account_uuid": "alice", "max_vm_num": 1, "max_cpu_num": 1, "max_memory_size": GIB}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "one quota per owner: {err}");

    let mut alices = Vec::new();
    for i in 0..2 {
        let mut body = vm_body(&dc, &format!("a{i}"));
        body["account_uuid"] = json!("alice");
        alices.push(uuid(&node.create("vm-instances", body).await));
    }
    let before = snapshot(&node, dir.path(), &dc).await;
    let mut body = vm_body(&dc, "a2");
    body["account_uuid"] = json!("alice");
    let (status, err) = node.post("/v1/vm-instances?wait=10", body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"]["plugin"], "quota");
    assert_eq!(err["error"]["details"]["point"], "vm.create.reserve");
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "a refused create holds nothing"
    );

    // Others are not limited by alice's quota.
    node.create("vm-instances", vm_body(&dc, "admin-vm")).await;
    // Destroying one of alice's VMs frees her share.
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{}?wait=10", alices[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    node.create("vm-instances", body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_creates_at_once_never_over_commit_or_leak() {
    let dir = common::data_dir();
    let node = std::sync::Arc::new(Node::start(dir.path()));
    let dc = std::sync::Arc::new(data_centre(&node).await);
    // 2 hosts × (8 vCPUs, 16 GiB) and VMs of (2 vCPUs, 4 GiB): 8 fit; the L3 has 10 addresses.
    let mut calls = Vec::new();
    for i in 0..1000 {
        let (node, dc) = (node.clone(), dc.clone());
        calls.push(tokio::spawn(async move {
            node.post(
                "/v1/vm-instances?wait=120",
                vm_body(&dc, &format!("vm-{i}")),
            )
            .await
        }));
    }
    let mut accepted = Vec::new();
    for call in calls {
        let (status, reply) = call.await.unwrap();
        match status {
            StatusCode::CREATED => accepted.push(reply["inventory"].clone()),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    assert_eq!(accepted.len(), 8, "exactly what fits is accepted");
    let mut ips: Vec<&str> = accepted
        .iter()
        .map(|vm| vm["nics"][0]["ip"].as_str().unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "no address given twice");
    for host in &dc.hosts {
        let inv = node.get(&format!("/v1/hosts/{host}")).await.1["inventory"].clone();
        let placed = accepted
            .iter()
            .filter(|vm| vm["host_uuid"] == host.as_str())
            .count() as u64;
        assert_eq!(
            inv["available_cpu"].as_u64(),
            Some(8 - 2 * placed),
            "host {host}"
        );
        assert_eq!(
            inv["available_memory"].as_u64(),
            Some(16 * GIB - 4 * GIB * placed),
            "host {host}"
        );
        assert_eq!(
            simulated_vms(&node, host).await.as_array().unwrap().len() as u64,
            placed
        );
    }
    // The refused creates left nothing: only the accepted VMs hold rows and addresses.
    assert_eq!(rows(dir.path(), "vm_instances").await, 8);
    assert_eq!(rows(dir.path(), "vm_nics").await, 8);
    assert_eq!(rows(dir.path(), "ip_addresses").await, 8);
    assert_eq!(rows(dir.path(), "dhcp_leases").await, 8);
}

/// Polls the VM until it is in `state` (the VM plugin settles VMs after a host's status
/// changes, on each VM's queue), or fails after a few seconds.
async fn wait_for_state(node: &Node, vm: &str, state: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = node.get(&format!("/v1/vm-instances/{vm}")).await.1["inventory"]["state"].clone();
        if now == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "VM {vm} is still {now}, not {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn vms_of_a_lost_host_are_unknown_until_it_reconnects() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let host = &dc.hosts[0];
    let on_host = |name: &str| {
        let mut body = vm_body(&dc, name);
        body["host_uuid"] = json!(host);
        body
    };
    let running = uuid(&node.create("vm-instances", on_host("running")).await);
    let stopped = uuid(&node.create("vm-instances", on_host("stopped")).await);
    assert_eq!(act(&node, &stopped, "stop").await.0, StatusCode::OK);
    let elsewhere = {
        let mut body = vm_body(&dc, "elsewhere");
        body["host_uuid"] = json!(dc.hosts[1]);
        uuid(&node.create("vm-instances", body).await)
    };

    // The host cannot be reached: it is Disconnected, and what it was running is Unknown.
    let actions = format!("/v1/hosts/{host}/actions?wait=10");
    node.post(
        &actions,
        json!({"action": "inject_failure", "operation": "connect", "fail": true}),
    )
    .await;
    let (status, err) = node.post(&actions, json!({"action": "reconnect"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(
        node.get(&format!("/v1/hosts/{host}")).await.1["inventory"]["status"],
        "Disconnected"
    );
    wait_for_state(&node, &running, "Unknown").await;
    let state_of = |vm: String| {
        let node = &node;
        async move { node.get(&format!("/v1/vm-instances/{vm}")).await.1["inventory"]["state"].clone() }
    };
    assert_eq!(
        state_of(stopped.clone()).await,
        "Stopped",
        "not running: nothing unknown"
    );
    assert_eq!(
        state_of(elsewhere.clone()).await,
        "Running",
        "on another host"
    );

    // An Unknown VM may be running: it cannot be started or rebooted; it cannot be
    // stopped or destroyed while its host is lost either, and each refusal changes nothing.
    let before = tables(dir.path()).await;
    for action in ["start", "reboot"] {
        let (status, err) = act(&node, &running, action).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {err}");
        assert_eq!(err["error"]["details"]["state"], "Unknown", "{err}");
    }
    let (status, err) = act(&node, &running, "stop").await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect"),
        "{err}"
    );
    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{running}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(state_of(running.clone()).await, "Unknown");
    assert_eq!(tables(dir.path()).await, before);

    // Back: the host still runs the VM, so it is Running again.
    node.post(&actions, json!({"action": "clear_failures"}))
        .await;
    let (status, reply) = node.post(&actions, json!({"action": "reconnect"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    wait_for_state(&node, &running, "Running").await;
    assert_eq!(state_of(stopped.clone()).await, "Stopped");

    // Lost again, and the VM powers off on the host meanwhile (a guest shutdown, say):
    // once the host is back, the VM is Stopped, and starts as any stopped VM does.
    node.post(
        &actions,
        json!({"action": "inject_failure", "operation": "connect", "fail": true}),
    )
    .await;
    node.post(&actions, json!({"action": "reconnect"})).await;
    wait_for_state(&node, &running, "Unknown").await;
    let (status, reply) = node
        .post(
            &actions,
            json!({"action": "power_off_vm", "vm_uuid": running}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, err) = node
        .post(
            &actions,
            json!({"action": "power_off_vm", "vm_uuid": running}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no longer runs it: {err}");
    node.post(&actions, json!({"action": "clear_failures"}))
        .await;
    let (status, reply) = node.post(&actions, json!({"action": "reconnect"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    wait_for_state(&node, &running, "Stopped").await;
    let (status, started) = act(&node, &running, "start").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(simulated_vms(&node, host).await, json!([running.clone()]));
    assert_eq!(state_of(elsewhere).await, "Running");
}

/// The tables a refused operation must leave as they were, capacities included (not the
/// simulators' state: it is read through `clear_failures`, which would disarm the
/// injection under test).
async fn tables(dir: &std::path::Path) -> serde_json::Value {
    common::cloud::dump_tables(
        dir,
        &[
            "vm_instances",
            "vm_nics",
            "ip_addresses",
            "dhcp_leases",
            "volumes",
            "hosts",
        ],
    )
    .await
}

#[tokio::test]
async fn a_create_whose_rollback_fails_says_what_it_left() {
    let dir = common::data_dir();
    // Recovery runs every second, as it would every minute.
    let node = Node::start_custom(dir.path(), &[], &[("FLATSTACK_RECONCILE_INTERVAL", "1")]);
    let dc = data_centre(&node).await;
    let host = &dc.hosts[0];
    let mut body = vm_body(&dc, "doomed");
    body["host_uuid"] = json!(host);
    // A step after the start fails, and the host will not stop the VM again.
    let (status, reply) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.post-instantiate", "mode": "fail", "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    node.post(
        &format!("/v1/hosts/{host}/actions?wait=10"),
        json!({"action": "inject_failure", "operation": "stop_vm", "fail": true}),
    )
    .await;

    let (status, err) = node.post("/v1/vm-instances?wait=10", body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    let details = &err["error"]["details"];
    assert_eq!(details["step"], "vm.post-instantiate", "{err}");
    assert_eq!(details["rollback"], "incomplete", "{err}");
    assert_eq!(
        details["rollback_failed"],
        json!(["hypervisor.start"]),
        "{err}"
    );
    let failed = &details["undo_failed"];
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{err}");
    assert_eq!(failed[0]["step"], "hypervisor.start", "{err}");
    assert_eq!(failed[0]["code"], "unavailable", "{err}");
    assert!(
        failed[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stop_vm")),
        "{err}"
    );
    // What the error names is indeed left, and the VM's row with it, `Creating`, for
    // recovery to find (which cannot stop the VM either while the host refuses). Everything
    // else the other steps held was released.
    let vms = common::dump(dir.path(), "vm_instances").await;
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0]["state"], "Creating");
    assert_eq!(rows(dir.path(), "ip_addresses").await, 0);
    assert_eq!(
        simulated_vms(&node, host).await.as_array().map(Vec::len),
        Some(1)
    );
    // The host stops VMs again (reading it cleared its injections): recovery undoes the
    // create for good.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while rows(dir.path(), "vm_instances").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM was never removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(simulated_vms(&node, host).await, json!([]));

    // A rollback that completes adds nothing to the error.
    node.post(
        "/v1/fault-injections?wait=10",
        json!({"point": "vm.post-instantiate", "mode": "fail", "once": true}),
    )
    .await;
    let mut body = vm_body(&dc, "doomed-too");
    body["host_uuid"] = json!(host);
    let (status, err) = node.post("/v1/vm-instances?wait=10", body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert_eq!(err["error"]["details"]["step"], "vm.post-instantiate");
    assert!(err["error"]["details"].get("rollback").is_none(), "{err}");
}

/// The VM plugin adds `vm-nics` to L2 networks (a kind it does not own): each NIC on the
/// network with its VM, the VM's state and host, and the network's type — what its typed
/// record tells other plugins.
#[tokio::test]
async fn an_l2_network_lists_the_vm_nics_on_it() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let (_, l3) = node.get(&format!("/v1/l3-networks/{}", dc.l3)).await;
    let l2 = l3["inventory"]["l2_network_uuid"]
        .as_str()
        .expect("the L3 network's L2 network")
        .to_owned();
    let nics_on = |l2: String| {
        let node = &node;
        async move { node.get(&format!("/v1/l2-networks/{l2}/vm-nics")).await }
    };
    let (status, empty) = nics_on(l2.clone()).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["total"], 0, "{empty}");

    let vm = node.create("vm-instances", vm_body(&dc, "v")).await;
    let (_, list) = nics_on(l2.clone()).await;
    assert_eq!(list["total"], 1, "{list}");
    let nic = &list["inventories"][0];
    assert_eq!(nic["vm_instance_uuid"], vm["uuid"], "{list}");
    assert_eq!(nic["vm_state"], "Running", "{list}");
    assert_eq!(nic["host_uuid"], vm["host_uuid"], "{list}");
    assert_eq!(nic["l3_network_uuid"], json!(dc.l3), "{list}");
    assert_eq!(nic["l2_network_uuid"], json!(l2), "{list}");
    assert_eq!(nic["l2_type"], "L2NoVlanNetwork", "{list}");
    assert_eq!(nic["ip"], vm["nics"][0]["ip"], "{list}");

    // A network that does not exist is a 404, not an empty list.
    let (status, _) = nics_on("0".repeat(32)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The OpenAPI document has the child collection.
    let (_, doc) = node.get("/v1/openapi.json").await;
    assert!(
        doc["paths"]["/v1/l2-networks/{uuid}/vm-nics"].is_object(),
        "not in the document"
    );

    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{}?wait=10", uuid(&vm)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(nics_on(l2).await.1["total"], 0);
}

#[tokio::test]
async fn a_show_answers_at_once_while_an_operation_on_the_vm_runs() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let vm = node.create("vm-instances", vm_body(&dc, "slow")).await;
    let (vm, host) = (
        uuid(&vm),
        vm["host_uuid"].as_str().expect("placed").to_owned(),
    );
    assert_eq!(act(&node, &vm, "stop").await.0, StatusCode::OK);
    // The host takes 3 s to start it: the start holds the VM's queue that long.
    let (status, _) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=10"),
            json!({"action": "inject_failure", "operation": "start_vm", "delay_ms": 3000,
                "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, started) = node
        .post(
            &format!("/v1/vm-instances/{vm}/actions"),
            json!({"action": "start"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A read does not wait behind it (a bound far from the start's 3 s, not a benchmark).
    let asked = std::time::Instant::now();
    let (status, shown) = node.get(&format!("/v1/vm-instances/{vm}")).await;
    let took = asked.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["inventory"]["state"], "Starting", "{shown}");
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    let job = started["location"].as_str().expect("location");
    let (_, done) = node.get(&format!("{job}?wait=10")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, shown) = node.get(&format!("/v1/vm-instances/{vm}")).await;
        if shown["inventory"]["state"] == "Running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{done} {shown}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A metric's value in `/metrics` text: the sample named `name` whose labels include
/// each of `labels` (`key="value"`).
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn the_metrics_count_each_ranges_addresses_as_vms_take_and_give_them_back() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let range = format!(r#"l3_network="{}""#, dc.l3);
    let scrape = || async {
        let (status, text) = node
            .send_as(Some(&node.token), reqwest::Method::GET, "/metrics", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        text.as_str().expect("the metrics' text").to_owned()
    };
    let text = scrape().await;
    assert_eq!(
        metric(&text, "flatstack_ip_range_addresses", &[range.as_str()]),
        Some(10.0),
        "192.168.0.10 to .19: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "flatstack_ip_range_addresses_used",
            &[range.as_str()]
        ),
        Some(0.0)
    );
    let vms: Vec<String> = futures::future::join_all(
        (0..3).map(|i| node.create("vm-instances", vm_body(&dc, &format!("vm-{i}")))),
    )
    .await
    .iter()
    .map(uuid)
    .collect();
    let text = scrape().await;
    assert_eq!(
        metric(
            &text,
            "flatstack_ip_range_addresses_used",
            &[range.as_str()]
        ),
        Some(3.0),
        "{text}"
    );
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{}?wait=10", vms[0]),
            None,
        )
        .await;
    assert!(status.is_success());
    assert_eq!(
        metric(
            &scrape().await,
            "flatstack_ip_range_addresses_used",
            &[range.as_str()]
        ),
        Some(2.0)
    );
}
