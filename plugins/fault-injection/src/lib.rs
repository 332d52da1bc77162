//! Fault injection at extension points, for testing rollback: arm a point through the API
//! (`POST /v1/fault-injections {"point": "vm.pre-instantiate", "mode": "panic"}`) and the
//! next call of that point (or every call, until the injection is deleted) fails, panics,
//! hangs or is delayed inside this plugin's implementor — which runs after every other implementor of
//! the point, so theirs are undone. Unarmed, each call costs one atomic load.
//!
//! `"undo": true` arms the point's undo instead: a rollback or release that fails. To fail
//! it while the point's own run fails (the dispatcher undoing the implementors that
//! completed), place this implementor first in the manifest
//! (`[extensions."vm.volume.allocate".fault-injection]`, `order = -1000`).
//!
//! Meant for test and staging clouds: disable it in production with
//! `disabled = ["fault-injection"]` in the manifest.

use flatstack_header::vm::{
    HostFilter, VmAllocateVolumes, VmCreateCheck, VmDestroyCheck, VmPostInstantiate, VmPreDestroy,
    VmPreInstantiate, VmPreStart, VmPreStop, VmRebootCheck, VmRelease, VmReserve, VmStartCheck,
    VmStopCheck,
};
use flatstack_header::{
    ApiResource, DeleteResource, GetResource, Inventory, InventoryList, ListResources,
    UpdateResource,
};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, DoUndo, DoUndoPoint, ExtensionPoint, Fault, Filter, FilterPoint, Message, Plugin,
    PluginBuilder, Release, ReleasePoint, Request, Veto, VetoPoint,
};
use flatstack_store::resource::new_uuid;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What an armed point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Return an error (a veto point refuses).
    Fail,
    /// Panic inside the implementor.
    Panic,
    /// Never return (the kernel's `extension.timeout_ms` ends the call); not for veto
    /// points, which are synchronous.
    Hang,
    /// Fail as a busy database would (`unavailable`): a transient failure, which releases
    /// and undos try again.
    Busy,
    /// Wait `delay_ms`, then go on as if unarmed (to widen a race window); not for veto
    /// points either.
    Delay,
}

/// Arms an extension point.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFaultInjection {
    /// The extension point, e.g. `vm.pre-instantiate` (see `/v1/extension-points`).
    pub point: String,
    pub mode: Mode,
    /// Fire on the next call only, then disarm.
    #[serde(default)]
    pub once: bool,
    /// Arm the undo of a do/undo point instead of its run: what a rollback or a release
    /// does when giving back fails.
    #[serde(default)]
    pub undo: bool,
    /// How long `delay` waits, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
}
impl Message for CreateFaultInjection {
    const NAME: &'static str = "fault-injection.create";
}
impl Request for CreateFaultInjection {
    type Reply = Inventory;
}

/// An armed point, as the API answers it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultInjectionInventory {
    pub uuid: String,
    /// The extension point.
    pub point: String,
    /// Whether the undo of a do/undo point is armed rather than its run.
    pub undo: bool,
    pub mode: Mode,
    pub once: bool,
    /// With mode `delay` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// How often it fired.
    pub fired: u64,
}

#[derive(Debug, Clone)]
struct Armed {
    uuid: String,
    mode: Mode,
    once: bool,
    delay_ms: u64,
    fired: u64,
}

impl Armed {
    /// Its inventory; `key` is what it is armed under ([`Faults::key`]).
    fn inventory(&self, key: &str) -> Inventory {
        let (point, undo) = match key.strip_suffix(UNDO) {
            Some(point) => (point, true),
            None => (key, false),
        };
        let mut inventory = Inventory::new();
        inventory.insert("uuid".into(), json!(self.uuid));
        inventory.insert("point".into(), json!(point));
        inventory.insert("undo".into(), json!(undo));
        inventory.insert("mode".into(), json!(self.mode));
        inventory.insert("once".into(), json!(self.once));
        if self.mode == Mode::Delay {
            inventory.insert("delay_ms".into(), json!(self.delay_ms));
        }
        inventory.insert("fired".into(), json!(self.fired));
        inventory
    }
}

/// The armed points (one injection per point) and the points that can be armed.
#[derive(Default)]
struct Faults {
    any: AtomicBool,
    armed: Mutex<BTreeMap<String, Armed>>,
    /// Point → whether it is a veto point (which cannot hang).
    points: BTreeMap<&'static str, bool>,
}

impl Faults {
    fn armed(&self) -> MutexGuard<'_, BTreeMap<String, Armed>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mode to play at `point` now, and its delay, if it is armed (disarming a `once`).
    fn take(&self, point: &str) -> Option<(Mode, u64)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.armed();
        let entry = armed.get_mut(point)?;
        entry.fired += 1;
        let mode = (entry.mode, entry.delay_ms);
        if entry.once {
            armed.remove(point);
            self.any.store(!armed.is_empty(), Ordering::Release);
        }
        Some(mode)
    }

    /// The key an injection is armed under: the point, or its undo.
    fn key(point: &str, undo: bool) -> String {
        if undo {
            format!("{point}{UNDO}")
        } else {
            point.to_owned()
        }
    }

    fn arm(&self, msg: CreateFaultInjection) -> Result<Inventory, Fault> {
        let veto = *self.points.get(msg.point.as_str()).ok_or_else(|| {
            Fault::invalid(
                "point",
                format!(
                    "`{}` cannot be armed (these can: {})",
                    msg.point,
                    self.points.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if veto && msg.undo {
            return Err(Fault::invalid(
                "undo",
                format!("`{}` is a veto point: it has no undo", msg.point),
            ));
        }
        if veto && matches!(msg.mode, Mode::Hang | Mode::Delay) {
            return Err(Fault::invalid(
                "mode",
                format!(
                    "`{}` is a veto point: it can fail or panic, not hang or wait",
                    msg.point
                ),
            ));
        }
        let key = Self::key(&msg.point, msg.undo);
        let mut armed = self.armed();
        if let Some(existing) = armed.get(&key) {
            return Err(Fault::conflict(format!(
                "`{key}` is already armed by fault injection {}",
                existing.uuid
            )));
        }
        let entry = Armed {
            uuid: new_uuid(),
            mode: msg.mode,
            once: msg.once,
            delay_ms: msg.delay_ms,
            fired: 0,
        };
        let inventory = entry.inventory(&key);
        armed.insert(key, entry);
        self.any.store(true, Ordering::Release);
        Ok(inventory)
    }

    fn list(&self) -> Vec<Inventory> {
        self.armed()
            .iter()
            .map(|(point, armed)| armed.inventory(point))
            .collect()
    }

    fn get(&self, uuid: &str) -> Result<Inventory, Fault> {
        self.list()
            .into_iter()
            .find(|i| i.get("uuid").and_then(|u| u.as_str()) == Some(uuid))
            .ok_or_else(|| Fault::not_found(format!("no fault injection {uuid}")))
    }

    fn disarm(&self, uuid: &str) -> Result<(), Fault> {
        let mut armed = self.armed();
        let before = armed.len();
        armed.retain(|_, a| a.uuid != uuid);
        if armed.len() == before {
            return Err(Fault::not_found(format!("no fault injection {uuid}")));
        }
        self.any.store(!armed.is_empty(), Ordering::Release);
        Ok(())
    }
}

/// What an armed undo is keyed by, after its point's name.
const UNDO: &str = "#undo";

fn injected(point: &str) -> Fault {
    Fault::internal(format!("fault injected at `{point}`")).with_detail("injected", point)
}

/// Plays `mode`: the error to return, or a panic, or a wait that never ends, or a wait of
/// `delay_ms` before going on.
async fn play(point: &str, (mode, delay_ms): (Mode, u64)) -> Result<(), Fault> {
    match mode {
        Mode::Fail => Err(injected(point)),
        Mode::Busy => Err(
            Fault::unavailable(format!("fault injected at `{point}`: busy"))
                .with_detail("injected", point),
        ),
        Mode::Panic => panic!("fault injected at `{point}`"),
        Mode::Hang => std::future::pending().await,
        Mode::Delay => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            Ok(())
        }
    }
}

/// This plugin's implementor of point `P`.
struct Trap<P> {
    faults: Arc<Faults>,
    _point: PhantomData<fn() -> P>,
}

impl<P> Trap<P> {
    fn new(faults: &Arc<Faults>) -> Self {
        Trap {
            faults: faults.clone(),
            _point: PhantomData,
        }
    }
}

impl<P: VetoPoint> Veto<P> for Trap<P> {
    fn check(&self, _: &P::Input) -> Result<(), Fault> {
        match self.faults.take(P::NAME) {
            None => Ok(()),
            Some((Mode::Panic, _)) => panic!("fault injected at `{}`", P::NAME),
            Some(_) => Err(injected(P::NAME)),
        }
    }
}

#[async_trait]
impl<P: DoUndoPoint> DoUndo<P> for Trap<P> {
    async fn run(&self, _: &mut P::Context) -> Result<(), Fault> {
        match self.faults.take(P::NAME) {
            None => Ok(()),
            Some(mode) => play(P::NAME, mode).await,
        }
    }

    async fn undo(&self, _: &mut P::Context) -> Result<(), Fault> {
        let key = Faults::key(P::NAME, true);
        match self.faults.take(&key) {
            None => Ok(()),
            Some(mode) => play(&key, mode).await,
        }
    }
}

#[async_trait]
impl<P: ReleasePoint> Release<P> for Trap<P> {
    async fn release(&self, _: &mut P::Context) -> Result<(), Fault> {
        match self.faults.take(P::NAME) {
            None => Ok(()),
            Some(mode) => play(P::NAME, mode).await,
        }
    }
}

#[async_trait]
impl<P: FilterPoint> Filter<P> for Trap<P> {
    async fn filter(
        &self,
        _: &P::Input,
        candidates: Vec<P::Candidate>,
    ) -> Result<Vec<P::Candidate>, Fault> {
        match self.faults.take(P::NAME) {
            None => Ok(candidates),
            Some(mode) => play(P::NAME, mode).await.map(|()| candidates),
        }
    }
}

const SERVICE: &str = "fault-injection";

/// Runs after every other implementor, so that theirs are the ones undone.
const LAST: i32 = i32::MAX;

pub struct FaultInjectionPlugin;

impl Plugin for FaultInjectionPlugin {
    fn name(&self) -> &'static str {
        "fault-injection"
    }

    fn description(&self) -> &'static str {
        "Arms a failure, panic or hang at a VM extension point through the API, to test rollback."
    }

    /// Anyone who can reach its API can make every create fail or hang: off unless the
    /// operator names it (`enabled = ["fault-injection"]`, or `serve --enable`).
    fn opt_in(&self) -> bool {
        true
    }

    fn requires(&self) -> &'static [&'static str] {
        // The points it arms are the VM plugin's.
        &["vm"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        let mut points = BTreeMap::new();
        for veto in [
            VmCreateCheck::NAME,
            VmStartCheck::NAME,
            VmStopCheck::NAME,
            VmRebootCheck::NAME,
            VmDestroyCheck::NAME,
        ] {
            points.insert(veto, true);
        }
        for other in [
            VmReserve::NAME,
            HostFilter::NAME,
            VmAllocateVolumes::NAME,
            VmPreInstantiate::NAME,
            VmPostInstantiate::NAME,
            VmPreStart::NAME,
            VmPreStop::NAME,
            VmPreDestroy::NAME,
            VmRelease::NAME,
        ] {
            points.insert(other, false);
        }
        let faults = Arc::new(Faults {
            points,
            ..Faults::default()
        });
        b.veto::<VmCreateCheck>(Trap::new(&faults)).order(LAST);
        b.veto::<VmStartCheck>(Trap::new(&faults)).order(LAST);
        b.veto::<VmStopCheck>(Trap::new(&faults)).order(LAST);
        b.veto::<VmRebootCheck>(Trap::new(&faults)).order(LAST);
        b.veto::<VmDestroyCheck>(Trap::new(&faults)).order(LAST);
        b.do_undo::<VmReserve>(Trap::new(&faults)).order(LAST);
        b.filter::<HostFilter>(Trap::new(&faults)).order(LAST);
        b.do_undo::<VmAllocateVolumes>(Trap::new(&faults))
            .order(LAST);
        b.do_undo::<VmPostInstantiate>(Trap::new(&faults))
            .order(LAST);
        b.do_undo::<VmPreInstantiate>(Trap::new(&faults))
            .order(LAST);
        b.do_undo::<VmPreStart>(Trap::new(&faults)).order(LAST);
        b.do_undo::<VmPreStop>(Trap::new(&faults)).order(LAST);
        b.do_undo::<VmPreDestroy>(Trap::new(&faults)).order(LAST);
        b.release::<VmRelease>(Trap::new(&faults)).order(LAST);

        b.service_arc(SERVICE, faults)
            .handle::<CreateFaultInjection, _, _>(|faults, msg, _| async move { faults.arm(msg) })
            .handle::<ListResources, _, _>(|faults, msg, _| async move {
                if let Some(field) = msg.filters.keys().next() {
                    return Err(Fault::invalid(
                        field,
                        format!("fault injections cannot be filtered by `{field}`"),
                    ));
                }
                let inventories = faults.list();
                Ok(InventoryList {
                    next: None,
                    total: inventories.len() as u64,
                    inventories,
                })
            })
            .handle::<GetResource, _, _>(
                |faults, _, cx| async move { faults.get(cx.resource_id()?) },
            )
            .handle::<UpdateResource, _, _>(|_, _, _| async move {
                Err::<Inventory, _>(Fault::conflict(
                    "a fault injection cannot be changed: delete it and arm the point again",
                ))
            })
            .handle::<DeleteResource, _, _>(|faults, _, cx| async move {
                faults.disarm(cx.resource_id()?)
            });
        b.register(ApiResource {
            path: "fault-injections",
            service: SERVICE,
            create: CreateFaultInjection::NAME,
            access: flatstack_header::identity::Access::Admin,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(flatstack_header::inventory::schema::<FaultInjectionInventory>),
            filters: &[],
            actions: &[],
            children: &[],
        });
    }
}
