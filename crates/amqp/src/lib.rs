//! Flatstack over RabbitMQ (AMQP 0-9-1), for services outside the node in any language
//! (docs/integration.md is their specification): the API as request/reply messages
//! ([`ApiServer`]), and the relay that publishes the store's event log to the topic
//! exchange [`EVENTS_EXCHANGE`] ([`Relay`]); and the calls to remote implementors of
//! extension points ([`AmqpCaller`]).
//!
//! The relay is the only reader that must see every event: it keeps its position in the
//! store as the cursor [`RELAY_CURSOR`] (which holds pruning back), publishes a batch in
//! `seq` order with publisher confirms (all of the batch in flight at once, then every
//! confirm awaited), and moves the cursor only once the broker confirmed the whole batch.
//! After a crash of the node or an outage of the broker it starts again from the cursor:
//! delivery is at least once, in order, and a repeat has the same `id` and `seq`.

#![warn(missing_docs)]

mod api;
mod remote;
pub use api::{ApiServer, API_QUEUE};
pub use remote::AmqpCaller;

use flatstack_header::events::{CloudEvent, CONTENT_TYPE};
use flatstack_store::{EventQuery, Store, StoreError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The topic exchange every event is published to, with its `type` as the routing key.
pub const EVENTS_EXCHANGE: &str = "flatstack.events";

/// The relay's cursor in the store's event log.
pub const RELAY_CURSOR: &str = "amqp-relay";

/// What can stop the relay for a while (it reconnects and resumes).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker could not be reached, or refused something.
    #[error("the broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker did not confirm an event (a `nack`).
    #[error("the broker did not take event {seq}")]
    Nacked {
        /// The event not taken.
        seq: i64,
    },
    /// The event log could not be read or the cursor moved.
    #[error("the event log: {0}")]
    Store(#[from] StoreError),
    /// The URL is not one the relay can use.
    #[error("{0}")]
    Url(String),
    /// An event could not be encoded (it is retried, and logged each time).
    #[error("event {seq} cannot be encoded: {reason}")]
    Encode {
        /// The event.
        seq: i64,
        /// Why.
        reason: String,
    },
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// The most events published before their confirms are awaited.
    pub batch: u32,
    /// How often it looks for events when none committed on this node woke it.
    pub poll: Duration,
}

impl RelayOptions {
    /// The relay's defaults for `url`.
    pub fn new(url: impl Into<String>) -> RelayOptions {
        RelayOptions {
            url: url.into(),
            batch: 500,
            poll: Duration::from_millis(500),
        }
    }

    /// Refuses a URL the relay cannot use, at start rather than in the background.
    pub fn check(&self) -> Result<(), RelayError> {
        if self.url.starts_with("amqps://") {
            return Err(RelayError::Url(
                "amqps:// (TLS) is not supported by this build; use amqp://".into(),
            ));
        }
        if !self.url.starts_with("amqp://") {
            return Err(RelayError::Url(format!(
                "an AMQP URL starts with amqp://, not `{}`",
                self.url.split("://").next().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

/// What the relay has done, for tests and introspection.
#[derive(Debug, Default)]
pub struct RelayStatus {
    /// Events the broker confirmed since the node started.
    pub confirmed: AtomicU64,
    /// The cursor: every event up to it was confirmed.
    pub cursor: AtomicI64,
    /// Whether it is connected now.
    pub connected: AtomicBool,
}

/// The running relay.
pub struct Relay {
    /// What it has done.
    pub status: Arc<RelayStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying `store`'s event log to the broker at `options.url`, from the
    /// relay's cursor (created at the oldest event kept if it has none, so that pruning
    /// waits for the relay from now on).
    pub async fn start(store: Arc<Store>, options: RelayOptions) -> Result<Relay, RelayError> {
        options.check()?;
        if store.event_cursor(RELAY_CURSOR).await?.is_none() {
            let start = match store
                .events(&EventQuery {
                    after: 0,
                    limit: 1,
                    ..Default::default()
                })
                .await?
            {
                Ok(_) => 0,
                Err(gone) => gone.pruned_upto,
            };
            store.set_event_cursor(RELAY_CURSOR, start).await?;
        }
        let status = Arc::new(RelayStatus::default());
        let task = tokio::spawn(relay(store, options, status.clone()));
        Ok(Relay { status, task })
    }

    /// Stops relaying (what was confirmed stays confirmed; the rest goes at next start).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects, relays until something fails, then waits (longer each time, up to a few
/// seconds) and starts again from the cursor.
async fn relay(store: Arc<Store>, options: RelayOptions, status: Arc<RelayStatus>) {
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    const LONGEST_WAIT: Duration = Duration::from_secs(5);
    let mut wait = FIRST_WAIT;
    loop {
        let connected = connect(&options.url).await;
        match connected {
            Ok((connection, channel)) => {
                status.connected.store(true, Ordering::Relaxed);
                tracing::info!(exchange = EVENTS_EXCHANGE, "event relay connected");
                wait = FIRST_WAIT;
                let error = publish_forever(&store, &options, &channel, &status).await;
                status.connected.store(false, Ordering::Relaxed);
                tracing::warn!(%error, "event relay stopped; it resumes from its cursor");
                let _ = connection.close(200, "reconnecting".into()).await;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "event relay cannot reach the broker");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}

async fn connect(url: &str) -> Result<(Connection, Channel), RelayError> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel))
}

/// Publishes the log from the cursor on, batch after batch, until something fails.
async fn publish_forever(
    store: &Arc<Store>,
    options: &RelayOptions,
    channel: &Channel,
    status: &RelayStatus,
) -> RelayError {
    let mut committed = store.events_committed();
    loop {
        let published = async {
            let cursor = store
                .event_cursor(RELAY_CURSOR)
                .await?
                .map_or(0, |cursor| cursor.seq);
            status.cursor.store(cursor, Ordering::Relaxed);
            let query = EventQuery {
                after: cursor,
                limit: options.batch,
                ..EventQuery::default()
            };
            let page = match store.events(&query).await? {
                Ok(page) => page,
                // Only if the cursor was removed meanwhile: go on from what is kept.
                Err(gone) => {
                    tracing::error!(
                        from = cursor + 1,
                        to = gone.pruned_upto,
                        "events were pruned before they were relayed"
                    );
                    store
                        .set_event_cursor(RELAY_CURSOR, gone.pruned_upto)
                        .await?;
                    return Ok(0);
                }
            };
            let Some(last) = page.events.last().map(|e| e.seq) else {
                return Ok(0);
            };
            publish_confirmed(channel, &page.events).await?;
            store.set_event_cursor(RELAY_CURSOR, last).await?;
            status.cursor.store(last, Ordering::Relaxed);
            status
                .confirmed
                .fetch_add(page.events.len() as u64, Ordering::Relaxed);
            Ok::<usize, RelayError>(page.events.len())
        }
        .await;
        match published {
            Err(error) => return error,
            // A whole batch: there may be more at once.
            Ok(n) if n >= options.batch as usize => continue,
            Ok(_) => {
                committed.borrow_and_update();
                let _ = tokio::time::timeout(options.poll, committed.changed()).await;
            }
        }
    }
}

/// Publishes `events` in order, all in flight at once, then awaits every confirm.
async fn publish_confirmed(channel: &Channel, events: &[CloudEvent]) -> Result<(), RelayError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let payload = serde_json::to_vec(event).map_err(|e| RelayError::Encode {
            seq: event.seq,
            reason: e.to_string(),
        })?;
        let mut headers = FieldTable::default();
        headers.insert("seq".into(), AMQPValue::LongLongInt(event.seq));
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(event.id.as_str().into())
            .with_type(event.event_type.as_str().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                EVENTS_EXCHANGE.into(),
                event.event_type.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                properties,
            )
            .await?;
        confirms.push((event.seq, confirm));
    }
    for (seq, confirm) in confirms {
        if !confirm.await?.is_ack() {
            return Err(RelayError::Nacked { seq });
        }
    }
    Ok(())
}
