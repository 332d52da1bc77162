//! The command-line client: talks to a node over HTTP, like any other client.
//!
//! `flatstack <kind> <verb> [args]`, where `<kind>` is any API path the node serves
//! (`zones`, `hosts`, `l3-networks`, ...): the client knows no resource kind either.
//! Fields are `key=value`; a value that parses as JSON is sent as JSON (`cpu_num=2`,
//! `uuids=["a","b"]`), anything else as a string.

use anyhow::{anyhow, bail, Context};
use flatstack_api::escape;
use flatstack_header::identity::Session;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON.
    Json,
    /// Only uuids, one per line: for scripts (`ZONE=$(flatstack zones create ... --output uuid)`).
    Uuid,
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

impl Wait {
    /// Takes `--no-wait` and `--timeout <seconds>` (or `--timeout=<seconds>`) out of `args`.
    fn take(args: &mut Vec<String>) -> anyhow::Result<Wait> {
        let mut wait = Wait::default();
        let mut i = 0;
        while i < args.len() {
            let (flag, inline) = match args[i].split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (args[i].clone(), None),
            };
            match flag.as_str() {
                "--no-wait" => {
                    args.remove(i);
                    wait.no_wait = true;
                }
                "--timeout" => {
                    let value = match inline {
                        Some(v) => v,
                        None if i + 1 < args.len() => args.remove(i + 1),
                        None => bail!("--timeout needs a number of seconds"),
                    };
                    args.remove(i);
                    let seconds: f64 = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            anyhow!("--timeout: `{}` is not a number of seconds", escape(&value))
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

/// Parses `key=value` pairs into a JSON object.
pub fn fields(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| anyhow!("`{arg}` is not key=value"))?;
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
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the node at {} (is `flatstack serve` running?)",
                self.endpoint
            )
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
                        bail!(
                            "job {uuid} is still running after {:.1} s; it goes on: \
                             `flatstack jobs wait {uuid}` waits for it",
                            elapsed.as_secs_f64()
                        );
                    }
                    if progress {
                        eprint!(
                            "\r{} {} (job {}, {:.1} s) ",
                            frames[tick % frames.len()],
                            escape(job["operation"].as_str().unwrap_or("working")),
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
                    Output::Json => println!(
                        "{}",
                        json!({"job_uuid": job, "location": format!("/v1/jobs/{job}")})
                    ),
                    Output::Uuid => println!("{job}"),
                    Output::Table => {
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
            many => bail!(
                "{} {kind} are named `{}`; say which by uuid: {}",
                many.len(),
                escape(arg),
                many.join(", ")
            ),
        }
    }

    pub async fn run(&self, args: &[String]) -> anyhow::Result<()> {
        let mut args = args.to_vec();
        let wait = Wait::take(&mut args)?;
        let args = args.as_slice();
        // `flatstack <kind>`, `flatstack <kind> --help`: what can be done with the kind.
        if let [kind] | [kind, _] = args {
            if args.len() == 1 || matches!(args[1].as_str(), "--help" | "-h" | "help") {
                println!("{}", USAGE.replace("<kind>", kind));
                return Ok(());
            }
        }
        let [kind, verb, rest @ ..] = args else {
            bail!("{USAGE}");
        };
        let base = format!("/v1/{kind}");
        let one = |rest: &[String]| -> anyhow::Result<String> {
            rest.first()
                .cloned()
                .ok_or_else(|| anyhow!("`{kind} {verb}` needs a uuid or a name\n{USAGE}"))
        };
        // `show` and `delete` take one uuid: more is a mistake, not something to ignore.
        let only = |rest: &[String]| -> anyhow::Result<String> {
            match rest {
                [_, extra @ ..] if !extra.is_empty() => bail!(
                    "`{kind} {verb}` takes one uuid; unexpected: {}",
                    escape(&extra.join(" "))
                ),
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
                other => bail!(
                    "jobs are listed, shown and waited for, not `{}`\n{USAGE}",
                    escape(other)
                ),
            }
        }
        match verb.as_str() {
            "list" => {
                let pairs: Vec<(String, String)> = fields(rest)?
                    .into_iter()
                    .map(|(k, v)| {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        (k, v)
                    })
                    .collect();
                let path = if pairs.is_empty() {
                    base
                } else {
                    format!("{base}?{}", query(&pairs)?)
                };
                self.print_list(&self.get(&path).await?)
            }
            "create" => {
                let outcome = self
                    .job(
                        reqwest::Method::POST,
                        &base,
                        Some(Value::Object(fields(rest)?)),
                        wait,
                    )
                    .await?;
                self.print_outcome(outcome)
            }
            "show" => {
                let uuid = self.resolve(kind, &only(rest)?).await?;
                let reply = self.get(&format!("{base}/{uuid}")).await?;
                self.print_one(&reply["inventory"])
            }
            "update" => {
                let uuid = self.resolve(kind, &one(rest)?).await?;
                let outcome = self
                    .job(
                        reqwest::Method::PATCH,
                        &format!("{base}/{uuid}"),
                        Some(Value::Object(fields(&rest[1..])?)),
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
                    Output::Json => println!("{}", json!({"deleted": uuid})),
                    Output::Uuid => println!("{uuid}"),
                    Output::Table => println!("deleted {uuid}"),
                }
                Ok(())
            }
            "action" => {
                let uuid = self.resolve(kind, &one(rest)?).await?;
                let action = rest
                    .get(1)
                    .ok_or_else(|| anyhow!("`{kind} action {uuid}` needs an action name"))?;
                let mut body = fields(&rest[2..])?;
                body.insert("action".into(), json!(action));
                let outcome = self
                    .job(
                        reqwest::Method::POST,
                        &format!("{base}/{uuid}/actions"),
                        Some(Value::Object(body)),
                        wait,
                    )
                    .await?;
                self.print_outcome(outcome)
            }
            "types" => {
                let reply = self.get(&format!("{base}/types")).await?;
                self.print_list(&json!({"inventories": reply["types"]}))
            }
            uuid => {
                // `<kind> <uuid> <child> list|create ...`
                let (Some(child), Some(child_verb)) = (rest.first(), rest.get(1)) else {
                    bail!(
                        "unknown verb `{}`{}\n{USAGE}",
                        escape(uuid),
                        did_you_mean(uuid)
                    );
                };
                let path = format!("{base}/{uuid}/{child}");
                match child_verb.as_str() {
                    "list" => self.print_list(&self.get(&path).await?),
                    "create" => {
                        let outcome = self
                            .job(
                                reqwest::Method::POST,
                                &path,
                                Some(Value::Object(fields(&rest[2..])?)),
                                wait,
                            )
                            .await?;
                        self.print_outcome(outcome)
                    }
                    other => bail!(
                        "unknown verb `{}`{}\n{USAGE}",
                        escape(other),
                        did_you_mean(other)
                    ),
                }
            }
        }
    }

    /// `flatstack plugins`, `flatstack extension-points`.
    pub async fn introspect(&self, what: &str) -> anyhow::Result<()> {
        let reply = self.get(&format!("/v1/{what}")).await?;
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&reply)?);
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

    fn print_one(&self, inventory: &Value) -> anyhow::Result<()> {
        if self.output == Output::Uuid {
            println!("{}", text(&inventory["uuid"]));
            return Ok(());
        }
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(inventory)?);
            return Ok(());
        }
        let rows: Vec<Vec<String>> = inventory
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| vec![escape(k).into_owned(), text(v)])
            .collect();
        print_table(&["FIELD", "VALUE"], &rows);
        Ok(())
    }

    fn print_list(&self, list: &Value) -> anyhow::Result<()> {
        if self.output == Output::Uuid {
            for item in list["inventories"].as_array().into_iter().flatten() {
                println!("{}", text(&item["uuid"]));
            }
            return Ok(());
        }
        if self.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(list)?);
            return Ok(());
        }
        let items: Vec<&Map<String, Value>> = list["inventories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        // uuid and name first, then the other short scalar fields of the first item.
        let mut columns: Vec<String> = ["uuid", "name"]
            .iter()
            .filter(|c| items.first().is_some_and(|i| i.contains_key(**c)))
            .map(|c| (*c).to_owned())
            .collect();
        if let Some(first) = items.first() {
            for (k, v) in first.iter() {
                if columns.len() >= 7 {
                    break;
                }
                if !columns.contains(k)
                    && !matches!(k.as_str(), "description" | "created_at" | "updated_at")
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
                    .map(|c| text(&i.get(c).cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .collect();
        let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        print_table(&headers, &rows);
        Ok(())
    }
}

/// ` (did you mean `list`?)` for a word one or two edits from a known verb, else nothing.
fn did_you_mean(word: &str) -> String {
    VERBS
        .iter()
        .map(|verb| (strsim::levenshtein(word, verb), verb))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, verb)| format!(" (did you mean `{verb}`?)"))
        .unwrap_or_default()
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
