//! The same node on PostgreSQL: plugins' SQL, migrations, deletes refused while referred
//! to, restarts. Uses the server at $FLATSTACK_TEST_POSTGRES (default: the local one, as on
//! the project's machines; `.ci/run` makes sure it is up), in a fresh database per test.

mod common;

use common::{data_centre, uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

fn server() -> String {
    std::env::var("FLATSTACK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A new, empty database; dropped by [`drop_database`].
async fn fresh_database() -> (String, String) {
    let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed for this test: {e}", server()));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    (format!("{}/{name}", server()), name)
}

async fn drop_database(name: &str) {
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server()))
        .await
        .expect("connect");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop database");
}

#[tokio::test]
async fn the_node_runs_on_postgresql() {
    let (url, name) = fresh_database().await;
    let (zone, cluster, host) = {
        let node = Node::start_postgres(&url);
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
    let node = Node::start_postgres(&url);
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
    drop(node);
    drop_database(&name).await;
}

/// Nothing orphaned, on PostgreSQL too: the plugins' asynchronous vetoes (joins, a
/// `UNION` counted in the database) and the store's refusals run there and name the
/// users. (A VM cannot be created on PostgreSQL yet — marking it running assigns
/// `updated_at` twice — so the VM and its NIC are rows written directly.)
#[tokio::test]
async fn what_vms_use_is_kept_on_postgresql() {
    let (url, name) = fresh_database().await;
    {
        let node = Node::start_postgres(&url);
        let dc = common::cloud::data_centre(&node).await;
        let (_, l3) = node.get(&format!("/v1/l3-networks/{}", dc.l3)).await;
        let l2 = l3["inventory"]["l2_network_uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let vm = "0123456789abcdef0123456789abcdef";
        let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query(
            "INSERT INTO vm_instances (uuid, name, description, owner, state,
                instance_offering_uuid, image_uuid, host_uuid, cpu_num, memory_size,
                created_at, updated_at)
             VALUES ($1, 'a', '', 'admin', 'Creating', $2, $3, NULL, 1, 1, 't', 't')",
        )
        .bind(vm)
        .bind(&dc.offering)
        .bind(&dc.image)
        .execute(&mut db)
        .await
        .expect("a VM being created");
        sqlx::query(
            "INSERT INTO vm_nics (uuid, vm_instance_uuid, l3_network_uuid, ip, mac,
                created_at, updated_at)
             VALUES ('n1', $1, $2, '192.168.0.99', '02:00:00:00:00:01', 't', 't')",
        )
        .bind(vm)
        .bind(&dc.l3)
        .execute(&mut db)
        .await
        .expect("its NIC");
        let detach = json!({"action": "detach_cluster", "cluster_uuid": dc.cluster});
        let image = (Method::DELETE, format!("/v1/images/{}", dc.image), None);
        let offering = (
            Method::DELETE,
            format!("/v1/instance-offerings/{}", dc.offering),
            None,
        );
        let storage = (
            Method::POST,
            format!("/v1/primary-storage/{}/actions", dc.ps),
            Some(detach.clone()),
        );
        let network = (
            Method::POST,
            format!("/v1/l2-networks/{l2}/actions"),
            Some(detach.clone()),
        );
        for (method, path, body) in [&image, &offering, &storage, &network] {
            let (status, err) = node
                .send(method.clone(), &format!("{path}?wait=10"), body.clone())
                .await;
            assert_eq!(status, StatusCode::CONFLICT, "{path}: {err}");
            assert_eq!(
                err["error"]["details"]["users"],
                json!([{"kind": "vm-instances", "uuid": vm}]),
                "{path}: {err}"
            );
        }
        // The store's own refusal, through several referring tables of several kinds.
        let (status, err) = node
            .send(
                Method::DELETE,
                &format!("/v1/zones/{}?wait=10", dc.zone),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{err}");
        assert!(
            err["error"]["details"]["users"]
                .as_array()
                .unwrap()
                .contains(&json!({"kind": "clusters", "uuid": dc.cluster})),
            "{err}"
        );
        assert_eq!(
            err["error"]["details"]["user_counts"]["l2-networks"], 1,
            "{err}"
        );

        for table in ["vm_nics", "vm_instances"] {
            let column = if table == "vm_nics" {
                "vm_instance_uuid"
            } else {
                "uuid"
            };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(vm)
                .execute(&mut db)
                .await
                .expect("the VM gone");
        }
        for (method, path, body) in [&image, &offering, &storage, &network] {
            let (status, err) = node
                .send(method.clone(), &format!("{path}?wait=10"), body.clone())
                .await;
            assert!(status.is_success(), "{path}: {status} {err}");
        }
    }
    drop_database(&name).await;
}
