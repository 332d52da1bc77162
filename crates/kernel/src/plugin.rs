//! The `Plugin` trait and the builder through which a plugin declares what it adds.

use crate::bus::{Event, MessageInfo, MessageRegistry, ServiceBuilder, ServiceTable};
use crate::config::{ConfigBuilder, ConfigKey};
use crate::driver::{DriverKind, Drivers};
use crate::extension::{
    AsyncVeto, AsyncVetoPoint, DoUndo, DoUndoPoint, ExtensionPoint, Filter, FilterPoint, Observe,
    ObservePoint, OrderSpec, PointsBuilder, Release, ReleasePoint, Semantics, Veto, VetoImp,
    VetoPoint,
};
use crate::migration::Migration;
use crate::{Fault, Kernel, KernelError};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A feature. Everything it adds to the kernel it declares in [`Plugin::build`].
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Unique, stable, kebab-case name (used by the manifest and in every error).
    fn name(&self) -> &'static str;

    /// One line for `flatstack plugins`.
    fn description(&self) -> &'static str {
        ""
    }

    /// Whether it runs only when the manifest names it (`enabled`, or `plugins`): for
    /// what must never be on unless the operator turns it on, such as fault injection.
    fn opt_in(&self) -> bool {
        false
    }

    /// Plugins that must be enabled for this one to work; they also start before it.
    fn requires(&self) -> &'static [&'static str] {
        &[]
    }

    /// Declares driver types, extension points and their implementations, services,
    /// events, configuration keys and migrations. Called once, before anything starts.
    fn build(&self, b: &mut PluginBuilder<'_>);

    /// Called once the whole kernel is assembled, in dependency order.
    async fn start(&self, _kernel: &Kernel) -> Result<(), Fault> {
        Ok(())
    }

    /// Called at shutdown, in reverse start order.
    async fn stop(&self, _kernel: &Kernel) {}
}

/// What one plugin contributed, for introspection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Contributions {
    /// The bus services it provides.
    pub services: Vec<String>,
    /// The driver types it registers, as `<kind>/<type>`, e.g. `hosts/Simulator`.
    pub driver_types: Vec<String>,
    /// The extension points it owns (and calls).
    pub defines_points: Vec<String>,
    /// The extension points it implements.
    pub implements_points: Vec<String>,
    /// The events it declares it publishes.
    pub events: Vec<String>,
    /// The configuration keys it declares.
    pub config_keys: Vec<String>,
    /// How many migrations its schema stream has.
    pub migrations: usize,
}

/// Everything plugins declare, before it is frozen into a [`Kernel`].
#[derive(Default)]
pub(crate) struct Assembly {
    pub points: PointsBuilder,
    pub drivers: Drivers,
    pub services: HashMap<String, ServiceTable>,
    pub messages: MessageRegistry,
    pub config: ConfigBuilder,
    pub migrations: BTreeMap<String, Vec<Migration>>,
    pub contributions: BTreeMap<String, Contributions>,
    pub registered: crate::registry::Registered,
    pub kernel: KernelRef,
    pub errors: Vec<KernelError>,
}

/// A handle to the kernel being assembled, for implementations a plugin registers in
/// `build` (extensions, factories) that need the kernel when they are called. It resolves
/// once assembly is done, and does not keep the kernel alive.
#[derive(Clone, Default)]
pub struct KernelRef(Arc<std::sync::OnceLock<crate::WeakKernel>>);

impl KernelRef {
    pub(crate) fn set(&self, kernel: crate::WeakKernel) {
        let _ = self.0.set(kernel);
    }

    /// The kernel, or `unavailable` before assembly is done or after it is dropped.
    pub fn get(&self) -> Result<Kernel, Fault> {
        self.0
            .get()
            .and_then(crate::WeakKernel::upgrade)
            .ok_or_else(|| Fault::unavailable("the kernel is not running"))
    }
}

/// Handed to [`Plugin::build`]; every call records what the plugin adds.
pub struct PluginBuilder<'a> {
    pub(crate) plugin: &'static str,
    pub(crate) asm: &'a mut Assembly,
}

impl PluginBuilder<'_> {
    /// A handle to the kernel, usable once assembly is done (see [`KernelRef`]).
    pub fn kernel(&self) -> KernelRef {
        self.asm.kernel.clone()
    }

    /// The name of the plugin being built.
    pub fn plugin_name(&self) -> &'static str {
        self.plugin
    }

    fn contributions(&mut self) -> &mut Contributions {
        self.asm
            .contributions
            .entry(self.plugin.to_owned())
            .or_default()
    }

    fn check(&mut self, result: Result<(), KernelError>) {
        if let Err(e) = result {
            self.asm.errors.push(e);
        }
    }

    fn define<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
    ) -> &mut Self {
        let result = self.asm.points.define::<P, I>(semantics, self.plugin);
        self.check(result);
        self.contributions().defines_points.push(P::NAME.to_owned());
        self
    }

    fn implement<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
        imp: Arc<I>,
    ) -> &mut OrderSpec {
        self.implement_as::<P, I>(semantics, imp, false)
    }

    fn implement_as<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
        imp: Arc<I>,
        async_veto: bool,
    ) -> &mut OrderSpec {
        let plugin = self.plugin;
        self.contributions()
            .implements_points
            .push(P::NAME.to_owned());
        let asm = &mut *self.asm;
        asm.points
            .add::<P, I>(semantics, plugin, (imp, async_veto), &mut asm.errors)
    }

    /// Declares that this plugin owns (and calls) veto point `P`.
    pub fn define_veto<P: VetoPoint>(&mut self) -> &mut Self {
        self.define::<P, VetoImp<P>>(Semantics::Veto)
    }
    /// Declares that this plugin owns (and calls) do/undo point `P`.
    pub fn define_do_undo<P: DoUndoPoint>(&mut self) -> &mut Self {
        self.define::<P, dyn DoUndo<P>>(Semantics::DoUndo)
    }
    /// Declares that this plugin owns (and calls) release point `P`.
    pub fn define_release<P: ReleasePoint>(&mut self) -> &mut Self {
        self.define::<P, dyn Release<P>>(Semantics::Release)
    }
    /// Declares that this plugin owns (and calls) observe point `P`.
    pub fn define_observe<P: ObservePoint>(&mut self) -> &mut Self {
        self.define::<P, dyn Observe<P>>(Semantics::Observe)
    }
    /// Declares that this plugin owns (and calls) filter point `P`.
    pub fn define_filter<P: FilterPoint>(&mut self) -> &mut Self {
        self.define::<P, dyn Filter<P>>(Semantics::Filter)
    }

    /// Implements veto point `P`; the returned spec sets its order.
    pub fn veto<P: VetoPoint>(&mut self, imp: impl Veto<P>) -> &mut OrderSpec {
        self.implement::<P, VetoImp<P>>(Semantics::Veto, Arc::new(VetoImp::Sync(Box::new(imp))))
    }
    /// Implements veto point `P` with a check that waits (e.g. reads the store): `P`'s
    /// owner awaits it, after the synchronous ones. The returned spec sets its order.
    pub fn veto_async<P: AsyncVetoPoint>(&mut self, imp: impl AsyncVeto<P>) -> &mut OrderSpec {
        let imp = Arc::new(VetoImp::Async(Box::new(imp)));
        self.implement_as::<P, VetoImp<P>>(Semantics::Veto, imp, true)
    }
    /// Implements do/undo point `P`; the returned spec sets its order.
    pub fn do_undo<P: DoUndoPoint>(&mut self, imp: impl DoUndo<P>) -> &mut OrderSpec {
        self.implement::<P, dyn DoUndo<P>>(Semantics::DoUndo, Arc::new(imp))
    }
    /// Implements release point `P`; the returned spec sets its order.
    pub fn release<P: ReleasePoint>(&mut self, imp: impl Release<P>) -> &mut OrderSpec {
        self.implement::<P, dyn Release<P>>(Semantics::Release, Arc::new(imp))
    }
    /// Implements observe point `P`; the returned spec sets its order.
    pub fn observe<P: ObservePoint>(&mut self, imp: impl Observe<P>) -> &mut OrderSpec {
        self.implement::<P, dyn Observe<P>>(Semantics::Observe, Arc::new(imp))
    }
    /// Implements filter point `P`; the returned spec sets its order.
    pub fn filter<P: FilterPoint>(&mut self, imp: impl Filter<P>) -> &mut OrderSpec {
        self.implement::<P, dyn Filter<P>>(Semantics::Filter, Arc::new(imp))
    }

    /// Declares resource kind `K`, so it is listed even before any driver registers.
    pub fn driver_kind<K: DriverKind>(&mut self) -> &mut Self {
        self.asm.drivers.declare::<K>();
        self
    }

    /// Registers `factory` as driver type `type_name` of kind `K`.
    pub fn driver<K: DriverKind>(
        &mut self,
        type_name: &str,
        factory: Arc<K::Factory>,
    ) -> &mut Self {
        let result = self
            .asm
            .drivers
            .register::<K>(type_name, self.plugin, factory);
        self.check(result);
        self.contributions()
            .driver_types
            .push(format!("{}/{type_name}", K::KIND));
        self
    }

    /// Provides service `id`; add its handlers to the returned builder.
    pub fn service<S: Send + Sync + 'static>(
        &mut self,
        id: &str,
        state: S,
    ) -> ServiceBuilder<'_, S> {
        self.service_arc(id, Arc::new(state))
    }

    /// Like [`PluginBuilder::service`], for state the plugin also keeps a handle to.
    pub fn service_arc<S: Send + Sync + 'static>(
        &mut self,
        id: &str,
        state: Arc<S>,
    ) -> ServiceBuilder<'_, S> {
        let plugin = self.plugin;
        self.contributions().services.push(id.to_owned());
        let asm = &mut *self.asm;
        if let Some(existing) = asm.services.get(id) {
            asm.errors.push(KernelError::DuplicateService {
                service: id.to_owned(),
                first: existing.plugin.clone(),
                second: plugin.to_owned(),
            });
        }
        // A duplicate still gets a (discarded) table so the builder chain type-checks.
        let key = if asm.services.contains_key(id) {
            format!("{id}\u{0}duplicate-of-{plugin}")
        } else {
            id.to_owned()
        };
        let table = asm
            .services
            .entry(key)
            .or_insert_with(|| ServiceTable::new(id, plugin));
        ServiceBuilder {
            table,
            state,
            messages: &mut asm.messages,
            errors: &mut asm.errors,
        }
    }

    /// Declares an event this plugin publishes (for schemas and remote decoding).
    pub fn event<E: Event>(&mut self) -> &mut Self {
        let result = self.asm.messages.add(MessageInfo::event::<E>());
        self.check(result);
        self.contributions().events.push(E::NAME.to_owned());
        self
    }

    /// Declares configuration key `key` (its default, validation and description).
    pub fn config<T>(&mut self, key: &ConfigKey<T>) -> &mut Self
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let result = self.asm.config.declare(self.plugin, key);
        self.check(result);
        self.contributions().config_keys.push(key.name.to_owned());
        self
    }

    /// Contributes `item` to the open list of `T`s that some other component reads with
    /// [`Kernel::registered`] (e.g. the API resources the HTTP layer serves).
    pub fn register<T: Send + Sync + 'static>(&mut self, item: T) -> &mut Self {
        self.asm.registered.push(self.plugin, item);
        self
    }

    /// Adds the next migration of this plugin's own schema stream.
    pub fn migration(&mut self, migration: Migration) -> &mut Self {
        self.asm
            .migrations
            .entry(self.plugin.to_owned())
            .or_default()
            .push(migration);
        self.contributions().migrations += 1;
        self
    }
}
