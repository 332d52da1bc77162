//! `flatstack bench create-vms`: creates VMs through the HTTP API of a management node
//! started in process (the whole distribution: DHCP, quota, host tags, the allocator) on
//! Simulator hosts, and reports throughput and latency beside the raw cost, in the same
//! run, of the database writes the creates made: the store keeps a journal of every
//! statement its committed transactions executed, which is replayed, transaction by
//! transaction, one after another, on a copy of the database taken before the creates.
//! A second, smaller baseline: as many one-row transactions through the store's `Tx`
//! (what a commit costs at least).
//!
//! The node runs on SQLite in a temporary directory, or, with `--database-url
//! postgres://...`, on a PostgreSQL database created on that server for the run (through
//! the URL's database) and dropped afterwards, also when the run fails. There the copy is
//! a database made from the node's (`CREATE DATABASE ... TEMPLATE`) and the replay runs on
//! one sqlx connection, as the store sends its statements.

use crate::demo::Api;
use crate::lock::DataDirLock;
use crate::node::{self, NodeOptions};
use crate::Distribution;
use anyhow::{bail, Context};
use flatstack_kernel::Kernel;
use flatstack_store::{Journal, Store};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `flatstack bench create-vms` was asked for.
pub struct CreateVms {
    pub count: u32,
    pub concurrency: usize,
    pub hosts: u32,
    /// Where the temporary data directory goes (the system's temporary directory if absent).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL server to run on (`postgres://...`, naming a database to connect to
    /// while creating and dropping the run's own), instead of SQLite in the data directory.
    pub database_url: Option<String>,
    /// Relay the events to this RabbitMQ while the VMs are created (as `serve --amqp-url`).
    pub amqp_url: Option<String>,
}

const MIB: u64 = 1 << 20;
/// Each VM's shape: small, so that hosts of a plausible size take many.
const VM_CPU: u64 = 1;
const VM_MEMORY: u64 = 64 * MIB;
/// The owner the VMs are created for, and whose quota is set.
const OWNER: &str = "bench";
/// How long one create may take before it counts as failed (`?wait=`).
const WAIT_SECONDS: u64 = 120;
/// The first address of the VMs' IP range: 10.0.0.0/8 is enough for any count accepted.
/// The network exists only in the simulator; nothing is ever sent to it.
const NETWORK: u32 = 0x0a00_0000;

/// Runs the benchmark and prints its report on stdout.
pub async fn create_vms(distribution: &Distribution, options: CreateVms) -> anyhow::Result<()> {
    if options.count == 0 || options.concurrency == 0 || options.hosts == 0 {
        bail!("--count, --concurrency and --hosts must be at least 1");
    }
    // The range starts at .2 of a /8 (network, gateway) and stops before its broadcast.
    if options.count > (1 << 24) - 3 {
        bail!("--count is at most {} (one /8 of addresses)", (1 << 24) - 3);
    }
    if options.database_url.is_some() && options.amqp_url.is_some() {
        bail!("--amqp-url is measured on SQLite only: leave out --database-url");
    }
    if let Some(url) = &options.database_url {
        if !url.starts_with("postgres") {
            bail!("--database-url takes a PostgreSQL URL (postgres://...), not {url}");
        }
    }
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("flatstack-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;

    let report = match &options.database_url {
        None => on_sqlite(distribution, &options, temp.path()).await?,
        Some(url) => on_postgres(distribution, &options, url, temp.path()).await?,
    };
    report.print(&options);
    if report.creates.failed > 0 {
        bail!(
            "{} of {} creates failed; the first: {}",
            report.creates.failed,
            options.count,
            report.creates.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// A management node started in process, serving its API on an ephemeral port.
pub(crate) struct BenchNode {
    pub(crate) kernel: Kernel,
    store: Arc<Store>,
    pub(crate) base: String,
    /// The admin token the node wrote to its data directory.
    pub(crate) token: Option<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _lock: DataDirLock,
}

impl BenchNode {
    pub(crate) async fn start(
        distribution: &Distribution,
        options: &NodeOptions,
    ) -> anyhow::Result<BenchNode> {
        let (kernel, lock) = node::start(distribution, options).await?;
        let store = match kernel.get::<Store>() {
            Some(store) => store,
            None => {
                kernel.stop().await;
                bail!("the node was started without a store");
            }
        };
        let (listener, address) = match node::bind(options.listen).await {
            Ok(bound) => bound,
            Err(e) => {
                kernel.stop().await;
                return Err(e);
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(node::serve_api(listener, kernel.clone(), async {
            let _ = stopped.await;
        }));
        Ok(BenchNode {
            kernel,
            store,
            base: format!("http://{address}"),
            token: crate::token::admin_token(&options.data_dir),
            stop,
            server,
            _lock: lock,
        })
    }

    /// Stops serving, then stops the plugins; the data directory is unlocked.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let served = match self.server.await {
            Ok(served) => served,
            Err(e) => Err(anyhow::anyhow!("the API server task failed: {e}")),
        };
        self.kernel.stop().await;
        served
    }
}

/// The node on SQLite in `dir`; the copy is a SQLite file made between two transactions
/// (`Store::snapshot`), while the node runs.
async fn on_sqlite(
    distribution: &Distribution,
    options: &CreateVms,
    dir: &Path,
) -> anyhow::Result<Report> {
    let node_options = NodeOptions::new(dir.join("node"), ([127, 0, 0, 1], 0).into());
    let node = BenchNode::start(distribution, &node_options).await?;
    let outcome: anyhow::Result<Report> = async {
        let body = data_centre(&node.base, node.token.as_deref(), options).await?;
        let before = dir.join("before-creates.db");
        node.store.snapshot(&before).await?;
        let relay = match &options.amqp_url {
            Some(url) => Some(
                flatstack_amqp::Relay::start(
                    node.store.clone(),
                    flatstack_amqp::RelayOptions::new(url.clone()),
                )
                .await?,
            ),
            None => None,
        };
        let (creates, journal) = create(options, &node, body).await?;
        if let Some(relay) = relay {
            relay_caught_up(&node.store, &relay).await?;
        }
        let pages = pages(&node).await?;
        let replayed_rows = journal.transactions();
        let statements = journal.statements();
        let path = before.clone();
        let took = tokio::task::spawn_blocking(move || journal.replay(&path))
            .await
            .context("the replay's thread")?
            .context("replaying the creates' transactions")?;
        let copy = Store::open(&format!("sqlite://{}", before.display())).await?;
        let copy_rows = copy.count("vm_instances").await;
        copy.close().await;
        check_replay(copy_rows?, creates.vm_rows)?;
        let raw = Replayed {
            transactions: replayed_rows,
            statements,
            took,
        };
        // As many one-row transactions on a fresh SQLite database.
        let fresh = Store::open_data_dir(&dir.join("raw"))
            .await
            .context("opening the raw baseline's database")?;
        let single_row =
            single_row_transactions(&node.kernel, &fresh, creates.commits, options.concurrency)
                .await;
        fresh.close().await;
        Ok(Report {
            backend: "SQLite",
            database: None,
            creates,
            raw,
            single_row: single_row?,
            pages,
        })
    }
    .await;
    let stopped = node.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

/// Waits for the relay to have every event confirmed by the broker, and says how long that
/// took after the last create.
async fn relay_caught_up(store: &Store, relay: &flatstack_amqp::Relay) -> anyhow::Result<()> {
    let newest = store.newest_event_seq().await?;
    let Some(took) = relay
        .confirmed_up_to(newest, Duration::from_secs(300))
        .await
    else {
        bail!("the relay did not catch up within 5 minutes");
    };
    println!(
        "relay: {} events confirmed by the broker during the run; the last {} ms after the last create",
        relay.status.confirmed.load(std::sync::atomic::Ordering::Relaxed),
        took.as_millis()
    );
    Ok(())
}

/// The node on a database of its own on the PostgreSQL server at `url`, dropped with its
/// copy once the run is over, whatever its outcome.
async fn on_postgres(
    distribution: &Distribution,
    options: &CreateVms,
    url: &str,
    dir: &Path,
) -> anyhow::Result<Report> {
    let name = format!("flatstack_bench_{}", uuid::Uuid::new_v4().simple());
    let copy = format!("{name}_before");
    admin(url, &format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating the database {name} through {url}"))?;
    let outcome = postgres_run(distribution, options, url, &name, &copy, dir).await;
    let mut dropped = Ok(());
    for database in [&copy, &name] {
        let drop = admin(
            url,
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )
        .await
        .with_context(|| format!("dropping the database {database} through {url}"));
        if let Err(e) = drop {
            tracing::error!(error = %format!("{e:#}"), "the bench's database is left behind");
            dropped = dropped.and(Err(e));
        }
    }
    let report = outcome?;
    dropped?;
    Ok(report)
}

async fn postgres_run(
    distribution: &Distribution,
    options: &CreateVms,
    url: &str,
    name: &str,
    copy: &str,
    dir: &Path,
) -> anyhow::Result<Report> {
    let mut node_options = NodeOptions::new(dir.join("node"), ([127, 0, 0, 1], 0).into());
    node_options.database_url = Some(with_database(url, name));

    // The copy before the creates. `CREATE DATABASE ... TEMPLATE` refuses to copy a
    // database anyone is connected to, and the store's pool keeps its connections (sqlx
    // closes a pool for good). So the node that built the data centre stops and closes its
    // pool, the copy is made, and a node starts again on the same database, as after any
    // restart: what it keeps in memory (IPAM's hints) is rebuilt, and recovery finds
    // nothing to do. None of it is timed.
    let node = BenchNode::start(distribution, &node_options).await?;
    let body = data_centre(&node.base, node.token.as_deref(), options).await;
    let store = node.store.clone();
    let stopped = node.stop().await;
    store.close().await;
    drop(store);
    let body = body?;
    stopped?;
    admin(url, &format!("CREATE DATABASE {copy} TEMPLATE {name}"))
        .await
        .with_context(|| format!("copying {name} into {copy}"))?;

    let node = BenchNode::start(distribution, &node_options).await?;
    let outcome: anyhow::Result<Report> = async {
        let (creates, journal) = create(options, &node, body).await?;
        let pages = pages(&node).await?;
        let copy_url = with_database(url, copy);
        let raw = Replayed {
            transactions: journal.transactions(),
            statements: journal.statements(),
            took: journal
                .replay_postgres(&copy_url)
                .await
                .context("replaying the creates' transactions")?,
        };
        let replayed = Store::open(&copy_url).await?;
        let outcome: anyhow::Result<Duration> = async {
            check_replay(replayed.count("vm_instances").await?, creates.vm_rows)?;
            // As many one-row transactions, in a table of their own in the copy.
            single_row_transactions(
                &node.kernel,
                &replayed,
                creates.commits,
                options.concurrency,
            )
            .await
        }
        .await;
        replayed.close().await;
        Ok(Report {
            backend: "PostgreSQL",
            database: Some(name.to_owned()),
            creates,
            raw,
            single_row: outcome?,
            pages,
        })
    }
    .await;
    let stopped = node.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

/// Runs `sql` on a connection of its own to the database of `url` (creating and dropping
/// the bench's databases, which no connection to them may do).
async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    // Creating and dropping a database takes a second or two: not worth sqlx's warning.
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?.disable_statement_logging();
    let mut conn = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {url} in 10 s"))??;
    let done = sqlx::query(sql).execute(&mut conn).await;
    let closed = conn.close().await;
    done?;
    closed?;
    Ok(())
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

/// The replay gave the same outcome: as many VM rows in the copy as the node has.
fn check_replay(replayed_rows: i64, vm_rows: i64) -> anyhow::Result<()> {
    if replayed_rows != vm_rows {
        bail!("the replay left {replayed_rows} VM rows where the creates left {vm_rows}");
    }
    Ok(())
}

struct Report {
    /// Which database the node ran on.
    backend: &'static str,
    /// PostgreSQL: the run's database (dropped since).
    database: Option<String>,
    creates: Creates,
    /// The replay of the creates' committed transactions.
    raw: Replayed,
    /// As many one-row transactions through the store.
    single_row: Duration,
    /// Every VM listed a page of 100 at a time, after the creates.
    pages: Pages,
}

/// The VMs walked a page at a time through the API, and the same pages read raw.
struct Pages {
    /// How many rows a page holds.
    size: usize,
    /// How many VMs the walk saw (each once).
    rows: usize,
    /// Each page's request, sorted.
    latencies: Vec<Duration>,
    /// Each page's SQL (the keyset query and the count the API also makes) on the same
    /// database through the store's pool, with no node in between, sorted.
    raw: Vec<Duration>,
}

/// What the creates did.
struct Creates {
    succeeded: u64,
    failed: u64,
    first_error: Option<String>,
    vm_rows: i64,
    wall: Duration,
    /// CPU time the process (node and client) spent over the creates.
    cpu: Duration,
    /// Every request's latency, sorted.
    latencies: Vec<Duration>,
    commits: u64,
    /// Commits of the database itself (SQLite commits transactions in groups).
    database_commits: u64,
    transactions: u64,
}

struct Replayed {
    transactions: usize,
    statements: usize,
    took: Duration,
}

/// Creates `options.count` VMs (`body`, named one by one) through `node`'s API with at
/// most `options.concurrency` in flight, the store keeping its journal meanwhile; what
/// they did and the journal.
async fn create(
    options: &CreateVms,
    node: &BenchNode,
    body: Value,
) -> anyhow::Result<(Creates, Journal)> {
    let store = &node.store;
    let url = format!("{}/v1/vm-instances?wait={WAIT_SECONDS}", node.base);
    let http = crate::token::builder(node.token.as_deref())?
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .context("building the HTTP client")?;

    store.keep_journal().await?;
    let transactions = store.transactions();
    let database_commits = store.database_commits();
    let cpu = cpu_time::ProcessTime::try_now().context("reading the process's CPU time")?;
    let started = Instant::now();
    let outcomes: Vec<(Duration, Result<(), String>)> = stream::iter(0..options.count)
        .map(|i| {
            let mut body = body.clone();
            body["name"] = json!(format!("bench-vm-{i}"));
            tokio::spawn(create_one(http.clone(), url.clone(), body))
        })
        .buffer_unordered(options.concurrency)
        .map(|joined| joined.unwrap_or_else(|e| (Duration::ZERO, Err(format!("task: {e}")))))
        .collect()
        .await;
    let wall = started.elapsed();
    let cpu = cpu
        .try_elapsed()
        .context("reading the process's CPU time")?;
    let transactions = store.transactions() - transactions;
    let database_commits = store.database_commits() - database_commits;

    let mut latencies = Vec::with_capacity(outcomes.len());
    let (mut succeeded, mut failed, mut first_error) = (0, 0, None);
    for (latency, outcome) in outcomes {
        latencies.push(latency);
        match outcome {
            Ok(()) => succeeded += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    latencies.sort_unstable();
    let journal = store
        .take_journal()
        .await?
        .context("the store kept no journal")?;
    // Counted with the writer held as the journal began and ended: a commit that lands as
    // the creates end (the audit trail's batch) is in both or in neither.
    let commits = journal.commits();
    let vm_rows = store.count("vm_instances").await?;
    let creates = Creates {
        succeeded,
        failed,
        first_error,
        vm_rows,
        wall,
        cpu,
        latencies,
        commits,
        database_commits,
        transactions,
    };
    Ok((creates, journal))
}

/// One create, timed from sending the request to the end of the response.
async fn create_one(
    http: reqwest::Client,
    url: String,
    body: Value,
) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let outcome = async {
        let response = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("response: {e}"))?;
        if status == reqwest::StatusCode::CREATED {
            Ok(())
        } else {
            Err(format!("{status}: {text}"))
        }
    }
    .await;
    (started.elapsed(), outcome)
}

/// Walks every VM through `GET /v1/vm-instances?limit=100` (the default order, by creation
/// then uuid), each page timed; then reads the same pages raw: the keyset query the store
/// sends and the count, on the store's pool.
async fn pages(node: &BenchNode) -> anyhow::Result<Pages> {
    const SIZE: usize = 100;
    let http = crate::token::builder(node.token.as_deref())?
        .build()
        .context("building the HTTP client")?;
    let mut latencies = Vec::new();
    let mut bounds: Vec<Option<(String, String)>> = vec![None];
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/vm-instances?limit={SIZE}", node.base);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let started = Instant::now();
        let response = http.get(&url).send().await.context("listing VMs")?;
        let status = response.status();
        let page: Value = response.json().await.context("a page of VMs")?;
        latencies.push(started.elapsed());
        if !status.is_success() {
            bail!("listing VMs: {status}: {page}");
        }
        let rows = page["inventories"].as_array().context("inventories")?;
        for vm in rows {
            let uuid = vm["uuid"].as_str().context("a VM's uuid")?;
            if !seen.insert(uuid.to_owned()) {
                bail!("VM {uuid} was listed twice");
            }
        }
        match (page["next"].as_str(), rows.last()) {
            (Some(next), Some(last)) => {
                cursor = Some(next.to_owned());
                let at = |k: &str| last[k].as_str().unwrap_or_default().to_owned();
                bounds.push(Some((at("created_at"), at("uuid"))));
            }
            _ => break,
        }
    }
    let mut raw = Vec::with_capacity(bounds.len());
    let pool = node.store.pool();
    for bound in &bounds {
        let started = Instant::now();
        let rows = match bound {
            None => {
                sqlx::query("SELECT * FROM vm_instances ORDER BY created_at, uuid LIMIT 101")
                    .fetch_all(pool)
                    .await
            }
            Some((created_at, uuid)) => {
                sqlx::query(
                    "SELECT * FROM vm_instances WHERE (created_at, uuid) > ($1, $2) \
                     ORDER BY created_at, uuid LIMIT 101",
                )
                .bind(created_at)
                .bind(uuid)
                .fetch_all(pool)
                .await
            }
        }
        .context("the raw page")?;
        sqlx::query("SELECT COUNT(*) FROM vm_instances")
            .fetch_one(pool)
            .await
            .context("the raw count")?;
        raw.push(started.elapsed());
        if rows.is_empty() && bound.is_some() {
            bail!("the raw walk ended early");
        }
    }
    latencies.sort_unstable();
    raw.sort_unstable();
    Ok(Pages {
        size: SIZE,
        rows: seen.len(),
        latencies,
        raw,
    })
}

/// Builds, through the API, a data centre that takes every VM, and returns the body of a
/// VM create (its `name` is set per VM).
pub(crate) async fn data_centre(
    base: &str,
    token: Option<&str>,
    options: &CreateVms,
) -> anyhow::Result<Value> {
    let api = Api::new(base, token)?;
    let count = u64::from(options.count);
    let zone = api.create("zones", json!({"name": "bench-zone"})).await?;
    let cluster = api
        .create(
            "clusters",
            json!({"name": "bench-cluster", "zone_uuid": zone, "hypervisor_type": "Simulator"}),
        )
        .await?;
    let per_host = count.div_ceil(u64::from(options.hosts));
    let cpu_capacity = u32::try_from(per_host * VM_CPU).context("too many VMs per host")?;
    for i in 0..options.hosts {
        // Management addresses of the simulated hosts: only names, never contacted.
        let ip = Ipv4Addr::from(0xac10_0000 + i + 1);
        api.create(
            "hosts",
            json!({"type": "Simulator", "name": format!("bench-host-{i}"), "cluster_uuid": cluster,
                "management_ip": ip.to_string(), "cpu_capacity": cpu_capacity,
                "memory_capacity": per_host * VM_MEMORY}),
        )
        .await?;
    }
    // Every VM's root volume (the image's size) lives on primary storage its cluster reaches.
    let ps = api
        .create(
            "primary-storage",
            json!({"type": "Simulator", "name": "bench-ps", "zone_uuid": zone,
                "url": "/sim/bench-ps", "total_capacity": 1u64 << 50}),
        )
        .await?;
    api.attach_cluster(&format!("/v1/primary-storage/{ps}"), &cluster)
        .await?;
    let bs = api
        .create(
            "backup-storage",
            json!({"type": "Simulator", "name": "bench-bs", "zone_uuid": zone,
                "url": "/sim/bench-bs", "total_capacity": 1u64 << 40}),
        )
        .await?;
    let image = api
        .create(
            "images",
            json!({"name": "bench-image", "url": "http://example.invalid/bench.qcow2",
                "format": "qcow2", "size": 41126400, "backup_storage_uuids": [bs]}),
        )
        .await?;
    let offering = api
        .create(
            "instance-offerings",
            json!({"name": "bench-offering", "cpu_num": VM_CPU, "memory_size": VM_MEMORY}),
        )
        .await?;
    let (start, end, netmask) = ip_range(options.count);
    let range = json!({"name": "bench-range", "start_ip": start, "end_ip": end,
        "netmask": netmask, "gateway": Ipv4Addr::from(NETWORK + 1).to_string()});
    let l3 = api.flat_network(&zone, &cluster, "bench-l3", range).await?;
    api.create(
        "quotas",
        json!({"name": "bench-quota", "account_uuid": OWNER, "max_vm_num": options.count,
            "max_cpu_num": count * VM_CPU, "max_memory_size": count * VM_MEMORY}),
    )
    .await?;
    Ok(
        json!({"name": "", "account_uuid": OWNER, "instance_offering_uuid": offering,
        "image_uuid": image, "l3_network_uuids": [l3]}),
    )
}

/// The smallest subnet of 10.0.0.0/8 whose range (from .2, after the gateway) holds
/// `count` addresses: (start, end, netmask).
fn ip_range(count: u32) -> (String, String, String) {
    // Network, gateway and broadcast are not handed out.
    let needed = u64::from(count) + 3;
    let host_bits = needed.next_power_of_two().trailing_zeros().max(2);
    let mask = u32::MAX << host_bits;
    let start = NETWORK + 2;
    let end = start + count - 1;
    (
        Ipv4Addr::from(start).to_string(),
        Ipv4Addr::from(end).to_string(),
        Ipv4Addr::from(mask).to_string(),
    )
}

/// Times `n` transactions on `raw` (a database opened as the node's store is: on SQLite
/// the same pragmas and the one transaction connection, on PostgreSQL the pool and the
/// write turns), each inserting one row the size of a typical record into a table of its
/// own, `concurrency` at a time: what as many commits cost at least, through the store's
/// `Tx` but without anything of Flatstack's on top.
async fn single_row_transactions(
    kernel: &Kernel,
    raw: &Arc<Store>,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    sqlx::query(
        "CREATE TABLE raw_rows (uuid TEXT PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .execute(raw.pool())
    .await
    .context("creating the raw baseline's table")?;
    // A few hundred bytes of JSON-like text, as a VM or NIC row is.
    let filler = "x".repeat(240);
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| {
            let (raw, kernel) = (raw.clone(), kernel.clone());
            let body = format!(r#"{{"seq": {i}, "state": "Running", "filler": "{filler}"}}"#);
            tokio::spawn(async move {
                let row = serde_json::Map::from_iter([
                    ("uuid".to_owned(), Value::String(format!("{i:032x}"))),
                    ("body".to_owned(), Value::String(body)),
                    (
                        "created_at".to_owned(),
                        Value::String(flatstack_store::now()),
                    ),
                ]);
                let mut tx = raw.begin().await?;
                tx.insert("raw_rows", &row).await?;
                tx.commit(kernel.bus()).await
            })
        })
        .buffer_unordered(concurrency)
        .map(|joined| match joined {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("raw baseline task: {e}")),
        })
        .collect()
        .await;
    let elapsed = started.elapsed();
    for result in results {
        result.context("a raw baseline transaction")?;
    }
    Ok(elapsed)
}

/// The `p`-quantile (0..=1) of sorted `values`, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Report {
    /// One `key: number [unit]` per line, so scripts (and the test) can read it.
    fn print(&self, options: &CreateVms) {
        let creates = &self.creates;
        let count = f64::from(options.count);
        let wall = creates.wall.as_secs_f64();
        let raw = self.raw.took.as_secs_f64();
        let single_row = self.single_row.as_secs_f64();
        println!(
            "bench create-vms: {} VMs over HTTP, concurrency {}, {} Simulator hosts, {}",
            options.count, options.concurrency, options.hosts, self.backend
        );
        println!("backend: {}", self.backend);
        if let Some(database) = &self.database {
            println!("database: {database} (dropped with its copy)");
        }
        println!("count: {}", options.count);
        println!("concurrency: {}", options.concurrency);
        println!("succeeded: {}", creates.succeeded);
        println!("failed: {}", creates.failed);
        if let Some(error) = &creates.first_error {
            println!("first error: {error}");
        }
        println!("vm rows: {}", creates.vm_rows);
        println!("wall time: {wall:.3} s");
        println!("throughput: {:.1} VMs/s", count / wall.max(f64::EPSILON));
        // Steadier than the wall time on a shared machine: what to compare across changes.
        // PostgreSQL's own processes are not in it.
        println!(
            "cpu per create: {:.1} µs (node and HTTP client, all threads)",
            creates.cpu.as_secs_f64() * 1e6 / count
        );
        println!(
            "latency p50: {:.1} ms",
            millis(percentile(&creates.latencies, 0.50))
        );
        println!(
            "latency p99: {:.1} ms",
            millis(percentile(&creates.latencies, 0.99))
        );
        println!(
            "latency max: {:.1} ms",
            millis(creates.latencies.last().copied().unwrap_or_default())
        );
        println!("commits: {}", creates.commits);
        println!("commits per create: {:.2}", creates.commits as f64 / count);
        println!(
            "database commits: {} ({:.1} transactions a commit)",
            creates.database_commits,
            creates.commits as f64 / creates.database_commits.max(1) as f64
        );
        println!(
            "transactions per create (with read-only): {:.2}",
            creates.transactions as f64 / count
        );
        match self.database {
            None => println!("raw: the creates' committed transactions replayed on one thread"),
            Some(_) => println!(
                "raw: the creates' committed transactions replayed on one connection, on a copy"
            ),
        }
        println!("raw transactions: {}", self.raw.transactions);
        println!("raw statements: {}", self.raw.statements);
        println!("raw time: {raw:.3} s");
        println!(
            "raw throughput: {:.1} tx/s",
            self.raw.transactions as f64 / raw.max(f64::EPSILON)
        );
        println!("ratio create/raw: {:.2}", wall / raw.max(f64::EPSILON));
        println!("single-row commits time: {single_row:.3} s");
        println!(
            "ratio create/single-row commits: {:.2}",
            wall / single_row.max(f64::EPSILON)
        );
        let pages = &self.pages;
        println!(
            "pages: {} of {} VMs, {} rows seen",
            pages.latencies.len(),
            pages.size,
            pages.rows
        );
        for (name, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            let api = millis(percentile(&pages.latencies, p));
            let raw = millis(percentile(&pages.raw, p));
            println!("page {name}: {api:.2} ms");
            println!("raw page {name}: {raw:.2} ms");
            println!("ratio page/raw {name}: {:.2}", api / raw.max(f64::EPSILON));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_fits_the_count_in_the_smallest_subnet() {
        assert_eq!(
            ip_range(1),
            (
                "10.0.0.2".into(),
                "10.0.0.2".into(),
                "255.255.255.252".into()
            )
        );
        assert_eq!(
            ip_range(10_000),
            (
                "10.0.0.2".into(),
                "10.0.39.17".into(),
                "255.255.192.0".into()
            )
        );
        let (_, end, mask) = ip_range((1 << 24) - 3);
        assert_eq!(
            (end.as_str(), mask.as_str()),
            ("10.255.255.254", "255.0.0.0")
        );
    }

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_parameters_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b"),
            "postgres://h:5432/b"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
