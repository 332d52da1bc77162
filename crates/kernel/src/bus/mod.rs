//! The message bus: in-process microservices.
//!
//! Services are addressed by id and answer typed requests; a request may name a resource,
//! and then it is serialised with every other request for that resource (see `queue.rs`).
//! Events go to typed subscribers and to topic-pattern subscribers. Every request and event
//! can also travel as JSON ([`Envelope`]), which is how HTTP, AMQP and other nodes reach it.

mod message;
mod queue;
mod service;
pub mod topic;
mod transport;

pub(crate) use message::encode;
pub use message::{
    decode, Addressed, Envelope, Event, EventEnvelope, Message, MessageInfo, MessageKind,
    MessageRegistry, Request,
};
pub(crate) use service::ServiceTable;
pub use service::{MessageContext, ServiceBuilder};
pub use transport::{Loopback, Transport};

use crate::fault::panic_message;
use crate::type_map::TypeIdMap;
use crate::{Fault, Kernel, WeakKernel};
use futures::future::BoxFuture;
use futures::FutureExt;
use queue::ResourceQueues;
use serde_json::Value;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) type AnyBox = Box<dyn Any + Send>;

/// A boxed `mpsc::UnboundedSender<E>` with a probe that knows its `E`.
struct TypedSubscriber {
    sender: Box<dyn Any + Send + Sync>,
    is_closed: fn(&(dyn Any + Send + Sync)) -> bool,
}

#[derive(Default)]
struct Subscribers {
    /// By `TypeId` of the event type.
    typed: TypeIdMap<Vec<TypedSubscriber>>,
    patterns: Vec<(String, mpsc::UnboundedSender<EventEnvelope>)>,
}

/// One service as introspection shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceDescription {
    /// The service's id, e.g. `vm`.
    pub id: String,
    /// The plugin that provides it.
    pub plugin: String,
    /// The names of the messages it answers.
    pub messages: Vec<&'static str>,
}

/// Routes requests to services and events to subscribers.
pub struct Bus {
    kernel: WeakKernel,
    services: HashMap<String, Arc<ServiceTable>>,
    messages: MessageRegistry,
    default_timeout: Duration,
    queues: Arc<ResourceQueues>,
    subscribers: RwLock<Subscribers>,
    transport: RwLock<Option<Arc<dyn Transport>>>,
}

impl Bus {
    pub(crate) fn new(
        kernel: WeakKernel,
        services: HashMap<String, Arc<ServiceTable>>,
        messages: MessageRegistry,
        default_timeout: Duration,
    ) -> Self {
        Bus {
            kernel,
            services,
            messages,
            default_timeout,
            queues: Arc::default(),
            subscribers: RwLock::default(),
            transport: RwLock::default(),
        }
    }

    /// Every message name this kernel knows, with its schema.
    pub fn messages(&self) -> &MessageRegistry {
        &self.messages
    }

    /// The services of this kernel with the messages each answers, sorted by id.
    pub fn services(&self) -> Vec<ServiceDescription> {
        let mut services: Vec<ServiceDescription> = self
            .services
            .values()
            .map(|t| ServiceDescription {
                id: t.id.clone(),
                plugin: t.plugin.clone(),
                messages: t.message_names(),
            })
            .collect();
        services.sort_by(|a, b| a.id.cmp(&b.id));
        services
    }

    /// Sends `msg` to `service`; `.resource(id)`, `.timeout(d)`, then `.await` the reply.
    pub fn request<M: Request>(&self, service: &str, msg: M) -> RequestBuilder<'_, M> {
        RequestBuilder {
            bus: self,
            service: service.to_owned(),
            resource: None,
            operation: None,
            timeout: None,
            msg,
        }
    }

    /// Sends `msg` to the service its type names ([`Addressed`]).
    pub fn ask<M: Addressed>(&self, msg: M) -> RequestBuilder<'_, M> {
        self.request(M::SERVICE, msg)
    }

    /// Sends a JSON request (by message name), locally or through the transport.
    pub async fn request_json(
        &self,
        envelope: Envelope,
        timeout: Option<Duration>,
    ) -> Result<Value, Fault> {
        let timeout = timeout.unwrap_or(self.default_timeout);
        if self.services.contains_key(&envelope.service) {
            self.deliver(envelope, timeout).await
        } else {
            self.transport()?.request(envelope, timeout).await
        }
    }

    /// Delivers a JSON request to a local service only; transports call this on arrival.
    pub async fn deliver(&self, envelope: Envelope, timeout: Duration) -> Result<Value, Fault> {
        let table = self.local(&envelope.service)?;
        let handler = table.json_handler(&envelope.message)?;
        let resource = envelope.resource.map(Arc::from);
        let operation = envelope.operation.map(Arc::from);
        let call = handler(
            envelope.body,
            self.context(resource.clone(), operation.clone())?,
        );
        let call = in_operation(operation, call);
        // A read runs beside the resource's queue: it need not wait for its operations.
        let reads_only = self
            .messages
            .get(&envelope.message)
            .is_some_and(|m| m.reads_only);
        let lane = if reads_only { None } else { resource };
        self.dispatch(&table.id, lane, call, timeout, &envelope.message)
            .await
    }

    /// Publishes `event` to local subscribers and, if one is attached, to the transport.
    pub fn publish<E: Event>(&self, event: E) {
        let transport = self.attached_transport();
        let wants_json = transport.is_some() || self.has_pattern_subscribers();
        // JSON only when someone reads it: typed in-process delivery stays allocation-light.
        let envelope = wants_json
            .then(|| encode(E::NAME, &event))
            .and_then(|body| match body {
                Ok(body) => Some(EventEnvelope {
                    name: E::NAME.to_owned(),
                    body,
                }),
                Err(fault) => {
                    tracing::error!(event = E::NAME, %fault, "event cannot be encoded");
                    None
                }
            });
        self.publish_typed(event);
        if let Some(envelope) = envelope {
            self.publish_to_patterns(&envelope);
            if let Some(transport) = transport {
                transport.publish(&envelope);
            }
        }
    }

    /// Publishes an event that arrived as JSON to local subscribers only.
    pub fn deliver_event(&self, envelope: EventEnvelope) {
        if let Some(publish_typed) = self
            .messages
            .get(&envelope.name)
            .and_then(|m| m.publish_json)
        {
            if let Err(fault) = publish_typed(self, envelope.body.clone()) {
                tracing::warn!(event = %envelope.name, %fault, "undecodable event dropped");
                return;
            }
        }
        self.publish_to_patterns(&envelope);
    }

    /// Receives every later event of type `E`.
    pub fn subscribe<E: Event>(&self) -> mpsc::UnboundedReceiver<E> {
        let (tx, rx) = mpsc::unbounded_channel::<E>();
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .typed
            .entry(TypeId::of::<E>())
            .or_default()
            .push(TypedSubscriber {
                sender: Box::new(tx),
                is_closed: |sender| {
                    sender
                        .downcast_ref::<mpsc::UnboundedSender<E>>()
                        .is_none_or(mpsc::UnboundedSender::is_closed)
                },
            });
        rx
    }

    /// Receives, as JSON, every later event whose name matches the AMQP-style `pattern`.
    pub fn subscribe_pattern(&self, pattern: &str) -> mpsc::UnboundedReceiver<EventEnvelope> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .patterns
            .push((pattern.to_owned(), tx));
        rx
    }

    /// Sends what this kernel has no service or subscriber for through `transport`.
    pub fn attach_transport(&self, transport: Arc<dyn Transport>) {
        *self
            .transport
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(transport);
    }

    /// Resources with queued or running requests right now.
    pub fn busy_resources(&self) -> usize {
        self.queues.active_lanes()
    }

    /// Requests waiting on their resource's lane behind another right now.
    pub fn queued_requests(&self) -> usize {
        self.queues.waiting()
    }

    fn attached_transport(&self) -> Option<Arc<dyn Transport>> {
        self.transport
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn transport(&self) -> Result<Arc<dyn Transport>, Fault> {
        self.attached_transport()
            .ok_or_else(|| Fault::not_found("no such service").with_detail("transport", "none"))
    }

    fn local(&self, service: &str) -> Result<&Arc<ServiceTable>, Fault> {
        self.services.get(service).ok_or_else(|| {
            Fault::not_found(format!("no service `{service}`")).with_detail("service", service)
        })
    }

    fn context(
        &self,
        resource: Option<Arc<str>>,
        operation: Option<Arc<str>>,
    ) -> Result<MessageContext, Fault> {
        let kernel = self
            .kernel
            .upgrade()
            .ok_or_else(|| Fault::unavailable("kernel is shutting down"))?;
        Ok(MessageContext {
            kernel,
            resource,
            operation,
        })
    }

    /// Runs a handler's future in its own task (so a caller that gives up does not cancel
    /// it halfway), on the resource's lane if it names one, and waits at most `timeout`.
    async fn dispatch<T: Send + 'static>(
        &self,
        service: &str,
        resource: Option<Arc<str>>,
        call: BoxFuture<'static, Result<T, Fault>>,
        timeout: Duration,
        message: &str,
    ) -> Result<T, Fault> {
        let outcome = match resource {
            None => {
                // Start the handler in the caller's task: one that finishes without waiting
                // costs no task and no timer. One that must wait is moved into a task of its
                // own, so a caller that gives up never cancels it halfway.
                let mut call = AssertUnwindSafe(call).catch_unwind();
                match futures::poll!(&mut call) {
                    Poll::Ready(result) => Ok::<_, tokio::time::error::Elapsed>(result),
                    Poll::Pending => {
                        let task = tokio::spawn(call);
                        tokio::time::timeout(timeout, task)
                            .await
                            .map(|joined| match joined {
                                Ok(result) => result,
                                Err(e) if e.is_panic() => Err(e.into_panic()),
                                Err(_) => {
                                    Err(Box::new("handler task cancelled") as Box<dyn Any + Send>)
                                }
                            })
                    }
                }
            }
            Some(id) => {
                let (tx, rx) = oneshot::channel();
                let job = async move {
                    let _ = tx.send(AssertUnwindSafe(call).catch_unwind().await);
                };
                self.queues.push(service, &id, Box::pin(job));
                tokio::time::timeout(timeout, rx)
                    .await
                    .map(|received| match received {
                        Ok(result) => result,
                        Err(_) => Err(Box::new("reply channel dropped") as Box<dyn Any + Send>),
                    })
            }
        };
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => {
                let text = panic_message(&*payload);
                tracing::error!(service, message, panic = %text, "handler panicked");
                Err(
                    Fault::internal(format!("`{service}` panicked handling `{message}`: {text}"))
                        .with_detail("service", service),
                )
            }
            Err(_) => Err(Fault::timeout(format!(
                "`{service}` did not answer `{message}` within {timeout:?}"
            ))
            .with_detail("service", service)),
        }
    }

    /// Delivers to the typed subscribers of `E` in this process.
    pub(crate) fn publish_typed<E: Event>(&self, event: E) {
        let mut closed = false;
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = subscribers.typed.get(&TypeId::of::<E>()) {
            for sub in list {
                if let Some(tx) = sub.sender.downcast_ref::<mpsc::UnboundedSender<E>>() {
                    closed |= tx.send(event.clone()).is_err();
                }
            }
        }
        drop(subscribers);
        if closed {
            self.prune();
        }
    }

    fn has_pattern_subscribers(&self) -> bool {
        !self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .patterns
            .is_empty()
    }

    fn publish_to_patterns(&self, envelope: &EventEnvelope) {
        let mut closed = false;
        for (pattern, tx) in &self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .patterns
        {
            if topic::matches(pattern, &envelope.name) {
                closed |= tx.send(envelope.clone()).is_err();
            }
        }
        if closed {
            self.prune();
        }
    }

    fn prune(&self) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.patterns.retain(|(_, tx)| !tx.is_closed());
        for list in subscribers.typed.values_mut() {
            list.retain(|sub| !(sub.is_closed)(&*sub.sender));
        }
    }
}

/// A request being prepared; `.await` it to send.
pub struct RequestBuilder<'a, M: Request> {
    bus: &'a Bus,
    service: String,
    resource: Option<String>,
    operation: Option<String>,
    timeout: Option<Duration>,
    msg: M,
}

impl<'a, M: Request> RequestBuilder<'a, M> {
    /// Addresses one resource: the request is serialised with others for the same id.
    pub fn resource(mut self, id: impl Into<String>) -> Self {
        self.resource = Some(id.into());
        self
    }

    /// Names the durable operation this request does (see [`MessageContext::operation`]).
    pub fn operation(mut self, id: impl Into<String>) -> Self {
        self.operation = Some(id.into());
        self
    }

    /// Overrides the kernel's `bus.request_timeout_ms` for this request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn send(self) -> Result<M::Reply, Fault> {
        let bus = self.bus;
        let timeout = self.timeout.unwrap_or(bus.default_timeout);
        let Some(table) = bus.services.get(&self.service) else {
            let envelope = Envelope {
                service: self.service,
                resource: self.resource,
                message: M::NAME.to_owned(),
                body: encode(M::NAME, &self.msg)?,
                operation: self.operation,
            };
            let reply = bus.transport()?.request(envelope, timeout).await?;
            return decode(M::NAME, reply);
        };
        let handler = table.typed_handler::<M>()?;
        let resource = self.resource.map(Arc::<str>::from);
        let operation = self.operation.map(Arc::<str>::from);
        let call = handler(
            Box::new(self.msg),
            bus.context(resource.clone(), operation.clone())?,
        );
        let call = in_operation(operation, call);
        let lane = if M::READS_ONLY { None } else { resource };
        let reply = bus
            .dispatch(&table.id, lane, call, timeout, M::NAME)
            .await?;
        reply
            .downcast::<M::Reply>()
            .map(|reply| *reply)
            .map_err(|_| Fault::internal(format!("`{}` replied with the wrong type", M::NAME)))
    }
}

impl<'a, M: Request> IntoFuture for RequestBuilder<'a, M> {
    type Output = Result<M::Reply, Fault>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl Kernel {
    /// Shorthand for `self.bus().request(service, msg)`.
    pub fn request<M: Request>(&self, service: &str, msg: M) -> RequestBuilder<'_, M> {
        self.bus().request(service, msg)
    }

    /// Shorthand for `self.bus().ask(msg)`: to the service `M` names.
    pub fn ask<M: Addressed>(&self, msg: M) -> RequestBuilder<'_, M> {
        self.bus().ask(msg)
    }
}

/// A handler's future, run in `operation`'s scope if the request names one, so that the
/// flows it runs note their steps ([`crate::progress`]), and in the caller's span if it
/// has one (a trace follows the request onto the resource's lane).
fn in_operation<T: Send + 'static>(
    operation: Option<Arc<str>>,
    call: BoxFuture<'static, Result<T, Fault>>,
) -> BoxFuture<'static, Result<T, Fault>> {
    let span = tracing::Span::current();
    let call = if span.is_disabled() {
        call
    } else {
        Box::pin(tracing::Instrument::instrument(call, span))
    };
    match operation {
        Some(operation) => Box::pin(crate::progress::scope(operation, call)),
        None => call,
    }
}
