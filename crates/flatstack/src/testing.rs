//! Test support for programs built on [`Distribution`](crate::Distribution): their node
//! started as a process, as an operator starts it — `<program> serve --listen
//! 127.0.0.1:0` on a temporary data directory (SQLite) — and driven over HTTP. A test of
//! an out-of-tree plugin starts its own binary (`env!("CARGO_BIN_EXE_<name>")`):
//!
//! ```no_run
//! # async fn test() -> Result<(), flatstack::Error> {
//! use flatstack::testing::TestNode;
//! use serde_json::json;
//!
//! let node = TestNode::start("path/to/my-flatstack", &[])?;
//! let zone = node.create("zones", json!({"name": "z1"})).await?;
//! let (status, _) = node.get(&format!("/v1/zones/{}", zone["uuid"].as_str().unwrap_or_default())).await?;
//! assert_eq!(status, 200);
//! # Ok(()) }
//! ```
//!
//! The node is killed, and its data directory removed, when the [`TestNode`] is dropped.

use crate::Error;
use anyhow::Context;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A node started as a process on an ephemeral port and a temporary data directory, with
/// the opt-in `fault-injection` plugin enabled (to test undos).
pub struct TestNode {
    child: Child,
    base: String,
    /// Sends the admin token with every request.
    http: reqwest::Client,
    /// Sends what each request says.
    bare: reqwest::Client,
    token: String,
    dir: tempfile::TempDir,
}

/// The uuids of what `serve --demo` creates: a zone with one cluster of Simulator hosts,
/// storage, an image, a flat L3 network and an instance offering.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Demo {
    /// `demo-zone`.
    pub zone: String,
    /// `demo-cluster`, with three Simulator hosts and the demo's storage and network.
    pub cluster: String,
    /// `cirros`.
    pub image: String,
    /// `demo-flat`.
    pub l3_network: String,
    /// `small`: 1 vCPU, 1 GiB.
    pub instance_offering: String,
}

impl TestNode {
    /// Starts `program serve --listen 127.0.0.1:0 --data-dir <temporary>` with `args`
    /// after them (e.g. `--demo`), and waits for it to listen.
    pub fn start(program: impl AsRef<OsStr>, args: &[&str]) -> Result<TestNode, Error> {
        let dir = tempfile::tempdir()
            .context("a temporary data directory")
            .map_err(Error)?;
        Self::start_in(program.as_ref(), dir, args)
    }

    /// Like [`TestNode::start`], with the manifest `manifest` (TOML: `disabled`, `[config]`,
    /// ...), written to the data directory and given with `--config`.
    pub fn start_with_manifest(
        program: impl AsRef<OsStr>,
        manifest: &str,
        args: &[&str],
    ) -> Result<TestNode, Error> {
        let dir = tempfile::tempdir()
            .context("a temporary data directory")
            .map_err(Error)?;
        let path = dir.path().join("flatstack.toml");
        std::fs::write(&path, manifest)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(Error)?;
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::start_in(program.as_ref(), dir, &all)
    }

    fn start_in(program: &OsStr, dir: tempfile::TempDir, args: &[&str]) -> Result<TestNode, Error> {
        let mut child = Command::new(program)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            // The database is the test's: SQLite in its directory.
            .env_remove("FLATSTACK_DATABASE_URL")
            // A test node runs the opt-in fault-injection plugin, to test undos.
            .env("FLATSTACK_ENABLE", "fault-injection")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", program.to_string_lossy()))
            .map_err(Error)?;
        // The node's first line says where it listens.
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(stdout) => BufReader::new(stdout).read_line(&mut line).map(drop),
            None => Ok(()),
        };
        let base = line
            .trim()
            .strip_prefix("flatstack listening on ")
            .map(str::to_owned);
        // The node wrote its admin token before it printed its address.
        let token = crate::token::admin_token(dir.path());
        match (read, base, token) {
            (Ok(()), Some(base), Some(token)) => Ok(TestNode {
                child,
                base,
                http: crate::token::client(Some(&token)).map_err(Error)?,
                bare: reqwest::Client::new(),
                token,
                dir,
            }),
            (read, _, _) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(Error::msg(format!(
                    "{} did not start (first line {line:?}, {read:?}, {status:?})",
                    program.to_string_lossy()
                )))
            }
        }
    }

    /// The node's address, e.g. `http://127.0.0.1:40123`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The admin token the node wrote at its first start (sent with every request of
    /// [`TestNode::get`], [`TestNode::post`], ...).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends `method path` with `body` and `token` (none: anonymous) instead of the admin
    /// token; the status and the body.
    pub async fn request_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Error> {
        let mut request = self.bare.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request, path).await
    }

    /// The node's data directory (its SQLite database is `flatstack.db` there).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `method path` with `body` as JSON; the status and the body (`null` if empty).
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
        answer(request, path).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with `body`.
    pub async fn patch(&self, path: &str, body: Value) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(u16, Value), Error> {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Creates one of `kind` (`POST /v1/{kind}?wait=30`) and returns its inventory; an
    /// error unless it was created.
    pub async fn create(&self, kind: &str, body: Value) -> Result<Value, Error> {
        let (status, reply) = self.post(&format!("/v1/{kind}?wait=30"), body).await?;
        if status != 201 {
            return Err(Error::msg(format!("creating {kind}: {status} {reply}")));
        }
        Ok(reply["inventory"].clone())
    }

    /// Waits (at most `within`) for the data centre of a node started with `--demo`.
    pub async fn demo(&self, within: Duration) -> Result<Demo, Error> {
        let deadline = Instant::now() + within;
        // The demo creates its offering last.
        while self.uuid_of("instance-offerings", "small").await.is_err() {
            if Instant::now() >= deadline {
                return Err(Error::msg("the demo data centre was not created in time"));
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

    /// The uuid of the resource of `kind` named `name`.
    pub async fn uuid_of(&self, kind: &str, name: &str) -> Result<String, Error> {
        let (_, list) = self.get(&format!("/v1/{kind}")).await?;
        list["inventories"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|inventory| inventory["name"] == name)
            .and_then(|inventory| inventory["uuid"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::msg(format!("no {kind} named {name}")))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request`; its status and JSON body (`null` if empty).
async fn answer(request: reqwest::RequestBuilder, path: &str) -> Result<(u16, Value), Error> {
    let answer = async {
        let response = request.send().await.context(path.to_owned())?;
        let status = response.status().as_u16();
        let text = response.text().await.context(path.to_owned())?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path} answered {text}"))?
        };
        anyhow::Ok((status, body))
    };
    answer.await.map_err(Error)
}
