//! The node on PostgreSQL, whatever the switch says: `cargo test --workspace` always
//! covers it (every other node test runs on PostgreSQL too when
//! `FLATSTACK_TEST_DATABASE_URL` is set; see tests/common). Plugins' SQL, migrations, a VM
//! and a data volume created on a fresh database, deletes refused while referred to,
//! constraints answered as conflicts, restarts. Uses the server of
//! `FLATSTACK_TEST_DATABASE_URL` if set, else the local one (`.ci/run` starts it).

mod common;

use common::cloud::vm_body;
use common::{data_centre, postgres_data_dir, uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn the_node_runs_on_postgresql() {
    let dir = postgres_data_dir();
    let (zone, cluster, host) = {
        let node = Node::start(dir.path());
        let (zone, cluster, host) = data_centre(&node).await;
        let (_, shown) = node.get(&format!("/v1/hosts/{host}")).await;
        assert_eq!(
            shown["inventory"]["memory_capacity"], 274877906944u64,
            "64-bit columns"
        );
        assert_eq!(
            shown["inventory"]["latency_ms"], 0,
            "the driver's record is joined"
        );

        let (status, err) = node
            .post(
                "/v1/clusters?wait=10",
                json!({"name": "c", "zone_uuid": "0".repeat(32), "hypervisor_type": "Simulator"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        let (status, err) = node
            .send(Method::DELETE, &format!("/v1/zones/{zone}?wait=10"), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        // A second network with the VLAN of another on the same interface (the check is a
        // join through `Tx::query`) is refused.
        let vlan = |name: &str| {
            json!({"type": "L2VlanNetwork", "name": name, "zone_uuid": zone,
                   "physical_interface": "eth0", "vlan": 100})
        };
        node.create("l2-networks", vlan("v")).await;
        let (status, err) = node.post("/v1/l2-networks?wait=10", vlan("w")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert_eq!(err["error"]["details"]["field"], "vlan", "{err}");
        let bs = node.create("backup-storage", json!({"type": "Simulator", "name": "bs", "zone_uuid": zone, "url": "/sim/bs", "total_capacity": 1000})).await;
        let image = node.create("images", json!({"name": "i", "url": "http://x/i", "format": "raw", "size": 300, "backup_storage_uuids": [uuid(&bs)]})).await;
        assert_eq!(
            node.get(&format!("/v1/backup-storage/{}", uuid(&bs)))
                .await
                .1["inventory"]["available_capacity"],
            700
        );
        let (status, _) = node
            .send(
                Method::DELETE,
                &format!("/v1/images/{}?wait=10", uuid(&image)),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            node.get(&format!("/v1/backup-storage/{}", uuid(&bs)))
                .await
                .1["inventory"]["available_capacity"],
            1000
        );
        (zone, cluster, host)
    };
    // Restarted on the same database: everything is there, migrations are not re-run.
    let node = Node::start(dir.path());
    assert_eq!(
        node.get(&format!("/v1/clusters/{cluster}")).await.1["inventory"]["zone_uuid"],
        zone.as_str()
    );
    assert_eq!(
        node.get(&format!("/v1/hosts/{host}")).await.1["inventory"]["status"],
        "Connected"
    );
    for (kind, id) in [("hosts", &host), ("clusters", &cluster)] {
        let (status, err) = node
            .send(Method::DELETE, &format!("/v1/{kind}/{id}?wait=10"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{kind}: {err}");
    }
}

/// What failed on PostgreSQL before any of its tests made a VM: every VM create (a column
/// assigned twice) and the first data volume of a node (a NULL bound as text to a BIGINT
/// column); and a refused constraint answered with the constraint's name.
#[tokio::test]
async fn vms_volumes_and_conflicts_on_a_fresh_database() {
    let dir = postgres_data_dir();
    let node = Node::start(dir.path());
    let dc = common::cloud::data_centre(&node).await;
    // Before any VM: no statement has been prepared with a device_id yet.
    let data = node
        .create("volumes", json!({"name": "data", "size": 1 << 30}))
        .await;
    assert_eq!(
        (&data["vm_instance_uuid"], &data["device_id"]),
        (&json!(null), &json!(null))
    );
    let vm = node.create("vm-instances", vm_body(&dc, "vm")).await;
    assert_eq!(vm["state"], "Running", "{vm}");
    let (status, attached) = node
        .post(
            &format!("/v1/volumes/{}/actions?wait=10", uuid(&data)),
            json!({"action": "attach", "vm_instance_uuid": uuid(&vm)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    assert_eq!(attached["inventory"]["device_id"], 1, "{attached}");

    // A second quota for one owner: the UNIQUE column refuses it, as a conflict about the
    // data, never the constraint's name or SQL.
    let quota = json!({"name": "q", "account_uuid": "alice", "max_vm_num": 1, "max_cpu_num": 1,
                       "max_memory_size": 1 << 30});
    node.create("quotas", quota.clone()).await;
    let (status, err) = node.post("/v1/quotas?wait=10", quota).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["details"]["field"], "account_uuid", "{err}");
    assert_eq!(err["error"]["details"]["value"], "alice", "{err}");
    let text = err.to_string();
    assert!(
        !text.contains("quotas_owner_key") && !text.contains("INSERT"),
        "{err}"
    );
}
