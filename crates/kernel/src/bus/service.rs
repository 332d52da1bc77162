//! Services: a handler table per service id, filled by plugins in `build`.

use super::message::{decode, encode, MessageInfo, MessageRegistry, Request};
use super::AnyBox;
use crate::type_map::TypeIdMap;
use crate::{Fault, Kernel, KernelError};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// What a handler is given besides its message.
#[derive(Clone)]
pub struct MessageContext {
    /// The running kernel: bus, extensions, drivers, configuration.
    pub kernel: Kernel,
    /// The resource the request was addressed to, if any.
    pub resource: Option<Arc<str>>,
    /// The durable operation (the job an API request answers with) this request does, if
    /// the caller named one: a multi-step handler links what it creates to it, so that
    /// recovery after a crash can tell what the operation had done.
    pub operation: Option<Arc<str>>,
}

impl MessageContext {
    /// The addressed resource id, or an `invalid_argument` fault if there is none.
    pub fn resource_id(&self) -> Result<&str, Fault> {
        self.resource
            .as_deref()
            .ok_or_else(|| Fault::invalid("resource", "this message must name a resource"))
    }
}

type TypedHandler =
    Arc<dyn Fn(AnyBox, MessageContext) -> BoxFuture<'static, Result<AnyBox, Fault>> + Send + Sync>;
type JsonHandler =
    Arc<dyn Fn(Value, MessageContext) -> BoxFuture<'static, Result<Value, Fault>> + Send + Sync>;

/// The handlers of one service, frozen after assembly.
pub(crate) struct ServiceTable {
    pub id: String,
    pub plugin: String,
    typed: TypeIdMap<TypedHandler>,
    json: HashMap<&'static str, JsonHandler>,
}

impl ServiceTable {
    pub fn new(id: &str, plugin: &str) -> Self {
        ServiceTable {
            id: id.to_owned(),
            plugin: plugin.to_owned(),
            typed: TypeIdMap::default(),
            json: HashMap::new(),
        }
    }

    pub fn typed_handler<M: Request>(&self) -> Result<TypedHandler, Fault> {
        self.typed
            .get(&TypeId::of::<M>())
            .cloned()
            .ok_or_else(|| self.unknown(M::NAME))
    }

    pub fn json_handler(&self, message: &str) -> Result<JsonHandler, Fault> {
        self.json
            .get(message)
            .cloned()
            .ok_or_else(|| self.unknown(message))
    }

    /// Message names this service answers, sorted.
    pub fn message_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.json.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn unknown(&self, message: &str) -> Fault {
        Fault::invalid(
            "message",
            format!("service `{}` does not handle `{message}`", self.id),
        )
        .with_detail("service", self.id.as_str())
    }
}

/// Declares the handlers of one service; returned by `PluginBuilder::service`.
pub struct ServiceBuilder<'a, S> {
    pub(crate) table: &'a mut ServiceTable,
    pub(crate) state: Arc<S>,
    pub(crate) messages: &'a mut MessageRegistry,
    pub(crate) errors: &'a mut Vec<KernelError>,
}

impl<S: Send + Sync + 'static> ServiceBuilder<'_, S> {
    /// Handles request `M` with `handler(state, msg, context)`.
    pub fn handle<M, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        M: Request,
        F: Fn(Arc<S>, M, MessageContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Reply, Fault>> + Send + 'static,
    {
        if self.table.json.contains_key(M::NAME) {
            self.errors.push(KernelError::DuplicateHandler {
                service: self.table.id.clone(),
                message: M::NAME.to_owned(),
            });
            return self;
        }
        if let Err(e) = self.messages.add(MessageInfo::request::<M>()) {
            self.errors.push(e);
            return self;
        }
        let handler = Arc::new(handler);
        let (state, h) = (self.state.clone(), handler.clone());
        let typed: TypedHandler = Arc::new(move |msg: AnyBox, cx| {
            let call = msg
                .downcast::<M>()
                .map(|msg| h(state.clone(), *msg, cx))
                .map_err(|_| Fault::internal(format!("`{}` delivered as the wrong type", M::NAME)));
            async move { Ok(Box::new(call?.await?) as AnyBox) }.boxed()
        });
        let state = self.state.clone();
        let json: JsonHandler = Arc::new(move |body: Value, cx| {
            let call = decode::<M>(M::NAME, body).map(|msg| handler(state.clone(), msg, cx));
            async move { encode(M::NAME, &call?.await?) }.boxed()
        });
        self.table.typed.insert(TypeId::of::<M>(), typed);
        self.table.json.insert(M::NAME, json);
        self
    }
}
