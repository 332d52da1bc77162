//! The API over the real RabbitMQ (`serve --amqp-url`): a request on the `flatstack.api`
//! queue gets the same status and JSON body as over HTTP, through reply-to and correlation
//! id; a malformed message gets an error reply and changes nothing; a path nobody serves
//! is told at once; with no node serving, the broker returns the request at once.

mod common;

use common::{amqp, Node};
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
enum Answer {
    /// The reply: HTTP status and JSON body.
    Reply(u16, Value),
    /// The broker gave the request back: no queue, so no node serving.
    Returned,
}

/// A client with a reply queue of its own.
struct Client {
    _connection: Connection,
    channel: Channel,
    reply_queue: String,
    replies: lapin::Consumer,
    /// Sent as `Authorization` with each [`Client::request`] that names none.
    token: Option<String>,
}

impl Client {
    async fn connect() -> Client {
        let connection = amqp::connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let (reply_queue, replies) = amqp::exclusive_queue(&channel, "", false).await;
        Client {
            token: None,
            _connection: connection,
            channel,
            reply_queue,
            replies,
        }
    }

    /// Sends `payload` (mandatory, so that it comes back if nobody serves the queue).
    async fn send(&mut self, payload: &[u8]) -> Answer {
        let id = uuid::Uuid::new_v4().to_string();
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                "flatstack.api".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                BasicProperties::default()
                    .with_reply_to(self.reply_queue.as_str().into())
                    .with_correlation_id(id.as_str().into())
                    .with_content_type("application/json".into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        if confirm.take_message().is_some() {
            return Answer::Returned;
        }
        loop {
            let delivery = amqp::next(&mut self.replies, Duration::from_secs(20))
                .await
                .expect("a reply within 20 s");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned());
            if correlation.as_deref() != Some(id.as_str()) {
                continue; // an answer to an earlier request that timed out
            }
            let reply: Value = serde_json::from_slice(&delivery.data).expect("JSON reply");
            let status = reply["status"].as_u64().expect("status") as u16;
            return Answer::Reply(status, reply["body"].clone());
        }
    }

    async fn request(&mut self, mut request: Value) -> (u16, Value) {
        if let Some(token) = &self.token {
            if request["headers"]["authorization"].is_null() {
                request["headers"]["authorization"] = json!(format!("Bearer {token}"));
            }
        }
        match self.send(request.to_string().as_bytes()).await {
            Answer::Reply(status, body) => (status, body),
            Answer::Returned => panic!("no node serves the API queue"),
        }
    }

    /// Waits until a node consumes the queue.
    async fn until_served(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .send(
                json!({"method": "GET", "path": "/healthz"})
                    .to_string()
                    .as_bytes(),
            )
            .await
            == Answer::Returned
        {
            assert!(
                Instant::now() < deadline,
                "the node never served the API queue"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_api_over_amqp_answers_as_http_does() {
    let _broker = amqp::BROKER.lock().await;
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &["--amqp-url".as_ref(), amqp::url().as_ref()],
        &[],
    );
    let mut client = Client::connect().await;
    client.until_served().await;
    // Over the broker as over HTTP: nothing without a valid token.
    for authorization in [None, Some("Bearer fst_0000")] {
        let mut anonymous = json!({"method": "POST", "path": "/v1/zones?wait=10",
            "body": {"name": "nobody"}});
        if let Some(authorization) = authorization {
            anonymous["headers"] = json!({"authorization": authorization});
        }
        let (status, reply) = client.request(anonymous).await;
        assert_eq!(status, 401, "{reply}");
    }
    client.token = Some(node.token.clone());

    // A create, with the same reply as over HTTP; then seen over HTTP.
    let (status, created) = client
        .request(json!({"method": "POST", "path": "/v1/zones?wait=10", "body": {"name": "z1"}}))
        .await;
    assert_eq!(status, 201, "{created}");
    let zone = created["inventory"]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let (http_status, shown) = node.get(&format!("/v1/zones/{zone}")).await;
    assert_eq!(http_status, StatusCode::OK);
    let (status, over_amqp) = client
        .request(json!({"method": "GET", "path": format!("/v1/zones/{zone}")}))
        .await;
    assert_eq!((status, &over_amqp), (200, &shown));

    // The same refusals, codes and error shape as over HTTP.
    for (method, path, body) in [
        ("POST", "/v1/zones?wait=10", json!({"name": ""})),
        (
            "POST",
            "/v1/zones?wait=10",
            json!({"name": "z", "color": "red"}),
        ),
        (
            "GET",
            "/v1/zones/00000000000000000000000000000000",
            Value::Null,
        ),
        ("DELETE", "/v1/clusters/nothing?wait=10", Value::Null),
    ] {
        let http = node
            .send(
                method.parse().expect("method"),
                path,
                (!body.is_null()).then(|| body.clone()),
            )
            .await;
        let mut request = json!({"method": method, "path": path});
        if !body.is_null() {
            request["body"] = body;
        }
        let (status, reply) = client.request(request).await;
        assert_eq!(
            (status, reply),
            (http.0.as_u16(), http.1),
            "{method} {path}"
        );
    }

    // A path nobody serves is told at once.
    let started = Instant::now();
    let (status, reply) = client
        .request(json!({"method": "GET", "path": "/v1/no-such-kind"}))
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["error"]["code"], "not_found");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Malformed messages: an error reply naming what is wrong, nothing changed.
    for (payload, field) in [
        (b"not json".to_vec(), "request"),
        (json!({"path": "/v1/zones"}).to_string().into_bytes(), "request"),
        (json!({"method": "POST", "path": "/v1/zones", "extra": 1}).to_string().into_bytes(), "request"),
        (json!({"method": "BREW", "path": "/v1/zones"}).to_string().into_bytes(), "method"),
        (json!({"method": "GET", "path": "v1/zones"}).to_string().into_bytes(), "path"),
        (json!({"method": "GET", "path": "/v1/events/stream"}).to_string().into_bytes(), "path"),
        (json!({"method": "POST", "path": "/v1/zones", "headers": {"bad header": "x"}, "body": {"name": "x"}}).to_string().into_bytes(), "headers"),
    ] {
        let Answer::Reply(status, reply) = client.send(&payload).await else {
            panic!("returned");
        };
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["code"], "invalid_argument", "{reply}");
        assert_eq!(reply["error"]["details"]["field"], field, "{reply}");
    }
    assert_eq!(node.count("zones").await, 1, "nothing changed");

    // A retry with the same Idempotency-Key is the first request's job, not a second zone.
    let create = json!({"method": "POST", "path": "/v1/zones?wait=10",
        "headers": {"Idempotency-Key": "zone-two"}, "body": {"name": "z2"}});
    let (first, one) = client.request(create.clone()).await;
    let (again, two) = client.request(create).await;
    assert_eq!((first, again), (201, 201), "{one} {two}");
    assert_eq!(one["inventory"]["uuid"], two["inventory"]["uuid"]);
    assert_eq!(node.count("zones").await, 2);
}

#[tokio::test]
async fn with_no_node_serving_the_broker_returns_the_request_at_once() {
    let _broker = amqp::BROKER.lock().await;
    let dir = common::data_dir();
    let mut client = Client::connect().await;
    let mut node = Node::start_custom(
        dir.path(),
        &["--amqp-url".as_ref(), amqp::url().as_ref()],
        &[],
    );
    client.until_served().await;
    node.signal(libc::SIGTERM);
    node.wait_exit(Duration::from_secs(30))
        .await
        .expect("stopped");
    // The queue goes with its last consumer (at once, or as soon as the broker sees the
    // connection closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let answer = client
            .send(
                json!({"method": "GET", "path": "/v1/zones"})
                    .to_string()
                    .as_bytes(),
            )
            .await;
        if answer == Answer::Returned {
            assert!(started.elapsed() < Duration::from_secs(2));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still answered after the node stopped: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
