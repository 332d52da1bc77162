//! Where implementors are collected during `build` and frozen, ordered, at assembly.

use super::order::{self, OrderSpec};
use super::{ExtensionPoint, Semantics};
use crate::type_map::TypeIdMap;
use crate::KernelError;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The histogram of every extension call's duration, by point, implementor and whether
/// it is remote.
pub const EXTENSION_CALL_SECONDS: &str = "flatstack_extension_call_seconds";

/// Per (point, plugin) counters, updated with relaxed atomics on every call, and the
/// calls' durations in the process's metrics recorder (if one is installed when the first
/// call is made: the node installs it before it assembles the kernel).
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub vetoes: AtomicU64,
    pub panics: AtomicU64,
    pub timeouts: AtomicU64,
    pub total_ns: AtomicU64,
    pub max_ns: AtomicU64,
    /// (point, implementor, remote): the histogram's labels.
    labels: (String, String, bool),
    histogram: std::sync::OnceLock<metrics::Histogram>,
}

impl CallStats {
    pub fn new(point: &str, implementor: &str, remote: bool) -> CallStats {
        CallStats {
            labels: (point.to_owned(), implementor.to_owned(), remote),
            ..CallStats::default()
        }
    }

    pub fn record(&self, elapsed: Duration) {
        self.histogram
            .get_or_init(|| {
                let (point, implementor, remote) = &self.labels;
                metrics::histogram!(EXTENSION_CALL_SECONDS,
                    "point" => point.clone(), "implementor" => implementor.clone(),
                    "remote" => remote.to_string())
            })
            .record(elapsed.as_secs_f64());
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        // A new maximum is rare: read first so the common case costs no locked write.
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        let total_ns = self.total_ns.load(Ordering::Relaxed);
        StatsSnapshot {
            calls,
            errors: self.errors.load(Ordering::Relaxed),
            vetoes: self.vetoes.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            mean_ns: total_ns.checked_div(calls).unwrap_or(0),
            max_ns: self.max_ns.load(Ordering::Relaxed),
        }
    }
}

/// The metrics of one (point, plugin) pair at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Calls since the kernel was assembled.
    pub calls: u64,
    /// Calls that returned an error (a veto's refusal, a panic and a time-out are counted
    /// in their own fields instead).
    pub errors: u64,
    /// Calls of a veto that refused.
    pub vetoes: u64,
    /// Calls that panicked (each turned into an `internal` fault).
    pub panics: u64,
    /// Calls that did not finish within the point's timeout.
    pub timeouts: u64,
    /// Mean duration of a call, in nanoseconds.
    pub mean_ns: u64,
    /// Longest call, in nanoseconds.
    pub max_ns: u64,
}

/// One registered implementor, in calling order once assembled.
pub(crate) struct Implementor<I: ?Sized> {
    pub plugin: Arc<str>,
    pub imp: Arc<I>,
    pub stats: Arc<CallStats>,
}

/// A type-erased `Vec<Implementor<I>>`, so points of every implementor type share one map.
trait Slot: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn permute(&mut self, order: &[usize]);
}

impl<I: ?Sized + Send + Sync + 'static> Slot for Vec<Implementor<I>> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn permute(&mut self, order: &[usize]) {
        let mut taken: Vec<Option<Implementor<I>>> = self.drain(..).map(Some).collect();
        self.extend(order.iter().filter_map(|&i| taken[i].take()));
    }
}

struct Point {
    name: &'static str,
    description: &'static str,
    semantics: Semantics,
    remote: bool,
    timeout: Option<Duration>,
    owner: Option<String>,
    specs: Vec<(String, OrderSpec)>,
    stats: Vec<Arc<CallStats>>,
    /// Per implementor: an asynchronous veto (shown by introspection).
    async_veto: Vec<bool>,
    slot: Box<dyn Slot>,
}

impl Point {
    fn new<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(semantics: Semantics) -> Self {
        Point {
            name: P::NAME,
            description: P::DESCRIPTION,
            semantics,
            remote: P::REMOTE,
            timeout: P::TIMEOUT,
            owner: None,
            specs: Vec::new(),
            stats: Vec::new(),
            async_veto: Vec::new(),
            slot: Box::new(Vec::<Implementor<I>>::new()),
        }
    }
}

/// Collects definitions and implementors while plugins build.
#[derive(Default)]
pub(crate) struct PointsBuilder {
    points: TypeIdMap<Point>,
    scratch: OrderSpec,
}

impl PointsBuilder {
    /// `I` is the implementor trait object (`dyn DoUndo<P>`, ...; `VetoImp<P>` for vetoes),
    /// which also fixes the semantics.
    pub fn define<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
        owner: &str,
    ) -> Result<(), KernelError> {
        let point = self
            .points
            .entry(TypeId::of::<I>())
            .or_insert_with(|| Point::new::<P, I>(semantics));
        match &point.owner {
            Some(first) => Err(KernelError::DuplicatePoint {
                point: P::NAME.to_owned(),
                first: first.clone(),
                second: owner.to_owned(),
            }),
            None => {
                point.owner = Some(owner.to_owned());
                Ok(())
            }
        }
    }

    /// Registers `imp` (`async_veto`: an asynchronous veto, for introspection); on error
    /// records it in `errors` and hands out a throw-away spec.
    pub fn add<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
        plugin: &str,
        (imp, async_veto): (Arc<I>, bool),
        errors: &mut Vec<KernelError>,
    ) -> &mut OrderSpec {
        match self.try_add::<P, I>(semantics, plugin, imp, async_veto) {
            Ok(index) => {
                &mut self
                    .points
                    .get_mut(&TypeId::of::<I>())
                    .expect("just added")
                    .specs[index]
                    .1
            }
            Err(e) => {
                errors.push(e);
                &mut self.scratch
            }
        }
    }

    fn try_add<P: ExtensionPoint, I: ?Sized + Send + Sync + 'static>(
        &mut self,
        semantics: Semantics,
        plugin: &str,
        imp: Arc<I>,
        async_veto: bool,
    ) -> Result<usize, KernelError> {
        let point = self
            .points
            .entry(TypeId::of::<I>())
            .or_insert_with(|| Point::new::<P, I>(semantics));
        if point.specs.iter().any(|(p, _)| p == plugin) {
            return Err(KernelError::DuplicateImplementor {
                point: P::NAME.to_owned(),
                plugin: plugin.to_owned(),
            });
        }
        let stats = Arc::new(CallStats::new(P::NAME, plugin, false));
        let slot = point
            .slot
            .as_any_mut()
            .downcast_mut::<Vec<Implementor<I>>>()
            .ok_or_else(|| {
                KernelError::Manifest(format!("internal: slot type of `{}`", P::NAME))
            })?;
        slot.push(Implementor {
            plugin: Arc::from(plugin),
            imp,
            stats: stats.clone(),
        });
        point.stats.push(stats);
        point.async_veto.push(async_veto);
        point.specs.push((plugin.to_owned(), OrderSpec::default()));
        Ok(point.specs.len() - 1)
    }

    /// Applies manifest overrides, orders every point and freezes the registry.
    pub fn finish(
        mut self,
        overrides: &BTreeMap<String, BTreeMap<String, OrderSpec>>,
    ) -> Result<PointRegistry, KernelError> {
        let mut names: HashMap<&'static str, TypeId> = HashMap::new();
        for (id, point) in &self.points {
            if names.insert(point.name, *id).is_some() {
                return Err(KernelError::DuplicatePoint {
                    point: point.name.to_owned(),
                    first: "one marker type".into(),
                    second: "another with the same NAME".into(),
                });
            }
        }
        for (point_name, plugins) in overrides {
            let point = names
                .get(point_name.as_str())
                .and_then(|id| self.points.get_mut(id))
                .ok_or_else(|| {
                    KernelError::Manifest(format!("unknown extension point `{point_name}`"))
                })?;
            for (plugin, spec) in plugins {
                // An operator's order names implementors of the point: a name that is not
                // one (a typo, a plugin not enabled) would be ignored, silently.
                let implementors: Vec<&str> = point.specs.iter().map(|(p, _)| p.as_str()).collect();
                if let Some(unknown) = spec
                    .before
                    .iter()
                    .chain(&spec.after)
                    .find(|other| !implementors.contains(&other.as_str()))
                {
                    return Err(KernelError::Manifest(format!(
                        "the order of `{plugin}` on `{point_name}` names `{unknown}`, which does not implement it (its implementors: {})",
                        implementors.join(", ")
                    )));
                }
                let slot = point
                    .specs
                    .iter_mut()
                    .find(|(p, _)| p == plugin)
                    .ok_or_else(|| {
                        KernelError::Manifest(format!(
                            "plugin `{plugin}` does not implement extension point `{point_name}`"
                        ))
                    })?;
                slot.1 = spec.clone();
            }
        }
        for point in self.points.values_mut() {
            let entries: Vec<(&str, &OrderSpec)> =
                point.specs.iter().map(|(p, s)| (p.as_str(), s)).collect();
            let order = order::sort(point.name, &entries)?;
            point.slot.permute(&order);
            let mut specs: Vec<Option<(String, OrderSpec)>> =
                point.specs.drain(..).map(Some).collect();
            point.specs = order.iter().filter_map(|&i| specs[i].take()).collect();
            let mut stats: Vec<Option<Arc<CallStats>>> = point.stats.drain(..).map(Some).collect();
            point.stats = order.iter().filter_map(|&i| stats[i].take()).collect();
            point.async_veto = order.iter().map(|&i| point.async_veto[i]).collect();
        }
        Ok(PointRegistry {
            points: self.points,
        })
    }
}

/// The frozen, ordered registry the dispatcher reads.
pub(crate) struct PointRegistry {
    points: TypeIdMap<Point>,
}

impl PointRegistry {
    /// The ordered implementors behind trait object `I`, and the point's own timeout.
    #[inline]
    pub fn implementors<I: ?Sized + Send + Sync + 'static>(
        &self,
    ) -> Option<(&[Implementor<I>], Option<Duration>)> {
        let point = self.points.get(&TypeId::of::<I>())?;
        let slot = point.slot.as_any().downcast_ref::<Vec<Implementor<I>>>()?;
        Some((slot.as_slice(), point.timeout))
    }

    pub fn describe(&self, remotes: &super::remote::RemoteImplementors) -> Vec<PointDescription> {
        let mut out: Vec<PointDescription> = self
            .points
            .values()
            .map(|p| PointDescription {
                name: p.name.to_owned(),
                description: p.description.to_owned(),
                semantics: p.semantics,
                owner: p.owner.clone(),
                remote: p.remote,
                implementors: p
                    .specs
                    .iter()
                    .zip(&p.stats)
                    .zip(&p.async_veto)
                    .map(
                        |(((plugin, spec), stats), async_veto)| ImplementorDescription {
                            plugin: plugin.clone(),
                            order: spec.clone(),
                            async_veto: *async_veto,
                            remote: None,
                            stats: stats.snapshot(),
                        },
                    )
                    .chain(remotes.describe(p.name))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Introspection of one extension point.
#[derive(Debug, Clone, Serialize)]
pub struct PointDescription {
    /// The point's [`ExtensionPoint::NAME`](super::ExtensionPoint::NAME).
    pub name: String,
    /// Its [`ExtensionPoint::DESCRIPTION`](super::ExtensionPoint::DESCRIPTION).
    pub description: String,
    /// How its owner uses what implementors return.
    pub semantics: Semantics,
    /// The plugin that defines the point and calls it; `None` if no loaded plugin defines it.
    pub owner: Option<String>,
    /// Whether services outside the node may implement it ([`super::remote`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// In calling order.
    pub implementors: Vec<ImplementorDescription>,
}

/// Introspection of one implementor of an extension point.
#[derive(Debug, Clone, Serialize)]
pub struct ImplementorDescription {
    /// The implementing plugin.
    pub plugin: String,
    /// Its place among the point's implementors, after the manifest's overrides.
    pub order: OrderSpec,
    /// An asynchronous veto ([`super::AsyncVeto`]); shown only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub async_veto: bool,
    /// A service outside the node: its registration ([`super::remote`]). Remote
    /// implementors come after the in-process ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<super::remote::RemoteRegistration>,
    /// Its calls so far.
    pub stats: StatsSnapshot,
}
