//! The node's life as an operator sees it: a clean stop on SIGTERM or Ctrl-C that lets
//! the operations in flight finish, one node per data directory, and an event outbox
//! kept to its retention.

mod common;

use common::cloud::{data_centre, vm_body};
use common::{rows, uuid, Node};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the simulated hypervisor takes to start a VM in these tests.
const SLOW_START: Duration = Duration::from_secs(3);

fn node_on(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    Node::start_custom(dir, &args, env)
}

/// Makes every host of the data centre take `delay` to start a VM.
async fn slow_hosts(node: &Node, hosts: &[String], delay: Duration) {
    for host in hosts {
        let (status, reply) = node
            .post(
                &format!("/v1/hosts/{host}/actions?wait=10"),
                json!({"action": "inject_failure", "operation": "start_vm",
                       "delay_ms": delay.as_millis() as u64}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

/// Posts a VM create that waits up to a minute for its job, in a task of its own.
fn create_vm(node: &Node, body: Value) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let request = node
        .http
        .post(format!("{}/v1/vm-instances?wait=60", node.base))
        .json(&body);
    tokio::spawn(async move {
        let reply = request.send().await.expect("the create is answered");
        let status = reply.status();
        (status, reply.json().await.expect("JSON"))
    })
}

/// Waits until a VM named `name` exists: its create is in flight.
async fn until_recorded(node: &Node, name: &str) -> String {
    for _ in 0..250 {
        let (_, list) = node.get(&format!("/v1/vm-instances?name={name}")).await;
        if let Some(vm) = list["inventories"].get(0) {
            return uuid(vm);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the VM {name} was never recorded");
}

/// After a stop signal, the first state-changing request the node refuses (it may
/// accept a few sent before it has seen the signal).
async fn refused_after_signal(node: &Node) -> Value {
    for _ in 0..100 {
        let (status, reply) = node.post("/v1/zones", json!({"name": "late"})).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return reply;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("new operations were still accepted two seconds after the signal");
}

/// How a test's client follows its VM create.
#[derive(Clone, Copy, PartialEq)]
enum Follow {
    /// Waits for the answer (`?wait=60`): the job's result comes on the same request.
    Waiting,
    /// Takes the `202` and goes: only the node's drain keeps the job alive.
    Detached,
}

/// A stop signal during a slow VM create: new operations are refused while reads are
/// still served, the create finishes, the node exits 0, and the VM is there after a restart.
async fn a_stop_signal_lets_the_create_in_flight_finish(
    signal: i32,
    follow: Follow,
    env: &[(&str, &str)],
) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_on(dir.path(), &[], env);
    let dc = data_centre(&node).await;
    slow_hosts(&node, &dc.hosts, SLOW_START).await;
    let (waiting, job) = match follow {
        Follow::Waiting => (Some(create_vm(&node, vm_body(&dc, "slow"))), None),
        Follow::Detached => {
            let (status, accepted) = node.post("/v1/vm-instances", vm_body(&dc, "slow")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
            (None, accepted["location"].as_str().map(str::to_owned))
        }
    };
    let vm = until_recorded(&node, "slow").await;

    node.signal(signal);
    let signalled = Instant::now();
    let refused = refused_after_signal(&node).await;
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stopping"), "{refused}");
    // Reads are served while the create is still in flight.
    let (status, shown) = node.get(&format!("/v1/vm-instances/{vm}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    if let Some(job) = &job {
        let (status, job) = node.get(job).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        assert_eq!(job["state"], "running", "{job}");
    }
    if let Some(waiting) = waiting {
        assert!(
            !waiting.is_finished(),
            "the create ended before the drain was seen"
        );
        let (status, created) = waiting.await.expect("the create's task");
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["inventory"]["state"], "Running", "{created}");
    }
    let exit = node
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the node exits within its shutdown timeout");
    assert!(exit.success(), "{exit:?}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");

    let node = Node::start(dir.path());
    let (status, shown) = node.get(&format!("/v1/vm-instances/{vm}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["inventory"]["state"], "Running", "{shown}");
}

#[tokio::test]
async fn sigterm_refuses_new_operations_and_lets_those_in_flight_finish() {
    a_stop_signal_lets_the_create_in_flight_finish(libc::SIGTERM, Follow::Detached, &[]).await;
}

#[tokio::test]
async fn ctrl_c_stops_the_node_the_same_way() {
    // The timeout from the environment, as a service manager would set it.
    a_stop_signal_lets_the_create_in_flight_finish(
        libc::SIGINT,
        Follow::Waiting,
        &[("FLATSTACK_SHUTDOWN_TIMEOUT", "20")],
    )
    .await;
}

#[tokio::test]
async fn the_wait_for_operations_in_flight_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = node_on(dir.path(), &["--shutdown-timeout", "2"], &[]);
    let dc = data_centre(&node).await;
    // Far longer than the node waits.
    slow_hosts(&node, &dc.hosts, Duration::from_secs(60)).await;
    let waiting = tokio::spawn(
        node.http
            .post(format!("{}/v1/vm-instances?wait=60", node.base))
            .json(&vm_body(&dc, "endless"))
            .send(),
    );
    until_recorded(&node, "endless").await;

    node.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let exit = node
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the node exits after its shutdown timeout");
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stopped after {took:?} with a 2 s timeout"
    );
    let cut = waiting.await.expect("the request's task");
    assert!(cut.is_err(), "no answer: {cut:?}");
}

#[tokio::test]
async fn a_second_signal_stops_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    slow_hosts(&node, &dc.hosts, Duration::from_secs(60)).await;
    // A client waiting on it too: its request is cut, not waited for.
    let waiting = tokio::spawn(
        node.http
            .post(format!("{}/v1/vm-instances?wait=60", node.base))
            .json(&vm_body(&dc, "endless"))
            .send(),
    );
    until_recorded(&node, "endless").await;

    node.signal(libc::SIGTERM);
    refused_after_signal(&node).await;
    // The operator loses patience with the default 30 s.
    let signalled = Instant::now();
    node.signal(libc::SIGINT);
    let exit = node
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the node exits at the second signal");
    assert!(exit.success(), "{exit:?}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let cut = waiting.await.expect("the request's task");
    assert!(cut.is_err(), "no answer: {cut:?}");
}

/// `flatstack serve` with `args`, expected to exit by itself: its status and stderr.
async fn serve_exits(args: &[&OsStr]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flatstack starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second node on a data directory in use did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    (status, stderr)
}

#[tokio::test]
async fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Node::start(dir.path());
    first.create("zones", json!({"name": "z"})).await;

    let (status, stderr) = serve_exits(&["--data-dir".as_ref(), dir.path().as_os_str()]).await;
    assert!(!status.success(), "{status:?}");
    let named = dir.path().display().to_string();
    assert!(
        stderr.contains(&format!("the data directory {named} is in use"))
            && stderr.contains(&format!("process {}", first.pid())),
        "{stderr}"
    );
    // The lock comes before the database: the same with a database elsewhere (this one
    // is never reached).
    let (status, stderr) = serve_exits(&[
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
        "--database-url".as_ref(),
        "postgres://nobody@127.0.0.1:1/nowhere".as_ref(),
    ])
    .await;
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains(&format!("{named} is in use")), "{stderr}");
    assert_eq!(first.count("zones").await, 1, "the first node is unharmed");

    first.signal(libc::SIGTERM);
    let exit = first
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exit");
    assert!(exit.success(), "{exit:?}");
    let next = Node::start(dir.path());
    assert_eq!(next.count("zones").await, 1);
}

/// The `seq` of every event in the node's outbox, in order.
async fn outbox_seqs(dir: &std::path::Path) -> Vec<i64> {
    let url = format!("sqlite://{}", dir.join("flatstack.db").display());
    let store = flatstack_store::Store::open(&url).await.expect("db");
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM event_outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("outbox");
    rows.into_iter().map(|(seq,)| seq).collect()
}

/// Stops `node` with SIGTERM and waits for it.
async fn stop(mut node: Node) {
    node.signal(libc::SIGTERM);
    let exit = node.wait_exit(Duration::from_secs(30)).await.expect("exit");
    assert!(exit.success(), "{exit:?}");
}

/// Polls until the outbox has `count` events.
async fn until_outbox_has(dir: &std::path::Path, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for _ in 0..250 {
        seqs = outbox_seqs(dir).await;
        if seqs.len() == count {
            return seqs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox has {} events, not {count}", seqs.len());
}

#[tokio::test]
async fn the_node_prunes_its_event_outbox_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    for i in 0..12 {
        node.create("zones", json!({"name": format!("zone-{i}")}))
            .await;
    }
    stop(node).await;
    let all = outbox_seqs(dir.path()).await;
    assert_eq!(all.len(), 12, "the defaults keep them all");

    // By count: the newest stay.
    let node = node_on(dir.path(), &["--events-retention-count", "5"], &[]);
    assert_eq!(until_outbox_has(dir.path(), 5).await, all[7..]);
    stop(node).await;

    // By age (from the environment), with no bound on the count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let node = node_on(
        dir.path(),
        &["--events-retention-count", "0"],
        &[("FLATSTACK_EVENTS_RETENTION_SECS", "1")],
    );
    until_outbox_has(dir.path(), 0).await;
    // The sequence goes on from where it was.
    node.create("zones", json!({"name": "after"})).await;
    let after = outbox_seqs(dir.path()).await;
    assert_eq!(after.len(), 1);
    assert!(after[0] > all[11], "{after:?} after {all:?}");
    assert_eq!(rows(dir.path(), "zones").await, 13);
}
