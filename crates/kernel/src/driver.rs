//! Strategy plugins: driver types registered per resource kind.
//!
//! A resource kind (declared in a header crate) names the factory trait its drivers
//! implement; plugins register a factory under a type name; the owner of the kind looks the
//! factory up by the type stored in a record. A concrete resource implements [`Resource`]:
//! it handles its own messages and hands everything else to a base implementation.

use crate::bus::{AnyBox, MessageContext, Request};
use crate::type_map::TypeIdMap;
use crate::{Fault, KernelError};
use async_trait::async_trait;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A resource kind with an open set of driver types (hosts, L2 networks, storage, ...).
pub trait DriverKind: 'static {
    /// The kind's name in introspection and errors, e.g. `l2-networks`.
    const KIND: &'static str;
    /// The factory trait object every driver of this kind implements.
    type Factory: ?Sized + Send + Sync + 'static;

    /// The JSON Schema of the create fields `factory`'s type adds to the kind's own (an
    /// object schema), as its driver publishes it; `None` if it publishes none (then any
    /// fields may be given, and the driver checks them).
    fn fields(_factory: &Self::Factory) -> Option<schemars::Schema> {
        None
    }
}

/// One registered driver type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriverType {
    /// The type's name, as records store it in `type`, e.g. `Simulator`.
    pub name: String,
    /// The plugin that registered it.
    pub plugin: String,
    /// The JSON Schema of the type's own create fields ([`DriverKind::fields`]), if it
    /// publishes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Value>,
}

/// The factories of one kind, by type name.
pub struct TypeRegistry<K: DriverKind> {
    types: BTreeMap<String, (String, Arc<K::Factory>)>,
}

impl<K: DriverKind> TypeRegistry<K> {
    /// The factory of `type_name`, or an `invalid_argument` fault on field `type`
    /// listing the known types.
    pub fn get(&self, type_name: &str) -> Result<Arc<K::Factory>, Fault> {
        self.types
            .get(type_name)
            .map(|(_, factory)| factory.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = self.types.keys().map(String::as_str).collect();
                Fault::invalid(
                    "type",
                    format!(
                        "unknown {} type `{type_name}` (known: {})",
                        K::KIND,
                        known.join(", ")
                    ),
                )
            })
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.types.keys().map(String::as_str).collect()
    }
}

trait AnyRegistry: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn kind(&self) -> &'static str;
    fn describe(&self) -> Vec<DriverType>;
}

impl<K: DriverKind> AnyRegistry for TypeRegistry<K> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn describe(&self) -> Vec<DriverType> {
        self.types
            .iter()
            .map(|(name, (plugin, factory))| DriverType {
                name: name.clone(),
                plugin: plugin.clone(),
                fields: K::fields(factory).and_then(|schema| serde_json::to_value(schema).ok()),
            })
            .collect()
    }
}

/// Every kind's type registry.
#[derive(Default)]
pub struct Drivers {
    kinds: TypeIdMap<Box<dyn AnyRegistry>>,
}

impl Drivers {
    pub(crate) fn declare<K: DriverKind>(&mut self) -> &mut TypeRegistry<K> {
        let registry = self.kinds.entry(TypeId::of::<K>()).or_insert_with(|| {
            Box::new(TypeRegistry::<K> {
                types: BTreeMap::new(),
            })
        });
        registry
            .as_any_mut()
            .downcast_mut::<TypeRegistry<K>>()
            .expect("registry stored under TypeId::of::<K>() is a TypeRegistry<K>")
    }

    pub(crate) fn register<K: DriverKind>(
        &mut self,
        type_name: &str,
        plugin: &str,
        factory: Arc<K::Factory>,
    ) -> Result<(), KernelError> {
        let registry = self.declare::<K>();
        if let Some((first, _)) = registry.types.get(type_name) {
            return Err(KernelError::DuplicateType {
                kind: K::KIND.to_owned(),
                type_name: type_name.to_owned(),
                first: first.clone(),
                second: plugin.to_owned(),
            });
        }
        registry
            .types
            .insert(type_name.to_owned(), (plugin.to_owned(), factory));
        Ok(())
    }

    /// The registry of kind `K`, if any plugin declared the kind or registered a type of it.
    pub fn of<K: DriverKind>(&self) -> Option<&TypeRegistry<K>> {
        self.kinds
            .get(&TypeId::of::<K>())
            .and_then(|r| r.as_any().downcast_ref())
    }

    /// The factory for `type_name` of kind `K`, or an `invalid_argument` fault.
    pub fn get<K: DriverKind>(&self, type_name: &str) -> Result<Arc<K::Factory>, Fault> {
        match self.of::<K>() {
            Some(registry) => registry.get(type_name),
            None => Err(Fault::invalid(
                "type",
                format!("no {} types are registered", K::KIND),
            )),
        }
    }

    /// Every kind with its types, by kind name.
    pub fn describe(&self) -> BTreeMap<&'static str, Vec<DriverType>> {
        self.kinds
            .values()
            .map(|r| (r.kind(), r.describe()))
            .collect()
    }
}

/// A message addressed to one concrete resource, type-erased so that a driver can add
/// messages its base has never heard of.
pub struct Incoming {
    name: &'static str,
    body: AnyBox,
}

impl Incoming {
    /// Wraps a request for [`Resource::handle`]; [`call`] does it for you.
    pub fn new<M: Request>(msg: M) -> Self {
        Incoming {
            name: M::NAME,
            body: Box::new(msg),
        }
    }

    /// The message's stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `Ok(msg)` if this is an `M`; otherwise the message back, to try the next handler.
    pub fn take<M: Request>(self) -> Result<M, Incoming> {
        if self.body.is::<M>() {
            match self.body.downcast::<M>() {
                Ok(msg) => Ok(*msg),
                Err(body) => Err(Incoming {
                    name: self.name,
                    body,
                }),
            }
        } else {
            Err(self)
        }
    }
}

/// What a [`Resource`] did with a message.
pub enum Handled {
    /// Handled: the reply (a boxed `M::Reply`) or the fault. Made with [`Handled::reply`].
    Reply(Result<AnyBox, Fault>),
    /// Not a message this resource (or any of its bases) knows.
    NotMine(Incoming),
}

impl Handled {
    /// The answer to a message: its handler's result, boxed.
    pub fn reply<R: Send + 'static>(result: Result<R, Fault>) -> Self {
        Handled::Reply(result.map(|r| Box::new(r) as AnyBox))
    }
}

/// The concrete object that handles the messages of one resource of one driver type.
///
/// A driver handles what it overrides or adds and passes everything else to its base:
/// ```ignore
/// async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
///     let msg = match msg.take::<SetVlan>() {
///         Ok(m) => return Handled::reply(self.set_vlan(m).await),
///         Err(other) => other,
///     };
///     self.base.handle(msg, cx).await
/// }
/// ```
#[async_trait]
pub trait Resource: Send + Sync {
    /// Handles `msg` if this resource knows it (or passes it to its base); otherwise
    /// [`Handled::NotMine`] with the message back.
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled;
}

/// Sends `msg` to `resource` and returns its typed reply.
pub async fn call<M: Request>(
    resource: &dyn Resource,
    msg: M,
    cx: &MessageContext,
) -> Result<M::Reply, Fault> {
    match resource.handle(Incoming::new(msg), cx).await {
        Handled::Reply(reply) => reply?
            .downcast::<M::Reply>()
            .map(|r| *r)
            .map_err(|_| Fault::internal(format!("`{}` replied with the wrong type", M::NAME))),
        Handled::NotMine(msg) => Err(Fault::invalid(
            "message",
            format!("this resource does not handle `{}`", msg.name()),
        )),
    }
}
