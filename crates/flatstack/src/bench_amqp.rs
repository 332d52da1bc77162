//! `flatstack bench amqp`: what the node adds over RabbitMQ, each beside the same work done
//! raw with the same client library (lapin) on the same broker, in the same run:
//!
//! - **event export**: the relay publishing events from a store's log (read in batches,
//!   published with confirms, the cursor moved per batch) against a raw publisher sending
//!   as many messages of the same bytes with confirms, pipelined as the relay is (batches
//!   of the same size, two in flight);
//! - **the API over AMQP**: `GET /v1/zones/{uuid}` sent as a message to `flatstack.api`
//!   and answered through the node's router, against a raw round trip to a responder that
//!   answers at once with as many bytes; one request at a time, so these are latencies.
//!
//! Each pair runs twice, alternated, and the better of each is reported: the machine is
//! noisy, and the ratio is what matters.

use crate::bench::BenchNode;
use crate::node::NodeOptions;
use crate::Distribution;
use anyhow::{bail, Context};
use flatstack_amqp::{ApiServer, Relay, RelayOptions, EVENTS_EXCHANGE, RELAY_CURSOR};
use flatstack_header::ResourceUpdated;
use flatstack_kernel::Kernel;
use flatstack_store::{EventQuery, Store};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay's batch, and the raw publisher's.
const BATCH: u32 = 500;

/// How long one timed request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    distribution: &Distribution,
    url: &str,
    events: u32,
    requests: u32,
) -> anyhow::Result<()> {
    if events == 0 || requests == 0 {
        bail!("--events and --requests must be at least 1");
    }
    let temp = tempfile::Builder::new()
        .prefix("flatstack-bench-amqp-")
        .tempdir()
        .context("a temporary directory")?;
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    // Both are routed to a queue of the bench's own, as a consumer's would be, and dropped
    // from it between runs.
    let sink = exclusive_queue(&channel).await?;
    channel
        .queue_bind(
            sink.as_str().into(),
            EVENTS_EXCHANGE.into(),
            "io.flatstack.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // The log: `events` zone updates, as a busy node writes them.
    let store = Store::open_data_dir(temp.path()).await?;
    store.migrate(&[]).await?;
    let kernel = Kernel::builder().provide(store.clone()).build()?;
    write_events(&kernel, &store, events).await?;
    let sample = store
        .events(&EventQuery {
            after: 0,
            limit: 1,
            ..Default::default()
        })
        .await?
        .map_err(|gone| anyhow::anyhow!("{gone}"))?;
    let payload = serde_json::to_vec(&sample.events[0])?;

    let (mut relay_best, mut raw_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        raw_best = raw_best.min(raw_publish(&connection, &payload, events).await?);
        purge(&channel, &sink).await?;
        relay_best = relay_best.min(relay_export(&store, url).await?);
        purge(&channel, &sink).await?;
    }
    let rate = |d: Duration| f64::from(events) / d.as_secs_f64();
    println!(
        "event export, {events} events of {} bytes, confirmed, batches of {BATCH}:",
        payload.len()
    );
    println!("  raw publish (lapin)  {:>9.0} events/s", rate(raw_best));
    println!("  relay from the log   {:>9.0} events/s", rate(relay_best));
    println!(
        "  relay / raw          {:>9.0} %",
        100.0 * rate(relay_best) / rate(raw_best)
    );

    // The API: a node in process, a zone to read.
    let node_options = NodeOptions::new(temp.path().join("node"), ([127, 0, 0, 1], 0).into());
    let node = BenchNode::start(distribution, &node_options).await?;
    let outcome = api_round_trips(&node, &connection, url, requests).await;
    node.stop().await?;
    let (api, raw, http) = outcome?;
    println!("one request at a time, {requests} each (mean, p99):");
    println!("  raw AMQP round trip  {}", latency(&raw));
    println!("  API over AMQP        {}", latency(&api));
    println!("  API over HTTP        {}", latency(&http));
    println!(
        "  API over AMQP / raw  {:>9.2} x (mean)",
        mean(&api).as_secs_f64() / mean(&raw).as_secs_f64()
    );
    connection.close(200, "done".into()).await?;
    Ok(())
}

async fn write_events(kernel: &Kernel, store: &Arc<Store>, count: u32) -> anyhow::Result<()> {
    let mut written = 0;
    while written < count {
        let mut tx = store.begin().await?;
        for _ in 0..BATCH.min(count - written) {
            let uuid = format!("{:032x}", written);
            let inventory = json!({"uuid": uuid, "name": format!("zone-{written}"),
                "description": "a zone of the benchmark, as the API shows it",
                "created_at": "2026-12-04T15:30:25.893Z", "updated_at": "2026-12-04T15:30:25.902Z"});
            tx.emit(ResourceUpdated {
                kind: "zones".into(),
                uuid,
                inventory: inventory.as_object().cloned().unwrap_or_default(),
            })
            .await?;
            written += 1;
        }
        tx.commit(kernel.bus()).await?;
    }
    Ok(())
}

/// The relay from a fresh cursor to the end of the log.
async fn relay_export(store: &Arc<Store>, url: &str) -> anyhow::Result<Duration> {
    store.drop_event_cursor(RELAY_CURSOR).await?;
    let newest = store.newest_event_seq().await?;
    let mut options = RelayOptions::new(url);
    options.batch = BATCH;
    let started = Instant::now();
    let relay = Relay::start(store.clone(), options).await?;
    if relay
        .confirmed_up_to(newest, Duration::from_secs(600))
        .await
        .is_none()
    {
        bail!("the relay did not finish within 10 minutes");
    }
    let took = started.elapsed();
    relay.stop();
    Ok(took)
}

/// As many messages of `payload`, published with confirms by batches of [`BATCH`].
async fn raw_publish(
    connection: &Connection,
    payload: &[u8],
    count: u32,
) -> anyhow::Result<Duration> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut sent = 0;
    // As the relay: two batches in flight, the oldest's confirms awaited before the next.
    let mut in_flight = std::collections::VecDeque::new();
    while sent < count || !in_flight.is_empty() {
        if sent < count && in_flight.len() < 2 {
            let mut confirms = Vec::new();
            for _ in 0..BATCH.min(count - sent) {
                confirms.push(
                    channel
                        .basic_publish(
                            EVENTS_EXCHANGE.into(),
                            "io.flatstack.zones.updated.v1".into(),
                            BasicPublishOptions::default(),
                            payload,
                            raw_properties(sent),
                        )
                        .await?,
                );
                sent += 1;
            }
            in_flight.push_back(confirms);
            continue;
        }
        for confirm in in_flight.pop_front().unwrap_or_default() {
            if !confirm.await?.is_ack() {
                bail!("the broker refused a raw message");
            }
        }
    }
    let took = started.elapsed();
    channel.close(200, "done".into()).await?;
    Ok(took)
}

/// What the relay sets on each message (content type, id, type, persistence, `seq`), with
/// values of the same sizes.
fn raw_properties(seq: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "seq".into(),
        lapin::types::AMQPValue::LongLongInt(i64::from(seq)),
    );
    BasicProperties::default()
        .with_content_type("application/cloudevents+json".into())
        .with_message_id(format!("{:036}", seq).as_str().into())
        .with_type("io.flatstack.zones.updated.v1".into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// A server-named queue of this connection's own: the bench's sink, responder and replies.
async fn exclusive_queue(channel: &Channel) -> anyhow::Result<String> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.name().as_str().to_owned())
}

async fn purge(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

type Latencies = Vec<Duration>;

async fn api_round_trips(
    node: &BenchNode,
    connection: &Connection,
    url: &str,
    requests: u32,
) -> anyhow::Result<(Latencies, Latencies, Latencies)> {
    let http = crate::token::client(node.token.as_deref())?;
    let zone: serde_json::Value = http
        .post(format!("{}/v1/zones?wait=10", node.base))
        .json(&json!({"name": "bench-zone"}))
        .send()
        .await?
        .json()
        .await?;
    let uuid = zone["inventory"]["uuid"]
        .as_str()
        .context("the zone's uuid")?
        .to_owned();
    let path = format!("/v1/zones/{uuid}");
    let server = ApiServer::start(url.to_owned(), flatstack_api::router(node.kernel.clone()));
    // A responder that answers at once with as many bytes as the API's reply.
    let reply_size = serde_json::to_vec(&json!({"status": 200, "body": http
        .get(format!("{}{path}", node.base)).send().await?.json::<serde_json::Value>().await?}))?
    .len();
    let echo = connection.create_channel().await?;
    let echo_queue = exclusive_queue(&echo).await?;
    let mut calls = echo
        .basic_consume(
            echo_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let responder = tokio::spawn(async move {
        let answer = vec![b'x'; reply_size];
        while let Some(Ok(call)) = calls.next().await {
            let (Some(reply_to), Some(id)) = (
                call.properties.reply_to().clone(),
                call.properties.correlation_id().clone(),
            ) else {
                continue;
            };
            let _ = echo
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &answer,
                    BasicProperties::default().with_correlation_id(id),
                )
                .await;
            let _ = call.ack(BasicAckOptions::default()).await;
        }
    });
    let mut client = Client::new(connection).await?;
    let authorization = format!("Bearer {}", node.token.as_deref().unwrap_or_default());
    let request = json!({"method": "GET", "path": path,
        "headers": {"authorization": authorization}})
    .to_string();
    // Until the node consumes its queue.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .call(
            flatstack_amqp::API_QUEUE,
            request.as_bytes(),
            Duration::from_millis(200),
        )
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the node did not serve the API queue");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut api, mut raw, mut over_http) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..2 {
        let mut a = Vec::new();
        let mut r = Vec::new();
        let mut h = Vec::new();
        for _ in 0..requests {
            let started = Instant::now();
            client
                .call(&echo_queue, request.as_bytes(), TIMEOUT)
                .await?;
            r.push(started.elapsed());
            let started = Instant::now();
            let answer = client
                .call(flatstack_amqp::API_QUEUE, request.as_bytes(), TIMEOUT)
                .await?;
            a.push(started.elapsed());
            if round == 0
                && a.len() == 1
                && !answer.starts_with(b"{\"body\"")
                && !answer.starts_with(b"{\"status\"")
            {
                bail!("not an API answer: {}", String::from_utf8_lossy(&answer));
            }
            let started = Instant::now();
            http.get(format!("{}{path}", node.base))
                .send()
                .await?
                .bytes()
                .await?;
            h.push(started.elapsed());
        }
        // The better round of each (by mean).
        if api.is_empty() || mean(&a) < mean(&api) {
            api = a;
        }
        if raw.is_empty() || mean(&r) < mean(&raw) {
            raw = r;
        }
        if over_http.is_empty() || mean(&h) < mean(&over_http) {
            over_http = h;
        }
    }
    drop(server);
    responder.abort();
    Ok((api, raw, over_http))
}

/// A request/reply client: an exclusive reply queue, one call at a time.
struct Client {
    channel: Channel,
    reply_queue: String,
    replies: lapin::Consumer,
    next: u64,
}

impl Client {
    async fn new(connection: &Connection) -> anyhow::Result<Client> {
        let channel = connection.create_channel().await?;
        let reply_queue = exclusive_queue(&channel).await?;
        let replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Client {
            channel,
            reply_queue,
            replies,
            next: 0,
        })
    }

    /// Sends `body` to `queue` and waits at most `within` for the reply.
    async fn call(
        &mut self,
        queue: &str,
        body: &[u8],
        within: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        self.next += 1;
        let id = self.next.to_string();
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_reply_to(self.reply_queue.as_str().into())
                    .with_correlation_id(id.as_str().into()),
            )
            .await?;
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let delivery = tokio::time::timeout(left, self.replies.next())
                .await
                .with_context(|| format!("no reply from {queue} within {within:?}"))?
                .context("the reply consumer ended")??;
            // A late reply to an earlier call is skipped.
            if delivery
                .properties
                .correlation_id()
                .as_ref()
                .is_some_and(|c| c.as_str() == id)
            {
                return Ok(delivery.data);
            }
        }
    }
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len().max(1) as u32
}

fn latency(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p99 = sorted[((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len()) - 1];
    format!(
        "{:>8.1} µs  {:>8.1} µs",
        mean(samples).as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    )
}
