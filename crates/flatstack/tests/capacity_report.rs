//! The hybrid form: the opt-in `capacity-report` plugin publishes each host's capacity
//! every N seconds as a canonical event, for services outside the node; off by default;
//! its interval is checked at start.

mod common;

use common::cloud::{data_centre, vm_body};
use common::{uuid, Node};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const TYPE: &str = "io.flatstack.hosts.capacity-reported.v1";

async fn reports(node: &Node) -> Vec<Value> {
    let (status, page) = node
        .get(&format!("/v1/events?type={TYPE}&limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().expect("events").clone()
}

fn manifest(dir: &std::path::Path, interval: &str) -> std::path::PathBuf {
    let path = dir.join("capacity.toml");
    std::fs::write(
        &path,
        format!("[config]\ncapacity-report.interval_secs = {interval}\n"),
    )
    .expect("manifest");
    path
}

#[tokio::test]
async fn each_hosts_capacity_is_published_every_interval_when_enabled() {
    let dir = common::data_dir();
    let config = manifest(dir.path(), "1");
    let node = Node::start_custom(
        dir.path(),
        &[
            "--enable".as_ref(),
            "fault-injection,capacity-report".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &[],
    );
    let dc = data_centre(&node).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "vm")).await);
    let (_, shown) = node.get(&format!("/v1/vm-instances/{vm}")).await;
    let host = shown["inventory"]["host_uuid"]
        .as_str()
        .expect("host")
        .to_owned();
    let (_, inventory) = node.get(&format!("/v1/hosts/{host}")).await;
    let free_cpu = &inventory["inventory"]["available_cpu"];

    // Within a few intervals, a report of every host, this one with the VM's CPU taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let found = reports(&node)
            .await
            .into_iter()
            .rev()
            .find(|e| e["subject"] == host.as_str() && &e["data"]["available_cpu"] == free_cpu);
        if let Some(report) = found {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "no report of {host} with {free_cpu} free CPUs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["data"]["cpu_capacity"], 8);
    assert_eq!(report["data"]["cluster_uuid"], dc.cluster.as_str());
    assert_eq!(report["data"]["status"], "Connected");
    for h in &dc.hosts {
        assert!(
            reports(&node)
                .await
                .iter()
                .any(|e| e["subject"] == h.as_str()),
            "{h}"
        );
    }
    // Its type is listed with the schema of its data.
    let (_, schemas) = node.get("/v1/schemas").await;
    assert_eq!(
        schemas["events"][TYPE]["verb"], "capacity-reported",
        "{schemas}"
    );
    let (status, schema) = node.get(&format!("/v1/schemas/events/{TYPE}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        schema["properties"]["available_memory"].is_object(),
        "{schema}"
    );
}

#[tokio::test]
async fn it_is_off_unless_enabled_and_a_bad_interval_stops_the_start() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    data_centre(&node).await;
    let (_, plugins) = node.get("/v1/plugins").await;
    assert!(
        !plugins.to_string().contains("capacity-report"),
        "{plugins}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(reports(&node).await.is_empty());
    drop(node);

    let config = manifest(dir.path(), "0");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--enable",
            "capacity-report",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env_remove("FLATSTACK_DATABASE_URL")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("capacity-report.interval_secs"), "{stderr}");
}
