//! Messages: serde types with stable names, and the name → schema/decoder registry that
//! lets the same message cross a process boundary as JSON.

use crate::{Fault, KernelError};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::any::TypeId;
use std::collections::BTreeMap;

/// Anything that travels on the bus. `NAME` is its stable wire name (e.g. `zone.create`).
/// Declared with [`request!`](crate::request) or [`event!`](crate::event).
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + 'static {
    /// The wire name, dotted and kebab-case, prefixed with the owner's kind
    /// (`vm.create`, `l3.ip.allocate`); unique among the distribution's messages.
    const NAME: &'static str;
    /// A read: addressed to a resource, it is answered at once, beside that resource's
    /// queue, never waiting behind an operation on it (a `GET` during a slow start). Its
    /// handler must not change anything.
    const READS_ONLY: bool = false;
}

/// A message answered by exactly one reply.
pub trait Request: Message {
    /// What the handler answers: an `Inventory`, a record, `()`...
    type Reply: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
}

/// A request whose owner is known from its type: callers send it with [`Bus::ask`] (or
/// `Kernel::ask`) and write no service name. Published with the owner's header.
///
/// [`Bus::ask`]: crate::Bus::ask
pub trait Addressed: Request {
    /// The id of the service that answers it.
    const SERVICE: &'static str;
}

/// A message published to every interested subscriber. Its topic is `NAME`.
pub trait Event: Message + Clone + Sync {}

/// A request as it crosses a transport: JSON with its name and address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The id of the service it is sent to, e.g. `vm`.
    pub service: String,
    /// The uuid of the resource it is addressed to, if any: requests about one resource
    /// run one at a time, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The message's wire name ([`Message::NAME`]).
    pub message: String,
    /// The message itself, as JSON.
    pub body: Value,
    /// The durable operation (job) this request does, if any: handlers that span several
    /// steps journal their progress under it (see `MessageContext::operation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// An event as it crosses a transport or reaches a pattern subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event's wire name, also its topic.
    pub name: String,
    /// The event itself, as JSON.
    pub body: Value,
}

/// Whether a message is a request or an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Sent to one service, which replies ([`Request`]).
    Request,
    /// Published to every subscriber ([`Event`]).
    Event,
}

/// Decodes an event from JSON and publishes it to local typed subscribers.
pub(crate) type PublishJson = fn(&super::Bus, Value) -> Result<(), Fault>;

/// What the registry knows of one message name.
#[derive(Clone)]
pub struct MessageInfo {
    /// The wire name.
    pub name: &'static str,
    /// Request or event.
    pub kind: MessageKind,
    /// The Rust type's path, for errors and introspection.
    pub rust_type: &'static str,
    type_id: TypeId,
    schema: fn() -> Value,
    reply_schema: Option<fn() -> Value>,
    /// Decodes an event from JSON and publishes it to local typed subscribers.
    pub(crate) publish_json: Option<PublishJson>,
    /// A read, answered beside its resource's queue ([`Message::READS_ONLY`]).
    pub reads_only: bool,
}

impl MessageInfo {
    pub(crate) fn request<M: Request>() -> Self {
        MessageInfo {
            name: M::NAME,
            kind: MessageKind::Request,
            rust_type: std::any::type_name::<M>(),
            type_id: TypeId::of::<M>(),
            schema: schema_of::<M>,
            reply_schema: Some(schema_of::<M::Reply>),
            publish_json: None,
            reads_only: M::READS_ONLY,
        }
    }

    pub(crate) fn event<E: Event>() -> Self {
        MessageInfo {
            name: E::NAME,
            kind: MessageKind::Event,
            rust_type: std::any::type_name::<E>(),
            type_id: TypeId::of::<E>(),
            schema: schema_of::<E>,
            reply_schema: None,
            publish_json: Some(|bus, body| {
                let event: E = decode(E::NAME, body)?;
                bus.publish_typed(event);
                Ok(())
            }),
            reads_only: false,
        }
    }

    /// The message's JSON Schema.
    pub fn schema(&self) -> Value {
        (self.schema)()
    }

    /// The JSON Schema of the reply, for requests.
    pub fn reply_schema(&self) -> Option<Value> {
        self.reply_schema.map(|f| f())
    }
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// Decodes `body` as message `name`, with an `invalid_argument` fault naming the field.
pub fn decode<T: DeserializeOwned>(name: &str, body: Value) -> Result<T, Fault> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let text = err.inner().to_string();
        let mut field = err.path().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(missing) = text
            .strip_prefix("missing field `")
            .and_then(|t| t.split('`').next())
        {
            field = if field == "." {
                missing.to_owned()
            } else {
                format!("{field}.{missing}")
            };
        }
        if field == "." {
            field.clear();
        }
        Fault::invalid(&field, format!("invalid `{name}`: {text}"))
    })
}

/// Encodes a value as JSON; failure is a bug in the type's `Serialize`.
pub(crate) fn encode<T: Serialize>(name: &str, value: &T) -> Result<Value, Fault> {
    serde_json::to_value(value).map_err(|e| Fault::internal(format!("cannot encode `{name}`: {e}")))
}

/// Every message name known to this kernel.
#[derive(Default, Clone)]
pub struct MessageRegistry {
    by_name: BTreeMap<&'static str, MessageInfo>,
}

impl MessageRegistry {
    pub(crate) fn add(&mut self, info: MessageInfo) -> Result<(), KernelError> {
        if let Some(existing) = self.by_name.get(info.name) {
            if existing.type_id != info.type_id {
                return Err(KernelError::DuplicateMessage {
                    name: info.name.to_owned(),
                    first: existing.rust_type.to_owned(),
                    second: info.rust_type.to_owned(),
                });
            }
            return Ok(());
        }
        self.by_name.insert(info.name, info);
        Ok(())
    }

    /// What is known of message `name`, if any plugin declared or handles it.
    pub fn get(&self, name: &str) -> Option<&MessageInfo> {
        self.by_name.get(name)
    }

    /// All messages, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &MessageInfo> {
        self.by_name.values()
    }
}
