//! The management node's infrastructure resources over HTTP.

mod common;

use common::{data_centre, events, rows, uuid, with, Node};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn zones_create_list_show_update_delete() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zone = node
        .create("zones", json!({"name": "zone-1", "description": "first"}))
        .await;
    let id = uuid(&zone);
    assert_eq!(id.len(), 32);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(zone["name"], "zone-1");
    assert!(zone["created_at"].is_string() && zone["updated_at"].is_string());

    let (status, list) = node.get("/v1/zones").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["inventories"][0]["uuid"], id.as_str());
    let (_, filtered) = node.get("/v1/zones?name=other").await;
    assert_eq!(filtered["total"], 0);

    let (status, shown) = node.get(&format!("/v1/zones/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["inventory"]["description"], "first");

    let (status, patched) = node
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/zones/{id}?wait=10"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["inventory"]["name"], "renamed");
    assert_eq!(patched["inventory"]["description"], "first");

    let (status, _) = node
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/zones/{id}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = node.get(&format!("/v1/zones/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    assert_eq!(rows(dir.path(), "zones").await, 0);
}

#[tokio::test]
async fn jobs_run_asynchronously_without_wait() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (status, accepted) = node.post("/v1/zones", json!({"name": "z"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = accepted["location"].as_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", accepted["job_uuid"].as_str().unwrap())
    );
    let mut job = Value::Null;
    for _ in 0..100 {
        job = node.get(&location).await.1;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"], 100);
    assert_eq!(job["result"]["name"], "z");

    // A failed job holds the error.
    let (_, accepted) = node.post("/v1/zones", json!({"name": ""})).await;
    let location = accepted["location"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        job = node.get(&location).await.1;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"]["code"], "invalid_argument");
    assert_eq!(job["status"], 400);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, _host) = data_centre(&node).await;
    let before = [
        rows(dir.path(), "zones").await,
        rows(dir.path(), "clusters").await,
        rows(dir.path(), "hosts").await,
        rows(dir.path(), "simulator_hosts").await,
        rows(dir.path(), "event_outbox").await,
    ];

    let valid = json!({"type": "Simulator", "name": "h2", "cluster_uuid": cluster, "management_ip": "10.0.0.2",
        "cpu_capacity": 8, "memory_capacity": 1073741824u64});
    let host = |over: Value| with(valid.clone(), over);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        ("zones", json!({}), StatusCode::BAD_REQUEST, "name"),
        ("zones", json!({"name": 5}), StatusCode::BAD_REQUEST, "name"),
        (
            "zones",
            json!({"name": "  "}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            "zones",
            json!({"name": "z", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "clusters",
            json!({"name": "c", "zone_uuid": "0".repeat(32), "hypervisor_type": "Simulator"}),
            StatusCode::BAD_REQUEST,
            "zone_uuid",
        ),
        (
            "clusters",
            json!({"name": "c", "zone_uuid": zone, "hypervisor_type": "Xen"}),
            StatusCode::BAD_REQUEST,
            "hypervisor_type",
        ),
        (
            "clusters",
            json!({"name": "c", "zone_uuid": zone}),
            StatusCode::BAD_REQUEST,
            "hypervisor_type",
        ),
        (
            "hosts",
            host(json!({"type": "KVM"})),
            StatusCode::BAD_REQUEST,
            "type",
        ),
        (
            "hosts",
            host(json!({"management_ip": "not-an-ip"})),
            StatusCode::BAD_REQUEST,
            "management_ip",
        ),
        (
            "hosts",
            host(json!({"management_ip": "10.0.0.1"})),
            StatusCode::CONFLICT,
            "management_ip",
        ),
        (
            "hosts",
            host(json!({"cpu_capacity": 0})),
            StatusCode::BAD_REQUEST,
            "cpu_capacity",
        ),
        (
            "hosts",
            host(json!({"cpu_capacity": "many"})),
            StatusCode::BAD_REQUEST,
            "cpu_capacity",
        ),
        (
            "hosts",
            host(json!({"memory_capacity": null})),
            StatusCode::BAD_REQUEST,
            "memory_capacity",
        ),
        (
            "hosts",
            host(json!({"cluster_uuid": "f".repeat(32)})),
            StatusCode::BAD_REQUEST,
            "cluster_uuid",
        ),
        (
            "hosts",
            host(json!({"latency_ms": -1})),
            StatusCode::BAD_REQUEST,
            "latency_ms",
        ),
        (
            "hosts",
            host(json!({"bogus": 1})),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
    ];
    for (kind, body, expected, field) in cases {
        let (status, err) = node
            .post(&format!("/v1/{kind}?wait=10"), body.clone())
            .await;
        assert_eq!(status, expected, "{kind} {body}: {err}");
        assert_eq!(
            err["error"]["details"]["field"], field,
            "{kind} {body}: {err}"
        );
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    // Malformed bodies, unknown kinds and actions.
    let resp = node
        .http
        .post(format!("{}/v1/zones?wait=5", node.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        node.post("/v1/zones?wait=5", json!([1, 2])).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        node.post("/v1/spaceships?wait=5", json!({"name": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, err) = node
        .post(
            &format!("/v1/zones/{zone}/actions?wait=5"),
            json!({"action": "explode"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["details"]["field"], "action");

    let after = [
        rows(dir.path(), "zones").await,
        rows(dir.path(), "clusters").await,
        rows(dir.path(), "hosts").await,
        rows(dir.path(), "simulator_hosts").await,
        rows(dir.path(), "event_outbox").await,
    ];
    assert_eq!(before, after, "invalid input changed the database");
}

#[tokio::test]
async fn deleting_a_parent_with_children_is_a_conflict() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, host) = data_centre(&node).await;
    for (kind, id) in [("zones", &zone), ("clusters", &cluster)] {
        let (status, err) = node
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/{kind}/{id}?wait=10"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(err["error"]["code"], "conflict");
    }
    assert_eq!(
        (
            rows(dir.path(), "zones").await,
            rows(dir.path(), "clusters").await
        ),
        (1, 1)
    );
    // Children first, then the parents; the driver's record goes with its host.
    for (kind, id) in [("hosts", &host), ("clusters", &cluster), ("zones", &zone)] {
        let (status, err) = node
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/{kind}/{id}?wait=10"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {err}");
    }
    for table in ["zones", "clusters", "hosts", "simulator_hosts"] {
        assert_eq!(rows(dir.path(), table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn simulator_hosts_connect_and_failures_can_be_injected() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (_, _, host) = data_centre(&node).await;
    let (_, shown) = node.get(&format!("/v1/hosts/{host}")).await;
    let inv = &shown["inventory"];
    assert_eq!(inv["status"], "Connected");
    assert_eq!(inv["type"], "Simulator");
    assert_eq!(inv["latency_ms"], 0, "the driver's own record is joined in");
    assert_eq!(inv["available_cpu"], 64);

    let (status, patched) = node
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/hosts/{host}?wait=10"),
            Some(json!({"name": "h1-renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["inventory"]["name"], "h1-renamed");
    assert_eq!(
        patched["inventory"]["latency_ms"], 0,
        "an update answers the joined inventory too"
    );

    let actions = format!("/v1/hosts/{host}/actions?wait=10");
    let (status, reply) = node
        .post(
            &actions,
            json!({"action": "inject_failure", "operation": "connect", "fail": true, "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, err) = node.post(&actions, json!({"action": "reconnect"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["details"]["operation"], "connect");
    assert_eq!(
        node.get(&format!("/v1/hosts/{host}")).await.1["inventory"]["status"],
        "Disconnected"
    );
    let changes = events(dir.path(), "resource.state-changed").await;
    let last = changes.last().expect("a state change was recorded");
    assert_eq!(
        (&last["uuid"], &last["field"], &last["from"], &last["to"]),
        (
            &json!(host),
            &json!("status"),
            &json!("Connected"),
            &json!("Disconnected")
        )
    );
    // `once`: the next reconnect works.
    let (status, reply) = node.post(&actions, json!({"action": "reconnect"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["inventory"]["status"], "Connected");

    // A slow operation outlasts ?wait= and is answered 202; its job finishes later.
    node.post(
        &actions,
        json!({"action": "inject_failure", "operation": "connect", "delay_ms": 600}),
    )
    .await;
    let (status, accepted) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=0.05"),
            json!({"action": "reconnect"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (_, job) = node.get(accepted["location"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, _) = node
        .post(&actions, json!({"action": "clear_failures"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = node
        .post(
            &actions,
            json!({"action": "inject_failure", "operation": "teleport", "fail": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let dir = common::data_dir();
    let (zone, cluster, host) = {
        let node = Node::start(dir.path());
        data_centre(&node).await
        // The node is killed here, not shut down: committed data must survive that.
    };
    let node = Node::start(dir.path());
    assert_eq!(node.count("zones").await, 1);
    assert_eq!(
        node.get(&format!("/v1/zones/{zone}")).await.1["inventory"]["name"],
        "zone-1"
    );
    assert_eq!(
        node.get(&format!("/v1/clusters/{cluster}")).await.1["inventory"]["zone_uuid"],
        zone.as_str()
    );
    assert_eq!(
        node.get(&format!("/v1/hosts/{host}")).await.1["inventory"]["status"],
        "Connected"
    );
    // Migrations are not applied twice, and the node goes on working.
    node.create("zones", json!({"name": "zone-2"})).await;
    assert_eq!(node.count("zones").await, 2);
}

#[tokio::test]
async fn introspection_and_documents() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (_, plugins) = node.get("/v1/plugins").await;
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let at = |n: &str| {
        names
            .iter()
            .position(|p| *p == n)
            .unwrap_or_else(|| panic!("{n} not loaded: {names:?}"))
    };
    // Start order follows requirements: a plugin starts after those it requires.
    assert!(
        at("zone") < at("cluster")
            && at("cluster") < at("host")
            && at("host") < at("host-simulator")
            && at("l2-network") < at("l2-vlan")
            && at("l2-network") < at("l3-network"),
        "{names:?}"
    );
    let (_, points) = node.get("/v1/extension-points").await;
    let connect = points["extension_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "host.connect")
        .unwrap();
    assert_eq!(connect["owner"], "host");
    let owned_by_resource: Vec<&str> = points["extension_points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["owner"] == "resource")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for point in [
        "resource.create",
        "resource.delete.pre-check",
        "resource.attached",
        "resource.state-changed",
    ] {
        assert!(
            owned_by_resource.contains(&point),
            "{point} in {owned_by_resource:?}"
        );
    }
    assert_eq!(connect["semantics"], "do_undo");
    let (status, types) = node.get("/v1/hosts/types").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(types["types"][0]["name"], "Simulator");
    assert_eq!(node.get("/v1/zones/types").await.0, StatusCode::NOT_FOUND);
    let (_, schemas) = node.get("/v1/schemas").await;
    assert_eq!(
        schemas["messages"]["zone.create"]["schema"]["properties"]["name"]["type"],
        "string"
    );
    assert_eq!(schemas["messages"]["resource.created"]["kind"], "event");
    let (_, doc) = node.get("/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/hosts/{uuid}/actions"]["post"].is_object());
    let create_ref = &doc["paths"]["/v1/clusters"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(create_ref, "#/components/schemas/cluster.create");
}

/// A client generated from the OpenAPI document alone can do everything (clients/python
/// does, in CI): every kind's inventory is typed, a typed kind's create is a `oneOf` by
/// `type` with each type's own fields, every action's body a `oneOf` by `action` whose
/// variants take `action`, and the job is documented.
#[tokio::test]
async fn the_openapi_document_is_enough_to_be_a_client() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (_, doc) = node.get("/v1/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let named = |reference: &Value| {
        let name = reference["$ref"].as_str().unwrap_or_default();
        schemas[name.trim_start_matches("#/components/schemas/")].clone()
    };
    let body = |op: &Value| op["requestBody"]["content"]["application/json"]["schema"].clone();
    let answer = |op: &Value, status: &str| {
        op["responses"][status]["content"]["application/json"]["schema"].clone()
    };
    for kind in [
        "zones",
        "clusters",
        "hosts",
        "primary-storage",
        "backup-storage",
        "images",
        "instance-offerings",
        "l2-networks",
        "l3-networks",
        "ip-ranges",
        "vm-instances",
        "volumes",
        "quotas",
        "fault-injections",
    ] {
        let list = answer(&doc["paths"][format!("/v1/{kind}")]["get"], "200");
        let inventory = &list["properties"]["inventories"]["items"];
        assert_ne!(
            inventory["$ref"], "#/components/schemas/Inventory",
            "{kind}"
        );
        assert!(named(inventory).is_object(), "{kind}: {inventory}");
        let show = answer(&doc["paths"][format!("/v1/{kind}/{{uuid}}")]["get"], "200");
        assert_eq!(&show["properties"]["inventory"], inventory, "{kind}");
    }
    // Typed kinds: one variant per type, with the type's own fields.
    let create = body(&doc["paths"]["/v1/l2-networks"]["post"]);
    assert_eq!(create["discriminator"]["propertyName"], "type", "{create}");
    let vlan = named(&json!({"$ref": create["discriminator"]["mapping"]["L2VlanNetwork"]}));
    assert_eq!(vlan["properties"]["vlan"]["maximum"], 4094, "{vlan}");
    assert!(vlan["required"]
        .as_array()
        .unwrap()
        .contains(&json!("vlan")));
    assert_eq!(vlan["additionalProperties"], false);
    let inventory = &schemas["L2NetworkInventory.L2VlanNetwork"];
    assert_eq!(inventory["properties"]["type"]["const"], "L2VlanNetwork");
    assert!(inventory["properties"]["vlan"].is_object(), "{inventory}");
    assert_eq!(
        schemas["HostInventory"]["discriminator"]["propertyName"],
        "type"
    );
    // States and statuses are enums.
    assert_eq!(
        schemas["VmInventory"]["properties"]["state"]["$ref"],
        "#/components/schemas/VmState"
    );
    assert!(schemas["VmState"].to_string().contains("\"Destroying\""));
    // Plain `enum`s, which client generators read best.
    assert_eq!(
        schemas["HostStatus"]["enum"],
        json!(["Connecting", "Connected", "Disconnected"])
    );
    assert_eq!(
        schemas["ImageFormat"]["enum"],
        json!(["qcow2", "raw", "iso", "vmdk"])
    );
    // Every action's body names its action and takes it.
    let mut actions = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.ends_with("/actions") {
            continue;
        }
        let body = body(&item["post"]);
        assert_eq!(body["discriminator"]["propertyName"], "action", "{path}");
        for (name, reference) in body["discriminator"]["mapping"].as_object().unwrap() {
            let variant = named(&json!({"$ref": reference}));
            assert_eq!(variant["properties"]["action"]["const"], *name, "{path}");
            assert!(variant["required"]
                .as_array()
                .unwrap()
                .contains(&json!("action")));
            actions += 1;
        }
    }
    assert!(actions >= 10, "{actions} actions");
    let vm_actions = body(&doc["paths"]["/v1/vm-instances/{uuid}/actions"]["post"]);
    let names: Vec<&String> = vm_actions["discriminator"]["mapping"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names, ["reboot", "start", "stop"]);
    // The job.
    let job = answer(&doc["paths"]["/v1/jobs/{uuid}"]["get"], "200");
    assert_eq!(
        named(&job)["properties"]["state"]["enum"],
        json!(["running", "succeeded", "failed"])
    );
}

/// A write a UNIQUE column refuses is a `409` naming the field and the value, on either
/// backend: never the constraint's name, the statement or a file path.
#[tokio::test]
async fn a_refused_unique_key_is_a_conflict_about_the_data() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    // The quota plugin does not look first: only the UNIQUE (account) column refuses this.
    let quota = json!({"name": "q", "account_uuid": "alice", "max_vm_num": 1, "max_cpu_num": 1,
                       "max_memory_size": 1 << 30});
    node.create("quotas", quota.clone()).await;
    let (status, err) = node.post("/v1/quotas?wait=10", quota).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "conflict", "{err}");
    assert_eq!(err["error"]["details"]["field"], "account_uuid", "{err}");
    assert_eq!(err["error"]["details"]["value"], "alice", "{err}");
    let text = err.to_string();
    for leak in [
        "constraint",
        "_key",
        "INSERT",
        "UNIQUE",
        "flatstack.db",
        "$1",
    ] {
        assert!(!text.contains(leak), "`{leak}` in {err}");
    }
    assert_eq!(node.count("quotas").await, 1);

    // Hosts with one management IP, created at once: the host plugin looks first, then
    // writes in another transaction, so the key decides a race; either way one is made
    // and the others are conflicts about `management_ip`.
    let (_, cluster, _) = data_centre(&node).await;
    let node = std::sync::Arc::new(node);
    let creates: Vec<_> = (0..6)
        .map(|i| {
            let node = node.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                node.post(
                    "/v1/hosts?wait=10",
                    json!({"type": "Simulator", "name": format!("twin-{i}"), "cluster_uuid": cluster,
                           "management_ip": "10.9.9.9", "cpu_capacity": 1, "memory_capacity": 1 << 30}),
                )
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
                assert_eq!(
                    reply["error"]["details"]["field"], "management_ip",
                    "{reply}"
                );
                assert!(!reply.to_string().contains("constraint"), "{reply}");
            }
            other => panic!("{other}: {reply}"),
        }
    }
    assert_eq!(made, 1);
}

/// Secure by default: a node runs no fault injection unless the operator names the
/// opt-in plugin (`serve --enable fault-injection`, `FLATSTACK_ENABLE`, or the manifest's
/// `enabled`); nobody can then arm a failure through the API.
#[tokio::test]
async fn fault_injection_is_off_unless_enabled() {
    let dir = common::data_dir();
    // The test harness enables it for every other test; this one names another plugin.
    let node = Node::start_custom(dir.path(), &[], &[("FLATSTACK_ENABLE", "host-tags")]);
    let (status, _) = node.get("/v1/fault-injections").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.pre-instantiate", "mode": "fail"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, plugins) = node.get("/v1/plugins").await;
    let names: Vec<&str> = plugins
        .as_array()
        .into_iter()
        .flatten()
        .chain(plugins["plugins"].as_array().into_iter().flatten())
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"vm"), "{plugins}");
    assert!(!names.contains(&"fault-injection"), "{plugins}");
    drop(node);

    let enabled = Node::start_custom(dir.path(), &[], &[("FLATSTACK_ENABLE", "fault-injection")]);
    let (status, list) = enabled.get("/v1/fault-injections").await;
    assert_eq!(status, StatusCode::OK, "{list}");
}

/// What a probe and an operator ask first: alive, ready (the store answers), and what is
/// running.
#[tokio::test]
async fn health_readiness_and_version_answer() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (status, alive) = node.get("/healthz").await;
    assert_eq!(
        (status, &alive["status"]),
        (StatusCode::OK, &json!("alive"))
    );
    let (status, ready) = node.get("/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (StatusCode::OK, &json!("ready"))
    );
    let (status, version) = node.get("/v1/version").await;
    assert_eq!(status, StatusCode::OK, "{version}");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"), "{version}");
    let commit = version["commit"].as_str().expect("a commit");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
    let plugins: Vec<&str> = version["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        plugins.contains(&"vm") && plugins.contains(&"zone"),
        "{version}"
    );
}

/// A body not declared JSON is refused before anything reads it: a page on any origin can
/// POST `text/plain` or a form without a preflight, and must not act on the cloud.
#[tokio::test]
async fn a_body_not_sent_as_json_is_refused_and_changes_nothing() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zones = || node.http.get(format!("{}/v1/zones", node.base)).send();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = node
            .http
            .post(format!("{}/v1/zones?wait=10", node.base))
            .body(r#"{"name": "from-a-web-page"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let body: Value = response.json().await.expect("the JSON error shape");
        assert_eq!(body["error"]["details"]["field"], "content-type", "{body}");
    }
    let listed: Value = zones().await.expect("list").json().await.expect("JSON");
    assert_eq!(listed["total"], 0, "{listed}");
    // JSON, with a charset parameter, is served.
    let response = node
        .http
        .post(format!("{}/v1/zones?wait=10", node.base))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"name": "zone-1"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Against DNS rebinding: a request naming a `Host` the node was not told about (a page's
/// own domain, resolved to the node's address) is refused before anything reads it; IP
/// addresses, `localhost` and the names given with `--allowed-host` are served.
#[tokio::test]
async fn a_foreign_host_is_refused_and_allowed_names_are_served() {
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &["--allowed-host".as_ref(), "flatstack.test".as_ref()],
        &[],
    );
    let post_as = |host: &'static str| {
        node.http
            .post(format!("{}/v1/zones?wait=10", node.base))
            .header("host", host)
            .json(&json!({"name": host}))
            .send()
    };
    let refused = post_as("evil.example.net").await.expect("request");
    assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = refused.json().await.expect("the JSON error shape");
    assert_eq!(body["error"]["details"]["field"], "host", "{body}");
    for host in ["flatstack.test:80", "localhost", "127.0.0.1"] {
        let served = post_as(host).await.expect("request");
        assert_eq!(served.status(), StatusCode::CREATED, "{host}");
    }
    let (_, zones) = node.get("/v1/zones").await;
    assert_eq!(zones["total"], 3, "{zones}");
}
