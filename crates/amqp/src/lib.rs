//! Flatstack over RabbitMQ (AMQP 0-9-1), for services outside the node in any language
//! (docs/integration.md is their specification): the API as request/reply messages
//! ([`ApiServer`]), and the relay that publishes the store's event log to the topic
//! exchange [`EVENTS_EXCHANGE`] ([`Relay`]); and the calls to remote implementors of
//! extension points ([`AmqpCaller`]).
//!
//! The relay is the only reader that must see every event: it keeps its position in the
//! store as the cursor [`RELAY_CURSOR`] (which holds pruning back), publishes batches in
//! `seq` order with publisher confirms (two batches in flight: the next is read and sent
//! while the broker confirms the previous one; `data` is sent as stored, not parsed and
//! printed again), and moves the cursor batch by batch, once the broker confirmed each.
//! After a crash of the node or an outage of the broker it starts again from the cursor:
//! delivery is at least once, in order, and a repeat has the same `id` and `seq`.

#![warn(missing_docs)]

mod api;
mod remote;
pub use api::{ApiServer, API_QUEUE};
pub use remote::AmqpCaller;

use flatstack_header::events::{RawEvent, CONTENT_TYPE};
use flatstack_store::{EventQuery, Store, StoreError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Waits until the broker has confirmed every event up to `seq`, for at most `within`:
    /// how long that took, or `None` if it did not happen in time.
    pub async fn confirmed_up_to(&self, seq: i64, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while self.status.cursor.load(Ordering::Relaxed) < seq {
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Some(started.elapsed())
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
    let mut backoff = Backoff::default();
    loop {
        let connected = connect(&options.url).await;
        match connected {
            Ok((connection, channel)) => {
                status.connected.store(true, Ordering::Relaxed);
                tracing::info!(exchange = EVENTS_EXCHANGE, "event relay connected");
                backoff.reset();
                let error = publish_forever(&store, &options, &channel, &status).await;
                status.connected.store(false, Ordering::Relaxed);
                tracing::warn!(%error, "event relay stopped; it resumes from its cursor");
                let _ = connection.close(200, "reconnecting".into()).await;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.next_ms(), "event relay cannot reach the broker");
            }
        }
        backoff.wait().await;
    }
}

/// How long a connection lost waits before the next attempt: 100 ms, doubling up to 5 s,
/// back to 100 ms once connected again (the relay and the API server both reconnect so).
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const LONGEST: Duration = Duration::from_secs(5);

    /// Connected again: the next loss waits the shortest time.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// The next wait, in milliseconds (for the log line that announces it).
    pub(crate) fn next_ms(&self) -> u64 {
        self.0.as_millis() as u64
    }

    /// Waits, then makes the next wait longer.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::LONGEST);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
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

/// How many batches are published before the oldest one's confirms are awaited: the next
/// batch is read and sent while the broker confirms the previous one.
const WINDOW: usize = 2;

/// How often, at most, a busy relay writes its cursor to the store.
const CURSOR_EVERY: Duration = Duration::from_millis(250);

/// How long the relay waits, once woken by a commit, for more to join the batch.
const LINGER: Duration = Duration::from_millis(5);

/// A batch published, its confirms not awaited yet.
struct InFlight {
    last: i64,
    confirms: Vec<(i64, lapin::PublisherConfirm)>,
}

/// Publishes the log from the cursor on, [`WINDOW`] batches in flight, until something
/// fails. The cursor moves batch by batch, in order, once the broker confirmed each.
async fn publish_forever(
    store: &Arc<Store>,
    options: &RelayOptions,
    channel: &Channel,
    status: &RelayStatus,
) -> RelayError {
    let mut committed = store.events_committed();
    let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
    let mut read_after = match store.event_cursor(RELAY_CURSOR).await {
        Ok(cursor) => cursor.map_or(0, |cursor| cursor.seq),
        Err(error) => return error.into(),
    };
    status.cursor.store(read_after, Ordering::Relaxed);
    // The cursor as last written to the store, and when.
    let mut saved = (read_after, Instant::now());
    loop {
        // Seen before reading: a commit from now on wakes the wait below.
        committed.borrow_and_update();
        let step = async {
            // Fill the window.
            let mut whole = false;
            while in_flight.len() < WINDOW {
                let query = EventQuery {
                    after: read_after,
                    limit: options.batch,
                    ..EventQuery::default()
                };
                let page = match store.raw_events(&query).await? {
                    Ok(page) => page,
                    // Only if the cursor was removed meanwhile: go on from what is kept.
                    Err(gone) => {
                        tracing::error!(
                            from = read_after + 1,
                            to = gone.pruned_upto,
                            "events were pruned before they were relayed"
                        );
                        read_after = gone.pruned_upto;
                        continue;
                    }
                };
                let Some(last) = page.events.last().map(|e| e.seq) else {
                    break;
                };
                whole = page.events.len() >= options.batch as usize;
                in_flight.push_back(InFlight {
                    last,
                    confirms: publish(channel, &page.events).await?,
                });
                read_after = last;
                if !whole {
                    break;
                }
            }
            // Settle the oldest batch.
            let Some(batch) = in_flight.pop_front() else {
                return Ok::<bool, RelayError>(false);
            };
            let count = batch.confirms.len() as u64;
            confirmed(batch.confirms).await?;
            status.cursor.store(batch.last, Ordering::Relaxed);
            status.confirmed.fetch_add(count, Ordering::Relaxed);
            // The cursor is a write on the one writer the node's own changes wait for:
            // written now and then while busy, and whenever the relay falls idle. A crash
            // in between repeats at most that much (delivery is at least once anyway).
            if saved.1.elapsed() >= CURSOR_EVERY {
                store.set_event_cursor(RELAY_CURSOR, batch.last).await?;
                saved = (batch.last, Instant::now());
            }
            Ok(whole || !in_flight.is_empty())
        }
        .await;
        match step {
            Err(error) => return error,
            // More may be there at once.
            Ok(true) => continue,
            Ok(false) => {
                // Idle: the progress is written once CURSOR_EVERY has passed since the last
                // write (waking then to write it if nothing else wakes the relay first).
                let confirmed_upto = status.cursor.load(Ordering::Relaxed);
                let mut wait = options.poll;
                if confirmed_upto > saved.0 {
                    let since = saved.1.elapsed();
                    if since >= CURSOR_EVERY {
                        if let Err(error) =
                            store.set_event_cursor(RELAY_CURSOR, confirmed_upto).await
                        {
                            return error.into();
                        }
                        saved = (confirmed_upto, Instant::now());
                    } else {
                        wait = wait.min(CURSOR_EVERY - since);
                    }
                }
                if let Ok(Ok(())) = tokio::time::timeout(wait, committed.changed()).await {
                    // Let a busy node's next commits join this batch.
                    tokio::time::sleep(LINGER).await;
                }
            }
        }
    }
}

/// Publishes `events` in order; their confirms, to await.
async fn publish(
    channel: &Channel,
    events: &[RawEvent],
) -> Result<Vec<(i64, lapin::PublisherConfirm)>, RelayError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let payload = event.encode();
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
                payload.as_bytes(),
                properties,
            )
            .await?;
        confirms.push((event.seq, confirm));
    }
    Ok(confirms)
}

/// Awaits every confirm, in order; a `nack` is an error naming the event.
async fn confirmed(confirms: Vec<(i64, lapin::PublisherConfirm)>) -> Result<(), RelayError> {
    for (seq, confirm) in confirms {
        if !confirm.await?.is_ack() {
            return Err(RelayError::Nacked { seq });
        }
    }
    Ok(())
}
