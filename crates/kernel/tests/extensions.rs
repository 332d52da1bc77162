//! Extension points: the four semantics, containment of bad plugins, order and metrics.

use flatstack_kernel::{
    async_trait, DoUndo, DoUndoPoint, ExtensionPoint, Fault, FaultCode, Filter, FilterPoint,
    Kernel, KernelError, Manifest, Observe, ObservePoint, Plugin, PluginBuilder, Veto, VetoPoint,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

struct CreateCheck;
impl ExtensionPoint for CreateCheck {
    const NAME: &'static str = "test.create.pre-check";
    const DESCRIPTION: &'static str = "Before a test resource is created.";
}
impl VetoPoint for CreateCheck {
    type Input = u32;
}

#[derive(Default)]
struct Work {
    log: Vec<String>,
}
struct Instantiate;
impl ExtensionPoint for Instantiate {
    const NAME: &'static str = "test.instantiate";
    const DESCRIPTION: &'static str = "Work with compensation.";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(200));
}
impl DoUndoPoint for Instantiate {
    type Context = Work;
}

struct Created;
impl ExtensionPoint for Created {
    const NAME: &'static str = "test.created";
    const DESCRIPTION: &'static str = "After creation.";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(200));
}
impl ObservePoint for Created {
    type Event = String;
}

struct PickHost;
impl ExtensionPoint for PickHost {
    const NAME: &'static str = "test.pick-host";
    const DESCRIPTION: &'static str = "Narrows host candidates.";
}
impl FilterPoint for PickHost {
    type Input = u32;
    type Candidate = u32;
}

/// The owner of the points.
struct Owner;
impl Plugin for Owner {
    fn name(&self) -> &'static str {
        "owner"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.define_veto::<CreateCheck>()
            .define_do_undo::<Instantiate>()
            .define_observe::<Created>()
            .define_filter::<PickHost>();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Ok,
    Fail,
    Panic,
    Hang,
    FailUndo,
    /// Fails, and cannot give back what it had done before failing.
    FailLeaving,
}

/// A plugin that does `behaviour` at every point it implements and logs each call.
struct Actor {
    name: &'static str,
    behaviour: Behaviour,
    log: Log,
    order: i32,
    after: Option<&'static str>,
}

impl Actor {
    fn new(name: &'static str, behaviour: Behaviour, log: &Log) -> Self {
        Actor {
            name,
            behaviour,
            log: log.clone(),
            order: 0,
            after: None,
        }
    }
}

struct Imp {
    name: &'static str,
    behaviour: Behaviour,
    log: Log,
}

impl Imp {
    fn note(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{what}", self.name));
    }
    async fn act(&self, what: &str) -> Result<(), Fault> {
        self.note(what);
        match self.behaviour {
            Behaviour::Fail => Err(Fault::conflict("no")),
            Behaviour::FailLeaving => Err(Fault::conflict("no")
                .with_undo_failure(None, Fault::internal("half done, left so"))),
            Behaviour::Panic => panic!("boom in {}", self.name),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            Behaviour::Ok | Behaviour::FailUndo => Ok(()),
        }
    }
}

impl Veto<CreateCheck> for Imp {
    fn check(&self, input: &u32) -> Result<(), Fault> {
        self.note(&format!("check {input}"));
        match self.behaviour {
            Behaviour::Fail => {
                Err(Fault::invalid("cpus", "quota exceeded").with_detail("limit", 3))
            }
            Behaviour::Panic => panic!("boom in {}", self.name),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl DoUndo<Instantiate> for Imp {
    async fn run(&self, ctx: &mut Work) -> Result<(), Fault> {
        ctx.log.push(format!("run {}", self.name));
        self.act("run").await
    }
    async fn undo(&self, ctx: &mut Work) -> Result<(), Fault> {
        ctx.log.push(format!("undo {}", self.name));
        self.note("undo");
        if self.behaviour == Behaviour::FailUndo {
            return Err(Fault::internal("cannot undo"));
        }
        Ok(())
    }
}

#[async_trait]
impl Observe<Created> for Imp {
    async fn observe(&self, event: &String) -> Result<(), Fault> {
        self.act(&format!("saw {event}")).await
    }
}

#[async_trait]
impl Filter<PickHost> for Imp {
    async fn filter(&self, input: &u32, hosts: Vec<u32>) -> Result<Vec<u32>, Fault> {
        self.act("filter").await?;
        // Each filter drops hosts divisible by its own input-derived divisor.
        let divisor = input + self.name.len() as u32;
        Ok(hosts.into_iter().filter(|h| h % divisor != 0).collect())
    }
}

impl Plugin for Actor {
    fn name(&self) -> &'static str {
        self.name
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        let imp = || Imp {
            name: self.name,
            behaviour: self.behaviour,
            log: self.log.clone(),
        };
        let spec = b.veto::<CreateCheck>(imp());
        spec.order(self.order);
        if let Some(after) = self.after {
            spec.after(after);
        }
        let spec = b.do_undo::<Instantiate>(imp());
        spec.order(self.order);
        if let Some(after) = self.after {
            spec.after(after);
        }
        b.observe::<Created>(imp()).order(self.order);
        b.filter::<PickHost>(imp()).order(self.order);
    }
}

fn kernel(actors: Vec<Actor>) -> Kernel {
    let mut builder = Kernel::builder().plugin(Owner);
    for a in actors {
        builder = builder.plugin(a);
    }
    builder.build().expect("kernel assembles")
}

fn stats(kernel: &Kernel, point: &str, plugin: &str) -> serde_json::Value {
    let points = kernel.extensions().describe();
    let p = points
        .iter()
        .find(|p| p.name == point)
        .expect("point listed");
    let i = p
        .implementors
        .iter()
        .find(|i| i.plugin == plugin)
        .expect("implementor listed");
    serde_json::to_value(&i.stats).unwrap()
}

#[test]
fn first_veto_stops_the_check_and_names_plugin_and_point() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a-pass", Behaviour::Ok, &log),
        Actor::new("b-refuse", Behaviour::Fail, &log),
        Actor::new("c-never-asked", Behaviour::Ok, &log),
    ]);
    let fault = k.extensions().veto::<CreateCheck>(&7).unwrap_err();
    assert_eq!(fault.code, FaultCode::Vetoed);
    assert_eq!(fault.detail_str("plugin"), Some("b-refuse"));
    assert_eq!(fault.detail_str("point"), Some("test.create.pre-check"));
    assert_eq!(
        fault.details["limit"], 3,
        "the refusal's own details survive"
    );
    assert!(
        fault.message.contains("quota exceeded"),
        "{}",
        fault.message
    );
    assert_eq!(entries(&log), ["a-pass:check 7", "b-refuse:check 7"]);
    assert_eq!(stats(&k, CreateCheck::NAME, "b-refuse")["vetoes"], 1);
    assert_eq!(stats(&k, CreateCheck::NAME, "c-never-asked")["calls"], 0);
}

#[test]
fn a_panicking_veto_is_contained_and_names_the_plugin() {
    let log = Log::default();
    let k = kernel(vec![Actor::new("panicky", Behaviour::Panic, &log)]);
    let fault = k.extensions().veto::<CreateCheck>(&1).unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal);
    assert_eq!(fault.detail_str("plugin"), Some("panicky"));
    assert!(
        fault.message.contains("boom in panicky"),
        "{}",
        fault.message
    );
    assert_eq!(stats(&k, CreateCheck::NAME, "panicky")["panics"], 1);
}

#[tokio::test]
async fn do_undo_failure_undoes_exactly_the_completed_in_reverse() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::Ok, &log),
        Actor::new("b", Behaviour::Ok, &log),
        Actor::new("c", Behaviour::Fail, &log),
        Actor::new("d", Behaviour::Ok, &log),
    ]);
    let mut work = Work::default();
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(fault.detail_str("plugin"), Some("c"));
    assert_eq!(
        fault.code,
        FaultCode::Conflict,
        "the plugin's own code is kept"
    );
    assert_eq!(work.log, ["run a", "run b", "run c", "undo b", "undo a"]);
}

#[tokio::test]
async fn an_undo_that_fails_after_a_failed_run_is_on_the_runs_fault() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::FailUndo, &log),
        Actor::new("b", Behaviour::Fail, &log),
    ]);
    let mut work = Work::default();
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(work.log, ["run a", "run b", "undo a"]);
    // The run's fault is the answer; a's failed undo is not dropped.
    assert_eq!(fault.code, FaultCode::Conflict);
    assert_eq!(fault.detail_str("plugin"), Some("b"));
    assert!(fault.rollback_incomplete(), "{fault:?}");
    assert_eq!(fault.details["rollback"], "incomplete");
    assert_eq!(
        fault.details["undo_failed"],
        serde_json::json!([{
            "plugin": "a",
            "point": "test.instantiate",
            "code": "internal",
            "message": "plugin `a` failed at `test.instantiate`: cannot undo",
        }])
    );
    assert_eq!(
        fault.details["rollback_failed"],
        serde_json::json!(["test.instantiate"])
    );
}

#[tokio::test]
async fn every_undo_that_fails_is_reported_not_only_the_first() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::FailUndo, &log),
        Actor::new("b", Behaviour::Ok, &log),
        Actor::new("c", Behaviour::FailUndo, &log),
        Actor::new("d", Behaviour::Fail, &log),
    ]);
    let mut work = Work::default();
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(
        work.log,
        ["run a", "run b", "run c", "run d", "undo c", "undo b", "undo a"]
    );
    assert_eq!(fault.detail_str("plugin"), Some("d"));
    let failed: Vec<&str> = fault
        .undo_failures()
        .iter()
        .map(|f| f["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["c", "a"], "in the order they were undone");

    // After a successful run, `undo` reports every failure too.
    let mut work = Work::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::FailUndo, &log),
        Actor::new("b", Behaviour::Ok, &log),
        Actor::new("c", Behaviour::FailUndo, &log),
    ]);
    k.extensions().run::<Instantiate>(&mut work).await.unwrap();
    let fault = k
        .extensions()
        .undo::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(
        work.log,
        ["run a", "run b", "run c", "undo c", "undo b", "undo a"]
    );
    assert_eq!(
        fault.detail_str("plugin"),
        Some("c"),
        "the first is the answer"
    );
    assert!(
        fault.message.contains("1 more undo failure"),
        "{}",
        fault.message
    );
    assert!(fault.rollback_incomplete());
    let failed: Vec<&str> = fault
        .undo_failures()
        .iter()
        .map(|f| f["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["c", "a"]);
}

#[tokio::test]
async fn an_implementors_own_undo_failure_is_named_after_it() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::FailUndo, &log),
        Actor::new("b", Behaviour::FailLeaving, &log),
    ]);
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut Work::default())
        .await
        .unwrap_err();
    let named: Vec<(&str, &str)> = fault
        .undo_failures()
        .iter()
        .map(|f| {
            (
                f["plugin"].as_str().unwrap(),
                f["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("b", "half done, left so"),
            ("a", "plugin `a` failed at `test.instantiate`: cannot undo")
        ]
    );
}

#[tokio::test]
async fn a_run_whose_undos_succeed_says_nothing_of_a_rollback() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::Ok, &log),
        Actor::new("b", Behaviour::Fail, &log),
    ]);
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut Work::default())
        .await
        .unwrap_err();
    assert!(!fault.rollback_incomplete());
    assert!(fault.details.get("rollback").is_none(), "{fault:?}");
    assert!(fault.undo_failures().is_empty());
}

#[tokio::test]
async fn undo_after_success_reverses_all_and_goes_on_past_undo_errors() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::Ok, &log),
        Actor::new("b", Behaviour::FailUndo, &log),
        Actor::new("c", Behaviour::Ok, &log),
    ]);
    let mut work = Work::default();
    k.extensions().run::<Instantiate>(&mut work).await.unwrap();
    let failed = k
        .extensions()
        .undo::<Instantiate>(&mut work)
        .await
        .expect_err("b's undo failed");
    assert!(failed.message.contains("plugin `b`"), "{failed:?}");
    assert_eq!(
        work.log,
        ["run a", "run b", "run c", "undo c", "undo b", "undo a"]
    );
    assert_eq!(stats(&k, Instantiate::NAME, "b")["errors"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_do_times_out_names_the_plugin_and_rolls_back() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::Ok, &log),
        Actor::new("hangs", Behaviour::Hang, &log),
    ]);
    let mut work = Work::default();
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Timeout);
    assert_eq!(fault.detail_str("plugin"), Some("hangs"));
    assert_eq!(work.log, ["run a", "run hangs", "undo a"]);
    assert_eq!(stats(&k, Instantiate::NAME, "hangs")["timeouts"], 1);
}

#[tokio::test]
async fn a_panicking_do_is_contained_and_rolls_back() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a", Behaviour::Ok, &log),
        Actor::new("b-panics", Behaviour::Panic, &log),
    ]);
    let mut work = Work::default();
    let fault = k
        .extensions()
        .run::<Instantiate>(&mut work)
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal);
    assert_eq!(fault.detail_str("plugin"), Some("b-panics"));
    assert_eq!(work.log, ["run a", "run b-panics", "undo a"]);
}

#[tokio::test(start_paused = true)]
async fn observers_never_abort_but_failures_are_counted() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("a-fails", Behaviour::Fail, &log),
        Actor::new("b-panics", Behaviour::Panic, &log),
        Actor::new("c-hangs", Behaviour::Hang, &log),
        Actor::new("d-ok", Behaviour::Ok, &log),
    ]);
    k.extensions().observe::<Created>(&"vm1".to_string()).await;
    assert_eq!(
        entries(&log),
        [
            "a-fails:saw vm1",
            "b-panics:saw vm1",
            "c-hangs:saw vm1",
            "d-ok:saw vm1"
        ]
    );
    assert_eq!(stats(&k, Created::NAME, "a-fails")["errors"], 1);
    assert_eq!(stats(&k, Created::NAME, "b-panics")["panics"], 1);
    assert_eq!(stats(&k, Created::NAME, "c-hangs")["timeouts"], 1);
    assert_eq!(stats(&k, Created::NAME, "d-ok")["calls"], 1);
}

#[tokio::test]
async fn filters_narrow_in_order_and_an_emptying_filter_is_named() {
    let log = Log::default();
    // Divisors: input 0 + name length: "ab" → 2, "abc" → 3.
    let k = kernel(vec![
        Actor::new("ab", Behaviour::Ok, &log),
        Actor::new("abc", Behaviour::Ok, &log),
    ]);
    let left = k
        .extensions()
        .filter::<PickHost>(&0, (1..=12).collect())
        .await
        .unwrap();
    assert_eq!(left, [1, 5, 7, 11]);
    let fault = k
        .extensions()
        .filter::<PickHost>(&0, vec![2, 4, 6])
        .await
        .unwrap_err();
    assert_eq!(fault.detail_str("plugin"), Some("ab"));
    assert_eq!(fault.code, FaultCode::Conflict);
}

#[test]
fn order_is_by_order_then_name_not_by_registration() {
    let log = Log::default();
    let mut late = Actor::new("alpha", Behaviour::Ok, &log);
    late.order = 10;
    let mut after = Actor::new("early-but-after-zulu", Behaviour::Ok, &log);
    after.order = -10;
    after.after = Some("zulu");
    let k = kernel(vec![
        Actor::new("zulu", Behaviour::Ok, &log),
        late,
        after,
        Actor::new("mike", Behaviour::Ok, &log),
    ]);
    assert_eq!(
        k.extensions().veto_implementors::<CreateCheck>(),
        ["mike", "zulu", "early-but-after-zulu", "alpha"]
    );
}

#[test]
fn the_manifest_overrides_order() {
    let log = Log::default();
    let manifest = Manifest::parse(
        r#"
        [extensions."test.create.pre-check".zulu]
        order = -1
        "#,
    )
    .unwrap();
    let k = Kernel::builder()
        .plugin(Owner)
        .plugin(Actor::new("alpha", Behaviour::Ok, &log))
        .plugin(Actor::new("zulu", Behaviour::Ok, &log))
        .manifest(manifest)
        .build()
        .unwrap();
    assert_eq!(
        k.extensions().veto_implementors::<CreateCheck>(),
        ["zulu", "alpha"]
    );
    assert_eq!(
        k.extensions().do_undo_implementors::<Instantiate>(),
        ["alpha", "zulu"],
        "other points keep their order"
    );
}

#[test]
fn a_manifest_order_naming_no_implementor_is_refused() {
    let log = Log::default();
    let manifest = Manifest::parse(
        r#"
        [extensions."test.create.pre-check".zulu]
        after = ["audit"]
        "#,
    )
    .unwrap();
    let err = Kernel::builder()
        .plugin(Owner)
        .plugin(Actor::new("alpha", Behaviour::Ok, &log))
        .plugin(Actor::new("zulu", Behaviour::Ok, &log))
        .manifest(manifest)
        .build()
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        message.contains("`audit`") && message.contains("test.create.pre-check"),
        "{message}"
    );
}

#[test]
fn an_ordering_cycle_is_a_clear_error() {
    let log = Log::default();
    let mut a = Actor::new("a", Behaviour::Ok, &log);
    a.after = Some("b");
    let mut b = Actor::new("b", Behaviour::Ok, &log);
    b.after = Some("a");
    let err = Kernel::builder()
        .plugin(Owner)
        .plugin(a)
        .plugin(b)
        .build()
        .err()
        .unwrap();
    assert!(
        matches!(&err, KernelError::OrderingCycle { plugins, .. } if plugins == &["a", "b"]),
        "{err}"
    );
}

#[test]
fn introspection_lists_points_with_semantics_owner_and_order() {
    let log = Log::default();
    let k = kernel(vec![
        Actor::new("b", Behaviour::Ok, &log),
        Actor::new("a", Behaviour::Ok, &log),
    ]);
    let points = serde_json::to_value(k.extensions().describe()).unwrap();
    let names: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "test.create.pre-check",
            "test.created",
            "test.instantiate",
            "test.pick-host"
        ]
    );
    let veto = &points[0];
    assert_eq!(veto["semantics"], "veto");
    assert_eq!(veto["owner"], "owner");
    assert_eq!(veto["implementors"][0]["plugin"], "a");
    assert_eq!(veto["implementors"][1]["plugin"], "b");
    assert_eq!(points[2]["semantics"], "do_undo");
}

#[test]
fn a_plugin_implementing_a_point_twice_is_refused() {
    struct Twice;
    impl Plugin for Twice {
        fn name(&self) -> &'static str {
            "twice"
        }
        fn build(&self, b: &mut PluginBuilder<'_>) {
            let log = Log::default();
            for _ in 0..2 {
                b.veto::<CreateCheck>(Imp {
                    name: "twice",
                    behaviour: Behaviour::Ok,
                    log: log.clone(),
                });
            }
        }
    }
    let err = Kernel::builder().plugin(Twice).build().err().unwrap();
    assert_eq!(
        err,
        KernelError::DuplicateImplementor {
            point: CreateCheck::NAME.into(),
            plugin: "twice".into()
        }
    );
}

#[test]
fn points_can_be_implemented_without_an_owner_loaded() {
    let log = Log::default();
    let k = Kernel::builder()
        .plugin(Actor::new("solo", Behaviour::Ok, &log))
        .build()
        .unwrap();
    let points = k.extensions().describe();
    assert!(points.iter().all(|p| p.owner.is_none()));
    assert!(k.extensions().veto::<CreateCheck>(&1).is_ok());
}
