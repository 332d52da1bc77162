//! Assembly (plugins → a frozen [`Kernel`]) and the life cycle of a running kernel.

use crate::bus::Bus;
use crate::config::{Config, ConfigKey};
use crate::driver::Drivers;
use crate::extension::Extensions;
use crate::fault::panic_message;
use crate::manifest::Manifest;
use crate::migration::{self, Migration};
use crate::plugin::{Assembly, Contributions, Plugin, PluginBuilder};
use crate::registry::{Provided, Registered};
use crate::KernelError;
use futures::FutureExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// The kernel's own name where a plugin name is expected (e.g. owner of its config keys).
pub const KERNEL: &str = "kernel";

fn positive(ms: &u64) -> Result<(), String> {
    if *ms == 0 {
        Err("must be greater than 0".into())
    } else {
        Ok(())
    }
}

/// Milliseconds a bus request waits for its reply unless the caller sets its own
/// ([`crate::bus::RequestBuilder::timeout`]); more than 0. Default 30,000.
pub const REQUEST_TIMEOUT_MS: ConfigKey<u64> = ConfigKey::new(
    "bus.request_timeout_ms",
    "How long a bus request waits for its reply unless the caller says otherwise.",
    || 30_000,
)
.with_validator(positive);

/// Milliseconds each asynchronous extension call may take before it fails with
/// `timeout`, unless its point sets [`crate::ExtensionPoint::TIMEOUT`]; more than 0.
/// Default 30,000.
pub const EXTENSION_TIMEOUT_MS: ConfigKey<u64> = ConfigKey::new(
    "extension.timeout_ms",
    "Bound on each asynchronous extension call unless its point sets its own.",
    || 30_000,
)
.with_validator(positive);

/// Milliseconds one plugin's [`Plugin::start`] may take; more than 0. Default 60,000.
pub const START_TIMEOUT_MS: ConfigKey<u64> = ConfigKey::new(
    "lifecycle.start_timeout_ms",
    "How long one plugin may take to start.",
    || 60_000,
)
.with_validator(positive);

/// Collects the plugins of a distribution and a manifest, and assembles a [`Kernel`].
#[derive(Default)]
pub struct KernelBuilder {
    plugins: Vec<Arc<dyn Plugin>>,
    manifest: Manifest,
    provided: Provided,
}

impl KernelBuilder {
    /// No plugins and the default manifest (every plugin enabled).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin of the distribution (the manifest may still disable it).
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Arc::new(plugin));
        self
    }

    /// Sets the manifest: which plugins run, their configuration and extension order.
    pub fn manifest(mut self, manifest: Manifest) -> Self {
        self.manifest = manifest;
        self
    }

    /// Makes a shared service of the distribution (e.g. the store) available to plugins
    /// through [`Kernel::get`].
    pub fn provide<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.provided.insert(value);
        self
    }

    /// Checks and freezes everything the enabled plugins declare.
    pub fn build(self) -> Result<Kernel, KernelError> {
        let manifest = self.manifest;
        let available = index_by_name(self.plugins)?;
        let enabled = select(&available, &manifest)?;
        let ordered = dependency_order(&enabled)?;

        let mut asm = Assembly::default();
        for key in [
            &REQUEST_TIMEOUT_MS,
            &EXTENSION_TIMEOUT_MS,
            &START_TIMEOUT_MS,
        ] {
            asm.config.declare(KERNEL, key)?;
        }
        for plugin in &ordered {
            asm.contributions
                .entry(plugin.name().to_owned())
                .or_default();
            plugin.build(&mut PluginBuilder {
                plugin: plugin.name(),
                asm: &mut asm,
            });
        }
        if let Some(first) = asm.errors.into_iter().next() {
            return Err(first);
        }
        for (plugin, stream) in &asm.migrations {
            migration::check_stream(plugin, stream)?;
        }
        let config = asm.config.finish(&manifest.config)?;
        let points = asm.points.finish(&manifest.extensions)?;
        let extensions = Extensions::new(
            points,
            Duration::from_millis(config.get(&EXTENSION_TIMEOUT_MS)),
        );
        let request_timeout = Duration::from_millis(config.get(&REQUEST_TIMEOUT_MS));
        let services = asm
            .services
            .into_iter()
            .map(|(id, table)| (id, Arc::new(table)))
            .collect();
        let contributions = asm.contributions;
        let late = asm.kernel;
        let inner = Arc::new_cyclic(|weak| Inner {
            bus: Bus::new(
                WeakKernel(weak.clone()),
                services,
                asm.messages,
                request_timeout,
            ),
            extensions,
            drivers: asm.drivers,
            config,
            migrations: asm.migrations,
            registered: asm.registered,
            provided: self.provided,
            plugins: ordered,
            contributions,
            started: Mutex::new(Vec::new()),
        });
        let kernel = Kernel(inner);
        late.set(kernel.downgrade());
        Ok(kernel)
    }
}

fn index_by_name(
    plugins: Vec<Arc<dyn Plugin>>,
) -> Result<BTreeMap<&'static str, Arc<dyn Plugin>>, KernelError> {
    let mut by_name = BTreeMap::new();
    for plugin in plugins {
        if plugin.name() == KERNEL || by_name.insert(plugin.name(), plugin.clone()).is_some() {
            return Err(KernelError::DuplicatePlugin(plugin.name().to_owned()));
        }
    }
    Ok(by_name)
}

fn select(
    available: &BTreeMap<&'static str, Arc<dyn Plugin>>,
    manifest: &Manifest,
) -> Result<BTreeMap<&'static str, Arc<dyn Plugin>>, KernelError> {
    let known = |name: &String| {
        if available.contains_key(name.as_str()) {
            Ok(())
        } else {
            let names: Vec<&str> = available.keys().copied().collect();
            Err(KernelError::Manifest(format!(
                "unknown plugin `{name}` (this distribution has: {})",
                names.join(", ")
            )))
        }
    };
    let listed = manifest.plugins.iter().flatten();
    for name in listed
        .clone()
        .chain(&manifest.disabled)
        .chain(&manifest.enabled)
    {
        known(name)?;
    }
    let wanted: Option<BTreeSet<&str>> = manifest
        .plugins
        .as_ref()
        .map(|list| list.iter().map(String::as_str).collect());
    let enabled: BTreeMap<_, _> = available
        .iter()
        .filter(|(name, p)| match &wanted {
            Some(wanted) => wanted.contains(*name),
            // An opt-in plugin (fault injection, say) runs only when named.
            None => !p.opt_in() || manifest.enabled.iter().any(|e| e == *name),
        })
        .filter(|(name, _)| !manifest.disabled.iter().any(|d| d == *name))
        .map(|(name, p)| (*name, p.clone()))
        .collect();
    for plugin in enabled.values() {
        if let Some(missing) = plugin.requires().iter().find(|r| !enabled.contains_key(*r)) {
            return Err(KernelError::MissingRequiredPlugin {
                plugin: plugin.name().to_owned(),
                requires: (*missing).to_owned(),
            });
        }
    }
    Ok(enabled)
}

/// Orders plugins so that each comes after what it requires; ties by name.
fn dependency_order(
    enabled: &BTreeMap<&'static str, Arc<dyn Plugin>>,
) -> Result<Vec<Arc<dyn Plugin>>, KernelError> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(enabled.len());
    while ordered.len() < enabled.len() {
        let next = enabled.values().find(|p| {
            !placed.contains(p.name()) && p.requires().iter().all(|r| placed.contains(r))
        });
        match next {
            Some(plugin) => {
                placed.insert(plugin.name());
                ordered.push(plugin.clone());
            }
            None => {
                let stuck: Vec<String> = enabled
                    .keys()
                    .filter(|n| !placed.contains(*n))
                    .map(|n| (*n).to_owned())
                    .collect();
                return Err(KernelError::RequirementCycle(stuck));
            }
        }
    }
    Ok(ordered)
}

pub(crate) struct Inner {
    bus: Bus,
    extensions: Extensions,
    drivers: Drivers,
    config: Config,
    migrations: BTreeMap<String, Vec<Migration>>,
    registered: Registered,
    provided: Provided,
    /// In dependency (start) order.
    plugins: Vec<Arc<dyn Plugin>>,
    contributions: BTreeMap<String, Contributions>,
    /// Indices into `plugins` of those started, in start order.
    started: Mutex<Vec<usize>>,
}

/// A handle to an assembled kernel; cheap to clone.
#[derive(Clone)]
pub struct Kernel(Arc<Inner>);

/// A handle that does not keep the kernel alive.
#[derive(Clone)]
pub struct WeakKernel(Weak<Inner>);

impl WeakKernel {
    /// The kernel, if it has not been dropped.
    pub fn upgrade(&self) -> Option<Kernel> {
        self.0.upgrade().map(Kernel)
    }
}

/// One plugin as introspection shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginDescription {
    /// Its [`Plugin::name`].
    pub name: String,
    /// Its [`Plugin::description`].
    pub description: String,
    /// Its [`Plugin::requires`].
    pub requires: Vec<String>,
    /// Whether it has started (and not stopped since).
    pub started: bool,
    /// What it declared in `build`.
    pub contributes: Contributions,
}

impl Kernel {
    /// Starts assembling a kernel: `Kernel::builder().plugin(..).build()`.
    pub fn builder() -> KernelBuilder {
        KernelBuilder::new()
    }

    /// A handle that does not keep the kernel alive, for what the kernel itself holds.
    pub fn downgrade(&self) -> WeakKernel {
        WeakKernel(Arc::downgrade(&self.0))
    }

    /// The message bus: requests to services, events to subscribers.
    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// The extension points and their implementors, to call them.
    pub fn extensions(&self) -> &Extensions {
        &self.0.extensions
    }

    /// The driver type registries, to find the driver of a record's `type`.
    pub fn drivers(&self) -> &Drivers {
        &self.0.drivers
    }

    /// The validated configuration, read with a [`ConfigKey`].
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// A shared service the distribution provided, e.g. `kernel.get::<Store>()`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.0.provided.get::<T>()
    }

    /// Every `T` that plugins contributed with `PluginBuilder::register`, in plugin
    /// start order, each with the name of the plugin that contributed it.
    pub fn registered<T: Send + Sync + 'static>(&self) -> Vec<(&str, &T)> {
        self.0.registered.all::<T>()
    }

    /// Each plugin's migration stream, by plugin name.
    pub fn migrations(&self) -> &BTreeMap<String, Vec<Migration>> {
        &self.0.migrations
    }

    /// The enabled plugins in start order, with what each contributes.
    pub fn plugins(&self) -> Vec<PluginDescription> {
        let started = self
            .0
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.0
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PluginDescription {
                name: p.name().to_owned(),
                description: p.description().to_owned(),
                requires: p.requires().iter().map(|r| (*r).to_owned()).collect(),
                started: started.contains(&i),
                contributes: self
                    .0
                    .contributions
                    .get(p.name())
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Starts the plugins in dependency order. If one fails (error, panic or timeout),
    /// those already started are stopped in reverse order and the failure is returned.
    pub async fn start(&self) -> Result<(), KernelError> {
        let timeout = Duration::from_millis(self.config().get(&START_TIMEOUT_MS));
        for (i, plugin) in self.0.plugins.iter().enumerate() {
            if self.started_indices().contains(&i) {
                continue;
            }
            let name = plugin.name();
            let started =
                tokio::time::timeout(timeout, AssertUnwindSafe(plugin.start(self)).catch_unwind())
                    .await;
            let failure = match started {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(fault))) => Some(KernelError::StartFailed {
                    plugin: name.to_owned(),
                    reason: fault.to_string(),
                }),
                Ok(Err(payload)) => Some(KernelError::StartFailed {
                    plugin: name.to_owned(),
                    reason: format!("panicked: {}", panic_message(&*payload)),
                }),
                Err(_) => Some(KernelError::StartTimedOut {
                    plugin: name.to_owned(),
                    after: timeout,
                }),
            };
            if let Some(error) = failure {
                tracing::error!(plugin = name, %error, "start failed; stopping what started");
                self.stop().await;
                return Err(error);
            }
            tracing::debug!(plugin = name, "started");
            self.0
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(i);
        }
        Ok(())
    }

    /// Stops every started plugin in reverse start order. A panic in one is logged and
    /// the others still stop.
    pub async fn stop(&self) {
        loop {
            let next = self
                .0
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(i) = next else { break };
            let plugin = &self.0.plugins[i];
            if let Err(payload) = AssertUnwindSafe(plugin.stop(self)).catch_unwind().await {
                tracing::error!(
                    plugin = plugin.name(),
                    panic = %panic_message(&*payload),
                    "stop panicked"
                );
            }
        }
    }

    fn started_indices(&self) -> Vec<usize> {
        self.0
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
