//! The test harness: the real management node as a process on an ephemeral port with a
//! temporary SQLite database, driven over HTTP.
#![allow(dead_code)]

pub mod cloud;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Node {
    child: Child,
    pub base: String,
    pub http: Client,
    /// The data directory of a node whose database is elsewhere (PostgreSQL): the node
    /// still locks one, so each gets its own.
    _data_dir: Option<tempfile::TempDir>,
}

impl Node {
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(&["--data-dir".as_ref(), data_dir.as_os_str()])
    }

    /// A node on a PostgreSQL database instead of SQLite.
    pub fn start_postgres(url: &str) -> Node {
        let dir = tempfile::tempdir().expect("data directory");
        let mut node = Self::start_with(&[
            "--database-url".as_ref(),
            url.as_ref(),
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
        ]);
        node._data_dir = Some(dir);
        node
    }

    /// A node whose manifest is `manifest` (TOML), e.g. a short `extension.timeout_ms`.
    pub fn start_with_manifest(data_dir: &Path, manifest: &str) -> Node {
        let path = data_dir.join("flatstack.toml");
        std::fs::write(&path, manifest).expect("manifest written");
        Self::start_with(&[
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "--config".as_ref(),
            path.as_os_str(),
        ])
    }

    fn start_with(args: &[&std::ffi::OsStr]) -> Node {
        Self::start_custom(args, &[])
    }

    /// `flatstack serve --listen 127.0.0.1:0` with `args`, and `env` set.
    pub fn start_custom(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flatstack"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flatstack starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let base = line
            .trim()
            .strip_prefix("flatstack listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Node {
            child,
            base,
            http: Client::new(),
            _data_dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the node.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) only reads its two integer arguments.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// How the node exited, if it did within `within`.
    pub async fn wait_exit(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Creates with `?wait=` and returns the inventory, asserting 201.
    pub async fn create(&self, kind: &str, body: Value) -> Value {
        let (status, reply) = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/{kind}?wait=10"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply["inventory"].clone()
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn count(&self, kind: &str) -> u64 {
        let (status, list) = self.get(&format!("/v1/{kind}")).await;
        assert_eq!(status, StatusCode::OK);
        list["total"].as_u64().expect("total")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn uuid(inv: &Value) -> String {
    inv["uuid"].as_str().expect("uuid").to_owned()
}

/// Rows of `table` in the node's database, read directly.
pub async fn rows(data_dir: &Path, table: &str) -> i64 {
    let url = format!("sqlite://{}", data_dir.join("flatstack.db").display());
    let store = flatstack_store::Store::open(&url).await.expect("db");
    store.count(table).await.expect("count")
}

/// Every row of `table`, without `updated_at`, in a stable order.
pub async fn dump(data_dir: &Path, table: &str) -> Vec<Value> {
    let url = format!("sqlite://{}", data_dir.join("flatstack.db").display());
    let store = flatstack_store::Store::open(&url).await.expect("db");
    let mut tx = store.begin().await.expect("tx");
    let mut rows: Vec<Value> = tx
        .list_by(table, &serde_json::Map::new(), &[])
        .await
        .expect("rows")
        .into_iter()
        .map(|mut row| {
            row.remove("updated_at");
            Value::Object(row)
        })
        .collect();
    rows.sort_by_key(|row| row.to_string());
    rows
}

pub async fn data_centre(node: &Node) -> (String, String, String) {
    let zone = node
        .create("zones", json!({"name": "zone-1", "description": "first"}))
        .await;
    let cluster = node
        .create(
            "clusters",
            json!({"name": "c1", "zone_uuid": uuid(&zone), "hypervisor_type": "Simulator"}),
        )
        .await;
    let host = node
        .create(
            "hosts",
            json!({"type": "Simulator", "name": "h1", "cluster_uuid": uuid(&cluster),
            "management_ip": "10.0.0.1", "cpu_capacity": 64, "memory_capacity": 274877906944u64}),
        )
        .await;
    (uuid(&zone), uuid(&cluster), uuid(&host))
}

/// `base` with the fields of `over` set (a `null` removes the field): one invalid variant
/// of a valid body at a time.
pub fn with(base: Value, over: Value) -> Value {
    let mut body = base;
    if let (Some(body), Some(over)) = (body.as_object_mut(), over.as_object()) {
        for (k, v) in over {
            if v.is_null() {
                body.remove(k);
            } else {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    body
}

/// Canonical events named `name` in the node's outbox, read directly.
pub async fn events(data_dir: &Path, name: &str) -> Vec<Value> {
    let url = format!("sqlite://{}", data_dir.join("flatstack.db").display());
    let store = flatstack_store::Store::open(&url).await.expect("db");
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT body FROM event_outbox WHERE name = $1 ORDER BY seq")
            .bind(name)
            .fetch_all(store.pool())
            .await
            .expect("outbox");
    rows.iter()
        .map(|(body,)| serde_json::from_str(body).expect("JSON event"))
        .collect()
}
