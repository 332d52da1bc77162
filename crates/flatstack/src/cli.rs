//! The command-line client: talks to a node over HTTP, like any other client.
//!
//! `flatstack <kind> <verb> [args]`, where `<kind>` is any API path the node serves
//! (`zones`, `hosts`, `l3-networks`, ...): the client knows no resource kind either.
//! Fields are `key=value`; a value that parses as JSON is sent as JSON (`cpu_num=2`,
//! `uuids=["a","b"]`), anything else as a string.

use crate::cli_schema;
use anyhow::{anyhow, bail, Context};
use flatstack_api::escape;
use flatstack_header::identity::Session;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people: the columns the kind declares, sizes readable.
    Table,
    /// As `table`, with every field of a list's items.
    Wide,
    /// The API's JSON.
    Json,
    /// The API's JSON as YAML.
    Yaml,
    /// Only uuids, one per line: for scripts (`ZONE=$(flatstack zones create ... --output uuid)`).
    Uuid,
}

/// Why a command failed, when its exit code says more than "it failed" (1): see
/// docs/operators.md, "Exit codes". Carried in the error's chain; its message is the one
/// printed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    message: String,
}

/// The exit codes besides 0 (done) and 1 (the node refused, or a job failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 2: the command line is wrong (clap's own code for usage errors).
    Usage,
    /// 3: no node answered at the endpoint.
    Unreachable,
    /// 4: a job outlived `--timeout`; it goes on.
    TimedOut,
}

impl FailureKind {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 3,
            FailureKind::TimedOut => 4,
        }
    }
}

/// A wrong command line: exit code 2.
pub(crate) fn usage(message: impl std::fmt::Display) -> anyhow::Error {
    Failure {
        kind: FailureKind::Usage,
        message: message.to_string(),
    }
    .into()
}

/// The exit code for `error`: its [`Failure`]'s (as the error, a context of it, or a
/// cause), else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<Failure>()
        .or_else(|| error.chain().find_map(|e| e.downcast_ref::<Failure>()))
        .map_or(1, |f| f.kind.code())
}

pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    output: Output,
}

const USAGE: &str = "usage: flatstack <kind> create key=value...
       flatstack <kind> list [key=value...]
       flatstack <kind> show|delete <uuid or name>
       flatstack <kind> update <uuid or name> key=value...
       flatstack <kind> action <uuid or name> <action> [key=value...]
       flatstack <kind> <uuid> <child> list|create [key=value...]
       flatstack jobs list [state=...] | show <uuid> | wait <uuid>
Commands that start a job wait for it; --no-wait prints the job instead, --timeout <seconds>
gives up waiting (the job goes on: flatstack jobs wait <uuid>).";

/// The verbs `flatstack <kind>` knows, for "did you mean".
const VERBS: &[&str] = &[
    "list", "create", "show", "update", "delete", "action", "types", "wait",
];

/// How a command that starts a job waits for it (`--no-wait`, `--timeout <seconds>`).
#[derive(Clone, Copy, Default)]
struct Wait {
    no_wait: bool,
    timeout: Option<Duration>,
}

/// An argument as a flag and its inline value: `--flag=value` is (`--flag`, `value`).
pub(crate) fn split_flag(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
        _ => (arg, None),
    }
}

/// Takes the flag at `args[i]` out of `args` with its value (given inline, or the next
/// argument), which it answers; without one, an error saying the flag `needs` it.
pub(crate) fn take_flag_value(
    args: &mut Vec<String>,
    i: usize,
    needs: &str,
) -> anyhow::Result<String> {
    let (flag, inline) = split_flag(&args[i]);
    let value = match inline {
        Some(value) => value.to_owned(),
        None if i + 1 < args.len() => args.remove(i + 1),
        None => return Err(usage(format!("{flag} needs {needs}"))),
    };
    args.remove(i);
    Ok(value)
}

/// A body's fields from `-f <file>` (`-f -`: standard input), a JSON object, before the
/// `key=value` pairs (which win).
fn take_file(args: &mut Vec<String>) -> anyhow::Result<Option<Map<String, Value>>> {
    let Some(i) = args
        .iter()
        .position(|a| matches!(split_flag(a).0, "-f" | "--file"))
    else {
        return Ok(None);
    };
    let path = take_flag_value(args, i, "a file (`-` for standard input)")?;
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", escape(&path)))?
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(body)) => Ok(Some(body)),
        Ok(_) => Err(usage(format!(
            "{} does not hold a JSON object",
            escape(&path)
        ))),
        Err(e) => Err(usage(format!("{} is not JSON: {e}", escape(&path)))),
    }
}

impl Wait {
    /// Takes `--no-wait` and `--timeout <seconds>` (or `--timeout=<seconds>`) out of `args`.
    fn take(args: &mut Vec<String>) -> anyhow::Result<Wait> {
        let mut wait = Wait::default();
        let mut i = 0;
        while i < args.len() {
            match split_flag(&args[i]).0 {
                "--no-wait" => {
                    args.remove(i);
                    wait.no_wait = true;
                }
                "--timeout" => {
                    let value = take_flag_value(args, i, "a number of seconds")?;
                    let seconds: f64 = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            usage(format!(
                                "--timeout: `{}` is not a number of seconds",
                                escape(&value)
                            ))
                        })?;
                    wait.timeout = Some(Duration::from_secs_f64(seconds));
                }
                _ => i += 1,
            }
        }
        Ok(wait)
    }
}

/// What a command that starts a job ends with.
enum Outcome {
    /// The job finished: what it answered (`{"inventory": ...}`).
    Done(Value),
    /// `--no-wait`: the job, started.
    Started { job: String },
}

/// A uuid as the node makes them: 32 lowercase hex digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `key=value` pairs as a query string, encoded.
fn query(pairs: &[(String, String)]) -> anyhow::Result<String> {
    serde_urlencoded::to_string(pairs).context("encoding the query")
}

/// `path` with the `key=value` pairs of `args` as its query, encoded.
fn with_query(path: &str, args: &[String]) -> anyhow::Result<String> {
    let pairs: Vec<(String, String)> = fields(args)?
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            (k, v)
        })
        .collect();
    Ok(if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query(&pairs)?)
    })
}

/// Parses `key=value` pairs into a JSON object.
pub fn fields(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| usage(format!("`{}` is not key=value", escape(arg))))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

impl Client {
    /// A client of the node at `endpoint`, sending `token` with every request.
    pub fn new(endpoint: &str, output: Output, token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Client {
            http: crate::token::client(token)?,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            output,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.endpoint);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow::Error::new(e).context(Failure {
                kind: FailureKind::Unreachable,
                message: format!(
                    "cannot reach the node at {} (is `flatstack serve` running?)",
                    self.endpoint
                ),
            })
        })?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            bail!(describe_error(status, &value));
        }
        Ok((status, value))
    }

    /// `POST /v1/sessions`: a session for `name`.
    pub async fn login(&self, name: &str, password: &str) -> anyhow::Result<Session> {
        let body = json!({"name": name, "password": password});
        let (_, reply) = self
            .send(reqwest::Method::POST, "/v1/sessions", Some(body))
            .await?;
        serde_json::from_value(reply["inventory"].clone())
            .context("the node's answer to a login is not a session")
    }

    /// `DELETE /v1/tokens/{uuid}`.
    pub async fn revoke(&self, uuid: &str) -> anyhow::Result<()> {
        self.send(reqwest::Method::DELETE, &format!("/v1/tokens/{uuid}"), None)
            .await?;
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(reqwest::Method::GET, path, None).await?.1)
    }

    /// Starts a job and waits for it (unless `--no-wait`), with its progress on a terminal.
    async fn job(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        wait: Wait,
    ) -> anyhow::Result<Outcome> {
        let (status, reply) = self.send(method, path, body).await?;
        if status != 202 {
            return Ok(Outcome::Done(reply));
        }
        let job = reply["job_uuid"]
            .as_str()
            .ok_or_else(|| anyhow!("202 without a job"))?
            .to_owned();
        if wait.no_wait {
            return Ok(Outcome::Started { job });
        }
        self.wait(&job, wait.timeout).await.map(Outcome::Done)
    }

    /// Waits for job `uuid` to finish: `{"inventory": <its result>}`, or its error.
    async fn wait(&self, uuid: &str, timeout: Option<Duration>) -> anyhow::Result<Value> {
        let location = format!("/v1/jobs/{uuid}");
        let progress = std::io::stderr().is_terminal();
        let frames = ['|', '/', '-', '\\'];
        let started = std::time::Instant::now();
        let clear = || {
            if progress {
                eprint!("\r\x1b[K");
            }
        };
        for tick in 0usize.. {
            let job = self.get(&location).await?;
            match job["state"].as_str() {
                Some("running") => {
                    let elapsed = started.elapsed();
                    if timeout.is_some_and(|t| elapsed >= t) {
                        clear();
                        return Err(Failure {
                            kind: FailureKind::TimedOut,
                            message: format!(
                                "job {uuid} is still running after {:.1} s; it goes on: \
                                 `flatstack jobs wait {uuid}` waits for it",
                                elapsed.as_secs_f64()
                            ),
                        }
                        .into());
                    }
                    if progress {
                        // The step of a long flow, else the operation.
                        let doing = job["step"]
                            .as_str()
                            .or(job["operation"].as_str())
                            .unwrap_or("working");
                        eprint!(
                            "\r\x1b[K{} {} (job {}, {:.1} s) ",
                            frames[tick % frames.len()],
                            escape(doing),
                            &uuid[..uuid.len().min(8)],
                            elapsed.as_secs_f64()
                        );
                        let _ = std::io::stderr().flush();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some("succeeded") => {
                    clear();
                    return Ok(json!({"inventory": job["result"]}));
                }
                _ => {
                    clear();
                    bail!(describe_error(
                        job["status"].as_u64().unwrap_or(500) as u16,
                        &job
                    ));
                }
            }
        }
        unreachable!("the loop only ends by returning")
    }

    /// Prints what a job-starting command ended with: the resource, or the job started.
    fn print_outcome(&self, outcome: Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Done(reply) => self.print_one(&reply["inventory"]),
            Outcome::Started { job } => {
                match self.output {
                    Output::Json | Output::Yaml => {
                        let started =
                            json!({"job_uuid": job, "location": format!("/v1/jobs/{job}")});
                        self.print_data(&started)?;
                    }
                    Output::Uuid => println!("{job}"),
                    Output::Table | Output::Wide => {
                        println!("job {job} started: `flatstack jobs wait {job}` waits for it")
                    }
                }
                Ok(())
            }
        }
    }

    /// The uuid of the `kind` resource `arg` names: `arg` itself if it is a uuid, else the
    /// one resource of that name (none or several: an error listing them).
    async fn resolve(&self, kind: &str, arg: &str) -> anyhow::Result<String> {
        if is_uuid(arg) || kind == "jobs" {
            return Ok(arg.to_owned());
        }
        let path = format!(
            "/v1/{kind}?{}",
            query(&[("name".to_owned(), arg.to_owned())])?
        );
        let list = self.get(&path).await?;
        let found: Vec<String> = list["inventories"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(&i["uuid"]))
            .collect();
        match found.as_slice() {
            [uuid] => Ok(uuid.clone()),
            [] => bail!("none of the {kind} has the uuid or name `{}`", escape(arg)),
            many => Err(usage(format!(
                "{} {kind} are named `{}`; say which by uuid: {}",
                many.len(),
                escape(arg),
                many.join(", ")
            ))),
        }
    }

    /// The node's OpenAPI document.
    async fn openapi(&self) -> anyhow::Result<Value> {
        self.get("/v1/openapi.json").await
    }

    /// A body from `-f` and `key=value` pairs, each value typed by the field's JSON type
    /// in the node's document (`name=2024` is a string; `cpu_num=2` a number). The
    /// document is read only when a value could be taken either way.
    async fn body(
        &self,
        kind: &str,
        target: cli_schema::Target<'_>,
        file: Option<Map<String, Value>>,
        args: &[String],
    ) -> anyhow::Result<Value> {
        let mut body = file.unwrap_or_default();
        let pairs = fields(args)?;
        let named = |key: &str, value: &Value| {
            (key.ends_with("_uuid") && value.as_str().is_some_and(|v| !is_uuid(v)))
                || (key.ends_with("_uuids")
                    && value.as_array().is_some_and(|items| {
                        items
                            .iter()
                            .any(|i| i.as_str().is_some_and(|v| !is_uuid(v)))
                    }))
        };
        let doc = if pairs.iter().any(|(k, v)| !v.is_string() || named(k, v)) {
            Some(self.openapi().await?)
        } else {
            None
        };
        let schema = doc.as_ref().and_then(|doc| cli_schema::kind(doc, kind));
        for (key, value) in pairs {
            let declared = schema.as_ref().and_then(|schema| {
                cli_schema::fields_of(schema, target)
                    .iter()
                    .find(|f| f.name == key)
                    .map(|f| f.json_type.as_str())
            });
            let mut value = match (declared, &value) {
                (Some("string"), v) if !v.is_string() => {
                    // As typed: the JSON text of a number is the digits given.
                    let raw = args
                        .iter()
                        .find_map(|a| a.strip_prefix(&format!("{key}=")))
                        .unwrap_or_default();
                    Value::String(raw.to_owned())
                }
                _ => value,
            };
            // A reference by name (`image_uuid=cirros`): the uuid of the one so named.
            let referred = doc
                .as_ref()
                .filter(|_| named(&key, &value))
                .and_then(|doc| cli_schema::referred_kind(doc, &key));
            if let Some(referred) = referred {
                value = match value {
                    Value::String(name) => Value::String(self.resolve(&referred, &name).await?),
                    Value::Array(items) => {
                        let mut uuids = Vec::with_capacity(items.len());
                        for item in items {
                            uuids.push(match item {
                                Value::String(name) => {
                                    Value::String(self.resolve(&referred, &name).await?)
                                }
                                other => other,
                            });
                        }
                        Value::Array(uuids)
                    }
                    other => other,
                };
            }
            body.insert(key, value);
        }
        Ok(Value::Object(body))
    }

    /// `flatstack <kind> --help`: the verbs, then what the node says of the kind.
    async fn explain(&self, kind: &str) -> anyhow::Result<()> {
        println!("{}", USAGE.replace("<kind>", kind));
        let doc = match self.openapi().await {
            Ok(doc) => doc,
            Err(e) => {
                println!("\n(its fields, filters and actions come from the node: {e})");
                return Ok(());
            }
        };
        let Some(schema) = cli_schema::kind(&doc, kind) else {
            return Err(unserved(&doc, kind));
        };
        let section = |title: &str, fields: &[cli_schema::Field]| {
            if !fields.is_empty() {
                println!("\n{title} (* required):");
                for field in fields {
                    println!("  {}", escape(&cli_schema::describe(field)));
                }
            }
        };
        section("create fields", &schema.create);
        section("update fields", &schema.update);
        if !schema.filters.is_empty() {
            println!(
                "\nlist filters: {} (and limit, cursor, sort)",
                escape(&schema.filters.join(", "))
            );
        }
        if !schema.actions.is_empty() {
            println!("\nactions (flatstack {kind} action <uuid or name> <action> [key=value...]):");
            for (action, fields) in &schema.actions {
                let fields: Vec<String> = fields.iter().map(cli_schema::describe).collect();
                if fields.is_empty() {
                    println!("  {}", escape(action));
                } else {
                    println!("  {}:", escape(action));
                    for field in fields {
                        println!("    {}", escape(&field));
                    }
                }
            }
        }
        for (child, fields) in &schema.children {
            section(
                &format!("child collection {child} (flatstack {kind} <uuid> {child} list|create), create fields"),
                fields,
            );
            if fields.is_empty() {
                println!(
                    "\nchild collection {} (flatstack {kind} <uuid> {child} list)",
                    escape(child)
                );
            }
        }
        Ok(())
    }

    /// `flatstack <kind> ...`; a failure on a kind the node does not serve says so, with
    /// the closest one it does.
    pub async fn run(&self, args: &[String]) -> anyhow::Result<()> {
        let Err(error) = self.command(args).await else {
            return Ok(());
        };
        if let Some(kind) = args.first().filter(|k| *k != "jobs") {
            if let Ok(doc) = self.openapi().await {
                if cli_schema::kind(&doc, kind).is_none() {
                    return Err(unserved(&doc, kind));
                }
            }
        }
        Err(error)
    }

    async fn command(&self, args: &[String]) -> anyhow::Result<()> {
        let mut args = args.to_vec();
        let wait = Wait::take(&mut args)?;
        let file = take_file(&mut args)?;
        let args = args.as_slice();
        // `flatstack <kind>`, `flatstack <kind> --help`: what can be done with the kind.
        if let [kind] | [kind, _] = args {
            if args.len() == 1 || matches!(args[1].as_str(), "--help" | "-h" | "help") {
                return self.explain(kind).await;
            }
        }
        let [kind, verb, rest @ ..] = args else {
            return Err(usage(USAGE));
        };
        let base = format!("/v1/{kind}");
        let one = |rest: &[String]| -> anyhow::Result<String> {
            rest.first()
                .cloned()
                .ok_or_else(|| usage(format!("`{kind} {verb}` needs a uuid or a name\n{USAGE}")))
        };
        // `show` and `delete` take one uuid: more is a mistake, not something to ignore.
        let only = |rest: &[String]| -> anyhow::Result<String> {
            match rest {
                [_, extra @ ..] if !extra.is_empty() => Err(usage(format!(
                    "`{kind} {verb}` takes one uuid; unexpected: {}",
                    escape(&extra.join(" "))
                ))),
                _ => one(rest),
            }
        };
        if kind == "jobs" {
            match verb.as_str() {
                "show" => {
                    let job = self.get(&format!("/v1/jobs/{}", only(rest)?)).await?;
                    return self.print_one(&job);
                }
                "wait" => {
                    let done = self.wait(&only(rest)?, wait.timeout).await?;
                    return self.print_one(&done["inventory"]);
                }
                "list" => {}
                other => {
                    return Err(usage(format!(
                        "jobs are listed, shown and waited for, not `{}`\n{USAGE}",
                        escape(other)
                    )))
                }
            }
        }
        match verb.as_str() {
            "list" => {
                let list = self.get(&with_query(&base, rest)?).await?;
                let schema = self.table_schema(kind, None).await;
                self.print_list(&list, schema.as_ref())
            }
            "create" => {
                let outcome = self
                    .job(
                        reqwest::Method::POST,
                        &base,
                        Some(
                            self.body(kind, cli_schema::Target::Create, file, rest)
                                .await?,
                        ),
                        wait,
                    )
                    .await?;
                self.print_outcome(outcome)
            }
            "show" => {
                let uuid = self.resolve(kind, &only(rest)?).await?;
                let reply = self.get(&format!("{base}/{uuid}")).await?;
                let schema = self.table_schema(kind, None).await;
                self.print_fields(&reply["inventory"], schema.as_ref())
            }
            "update" => {
                let uuid = self.resolve(kind, &one(rest)?).await?;
                let outcome = self
                    .job(
                        reqwest::Method::PATCH,
                        &format!("{base}/{uuid}"),
                        Some(
                            self.body(kind, cli_schema::Target::Update, file, &rest[1..])
                                .await?,
                        ),
                        wait,
                    )
                    .await?;
                self.print_outcome(outcome)
            }
            "delete" => {
                let uuid = self.resolve(kind, &only(rest)?).await?;
                let outcome = self
                    .job(
                        reqwest::Method::DELETE,
                        &format!("{base}/{uuid}"),
                        None,
                        wait,
                    )
                    .await?;
                if let Outcome::Started { .. } = outcome {
                    return self.print_outcome(outcome);
                }
                match self.output {
                    Output::Json | Output::Yaml => {
                        self.print_data(&json!({"deleted": uuid}))?;
                    }
                    Output::Uuid => println!("{uuid}"),
                    Output::Table | Output::Wide => println!("deleted {uuid}"),
                }
                Ok(())
            }
            "action" => {
                let uuid = self.resolve(kind, &one(rest)?).await?;
                let action = rest
                    .get(1)
                    .ok_or_else(|| usage(format!("`{kind} action {uuid}` needs an action name")))?;
                let mut body = self
                    .body(kind, cli_schema::Target::Action(action), file, &rest[2..])
                    .await?;
                body["action"] = json!(action);
                let outcome = self
                    .job(
                        reqwest::Method::POST,
                        &format!("{base}/{uuid}/actions"),
                        Some(body),
                        wait,
                    )
                    .await?;
                self.print_outcome(outcome)
            }
            "types" => {
                let reply = self.get(&format!("{base}/types")).await?;
                self.print_list(&json!({"inventories": reply["types"]}), None)
            }
            uuid => {
                // `<kind> <uuid> <child> list|create ...`
                let (Some(child), Some(child_verb)) = (rest.first(), rest.get(1)) else {
                    return Err(usage(format!(
                        "unknown verb `{}`{}\n{USAGE}",
                        escape(uuid),
                        did_you_mean(uuid, VERBS.iter().copied())
                    )));
                };
                let path = format!("{base}/{uuid}/{child}");
                match child_verb.as_str() {
                    "list" => {
                        let list = self.get(&with_query(&path, &rest[2..])?).await?;
                        let schema = self.table_schema(kind, Some(child)).await;
                        self.print_list(&list, schema.as_ref())
                    }
                    "create" => {
                        let outcome = self
                            .job(
                                reqwest::Method::POST,
                                &path,
                                Some(
                                    self.body(
                                        kind,
                                        cli_schema::Target::Child(child),
                                        file,
                                        &rest[2..],
                                    )
                                    .await?,
                                ),
                                wait,
                            )
                            .await?;
                        self.print_outcome(outcome)
                    }
                    other => Err(usage(format!(
                        "unknown verb `{}`{}\n{USAGE}",
                        escape(other),
                        did_you_mean(other, VERBS.iter().copied())
                    ))),
                }
            }
        }
    }

    /// `flatstack plugins`, `flatstack extension-points`.
    pub async fn introspect(&self, what: &str) -> anyhow::Result<()> {
        let reply = self.get(&format!("/v1/{what}")).await?;
        if self.print_data(&reply)? {
            return Ok(());
        }
        match what {
            "plugins" => {
                let rows: Vec<Vec<String>> = reply["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| vec![text(&p["name"]), text(&p["description"])])
                    .collect();
                print_table(&["PLUGIN", "DESCRIPTION"], &rows);
            }
            _ => {
                let rows: Vec<Vec<String>> = reply["extension_points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let implementors: Vec<String> = p["implementors"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|i| text(&i["plugin"]))
                            .collect();
                        vec![
                            text(&p["name"]),
                            text(&p["semantics"]),
                            text(&p["owner"]),
                            implementors.join(", "),
                        ]
                    })
                    .collect();
                print_table(
                    &["POINT", "SEMANTICS", "OWNER", "IMPLEMENTORS (in order)"],
                    &rows,
                );
            }
        }
        Ok(())
    }

    /// What the node says of the table of `kind` (or of its `child` collection), when a
    /// table is printed (else, or if it cannot be read, `None`: the table shows what it
    /// finds).
    async fn table_schema(
        &self,
        kind: &str,
        child: Option<&str>,
    ) -> Option<cli_schema::KindSchema> {
        if !matches!(self.output, Output::Table | Output::Wide) {
            return None;
        }
        let doc = self.openapi().await.ok()?;
        match child {
            None => cli_schema::kind(&doc, kind),
            Some(child) => cli_schema::child(&doc, kind, child),
        }
    }

    /// Prints `value` as it is if the output is a data format (`json`, `yaml`): whether it
    /// did.
    fn print_data(&self, value: &Value) -> anyhow::Result<bool> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Yaml => print!("{}", serde_norway::to_string(value)?),
            Output::Table | Output::Wide | Output::Uuid => return Ok(false),
        }
        Ok(true)
    }

    fn print_one(&self, inventory: &Value) -> anyhow::Result<()> {
        self.print_fields(inventory, None)
    }

    fn print_fields(
        &self,
        inventory: &Value,
        schema: Option<&cli_schema::KindSchema>,
    ) -> anyhow::Result<()> {
        if self.output == Output::Uuid {
            println!("{}", text(&inventory["uuid"]));
            return Ok(());
        }
        if self.print_data(inventory)? {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = inventory
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| vec![escape(k).into_owned(), shown(k, v, schema)])
            .collect();
        print_table(&["FIELD", "VALUE"], &rows);
        Ok(())
    }

    fn print_list(
        &self,
        list: &Value,
        schema: Option<&cli_schema::KindSchema>,
    ) -> anyhow::Result<()> {
        if self.output == Output::Uuid {
            for item in list["inventories"].as_array().into_iter().flatten() {
                println!("{}", text(&item["uuid"]));
            }
            return Ok(());
        }
        if self.print_data(list)? {
            return Ok(());
        }
        let items: Vec<&Map<String, Value>> = list["inventories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        // The kind's declared columns, after the uuid.
        if let Some(declared) = schema
            .map(|s| &s.columns)
            .filter(|c| !c.is_empty() && self.output == Output::Table)
        {
            let mut headers = vec!["UUID".to_owned()];
            headers.extend(declared.iter().map(|c| c.header.clone()));
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    let mut row = vec![text(item.get("uuid").unwrap_or(&Value::Null))];
                    row.extend(declared.iter().map(|c| {
                        let value = item.get(&c.field).unwrap_or(&Value::Null);
                        match &c.each {
                            Some(each) => value
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|v| text(&v[each.as_str()]))
                                .collect::<Vec<_>>()
                                .join(", "),
                            None => shown(&c.field, value, schema),
                        }
                    }));
                    row
                })
                .collect();
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            print_table(&headers, &rows);
            return Ok(());
        }
        // uuid and name first, then the other short scalar fields of the first item (all
        // of them with `wide`).
        let limit = if self.output == Output::Wide {
            usize::MAX
        } else {
            7
        };
        let mut columns: Vec<String> = ["uuid", "name"]
            .iter()
            .filter(|c| items.first().is_some_and(|i| i.contains_key(**c)))
            .map(|c| (*c).to_owned())
            .collect();
        if let Some(first) = items.first() {
            for (k, v) in first.iter() {
                if columns.len() >= limit {
                    break;
                }
                let detail = matches!(k.as_str(), "description" | "created_at" | "updated_at");
                if !columns.contains(k)
                    && (!detail || self.output == Output::Wide)
                    && !v.is_object()
                {
                    columns.push(k.clone());
                }
            }
        }
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                columns
                    .iter()
                    .map(|c| shown(c, i.get(c).unwrap_or(&Value::Null), schema))
                    .collect()
            })
            .collect();
        let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        print_table(&headers, &rows);
        Ok(())
    }
}

/// The refusal of a kind `doc` does not serve, naming the closest one it does.
fn unserved(doc: &Value, kind: &str) -> anyhow::Error {
    let kinds = cli_schema::kinds(doc);
    usage(format!(
        "the node serves no resource kind `{}`{}",
        escape(kind),
        did_you_mean(kind, kinds.iter().map(String::as_str))
    ))
}

/// ` (did you mean `x`?)` for the candidate closest to `word`, if one is one or two edits
/// from it; else nothing.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|candidate| (strsim::levenshtein(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| format!(" (did you mean `{}`?)", escape(candidate)))
        .unwrap_or_default()
}

/// A field's value as a table shows it: a size in bytes readable (`10.0 GiB`) where the
/// kind says it is one.
fn shown(field: &str, value: &Value, schema: Option<&cli_schema::KindSchema>) -> String {
    match (value.as_u64(), schema) {
        (Some(bytes), Some(schema)) if schema.bytes.iter().any(|b| b == field) => {
            cli_schema::human_bytes(bytes)
        }
        _ => text(value),
    }
}

/// A value as a table shows it; text from the node is escaped (no control, bidi or
/// zero-width character reaches the terminal).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s).into_owned(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| escape(h).chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let headers: Vec<String> = headers.iter().map(|h| escape(h).into_owned()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn describe_error(status: u16, body: &Value) -> String {
    let error = &body["error"];
    match error["message"].as_str() {
        Some(message) => {
            let mut out = format!(
                "error {status} ({}): {}",
                escape(error["code"].as_str().unwrap_or("?")),
                escape(message)
            );
            if let Some(field) = error["details"]["field"].as_str().filter(|f| !f.is_empty()) {
                out.push_str(&format!(" [field: {}]", escape(field)));
            }
            out
        }
        None => format!("error {status}: {}", escape(&body.to_string())),
    }
}
