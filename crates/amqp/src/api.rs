//! The API over the broker: a request is a JSON message on the queue [`API_QUEUE`] naming
//! an HTTP method and path (and optionally headers and a body); the reply, sent to the
//! request's `reply_to` with its `correlation_id`, is `{"status": <HTTP status>, "body":
//! <the JSON body>}`. Each request runs through the very router HTTP requests go through,
//! so bodies, validation, jobs, error shapes and codes are the same on both.
//!
//! The queue is not durable and goes away with the last node consuming it: a client that
//! publishes with `mandatory` gets its request back at once (`basic.return`) when no node
//! serves the API, rather than waiting for a timeout.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::Router;
use flatstack_kernel::Fault;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tower::ServiceExt;

use crate::Backoff;

/// The queue API requests are sent to (on the default exchange).
pub const API_QUEUE: &str = "flatstack.api";

/// The most requests a node runs at once from the queue; the rest wait in the broker.
const PREFETCH: u16 = 64;

/// The largest reply body: a list of many resources, not an event stream.
const MAX_REPLY: usize = 64 << 20;

/// One request, as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRequest {
    /// `GET`, `POST`, `PATCH`, `PUT` or `DELETE`.
    method: String,
    /// The path and query, as over HTTP: `/v1/zones?wait=10`.
    path: String,
    /// Request headers, e.g. `Idempotency-Key`, `Authorization`.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The JSON body, if the request has one.
    #[serde(default)]
    body: Option<Value>,
}

/// Serves the API on [`API_QUEUE`] of the broker at `url` until dropped, reconnecting
/// after an outage.
pub struct ApiServer {
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts consuming requests and answering them through `router`.
    pub fn start(url: String, router: Router) -> ApiServer {
        ApiServer {
            task: tokio::spawn(serve(url, router)),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(url: String, router: Router) {
    let mut backoff = Backoff::default();
    loop {
        match consume(&url, &router, &mut backoff).await {
            Ok(()) => tracing::warn!("the API queue's consumer ended; consuming again"),
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.next_ms(), "the API over AMQP is down");
            }
        }
        backoff.wait().await;
    }
}

async fn consume(url: &str, router: &Router, backoff: &mut Backoff) -> Result<(), lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    channel
        .queue_declare(
            API_QUEUE.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut deliveries = channel
        .basic_consume(
            API_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = API_QUEUE, "serving the API over AMQP");
    backoff.reset();
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let (channel, router) = (channel.clone(), router.clone());
        tokio::spawn(async move {
            if let Err(error) = answer(&channel, router, delivery).await {
                tracing::warn!(%error, "an API request over AMQP could not be answered");
            }
        });
    }
    Ok(())
}

/// Runs one request and replies. The request is acknowledged once answered: if the node
/// dies first, the broker gives it to another node (send an `Idempotency-Key` with
/// creates and actions so that a redelivery does not do the work twice).
async fn answer(channel: &Channel, router: Router, delivery: Delivery) -> Result<(), lapin::Error> {
    let (status, body) = match parse(&delivery.data) {
        Ok(request) => call(router, request).await,
        Err(fault) => (400, flatstack_api::error_body(&fault)),
    };
    let properties = &delivery.properties;
    match properties.reply_to() {
        Some(reply_to) => {
            let mut headers = FieldTable::default();
            headers.insert("status".into(), AMQPValue::ShortUInt(status));
            let mut reply = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_headers(headers);
            if let Some(id) = properties.correlation_id() {
                reply = reply.with_correlation_id(id.clone());
            }
            let payload = json!({"status": status, "body": body}).to_string();
            channel
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    payload.as_bytes(),
                    reply,
                )
                .await?;
        }
        None => tracing::warn!(
            status,
            "an API request over AMQP had no reply_to: not answered"
        ),
    }
    delivery.ack(BasicAckOptions::default()).await.map(drop)
}

/// The request in a message, or why it is not one (a `400` that changes nothing).
fn parse(data: &[u8]) -> Result<ApiRequest, Fault> {
    let request: ApiRequest = serde_json::from_slice(data).map_err(|e| {
        Fault::invalid(
            "request",
            format!("an API request is a JSON object with `method`, `path` and optionally `headers` and `body`: {e}"),
        )
    })?;
    if !request.path.starts_with('/') {
        return Err(Fault::invalid(
            "path",
            "the path starts with `/`, e.g. /v1/zones",
        ));
    }
    if request.path.starts_with("/v1/events/stream") {
        return Err(Fault::invalid(
            "path",
            "the event stream is not a request: bind a queue to the flatstack.events exchange",
        ));
    }
    Ok(request)
}

/// Runs `request` through the router: its status and JSON body.
async fn call(router: Router, request: ApiRequest) -> (u16, Value) {
    let http = match http_request(request) {
        Ok(http) => http,
        Err(fault) => return (400, flatstack_api::error_body(&fault)),
    };
    let response = match router.oneshot(http).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let body = match axum::body::to_bytes(response.into_body(), MAX_REPLY).await {
        Ok(bytes) if bytes.is_empty() => Value::Null,
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) => flatstack_api::error_body(&Fault::internal(format!(
            "the reply could not be read: {error}"
        ))),
    };
    (status, body)
}

fn http_request(request: ApiRequest) -> Result<Request<Body>, Fault> {
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PATCH" => Method::PATCH,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        other => {
            return Err(Fault::invalid(
                "method",
                format!(
                    "`{}` is not GET, POST, PATCH, PUT or DELETE",
                    other.escape_debug()
                ),
            ))
        }
    };
    // The audit trail says where a request came from: here, the broker.
    let mut builder = Request::builder()
        .method(method)
        .uri(&request.path)
        .extension(flatstack_api::Origin("amqp".to_owned()));
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Fault::invalid(
                "headers",
                format!("`{}` is not a header name", name.escape_debug()),
            )
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            Fault::invalid(
                "headers",
                format!("the value of `{name}` is not a header value"),
            )
        })?;
        builder = builder.header(name, value);
    }
    let body = match &request.body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    builder
        .body(body)
        .map_err(|e| Fault::invalid("path", format!("not a request path: {e}")))
}
