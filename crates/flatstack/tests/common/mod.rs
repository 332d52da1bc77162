//! The test harness: the real management node as a process on an ephemeral port, driven
//! over HTTP, with a temporary database: SQLite in the test's data directory or, when
//! `FLATSTACK_TEST_DATABASE_URL` is set (e.g. `postgres://postgres@127.0.0.1:5432/postgres`,
//! a database to connect to while creating others), a fresh PostgreSQL database of its own.
//! Every test takes its directory from [`data_dir`], so the switch covers every test.
#![allow(dead_code)]

pub mod amqp;
pub mod cloud;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The switch: the URL of a PostgreSQL server's existing database, through which each
/// test creates (and drops) a database of its own.
pub const DATABASE_URL: &str = "FLATSTACK_TEST_DATABASE_URL";

/// How to start the local server, for the message of a test that cannot reach it.
const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// A test's data directory, and its PostgreSQL database if it runs on one: the database
/// lives as long as the directory, so a node restarted on it finds its data, and is
/// dropped with it.
pub struct DataDir {
    dir: tempfile::TempDir,
    database: Option<Database>,
}

impl DataDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the node runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database.is_some()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        databases().remove(self.dir.path());
    }
}

/// A data directory for a test's node: SQLite in it, or a fresh PostgreSQL database when
/// the switch is set.
pub fn data_dir() -> DataDir {
    match std::env::var(DATABASE_URL) {
        Ok(admin) if !admin.is_empty() => postgres_at(&admin),
        _ => DataDir {
            dir: tempfile::tempdir().expect("temporary directory"),
            database: None,
        },
    }
}

/// A data directory whose node runs on PostgreSQL whether or not the switch is set: at
/// its server if it is, else at the local one.
pub fn postgres_data_dir() -> DataDir {
    let admin = std::env::var(DATABASE_URL)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    postgres_at(&admin)
}

fn postgres_at(admin: &str) -> DataDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = Database::create(admin);
    databases().insert(dir.path().to_owned(), database.url.clone());
    DataDir {
        dir,
        database: Some(database),
    }
}

/// The PostgreSQL database of each live [`DataDir`] that has one, by its path: the node
/// and the helpers that read the store find it from the path they are given.
fn databases() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, String>> {
    static DATABASES: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    DATABASES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The database URL of the node whose data directory is `data_dir`, if on PostgreSQL.
fn database_url(data_dir: &Path) -> Option<String> {
    let url = databases().get(data_dir).cloned();
    if url.is_none() && std::env::var(DATABASE_URL).is_ok_and(|url| !url.is_empty()) {
        panic!(
            "{DATABASE_URL} is set, but {} has no database: take the test's directory from \
             common::data_dir(), not tempfile",
            data_dir.display()
        );
    }
    url
}

/// A database created for one test, dropped (with whatever is still connected to it)
/// when the test's [`DataDir`] goes.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin: &str) -> Database {
        let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name}");
        if let Err(e) = admin_statement(admin, sql) {
            panic!(
                "the PostgreSQL tests cannot create a database through {admin}: {e}\n\
                 Is PostgreSQL running? Start the local server with `{START_POSTGRES}`, or \
                 set {DATABASE_URL} to another server's URL (or leave it unset to run the \
                 node tests on SQLite; tests/postgres.rs always needs a server)."
            );
        }
        Database {
            url: with_database(admin, &name),
            admin: admin.to_owned(),
            name,
        }
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

/// Runs `sql` through a connection to `admin`, on a thread and runtime of its own: it is
/// called where no runtime may block (`Drop`, a test's synchronous set-up).
fn admin_statement(admin: &str, sql: String) -> Result<(), String> {
    use sqlx::Connection;
    let admin = admin.to_owned();
    let run = move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let connect = sqlx::PgConnection::connect(&admin);
            let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
                .await
                .map_err(|_| "no answer in 10 s".to_owned())?
                .map_err(|e| e.to_string())?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    };
    std::thread::spawn(run)
        .join()
        .unwrap_or_else(|_| Err("the thread panicked".into()))
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let end = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The node's store, opened directly (by the helpers that read it).
async fn open_store(data_dir: &Path) -> Arc<flatstack_store::Store> {
    let url = database_url(data_dir)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("flatstack.db").display()));
    flatstack_store::Store::open(&url).await.expect("db")
}

pub struct Node {
    child: Child,
    pub base: String,
    /// Sends the node's admin token with every request.
    pub http: Client,
    /// The admin token the node wrote to its data directory at its first start.
    pub token: String,
    /// The data directory of a node started with [`Node::start_postgres`]: the node still
    /// locks one, so each gets its own.
    _data_dir: Option<tempfile::TempDir>,
}

impl Node {
    /// A node on the database of `data_dir` (from [`data_dir`]).
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[])
    }

    /// A node whose manifest is `manifest` (TOML), e.g. a short `extension.timeout_ms`.
    pub fn start_with_manifest(data_dir: &Path, manifest: &str) -> Node {
        let path = data_dir.join("flatstack.toml");
        std::fs::write(&path, manifest).expect("manifest written");
        Self::start_with(data_dir, &["--config".as_ref(), path.as_os_str()])
    }

    /// A node on an existing PostgreSQL database, with a data directory of its own.
    pub fn start_postgres(url: &str) -> Node {
        let dir = tempfile::tempdir().expect("data directory");
        databases().insert(dir.path().to_owned(), url.to_owned());
        let mut node = Self::start_custom(dir.path(), &[], &[]);
        node._data_dir = Some(dir);
        node
    }

    fn start_with(data_dir: &Path, args: &[&std::ffi::OsStr]) -> Node {
        Self::start_custom(data_dir, args, &[])
    }

    /// `flatstack serve --listen 127.0.0.1:0` on the database of `data_dir`, with `args`
    /// and `env` set.
    pub fn start_custom(data_dir: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flatstack"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            // The database is the test's choice, not the environment's.
            .env_remove("FLATSTACK_DATABASE_URL");
        // A test that names its database itself (the crash test) keeps it.
        let named = args.iter().any(|a| *a == "--database-url");
        if !named {
            if let Some(url) = database_url(data_dir) {
                command.args(["--database-url", &url]);
            }
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            // Test nodes arm failures through the opt-in fault-injection plugin.
            .env("FLATSTACK_ENABLE", "fault-injection")
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
        // Written before the node printed its address.
        let token =
            flatstack::token::admin_token(data_dir).expect("the node wrote its admin token");
        Node {
            child,
            base,
            http: flatstack::token::client(Some(&token)).expect("HTTP client"),
            token,
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

    /// Sends `method path` with `body` on a connection of its own, with `token` (none:
    /// anonymous) instead of the pooled client's admin token: for other users, and for
    /// requests after the node closed connections a pooled client would reuse. A body
    /// that is not JSON comes back as a string.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Client::new().request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answer");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
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
    let store = open_store(data_dir).await;
    // Events a transaction wrote are numbered into the outbox once committed.
    store.sequence_events().await.expect("events numbered");
    let n = store.count(table).await.expect("count");
    store.close().await;
    n
}

/// Runs one SQL statement on the node's database directly: what a stop half-way through
/// an operation leaves, written by a test. Returns the rows it changed.
#[allow(dead_code)]
pub async fn execute(data_dir: &Path, sql: &str) -> u64 {
    let store = open_store(data_dir).await;
    let done = sqlx::query(sql)
        .execute(store.pool())
        .await
        .expect("statement")
        .rows_affected();
    store.close().await;
    done
}

/// Every row of `table`, without `updated_at`, in a stable order.
pub async fn dump(data_dir: &Path, table: &str) -> Vec<Value> {
    let store = open_store(data_dir).await;
    let mut tx = store.read().await.expect("tx");
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
    drop(tx);
    store.close().await;
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
    let store = open_store(data_dir).await;
    store.sequence_events().await.expect("events numbered");
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT body FROM event_outbox WHERE name = $1 ORDER BY seq")
            .bind(name)
            .fetch_all(store.pool())
            .await
            .expect("outbox");
    store.close().await;
    rows.iter()
        .map(|(body,)| serde_json::from_str(body).expect("JSON event"))
        .collect()
}
