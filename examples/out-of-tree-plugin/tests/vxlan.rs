//! The out-of-tree distribution over HTTP: this crate's binary started as an operator
//! starts it (`flatstack::testing`), on a temporary SQLite database.

use flatstack::testing::{Demo, TestNode};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flatstack-vxlan");

type Result = std::result::Result<(), flatstack::Error>;

/// A VXLAN network with VNI `vni` attached to the demo's cluster, an L3 network on it
/// with a range; the L2 and L3 uuids.
async fn vxlan_network(node: &TestNode, demo: &Demo, vni: u32) -> (String, String) {
    let l2 = node
        .create(
            "l2-networks",
            json!({"type": "L2VxlanNetwork", "name": format!("vxlan-{vni}"),
                "zone_uuid": demo.zone, "physical_interface": "eth1", "vni": vni}),
        )
        .await
        .expect("VXLAN network created");
    let l2 = uuid(&l2);
    let (status, body) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=30"),
            json!({"action": "attach_cluster", "cluster_uuid": demo.cluster}),
        )
        .await
        .expect("attach");
    assert_eq!(status, 200, "{body}");
    let l3 = node
        .create(
            "l3-networks",
            json!({"name": format!("overlay-{vni}"), "l2_network_uuid": l2}),
        )
        .await
        .expect("L3 network created");
    let l3 = uuid(&l3);
    let (status, body) = node
        .post(
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=30"),
            json!({"name": "r", "start_ip": "10.10.0.10", "end_ip": "10.10.0.200",
                "netmask": "255.255.255.0", "gateway": "10.10.0.1"}),
        )
        .await
        .expect("range");
    assert_eq!(status, 201, "{body}");
    (l2, l3)
}

fn uuid(inventory: &Value) -> String {
    inventory["uuid"].as_str().expect("a uuid").to_owned()
}

fn vm_body(demo: &Demo, l3: &str, name: &str) -> Value {
    json!({"name": name, "instance_offering_uuid": demo.instance_offering,
        "image_uuid": demo.image, "l3_network_uuids": [l3]})
}

async fn tunnels(node: &TestNode, l2: &str) -> Vec<Value> {
    let (status, list) = node
        .get(&format!("/v1/l2-networks/{l2}/vxlan-tunnels"))
        .await
        .expect("tunnels");
    assert_eq!(status, 200, "{list}");
    list["inventories"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_runs_beside_every_in_tree_one_and_the_demo() -> Result {
    let node = TestNode::start(BIN, &["--demo"])?;
    // `--demo` builds its data centre with the plugin loaded.
    node.demo(Duration::from_secs(60)).await?;
    let (_, plugins) = node.get("/v1/plugins").await?;
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["vxlan", "vm", "l2-network", "dhcp", "fault-injection"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let (_, types) = node.get("/v1/l2-networks/types").await?;
    let types = types.to_string();
    assert!(types.contains("L2VxlanNetwork") && types.contains("L2VlanNetwork"));
    // The child collection is in the node's OpenAPI document: listed, not created.
    let (_, doc) = node.get("/v1/openapi.json").await?;
    let child = &doc["paths"]["/v1/l2-networks/{uuid}/vxlan-tunnels"];
    assert!(child["get"].is_object(), "{child}");
    assert!(child["post"].is_null(), "{child}");
    let rows = &child["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        rows["properties"]["inventories"]["items"]["$ref"], "#/components/schemas/TunnelInventory",
        "{rows}"
    );
    // Its own field is in the create's variant for its type: a client sends `vni`.
    let create = &doc["components"]["schemas"]["l2.create.L2VxlanNetwork"];
    assert_eq!(create["properties"]["vni"]["type"], "integer", "{create}");
    assert!(create["required"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("vni"))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vxlan_network_keeps_a_tunnel_per_vm_nic_and_is_kept_while_they_exist() -> Result {
    // The plugin's configuration key, set in the manifest as any other.
    let node =
        TestNode::start_with_manifest(BIN, "[config]\nvxlan.udp_port = 8472\n", &["--demo"])?;
    let demo = node.demo(Duration::from_secs(60)).await?;

    // Its own fields, validated by the driver.
    for (body, field) in [
        (json!({"vni": 0}), "vni"),
        (json!({"vni": "x"}), "vni"),
        (json!({}), "vni"),
        (json!({"vni": 7, "vlan": 3}), "vlan"),
    ] {
        let mut create = json!({"type": "L2VxlanNetwork", "name": "bad", "zone_uuid": demo.zone,
            "physical_interface": "eth1"});
        for (k, v) in body.as_object().into_iter().flatten() {
            create[k] = v.clone();
        }
        let (status, error) = node.post("/v1/l2-networks?wait=30", create).await?;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }
    let (l2, l3) = vxlan_network(&node, &demo, 5001).await;
    let (_, shown) = node.get(&format!("/v1/l2-networks/{l2}")).await?;
    assert_eq!(shown["inventory"]["vni"], 5001, "{shown}");
    assert!(tunnels(&node, &l2).await.is_empty());

    // A VM on it: a tunnel for its NIC, on its host, with the configured port.
    let vm = node
        .create("vm-instances", vm_body(&demo, &l3, "vm1"))
        .await?;
    let vm = uuid(&vm);
    let found = tunnels(&node, &l2).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["vm_instance_uuid"], vm.as_str());
    assert_eq!(found[0]["vni"], 5001);
    assert_eq!(found[0]["udp_port"], 8472);

    // The veto, which reads the tunnels: the network stays while the VM's tunnel is on it.
    let (status, refused) = node
        .delete(&format!("/v1/l2-networks/{l2}?wait=30"))
        .await?;
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("VXLAN"), "{refused}");
    assert!(refused.to_string().contains(&vm), "{refused}");

    // The child collection: 404 for a network that does not exist; listed, not created.
    let (status, _) = node
        .get("/v1/l2-networks/no-such-network/vxlan-tunnels")
        .await?;
    assert_eq!(status, 404);
    let (status, _) = node
        .post(&format!("/v1/l2-networks/{l2}/vxlan-tunnels"), json!({}))
        .await?;
    assert_eq!(status, 405);

    // A create that fails after `vm.pre-instantiate` undoes its tunnel.
    let (status, armed) = node
        .post(
            "/v1/fault-injections?wait=30",
            json!({"point": "vm.post-instantiate", "mode": "fail", "once": true}),
        )
        .await?;
    assert_eq!(status, 201, "{armed}");
    let (status, failed) = node
        .post(
            "/v1/vm-instances?wait=30",
            vm_body(&demo, &l3, "vm-that-fails"),
        )
        .await?;
    assert!(status >= 400, "{status} {failed}");
    let found = tunnels(&node, &l2).await;
    assert_eq!(found.len(), 1, "only vm1's: {found:?}");

    // Destroying the VM removes its tunnel; then the network may go.
    let (status, body) = node
        .delete(&format!("/v1/vm-instances/{vm}?wait=30"))
        .await?;
    assert_eq!(status, 204, "{body}");
    assert!(tunnels(&node, &l2).await.is_empty());
    // The veto lets it go; what still refuses is the store (its L3 network is on it).
    let (status, refused) = node
        .delete(&format!("/v1/l2-networks/{l2}?wait=30"))
        .await?;
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("VXLAN") && message.contains(&l3),
        "{refused}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_switches_the_plugin_off_by_its_name() -> Result {
    let node = TestNode::start_with_manifest(BIN, "disabled = [\"vxlan\"]\n", &[])?;
    let (_, types) = node.get("/v1/l2-networks/types").await?;
    assert!(!types.to_string().contains("L2VxlanNetwork"), "{types}");
    let (_, doc) = node.get("/v1/openapi.json").await?;
    assert!(doc["paths"]["/v1/l2-networks/{uuid}/vxlan-tunnels"].is_null());
    Ok(())
}

#[test]
fn openapi_and_inspect_include_the_plugin() {
    let out = Command::new(BIN)
        .arg("openapi")
        .output()
        .expect("openapi runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    let child = &doc["paths"]["/v1/l2-networks/{uuid}/vxlan-tunnels"];
    assert_eq!(
        child["get"]["operationId"],
        "l2-networks.vxlan-tunnels.list"
    );

    let out = Command::new(BIN)
        .args(["inspect", "--json"])
        .output()
        .expect("inspect runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let config = report["config"].to_string();
    assert!(config.contains("vxlan.udp_port"), "{config}");
    assert!(report["plugins"].to_string().contains("\"vxlan\""));
}

#[test]
fn the_benchmark_runs_with_the_plugin_in_every_create() {
    // Its migrations applied, its `vm.pre-instantiate` called for each VM (on a flat
    // network: nothing to record).
    let out = Command::new(BIN)
        .args([
            "bench",
            "create-vms",
            "--count",
            "10",
            "--concurrency",
            "2",
            "--hosts",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let succeeded = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("succeeded:"));
    assert_eq!(succeeded.map(str::trim), Some("succeeded: 10"), "{stdout}");
}
