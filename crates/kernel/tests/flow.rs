//! The flow engine: rollback in reverse, cleanup of the failing step, skips, panics,
//! durations, extension points as steps; and a property over random chains.

use flatstack_kernel::flow::{ExtensionStep, StepOutcome};
use flatstack_kernel::{
    async_trait, DoUndo, DoUndoPoint, ExtensionPoint, Fault, Flow, Kernel, Plugin, PluginBuilder,
    Step,
};
use proptest::prelude::*;
use serde_json::json;

#[derive(Default)]
struct Ctx {
    log: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Ok,
    Fail,
    Panic,
    Skip,
    FailRollback,
    FailCleanup,
}

struct S {
    name: String,
    mode: Mode,
}

fn s(name: &str, mode: Mode) -> S {
    S {
        name: name.to_owned(),
        mode,
    }
}

#[async_trait]
impl Step<Ctx> for S {
    fn name(&self) -> &str {
        &self.name
    }
    fn skip(&self, _ctx: &Ctx) -> bool {
        self.mode == Mode::Skip
    }
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push(format!("run {}", self.name));
        match self.mode {
            Mode::Fail | Mode::FailCleanup => Err(Fault::conflict(format!("{} failed", self.name))),
            Mode::Panic => panic!("{} panicked", self.name),
            _ => Ok(()),
        }
    }
    async fn rollback(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push(format!("rollback {}", self.name));
        if self.mode == Mode::FailRollback {
            return Err(Fault::internal("rollback broke"));
        }
        Ok(())
    }
    async fn cleanup(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push(format!("cleanup {}", self.name));
        if self.mode == Mode::FailCleanup {
            return Err(Fault::internal("cleanup broke"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn failure_cleans_up_the_failing_step_then_rolls_back_in_reverse() {
    let flow = Flow::new("create")
        .step(s("a", Mode::Ok))
        .step(s("b-skipped", Mode::Skip))
        .step(s("c", Mode::FailRollback))
        .step(s("d", Mode::Fail))
        .step(s("e", Mode::Ok));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert_eq!(
        ctx.log,
        [
            "run a",
            "run c",
            "run d",
            "cleanup d",
            "rollback c",
            "rollback a"
        ]
    );
    assert_eq!(failure.fault.detail_str("step"), Some("d"));
    assert_eq!(failure.fault.detail_str("flow"), Some("create"));
    let outcomes: Vec<StepOutcome> = failure.report.steps().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [
            StepOutcome::RolledBack,
            StepOutcome::Skipped,
            StepOutcome::RollbackFailed,
            StepOutcome::Failed,
            StepOutcome::NotRun
        ]
    );
    // The failed rollback is not only logged: the fault says so.
    assert!(failure.fault.rollback_incomplete());
    assert_eq!(
        failure.fault.details["undo_failed"],
        json!([{"step": "c", "code": "internal", "message": "rollback broke"}])
    );
    assert_eq!(failure.fault.details["rollback_failed"], json!(["c"]));
    assert_eq!(
        failure.fault.message, "d failed",
        "the failure is the answer"
    );
}

#[tokio::test]
async fn every_failed_rollback_and_a_failed_cleanup_are_on_the_fault() {
    let flow = Flow::new("create")
        .step(s("a", Mode::FailRollback))
        .step(s("b", Mode::Ok))
        .step(s("c", Mode::FailRollback))
        .step(s("d", Mode::FailCleanup));
    let failure = flow.run(&mut Ctx::default()).await.unwrap_err();
    assert_eq!(failure.fault.detail_str("step"), Some("d"));
    let steps: Vec<&str> = failure
        .fault
        .undo_failures()
        .iter()
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["d", "c", "a"],
        "cleanup first, then the rollback's order"
    );
    assert_eq!(
        failure.fault.details["undo_failed"][0]["message"],
        "cleanup broke"
    );
    assert_eq!(
        failure.fault.details["rollback_failed"],
        json!(["d", "c", "a"])
    );
    assert_eq!(
        failure.report.outcome("d"),
        Some(StepOutcome::RollbackFailed)
    );
    assert_eq!(failure.report.outcome("b"), Some(StepOutcome::RolledBack));

    // A rollback that completes adds nothing.
    let flow = Flow::new("create")
        .step(s("a", Mode::Ok))
        .step(s("b", Mode::Fail));
    let failure = flow.run(&mut Ctx::default()).await.unwrap_err();
    assert!(!failure.fault.rollback_incomplete());
    assert!(failure.fault.details.get("undo_failed").is_none());
}

/// A step that keeps what it did when an undo failed (as a VM's row is kept for recovery).
struct Keeper;
#[async_trait]
impl Step<Ctx> for Keeper {
    fn name(&self) -> &str {
        "record"
    }
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("run record".into());
        Ok(())
    }
    async fn rollback(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("rollback record".into());
        Ok(())
    }
    fn keep_if_rollback_incomplete(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_step_may_keep_its_work_when_a_later_undo_failed() {
    let flow = Flow::new("create")
        .step(Keeper)
        .step(s("a", Mode::Ok))
        .step(s("b", Mode::FailRollback))
        .step(s("c", Mode::Fail));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert_eq!(
        ctx.log,
        [
            "run record",
            "run a",
            "run b",
            "run c",
            "cleanup c",
            "rollback b",
            "rollback a"
        ]
    );
    assert_eq!(failure.report.outcome("record"), Some(StepOutcome::Kept));
    assert_eq!(failure.report.outcome("a"), Some(StepOutcome::RolledBack));

    // With every undo done, it is rolled back like any step.
    let flow = Flow::new("create").step(Keeper).step(s("c", Mode::Fail));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert_eq!(
        ctx.log,
        ["run record", "run c", "cleanup c", "rollback record"]
    );
    assert_eq!(
        failure.report.outcome("record"),
        Some(StepOutcome::RolledBack)
    );
}

#[tokio::test]
async fn a_panicking_step_is_a_failure_that_rolls_back() {
    let flow = Flow::new("f")
        .step(s("a", Mode::Ok))
        .step(s("b", Mode::Panic));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert!(failure.fault.message.contains("b panicked"));
    assert_eq!(ctx.log, ["run a", "run b", "cleanup b", "rollback a"]);
}

#[tokio::test]
async fn success_reports_every_step_with_its_duration() {
    struct Slow;
    #[async_trait]
    impl Step<Ctx> for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn run(&self, _ctx: &mut Ctx) -> Result<(), Fault> {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            Ok(())
        }
    }
    let flow = Flow::new("f")
        .step(s("a", Mode::Ok))
        .step(Slow)
        .step(s("c", Mode::Skip));
    let report = flow.run(&mut Ctx::default()).await.unwrap();
    assert_eq!(report.outcome("a"), Some(StepOutcome::Done));
    assert_eq!(report.outcome("c"), Some(StepOutcome::Skipped));
    assert!(report.steps().nth(1).unwrap().duration >= std::time::Duration::from_millis(15));
    assert_eq!(flow.steps(), ["a", "slow", "c"]);
}

// --- Extension points as steps. ---
struct PreStart;
impl ExtensionPoint for PreStart {
    const NAME: &'static str = "test.pre-start";
    const DESCRIPTION: &'static str = "Before start.";
}
impl DoUndoPoint for PreStart {
    type Context = Ctx;
}
struct Tunnel;
#[async_trait]
impl DoUndo<PreStart> for Tunnel {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("tunnel up".into());
        Ok(())
    }
    async fn undo(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("tunnel down".into());
        Ok(())
    }
}
struct TunnelPlugin;
impl Plugin for TunnelPlugin {
    fn name(&self) -> &'static str {
        "tunnel"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.do_undo::<PreStart>(Tunnel);
    }
}

#[tokio::test]
async fn an_extension_point_step_is_undone_when_a_later_step_fails() {
    let k = Kernel::builder().plugin(TunnelPlugin).build().unwrap();
    let flow = Flow::new("start")
        .step(s("alloc", Mode::Ok))
        .step(ExtensionStep::<PreStart>::new(&k))
        .step(s("boot", Mode::Fail));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert_eq!(failure.fault.detail_str("step"), Some("boot"));
    assert_eq!(
        ctx.log,
        [
            "run alloc",
            "tunnel up",
            "run boot",
            "cleanup boot",
            "tunnel down",
            "rollback alloc"
        ]
    );
}

/// Holds something its undo cannot give back.
struct Stuck;
#[async_trait]
impl DoUndo<PreStart> for Stuck {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("stuck up".into());
        Ok(())
    }
    async fn undo(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("stuck down fails".into());
        Err(Fault::unavailable("will not come down").with_detail("injected", "x"))
    }
}
/// Fails its run.
struct Broken;
#[async_trait]
impl DoUndo<PreStart> for Broken {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.log.push("broken".into());
        Err(Fault::internal("broken"))
    }
    async fn undo(&self, _: &mut Ctx) -> Result<(), Fault> {
        Ok(())
    }
}
struct PartPlugin;
impl Plugin for PartPlugin {
    fn name(&self) -> &'static str {
        "part"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.do_undo::<PreStart>(Stuck).order(1);
    }
}
struct BrokenPlugin;
impl Plugin for BrokenPlugin {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.do_undo::<PreStart>(Broken).order(2);
    }
}

#[tokio::test]
async fn an_extension_steps_failed_partial_undo_is_on_the_flows_fault() {
    let k = Kernel::builder()
        .plugin(PartPlugin)
        .plugin(BrokenPlugin)
        .build()
        .unwrap();
    let flow = Flow::new("start")
        .step(Keeper)
        .step(s("alloc", Mode::Ok))
        .step(ExtensionStep::<PreStart>::new(&k));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    assert_eq!(
        ctx.log,
        [
            "run record",
            "run alloc",
            "stuck up",
            "broken",
            "stuck down fails",
            "rollback alloc"
        ]
    );
    let fault = &failure.fault;
    assert_eq!(fault.detail_str("step"), Some("test.pre-start"));
    assert_eq!(fault.detail_str("plugin"), Some("broken"));
    assert_eq!(
        fault.details["undo_failed"],
        json!([{
            "step": "test.pre-start", "plugin": "part", "point": "test.pre-start",
            "code": "unavailable",
            "message": "plugin `part` failed at `test.pre-start`: will not come down",
        }])
    );
    assert_eq!(
        failure.report.outcome("test.pre-start"),
        Some(StepOutcome::RollbackFailed)
    );
    assert_eq!(
        failure.report.outcome("alloc"),
        Some(StepOutcome::RolledBack)
    );
    assert_eq!(failure.report.outcome("record"), Some(StepOutcome::Kept));
}

#[tokio::test(start_paused = true)]
async fn an_extension_steps_failed_undo_names_step_plugin_and_point() {
    let k = Kernel::builder().plugin(PartPlugin).build().unwrap();
    let flow = Flow::new("start")
        .step(ExtensionStep::<PreStart>::new(&k))
        .step(s("boot", Mode::Fail));
    let mut ctx = Ctx::default();
    let failure = flow.run(&mut ctx).await.unwrap_err();
    // Transient, so tried again (7 times in all) before it is given up and reported.
    let tries = ctx.log.iter().filter(|l| *l == "stuck down fails").count();
    assert_eq!(tries, 7, "{:?}", ctx.log);
    let fault = &failure.fault;
    assert_eq!(fault.detail_str("step"), Some("boot"));
    assert_eq!(
        fault.details["undo_failed"],
        json!([{
            "step": "test.pre-start", "plugin": "part", "point": "test.pre-start",
            "code": "unavailable",
            "message": "plugin `part` failed at `test.pre-start`: will not come down",
        }])
    );
    assert_eq!(fault.details["rollback_failed"], json!(["test.pre-start"]));
    assert_eq!(
        failure.report.outcome("test.pre-start"),
        Some(StepOutcome::RollbackFailed)
    );
}

proptest! {
    /// For random chains with a failure at a random step, exactly the completed steps
    /// are undone, in reverse order, each once.
    #[test]
    fn exactly_the_completed_steps_roll_back_in_reverse(
        modes in prop::collection::vec(prop_oneof![Just(Mode::Ok), Just(Mode::Skip), Just(Mode::FailRollback)], 1..20),
        fail_at in any::<prop::sample::Index>(),
        panics in any::<bool>(),
    ) {
        let failing = fail_at.index(modes.len());
        let mut flow = Flow::new("random");
        for (i, mode) in modes.iter().enumerate() {
            let mode = if i == failing { if panics { Mode::Panic } else { Mode::Fail } } else { *mode };
            flow = flow.step(s(&format!("s{i}"), mode));
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut ctx = Ctx::default();
        let failure = rt.block_on(flow.run(&mut ctx)).unwrap_err();
        let failing_name = format!("s{failing}");
        prop_assert_eq!(failure.fault.detail_str("step"), Some(failing_name.as_str()));

        let completed: Vec<usize> = (0..failing).filter(|&i| modes[i] != Mode::Skip).collect();
        let mut expected: Vec<String> = completed.iter().map(|i| format!("run s{i}")).collect();
        expected.push(format!("run s{failing}"));
        expected.push(format!("cleanup s{failing}"));
        expected.extend(completed.iter().rev().map(|i| format!("rollback s{i}")));
        prop_assert_eq!(ctx.log, expected);
    }
}
