//! Release points: every implementor gives back what it holds, each even if another
//! failed, and every failure is returned for the owner to retry; and the typed slots a
//! context carries for each plugin's own state.

use flatstack_kernel::{
    async_trait, extension_point, Fault, Kernel, Plugin, PluginBuilder, Release, Slots,
};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Vm {
    released_by: Vec<String>,
}

extension_point!(
    VmGone: ReleasePoint, "test.vm.release",
    "A VM is gone: give back what you hold.",
    Context = Vm
);

struct Owner;
impl Plugin for Owner {
    fn name(&self) -> &'static str {
        "owner"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.define_release::<VmGone>();
    }
}

struct Holder {
    name: &'static str,
    fails: Arc<Mutex<bool>>,
}

#[async_trait]
impl Release<VmGone> for Holder {
    async fn release(&self, vm: &mut Vm) -> Result<(), Fault> {
        vm.released_by.push(self.name.to_owned());
        if *self.fails.lock().unwrap() {
            return Err(Fault::unavailable(format!(
                "{} cannot give back",
                self.name
            )));
        }
        Ok(())
    }
}

struct HolderPlugin(&'static str, i32, Arc<Mutex<bool>>);
impl Plugin for HolderPlugin {
    fn name(&self) -> &'static str {
        self.0
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.release::<VmGone>(Holder {
            name: self.0,
            fails: self.2.clone(),
        })
        .order(self.1);
    }
}

fn kernel(holders: &[(&'static str, i32, bool)]) -> (Kernel, Vec<Arc<Mutex<bool>>>) {
    let mut builder = Kernel::builder().plugin(Owner);
    let mut switches = Vec::new();
    for (name, order, fails) in holders {
        let switch = Arc::new(Mutex::new(*fails));
        switches.push(switch.clone());
        builder = builder.plugin(HolderPlugin(name, *order, switch));
    }
    (builder.build().expect("kernel assembles"), switches)
}

#[tokio::test]
async fn every_holder_releases_even_past_a_failure_and_each_failure_is_returned() {
    let (kernel, switches) = kernel(&[("a", 1, false), ("b", 2, true), ("c", 3, true)]);
    let mut vm = Vm::default();
    let fault = kernel
        .extensions()
        .release::<VmGone>(&mut vm)
        .await
        .expect_err("two releases failed");
    assert_eq!(vm.released_by, ["a", "b", "c"], "all ran, in order");
    assert!(fault.rollback_incomplete(), "{fault:?}");
    let failed: Vec<_> = fault
        .undo_failures()
        .iter()
        .map(|f| (f["plugin"].clone(), f["point"].clone()))
        .collect();
    assert_eq!(
        failed,
        [
            ("b".into(), "test.vm.release".into()),
            ("c".into(), "test.vm.release".into())
        ],
        "{fault:?}"
    );
    assert!(fault.message.contains("b cannot give back"), "{fault:?}");

    // Once the holders can give back, the same call succeeds: the owner's retry.
    for switch in &switches {
        *switch.lock().unwrap() = false;
    }
    let mut vm = Vm::default();
    kernel
        .extensions()
        .release::<VmGone>(&mut vm)
        .await
        .expect("released");
    assert_eq!(vm.released_by, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_point_with_no_holder_releases_nothing_and_succeeds() {
    let (kernel, _) = kernel(&[]);
    let mut vm = Vm::default();
    kernel
        .extensions()
        .release::<VmGone>(&mut vm)
        .await
        .expect("nothing to release");
    assert!(vm.released_by.is_empty());
    let described = kernel.extensions().describe();
    let point = described
        .iter()
        .find(|p| p.name == "test.vm.release")
        .expect("the point is described");
    assert_eq!(serde_json::to_value(point).unwrap()["semantics"], "release");
}

#[test]
fn slots_keep_each_plugins_state_apart_and_are_cloned_with_the_context() {
    #[derive(Clone, Debug, PartialEq, Default)]
    struct Tunnels(Vec<&'static str>);
    #[derive(Clone, Debug, PartialEq)]
    struct Lease(u32);

    let mut slots = Slots::default();
    slots.get_or_default::<Tunnels>().0.push("gre-1");
    assert_eq!(slots.insert(Lease(7)), None);
    assert_eq!(slots.insert(Lease(8)), Some(Lease(7)));
    let copy = slots.clone();
    slots.get_mut::<Tunnels>().unwrap().0.push("gre-2");
    assert_eq!(copy.get::<Tunnels>(), Some(&Tunnels(vec!["gre-1"])));
    assert_eq!(
        slots.get::<Tunnels>(),
        Some(&Tunnels(vec!["gre-1", "gre-2"]))
    );
    assert_eq!(slots.remove::<Lease>(), Some(Lease(8)));
    assert_eq!(slots.get::<Lease>(), None);
    assert_eq!(copy.get::<Lease>(), Some(&Lease(8)));
    assert_eq!((slots.len(), copy.len()), (1, 2));
}
