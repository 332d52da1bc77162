//! The `flatstack` command line: the node, the client, `inspect`, `openapi` and `bench`,
//! over the plugins of a [`Distribution`].

use crate::node::{self, NodeOptions};
use crate::{bench, bench_amqp, bench_auth, bench_recovery, cli, profile, traces, Distribution};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use flatstack_kernel::Kernel;
use flatstack_store::EventRetention;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "flatstack", version, about = "A pluggable IaaS control plane")]
struct Cli {
    /// The node the client commands talk to [default: the profile's, else
    /// http://127.0.0.1:8080].
    #[arg(long, global = true, env = "FLATSTACK_ENDPOINT")]
    endpoint: Option<String>,
    /// The API token the client commands send; if absent, the profile's, else the admin
    /// token of a node run beside them (`$FLATSTACK_DATA_DIR/admin.token`, or
    /// `flatstack-data/admin.token`).
    #[arg(long, global = true, env = "FLATSTACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The profile (`flatstack login`) whose node and token the client commands use
    /// [default: the profiles file's `current`].
    #[arg(long, global = true, env = "FLATSTACK_PROFILE")]
    profile: Option<String>,
    /// How the client commands print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: cli::Output,
    /// How logs are written to standard error: `text` (coloured only on a terminal) or
    /// `json` (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FLATSTACK_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant (the node's options) is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the management node (HTTP API on --listen, data in --data-dir).
    Serve {
        /// Where the node keeps its SQLite database and the admin token it writes at its
        /// first start; created then.
        #[arg(long, env = "FLATSTACK_DATA_DIR", default_value = "flatstack-data")]
        data_dir: PathBuf,
        /// Use this database instead (`postgres://user@host/db`); SQLite in --data-dir if absent.
        #[arg(long, env = "FLATSTACK_DATABASE_URL")]
        database_url: Option<String>,
        /// Address of the HTTP API (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Runtime manifest (TOML): enabled plugins, configuration, extension order.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Create a small simulated data centre through the API once the node is up.
        #[arg(long)]
        demo: bool,
        /// Also run these opt-in plugins, which are off unless named (e.g.
        /// `fault-injection`, for testing rollbacks: never on a production node).
        #[arg(long, env = "FLATSTACK_ENABLE", value_delimiter = ',')]
        enable: Vec<String>,
        /// Host names the API answers to, besides IP addresses and `localhost` (requests
        /// naming any other `Host` are refused, against DNS rebinding).
        #[arg(
            long = "allowed-host",
            env = "FLATSTACK_ALLOWED_HOSTS",
            value_delimiter = ','
        )]
        allowed_hosts: Vec<String>,
        /// Web origins whose pages may call the API from a browser (CORS), e.g.
        /// `https://console.example.com`; none by default, so no web page can read it.
        #[arg(
            long = "cors-origin",
            env = "FLATSTACK_CORS_ORIGINS",
            value_delimiter = ','
        )]
        cors_origins: Vec<String>,
        /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, env = "FLATSTACK_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS certificate's private key (PEM); needs --tls-cert.
        #[arg(long, env = "FLATSTACK_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// On SIGTERM or Ctrl-C, how many seconds the operations in flight may take to
        /// finish before the node stops anyway.
        #[arg(long, env = "FLATSTACK_SHUTDOWN_TIMEOUT", default_value_t = 30)]
        shutdown_timeout: u64,
        /// Publish every canonical event to RabbitMQ at this URL (`amqp://user:pw@host:5672/%2f`),
        /// on the topic exchange `flatstack.events` (docs/integration.md). Without it,
        /// events are served over HTTP only (`/v1/events`).
        #[arg(long, env = "FLATSTACK_AMQP_URL")]
        amqp_url: Option<String>,
        /// Events older than this many seconds are pruned from the outbox (0: no limit).
        #[arg(long, env = "FLATSTACK_EVENTS_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
        events_retention_secs: u64,
        /// The outbox keeps at most this many of the newest events (0: no limit).
        #[arg(
            long,
            env = "FLATSTACK_EVENTS_RETENTION_COUNT",
            default_value_t = 1_000_000
        )]
        events_retention_count: u64,
        /// Seconds between periodic reconciliations (hosts checked, VMs compared with what
        /// their hosts run, VMs left in transient states recovered).
        #[arg(long, env = "FLATSTACK_RECONCILE_INTERVAL", default_value_t = 60)]
        reconcile_interval: u64,
        /// Seconds finished jobs are kept (`GET /v1/jobs`), default 7 days.
        #[arg(long, env = "FLATSTACK_JOBS_RETENTION", default_value_t = 604_800)]
        jobs_retention: u64,
        /// API connections served at once; more wait to be accepted. By default, as many
        /// as the open-files limit allows, less 256 for the rest of the node.
        #[arg(long, env = "FLATSTACK_MAX_CONNECTIONS")]
        max_connections: Option<usize>,
        /// Seconds a request's head may take to arrive (idle keep-alive time included);
        /// the connection is closed after that.
        #[arg(long, env = "FLATSTACK_HEADER_TIMEOUT", default_value_t = 30)]
        header_timeout: u64,
        /// Seconds a request's body may take to arrive (`408` after that).
        #[arg(long, env = "FLATSTACK_BODY_TIMEOUT", default_value_t = 30)]
        body_timeout: u64,
        /// Export traces to this OpenTelemetry collector, over OTLP/HTTP: its base URL
        /// (`http://127.0.0.1:4318`; the spans go to `/v1/traces`). None by default.
        #[arg(long, env = "FLATSTACK_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
    },
    /// Log in to a node (`--endpoint`) with a user's name and password; its session token
    /// is kept in a profile (`--profile`, default `default`), which becomes the current one.
    Login {
        /// The user's name.
        #[arg(long)]
        name: String,
        /// Read the password from standard input instead of prompting for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke the profile's session token and forget the profile.
    Logout,
    /// List the plugins of a running node.
    Plugins,
    /// List the extension points of a running node, with their ordered implementors.
    ExtensionPoints,
    /// List the driver types of a resource kind, e.g. `flatstack types hosts`.
    Types { kind: String },
    /// Resources: `flatstack <kind> create|list|show|update|delete|action ...` (see `flatstack zones`).
    #[command(external_subcommand)]
    Resource(Vec<String>),
    /// Assemble the distribution and print its plugins, extension points and driver types.
    Inspect {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a completion script for a shell: `source <(flatstack completion bash)`, or
    /// save it where the shell loads completions from.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI document of the distribution's API.
    Openapi {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Benchmarks against a node started in process on a temporary database (SQLite; for
    /// `create-vms`, PostgreSQL with `--database-url`).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Create VMs through the HTTP API on Simulator hosts; report VMs/s, latency and the
    /// raw cost of the transactions they committed, replayed on a copy of the database.
    CreateVms {
        /// How many VMs to create.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// How many creates are in flight at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// How many Simulator hosts share the VMs.
        #[arg(long, default_value_t = 10)]
        hosts: u32,
        /// Where the temporary data directory is made (the system's temporary directory
        /// if absent); it is removed afterwards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Run on PostgreSQL: a server's URL (`postgres://user@host:port/db`); the node gets
        /// a database of its own there, created through `db` and dropped afterwards.
        #[arg(long)]
        database_url: Option<String>,
        /// Relay the events to RabbitMQ while creating (`amqp://...`), as `serve --amqp-url`.
        #[arg(long)]
        amqp_url: Option<String>,
    },
    /// Relay throughput and the API over AMQP, each beside the same work done raw with the
    /// same client library on the same broker.
    Amqp {
        /// The broker (`amqp://user:password@host:5672/%2f`).
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        /// How many events the relay publishes (and the raw publisher).
        #[arg(long, default_value_t = 20000)]
        events: u32,
        /// How many API requests (and raw round trips) are timed, one after another.
        #[arg(long, default_value_t = 2000)]
        requests: u32,
    },
    /// What authentication costs a request: the same request through the router with and
    /// without the token check, in process.
    Auth {
        /// How many requests of each kind are timed, one after another.
        #[arg(long, default_value_t = 20000)]
        requests: u32,
    },
    /// Crash a node with VM creates in flight, start a new one on the same data, and
    /// report how long its recovery takes (and that nothing is left held).
    Recovery {
        /// How many creates are in flight at the crash.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// How many Simulator hosts share the VMs.
        #[arg(long, default_value_t = 10)]
        hosts: u32,
        /// Where the temporary data directory is made (the system's temporary directory
        /// if absent); it is removed afterwards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// Runs the program `flatstack` over `distribution`'s plugins, with the process's
/// command line; what it prints on failure, and its exit code, are a command line's.
pub(crate) fn main(distribution: &Distribution) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(distribution)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the chain of causes on one line, without a backtrace.
            eprintln!("{error:#}");
            std::process::ExitCode::from(cli::exit_code(&error))
        }
    }
}

/// Takes `--output X`/`--endpoint X` out of arguments clap passed through untouched
/// (everything after a resource kind).
fn take_global_flags(
    args: &mut Vec<String>,
    endpoint: &mut Option<String>,
    (token, profile): (&mut Option<String>, &mut Option<String>),
    output: &mut cli::Output,
) -> anyhow::Result<()> {
    let mut i = 0;
    while i < args.len() {
        let flag = cli::split_flag(&args[i]).0.to_owned();
        if !["--output", "-o", "--endpoint", "--token", "--profile"].contains(&flag.as_str()) {
            i += 1;
            continue;
        }
        let value = cli::take_flag_value(args, i, "a value")?;
        if flag == "--endpoint" {
            *endpoint = Some(value);
        } else if flag == "--token" {
            *token = Some(value);
        } else if flag == "--profile" {
            *profile = Some(value);
        } else {
            *output = <cli::Output as clap::ValueEnum>::from_str(&value, true)
                .map_err(|e| cli::usage(format!("--output: {e}")))?;
        }
    }
    Ok(())
}

async fn run(distribution: &Distribution) -> anyhow::Result<()> {
    let cli = parse(distribution);
    if !matches!(cli.command, Command::Serve { .. } | Command::Bench(_)) {
        quiet_on_closed_pipes();
    }
    // A benchmark's figures are its output: its node logs only warnings unless asked.
    let level = if matches!(cli.command, Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    let traces = match &cli.command {
        Command::Serve {
            otlp_endpoint: Some(endpoint),
            ..
        } => Some(traces::Traces::start(
            endpoint,
            tokio::runtime::Handle::current(),
        )?),
        _ => None,
    };
    init_logs(cli.log_format, level, traces.as_ref());
    let outcome = command(distribution, cli).await;
    // Flushes the last spans (the exporter's requests run on this runtime, so not on
    // one of its threads).
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || drop(traces)).await;
    }
    outcome
}

/// The command line; `flatstack --help` (or `help`) also lists the resource kinds of this
/// distribution, the client's `flatstack <kind> ...` commands.
fn parse(distribution: &Distribution) -> Cli {
    let mut command = Cli::command();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.as_slice(), [a] if ["--help", "-h", "help"].contains(&a.as_str())) {
        if let Some(kinds) = kinds_help(distribution) {
            command = command.after_help(kinds.clone()).after_long_help(kinds);
        }
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The resource kinds this distribution's plugins serve, for the help (assembled, not
/// started: no store, nothing run).
fn kinds_help(distribution: &Distribution) -> Option<String> {
    let kernel = node::assemble(
        distribution,
        flatstack_kernel::Manifest::default(),
        None,
        None,
    )
    .ok()?;
    let mut kinds: Vec<&str> = kernel
        .registered::<flatstack_header::ApiResource>()
        .into_iter()
        .map(|(_, r)| r.path)
        .collect();
    kinds.sort_unstable();
    let mut lines: Vec<String> = Vec::new();
    for kind in kinds {
        match lines.last_mut() {
            Some(line) if line.len() + kind.len() <= 76 => {
                line.push_str(", ");
                line.push_str(kind);
            }
            _ => lines.push(kind.to_owned()),
        }
    }
    Some(format!(
        "Resource kinds (the client: flatstack <kind> list|create|show|update|delete|action ...;\n\
         `flatstack <kind> --help` shows what the node says of one):\n  {}",
        lines.join(",\n  ")
    ))
}

/// Runs the command `cli` names.
async fn command(distribution: &Distribution, mut cli: Cli) -> anyhow::Result<()> {
    if let Command::Resource(args) = &mut cli.command {
        let named = (&mut cli.token, &mut cli.profile);
        take_global_flags(args, &mut cli.endpoint, named, &mut cli.output)?;
    }
    // What is said on the command line (or in the environment) first, then the profile,
    // then the node beside the client.
    let profiles = match &cli.command {
        Command::Serve { .. }
        | Command::Bench(_)
        | Command::Openapi { .. }
        | Command::Completion { .. } => profile::Profiles::default(),
        _ => profile::Profiles::load()?,
    };
    let chosen = match &cli.command {
        Command::Login { .. } => None,
        _ => profiles.chosen(cli.profile.as_deref())?.cloned(),
    };
    let endpoint = cli
        .endpoint
        .clone()
        .or_else(|| chosen.as_ref().map(|p| p.endpoint.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let token = cli
        .token
        .clone()
        .or_else(|| chosen.as_ref().map(|p| p.token.clone()))
        .or_else(|| crate::token::admin_token(&crate::token::default_data_dir()));
    let client = cli::Client::new(&endpoint, cli.output, token.as_deref())?;
    match cli.command {
        Command::Serve {
            data_dir,
            database_url,
            listen,
            config,
            demo,
            enable,
            allowed_hosts,
            cors_origins,
            tls_cert,
            tls_key,
            shutdown_timeout,
            amqp_url,
            events_retention_secs,
            events_retention_count,
            reconcile_interval,
            jobs_retention,
            max_connections,
            header_timeout,
            body_timeout,
            otlp_endpoint: _,
        } => {
            node::serve(
                distribution,
                NodeOptions {
                    data_dir,
                    database_url,
                    listen,
                    manifest: config,
                    demo,
                    enable,
                    allowed_hosts,
                    shutdown_timeout: Duration::from_secs(shutdown_timeout),
                    amqp_url,
                    events: EventRetention {
                        max_age: Some(Duration::from_secs(events_retention_secs))
                            .filter(|age| !age.is_zero()),
                        max_count: Some(events_retention_count).filter(|count| *count > 0),
                    },
                    reconcile_interval: Duration::from_secs(reconcile_interval),
                    jobs_retention: Duration::from_secs(jobs_retention),
                    limits: crate::http::Limits {
                        max_connections: max_connections
                            .unwrap_or_else(crate::http::default_max_connections),
                        header_timeout: Duration::from_secs(header_timeout.max(1)),
                        body_timeout: Duration::from_secs(body_timeout.max(1)),
                    },
                    cors_origins,
                    tls: tls_cert.zip(tls_key),
                },
            )
            .await?
        }
        Command::Login {
            name,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            } else {
                rpassword::prompt_password(format!("password of {name}: "))?
            };
            let session = client.login(&name, &password).await?;
            let name = cli.profile.clone().unwrap_or_else(|| "default".to_owned());
            let mut profiles = profiles;
            profiles.profiles.insert(
                name.clone(),
                profile::Profile {
                    endpoint: endpoint.clone(),
                    token: session.token,
                    token_uuid: Some(session.uuid),
                    expires_at: Some(session.expires_at.clone()),
                },
            );
            profiles.current = Some(name.clone());
            let path = profiles.save()?;
            println!(
                "logged in to {endpoint} until {}; profile `{name}` in {}",
                session.expires_at,
                path.display()
            );
        }
        Command::Logout => {
            let mut profiles = profiles;
            let name = cli
                .profile
                .clone()
                .or_else(|| profiles.current.clone())
                .ok_or_else(|| anyhow::anyhow!("no profile to log out of"))?;
            let gone = profiles
                .profiles
                .remove(&name)
                .ok_or_else(|| anyhow::anyhow!("no profile `{name}`"))?;
            if let Some(uuid) = &gone.token_uuid {
                client.revoke(uuid).await?;
            }
            if profiles.current.as_deref() == Some(name.as_str()) {
                profiles.current = None;
            }
            profiles.save()?;
            println!("logged out of {} (profile `{name}`)", gone.endpoint);
        }
        Command::Plugins => client.introspect("plugins").await?,
        Command::ExtensionPoints => client.introspect("extension-points").await?,
        Command::Types { kind } => client.run(&[kind, "types".into()]).await?,
        Command::Resource(args) => client.run(&args).await?,
        Command::Inspect { config, json } => {
            let kernel = node::assemble(
                distribution,
                node::load_manifest(config.as_deref())?,
                None,
                None,
            )?;
            if json {
                let report = serde_json::json!({
                    "plugins": kernel.plugins(),
                    "extension_points": kernel.extensions().describe(),
                    "types": kernel.drivers().describe(),
                    "services": kernel.bus().services(),
                    "config": kernel.config().entries(),
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_text(&kernel);
            }
        }
        Command::Bench(BenchCommand::CreateVms {
            count,
            concurrency,
            hosts,
            data_dir,
            database_url,
            amqp_url,
        }) => {
            bench::create_vms(
                distribution,
                bench::CreateVms {
                    count,
                    concurrency,
                    hosts,
                    data_dir,
                    database_url,
                    amqp_url,
                },
            )
            .await?
        }
        Command::Bench(BenchCommand::Amqp {
            amqp_url,
            events,
            requests,
        }) => bench_amqp::run(distribution, &amqp_url, events, requests).await?,
        Command::Bench(BenchCommand::Auth { requests }) => {
            bench_auth::run(distribution, requests).await?
        }
        Command::Bench(BenchCommand::Recovery {
            count,
            hosts,
            data_dir,
        }) => {
            bench_recovery::recovery(
                distribution,
                bench_recovery::Recovery {
                    count,
                    hosts,
                    data_dir,
                },
            )
            .await?
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "flatstack",
                &mut std::io::stdout(),
            );
        }
        Command::Openapi { config } => {
            let kernel = node::assemble(
                distribution,
                node::load_manifest(config.as_deref())?,
                None,
                None,
            )?;
            let doc = flatstack_api::openapi::document(&kernel);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}

fn print_text(kernel: &Kernel) {
    println!("Plugins (start order):");
    for p in kernel.plugins() {
        println!("  {:<24} {}", p.name, p.description);
    }
    println!("Extension points:");
    for p in kernel.extensions().describe() {
        let implementors: Vec<&str> = p.implementors.iter().map(|i| i.plugin.as_str()).collect();
        println!(
            "  {:<36} {:<8?} owner={:<12} implementors=[{}]",
            p.name,
            p.semantics,
            p.owner.as_deref().unwrap_or("-"),
            implementors.join(", ")
        );
    }
    println!("Driver types:");
    for (kind, types) in kernel.drivers().describe() {
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        println!("  {:<24} {}", kind, names.join(", "));
    }
    println!("Configuration:");
    for entry in kernel.config().entries() {
        println!("  {:<36} = {} ({:?})", entry.key, entry.value, entry.source);
    }
}

/// `RUST_LOG`, or `level`. The AMQP client's own lines stay out unless `RUST_LOG` names it:
/// it logs every lost connection as an error, which the relay already reports once, with
/// what it does about it.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let wanted = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    if wanted.contains("lapin") {
        return filter;
    }
    match "lapin=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; ANSI colours only when standard error is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to standard error in `format`; a program that set up its own subscriber keeps it.
fn init_logs(format: LogFormat, level: &str, traces: Option<&traces::Traces>) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let Some(traces) = traces else {
        // One filter for the whole subscriber: a span or event it refuses is disabled where
        // it is made, once (the traces' DEBUG spans cost nothing then).
        let builder = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(log_filter(level));
        let _ = match format {
            LogFormat::Text => builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init(),
            LogFormat::Json => builder.json().with_current_span(false).try_init(),
        };
        return;
    };
    // The logs and the traces, each with its own filter.
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().with_current_span(false).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(log_filter(level)))
        .with(traces.layer())
        .try_init();
}

/// Output piped into a reader that stops early (`flatstack openapi | head -1`) ends a
/// command quietly, as any Unix tool, instead of a panic on the broken pipe (Rust ignores
/// SIGPIPE, so the next print fails). Not for the node: a log reader that goes away must
/// not stop it.
fn quiet_on_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: sets the process's disposition of one signal to the default; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
