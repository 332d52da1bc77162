//! The tests' harness: the node (this test binary, see `openvswitch.rs`) started through
//! `flatstack::testing::TestNode`, or as a process of our own for the test that kills it;
//! SQLite in the node's data directory, or a fresh PostgreSQL database when
//! `FLATSTACK_TEST_DATABASE_URL` is set; HTTP helpers; and a small test runner.

use flatstack::testing::TestNode;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a test or a helper fails with.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn err(message: impl std::fmt::Display) -> Error {
    message.to_string().into()
}
pub type Test = fn() -> BoxFuture<'static, Result<(), Error>>;

/// Runs the tests whose names contain one of the arguments (all without any), two at a
/// time, each in a task of its own: a panic or an error fails it. Prints what `cargo test`
/// prints, `test result:` line included.
pub fn run(tests: &[(&'static str, Test)]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results: Vec<(&str, bool)> = runtime.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(2));
        let handles: Vec<_> = selected
            .iter()
            .map(|(name, test)| {
                let permits = permits.clone();
                let test = *test;
                let name = *name;
                tokio::spawn(async move {
                    let _permit = permits.acquire().await;
                    let outcome = tokio::time::timeout(Duration::from_secs(600), test()).await;
                    match outcome {
                        Ok(Ok(())) => true,
                        Ok(Err(error)) => {
                            eprintln!("{name}: {error:#}");
                            false
                        }
                        Err(_) => {
                            eprintln!("{name}: timed out");
                            false
                        }
                    }
                })
            })
            .collect();
        let mut results = Vec::new();
        for (handle, (name, _)) in handles.into_iter().zip(&selected) {
            let passed = handle.await.unwrap_or(false);
            println!("test {name} ... {}", if passed { "ok" } else { "FAILED" });
            results.push((*name, passed));
        }
        results
    });
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    let passed = results.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        tests.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The switch: a PostgreSQL server's database, through which each node's own is created.
const DATABASE_URL: &str = "FLATSTACK_TEST_DATABASE_URL";

/// A PostgreSQL database made for one node, dropped with it.
pub struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    /// One, if the switch is set.
    fn new() -> Result<Option<Database>, Error> {
        let admin = match std::env::var(DATABASE_URL) {
            Ok(url) if !url.is_empty() => url,
            _ => return Ok(None),
        };
        let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
        admin_statement(&admin, format!("CREATE DATABASE {name}"))
            .map_err(|e| err(format!("cannot create a database through {admin}: {e}")))?;
        let (base, query) = match admin.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin.as_str(), String::new()),
        };
        let authority = base.find("://").map_or(0, |i| i + 3);
        let end = base[authority..]
            .find('/')
            .map_or(base.len(), |i| authority + i);
        let url = format!("{}/{name}{query}", &base[..end]);
        Ok(Some(Database {
            admin: admin.clone(),
            name,
            url,
        }))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_statement(&self.admin, sql) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on `admin`, on a thread and runtime of its own (called from `Drop` too).
fn admin_statement(admin: &str, sql: String) -> Result<(), String> {
    use sqlx::Connection;
    let admin = admin.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".into()))
}

/// The uuids of the demo's data centre.
pub struct Demo {
    pub zone: String,
    pub cluster: String,
    pub image: String,
    pub l3_network: String,
    pub instance_offering: String,
}

/// A node driven over HTTP. Dropped, its process is killed (then its database dropped).
pub struct Node {
    base: String,
    http: reqwest::Client,
    _node: Option<TestNode>,
    _database: Option<Database>,
}

/// Starts the node with `manifest` (if any), and the demo's data centre if `demo`.
pub async fn start(manifest: Option<&str>, demo: bool) -> Result<Node, Error> {
    let program = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let database = Database::new()?;
    let mut args = Vec::new();
    if demo {
        args.push("--demo".to_owned());
    }
    if let Some(db) = &database {
        args.extend(["--database-url".to_owned(), db.url.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = match manifest {
        Some(manifest) => TestNode::start_with_manifest(&program, manifest, &args)?,
        None => TestNode::start(&program, &args)?,
    };
    Ok(Node {
        base: node.base().to_owned(),
        http: flatstack::token::client(Some(node.token())).map_err(|e| err(e.to_string()))?,
        _node: Some(node),
        _database: database,
    })
}

impl Node {
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| err(format!("{path}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| err(format!("{path}: {e}")))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| err(format!("{path} answered {text}: {e}")))?
        };
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Creates one of `kind`; its inventory.
    pub async fn create(&self, kind: &str, body: Value) -> Result<Value, Error> {
        let (status, reply) = self.post(&format!("/v1/{kind}?wait=30"), body).await?;
        if status != 201 {
            return Err(err(format!("creating {kind}: {status} {reply}")));
        }
        Ok(reply["inventory"].clone())
    }

    async fn uuid_of(&self, kind: &str, name: &str) -> Result<String, Error> {
        let (_, list) = self.get(&format!("/v1/{kind}?name={name}")).await?;
        list["inventories"][0]["uuid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| err(format!("no {kind} named {name}")))
    }

    /// Waits for the demo's data centre (the node started with `--demo`).
    pub async fn demo(&self, within: Duration) -> Result<Demo, Error> {
        let deadline = Instant::now() + within;
        while self.uuid_of("instance-offerings", "small").await.is_err() {
            if Instant::now() >= deadline {
                return Err(err("the demo data centre was not created in time"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Demo {
            zone: self.uuid_of("zones", "demo-zone").await?,
            cluster: self.uuid_of("clusters", "demo-cluster").await?,
            image: self.uuid_of("images", "cirros").await?,
            l3_network: self.uuid_of("l3-networks", "demo-flat").await?,
            instance_offering: self.uuid_of("instance-offerings", "small").await?,
        })
    }
}

/// A node as a process of the test's own, to kill it (`SIGKILL`) and start it again on
/// the same data directory and database.
pub struct Proc {
    child: Child,
    base: String,
    dir: Option<tempfile::TempDir>,
    token: String,
    database: Option<Database>,
}

impl Proc {
    pub fn start(demo: bool) -> Result<Proc, Error> {
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let database = Database::new()?;
        Self::spawn(dir, database, demo)
    }

    fn spawn(
        dir: tempfile::TempDir,
        database: Option<Database>,
        demo: bool,
    ) -> Result<Proc, Error> {
        let program = std::env::current_exe().map_err(|e| err(e.to_string()))?;
        let mut command = Command::new(program);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("FLATSTACK_DATABASE_URL")
            .env("FLATSTACK_ENABLE", "fault-injection")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if demo {
            command.arg("--demo");
        }
        if let Some(db) = &database {
            command.args(["--database-url", &db.url]);
        }
        let mut child = command.spawn().map_err(|e| err(e.to_string()))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let Some(base) = line.trim().strip_prefix("flatstack listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!("the node did not start: {line:?}")));
        };
        let token = flatstack::token::admin_token(dir.path())
            .ok_or_else(|| err("the node wrote no admin token"))?;
        Ok(Proc {
            base: base.to_owned(),
            token,
            child,
            dir: Some(dir),
            database,
        })
    }

    /// Kills the node (`SIGKILL`: no drain, no clean-up) and starts it again.
    pub fn restart(mut self) -> Result<Proc, Error> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().ok_or_else(|| err("no data directory"))?;
        let database = self.database.take();
        Self::spawn(dir, database, false)
    }

    /// A client of it (which does not keep it alive).
    pub fn client(&self) -> Node {
        Node {
            base: self.base.clone(),
            http: flatstack::token::client(Some(&self.token)).unwrap_or_default(),
            _node: None,
            _database: None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /v1/l2-networks` of an Openvswitch network with `fields`: the status and body.
pub async fn post_network(
    node: &Node,
    zone: &str,
    name: &str,
    fields: Value,
) -> Result<(u16, Value), Error> {
    let mut body = json!({"type": "Openvswitch", "name": name, "zone_uuid": zone,
        "physical_interface": "eth1"});
    if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(fields.clone());
    }
    node.post("/v1/l2-networks?wait=30", body).await
}

/// An Openvswitch network with `fields`; its inventory.
pub async fn ovs_network(
    node: &Node,
    zone: &str,
    name: &str,
    fields: Value,
) -> Result<Value, Error> {
    let (status, body) = post_network(node, zone, name, fields).await?;
    if status != 201 {
        return Err(err(format!("creating {name}: {status} {body}")));
    }
    Ok(body["inventory"].clone())
}

pub async fn attach(node: &Node, l2: &str, cluster: &str) -> Result<(), Error> {
    let (status, body) = node
        .post(
            &format!("/v1/l2-networks/{l2}/actions?wait=30"),
            json!({"action": "attach_cluster", "cluster_uuid": cluster}),
        )
        .await?;
    if status != 200 {
        return Err(err(format!("attach: {status} {body}")));
    }
    Ok(())
}

/// An L3 network on `l2` with addresses `{prefix}.10` to `{prefix}.200`; its uuid.
pub async fn l3_on(node: &Node, l2: &str, prefix: &str) -> Result<String, Error> {
    let l3 = node
        .create(
            "l3-networks",
            json!({"name": format!("l3-{prefix}"), "l2_network_uuid": l2}),
        )
        .await?;
    let l3 = l3["uuid"].as_str().unwrap_or_default().to_owned();
    let (status, body) = node
        .post(
            &format!("/v1/l3-networks/{l3}/ip-ranges?wait=30"),
            json!({"name": "r", "start_ip": format!("{prefix}.10"), "end_ip": format!("{prefix}.200"),
                "netmask": "255.255.255.0", "gateway": format!("{prefix}.1")}),
        )
        .await?;
    if status != 201 {
        return Err(err(format!("range: {status} {body}")));
    }
    Ok(l3)
}

/// The hosts of `cluster`, by name.
pub async fn hosts_of(node: &Node, cluster: &str) -> Result<Vec<String>, Error> {
    let (_, list) = node
        .get(&format!("/v1/hosts?cluster_uuid={cluster}"))
        .await?;
    let mut hosts: Vec<(String, String)> = list["inventories"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_owned(),
                h["uuid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    hosts.sort();
    Ok(hosts.into_iter().map(|(_, uuid)| uuid).collect())
}

pub async fn set_daemons(node: &Node, host: &str, daemons: &str) -> Result<(), Error> {
    let (status, body) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=10"),
            json!({"action": "set_daemons", "daemons": daemons}),
        )
        .await?;
    if status != 200 {
        return Err(err(format!("set_daemons: {status} {body}")));
    }
    Ok(())
}

/// A Simulator host's create body.
pub fn host_body(cluster: &str, ip: &str, name: &str, daemons: &str) -> Value {
    json!({"type": "Simulator", "name": name, "cluster_uuid": cluster, "management_ip": ip,
        "cpu_capacity": 16, "memory_capacity": 68719476736u64, "daemons": daemons})
}

/// The simulated host's report (what its agent received, among others).
pub async fn host_report(node: &Node, host: &str) -> Result<Value, Error> {
    let (_, body) = node
        .post(
            &format!("/v1/hosts/{host}/actions?wait=10"),
            json!({"action": "forget_agent_state", "namespace": "nothing.here"}),
        )
        .await?;
    Ok(body["inventory"].clone())
}

/// Creates a VM on `l3s`, on `host` if given: its uuid, or the status and body of the
/// refusal.
pub async fn create_vm(
    node: &Node,
    demo: &Demo,
    l3s: &[&str],
    host: Option<&String>,
) -> Result<String, (u16, Value)> {
    let mut body = json!({"name": "vm", "instance_offering_uuid": demo.instance_offering,
        "image_uuid": demo.image, "l3_network_uuids": l3s});
    if let Some(host) = host {
        body["host_uuid"] = json!(host);
    }
    match node.post("/v1/vm-instances?wait=60", body).await {
        Ok((201, body)) => Ok(body["inventory"]["uuid"]
            .as_str()
            .unwrap_or_default()
            .to_owned()),
        Ok((status, body)) => Err((status, body)),
        Err(e) => Err((0, json!(e.to_string()))),
    }
}

pub async fn destroy_vm(node: &Node, vm: &str) -> Result<(), Error> {
    let (status, body) = node
        .delete(&format!("/v1/vm-instances/{vm}?wait=60"))
        .await?;
    if status >= 300 {
        return Err(err(format!("destroy {vm}: {status} {body}")));
    }
    Ok(())
}

/// An error answer's message.
pub fn error(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The network's tunnels as recorded (`GET .../tunnels`), without their timestamps.
pub async fn tunnel_rows(node: &Node, l2: &str) -> Result<Vec<Value>, Error> {
    let (status, list) = node.get(&format!("/v1/l2-networks/{l2}/tunnels")).await?;
    if status != 200 {
        return Err(err(format!("tunnels: {status} {list}")));
    }
    Ok(list["inventories"].as_array().cloned().unwrap_or_default())
}

/// The peers a host's agent holds Openvswitch tunnel ends to.
pub async fn agent_ends(node: &Node, host: &str) -> Result<BTreeSet<String>, Error> {
    let (status, list) = node.get(&format!("/v1/hosts/{host}/agent-objects")).await?;
    if status != 200 {
        return Err(err(format!("agent objects: {status} {list}")));
    }
    Ok(list["inventories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["namespace"] == "ovs.tunnel")
        .filter_map(|o| o["object"]["remote_host_uuid"].as_str().map(str::to_owned))
        .collect())
}

/// The network's tunnels as host pairs, after checking that the record and the hosts
/// agree: each recorded tunnel has its two ends, one on each host, and no host of `hosts`
/// holds an end the record does not have.
pub async fn mesh(
    node: &Node,
    l2: &str,
    hosts: &[String],
) -> Result<BTreeSet<(String, String)>, Error> {
    let rows = tunnel_rows(node, l2).await?;
    let mut pairs = BTreeSet::new();
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        let (a, b) = (
            row["host_uuid"].as_str().unwrap_or_default().to_owned(),
            row["peer_host_uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        assert!(a < b, "a pair is recorded in order: {row}");
        assert!(
            pairs.insert((a.clone(), b.clone())),
            "one tunnel per pair: {rows:?}"
        );
    }
    for (a, b) in &pairs {
        expected.entry(a.as_str()).or_default().insert(b.clone());
        expected.entry(b.as_str()).or_default().insert(a.clone());
    }
    for host in hosts {
        let held = agent_ends(node, host).await?;
        let wanted = expected.get(host.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            held, wanted,
            "host {host}'s tunnel ends against the record {rows:?}"
        );
    }
    Ok(pairs)
}
