//! The crash test (issue 9): a real node, busy with dozens of concurrent clients creating,
//! powering, destroying VMs and creating, attaching, detaching, deleting data volumes, is
//! killed (SIGKILL) at random moments — while serving, and now and then while it starts
//! and recovers — and restarted on the same data each time. After the last restart the
//! clients stop, the node finishes what runs, and every invariant the durable operations
//! promise is checked from the database itself: capacities and what each consumer holds,
//! addresses, NICs and leases, quotas, no resource left in a transient state, no operation
//! left running, every job a client was given finished, and the simulated hosts running
//! exactly the VMs the database has `Running`.
//!
//! The moments are drawn from a seeded generator: the seed is printed, and
//! `FLATSTACK_CRASH_SEED=<seed>` replays the same schedule and choices (timing still
//! varies). `FLATSTACK_CRASH_KILLS` changes the number of kills (default 24),
//! `FLATSTACK_CRASH_CLIENTS` the number of clients (default 32), `FLATSTACK_CRASH_LOG` the
//! nodes' `RUST_LOG` (default `error`), and `FLATSTACK_CRASH_VERBOSE` lists every error the
//! clients got, by message. The PostgreSQL variant
//! uses the server at `$FLATSTACK_TEST_POSTGRES` (default the local one), in a database of
//! its own.

mod common;

use common::cloud::GIB;
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Concurrent clients by default (at least 32).
const CLIENTS: usize = 32;
/// Kills by default (at least 20).
const KILLS: usize = 24;
/// How long a node serves before it is killed: from..to milliseconds; one kill in
/// [`SOON_ONE_IN`] comes sooner, as the clients come back and the periodic work begins.
const UPTIME_MS: (u64, u64) = (300, 2200);
const SOON_MS: (u64, u64) = (20, 300);
const SOON_ONE_IN: u64 = 5;
/// One kill in this many hits a node while it starts (recovery included).
const EARLY_KILL_ONE_IN: u64 = 5;

/// How long the last node serves the clients before they stop.
const FINAL_TRAFFIC: Duration = Duration::from_secs(3);

/// The two crash tests share the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_survives_being_killed_at_random_moments_on_sqlite() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("data directory");
    if let Err(report) = crash_test(Backend::Sqlite, dir.path()).await {
        panic!("{report}\nThe data is kept in {}", dir.keep().display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_survives_being_killed_at_random_moments_on_postgresql() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (url, name) = fresh_postgres_database().await;
    let dir = tempfile::tempdir().expect("data directory");
    if let Err(report) = crash_test(Backend::Postgres(url), dir.path()).await {
        panic!(
            "{report}\nThe data is kept in database {name} and {}",
            dir.keep().display()
        );
    }
    drop_postgres_database(&name).await;
}

// ---------------------------------------------------------------------------------------
// The schedule.

/// A small, seeded generator (SplitMix64): the test needs reproducible choices, not a
/// dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }
}

fn seed() -> u64 {
    match std::env::var("FLATSTACK_CRASH_SEED") {
        Ok(seed) => seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLATSTACK_CRASH_SEED={seed:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn kills() -> usize {
    std::env::var("FLATSTACK_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(KILLS)
}

fn clients() -> usize {
    std::env::var("FLATSTACK_CRASH_CLIENTS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(CLIENTS)
}

fn log_level() -> String {
    std::env::var("FLATSTACK_CRASH_LOG").unwrap_or_else(|_| "error".into())
}

// ---------------------------------------------------------------------------------------
// The node, on either backend, on the same data each time.

#[derive(Clone)]
enum Backend {
    Sqlite,
    /// The database's URL.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// `serve`'s arguments: the data directory (the simulated hosts keep their VMs there
    /// on either backend), the database, and a reconciliation period: `periodic`, a short
    /// one, so periodic recovery runs beside the clients too; else one longer than the
    /// test, so that what operations leave behind is seen as they left it, not healed.
    /// The node's arguments but its data directory (the harness and
    /// [`start_and_kill_early`] give it).
    fn args(&self, periodic: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--reconcile-interval".into(),
            if periodic { "1" } else { "3600" }.into(),
        ];
        if let Backend::Postgres(url) = self {
            args.extend(["--database-url".into(), url.into()]);
        }
        args
    }

    /// The node's database, opened directly (beside the node).
    async fn open(&self, dir: &Path) -> Arc<flatstack_store::Store> {
        let url = match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("flatstack.db").display()),
            Backend::Postgres(url) => url.clone(),
        };
        flatstack_store::Store::open(&url)
            .await
            .expect("the node's database")
    }
}

/// How long a node may take to recover and serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a node on `dir` and waits until it serves (it has recovered by then).
async fn start(backend: &Backend, dir: &Path, periodic: bool) -> Node {
    let args = backend.args(periodic);
    let log = log_level();
    let data_dir = dir.to_owned();
    let starting = tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(OsString::as_os_str).collect();
        Node::start_custom(&data_dir, &args, &[("RUST_LOG", &log)])
    });
    match tokio::time::timeout(START_TIMEOUT, starting).await {
        Ok(started) => started.expect("the node starts"),
        Err(_) => {
            // Stuck before serving: killed by the pid its lock holds (if that process is
            // this node), not left behind.
            let pid = std::fs::read_to_string(dir.join("flatstack.lock")).unwrap_or_default();
            let ours = |pid: i32| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
                })
            };
            if let Some(pid) = pid.trim().parse::<i32>().ok().filter(|pid| ours(*pid)) {
                // SAFETY: kill(2) only reads its two integer arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            panic!("a node did not serve within {START_TIMEOUT:?} of its start (process {pid:?})");
        }
    }
}

/// Kills a node with SIGKILL and waits until it is gone (so its lock is free).
async fn kill(mut node: Node) {
    node.signal(libc::SIGKILL);
    node.wait_exit(Duration::from_secs(30))
        .await
        .expect("a killed node exits");
}

/// Starts a node and kills it `after`, before or while it recovers and begins to serve.
async fn start_and_kill_early(backend: &Backend, dir: &Path, after: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(backend.args(true))
        .env("RUST_LOG", log_level())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flatstack starts");
    tokio::time::sleep(after).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("the killed node is reaped");
}

fn postgres_server() -> String {
    std::env::var("FLATSTACK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn postgres_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    let server = postgres_server();
    sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL crash test needs the server at {server} ($FLATSTACK_TEST_POSTGRES): {e}. \
                 Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 (trust authentication for user postgres on 127.0.0.1:5432)"
            )
        })
}

/// A new, empty database for the test: its URL and name.
async fn fresh_postgres_database() -> (String, String) {
    let name = format!("flatstack_crash_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres_admin().await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    (format!("{}/{name}", postgres_server()), name)
}

async fn drop_postgres_database(name: &str) {
    let mut admin = postgres_admin().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop database");
}

// ---------------------------------------------------------------------------------------
// The cloud.

/// Owners: `tenant` has a quota, `ops` none (its usage is still counted).
const OWNERS: [&str; 2] = ["tenant", "ops"];

struct Cloud {
    hosts: Vec<String>,
    ps: String,
    image: String,
    offering: String,
    /// A roomy network every VM has, and a small one some VMs also have (it runs out).
    l3: [String; 2],
}

/// Three hosts of 8 vCPUs and 16 GiB (24 VMs of 1 vCPU and 2 GiB at most), 64 GiB of
/// primary storage, images of 1 GiB, two L3 networks of 50 and 12 addresses, and a quota
/// of 12 VMs / 24 GiB for `tenant`: creates are refused now and then by each of them.
async fn build_cloud(node: &Node) -> Cloud {
    let zone = uuid(&node.create("zones", json!({"name": "z"})).await);
    let cluster = uuid(
        &node
            .create(
                "clusters",
                json!({"name": "c", "zone_uuid": zone, "hypervisor_type": "Simulator"}),
            )
            .await,
    );
    let mut hosts = Vec::new();
    for i in 1..=3 {
        let host = node
            .create(
                "hosts",
                json!({"type": "Simulator", "name": format!("h{i}"), "cluster_uuid": cluster,
                       "management_ip": format!("10.0.0.{i}"), "cpu_capacity": 8,
                       "memory_capacity": 16 * GIB, "latency_ms": 2}),
            )
            .await;
        hosts.push(uuid(&host));
    }
    let ps = uuid(
        &node
            .create(
                "primary-storage",
                json!({"type": "Simulator", "name": "ps", "zone_uuid": zone, "url": "/sim/ps",
                       "total_capacity": 64 * GIB}),
            )
            .await,
    );
    attach_cluster(node, &format!("/v1/primary-storage/{ps}"), &cluster).await;
    let bs = uuid(
        &node
            .create(
                "backup-storage",
                json!({"type": "Simulator", "name": "bs", "zone_uuid": zone, "url": "/sim/bs",
                       "total_capacity": 1u64 << 40}),
            )
            .await,
    );
    let image = uuid(
        &node
            .create(
                "images",
                json!({"name": "img", "url": "http://example.invalid/i.qcow2", "format": "qcow2",
                       "size": GIB, "backup_storage_uuids": [bs]}),
            )
            .await,
    );
    let offering = uuid(
        &node
            .create(
                "instance-offerings",
                json!({"name": "small", "cpu_num": 1, "memory_size": 2 * GIB}),
            )
            .await,
    );
    let l2 = uuid(
        &node
            .create(
                "l2-networks",
                json!({"type": "L2NoVlanNetwork", "name": "l2", "zone_uuid": zone,
                       "physical_interface": "eth0"}),
            )
            .await,
    );
    attach_cluster(node, &format!("/v1/l2-networks/{l2}"), &cluster).await;
    let mut l3 = Vec::new();
    for (name, last) in [("wide", 59), ("narrow", 21)] {
        let network = uuid(
            &node
                .create("l3-networks", json!({"name": name, "l2_network_uuid": l2}))
                .await,
        );
        let subnet = if name == "wide" { 1 } else { 2 };
        let (status, range) = node
            .post(
                &format!("/v1/l3-networks/{network}/ip-ranges?wait=10"),
                json!({"name": "r", "start_ip": format!("10.{subnet}.0.10"),
                       "end_ip": format!("10.{subnet}.0.{last}"), "netmask": "255.255.255.0",
                       "gateway": format!("10.{subnet}.0.1")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{range}");
        l3.push(network);
    }
    node.create(
        "quotas",
        json!({"name": "tenant", "account_uuid": "tenant", "max_vm_num": 12, "max_cpu_num": 16,
               "max_memory_size": 24 * GIB}),
    )
    .await;
    Cloud {
        hosts,
        ps,
        image,
        offering,
        l3: [l3[0].clone(), l3[1].clone()],
    }
}

async fn attach_cluster(node: &Node, path: &str, cluster: &str) {
    let (status, attached) = node
        .post(
            &format!("{path}/actions?wait=10"),
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
}

/// Slows the simulators a little (a few tens of milliseconds per hypervisor or storage
/// call), so that kills land in the middle of operations; injections live in the node's
/// memory, so each new node gets them again.
async fn slow_simulators(node: &Node, cloud: &Cloud) {
    let mut armed = Vec::new();
    for host in &cloud.hosts {
        for (operation, ms) in [
            ("start_vm", 40),
            ("stop_vm", 30),
            ("reboot_vm", 20),
            ("attach_volume", 60),
            ("detach_volume", 40),
        ] {
            armed.push((format!("/v1/hosts/{host}/actions?wait=10"), operation, ms));
        }
    }
    for (operation, ms) in [("create_volume", 40), ("delete_volume", 20)] {
        armed.push((
            format!("/v1/primary-storage/{}/actions?wait=10", cloud.ps),
            operation,
            ms,
        ));
    }
    let replies = futures::future::join_all(armed.iter().map(|(path, operation, ms)| {
        node.post(
            path,
            json!({"action": "inject_failure", "operation": operation, "delay_ms": ms}),
        )
    }))
    .await;
    for (status, reply) in replies {
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

// ---------------------------------------------------------------------------------------
// The clients.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    CreateVm,
    StopVm,
    StartVm,
    RebootVm,
    DestroyVm,
    CreateVolume,
    AttachVolume,
    DetachVolume,
    DeleteVolume,
}

/// How often each operation is chosen.
const MIX: &[(Op, u64)] = &[
    (Op::CreateVm, 20),
    (Op::StopVm, 10),
    (Op::StartVm, 12),
    (Op::RebootVm, 7),
    (Op::DestroyVm, 11),
    (Op::CreateVolume, 10),
    (Op::AttachVolume, 12),
    (Op::DetachVolume, 8),
    (Op::DeleteVolume, 10),
];

impl Op {
    fn choose(rng: &mut Rng) -> Op {
        let total: u64 = MIX.iter().map(|(_, w)| w).sum();
        let mut at = rng.below(total);
        for (op, weight) in MIX {
            if at < *weight {
                return *op;
            }
            at -= weight;
        }
        Op::CreateVm
    }
}

/// What became of the operations clients attempted, by kind.
#[derive(Debug, Default, Clone)]
struct Counts {
    /// Requests sent (retries of a create with its idempotency key included).
    sent: u64,
    /// No answer: the node was killed (or not up yet).
    unanswered: u64,
    /// Answered with an error (refused at once, `409` while a VM is transient, or a job
    /// that failed within `?wait=`), by status.
    refused: BTreeMap<u16, u64>,
    /// Jobs given (`202`).
    jobs: u64,
    /// Jobs given to a create sent again, with its idempotency key, after it went
    /// unanswered.
    jobs_again: u64,
    /// Answered with the job's result (`?wait=`), or a job that finished so.
    succeeded: u64,
    /// Jobs that failed, by the status they would have had.
    failed: BTreeMap<u16, u64>,
    /// Jobs that recovery closed.
    recovered: u64,
    /// Every error's message (uuids and numbers elided), and how often.
    messages: BTreeMap<String, u64>,
}

/// An error's message without what differs between occurrences (uuids, numbers).
fn gist(error: &Value) -> String {
    let message = error["message"].as_str().unwrap_or("?");
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("<uuid>");
        } else if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
            out.push('N');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    format!("{} {out}", error["code"].as_str().unwrap_or("?"))
}

/// What the clients share with the test.
struct Shared {
    /// The node's base URL; `None` while no node serves.
    base: RwLock<Option<String>>,
    stop: AtomicBool,
    /// Every job uuid a client was given, with what it was.
    jobs: Mutex<Vec<(String, Op)>>,
    counts: Mutex<BTreeMap<Op, Counts>>,
    /// Answers no client should ever get: 5xx other than 503, jobs that vanished...
    unexpected: Mutex<Vec<String>>,
    names: AtomicU64,
    /// The node's admin token: the same across restarts (its file stays valid).
    token: String,
}

impl Shared {
    fn base(&self) -> Option<String> {
        self.base
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_base(&self, base: Option<String>) {
        *self.base.write().unwrap_or_else(PoisonError::into_inner) = base;
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn count(&self, op: Op, what: impl FnOnce(&mut Counts)) {
        what(
            self.counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(op)
                .or_default(),
        );
    }

    fn unexpected(&self, what: String) {
        eprintln!("crash test: unexpected: {what}");
        self.unexpected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }
}

/// A request a client is about to send.
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Creates carry one: after a kill they are sent again with it.
    idempotency_key: Option<String>,
}

async fn client(id: usize, shared: Arc<Shared>, cloud: Arc<Cloud>, seed: u64) {
    let mut rng = Rng(seed);
    let http = flatstack::token::builder(Some(&shared.token))
        .expect("HTTP client")
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    while !shared.stopping() {
        let Some(base) = shared.base() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let op = Op::choose(&mut rng);
        match prepare(op, &http, &base, &cloud, &shared, &mut rng, id).await {
            Some(request) => perform(&shared, &http, op, request, &mut rng).await,
            // Nothing to do it to (or the node went away while looking).
            None => tokio::time::sleep(Duration::from_millis(rng.range(5, 30))).await,
        }
    }
}

/// `GET` a list, `None` if the node does not answer.
async fn list(http: &reqwest::Client, base: &str, path: &str) -> Option<Vec<Value>> {
    let reply = http.get(format!("{base}{path}")).send().await.ok()?;
    if !reply.status().is_success() {
        return None;
    }
    let list: Value = reply.json().await.ok()?;
    list["inventories"].as_array().cloned()
}

/// A VM to act on: usually one in `state` (so that most requests can do something), now
/// and then any (so that some are refused).
async fn some_vm(http: &reqwest::Client, base: &str, state: &str, rng: &mut Rng) -> Option<String> {
    let path = if rng.percent(80) {
        format!("/v1/vm-instances?state={state}")
    } else {
        "/v1/vm-instances".to_owned()
    };
    let vms = list(http, base, &path).await?;
    rng.pick(&vms).map(uuid)
}

/// A data volume to act on: attached or not, as asked, usually.
async fn some_volume(
    http: &reqwest::Client,
    base: &str,
    attached: bool,
    rng: &mut Rng,
) -> Option<Value> {
    let volumes = list(http, base, "/v1/volumes?type=Data").await?;
    let fitting: Vec<Value> = if rng.percent(85) {
        volumes
            .iter()
            .filter(|v| v["vm_instance_uuid"].is_string() == attached)
            .cloned()
            .collect()
    } else {
        volumes
    };
    rng.pick(&fitting).cloned()
}

async fn prepare(
    op: Op,
    http: &reqwest::Client,
    base: &str,
    cloud: &Cloud,
    shared: &Shared,
    rng: &mut Rng,
    id: usize,
) -> Option<Request> {
    let action = |vm: String, action: &str| Request {
        method: Method::POST,
        path: format!("/v1/vm-instances/{vm}/actions"),
        body: Some(json!({ "action": action })),
        idempotency_key: None,
    };
    let name = || format!("c{id}-{}", shared.names.fetch_add(1, Ordering::Relaxed));
    Some(match op {
        Op::CreateVm => {
            let owner = if rng.percent(70) {
                OWNERS[0]
            } else {
                OWNERS[1]
            };
            let networks = if rng.percent(30) {
                json!([cloud.l3[0], cloud.l3[1]])
            } else {
                json!([cloud.l3[0]])
            };
            let name = name();
            Request {
                method: Method::POST,
                path: "/v1/vm-instances".into(),
                body: Some(json!({"name": name, "account_uuid": owner,
                    "instance_offering_uuid": cloud.offering, "image_uuid": cloud.image,
                    "l3_network_uuids": networks})),
                idempotency_key: Some(format!("crash-{name}")),
            }
        }
        Op::StopVm => action(some_vm(http, base, "Running", rng).await?, "stop"),
        Op::StartVm => action(some_vm(http, base, "Stopped", rng).await?, "start"),
        Op::RebootVm => action(some_vm(http, base, "Running", rng).await?, "reboot"),
        Op::DestroyVm => {
            let state = if rng.percent(50) {
                "Running"
            } else {
                "Stopped"
            };
            let vm = some_vm(http, base, state, rng).await?;
            Request {
                method: Method::DELETE,
                path: format!("/v1/vm-instances/{vm}"),
                body: None,
                idempotency_key: None,
            }
        }
        Op::CreateVolume => {
            let name = name();
            Request {
                method: Method::POST,
                path: "/v1/volumes".into(),
                body: Some(json!({"name": name, "size": rng.range(1, 3) * GIB})),
                idempotency_key: Some(format!("crash-{name}")),
            }
        }
        Op::AttachVolume => {
            let volume = some_volume(http, base, false, rng).await?;
            let state = if rng.percent(60) {
                "Running"
            } else {
                "Stopped"
            };
            let vm = some_vm(http, base, state, rng).await?;
            Request {
                method: Method::POST,
                path: format!("/v1/volumes/{}/actions", uuid(&volume)),
                body: Some(json!({"action": "attach", "vm_instance_uuid": vm})),
                idempotency_key: None,
            }
        }
        Op::DetachVolume => {
            let volume = some_volume(http, base, true, rng).await?;
            Request {
                method: Method::POST,
                path: format!("/v1/volumes/{}/actions", uuid(&volume)),
                body: Some(json!({"action": "detach"})),
                idempotency_key: None,
            }
        }
        Op::DeleteVolume => {
            let volume = some_volume(http, base, false, rng).await?;
            Request {
                method: Method::DELETE,
                path: format!("/v1/volumes/{}", uuid(&volume)),
                body: None,
                idempotency_key: None,
            }
        }
    })
}

/// Sends the request (a create again with its key while it goes unanswered), then follows
/// the job it was given to its end.
async fn perform(shared: &Shared, http: &reqwest::Client, op: Op, request: Request, rng: &mut Rng) {
    // A quarter wait for the result on the request; the rest poll the job.
    let wait = if rng.percent(25) { "?wait=5" } else { "" };
    let mut sent_before = false;
    // Sent at most this often (a create again after each kill that leaves it unanswered).
    for _ in 0..10 {
        let Some(base) = until_served(shared).await else {
            return;
        };
        let url = format!("{base}{}{wait}", request.path);
        shared.count(op, |c| c.sent += 1);
        let answered = if request.idempotency_key.is_some() && rng.percent(10) {
            // A double click: the same create twice at once, with one key. Both are
            // answered with one job (or its result).
            shared.count(op, |c| c.sent += 1);
            let (first, second) =
                tokio::join!(send(http, &url, &request), send(http, &url, &request));
            let job = |answer: &Option<(StatusCode, String)>| {
                let (status, text) = answer.as_ref()?;
                let reply: Value = serde_json::from_str(text).ok()?;
                (*status == StatusCode::ACCEPTED).then(|| reply["job_uuid"].clone())
            };
            if let (Some(one), Some(other)) = (job(&first), job(&second)) {
                if one != other {
                    shared.unexpected(format!(
                        "{op:?}: one idempotency key, two jobs: {one} and {other}"
                    ));
                }
            }
            first
        } else {
            send(http, &url, &request).await
        };
        let Some((status, text)) = answered else {
            shared.count(op, |c| c.unanswered += 1);
            if request.idempotency_key.is_none() {
                return;
            }
            // The node is gone: send the create again, with its key, to the next one.
            sent_before = true;
            tokio::time::sleep(Duration::from_millis(rng.range(10, 60))).await;
            continue;
        };
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            StatusCode::ACCEPTED => {
                let Some(job) = reply["job_uuid"].as_str().map(str::to_owned) else {
                    shared.unexpected(format!("{op:?}: a 202 without a job: {text}"));
                    return;
                };
                shared
                    .jobs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((job.clone(), op));
                shared.count(op, |c| {
                    c.jobs += 1;
                    if sent_before {
                        c.jobs_again += 1;
                    }
                });
                follow(shared, http, op, &job).await;
            }
            s if s.is_success() => shared.count(op, |c| c.succeeded += 1),
            s => {
                if !failure_expected(op, s.as_u16(), &reply["error"]) {
                    shared.unexpected(format!("{op:?} {} answered {s}: {text}", request.path));
                }
                shared.count(op, |c| {
                    *c.refused.entry(s.as_u16()).or_default() += 1;
                    *c.messages.entry(gist(&reply["error"])).or_default() += 1;
                });
            }
        }
        return;
    }
}

/// Whether an operation may fail so, whatever the moment. No operation fails with an
/// internal error; a VM's destroy, once accepted, only if the VM is gone or in a state
/// that refuses it, or if a kill cut it.
fn failure_expected(op: Op, status: u16, error: &Value) -> bool {
    if status >= 500 && status != 503 {
        return false;
    }
    if op != Op::DestroyVm {
        return true;
    }
    match error["code"].as_str() {
        Some("not_found") => true,
        Some("conflict") => error["details"]["state"].is_string(),
        Some("unavailable") => error["details"]["interrupted"] == true,
        _ => false,
    }
}

/// Sends a request; its status and body, `None` if the node did not answer.
async fn send(
    http: &reqwest::Client,
    url: &str,
    request: &Request,
) -> Option<(StatusCode, String)> {
    let mut req = http.request(request.method.clone(), url);
    if let Some(body) = &request.body {
        req = req.json(body);
    }
    if let Some(key) = &request.idempotency_key {
        req = req.header("Idempotency-Key", key);
    }
    let reply = req.send().await.ok()?;
    let status = reply.status();
    Some((status, reply.text().await.ok()?))
}

/// The node's base URL once one serves; `None` if none does for a minute.
async fn until_served(shared: &Shared) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(base) = shared.base() {
            return Some(base);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls a job until it ends, across restarts (a job a killed node ran is closed by the
/// next node's recovery).
async fn follow(shared: &Shared, http: &reqwest::Client, op: Op, job: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if let Some(base) = shared.base() {
            if let Ok(reply) = http.get(format!("{base}/v1/jobs/{job}")).send().await {
                let status = reply.status();
                if status == StatusCode::NOT_FOUND {
                    shared.unexpected(format!("{op:?}: job {job} is unknown to the node"));
                    return;
                }
                if let Ok(seen) = reply.json::<Value>().await {
                    match seen["state"].as_str() {
                        Some("succeeded") => {
                            shared.count(op, |c| {
                                c.succeeded += 1;
                                c.recovered += u64::from(seen["recovered"] == true);
                            });
                            return;
                        }
                        Some("failed") => {
                            let code = seen["status"].as_u64().unwrap_or(0) as u16;
                            if !failure_expected(op, code, &seen["error"]) {
                                shared.unexpected(format!("{op:?}: job {job} failed: {seen}"));
                            }
                            shared.count(op, |c| {
                                *c.failed.entry(code).or_default() += 1;
                                *c.messages.entry(gist(&seen["error"])).or_default() += 1;
                                c.recovered += u64::from(seen["recovered"] == true);
                            });
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    shared.unexpected(format!("{op:?}: job {job} still running after two minutes"));
}

// ---------------------------------------------------------------------------------------
// The test.

/// The storm, the quiet period and the checks; what is broken, if anything.
async fn crash_test(backend: Backend, dir: &Path) -> Result<(), String> {
    let began = Instant::now();
    let seed = seed();
    let kills = kills();
    let clients = clients();
    println!(
        "crash test on {}: seed {seed} (FLATSTACK_CRASH_SEED={seed} replays it), {kills} kills, \
         {clients} clients",
        backend.name()
    );
    let mut rng = Rng(seed);

    let mut node = start(&backend, dir, true).await;
    let cloud = Arc::new(build_cloud(&node).await);
    slow_simulators(&node, &cloud).await;
    let shared = Arc::new(Shared {
        base: RwLock::new(Some(node.base.clone())),
        stop: AtomicBool::new(false),
        jobs: Mutex::default(),
        counts: Mutex::default(),
        unexpected: Mutex::default(),
        names: AtomicU64::new(0),
        token: node.token.clone(),
    });
    let clients: Vec<_> = (0..clients)
        .map(|id| {
            let seed = rng.next();
            tokio::spawn(client(id, shared.clone(), cloud.clone(), seed))
        })
        .collect();

    let mut killed = 0;
    let mut early = 0;
    // How long nodes took to start (and recover) and serve: where early kills land.
    let mut starts = Vec::new();
    while killed < kills {
        let (from, to) = if rng.below(SOON_ONE_IN) == 0 {
            SOON_MS
        } else {
            UPTIME_MS
        };
        tokio::time::sleep(Duration::from_millis(rng.range(from, to))).await;
        shared.set_base(None);
        kill(node).await;
        killed += 1;
        if killed < kills && rng.below(EARLY_KILL_ONE_IN) == 0 {
            // Killed again as it starts: opening the store, migrating, recovering.
            let typical = starts.iter().sum::<Duration>() / starts.len().max(1) as u32;
            let after = Duration::from_millis(rng.range(5, 30 + typical.as_millis() as u64));
            start_and_kill_early(&backend, dir, after).await;
            killed += 1;
            early += 1;
        }
        let starting = Instant::now();
        node = start(&backend, dir, killed < kills).await;
        starts.push(starting.elapsed());
        slow_simulators(&node, &cloud).await;
        shared.set_base(Some(node.base.clone()));
    }
    let storm = began.elapsed();

    // The last node, which reconciles nothing periodically, serves the clients a while;
    // then the quiet period: the clients stop and the node finishes what runs.
    tokio::time::sleep(FINAL_TRAFFIC).await;
    shared.stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(150), client)
            .await
            .expect("the clients stop")
            .expect("a client panicked");
    }
    until_no_job_runs(&node).await;

    let mut violations = Vec::new();
    let jobs = shared
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    check_jobs(&node, &jobs, &mut violations).await;
    let store = backend.open(dir).await;
    let end = check_database(&store, &cloud, &mut violations).await;
    check_simulators(&store, dir, &mut violations).await;
    violations.extend(
        shared
            .unexpected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned(),
    );

    // The storm did what it is for: work done, and work cut by kills.
    let created = shared
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&Op::CreateVm)
        .map_or(0, |c| c.succeeded);
    if created == 0 || end.recovered == 0 {
        violations.push(format!(
            "the storm tested little: {created} VMs created, {} operations cut by a kill",
            end.recovered
        ));
    }
    let starts = Starts(starts);
    summary(
        &backend, seed, killed, early, storm, began, &starts, &shared, &end,
    );
    kill(node).await;
    if violations.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} invariant(s) broken after {killed} kills on {} (seed {seed}; FLATSTACK_CRASH_SEED={seed} \
         replays the schedule):\n  {}",
        violations.len(),
        backend.name(),
        violations.join("\n  ")
    ))
}

/// Waits until the node runs no job.
async fn until_no_job_runs(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, running) = node.get("/v1/jobs?state=running&limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{running}");
        if running["total"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still running a minute after the clients stopped: {running}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job a client was given answers with a finished state.
async fn check_jobs(node: &Node, jobs: &[(String, Op)], violations: &mut Vec<String>) {
    for (job, op) in jobs {
        let (status, seen) = node.get(&format!("/v1/jobs/{job}")).await;
        if status != StatusCode::OK {
            violations.push(format!("{op:?} job {job}: GET answered {status}: {seen}"));
            continue;
        }
        if !matches!(seen["state"].as_str(), Some("succeeded" | "failed")) {
            violations.push(format!("{op:?} job {job} is not finished: {seen}"));
        }
    }
}

/// What the journal and the tables hold at the end, for the summary.
#[derive(Default)]
struct End {
    operations: i64,
    succeeded: i64,
    failed: i64,
    recovered: i64,
    running_vms: usize,
    stopped_vms: usize,
    data_volumes: usize,
    attached: usize,
}

/// How long the nodes took to serve.
struct Starts(Vec<Duration>);

impl std::fmt::Display for Starts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<&Duration>| d.map_or(0, Duration::as_millis);
        let mut sorted = self.0.clone();
        sorted.sort();
        write!(
            f,
            "nodes served {} to {} ms after they started (median {})",
            ms(sorted.first()),
            ms(sorted.last()),
            ms(sorted.get(sorted.len() / 2))
        )
    }
}

async fn query(store: &Arc<flatstack_store::Store>, sql: &str) -> Vec<Map<String, Value>> {
    let mut tx = store.read().await.expect("a read transaction");
    tx.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn s<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_default()
}

fn n(row: &Map<String, Value>, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(i64::MIN),
        Some(Value::String(s)) => s.parse().unwrap_or(i64::MIN),
        _ => 0,
    }
}

/// Every invariant, from the tables themselves.
async fn check_database(
    store: &Arc<flatstack_store::Store>,
    cloud: &Cloud,
    violations: &mut Vec<String>,
) -> End {
    let mut broken = |what: String| violations.push(what);
    let vms = query(
        store,
        "SELECT uuid, name, state, host_uuid, account_uuid, cpu_num, memory_size FROM vm_instances",
    )
    .await;
    let vm_by_uuid: HashMap<&str, &Map<String, Value>> =
        vms.iter().map(|vm| (s(vm, "uuid"), vm)).collect();

    // One VM per create: a create sent again or twice at once with its key (its name)
    // made one VM at most.
    let mut names = BTreeMap::new();
    for vm in &vms {
        *names.entry(s(vm, "name")).or_insert(0) += 1;
    }
    for (name, count) in names.into_iter().filter(|(_, count)| *count > 1) {
        broken(format!(
            "{count} VMs are named {name}: one create made several"
        ));
    }

    // No VM in a transient state, every VM on a host.
    for vm in &vms {
        let state = s(vm, "state");
        if !matches!(state, "Running" | "Stopped") {
            broken(format!("VM {} is {state}", s(vm, "uuid")));
        }
        if s(vm, "host_uuid").is_empty() {
            broken(format!("VM {} ({state}) has no host", s(vm, "uuid")));
        }
    }

    // Hosts: capacity taken = the VMs on them; one allocation per VM, on its host.
    let hosts = query(
        store,
        "SELECT uuid, cpu_capacity, available_cpu, memory_capacity, available_memory FROM hosts",
    )
    .await;
    assert_eq!(hosts.len(), cloud.hosts.len());
    for host in &hosts {
        let on: Vec<_> = vms
            .iter()
            .filter(|vm| s(vm, "host_uuid") == s(host, "uuid"))
            .collect();
        let cpu: i64 = on.iter().map(|vm| n(vm, "cpu_num")).sum();
        let memory: i64 = on.iter().map(|vm| n(vm, "memory_size")).sum();
        let taken_cpu = n(host, "cpu_capacity") - n(host, "available_cpu");
        let taken_memory = n(host, "memory_capacity") - n(host, "available_memory");
        if (taken_cpu, taken_memory) != (cpu, memory) {
            broken(format!(
                "host {}: {taken_cpu} vCPUs and {taken_memory} bytes taken, its {} VMs have {cpu} and {memory}",
                s(host, "uuid"),
                on.len()
            ));
        }
    }
    let allocations = query(store, "SELECT * FROM host_allocations").await;
    let mut allocated = BTreeSet::new();
    for a in &allocations {
        let consumer = s(a, "consumer_uuid");
        allocated.insert(consumer);
        match vm_by_uuid.get(consumer) {
            None => broken(format!(
                "host allocation of {consumer} on {}: no such VM",
                s(a, "host_uuid")
            )),
            Some(vm) => {
                if s(vm, "host_uuid") != s(a, "host_uuid")
                    || n(vm, "cpu_num") != n(a, "cpu_num")
                    || n(vm, "memory_size") != n(a, "memory_size")
                {
                    broken(format!("host allocation {a:?} differs from its VM {vm:?}"));
                }
            }
        }
    }
    for vm in &vms {
        if !allocated.contains(s(vm, "uuid")) {
            broken(format!("VM {} holds no host allocation", s(vm, "uuid")));
        }
    }

    // Volumes: none transient; storage taken = its volumes; one allocation per volume;
    // every VM its root volume, every root volume its VM.
    let volumes = query(
        store,
        "SELECT uuid, name, type, status, size, primary_storage_uuid, vm_instance_uuid, device_id
         FROM volumes",
    )
    .await;
    for volume in &volumes {
        if s(volume, "status") != "Ready" {
            broken(format!(
                "volume {} is {}",
                s(volume, "uuid"),
                s(volume, "status")
            ));
        }
        let vm = s(volume, "vm_instance_uuid");
        if s(volume, "type") == "Root" && !vm_by_uuid.contains_key(vm) {
            broken(format!("root volume {} has no VM", s(volume, "uuid")));
        }
        if !vm.is_empty() && volume.get("device_id").is_none_or(Value::is_null) {
            broken(format!(
                "volume {} is attached to {vm} without a device",
                s(volume, "uuid")
            ));
        }
    }
    let mut names = BTreeMap::new();
    for volume in volumes.iter().filter(|v| s(v, "type") == "Data") {
        *names.entry(s(volume, "name")).or_insert(0) += 1;
    }
    for (name, count) in names.into_iter().filter(|(_, count)| *count > 1) {
        broken(format!(
            "{count} volumes are named {name}: one create made several"
        ));
    }
    let mut devices: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    for volume in volumes
        .iter()
        .filter(|v| !s(v, "vm_instance_uuid").is_empty())
    {
        *devices
            .entry((s(volume, "vm_instance_uuid"), n(volume, "device_id")))
            .or_default() += 1;
    }
    for ((vm, device), count) in devices.into_iter().filter(|(_, count)| *count > 1) {
        broken(format!(
            "{count} volumes of VM {vm} are its device {device}"
        ));
    }
    for vm in &vms {
        let roots = volumes
            .iter()
            .filter(|v| s(v, "type") == "Root" && s(v, "vm_instance_uuid") == s(vm, "uuid"))
            .count();
        if roots != 1 {
            broken(format!("VM {} has {roots} root volumes", s(vm, "uuid")));
        }
    }
    let storages = query(
        store,
        "SELECT uuid, total_capacity, available_capacity FROM primary_storage",
    )
    .await;
    for ps in &storages {
        let size: i64 = volumes
            .iter()
            .filter(|v| s(v, "primary_storage_uuid") == s(ps, "uuid"))
            .map(|v| n(v, "size"))
            .sum();
        let taken = n(ps, "total_capacity") - n(ps, "available_capacity");
        if taken != size {
            broken(format!(
                "primary storage {}: {taken} bytes taken, its volumes have {size}",
                s(ps, "uuid")
            ));
        }
    }
    let volume_by_uuid: HashMap<&str, &Map<String, Value>> =
        volumes.iter().map(|v| (s(v, "uuid"), v)).collect();
    let ps_allocations = query(store, "SELECT * FROM primary_storage_allocations").await;
    let mut allocated = BTreeSet::new();
    for a in &ps_allocations {
        let consumer = s(a, "consumer_uuid");
        allocated.insert(consumer);
        match volume_by_uuid.get(consumer) {
            None => broken(format!("storage allocation {a:?}: no such volume")),
            Some(v) => {
                if s(v, "primary_storage_uuid") != s(a, "primary_storage_uuid")
                    || n(v, "size") != n(a, "size")
                {
                    broken(format!(
                        "storage allocation {a:?} differs from its volume {v:?}"
                    ));
                }
            }
        }
    }
    for volume in &volumes {
        if !allocated.contains(s(volume, "uuid")) {
            broken(format!(
                "volume {} holds no storage allocation",
                s(volume, "uuid")
            ));
        }
    }

    // Addresses, NICs and leases: each of one matches one of the others.
    let nics = query(
        store,
        "SELECT uuid, vm_instance_uuid, l3_network_uuid, ip, mac FROM vm_nics",
    )
    .await;
    let addresses = query(
        store,
        "SELECT l3_network_uuid, ip, consumer_uuid FROM ip_addresses",
    )
    .await;
    let leases = query(
        store,
        "SELECT l3_network_uuid, ip, mac, vm_instance_uuid FROM dhcp_leases",
    )
    .await;
    let nic_key = |r: &Map<String, Value>, vm: &str| {
        (
            s(r, vm).to_owned(),
            s(r, "l3_network_uuid").to_owned(),
            s(r, "ip").to_owned(),
        )
    };
    let nic_set: BTreeSet<_> = nics
        .iter()
        .map(|r| nic_key(r, "vm_instance_uuid"))
        .collect();
    let address_set: BTreeSet<_> = addresses
        .iter()
        .map(|r| nic_key(r, "consumer_uuid"))
        .collect();
    for (vm, l3, ip) in address_set.difference(&nic_set) {
        broken(if vm.is_empty() {
            format!("address {ip} of {l3} is held by no consumer")
        } else {
            format!("address {ip} of {l3} held by {vm}: no such NIC")
        });
    }
    for (vm, l3, ip) in nic_set.difference(&address_set) {
        broken(format!(
            "NIC of {vm} on {l3} with {ip}: the address is not held by it"
        ));
    }
    let with_mac = |r: &Map<String, Value>| {
        (
            s(r, "vm_instance_uuid").to_owned(),
            s(r, "l3_network_uuid").to_owned(),
            s(r, "ip").to_owned(),
            s(r, "mac").to_owned(),
        )
    };
    let nic_macs: BTreeSet<_> = nics.iter().map(with_mac).collect();
    let lease_set: BTreeSet<_> = leases.iter().map(with_mac).collect();
    for lease in lease_set.difference(&nic_macs) {
        broken(format!("DHCP lease {lease:?}: no such NIC"));
    }
    for nic in nic_macs.difference(&lease_set) {
        broken(format!("NIC {nic:?} has no DHCP lease"));
    }
    for nic in &nics {
        if !vm_by_uuid.contains_key(s(nic, "vm_instance_uuid")) {
            broken(format!("NIC {nic:?}: no such VM"));
        }
    }
    for vm in &vms {
        if !nics
            .iter()
            .any(|nic| s(nic, "vm_instance_uuid") == s(vm, "uuid"))
        {
            broken(format!("VM {} has no NIC", s(vm, "uuid")));
        }
    }

    // Quotas: usage = the VMs of each owner; one allocation per VM.
    let usage = query(
        store,
        "SELECT account_uuid, vm_num, cpu_num, memory_size FROM quota_usage",
    )
    .await;
    let mut owners: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for vm in &vms {
        let o = owners.entry(s(vm, "account_uuid").to_owned()).or_default();
        o.0 += 1;
        o.1 += n(vm, "cpu_num");
        o.2 += n(vm, "memory_size");
    }
    let mut used: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for u in &usage {
        let counted = (n(u, "vm_num"), n(u, "cpu_num"), n(u, "memory_size"));
        if counted != (0, 0, 0) {
            used.insert(s(u, "account_uuid").to_owned(), counted);
        }
    }
    if used != owners {
        broken(format!(
            "quota usage {used:?} is not the VMs by owner {owners:?}"
        ));
    }
    let quota_allocations = query(store, "SELECT * FROM quota_allocations").await;
    let mut allocated = BTreeSet::new();
    for a in &quota_allocations {
        let consumer = s(a, "consumer_uuid");
        allocated.insert(consumer);
        match vm_by_uuid.get(consumer) {
            None => broken(format!("quota allocation {a:?}: no such VM")),
            Some(vm) => {
                if s(vm, "account_uuid") != s(a, "account_uuid")
                    || n(a, "vm_num") != 1
                    || n(vm, "cpu_num") != n(a, "cpu_num")
                    || n(vm, "memory_size") != n(a, "memory_size")
                {
                    broken(format!("quota allocation {a:?} differs from its VM {vm:?}"));
                }
            }
        }
    }
    for vm in &vms {
        if !allocated.contains(s(vm, "uuid")) {
            broken(format!("VM {} holds no quota allocation", s(vm, "uuid")));
        }
    }
    let tenant = vms
        .iter()
        .filter(|vm| s(vm, "account_uuid") == "tenant")
        .count();
    if tenant > 12 {
        broken(format!("tenant holds {tenant} VMs, its quota 12"));
    }

    // The event outbox: what was announced created and not deleted is what the tables
    // hold (a VM or volume whose create was undone was never announced, or announced
    // deleted too; a destroyed one announced deleted with its removal).
    store.sequence_events().await.expect("events numbered");
    let events = query(
        store,
        "SELECT name, body FROM event_outbox
         WHERE name IN ('resource.created', 'resource.deleted') ORDER BY seq",
    )
    .await;
    let mut announced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in &events {
        let body: Value = serde_json::from_str(s(event, "body")).unwrap_or_default();
        let kind = body["kind"].as_str().unwrap_or_default();
        if kind != "vm-instances" && kind != "volumes" {
            continue;
        }
        let uuid = body["uuid"].as_str().unwrap_or_default().to_owned();
        let live = announced.entry(kind.to_owned()).or_default();
        if s(event, "name") == "resource.created" {
            if !live.insert(uuid.clone()) {
                broken(format!("{kind} {uuid} was announced created twice"));
            }
        } else if !live.remove(&uuid) {
            broken(format!(
                "{kind} {uuid} was announced deleted without being announced created"
            ));
        }
    }
    for (kind, rows) in [("vm-instances", &vms), ("volumes", &volumes)] {
        let held: BTreeSet<String> = rows.iter().map(|r| s(r, "uuid").to_owned()).collect();
        let live = announced.remove(kind).unwrap_or_default();
        for uuid in live.difference(&held) {
            broken(format!(
                "{kind} {uuid} is announced but not in the database"
            ));
        }
        for uuid in held.difference(&live) {
            broken(format!(
                "{kind} {uuid} is in the database but was never announced"
            ));
        }
    }

    // The journal: nothing left running.
    let operations = query(store, "SELECT uuid, kind, state, recovered FROM operations").await;
    let mut summary = End {
        running_vms: vms.iter().filter(|vm| s(vm, "state") == "Running").count(),
        stopped_vms: vms.iter().filter(|vm| s(vm, "state") == "Stopped").count(),
        data_volumes: volumes.iter().filter(|v| s(v, "type") == "Data").count(),
        attached: volumes
            .iter()
            .filter(|v| s(v, "type") == "Data" && v["vm_instance_uuid"].is_string())
            .count(),
        ..End::default()
    };
    for op in &operations {
        summary.operations += 1;
        match s(op, "state") {
            "succeeded" => summary.succeeded += 1,
            "failed" => summary.failed += 1,
            state => broken(format!(
                "operation {} ({}) is {state}",
                s(op, "uuid"),
                s(op, "kind")
            )),
        }
        summary.recovered += i64::from(n(op, "recovered") != 0);
    }
    summary
}

/// What a simulator's ledger in the data directory holds (key → value), replayed as the
/// simulator replays it when it opens it.
fn ledger(dir: &Path, name: &str) -> BTreeMap<String, String> {
    let path: PathBuf = dir.join("simulator").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut entries = BTreeMap::new();
    for line in text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
    {
        if let Some((key, value)) = line.strip_prefix('+').and_then(|l| l.split_once(' ')) {
            entries.insert(key.to_owned(), value.to_owned());
        } else if let Some(key) = line.strip_prefix('-') {
            entries.remove(key);
        }
    }
    entries
}

/// `held` (what a simulator holds: thing → where) is exactly `expected` (what the
/// database says); each difference is a violation.
fn compare(
    what: &str,
    held: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
    violations: &mut Vec<String>,
) {
    for (key, at) in held {
        match expected.get(key) {
            None => violations.push(format!(
                "the simulator holds {what} {key} on {at}; the database does not"
            )),
            Some(placed) if placed != at => violations.push(format!(
                "the simulator holds {what} {key} on {at}; the database has it on {placed}"
            )),
            Some(_) => {}
        }
    }
    for (key, at) in expected {
        if !held.contains_key(key) {
            violations.push(format!(
                "the database has {what} {key} on {at}; the simulator does not hold it"
            ));
        }
    }
}

/// The simulated hosts run exactly the VMs the database has `Running`, each on its host,
/// and the simulated storage holds exactly the database's volumes: their ledgers in the
/// data directory.
async fn check_simulators(
    store: &Arc<flatstack_store::Store>,
    dir: &Path,
    violations: &mut Vec<String>,
) {
    let pairs = |rows: Vec<Map<String, Value>>, at: &str| -> BTreeMap<String, String> {
        rows.iter()
            .map(|row| (s(row, "uuid").to_owned(), s(row, at).to_owned()))
            .collect()
    };
    let running = pairs(
        query(
            store,
            "SELECT uuid, host_uuid FROM vm_instances WHERE state = 'Running'",
        )
        .await,
        "host_uuid",
    );
    compare(
        "running VM",
        &ledger(dir, "host-vms.log"),
        &running,
        violations,
    );
    let volumes = pairs(
        query(store, "SELECT uuid, primary_storage_uuid FROM volumes").await,
        "primary_storage_uuid",
    );
    compare(
        "volume",
        &ledger(dir, "storage-volumes.log"),
        &volumes,
        violations,
    );
}

#[allow(clippy::too_many_arguments)]
fn summary(
    backend: &Backend,
    seed: u64,
    killed: usize,
    early: usize,
    storm: Duration,
    began: Instant,
    starts: &Starts,
    shared: &Shared,
    end: &End,
) {
    let counts = shared
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut all = Counts::default();
    println!(
        "crash test on {} (seed {seed}): {killed} kills ({early} while starting) in {:.1} s, {:.1} s in all",
        backend.name(),
        storm.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    println!(
        "  {:<13} {:>6} {:>10} {:>8} {:>6} {:>9} {:>7} {:>9}  errors / failed jobs by status",
        "operation", "sent", "unanswered", "errors", "jobs", "succeeded", "failed", "recovered"
    );
    for (op, c) in &counts {
        let refused: u64 = c.refused.values().sum();
        let failed: u64 = c.failed.values().sum();
        println!(
            "  {:<13} {:>6} {:>10} {:>8} {:>6} {:>9} {:>7} {:>9}  {:?} / {:?}",
            format!("{op:?}"),
            c.sent,
            c.unanswered,
            refused,
            c.jobs,
            c.succeeded,
            failed,
            c.recovered,
            c.refused,
            c.failed
        );
        if std::env::var_os("FLATSTACK_CRASH_VERBOSE").is_some() {
            for (message, count) in &c.messages {
                println!("      {count:>5} {message}");
            }
        }
        all.sent += c.sent;
        all.unanswered += c.unanswered;
        all.jobs += c.jobs;
        all.jobs_again += c.jobs_again;
        all.succeeded += c.succeeded;
        all.recovered += c.recovered;
    }
    println!(
        "  clients: {} requests, {} unanswered, {} jobs given ({} to creates sent again with their \
         key), {} succeeded, {} closed by recovery",
        all.sent, all.unanswered, all.jobs, all.jobs_again, all.succeeded, all.recovered
    );
    println!(
        "  journal: {} operations, {} succeeded, {} failed, {} closed by recovery",
        end.operations, end.succeeded, end.failed, end.recovered
    );
    println!(
        "  at the end: {} VMs running, {} stopped; {} data volumes, {} attached; {starts}",
        end.running_vms, end.stopped_vms, end.data_volumes, end.attached
    );
}
