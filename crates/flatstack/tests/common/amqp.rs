//! The broker for the tests of the API, events and extension points over RabbitMQ.

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

/// The tests of one binary that use the broker's shared names (the `flatstack.events`
/// exchange, the `flatstack.api` queue) run one at a time: each would see the other's
/// node.
pub static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `$FLATSTACK_TEST_AMQP_URL`, or the local RabbitMQ.
pub fn url() -> String {
    std::env::var("FLATSTACK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A connection to the broker, or a failure that says how to get one.
pub async fn connect() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ at {} is needed for this test (`.ci/run` starts it): {e}",
                url()
            )
        })
}

/// An exclusive queue that goes with `channel`'s connection (server-named if `name` is
/// empty), and a consumer of it (acknowledging manually unless `no_ack`).
pub async fn exclusive_queue(channel: &Channel, name: &str, no_ack: bool) -> (String, Consumer) {
    let queue = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    let name = queue.name().as_str().to_owned();
    let consumer = channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (name, consumer)
}

/// The next message of `consumer` within `within`, if one comes.
pub async fn next(
    consumer: &mut Consumer,
    within: std::time::Duration,
) -> Option<lapin::message::Delivery> {
    tokio::time::timeout(within, consumer.next())
        .await
        .ok()?
        .map(|delivery| delivery.expect("delivery"))
}
