//! The Openvswitch type over HTTP, on the node as an operator runs it: this test binary is
//! also the node — started with `serve ...` it runs `flatstack::Distribution::default()`
//! (every in-tree plugin, this one included) — so `flatstack::testing::TestNode` starts it
//! as an out-of-tree plugin's tests start their own binary. Without that first argument it
//! runs the tests below (a small runner: `harness = false`; a name given filters them).
//!
//! With `FLATSTACK_TEST_DATABASE_URL` set (a PostgreSQL server's database to connect to
//! while creating others), each node runs on a fresh PostgreSQL database of its own.

mod common;

use common::{
    agent_ends, attach, create_vm, destroy_vm, error, host_report, hosts_of, l3_on, mesh,
    ovs_network, set_daemons, start, Node, Proc,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

type Result = std::result::Result<(), common::Error>;

fn main() -> ExitCode {
    // ANCHOR: node_as_library
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return flatstack::Distribution::default().main();
    }
    // ANCHOR_END: node_as_library
    common::run(&[
        ("the_type_is_listed_with_its_fields_and_its_paths", || {
            Box::pin(the_type_is_listed_with_its_fields_and_its_paths())
        }),
        ("disabled_in_the_manifest_the_node_runs_without_it", || {
            Box::pin(disabled_in_the_manifest_the_node_runs_without_it())
        }),
        (
            "the_factory_checks_its_fields_and_gives_each_network_its_own_key",
            || Box::pin(the_factory_checks_its_fields_and_gives_each_network_its_own_key()),
        ),
        ("concurrent_creates_take_distinct_keys", || {
            Box::pin(concurrent_creates_take_distinct_keys())
        }),
        (
            "configuration_sets_the_defaults_and_is_checked_at_start",
            || Box::pin(configuration_sets_the_defaults_and_is_checked_at_start()),
        ),
        ("tunnels_follow_the_vms_across_hosts", || {
            Box::pin(tunnels_follow_the_vms_across_hosts())
        }),
        (
            "a_failed_create_removes_exactly_the_tunnels_it_made",
            || Box::pin(a_failed_create_removes_exactly_the_tunnels_it_made()),
        ),
        ("a_host_without_open_vswitch_does_not_connect", || {
            Box::pin(a_host_without_open_vswitch_does_not_connect())
        }),
        ("resync_repairs_a_host_and_delete_leaves_nothing", || {
            Box::pin(resync_repairs_a_host_and_delete_leaves_nothing())
        }),
        (
            "after_a_crash_mid_create_the_tunnels_are_those_the_vms_need",
            || Box::pin(after_a_crash_mid_create_the_tunnels_are_those_the_vms_need()),
        ),
    ])
}

async fn the_type_is_listed_with_its_fields_and_its_paths() -> Result {
    let node = start(None, false).await?;
    let (_, types) = node.get("/v1/l2-networks/types").await?;
    let ovs = types["types"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "Openvswitch")
        .cloned()
        .unwrap_or_else(|| panic!("Openvswitch is not listed: {types}"));
    assert_eq!(ovs["plugin"], "l2-openvswitch", "{ovs}");
    for field in [
        "bridge",
        "tunnel_protocol",
        "tunnel_key",
        "tunnel_key_range",
    ] {
        assert!(
            ovs["fields"]["properties"][field].is_object(),
            "{field}: {ovs}"
        );
    }
    let (_, doc) = node.get("/v1/openapi.json").await?;
    let create = &doc["components"]["schemas"]["l2.create.Openvswitch"];
    assert_eq!(
        create["properties"]["bridge"]["default"], "br-int",
        "{create}"
    );
    assert_eq!(create["additionalProperties"], false, "{create}");
    let child = &doc["paths"]["/v1/l2-networks/{uuid}/tunnels"];
    assert!(
        child["get"].is_object() && child["post"].is_null(),
        "{child}"
    );
    let actions = doc.to_string();
    assert!(
        actions.contains("resync_tunnels"),
        "the action is documented"
    );
    let (_, plugins) = node.get("/v1/plugins").await?;
    assert!(plugins.to_string().contains("l2-openvswitch"));
    Ok(())
}

async fn disabled_in_the_manifest_the_node_runs_without_it() -> Result {
    let node = start(Some("disabled = [\"l2-openvswitch\"]\n"), true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (_, types) = node.get("/v1/l2-networks/types").await?;
    assert!(!types.to_string().contains("Openvswitch"), "{types}");
    let (_, plugins) = node.get("/v1/plugins").await?;
    assert!(!plugins.to_string().contains("l2-openvswitch"), "{plugins}");
    let (status, body) = node
        .post(
            "/v1/l2-networks?wait=30",
            json!({"type": "Openvswitch", "name": "n", "zone_uuid": demo.zone,
                "physical_interface": "eth1"}),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["field"], "type", "{body}");
    // The rest of the cloud works: a VM on the demo's flat network.
    let vm = create_vm(&node, &demo, &[&demo.l3_network], None).await;
    assert!(vm.is_ok(), "{vm:?}");
    Ok(())
}

async fn l2_count(node: &Node) -> std::result::Result<u64, common::Error> {
    let (_, list) = node.get("/v1/l2-networks").await?;
    Ok(list["total"].as_u64().unwrap_or(0))
}

async fn the_factory_checks_its_fields_and_gives_each_network_its_own_key() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    // The defaults: bridge br-int, protocol gre, the lowest free key.
    let first = ovs_network(&node, &demo.zone, "first", json!({})).await?;
    assert_eq!(first["bridge"], "br-int", "{first}");
    assert_eq!(first["tunnel_protocol"], "gre", "{first}");
    assert_eq!(first["tunnel_key"], 1, "{first}");
    assert_eq!(first["type"], "Openvswitch");
    let second = ovs_network(
        &node,
        &demo.zone,
        "second",
        json!({"bridge": "br-tun", "tunnel_protocol": "vxlan"}),
    )
    .await?;
    assert_eq!(second["tunnel_key"], 2, "{second}");
    assert_eq!(second["bridge"], "br-tun");
    assert_eq!(second["tunnel_protocol"], "vxlan");
    let chosen = ovs_network(
        &node,
        &demo.zone,
        "chosen",
        json!({"tunnel_key": 4294967295u64}),
    )
    .await?;
    assert_eq!(chosen["tunnel_key"], 4294967295u64, "{chosen}");
    let ranged = ovs_network(
        &node,
        &demo.zone,
        "ranged",
        json!({"tunnel_key_range": {"first": 2, "last": 9}}),
    )
    .await?;
    assert_eq!(
        ranged["tunnel_key"], 3,
        "the lowest free key of the range: {ranged}"
    );
    // Shown again as created.
    let uuid = first["uuid"].as_str().unwrap_or_default();
    let (_, shown) = node.get(&format!("/v1/l2-networks/{uuid}")).await?;
    assert_eq!(shown["inventory"]["tunnel_key"], 1, "{shown}");

    // Bad fields: 400 naming the field; nothing stored.
    let before = l2_count(&node).await?;
    for (fields, field) in [
        (json!({"bridge": ""}), "bridge"),
        (json!({"bridge": "br-int-far-too-long"}), "bridge"),
        (json!({"bridge": "br/int"}), "bridge"),
        (json!({"bridge": "br int"}), "bridge"),
        (json!({"bridge": "br:0"}), "bridge"),
        (json!({"bridge": 7}), "bridge"),
        (json!({"tunnel_protocol": "ipip"}), "tunnel_protocol"),
        (json!({"tunnel_protocol": "geneve"}), "tunnel_protocol"),
        (json!({"tunnel_key": 0}), "tunnel_key"),
        (json!({"tunnel_key": 4294967296u64}), "tunnel_key"),
        (json!({"tunnel_key": "5"}), "tunnel_key"),
        (
            json!({"tunnel_key_range": {"first": 9, "last": 2}}),
            "tunnel_key_range",
        ),
        (
            json!({"tunnel_key_range": {"first": 0, "last": 2}}),
            "tunnel_key_range",
        ),
        (json!({"tunnel_key_range": [1, 2]}), "tunnel_key_range"),
        (
            json!({"tunnel_key": 50, "tunnel_key_range": {"first": 1, "last": 99}}),
            "tunnel_key_range",
        ),
        (json!({"vlan": 5}), "vlan"),
    ] {
        let (status, body) = common::post_network(&node, &demo.zone, "bad", fields.clone()).await?;
        assert_eq!(status, 400, "{fields}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{fields}: {body}");
    }
    // A key taken, or a range with none free: 409 naming the field.
    for (fields, field) in [
        (json!({"tunnel_key": 2}), "tunnel_key"),
        (
            json!({"tunnel_key_range": {"first": 1, "last": 3}}),
            "tunnel_key_range",
        ),
    ] {
        let (status, body) =
            common::post_network(&node, &demo.zone, "taken", fields.clone()).await?;
        assert_eq!(status, 409, "{fields}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{fields}: {body}");
    }
    assert_eq!(l2_count(&node).await?, before, "nothing stored");

    // A deleted network's key is free again.
    let (status, body) = node
        .delete(&format!("/v1/l2-networks/{uuid}?wait=30"))
        .await?;
    assert!(status < 300, "{status} {body}");
    let again = ovs_network(&node, &demo.zone, "again", json!({"tunnel_key": 1})).await?;
    assert_eq!(again["tunnel_key"], 1, "{again}");
    Ok(())
}

async fn concurrent_creates_take_distinct_keys() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let range = json!({"tunnel_key_range": {"first": 1000, "last": 1007}});
    let creates = (0..10).map(|i| {
        let (node, zone, range) = (&node, &demo.zone, range.clone());
        async move { common::post_network(node, zone, &format!("n{i}"), range).await }
    });
    let answers = futures::future::join_all(creates).await;
    let mut keys = BTreeSet::new();
    let mut refused = 0;
    for answer in answers {
        let (status, body) = answer?;
        match status {
            201 => {
                keys.insert(body["inventory"]["tunnel_key"].as_u64().unwrap_or(0));
            }
            409 => {
                assert_eq!(
                    body["error"]["details"]["field"], "tunnel_key_range",
                    "{body}"
                );
                refused += 1;
            }
            _ => panic!("{status} {body}"),
        }
    }
    assert_eq!(keys, (1000..=1007).collect(), "eight networks, eight keys");
    assert_eq!(refused, 2, "the range has eight keys");
    assert_eq!(l2_count(&node).await?, 9, "the demo's and the eight");
    Ok(())
}

async fn configuration_sets_the_defaults_and_is_checked_at_start() -> Result {
    let manifest = "[config]\nopenvswitch.default_bridge = \"br-ovs\"\n\
                    openvswitch.tunnel_key_range = { first = 500, last = 600 }\n\
                    openvswitch.tunnel_protocols = [\"vxlan\", \"geneve\"]\n";
    let node = start(Some(manifest), true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let net = ovs_network(&node, &demo.zone, "configured", json!({})).await?;
    assert_eq!(net["bridge"], "br-ovs", "{net}");
    assert_eq!(net["tunnel_key"], 500, "{net}");
    assert_eq!(net["tunnel_protocol"], "vxlan", "{net}");
    let (status, body) =
        common::post_network(&node, &demo.zone, "gre", json!({"tunnel_protocol": "gre"})).await?;
    assert_eq!(status, 400, "gre is not allowed here: {body}");
    drop(node);
    for bad in [
        "[config]\nopenvswitch.tunnel_key_range = { first = 0, last = 5 }\n",
        "[config]\nopenvswitch.tunnel_key_range = { first = 9, last = 5 }\n",
        "[config]\nopenvswitch.default_bridge = \"no/bridge\"\n",
        "[config]\nopenvswitch.tunnel_protocols = []\n",
        "[config]\nopenvswitch.tunnel_protocols = [\"ipip\"]\n",
    ] {
        let refused = start(Some(bad), false).await;
        assert!(refused.is_err(), "a node started with {bad}");
    }
    Ok(())
}

/// The demo with an Openvswitch network attached to its cluster, whose hosts run Open
/// vSwitch, and an L3 network on it: (network, L3, the cluster's three hosts).
async fn mesh_cloud(
    node: &Node,
    demo: &common::Demo,
) -> std::result::Result<(String, String, Vec<String>), common::Error> {
    let hosts = hosts_of(node, &demo.cluster).await?;
    assert_eq!(hosts.len(), 3, "the demo's hosts");
    for host in &hosts {
        set_daemons(node, host, "openvswitch").await?;
    }
    let net = ovs_network(node, &demo.zone, "overlay", json!({"tunnel_key": 77})).await?;
    let l2 = net["uuid"].as_str().unwrap_or_default().to_owned();
    attach(node, &l2, &demo.cluster).await?;
    let l3 = l3_on(node, &l2, "10.77.0").await?;
    Ok((l2, l3, hosts))
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

// ANCHOR: test_mesh
async fn tunnels_follow_the_vms_across_hosts() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (l2, l3, hosts) = mesh_cloud(&node, &demo).await?;
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    // One host: no tunnel.
    let v1 = create_vm(&node, &demo, &[&l3], Some(h1)).await.expect("v1");
    assert_eq!(mesh(&node, &l2, &hosts).await?, BTreeSet::new());
    // A second host: one tunnel, on both ends, keyed by the network's key.
    let v2 = create_vm(&node, &demo, &[&l3], Some(h2)).await.expect("v2");
    assert_eq!(
        mesh(&node, &l2, &hosts).await?,
        BTreeSet::from([pair(h1, h2)])
    );
    let (_, objects) = node.get(&format!("/v1/hosts/{h1}/agent-objects")).await?;
    let end = &objects["inventories"][0];
    assert_eq!(end["namespace"], "ovs.tunnel", "{objects}");
    assert_eq!(end["object"]["key"], 77, "{objects}");
    assert_eq!(end["object"]["protocol"], "gre", "{objects}");
    assert_eq!(end["object"]["bridge"], "br-int", "{objects}");
    // A third: a full mesh.
    let v3 = create_vm(&node, &demo, &[&l3], Some(h3)).await.expect("v3");
    let full = BTreeSet::from([pair(h1, h2), pair(h1, h3), pair(h2, h3)]);
    assert_eq!(mesh(&node, &l2, &hosts).await?, full);
    // ANCHOR_END: test_mesh
    // Another VM on a host already in the mesh: nothing new; one on another network: no
    // tunnel, no command.
    let v4 = create_vm(&node, &demo, &[&l3], Some(h1)).await.expect("v4");
    assert_eq!(mesh(&node, &l2, &hosts).await?, full);
    let sent = host_report(&node, h1).await?["agent_commands"].clone();
    let flat = create_vm(&node, &demo, &[&demo.l3_network], Some(h1))
        .await
        .expect("flat");
    assert_eq!(host_report(&node, h1).await?["agent_commands"], sent);

    // Destroying VMs: a host's tunnels go with its last VM on the network.
    destroy_vm(&node, &v4).await?;
    destroy_vm(&node, &flat).await?;
    assert_eq!(mesh(&node, &l2, &hosts).await?, full, "h1 still has v1");
    destroy_vm(&node, &v1).await?;
    assert_eq!(
        mesh(&node, &l2, &hosts).await?,
        BTreeSet::from([pair(h2, h3)])
    );
    assert!(agent_ends(&node, h1).await?.is_empty());
    destroy_vm(&node, &v2).await?;
    assert_eq!(mesh(&node, &l2, &hosts).await?, BTreeSet::new());
    destroy_vm(&node, &v3).await?;
    for host in &hosts {
        assert!(agent_ends(&node, host).await?.is_empty(), "{host}");
    }
    Ok(())
}

async fn a_failed_create_removes_exactly_the_tunnels_it_made() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (l2, l3, hosts) = mesh_cloud(&node, &demo).await?;
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    create_vm(&node, &demo, &[&l3], Some(h1)).await.expect("v1");
    create_vm(&node, &demo, &[&l3], Some(h2)).await.expect("v2");
    let before = BTreeSet::from([pair(h1, h2)]);
    assert_eq!(mesh(&node, &l2, &hosts).await?, before);
    let rows_before = common::tunnel_rows(&node, &l2).await?;

    // A failure after the tunnel step (the fault-injection plugin's implementor of the
    // point runs after ours): the create is undone, and with it the two tunnels it made.
    let (status, body) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.pre-instantiate", "mode": "fail", "once": true}),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let failed = create_vm(&node, &demo, &[&l3], Some(h3)).await;
    let (status, body) = failed.expect_err("the injected failure");
    assert!(status >= 400, "{body}");
    assert_eq!(
        mesh(&node, &l2, &hosts).await?,
        before,
        "only what it made is gone"
    );
    assert_eq!(
        common::tunnel_rows(&node, &l2).await?,
        rows_before,
        "the others untouched"
    );
    let commands = host_report(&node, h3).await?["agent_commands"].to_string();
    assert_eq!(
        commands.matches("ovs.tunnel.create").count(),
        2,
        "{commands}"
    );
    assert_eq!(
        commands.matches("ovs.tunnel.delete").count(),
        2,
        "{commands}"
    );

    // A host that refuses to build tunnels: the create is refused, naming it.
    let (status, body) = node
        .post(
            &format!("/v1/hosts/{h3}/actions?wait=10"),
            json!({"action": "inject_failure", "operation": "ovs.tunnel.create", "fail": true}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_vm(&node, &demo, &[&l3], Some(h3))
        .await
        .expect_err("refused");
    assert!(status >= 400, "{body}");
    let message = error(&body);
    assert!(
        message.contains(h3.as_str()),
        "the refusing host is named: {body}"
    );
    assert_eq!(mesh(&node, &l2, &hosts).await?, before);
    // The peer refuses: the end already made on the new VM's host is taken back.
    node.post(
        &format!("/v1/hosts/{h3}/actions?wait=10"),
        json!({"action": "clear_failures"}),
    )
    .await?;
    node.post(
        &format!("/v1/hosts/{h1}/actions?wait=10"),
        json!({"action": "inject_failure", "operation": "ovs.tunnel.create", "fail": true}),
    )
    .await?;
    let (_, body) = create_vm(&node, &demo, &[&l3], Some(h3))
        .await
        .expect_err("refused");
    assert!(error(&body).contains(h1.as_str()), "{body}");
    assert!(
        agent_ends(&node, h3).await?.is_empty(),
        "nothing left on h3"
    );
    assert_eq!(mesh(&node, &l2, &hosts).await?, before);
    // Cleared, the create goes through.
    node.post(
        &format!("/v1/hosts/{h1}/actions?wait=10"),
        json!({"action": "clear_failures"}),
    )
    .await?;
    create_vm(&node, &demo, &[&l3], Some(h3)).await.expect("v3");
    assert_eq!(mesh(&node, &l2, &hosts).await?.len(), 3);
    Ok(())
}

async fn a_host_without_open_vswitch_does_not_connect() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (l2, _, _) = mesh_cloud(&node, &demo).await?;
    // Hosts of a cluster no Openvswitch network is attached to need no daemon.
    let other = node
        .create(
            "clusters",
            json!({"name": "other", "zone_uuid": demo.zone, "hypervisor_type": "Simulator"}),
        )
        .await?;
    let other = other["uuid"].as_str().unwrap_or_default();
    let plain = node
        .create("hosts", common::host_body(other, "10.9.0.1", "plain", ""))
        .await?;
    assert_eq!(plain["status"], "Connected");

    let (status, body) = node
        .post(
            "/v1/hosts?wait=30",
            common::host_body(&demo.cluster, "10.9.0.2", "bare", ""),
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    let message = error(&body);
    assert!(
        message.contains("Open vSwitch") && message.contains(&l2),
        "{body}"
    );
    let (_, list) = node.get("/v1/hosts?name=bare").await?;
    assert_eq!(
        list["total"], 0,
        "a host that cannot connect is not added: {list}"
    );

    let ovs = node
        .create(
            "hosts",
            common::host_body(&demo.cluster, "10.9.0.3", "ovs", "libvirtd,openvswitch"),
        )
        .await?;
    assert_eq!(ovs["status"], "Connected", "{ovs}");
    let uuid = ovs["uuid"].as_str().unwrap_or_default();
    set_daemons(&node, uuid, "libvirtd").await?;
    let (status, body) = node
        .post(
            &format!("/v1/hosts/{uuid}/actions?wait=30"),
            json!({"action": "reconnect"}),
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(error(&body).contains("Open vSwitch"), "{body}");
    let (_, shown) = node.get(&format!("/v1/hosts/{uuid}")).await?;
    assert_eq!(shown["inventory"]["status"], "Disconnected", "{shown}");
    set_daemons(&node, uuid, "openvswitch").await?;
    let (status, body) = node
        .post(
            &format!("/v1/hosts/{uuid}/actions?wait=30"),
            json!({"action": "reconnect"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["inventory"]["status"], "Connected", "{body}");
    Ok(())
}

async fn resync_repairs_a_host_and_delete_leaves_nothing() -> Result {
    let node = start(None, true).await?;
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (l2, l3, hosts) = mesh_cloud(&node, &demo).await?;
    let mut vms = Vec::new();
    for host in &hosts {
        vms.push(
            create_vm(&node, &demo, &[&l3], Some(host))
                .await
                .expect("vm"),
        );
    }
    let full = mesh(&node, &l2, &hosts).await?;
    assert_eq!(full.len(), 3);
    let rows = common::tunnel_rows(&node, &l2).await?;

    // A host loses its tunnels (a reboot): resync gives them back, and only them.
    let h2 = &hosts[1];
    let (status, body) = node
        .post(
            &format!("/v1/hosts/{h2}/actions?wait=10"),
            json!({"action": "forget_agent_state", "namespace": "ovs.tunnel"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(agent_ends(&node, h2).await?.is_empty());
    let (status, report) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=30"),
            json!({"action": "resync_tunnels"}),
        )
        .await?;
    assert_eq!(status, 200, "{report}");
    let report = &report["inventory"];
    assert_eq!(
        report["repaired"],
        json!([{"host_uuid": h2, "created": 2, "deleted": 0}]),
        "{report}"
    );
    assert_eq!(report["added"], json!([]), "{report}");
    assert_eq!(report["removed"], json!([]), "{report}");
    assert_eq!(mesh(&node, &l2, &hosts).await?, full);
    assert_eq!(
        common::tunnel_rows(&node, &l2).await?,
        rows,
        "the records were right"
    );
    // Nothing to repair: nothing done.
    let (_, again) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=30"),
            json!({"action": "resync_tunnels"}),
        )
        .await?;
    assert_eq!(again["inventory"]["repaired"], json!([]), "{again}");
    // Another type's network has no tunnels to list or resync.
    let (_, flat) = node
        .get(&format!("/v1/l3-networks/{}", demo.l3_network))
        .await?;
    let flat_l2 = flat["inventory"]["l2_network_uuid"]
        .as_str()
        .unwrap_or_default();
    let (status, body) = node
        .get(&format!("/v1/l2-networks/{flat_l2}/tunnels"))
        .await?;
    assert_eq!(status, 400, "{body}");

    // Delete: the VMs, the L3 network, then the network; nothing stays, on any host.
    for vm in &vms {
        destroy_vm(&node, vm).await?;
    }
    let (_, ranges) = node.get(&format!("/v1/l3-networks/{l3}/ip-ranges")).await?;
    for range in ranges["inventories"].as_array().into_iter().flatten() {
        let uuid = range["uuid"].as_str().unwrap_or_default();
        let (status, body) = node
            .delete(&format!("/v1/ip-ranges/{uuid}?wait=30"))
            .await?;
        assert!(status < 300, "{status} {body}");
    }
    let (status, body) = node
        .delete(&format!("/v1/l3-networks/{l3}?wait=30"))
        .await?;
    assert!(status < 300, "{status} {body}");
    let (status, body) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=30"),
            json!({"action": "detach_cluster", "cluster_uuid": demo.cluster}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .delete(&format!("/v1/l2-networks/{l2}?wait=30"))
        .await?;
    assert!(status < 300, "{status} {body}");
    let (status, _) = node.get(&format!("/v1/l2-networks/{l2}/tunnels")).await?;
    assert_eq!(status, 404);
    for host in &hosts {
        assert!(agent_ends(&node, host).await?.is_empty(), "{host}");
    }
    // Its key is free again.
    let net = ovs_network(&node, &demo.zone, "reused", json!({"tunnel_key": 77})).await?;
    assert_eq!(net["tunnel_key"], 77);
    Ok(())
}

async fn after_a_crash_mid_create_the_tunnels_are_those_the_vms_need() -> Result {
    let proc = Proc::start(true)?;
    let node = proc.client();
    let demo = node.demo(Duration::from_secs(60)).await?;
    let (l2, l3, hosts) = mesh_cloud(&node, &demo).await?;
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    create_vm(&node, &demo, &[&l3], Some(h1)).await.expect("v1");
    create_vm(&node, &demo, &[&l3], Some(h2)).await.expect("v2");
    let before = mesh(&node, &l2, &hosts).await?;

    // A create that hangs after its tunnels were made, and the node killed meanwhile.
    node.post(
        "/v1/fault-injections?wait=10",
        json!({"point": "vm.pre-instantiate", "mode": "hang"}),
    )
    .await?;
    let body = json!({"name": "doomed", "instance_offering_uuid": demo.instance_offering,
        "image_uuid": demo.image, "l3_network_uuids": [l3], "host_uuid": h3});
    let (status, job) = node.post("/v1/vm-instances", body).await?;
    assert_eq!(status, 202, "{job}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent_ends(&node, h3).await?.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tunnels were not made"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proc = proc.restart()?;
    let node = proc.client();
    // Recovery undid the create from what was recorded; the reconciler agrees.
    assert_eq!(mesh(&node, &l2, &hosts).await?, before);
    assert!(agent_ends(&node, h3).await?.is_empty());
    let (_, vms) = node.get("/v1/vm-instances?name=doomed").await?;
    let doomed: Vec<&Value> = vms["inventories"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert!(
        doomed.iter().all(|vm| vm["state"] == "Destroyed"),
        "the interrupted create left no live VM: {vms}"
    );
    Ok(())
}
