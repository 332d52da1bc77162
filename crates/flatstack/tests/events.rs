//! Canonical events leaving the node: over HTTP (`/v1/events` pages, `/v1/events/stream`
//! server-sent events, resumed from a sequence, `410` beyond the retention) and over the
//! real RabbitMQ (`--amqp-url`: every kind of change in sequence order, nothing lost to a
//! SIGKILL before the relay published nor to an outage of the broker).

mod common;

use common::cloud::{data_centre, vm_body, GIB};
use common::{amqp, uuid, Node};
use lapin::options::{BasicAckOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every event in the node's log, over HTTP, page by page.
async fn all_events(node: &Node) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = node
            .get(&format!("/v1/events?after={after}&limit=50"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let batch = page["events"].as_array().expect("events").clone();
        after = page["next"].as_i64().expect("next");
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

fn types(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_owned())
        .collect()
}

/// A queue of this test's own on `flatstack.events`, bound to every event type.
struct Consumer {
    _connection: Connection,
    consumer: lapin::Consumer,
}

impl Consumer {
    async fn bind(queue: &str) -> Consumer {
        let connection = amqp::connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                "flatstack.events".into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        let (queue, consumer) = amqp::exclusive_queue(&channel, queue, false).await;
        channel
            .queue_bind(
                queue.as_str().into(),
                "flatstack.events".into(),
                "io.flatstack.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        Consumer {
            _connection: connection,
            consumer,
        }
    }

    /// The next event, checked against its AMQP properties, or `None` after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let delivery = amqp::next(&mut self.consumer, within).await?;
        let event: Value = serde_json::from_slice(&delivery.data).expect("JSON event");
        assert_eq!(
            delivery.routing_key.as_str(),
            event["type"].as_str().expect("type")
        );
        let properties = &delivery.properties;
        assert_eq!(
            properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/cloudevents+json")
        );
        assert_eq!(
            properties.message_id().as_ref().map(|c| c.as_str()),
            event["id"].as_str()
        );
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        Some(event)
    }

    /// Receives until every event of `expected` after the first `seen` (which came
    /// before) arrived, and returns what arrived (repeats included), asserting that each
    /// new event is the next one of the log: in order, no gap. A repeat (at least once)
    /// must be one that already came, identical.
    async fn receive_all(
        &mut self,
        expected: &[Value],
        seen: usize,
        within: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        let mut next = seen;
        while next < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next(left).await else {
                panic!(
                    "{} of {} events arrived; missing from seq {}",
                    next,
                    expected.len(),
                    expected[next]["seq"]
                );
            };
            let seq = event["seq"].as_i64().expect("seq");
            match expected.iter().position(|e| e["seq"] == seq) {
                Some(at) if at == next => next += 1,
                Some(at) if at < next => assert_eq!(event, expected[at], "a repeat is the same"),
                // Later events of the log than those expected are fine only once all came.
                _ => panic!("event {seq} arrived before {}", expected[next]["seq"]),
            }
            received.push(event);
        }
        received
    }
}

/// A TCP proxy to the broker that can be cut (every connection dropped, new ones refused)
/// and restored: a broker outage, as the node sees it.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(up: bool) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let broker = amqp::url();
        let upstream = broker
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("127.0.0.1:5672")
            .to_owned();
        let url = broker.replace(&upstream, &format!("127.0.0.1:{port}"));
        let up = Arc::new(AtomicBool::new(up));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (up, connections) = (up.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the broker is "down"
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().expect("lock").push(task);
                }
            })
        };
        Proxy {
            url,
            up,
            connections,
            _accept: accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn relayed(dir: &std::path::Path, url: &str) -> Node {
    Node::start_custom(dir, &["--amqp-url".as_ref(), url.as_ref()], &[])
}

#[tokio::test]
async fn every_kind_of_change_reaches_rabbitmq_as_a_cloudevent_in_sequence_order() {
    let _broker = amqp::BROKER.lock().await;
    let mut consumer = Consumer::bind(&format!("test-{}", uuid::Uuid::new_v4())).await;
    let dir = common::data_dir();
    let node = relayed(dir.path(), &amqp::url());
    let dc = data_centre(&node).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "vm")).await);
    let volume = uuid(
        &node
            .create("volumes", json!({"name": "data", "size": GIB}))
            .await,
    );
    for action in [
        json!({"action": "attach", "vm_instance_uuid": vm}),
        json!({"action": "detach"}),
    ] {
        let (status, reply) = node
            .post(&format!("/v1/volumes/{volume}/actions?wait=10"), action)
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let (status, reply) = node
        .send(
            Method::DELETE,
            &format!("/v1/volumes/{volume}?wait=10"),
            None,
        )
        .await;
    assert!(status.is_success(), "{reply}");
    let (status, reply) = node
        .post(
            &format!("/v1/vm-instances/{vm}/actions?wait=10"),
            json!({"action": "stop"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{vm}?wait=10"),
            None,
        )
        .await;
    assert!(status.is_success(), "{reply}");

    let log = all_events(&node).await;
    let received = consumer.receive_all(&log, 0, Duration::from_secs(30)).await;
    assert_eq!(received, log, "exactly the log, once each, in order");
    let types = types(&log);
    for expected in [
        "zones.created",
        "clusters.created",
        "hosts.created",
        "primary-storage.attached",
        "l2-networks.created",
        "l2-networks.attached",
        "l3-networks.created",
        "vm-instances.created",
        "vm-instances.state-changed",
        "vm-instances.deleted",
        "volumes.created",
        "volumes.attached",
        "volumes.detached",
        "volumes.deleted",
    ] {
        let ty = format!("io.flatstack.{expected}.v1");
        assert!(types.contains(&ty), "no {ty} in {types:?}");
    }
    // Strictly increasing, and what a consumer needs: a subject, an id, a schema.
    let seqs = seqs(&log);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let attached = log
        .iter()
        .find(|e| e["type"] == "io.flatstack.volumes.attached.v1")
        .expect("attached");
    assert_eq!(attached["subject"], volume.as_str());
    assert_eq!(attached["data"]["target_uuid"], vm.as_str());
    assert_eq!(attached["specversion"], "1.0");
    assert_eq!(
        attached["dataschema"],
        "flatstack:/v1/schemas/events/io.flatstack.volumes.attached.v1"
    );
    let stopped = log.iter().find(|e| {
        e["type"] == "io.flatstack.vm-instances.state-changed.v1" && e["data"]["to"] == "Stopped"
    });
    assert!(stopped.is_some(), "the stop is announced");
}

#[tokio::test]
async fn no_event_is_lost_to_a_kill_before_publishing_nor_to_a_broker_outage() {
    let _broker = amqp::BROKER.lock().await;
    let mut consumer = Consumer::bind(&format!("test-{}", uuid::Uuid::new_v4())).await;
    let proxy = Proxy::start(false).await;
    let dir = common::data_dir();
    // The broker is unreachable: the changes commit, the relay cannot publish them.
    let mut node = relayed(dir.path(), &proxy.url);
    for i in 0..10 {
        node.create("zones", json!({"name": format!("z{i}")})).await;
    }
    let before_kill = all_events(&node).await;
    assert_eq!(before_kill.len(), 10);
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(10))
        .await
        .expect("killed");
    drop(node);
    assert!(consumer.next(Duration::from_millis(300)).await.is_none());

    // Back, with the broker: every event committed before the kill is delivered.
    proxy.restore();
    let node = relayed(dir.path(), &proxy.url);
    let mut received = consumer
        .receive_all(&before_kill, 0, Duration::from_secs(30))
        .await;

    // An outage while changes go on: once the broker is back, all of them arrive, after
    // the earlier ones, in order.
    proxy.cut();
    let creates: Vec<_> = (0..20)
        .map(|i| node.create("zones", json!({"name": format!("during-{i}")})))
        .collect();
    futures::future::join_all(creates).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let log = all_events(&node).await;
    assert_eq!(log.len(), 30);
    received.extend(
        consumer
            .receive_all(&log, 10, Duration::from_secs(30))
            .await,
    );
    let distinct: BTreeSet<i64> = seqs(&received).into_iter().collect();
    assert_eq!(distinct.into_iter().collect::<Vec<_>>(), seqs(&log));
}

/// Reads server-sent events from `response` until `count` arrived: (id, event, data).
async fn read_sse(response: &mut reqwest::Response, count: usize) -> Vec<(i64, String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .expect("chunk")
            .expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().expect("numeric id"));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                events.push((id, event, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    events
}

#[tokio::test]
async fn events_over_http_page_stream_resume_and_say_gone_beyond_the_window() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    for name in ["a", "b", "c"] {
        node.create(
            "clusters",
            json!({"name": name, "zone_uuid": zone, "hypervisor_type": "Simulator"}),
        )
        .await;
    }
    let (status, _) = node
        .send(
            Method::PATCH,
            &format!("/v1/zones/{zone}?wait=10"),
            Some(json!({"description": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let log = all_events(&node).await;
    assert_eq!(log.len(), 5, "{log:?}");
    let (_, everything) = node.get("/v1/events?limit=1000").await;
    assert_eq!(everything["events"].as_array().expect("events"), &log);
    assert_eq!(everything["next"], log[4]["seq"]);

    // Filters.
    for (query, expected) in [
        ("type=io.flatstack.clusters.created.v1", 3),
        (&format!("subject={zone}") as &str, 2),
        ("kind=zones", 2),
        ("kind=zones&type=io.flatstack.zones.updated.v1", 1),
        ("kind=hosts", 0),
    ] {
        let (status, page) = node.get(&format!("/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["events"].as_array().expect("events").len(),
            expected,
            "{query}"
        );
        assert_eq!(
            page["next"], log[4]["seq"],
            "{query}: everything was looked at"
        );
    }
    // Bad input: a clear 400 naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
    ] {
        let (status, error) = node.get(&format!("/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }

    // The stream: from the start, then what is committed while it is open.
    let mut stream = node
        .http
        .get(format!("{}/v1/events/stream?after=0", node.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        stream.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let first = read_sse(&mut stream, 5).await;
    assert_eq!(
        first.iter().map(|(id, _, _)| *id).collect::<Vec<_>>(),
        seqs(&log)
    );
    assert!(first
        .iter()
        .all(|(id, ty, data)| data["seq"] == *id && data["type"] == *ty));
    let late = uuid(&node.create("zones", json!({"name": "late"})).await);
    let more = read_sse(&mut stream, 1).await;
    assert_eq!(more[0].2["subject"], late.as_str());
    drop(stream);
    // Resumed after the third, as a reconnecting browser does.
    let mut resumed = node
        .http
        .get(format!("{}/v1/events/stream?after=0", node.base))
        .header("Last-Event-ID", log[2]["seq"].to_string())
        .send()
        .await
        .expect("stream");
    let again = read_sse(&mut resumed, 3).await;
    assert_eq!(again[0].0, log[3]["seq"].as_i64().expect("seq"));
    assert_eq!(again[2].2["subject"], late.as_str());
    drop(resumed);

    // The schemas of the types.
    let (status, schemas) = node.get("/v1/schemas").await;
    assert_eq!(status, StatusCode::OK);
    let vm_created = &schemas["events"]["io.flatstack.vm-instances.created.v1"];
    assert_eq!(vm_created["verb"], "created", "{vm_created}");
    let (status, schema) = node
        .get("/v1/schemas/events/io.flatstack.vm-instances.created.v1")
        .await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    assert!(
        schema["properties"]["inventory"]["$ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("/v1/openapi.json#/components/schemas/")),
        "{schema}"
    );
    let (status, _) = node.get("/v1/schemas/events/io.flatstack.nothing.v1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A node that keeps only the two newest events: older ones are gone, and it says
    // from where to start again.
    drop(node);
    let node = Node::start_custom(
        dir.path(),
        &["--events-retention-count".as_ref(), "2".as_ref()],
        &[],
    );
    // It prunes at start, beside serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, error) = loop {
        let (status, body) = node.get("/v1/events?after=0").await;
        if status != StatusCode::OK || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::GONE, "{error}");
    let newest = seqs(&all_events_after(&node, log[3]["seq"].as_i64().expect("seq")).await);
    assert_eq!(newest.len(), 2);
    assert_eq!(error["error"]["code"], "gone");
    assert_eq!(error["error"]["details"]["oldest"], newest[0]);
    let (status, _) = node
        .get(&format!("/v1/events?after={}", newest[0] - 1))
        .await;
    assert_eq!(status, StatusCode::OK);
    let gone = node
        .http
        .get(format!("{}/v1/events/stream", node.base))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("stream");
    assert_eq!(gone.status(), StatusCode::GONE);
}

async fn all_events_after(node: &Node, after: i64) -> Vec<Value> {
    let (status, page) = node.get(&format!("/v1/events?after={after}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().expect("events").clone()
}
