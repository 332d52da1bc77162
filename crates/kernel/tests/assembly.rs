//! Assembly and life cycle: every start-up error names its culprit; plugins start in
//! dependency order and stop in reverse.

use flatstack_kernel::driver::DriverKind;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, ConfigKey, Fault, Kernel, KernelError, Manifest, Plugin, PluginBuilder,
    START_TIMEOUT_MS,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

struct Hosts;
impl DriverKind for Hosts {
    const KIND: &'static str = "hosts";
    type Factory = str;
}

const GREETING: ConfigKey<String> =
    ConfigKey::new("test.greeting", "What to say.", || "hello".to_owned()).with_validator(|s| {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(())
        }
    });

#[derive(Clone, Default)]
enum Start {
    #[default]
    Ok,
    Fail,
    Panic,
    Hang,
}

#[derive(Clone, Default)]
struct P {
    name: &'static str,
    requires: &'static [&'static str],
    host_type: Option<&'static str>,
    config: bool,
    migrations: &'static [u32],
    start: Start,
    log: Log,
    opt_in: bool,
}

#[async_trait]
impl Plugin for P {
    fn name(&self) -> &'static str {
        self.name
    }
    fn requires(&self) -> &'static [&'static str] {
        self.requires
    }
    fn opt_in(&self) -> bool {
        self.opt_in
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        if let Some(t) = self.host_type {
            b.driver::<Hosts>(t, Arc::from("factory"));
        }
        if self.config {
            b.config(&GREETING);
        }
        for &v in self.migrations {
            b.migration(Migration::new(v, "step", "CREATE TABLE t (x INT)"));
        }
    }
    async fn start(&self, _k: &Kernel) -> Result<(), Fault> {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        match self.start {
            Start::Ok => Ok(()),
            Start::Fail => Err(Fault::unavailable("disk missing")),
            Start::Panic => panic!("start exploded"),
            Start::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
    async fn stop(&self, _k: &Kernel) {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
    }
}

fn p(name: &'static str) -> P {
    P {
        name,
        ..P::default()
    }
}

fn build(plugins: Vec<P>, manifest: &str) -> Result<Kernel, KernelError> {
    let mut b = Kernel::builder().manifest(Manifest::parse(manifest)?);
    for plugin in plugins {
        b = b.plugin(plugin);
    }
    b.build()
}

#[test]
fn duplicate_plugin_names_are_refused() {
    let err = build(vec![p("zone"), p("zone")], "").err().unwrap();
    assert_eq!(err, KernelError::DuplicatePlugin("zone".into()));
}

#[test]
fn a_missing_required_plugin_is_named() {
    let mut host = p("host");
    host.requires = &["cluster"];
    let err = build(vec![host, p("zone")], "").err().unwrap();
    assert_eq!(
        err,
        KernelError::MissingRequiredPlugin {
            plugin: "host".into(),
            requires: "cluster".into()
        }
    );
    let mut host = p("host");
    host.requires = &["cluster"];
    let err = build(vec![host, p("cluster")], r#"disabled = ["cluster"]"#)
        .err()
        .unwrap();
    assert!(
        matches!(err, KernelError::MissingRequiredPlugin { .. }),
        "{err}"
    );
}

/// A dangerous plugin (fault injection) is off unless the manifest names it.
#[test]
fn an_opt_in_plugin_runs_only_when_named() {
    let plugins = || {
        let mut faults = p("faults");
        faults.opt_in = true;
        vec![p("zone"), faults]
    };
    let names = |manifest: &str| -> Vec<String> {
        build(plugins(), manifest)
            .expect("assembles")
            .plugins()
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(names(""), ["zone"]);
    assert_eq!(names(r#"enabled = ["faults"]"#), ["faults", "zone"]);
    assert_eq!(names(r#"plugins = ["zone", "faults"]"#), ["faults", "zone"]);
    assert_eq!(
        names(
            r#"enabled = ["faults"]
disabled = ["faults"]"#
        ),
        ["zone"]
    );
}

#[test]
fn a_requirement_cycle_is_named() {
    let mut a = p("a");
    a.requires = &["b"];
    let mut b = p("b");
    b.requires = &["a"];
    let err = build(vec![a, b, p("c")], "").err().unwrap();
    assert_eq!(
        err,
        KernelError::RequirementCycle(vec!["a".into(), "b".into()])
    );
}

#[test]
fn a_duplicate_type_names_both_plugins() {
    let mut a = p("simulator");
    a.host_type = Some("Simulator");
    let mut b = p("other-sim");
    b.host_type = Some("Simulator");
    let err = build(vec![a, b], "").err().unwrap();
    assert_eq!(
        err,
        KernelError::DuplicateType {
            kind: "hosts".into(),
            type_name: "Simulator".into(),
            first: "other-sim".into(),
            second: "simulator".into()
        }
    );
}

#[test]
fn bad_manifests_are_clear_errors() {
    let cases = [
        ("plugins = [\"zone\", \"nope\"]", "unknown plugin `nope`"),
        ("disabled = [\"ghost\"]", "unknown plugin `ghost`"),
        ("enabled = [\"ghost\"]", "unknown plugin `ghost`"),
        ("colour = 3", "unknown field `colour`"),
        ("plugins = 3", "invalid type"),
        (
            "[config]\nno.such.key = 1",
            "unknown configuration key `no.such.key`",
        ),
        (
            "[extensions.\"no.such.point\".zone]\norder = 1",
            "unknown extension point `no.such.point`",
        ),
        ("this is not toml", "expected"),
    ];
    for (manifest, expected) in cases {
        let err = build(vec![p("zone")], manifest).err().unwrap();
        assert!(matches!(err, KernelError::Manifest(_)), "{manifest}: {err}");
        assert!(err.to_string().contains(expected), "{manifest}: {err}");
    }
}

#[test]
fn configuration_is_validated_and_typed() {
    let mut greeter = p("greeter");
    greeter.config = true;
    let k = build(vec![greeter.clone()], "").unwrap();
    assert_eq!(k.config().get(&GREETING), "hello");
    let k = build(vec![greeter.clone()], "[config.test]\ngreeting = \"hi\"").unwrap();
    assert_eq!(k.config().get(&GREETING), "hi");
    let k = build(
        vec![greeter.clone()],
        "[config]\n\"test.greeting\" = \"yo\"",
    )
    .unwrap();
    assert_eq!(k.config().get(&GREETING), "yo");

    let err = build(vec![greeter.clone()], "[config.test]\ngreeting = \"\"")
        .err()
        .unwrap();
    assert_eq!(
        err,
        KernelError::InvalidConfig {
            key: "test.greeting".into(),
            reason: "must not be empty".into()
        }
    );
    let err = build(vec![greeter], "[config.bus]\nrequest_timeout_ms = \"soon\"")
        .err()
        .unwrap();
    assert!(
        matches!(&err, KernelError::InvalidConfig { key, .. } if key == "bus.request_timeout_ms"),
        "{err}"
    );
}

#[test]
fn migration_streams_must_count_from_one() {
    let mut ok = p("ok");
    ok.migrations = &[1, 2, 3];
    let k = build(vec![ok], "").unwrap();
    assert_eq!(k.migrations()["ok"].len(), 3);
    let mut gap = p("gap");
    gap.migrations = &[1, 3];
    let err = build(vec![gap], "").err().unwrap();
    assert!(
        matches!(&err, KernelError::InvalidMigration { plugin, version: 3, .. } if plugin == "gap"),
        "{err}"
    );
}

#[tokio::test]
async fn plugins_start_in_dependency_order_and_stop_in_reverse() {
    let log = Log::default();
    let mk = |name, requires| P {
        name,
        requires,
        log: log.clone(),
        ..P::default()
    };
    // Registration order is deliberately not the dependency order.
    let k = build(
        vec![
            mk("vm", &["host", "zone"]),
            mk("host", &["zone"]),
            mk("zone", &[]),
            mk("audit", &[]),
        ],
        "",
    )
    .unwrap();
    k.start().await.unwrap();
    assert!(k.plugins().iter().all(|p| p.started));
    k.stop().await;
    assert_eq!(
        *log.lock().unwrap(),
        [
            "start audit",
            "start zone",
            "start host",
            "start vm",
            "stop vm",
            "stop host",
            "stop zone",
            "stop audit"
        ]
    );
    assert!(k.plugins().iter().all(|p| !p.started));
}

async fn failing_start(failure: Start) -> (KernelError, Vec<String>) {
    let log = Log::default();
    let mk = |name, start| P {
        name,
        start,
        log: log.clone(),
        ..P::default()
    };
    let manifest = "[config.lifecycle]\nstart_timeout_ms = 100";
    let k = build(
        vec![
            mk("a", Start::Ok),
            mk("b", Start::Ok),
            mk("c", failure),
            mk("d", Start::Ok),
        ],
        manifest,
    )
    .unwrap();
    let err = k.start().await.err().unwrap();
    assert!(k.plugins().iter().all(|p| !p.started));
    let log = log.lock().unwrap().clone();
    (err, log)
}

#[tokio::test]
async fn a_start_failure_stops_what_had_started() {
    let (err, log) = failing_start(Start::Fail).await;
    assert_eq!(
        err,
        KernelError::StartFailed {
            plugin: "c".into(),
            reason: "unavailable: disk missing".into()
        }
    );
    assert_eq!(log, ["start a", "start b", "start c", "stop b", "stop a"]);
}

#[tokio::test]
async fn a_start_panic_or_hang_is_contained() {
    let (err, log) = failing_start(Start::Panic).await;
    assert!(
        matches!(&err, KernelError::StartFailed { plugin, reason } if plugin == "c" && reason.contains("start exploded")),
        "{err}"
    );
    assert_eq!(log, ["start a", "start b", "start c", "stop b", "stop a"]);
    let (err, _) = failing_start(Start::Hang).await;
    assert_eq!(
        err,
        KernelError::StartTimedOut {
            plugin: "c".into(),
            after: Duration::from_millis(100)
        }
    );
    assert_eq!(START_TIMEOUT_MS.name, "lifecycle.start_timeout_ms");
}

#[test]
fn introspection_lists_plugins_with_their_contributions() {
    let mut sim = p("simulator");
    sim.host_type = Some("Simulator");
    sim.config = true;
    let k = build(vec![sim], "").unwrap();
    let plugins = serde_json::to_value(k.plugins()).unwrap();
    assert_eq!(plugins[0]["name"], "simulator");
    assert_eq!(
        plugins[0]["contributes"]["driver_types"][0],
        "hosts/Simulator"
    );
    assert_eq!(plugins[0]["contributes"]["config_keys"][0], "test.greeting");
    let types = k.drivers().describe();
    assert_eq!(types["hosts"][0].name, "Simulator");
    assert_eq!(types["hosts"][0].plugin, "simulator");
}

#[test]
fn a_kernel_handle_taken_in_build_resolves_once_assembled() {
    struct Keeper(Arc<Mutex<Option<flatstack_kernel::KernelRef>>>);
    impl Plugin for Keeper {
        fn name(&self) -> &'static str {
            "keeper"
        }
        fn build(&self, b: &mut PluginBuilder<'_>) {
            let handle = b.kernel();
            assert!(handle.get().is_err(), "not assembled yet");
            *self.0.lock().unwrap() = Some(handle);
        }
    }
    let slot = Arc::new(Mutex::new(None));
    let kernel = Kernel::builder()
        .plugin(Keeper(slot.clone()))
        .build()
        .unwrap();
    let handle = slot.lock().unwrap().clone().unwrap();
    assert_eq!(handle.get().unwrap().plugins()[0].name, "keeper");
    drop(kernel);
    assert!(
        handle.get().is_err(),
        "the handle does not keep the kernel alive"
    );
}
