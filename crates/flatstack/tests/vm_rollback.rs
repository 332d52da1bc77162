//! The no-leak guarantee, step by step: for every step of creating, starting, stopping and
//! destroying a VM, a failure injected there (an error, a panic, a hang, a refusal, a
//! hypervisor or storage failure, an exhausted network) fails the call with an error that
//! names the step, and leaves the whole cloud — host and storage capacity, simulator VMs
//! and volumes, every VM, NIC, IP, lease, volume and quota row — exactly as it was.

mod common;

use common::cloud::{act, data_centre, snapshot, vm_body, Dc};
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;

/// A hanging extension is cut off after this long.
const MANIFEST: &str = "[config]\nextension.timeout_ms = 300\n";

/// Where and how a failure is injected.
#[derive(Debug, Clone, Copy)]
enum Inject {
    /// The fault-injection plugin's implementor of an extension point: `fail`, `panic`,
    /// or `hang`.
    Point(&'static str, &'static str),
    /// A simulated host operation fails on every host.
    Host(&'static str),
    /// A simulated primary-storage operation fails.
    Storage(&'static str),
    /// Nothing: the call fails of itself.
    Nothing,
}

async fn arm(node: &Node, dc: &Dc, inject: Inject) {
    let (paths, body): (Vec<String>, Value) = match inject {
        Inject::Point(point, mode) => {
            let (status, reply) = node
                .post(
                    "/v1/fault-injections?wait=10",
                    json!({"point": point, "mode": mode, "once": true}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{reply}");
            return;
        }
        Inject::Host(op) => (
            dc.hosts.iter().map(|h| format!("/v1/hosts/{h}")).collect(),
            json!({"action": "inject_failure", "operation": op, "fail": true, "once": true}),
        ),
        Inject::Storage(op) => (
            vec![format!("/v1/primary-storage/{}", dc.ps)],
            json!({"action": "inject_failure", "operation": op, "fail": true, "once": true}),
        ),
        Inject::Nothing => return,
    };
    for p in paths {
        let (status, reply) = node
            .post(&format!("{p}/actions?wait=10"), body.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

/// Where the error says the call failed: the flow step, else the extension point.
fn failed_at(error: &Value) -> String {
    let details = &error["error"]["details"];
    details["step"]
        .as_str()
        .or_else(|| details["point"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Arms `inject`, runs `call`, and asserts it failed at `step` and changed nothing.
async fn fails_cleanly(
    node: &Node,
    dir: &Path,
    dc: &Dc,
    inject: Inject,
    step: &str,
    call: impl std::future::Future<Output = (StatusCode, Value)>,
) {
    let before = snapshot(node, dir, dc).await;
    arm(node, dc, inject).await;
    let (status, error) = call.await;
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{inject:?}: {status} {error}"
    );
    assert_eq!(failed_at(&error), step, "{inject:?}: {error}");
    // Nothing left armed by the fault-injection plugin (a `once` that fired is gone).
    assert_eq!(node.count("fault-injections").await, 0, "{inject:?}");
    assert_eq!(
        snapshot(node, dir, dc).await,
        before,
        "{inject:?} at {step} left something behind"
    );
}

const MODES: [&str; 3] = ["fail", "panic", "hang"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_any_step_of_any_operation_leaves_nothing_behind() {
    let dir = common::data_dir();
    let node = Node::start_with_manifest(dir.path(), MANIFEST);
    let dc = data_centre(&node).await;
    let d = dir.path();

    // A second L3 network with a single address, taken by the VM every case starts from:
    // a create on both networks gets its first address, then finds the second exhausted.
    let l2 = node.get(&format!("/v1/l3-networks/{}", dc.l3)).await.1["inventory"]
        ["l2_network_uuid"]
        .clone();
    let tiny = uuid(
        &node
            .create(
                "l3-networks",
                json!({"name": "tiny", "l2_network_uuid": l2}),
            )
            .await,
    );
    let (status, range) = node
        .post(
            &format!("/v1/l3-networks/{tiny}/ip-ranges?wait=10"),
            json!({"name": "one", "start_ip": "172.16.0.10", "end_ip": "172.16.0.10",
                "netmask": "255.255.255.0", "gateway": "172.16.0.1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{range}");
    let mut both = vm_body(&dc, "base");
    both["l3_network_uuids"] = json!([dc.l3, tiny]);
    let base = uuid(&node.create("vm-instances", both.clone()).await);
    both["name"] = json!("doomed");

    // Create: every step of the flow.
    let create = || node.post("/v1/vm-instances?wait=10", vm_body(&dc, "doomed"));
    for mode in ["fail", "panic"] {
        let inject = Inject::Point("vm.create.pre-check", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.create.pre-check", create()).await;
    }
    for (point, step) in [
        ("vm.create.reserve", "vm.create.reserve"),
        ("vm.host-allocate.filter", "host.allocate"),
        ("vm.volume.allocate", "vm.volume.allocate"),
        ("vm.pre-instantiate", "vm.pre-instantiate"),
        // After the hypervisor started it: the VM is stopped again.
        ("vm.post-instantiate", "vm.post-instantiate"),
    ] {
        for mode in MODES {
            let inject = Inject::Point(point, mode);
            fails_cleanly(&node, d, &dc, inject, step, create()).await;
        }
    }
    let inject = Inject::Storage("create_volume");
    fails_cleanly(&node, d, &dc, inject, "vm.volume.allocate", create()).await;
    let inject = Inject::Host("start_vm");
    fails_cleanly(&node, d, &dc, inject, "hypervisor.start", create()).await;
    // The tiny network is exhausted: the first NIC's address is given back.
    let exhausted = node.post("/v1/vm-instances?wait=10", both.clone());
    fails_cleanly(&node, d, &dc, Inject::Nothing, "nic.allocate", exhausted).await;

    // Stop, then start, of the running base VM.
    let stop = || act(&node, &base, "stop");
    let inject = Inject::Point("vm.stop.pre-check", "fail");
    fails_cleanly(&node, d, &dc, inject, "vm.stop.pre-check", stop()).await;
    for mode in MODES {
        let inject = Inject::Point("vm.pre-stop", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.pre-stop", stop()).await;
    }
    let inject = Inject::Host("stop_vm");
    fails_cleanly(&node, d, &dc, inject, "hypervisor.stop", stop()).await;
    let (status, stopped) = stop().await;
    assert_eq!(status, StatusCode::OK, "{stopped}");

    let start = || act(&node, &base, "start");
    for mode in ["fail", "panic"] {
        let inject = Inject::Point("vm.start.pre-check", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.start.pre-check", start()).await;
    }
    for mode in MODES {
        let inject = Inject::Point("vm.pre-start", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.pre-start", start()).await;
    }
    let inject = Inject::Host("start_vm");
    fails_cleanly(&node, d, &dc, inject, "hypervisor.start", start()).await;
    let (status, started) = start().await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let inject = Inject::Point("vm.reboot.pre-check", "fail");
    let reboot = act(&node, &base, "reboot");
    fails_cleanly(&node, d, &dc, inject, "vm.reboot.pre-check", reboot).await;

    // Destroy.
    let path = format!("/v1/vm-instances/{base}?wait=10");
    let destroy = || node.send(Method::DELETE, &path, None);
    for mode in ["fail", "panic"] {
        let inject = Inject::Point("vm.destroy.pre-check", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.destroy.pre-check", destroy()).await;
    }
    for mode in MODES {
        let inject = Inject::Point("vm.pre-destroy", mode);
        fails_cleanly(&node, d, &dc, inject, "vm.pre-destroy", destroy()).await;
    }
    let inject = Inject::Host("stop_vm");
    fails_cleanly(&node, d, &dc, inject, "hypervisor.stop", destroy()).await;

    // After all that, the cloud still works, and a destroy gives back what a create took.
    let before = snapshot(&node, d, &dc).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "fine")).await);
    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{vm}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    assert_eq!(snapshot(&node, d, &dc).await, before);
    let (status, err) = destroy().await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
}

#[tokio::test]
async fn fault_injections_are_checked_and_listed() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    for (body, field) in [
        (
            json!({"point": "vm.no-such-point", "mode": "fail"}),
            "point",
        ),
        (
            json!({"point": "vm.create.pre-check", "mode": "hang"}),
            "mode",
        ),
    ] {
        let (status, err) = node.post("/v1/fault-injections?wait=10", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["details"]["field"], field, "{err}");
    }
    let (status, err) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.pre-start", "mode": "sometimes"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(
        node.count("fault-injections").await,
        0,
        "bad input arms nothing"
    );

    let armed = node
        .create(
            "fault-injections",
            json!({"point": "vm.pre-start", "mode": "hang"}),
        )
        .await;
    assert_eq!(armed["once"], false);
    let (status, err) = node
        .post(
            "/v1/fault-injections?wait=10",
            json!({"point": "vm.pre-start", "mode": "fail"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one injection per point: {err}"
    );
    let id = uuid(&armed);
    let (status, shown) = node.get(&format!("/v1/fault-injections/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["inventory"]["point"], "vm.pre-start");
    let (status, err) = node
        .send(
            Method::PATCH,
            &format!("/v1/fault-injections/{id}?wait=10"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/fault-injections/{id}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(node.count("fault-injections").await, 0);
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/fault-injections/{id}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
