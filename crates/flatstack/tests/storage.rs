//! Storage, images and instance offerings over HTTP.

mod common;

use common::{data_centre, rows, uuid, with, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TIB: u64 = 1 << 40;

async fn backup(node: &Node, zone: &str, name: &str, capacity: u64) -> String {
    let bs = node
        .create("backup-storage", json!({"type": "Simulator", "name": name, "zone_uuid": zone, "url": format!("/sim/{name}"), "total_capacity": capacity}))
        .await;
    assert_eq!(bs["available_capacity"], capacity);
    uuid(&bs)
}

async fn capacity(node: &Node, bs: &str) -> u64 {
    node.get(&format!("/v1/backup-storage/{bs}")).await.1["inventory"]["available_capacity"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn primary_storage_attaches_to_clusters_of_its_zone() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, _) = data_centre(&node).await;
    let ps = node
        .create("primary-storage", json!({"type": "Simulator", "name": "ps1", "zone_uuid": zone, "url": "/sim/ps1", "total_capacity": 10 * TIB}))
        .await;
    assert_eq!(ps["available_capacity"], 10 * TIB);
    assert_eq!(ps["attached_cluster_uuids"], json!([]));
    let ps = uuid(&ps);
    let actions = format!("/v1/primary-storage/{ps}/actions?wait=10");
    let (status, attached) = node
        .post(
            &actions,
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    assert_eq!(
        attached["inventory"]["attached_cluster_uuids"],
        json!([cluster])
    );
    assert_eq!(
        node.get(&format!("/v1/primary-storage/{ps}")).await.1["inventory"]
            ["attached_cluster_uuids"],
        json!([cluster])
    );

    let (status, _) = node
        .post(
            &actions,
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "attached twice");
    // Attached: neither the storage nor the cluster can go.
    for path in [
        format!("/v1/primary-storage/{ps}?wait=10"),
        format!("/v1/clusters/{cluster}?wait=10"),
    ] {
        assert_eq!(
            node.send(Method::DELETE, &path, None).await.0,
            StatusCode::CONFLICT,
            "{path}"
        );
    }
    let (status, detached) = node
        .post(
            &actions,
            json!({"action": "detach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detached}");
    assert_eq!(detached["inventory"]["attached_cluster_uuids"], json!([]));
    let (status, err) = node
        .post(
            &actions,
            json!({"action": "detach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not attached: {err}");
    assert_eq!(err["error"]["details"]["field"], "cluster_uuid");
    assert_eq!(
        node.send(
            Method::DELETE,
            &format!("/v1/primary-storage/{ps}?wait=10"),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(rows(dir.path(), "primary_storage").await, 0);

    let (status, types) = node.get("/v1/primary-storage/types").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(types["types"][0]["name"], "Simulator");
}

#[tokio::test]
async fn bad_storage_input_changes_nothing() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, cluster, _) = data_centre(&node).await;
    let other_zone = uuid(&node.create("zones", json!({"name": "zone-2"})).await);
    let other_cluster = uuid(
        &node
            .create(
                "clusters",
                json!({"name": "c2", "zone_uuid": other_zone, "hypervisor_type": "Simulator"}),
            )
            .await,
    );
    let ps = uuid(&node.create("primary-storage", json!({"type": "Simulator", "name": "ps", "zone_uuid": zone, "url": "/sim/ps", "total_capacity": TIB})).await);
    let tables = [
        "primary_storage",
        "backup_storage",
        "primary_storage_cluster_refs",
        "images",
        "image_backup_storage_refs",
        "backup_storage_allocations",
        "instance_offerings",
        "event_outbox",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(rows(dir.path(), t).await);
    }
    let valid = json!({"type": "Simulator", "name": "s", "zone_uuid": zone, "url": "/sim/s", "total_capacity": TIB});
    let storage = |over: Value| with(valid.clone(), over);
    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        (
            "/v1/primary-storage".into(),
            storage(json!({"type": "Ceph"})),
            StatusCode::BAD_REQUEST,
            "type",
        ),
        (
            "/v1/primary-storage".into(),
            storage(json!({"url": "relative/path"})),
            StatusCode::BAD_REQUEST,
            "url",
        ),
        (
            "/v1/primary-storage".into(),
            storage(json!({"total_capacity": 0})),
            StatusCode::BAD_REQUEST,
            "total_capacity",
        ),
        (
            "/v1/primary-storage".into(),
            storage(json!({"total_capacity": -5})),
            StatusCode::BAD_REQUEST,
            "total_capacity",
        ),
        (
            "/v1/primary-storage".into(),
            storage(json!({"zone_uuid": "a".repeat(32)})),
            StatusCode::BAD_REQUEST,
            "zone_uuid",
        ),
        (
            "/v1/primary-storage".into(),
            storage(json!({"name": null})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            "/v1/backup-storage".into(),
            storage(json!({"iops": 5})),
            StatusCode::BAD_REQUEST,
            "iops",
        ),
        (
            "/v1/primary-storage/".to_owned() + &ps + "/actions",
            json!({"action": "attach_cluster", "cluster_uuid": other_cluster}),
            StatusCode::BAD_REQUEST,
            "cluster_uuid",
        ),
        (
            "/v1/primary-storage/".to_owned() + &ps + "/actions",
            json!({"action": "attach_cluster", "cluster_uuid": "b".repeat(32)}),
            StatusCode::BAD_REQUEST,
            "cluster_uuid",
        ),
        (
            "/v1/primary-storage/".to_owned() + &ps + "/actions",
            json!({"action": "attach_cluster"}),
            StatusCode::BAD_REQUEST,
            "cluster_uuid",
        ),
        (
            "/v1/images".into(),
            json!({"name": "i", "url": "http://x/i", "format": "qcow2", "size": 10, "backup_storage_uuids": []}),
            StatusCode::BAD_REQUEST,
            "backup_storage_uuids",
        ),
        (
            "/v1/images".into(),
            json!({"name": "i", "url": "http://x/i", "format": "exe", "size": 10, "backup_storage_uuids": ["c".repeat(32)]}),
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            "/v1/images".into(),
            json!({"name": "i", "url": "http://x/i", "format": "raw", "size": 0, "backup_storage_uuids": ["c".repeat(32)]}),
            StatusCode::BAD_REQUEST,
            "size",
        ),
        (
            "/v1/images".into(),
            json!({"name": "i", "url": "http://x/i", "format": "raw", "size": 1, "backup_storage_uuids": ["c".repeat(32)]}),
            StatusCode::BAD_REQUEST,
            "backup_storage_uuids",
        ),
        (
            "/v1/instance-offerings".into(),
            json!({"name": "o", "cpu_num": 0, "memory_size": 1073741824u64}),
            StatusCode::BAD_REQUEST,
            "cpu_num",
        ),
        (
            "/v1/instance-offerings".into(),
            json!({"name": "o", "cpu_num": 1, "memory_size": 1024}),
            StatusCode::BAD_REQUEST,
            "memory_size",
        ),
        (
            "/v1/instance-offerings".into(),
            json!({"name": "o", "cpu_num": 1}),
            StatusCode::BAD_REQUEST,
            "memory_size",
        ),
    ];
    for (path, body, expected, field) in cases {
        let (status, err) = node.post(&format!("{path}?wait=10"), body.clone()).await;
        assert_eq!(status, expected, "{path} {body}: {err}");
        assert_eq!(
            err["error"]["details"]["field"], field,
            "{path} {body}: {err}"
        );
    }
    let _ = cluster;
    let mut after = Vec::new();
    for t in tables {
        after.push(rows(dir.path(), t).await);
    }
    assert_eq!(before, after, "invalid input changed {tables:?}");
}

#[tokio::test]
async fn images_take_and_give_back_backup_storage_capacity() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    let bs1 = backup(&node, &zone, "bs1", 1000).await;
    let bs2 = backup(&node, &zone, "bs2", 500).await;
    let image = node
        .create("images", json!({"name": "cirros", "url": "http://example.invalid/cirros.qcow2", "format": "qcow2", "size": 400, "backup_storage_uuids": [bs1, bs2]}))
        .await;
    let mut on = vec![bs1.clone(), bs2.clone()];
    on.sort();
    assert_eq!(image["backup_storage_uuids"], json!(on));
    assert_eq!(image["status"], "Ready");
    assert_eq!(
        (capacity(&node, &bs1).await, capacity(&node, &bs2).await),
        (600, 100)
    );

    // Too big for bs2: refused as a whole, nothing taken from bs1 either.
    let (status, err) = node
        .post("/v1/images?wait=10", json!({"name": "big", "url": "http://x/big", "format": "raw", "size": 200, "backup_storage_uuids": [bs1, bs2]}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(
        (capacity(&node, &bs1).await, capacity(&node, &bs2).await),
        (600, 100)
    );
    assert_eq!(rows(dir.path(), "images").await, 1);
    assert_eq!(rows(dir.path(), "backup_storage_allocations").await, 2);

    // A backup storage with images cannot go; deleting the image gives the capacity back.
    assert_eq!(
        node.send(
            Method::DELETE,
            &format!("/v1/backup-storage/{bs2}?wait=10"),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/images/{}?wait=10", uuid(&image)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    assert_eq!(
        (capacity(&node, &bs1).await, capacity(&node, &bs2).await),
        (1000, 500)
    );
    assert_eq!(rows(dir.path(), "image_backup_storage_refs").await, 0);
    assert_eq!(rows(dir.path(), "backup_storage_allocations").await, 0);
    assert_eq!(
        node.send(
            Method::DELETE,
            &format!("/v1/backup-storage/{bs2}?wait=10"),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
}

/// An image's bytes are taken (by the storage plugin) before its row is written (by the
/// image plugin): a stop between the two leaves bytes held by no image, and a stop after
/// an image's delete but before its bytes are given back leaves the same. The next start
/// gives them back, and leaves the bytes of the images that exist alone.
#[tokio::test]
async fn bytes_a_stop_left_held_by_no_image_are_given_back_at_start() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    let bs = backup(&node, &zone, "bs", 1000).await;
    node.create("images", json!({"name": "kept", "url": "http://x/kept", "format": "raw", "size": 100, "backup_storage_uuids": [bs]}))
        .await;
    drop(node); // SIGKILL

    // What the stop left: 300 bytes taken for an image whose row was never written.
    let orphan = "0".repeat(32);
    let taken = common::execute(
        dir.path(),
        &format!("UPDATE backup_storage SET available_capacity = available_capacity - 300 WHERE uuid = '{bs}'"),
    )
    .await;
    assert_eq!(taken, 1);
    common::execute(
        dir.path(),
        &format!("INSERT INTO backup_storage_allocations (consumer_uuid, backup_storage_uuid, size, created_at) VALUES ('{orphan}', '{bs}', 300, '2026-12-03T00:00:00Z')"),
    )
    .await;

    let node = Node::start(dir.path());
    assert_eq!(capacity(&node, &bs).await, 900);
    assert_eq!(rows(dir.path(), "backup_storage_allocations").await, 1);
}

#[tokio::test]
async fn instance_offerings_life_cycle() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let small = node
        .create(
            "instance-offerings",
            json!({"name": "small", "cpu_num": 1, "memory_size": 1073741824u64}),
        )
        .await;
    assert_eq!(small["memory_size"], 1073741824u64);
    node.create(
        "instance-offerings",
        json!({"name": "large", "cpu_num": 8, "memory_size": 17179869184u64}),
    )
    .await;
    let (_, list) = node.get("/v1/instance-offerings?cpu_num=8").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["inventories"][0]["name"], "large");
    let id = uuid(&small);
    let (status, patched) = node
        .send(
            Method::PATCH,
            &format!("/v1/instance-offerings/{id}?wait=10"),
            Some(json!({"description": "one vCPU"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["inventory"]["description"], "one vCPU");
    let (status, err) = node
        .send(
            Method::PATCH,
            &format!("/v1/instance-offerings/{id}?wait=10"),
            Some(json!({"cpu_num": 2})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only common fields are patchable: {err}"
    );
    assert_eq!(
        node.send(
            Method::DELETE,
            &format!("/v1/instance-offerings/{id}?wait=10"),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.count("instance-offerings").await, 1);
}
