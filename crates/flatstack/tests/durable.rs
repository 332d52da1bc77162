//! Durable operations, with the real node: jobs outlive it, an operation cut by a kill is
//! finished or undone at the next start, a release that fails is retried and frees once,
//! requests with an idempotency key are done once, and VMs follow what their hosts run.

mod common;

use common::cloud::{act, data_centre, simulated_vms, snapshot, vm_body, Dc};
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Sends a state-changing request without waiting; the job's uuid.
async fn start_job(node: &Node, method: Method, path: &str, body: Option<Value>) -> String {
    let (status, reply) = node.send(method, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    reply["job_uuid"].as_str().expect("job_uuid").to_owned()
}

/// The job once it has finished (polled).
async fn finished_job(node: &Node, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, reply) = node.get(&format!("/v1/jobs/{job}")).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        if reply["state"] != "running" {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} still running: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The VM named `name` once `ready` holds for it (polled).
async fn vm_when(node: &Node, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = node.get(&format!("/v1/vm-instances?name={name}")).await;
        if let Some(vm) = list["inventories"].get(0) {
            if ready(vm) {
                return vm.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "VM {name} never got there: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes every host's `operation` take `ms` (in the simulator's memory: a restart clears
/// it).
async fn slow(node: &Node, dc: &Dc, operation: &str, ms: u64) {
    for host in &dc.hosts {
        let (status, reply) = node
            .post(
                &format!("/v1/hosts/{host}/actions?wait=10"),
                json!({"action": "inject_failure", "operation": operation, "delay_ms": ms}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

async fn arm(node: &Node, injection: Value) {
    let (status, reply) = node.post("/v1/fault-injections?wait=10", injection).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_cut_by_a_kill_is_undone_and_every_job_answers_after_the_restart() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let done = start_job(
        &node,
        Method::POST,
        "/v1/vm-instances",
        Some(vm_body(&dc, "done")),
    )
    .await;
    let done_vm = finished_job(&node, &done).await["result"]["uuid"].clone();
    let before = snapshot(&node, dir.path(), &dc).await;

    slow(&node, &dc, "start_vm", 60_000).await;
    let cut = start_job(
        &node,
        Method::POST,
        "/v1/vm-instances",
        Some(vm_body(&dc, "cut")),
    )
    .await;
    // Everything but the hypervisor's start is done: quota, host, volume, address, lease.
    let vm = vm_when(&node, "cut", |vm| {
        vm["host_uuid"].is_string() && vm["nics"].as_array().is_some_and(|n| !n.is_empty())
    })
    .await;
    assert_eq!(vm["state"], "Creating");
    let (_, job) = node.get(&format!("/v1/jobs/{cut}")).await;
    assert_eq!(
        (job["state"].clone(), job["resource_uuid"].clone()),
        (json!("running"), vm["uuid"].clone()),
        "the job names the VM it is creating: {job}"
    );
    // And the step it is at: the hypervisor's start, which the host holds up.
    let step = |job: &Value| job["step"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut job = job;
    while !step(&job).starts_with("vm.create: hypervisor.") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        job = node.get(&format!("/v1/jobs/{cut}")).await.1;
    }
    assert!(step(&job).starts_with("vm.create: hypervisor."), "{job}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node); // SIGKILL

    let node = Node::start(dir.path());
    let job = finished_job(&node, &cut).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["recovered"], true, "{job}");
    assert_eq!(job["error"]["details"]["interrupted"], true, "{job}");
    let (status, _) = node.get(&format!("/v1/vm-instances/{}", uuid(&vm))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        snapshot(&node, dir.path(), &dc).await,
        before,
        "nothing the cut create took is left"
    );
    let done = finished_job(&node, &done).await;
    assert_eq!(
        (done["state"].clone(), done["result"]["uuid"].clone()),
        (json!("succeeded"), done_vm),
        "a job finished before the kill answers the same after it: {done}"
    );
    let (status, running) = node.get("/v1/jobs?state=running").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(running["total"], 0, "{running}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroy_cut_by_a_kill_is_finished_and_a_stop_is_settled_from_the_host() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let gone = uuid(&node.create("vm-instances", vm_body(&dc, "gone")).await);
    let kept = node.create("vm-instances", vm_body(&dc, "kept")).await;
    slow(&node, &dc, "stop_vm", 60_000).await;
    let destroy = start_job(
        &node,
        Method::DELETE,
        &format!("/v1/vm-instances/{gone}"),
        None,
    )
    .await;
    let stop = start_job(
        &node,
        Method::POST,
        &format!("/v1/vm-instances/{}/actions", uuid(&kept)),
        Some(json!({"action": "stop"})),
    )
    .await;
    vm_when(&node, "gone", |vm| vm["state"] == "Destroying").await;
    vm_when(&node, "kept", |vm| vm["state"] == "Stopping").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(node); // SIGKILL

    let node = Node::start(dir.path());
    let (status, _) = node.get(&format!("/v1/vm-instances/{gone}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the destroy was finished");
    let job = finished_job(&node, &destroy).await;
    assert_eq!(
        (job["state"].clone(), job["recovered"].clone()),
        (json!("succeeded"), json!(true)),
        "{job}"
    );
    // The host never stopped it: it runs, so it is Running again.
    let (_, vm) = node.get(&format!("/v1/vm-instances/{}", uuid(&kept))).await;
    assert_eq!(vm["inventory"]["state"], "Running", "{vm}");
    let job = finished_job(&node, &stop).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["error"]["details"]["resource"]["state"], "Running",
        "{job}"
    );
    // Only the kept VM holds anything.
    let host = vm["inventory"]["host_uuid"].as_str().expect("host");
    let mut held = json!([]);
    for h in &dc.hosts {
        let (_, inv) = node.get(&format!("/v1/hosts/{h}")).await;
        let used = 8 - inv["inventory"]["available_cpu"].as_i64().expect("cpu");
        if h == host {
            assert_eq!(used, 2, "{inv}");
            held = simulated_vms(&node, h).await;
        } else {
            assert_eq!(used, 0, "{inv}");
            assert_eq!(simulated_vms(&node, h).await, json!([]));
        }
    }
    assert_eq!(held, json!([uuid(&kept)]));
    assert_eq!(
        common::rows(dir.path(), "host_allocations").await,
        1,
        "one allocation: the kept VM's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_fails_is_retried_later_and_frees_once() {
    let dir = common::data_dir();
    let node = Node::start_custom(dir.path(), &[], &[("FLATSTACK_RECONCILE_INTERVAL", "1")]);
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "v")).await);
    // A plugin's release fails once (fault injection's, after the others'): the
    // destroy releases the rest, reports the failure and leaves the VM Destroying.
    arm(
        &node,
        json!({"point": "vm.release", "mode": "fail", "once": true}),
    )
    .await;
    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{vm}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert_eq!(err["error"]["details"]["rollback"], "incomplete", "{err}");
    assert_eq!(
        err["error"]["details"]["rollback_failed"],
        json!(["vm.release"]),
        "{err}"
    );
    let failed = &err["error"]["details"]["undo_failed"][0];
    assert_eq!(
        (&failed["plugin"], &failed["point"]),
        (&json!("fault-injection"), &json!("vm.release")),
        "{err}"
    );
    // The others released anyway: the root volume is gone already.
    let (_, volumes) = node.get("/v1/volumes").await;
    assert_eq!(volumes["total"], 0, "{volumes}");
    // The periodic recovery releases everything again — what was already given back
    // (host capacity, address, quota) is not given back twice — and removes the VM.
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.get(&format!("/v1/vm-instances/{vm}")).await.0 != StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "the VM was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);
}

/// A destroy gives back through `vm.release`, never through the create's undos: an undo
/// armed to fail is not called, so a plugin's undo always means "the create failed".
#[tokio::test(flavor = "multi_thread")]
async fn a_destroy_releases_and_never_undoes() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;
    let vm = uuid(&node.create("vm-instances", vm_body(&dc, "v")).await);
    for point in [
        "vm.create.reserve",
        "vm.volume.allocate",
        "vm.pre-instantiate",
    ] {
        arm(
            &node,
            json!({"point": point, "mode": "fail", "undo": true, "once": true}),
        )
        .await;
    }
    let (status, err) = node
        .send(
            Method::DELETE,
            &format!("/v1/vm-instances/{vm}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{err}");
    let (_, armed) = node.get("/v1/fault-injections").await;
    assert_eq!(armed["total"], 3, "no undo ran: {armed}");
    // Everything was given back all the same, by the releases.
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_that_fails_transiently_is_retried_and_the_rollback_completes() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;
    arm(
        &node,
        json!({"point": "vm.pre-instantiate", "mode": "busy", "undo": true, "once": true}),
    )
    .await;
    arm(
        &node,
        json!({"point": "vm.post-instantiate", "mode": "fail", "once": true}),
    )
    .await;
    let (status, err) = node
        .post("/v1/vm-instances?wait=10", vm_body(&dc, "v"))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert_eq!(
        err["error"]["details"]["injected"], "vm.post-instantiate",
        "{err}"
    );
    assert!(
        err["error"]["details"].get("rollback").is_none(),
        "the rollback completed: {err}"
    );
    let (_, armed) = node.get("/v1/fault-injections").await;
    assert_eq!(armed["total"], 0, "both injections fired: {armed}");
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);
}

/// Waits until no VM row is left (recovery has undone what a failed create kept).
async fn no_vm_left(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::rows(dir, "vm_instances").await != 0 {
        assert!(Instant::now() < deadline, "the VM was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_undo_fails_says_which_and_recovery_undoes_it_again() {
    let dir = common::data_dir();
    let node = Node::start_custom(dir.path(), &[], &[("FLATSTACK_RECONCILE_INTERVAL", "1")]);
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;
    // A step after the root volume fails, and the volume point's undo fails once.
    arm(
        &node,
        json!({"point": "vm.volume.allocate", "mode": "fail", "undo": true, "once": true}),
    )
    .await;
    arm(
        &node,
        json!({"point": "vm.post-instantiate", "mode": "fail", "once": true}),
    )
    .await;
    let job = start_job(
        &node,
        Method::POST,
        "/v1/vm-instances",
        Some(vm_body(&dc, "v")),
    )
    .await;
    let job = finished_job(&node, &job).await;
    assert_eq!(job["state"], "failed", "{job}");
    let details = &job["error"]["details"];
    assert_eq!(details["step"], "vm.post-instantiate", "{job}");
    assert_eq!(details["injected"], "vm.post-instantiate", "{job}");
    assert_eq!(details["rollback"], "incomplete", "{job}");
    assert_eq!(
        details["rollback_failed"],
        json!(["vm.volume.allocate"]),
        "{job}"
    );
    let failed = &details["undo_failed"];
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(
        (
            &failed[0]["step"],
            &failed[0]["plugin"],
            &failed[0]["point"],
            &failed[0]["code"]
        ),
        (
            &json!("vm.volume.allocate"),
            &json!("fault-injection"),
            &json!("vm.volume.allocate"),
            &json!("internal")
        ),
        "{job}"
    );
    assert!(
        failed[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fault injected")),
        "{job}"
    );
    // The VM's row was kept for recovery, which undoes the create again (the undo passes
    // now) and removes it: nothing is left, nothing given back twice.
    no_vm_left(dir.path()).await;
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_that_fails_inside_a_failing_point_is_reported_and_redone() {
    let dir = common::data_dir();
    // Fault injection's implementor placed first at `vm.volume.allocate`, before the volume
    // plugin's: the volume plugin's failure undoes it.
    let manifest = dir.path().join("flatstack.toml");
    std::fs::write(
        &manifest,
        "[extensions.\"vm.volume.allocate\".fault-injection]\norder = -1000\n",
    )
    .expect("manifest written");
    let node = Node::start_custom(
        dir.path(),
        &["--config".as_ref(), manifest.as_os_str()],
        &[("FLATSTACK_RECONCILE_INTERVAL", "1")],
    );
    let (_, points) = node.get("/v1/extension-points").await;
    let point = points["extension_points"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "vm.volume.allocate"))
        .cloned()
        .unwrap_or_else(|| panic!("vm.volume.allocate listed: {points}"));
    assert_eq!(
        point["implementors"][0]["plugin"], "fault-injection",
        "{point}"
    );
    let dc = data_centre(&node).await;
    let before = snapshot(&node, dir.path(), &dc).await;
    arm(
        &node,
        json!({"point": "vm.volume.allocate", "mode": "fail", "undo": true, "once": true}),
    )
    .await;
    let (status, reply) = node
        .post(
            &format!("/v1/primary-storage/{}/actions?wait=10", dc.ps),
            json!({"action": "inject_failure", "operation": "create_volume", "fail": true, "once": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, err) = node
        .post("/v1/vm-instances?wait=10", vm_body(&dc, "v"))
        .await;
    assert!(status.is_server_error(), "{status}: {err}");
    let details = &err["error"]["details"];
    assert_eq!(
        err["error"]["code"], "unavailable",
        "the storage's failure: {err}"
    );
    assert_eq!(
        (&details["step"], &details["plugin"]),
        (&json!("vm.volume.allocate"), &json!("volume")),
        "{err}"
    );
    assert_eq!(details["rollback"], "incomplete", "{err}");
    assert_eq!(
        details["undo_failed"],
        json!([{
            "step": "vm.volume.allocate",
            "plugin": "fault-injection",
            "point": "vm.volume.allocate",
            "code": "internal",
            "message": "plugin `fault-injection` failed at `vm.volume.allocate`: \
                        fault injected at `vm.volume.allocate#undo`",
        }]),
        "{err}"
    );
    no_vm_left(dir.path()).await;
    assert_eq!(snapshot(&node, dir.path(), &dc).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_a_retry_answer_the_first_request() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let send = |key: &'static str, body: Value| {
        let request = node
            .http
            .post(format!("{}/v1/zones?wait=10", node.base))
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let reply = request.send().await.expect("request");
            let status = reply.status();
            (status, reply.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, first) = send("zone-a-1", json!({"name": "a"})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = send("zone-a-1", json!({"name": "a"})).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "the retry answers the first request's result");
    assert_eq!(node.count("zones").await, 1, "done once");

    let (status, other) = send("zone-a-1", json!({"name": "b"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    assert_eq!(other["error"]["details"]["field"], "Idempotency-Key");
    let (status, bad) = send("", json!({"name": "c"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(
        node.count("zones").await,
        1,
        "a refused key changes nothing"
    );

    drop(node);
    let node = Node::start(dir.path());
    let reply = node
        .http
        .post(format!("{}/v1/zones?wait=10", node.base))
        .header("Idempotency-Key", "zone-a-1")
        .json(&json!({"name": "a"}))
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), StatusCode::CREATED);
    assert_eq!(
        reply.json::<Value>().await.expect("JSON"),
        first,
        "after a restart"
    );
    assert_eq!(node.count("zones").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_listed_filtered_and_paged() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let mut made = Vec::new();
    for name in ["a", "b", "c"] {
        made.push(
            start_job(
                &node,
                Method::POST,
                "/v1/zones",
                Some(json!({"name": name})),
            )
            .await,
        );
    }
    let refused = start_job(&node, Method::POST, "/v1/zones", Some(json!({"name": ""}))).await;
    for job in made.iter().chain([&refused]) {
        finished_job(&node, job).await;
    }
    let (status, page) = node.get("/v1/jobs?kind=zone.create&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 4);
    assert_eq!(page["inventories"].as_array().map(Vec::len), Some(2));
    let next = page["next"].as_str().expect("a next page");
    let (_, rest) = node
        .get(&format!("/v1/jobs?kind=zone.create&limit=2&cursor={next}"))
        .await;
    let mut seen: Vec<String> = page["inventories"]
        .as_array()
        .into_iter()
        .chain(rest["inventories"].as_array())
        .flatten()
        .map(|job| job["uuid"].as_str().expect("uuid").to_owned())
        .collect();
    seen.sort();
    let mut all = made.clone();
    all.push(refused.clone());
    all.sort();
    assert_eq!(seen, all, "every job once, across the pages");

    let (_, failed) = node.get("/v1/jobs?state=failed").await;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["inventories"][0]["uuid"], json!(refused));
    assert_eq!(failed["inventories"][0]["status"], 400);
    for bad in [
        "/v1/jobs?state=sleeping",
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=100000",
        "/v1/jobs?cursor=nonsense",
    ] {
        let (status, err) = node.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
    }
    let (status, _) = node.get("/v1/jobs/00000000000000000000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_its_host_no_longer_runs_is_found_stopped() {
    let dir = common::data_dir();
    let node = Node::start_custom(dir.path(), &[], &[("FLATSTACK_RECONCILE_INTERVAL", "1")]);
    let dc = data_centre(&node).await;
    let vm = node.create("vm-instances", vm_body(&dc, "v")).await;
    let host = vm["host_uuid"].as_str().expect("host");
    // It stops behind the node's back (a guest shutdown, a host reboot).
    let (status, reply) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=10"),
            json!({"action": "power_off_vm", "vm_uuid": uuid(&vm)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let stopped = vm_when(&node, "v", |vm| vm["state"] == "Stopped").await;
    assert_eq!(stopped["host_uuid"], json!(host));
    // And it can be started again, as any stopped VM.
    let (status, started) = act(&node, &uuid(&vm), "start").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(simulated_vms(&node, host).await, json!([uuid(&vm)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_a_vm_is_being_placed_on_cannot_be_deleted() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    // Held right after its host is chosen and its capacity taken, before its row names
    // the host.
    arm(
        &node,
        json!({"point": "vm.volume.allocate", "mode": "delay", "delay_ms": 1500, "once": true}),
    )
    .await;
    let job = start_job(
        &node,
        Method::POST,
        "/v1/vm-instances",
        Some(vm_body(&dc, "placed")),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let host = loop {
        let mut taken = None;
        for h in &dc.hosts {
            let (_, inv) = node.get(&format!("/v1/hosts/{h}")).await;
            if inv["inventory"]["available_cpu"] != 8 {
                taken = Some(h.clone());
            }
        }
        if let Some(h) = taken {
            break h;
        }
        assert!(Instant::now() < deadline, "no host was ever taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let vm = vm_when(&node, "placed", |vm| vm["state"] == "Creating").await;
    let (status, refused) = node
        .send(Method::DELETE, &format!("/v1/hosts/{host}?wait=10"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(
        refused["error"]["details"]["users"],
        json!([{"kind": "vm-instances", "uuid": vm["uuid"]}]),
        "{refused}"
    );
    let done = finished_job(&node, &job).await;
    assert_eq!(
        done["state"], "succeeded",
        "the create was not disturbed: {done}"
    );
    assert_eq!(done["result"]["host_uuid"], json!(host));
}
