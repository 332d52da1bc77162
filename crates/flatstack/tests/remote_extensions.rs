//! Remote extension points against the real RabbitMQ: a service outside the node registers
//! as an implementor of `vm.create.pre-check` and refuses; when it is slow or absent, its
//! failure policy decides (`fail` refuses, `ignore` goes on); it is listed and measured
//! with the in-process implementors; a refused or failed create leaks nothing; a broken
//! implementor can always be removed. Registrations are checked and survive a restart.

mod common;

use common::cloud::{data_centre, vm_body, Dc};
use common::{amqp, Node};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// A naming policy outside the node: refuses VM names starting with `bad`, answers names
/// starting with `slow` after two seconds. Its queue is exclusive: it goes with the service.
struct Policy {
    connection: Connection,
    queue: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Policy {
    async fn start() -> Policy {
        let connection = amqp::connect().await;
        let channel = connection.create_channel().await.expect("channel");
        let name = format!("policy-{}", uuid::Uuid::new_v4());
        let (queue, mut calls) = amqp::exclusive_queue(&channel, &name, false).await;
        let task = tokio::spawn(async move {
            while let Some(Ok(call)) = calls.next().await {
                let channel = channel.clone();
                tokio::spawn(async move {
                    let request: Value = serde_json::from_slice(&call.data).expect("JSON call");
                    assert_eq!(request["point"], "vm.create.pre-check");
                    let name = request["input"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if name.starts_with("slow") {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let answer = if name.starts_with("bad") {
                        json!({"allow": false, "reason": format!("`{name}` breaks the naming rule")})
                    } else {
                        json!({"allow": true})
                    };
                    let reply_to = call.properties.reply_to().clone().expect("reply_to");
                    let id = call
                        .properties
                        .correlation_id()
                        .clone()
                        .expect("correlation id");
                    let _ = channel
                        .basic_publish(
                            "".into(),
                            reply_to,
                            BasicPublishOptions::default(),
                            answer.to_string().as_bytes(),
                            BasicProperties::default().with_correlation_id(id),
                        )
                        .await;
                    let _ = call.ack(BasicAckOptions::default()).await;
                });
            }
        });
        Policy {
            connection,
            queue,
            _task: task,
        }
    }

    async fn stop(self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

async fn register(node: &Node, body: Value) -> (StatusCode, Value) {
    node.post(
        "/v1/extension-points/vm.create.pre-check/remote-implementors",
        body,
    )
    .await
}

async fn unregister(node: &Node, name: &str) -> StatusCode {
    node.send(
        Method::DELETE,
        &format!("/v1/extension-points/vm.create.pre-check/remote-implementors/{name}"),
        None,
    )
    .await
    .0
}

/// What a create could leak: the VMs, and each host's free CPU and memory.
async fn footprint(node: &Node, dc: &Dc) -> Value {
    let mut hosts = Vec::new();
    for host in &dc.hosts {
        let inventory = node.get(&format!("/v1/hosts/{host}")).await.1["inventory"].clone();
        hosts.push(json!([
            inventory["available_cpu"],
            inventory["available_memory"]
        ]));
    }
    json!({"vms": node.count("vm-instances").await, "hosts": hosts,
           "volumes": node.count("volumes").await})
}

async fn create_vm(node: &Node, dc: &Dc, name: &str) -> (StatusCode, Value) {
    node.post("/v1/vm-instances?wait=20", vm_body(dc, name))
        .await
}

fn remote_stats(points: &Value, name: &str) -> Value {
    let point = points["extension_points"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "vm.create.pre-check")
        .cloned()
        .unwrap_or_else(|| panic!("no vm.create.pre-check in {points}"));
    assert_eq!(point["remote"], true, "{point}");
    point["implementors"]
        .as_array()
        .expect("implementors")
        .iter()
        .find(|i| i["plugin"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not listed: {point}"))
}

#[tokio::test]
async fn a_remote_veto_refuses_times_out_or_is_absent_by_its_policy_and_leaks_nothing() {
    let _broker = amqp::BROKER.lock().await;
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &["--amqp-url".as_ref(), amqp::url().as_ref()],
        &[],
    );
    let dc = data_centre(&node).await;
    let policy = Policy::start().await;

    // Bad registrations are refused, naming what is wrong; nothing is registered.
    let good = json!({"name": "naming", "queue": policy.queue, "timeout_ms": 500, "failure_policy": "fail"});
    for (body, status, field) in [
        (
            common::with(good.clone(), json!({"timeout_ms": 5})),
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            common::with(good.clone(), json!({"timeout_ms": 30001})),
            StatusCode::BAD_REQUEST,
            "timeout_ms",
        ),
        (
            common::with(good.clone(), json!({"name": "Bad Name"})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            common::with(good.clone(), json!({"queue": "a queue"})),
            StatusCode::BAD_REQUEST,
            "queue",
        ),
        (
            common::with(good.clone(), json!({"failure_policy": "maybe"})),
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            common::with(good.clone(), json!({"extra": 1})),
            StatusCode::BAD_REQUEST,
            "body",
        ),
    ] {
        let (got, error) = register(&node, body).await;
        assert_eq!(
            (got, &error["error"]["details"]["field"]),
            (status, &json!(field)),
            "{error}"
        );
    }
    let (status, _) = node
        .post(
            "/v1/extension-points/vm.start.pre-check/remote-implementors",
            good.clone(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a point that takes no remote implementors"
    );
    let (status, _) = node
        .post(
            "/v1/extension-points/no.such.point/remote-implementors",
            good.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = node
        .get("/v1/extension-points/vm.create.pre-check/remote-implementors")
        .await;
    assert_eq!(listed["total"], 0, "{listed}");

    let (status, created) = register(&node, good.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = register(&node, good.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "one name per point");

    // It refuses: the create is refused with its reason, and nothing is left.
    let before = footprint(&node, &dc).await;
    let (status, refused) = create_vm(&node, &dc, "bad-vm").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`bad-vm` breaks the naming rule"),
        "{message}"
    );
    assert_eq!(refused["error"]["details"]["remote"], "naming");
    assert_eq!(footprint(&node, &dc).await, before);
    let (status, ok) = create_vm(&node, &dc, "good-vm").await;
    assert_eq!(status, StatusCode::CREATED, "{ok}");
    let before = footprint(&node, &dc).await;

    // Slow, with `fail`: refused at its timeout, nothing left.
    let (status, slow) = create_vm(&node, &dc, "slow-vm").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{slow}");
    assert!(
        slow["error"]["message"]
            .as_str()
            .expect("message")
            .contains("did not answer"),
        "{slow}"
    );
    assert_eq!(footprint(&node, &dc).await, before);

    // Listed and measured with the in-process implementors, marked remote.
    let (_, points) = node.get("/v1/extension-points").await;
    let naming = remote_stats(&points, "naming");
    assert_eq!(naming["remote"]["queue"], policy.queue.as_str(), "{naming}");
    assert_eq!(naming["stats"]["calls"], 3, "{naming}");
    assert_eq!(naming["stats"]["vetoes"], 1, "{naming}");
    assert_eq!(naming["stats"]["timeouts"], 1, "{naming}");

    // With `ignore`, the slow one is let through.
    assert_eq!(unregister(&node, "naming").await, StatusCode::NO_CONTENT);
    let lenient = common::with(
        good.clone(),
        json!({"name": "lenient", "failure_policy": "ignore", "timeout_ms": 300}),
    );
    assert_eq!(register(&node, lenient).await.0, StatusCode::CREATED);
    let (status, slow) = create_vm(&node, &dc, "slow-but-fine").await;
    assert_eq!(status, StatusCode::CREATED, "{slow}");

    // Absent (the service is gone, its queue with it), with `fail`: refused at once, told
    // apart from slow; with `ignore`: let through.
    policy.stop().await;
    let strict = common::with(good.clone(), json!({"name": "strict", "order": -1}));
    assert_eq!(register(&node, strict).await.0, StatusCode::CREATED);
    let before = footprint(&node, &dc).await;
    let started = std::time::Instant::now();
    let (status, absent) = create_vm(&node, &dc, "while-absent").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{absent}");
    assert!(
        absent["error"]["message"]
            .as_str()
            .expect("message")
            .contains("absent"),
        "{absent}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "told at once, not at the timeout"
    );
    assert_eq!(footprint(&node, &dc).await, before);
    // A broken implementor can always be removed; then creates go on (the lenient one
    // ignores its absence).
    assert_eq!(unregister(&node, "strict").await, StatusCode::NO_CONTENT);
    assert_eq!(unregister(&node, "strict").await, StatusCode::NOT_FOUND);
    let (status, fine) = create_vm(&node, &dc, "after-removal").await;
    assert_eq!(status, StatusCode::CREATED, "{fine}");
    let (_, points) = node.get("/v1/extension-points").await;
    assert_eq!(remote_stats(&points, "lenient")["stats"]["errors"], 1);

    // Registrations are kept: a restarted node calls them still.
    drop(node);
    let node = Node::start_custom(
        dir.path(),
        &["--amqp-url".as_ref(), amqp::url().as_ref()],
        &[],
    );
    let (_, listed) = node
        .get("/v1/extension-points/vm.create.pre-check/remote-implementors")
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["inventories"][0]["name"], "lenient");
}

#[tokio::test]
async fn without_a_broker_no_remote_implementor_can_be_registered() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (status, error) = register(
        &node,
        json!({"name": "naming", "queue": "q", "timeout_ms": 500}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .expect("message")
        .contains("--amqp-url"));
}

#[tokio::test]
async fn a_remote_observer_is_sent_vm_events_and_its_absence_never_stops_a_flow() {
    let _broker = amqp::BROKER.lock().await;
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &["--amqp-url".as_ref(), amqp::url().as_ref()],
        &[],
    );
    let dc = data_centre(&node).await;
    let connection = amqp::connect().await;
    let channel = connection.create_channel().await.expect("channel");
    let name = format!("observer-{}", uuid::Uuid::new_v4());
    let (queue, mut seen) = amqp::exclusive_queue(&channel, &name, false).await;
    for point in ["vm.started", "vm.destroyed"] {
        let (status, reply) = node
            .post(
                &format!("/v1/extension-points/{point}/remote-implementors"),
                json!({"name": "audit", "queue": queue, "timeout_ms": 1000}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    let vm = node.create("vm-instances", vm_body(&dc, "observed")).await;
    let uuid = vm["uuid"].as_str().expect("uuid").to_owned();
    let (status, _) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{uuid}?wait=20"),
            None,
        )
        .await;
    assert!(status.is_success());
    let mut points = Vec::new();
    for _ in 0..2 {
        let delivery = amqp::next(&mut seen, Duration::from_secs(10))
            .await
            .expect("an event within 10 s");
        let message: Value = serde_json::from_slice(&delivery.data).expect("JSON");
        assert_eq!(message["event"]["vm_uuid"], uuid.as_str(), "{message}");
        assert_eq!(message["event"]["name"], "observed");
        assert!(message["event"]["host_uuid"].is_string(), "{message}");
        points.push(message["point"].as_str().expect("point").to_owned());
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(points, ["vm.started", "vm.destroyed"]);

    // Gone: the flows go on; the misses are counted.
    connection.close(200, "bye".into()).await.expect("close");
    let (status, reply) = create_vm(&node, &dc, "unobserved").await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, described) = node.get("/v1/extension-points").await;
    let started = described["extension_points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| p["name"] == "vm.started")
        .cloned()
        .expect("vm.started");
    assert_eq!(started["remote"], true);
    let audit = started["implementors"]
        .as_array()
        .expect("implementors")
        .iter()
        .find(|i| i["plugin"] == "audit")
        .cloned()
        .expect("audit listed");
    assert_eq!(audit["stats"]["calls"], 2, "{audit}");
    assert_eq!(audit["stats"]["errors"], 1, "{audit}");
}
