//! Calls to remote implementors over the broker (the kernel's [`RemoteCaller`]): a call is
//! a JSON message `{"point", "input", "timeout_ms"}` sent to the implementor's queue with
//! `mandatory`, `reply_to` and a `correlation_id`; the answer is `{"allow": true}` or
//! `{"allow": false, "reason": "..."}`. The broker returning the message means nobody
//! consumes the queue: the service is absent, told at once rather than after its timeout.

use flatstack_kernel::async_trait;
use flatstack_kernel::extension::remote::{
    RemoteAnswer, RemoteCaller, RemoteFailure, RemoteRegistration,
};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// A connection with its reply queue, and the calls waiting for their answer.
struct Link {
    connection: Connection,
    channel: Channel,
    reply_queue: String,
    pending: Pending,
    _replies: tokio::task::JoinHandle<()>,
}

/// Reaches remote implementors through the broker at `url` (connecting when first needed,
/// and again after the connection is lost).
pub struct AmqpCaller {
    url: String,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
}

impl AmqpCaller {
    /// A caller through the broker at `url`.
    pub fn new(url: impl Into<String>) -> AmqpCaller {
        AmqpCaller {
            url: url.into(),
            link: tokio::sync::Mutex::new(None),
        }
    }

    async fn link(&self) -> Result<Arc<Link>, lapin::Error> {
        let mut link = self.link.lock().await;
        if let Some(live) = link.as_ref() {
            if live.connection.status().connected() {
                return Ok(live.clone());
            }
        }
        let fresh = Arc::new(connect(&self.url).await?);
        *link = Some(fresh.clone());
        Ok(fresh)
    }

    async fn forget(&self) {
        *self.link.lock().await = None;
    }
}

async fn connect(url: &str) -> Result<Link, lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_queue = queue.name().as_str().to_owned();
    let mut replies = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let pending: Pending = Arc::default();
    let waiting = pending.clone();
    let replies = tokio::spawn(async move {
        while let Some(Ok(delivery)) = replies.next().await {
            let Some(id) = delivery.properties.correlation_id().as_ref() else {
                continue;
            };
            let waiter = waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id.as_str());
            // A late answer (its call timed out) has no one waiting: dropped.
            if let Some(waiter) = waiter {
                let _ = waiter.send(delivery.data);
            }
        }
    });
    Ok(Link {
        connection,
        channel,
        reply_queue,
        pending,
        _replies: replies,
    })
}

/// Removes a call's entry whatever ends it (an answer, an error, the caller's timeout).
struct Waiting<'a> {
    pending: &'a Pending,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[async_trait]
impl RemoteCaller for AmqpCaller {
    async fn veto(
        &self,
        registration: &RemoteRegistration,
        input: &Value,
    ) -> Result<RemoteAnswer, RemoteFailure> {
        let link = self
            .link()
            .await
            .map_err(|e| RemoteFailure::Broken(format!("the broker cannot be reached: {e}")))?;
        let id = uuid_like();
        let (answer_tx, answer_rx) = oneshot::channel();
        link.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), answer_tx);
        let _waiting = Waiting {
            pending: &link.pending,
            id: id.clone(),
        };
        let payload = json!({
            "point": registration.point,
            "input": input,
            "timeout_ms": registration.timeout_ms,
        })
        .to_string();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(link.reply_queue.as_str().into())
            .with_correlation_id(id.as_str().into())
            // A call nobody took in time is dropped by the broker.
            .with_expiration(registration.timeout_ms.to_string().into());
        self.deliver(&link, &registration.queue, payload.as_bytes(), properties)
            .await?;
        let data = answer_rx
            .await
            .map_err(|_| RemoteFailure::Broken("the connection was lost".into()))?;
        parse_answer(&data)
    }

    async fn notify(
        &self,
        registration: &RemoteRegistration,
        event: &Value,
    ) -> Result<(), RemoteFailure> {
        let link = self
            .link()
            .await
            .map_err(|e| RemoteFailure::Broken(format!("the broker cannot be reached: {e}")))?;
        let payload = json!({"point": registration.point, "event": event}).to_string();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        self.deliver(&link, &registration.queue, payload.as_bytes(), properties)
            .await
    }
}

impl AmqpCaller {
    /// Publishes `payload` to `queue` (mandatory) and waits for the broker's confirm:
    /// `Absent` if nobody consumes the queue.
    async fn deliver(
        &self,
        link: &Link,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), RemoteFailure> {
        let published = async {
            link.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                )
                .await?
                .await
        }
        .await;
        let confirm = match published {
            Ok(confirm) => confirm,
            Err(e) => {
                self.forget().await;
                return Err(RemoteFailure::Broken(format!("the call was not sent: {e}")));
            }
        };
        if !confirm.is_ack() {
            return Err(RemoteFailure::Broken("the broker refused the call".into()));
        }
        if confirm.take_message().is_some() {
            return Err(RemoteFailure::Absent(queue.to_owned()));
        }
        Ok(())
    }
}

/// `{"allow": true}` or `{"allow": false, "reason": "..."}`.
fn parse_answer(data: &[u8]) -> Result<RemoteAnswer, RemoteFailure> {
    let answer: Value = serde_json::from_slice(data)
        .map_err(|_| RemoteFailure::Broken("its answer is not JSON".into()))?;
    match answer.get("allow").and_then(Value::as_bool) {
        Some(true) => Ok(RemoteAnswer::Allow),
        Some(false) => {
            let reason = answer
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            // Shown to API clients and logged: printable, bounded.
            let reason: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            Ok(RemoteAnswer::Refuse(reason))
        }
        None => Err(RemoteFailure::Broken(
            "its answer has no boolean `allow`".into(),
        )),
    }
}

/// A correlation id unique in this process.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_allow_refuse_or_broken() {
        assert_eq!(parse_answer(br#"{"allow": true}"#), Ok(RemoteAnswer::Allow));
        assert_eq!(
            parse_answer(b"{\"allow\": false, \"reason\": \"no\\u001b[2J way\"}"),
            Ok(RemoteAnswer::Refuse("no[2J way".into()))
        );
        assert!(matches!(
            parse_answer(br#"{"allow": "yes"}"#),
            Err(RemoteFailure::Broken(_))
        ));
        assert!(matches!(
            parse_answer(b"nope"),
            Err(RemoteFailure::Broken(_))
        ));
    }
}
