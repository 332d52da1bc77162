//! Asynchronous vetoes: checks that wait (e.g. read the store) on a veto point whose owner
//! awaits them — refusal, order beside the synchronous vetoes, containment and metrics.

use flatstack_kernel::{
    async_trait, AsyncVeto, AsyncVetoPoint, ExtensionPoint, Fault, FaultCode, Kernel, Plugin,
    PluginBuilder, Veto, VetoPoint,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

struct DeleteCheck;
impl ExtensionPoint for DeleteCheck {
    const NAME: &'static str = "test.delete.pre-check";
    const DESCRIPTION: &'static str = "Before a test resource is deleted.";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(200));
}
impl VetoPoint for DeleteCheck {
    type Input = String;
}
impl AsyncVetoPoint for DeleteCheck {}

struct Owner;
impl Plugin for Owner {
    fn name(&self) -> &'static str {
        "owner"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.define_veto::<DeleteCheck>();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Pass,
    /// Refuses with a `conflict` naming a user.
    InUse,
    /// Refuses with something other than a conflict.
    Invalid,
    Panic,
    Hang,
}

/// Logs each check as `name:check input`, after a yield for the asynchronous kind (so it
/// really waits), then does `behaviour`.
struct Imp {
    name: &'static str,
    behaviour: Behaviour,
    log: Log,
}

impl Imp {
    fn act(&self, input: &str) -> Result<(), Fault> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:check {input}", self.name));
        match self.behaviour {
            Behaviour::Pass | Behaviour::Hang => Ok(()),
            Behaviour::InUse => Err(Fault::conflict(format!("{input} is in use"))
                .with_detail("users", serde_json::json!([{"kind": "vms", "uuid": "v1"}]))),
            Behaviour::Invalid => Err(Fault::invalid("name", "not that one")),
            Behaviour::Panic => panic!("boom in {}", self.name),
        }
    }
}

impl Veto<DeleteCheck> for Imp {
    fn check(&self, input: &String) -> Result<(), Fault> {
        self.act(input)
    }
}

#[async_trait]
impl AsyncVeto<DeleteCheck> for Imp {
    async fn check(&self, input: &String) -> Result<(), Fault> {
        tokio::task::yield_now().await;
        if self.behaviour == Behaviour::Hang {
            self.act(input)?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.act(input)
    }
}

/// A plugin with one veto on the point, synchronous or not, at `order`.
struct Actor {
    name: &'static str,
    asynchronous: bool,
    behaviour: Behaviour,
    order: i32,
    log: Log,
}

impl Plugin for Actor {
    fn name(&self) -> &'static str {
        self.name
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        let imp = Imp {
            name: self.name,
            behaviour: self.behaviour,
            log: self.log.clone(),
        };
        if self.asynchronous {
            b.veto_async::<DeleteCheck>(imp).order(self.order);
        } else {
            b.veto::<DeleteCheck>(imp).order(self.order);
        }
    }
}

fn sync(name: &'static str, behaviour: Behaviour, order: i32, log: &Log) -> Actor {
    Actor {
        name,
        asynchronous: false,
        behaviour,
        order,
        log: log.clone(),
    }
}

fn asynchronous(name: &'static str, behaviour: Behaviour, order: i32, log: &Log) -> Actor {
    Actor {
        asynchronous: true,
        ..sync(name, behaviour, order, log)
    }
}

fn kernel(actors: Vec<Actor>) -> Kernel {
    let mut builder = Kernel::builder().plugin(Owner);
    for a in actors {
        builder = builder.plugin(a);
    }
    builder.build().expect("kernel assembles")
}

fn implementor(kernel: &Kernel, plugin: &str) -> serde_json::Value {
    let points = serde_json::to_value(kernel.extensions().describe()).unwrap();
    points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == DeleteCheck::NAME)
        .expect("point listed")["implementors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["plugin"] == plugin)
        .expect("implementor listed")
        .clone()
}

#[tokio::test]
async fn synchronous_vetoes_run_first_then_the_asynchronous_each_in_the_points_order() {
    let log = Log::default();
    let k = kernel(vec![
        sync("s-late", Behaviour::Pass, 10, &log),
        asynchronous("a-late", Behaviour::Pass, 5, &log),
        sync("s-early", Behaviour::Pass, 0, &log),
        asynchronous("a-early", Behaviour::Pass, -10, &log),
    ]);
    assert_eq!(
        k.extensions().veto_implementors::<DeleteCheck>(),
        ["a-early", "s-early", "a-late", "s-late"],
        "one order for both kinds"
    );
    k.extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .expect("nobody refuses");
    assert_eq!(
        entries(&log),
        [
            "s-early:check x",
            "s-late:check x",
            "a-early:check x",
            "a-late:check x"
        ]
    );
    for plugin in ["a-early", "s-early", "a-late", "s-late"] {
        assert_eq!(implementor(&k, plugin)["stats"]["calls"], 1, "{plugin}");
    }
}

#[tokio::test]
async fn an_asynchronous_refusal_stops_the_check_names_plugin_and_point_and_keeps_its_details() {
    let log = Log::default();
    let k = kernel(vec![
        sync("s", Behaviour::Pass, 0, &log),
        asynchronous("a-in-use", Behaviour::InUse, 1, &log),
        asynchronous("b-never-asked", Behaviour::Pass, 2, &log),
    ]);
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"img".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Conflict, "a conflict stays one");
    assert_eq!(fault.detail_str("plugin"), Some("a-in-use"));
    assert_eq!(fault.detail_str("point"), Some(DeleteCheck::NAME));
    assert_eq!(fault.details["users"][0]["uuid"], "v1");
    assert!(
        fault.message.contains("plugin `a-in-use` vetoed")
            && fault.message.contains("img is in use"),
        "{}",
        fault.message
    );
    assert_eq!(entries(&log), ["s:check img", "a-in-use:check img"]);
    assert_eq!(implementor(&k, "a-in-use")["stats"]["vetoes"], 1);
    assert_eq!(implementor(&k, "a-in-use")["stats"]["errors"], 0);
    assert_eq!(implementor(&k, "b-never-asked")["stats"]["calls"], 0);
}

#[tokio::test]
async fn any_other_asynchronous_refusal_is_vetoed() {
    let log = Log::default();
    let k = kernel(vec![asynchronous("picky", Behaviour::Invalid, 0, &log)]);
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Vetoed);
    assert_eq!(fault.detail_str("field"), Some("name"));
}

#[tokio::test]
async fn a_synchronous_refusal_spares_the_asynchronous_checks() {
    let log = Log::default();
    let k = kernel(vec![
        asynchronous("a-first-in-order", Behaviour::Pass, -10, &log),
        sync("s-refuses", Behaviour::InUse, 0, &log),
    ]);
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.detail_str("plugin"), Some("s-refuses"));
    assert_eq!(entries(&log), ["s-refuses:check x"]);
    assert_eq!(implementor(&k, "a-first-in-order")["stats"]["calls"], 0);
}

#[tokio::test]
async fn a_panicking_asynchronous_veto_is_contained_and_refuses() {
    let log = Log::default();
    let k = kernel(vec![
        asynchronous("a-panics", Behaviour::Panic, 0, &log),
        asynchronous("b-never-asked", Behaviour::Pass, 1, &log),
    ]);
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal);
    assert_eq!(fault.detail_str("plugin"), Some("a-panics"));
    assert_eq!(fault.detail_str("point"), Some(DeleteCheck::NAME));
    assert!(
        fault.message.contains("boom in a-panics"),
        "{}",
        fault.message
    );
    assert_eq!(entries(&log), ["a-panics:check x"]);
    assert_eq!(implementor(&k, "a-panics")["stats"]["panics"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_asynchronous_veto_times_out_and_refuses() {
    let log = Log::default();
    let k = kernel(vec![
        asynchronous("a-hangs", Behaviour::Hang, 0, &log),
        asynchronous("b-never-asked", Behaviour::Pass, 1, &log),
    ]);
    let started = tokio::time::Instant::now();
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Timeout);
    assert_eq!(fault.detail_str("plugin"), Some("a-hangs"));
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200),
        "bounded by the point's timeout"
    );
    assert_eq!(entries(&log), ["a-hangs:check x"]);
    assert_eq!(implementor(&k, "a-hangs")["stats"]["timeouts"], 1);
    assert_eq!(implementor(&k, "b-never-asked")["stats"]["calls"], 0);
}

#[tokio::test]
async fn the_synchronous_call_refuses_a_point_with_asynchronous_vetoes() {
    let log = Log::default();
    let k = kernel(vec![
        sync("s", Behaviour::Pass, 0, &log),
        asynchronous("a", Behaviour::Pass, 1, &log),
    ]);
    let fault = k
        .extensions()
        .veto::<DeleteCheck>(&"x".to_owned())
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal, "a bug, never a half check");
    assert_eq!(fault.detail_str("plugin"), Some("a"));
    assert!(fault.message.contains("veto_async"), "{}", fault.message);
    assert!(entries(&log).is_empty(), "nobody was asked");
}

#[tokio::test]
async fn the_asynchronous_call_asks_synchronous_vetoes_alone_too() {
    let log = Log::default();
    let k = kernel(vec![sync("s", Behaviour::InUse, 0, &log)]);
    let fault = k
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Conflict);
    let empty = Kernel::builder().plugin(Owner).build().unwrap();
    assert!(empty
        .extensions()
        .veto_async::<DeleteCheck>(&"x".to_owned())
        .await
        .is_ok());
}

#[test]
fn introspection_marks_asynchronous_vetoes() {
    let log = Log::default();
    let k = kernel(vec![
        sync("s", Behaviour::Pass, 0, &log),
        asynchronous("a", Behaviour::Pass, 1, &log),
    ]);
    let points = serde_json::to_value(k.extensions().describe()).unwrap();
    assert_eq!(points[0]["name"], DeleteCheck::NAME);
    assert_eq!(points[0]["semantics"], "veto");
    assert_eq!(points[0]["owner"], "owner");
    assert_eq!(implementor(&k, "a")["async_veto"], true);
    assert!(
        implementor(&k, "s").get("async_veto").is_none(),
        "shown only when true"
    );
}
