//! `flatstack bench recovery`: how long a node takes, at start, to recover from a crash
//! that left many VM creates in flight. A node started in process on a temporary SQLite
//! database creates `--count` VMs whose hosts are made slow to start them, so that every
//! create holds everything but the running VM (quota, host capacity, root volume, address,
//! lease) when the node's runtime is dropped where it stands, as a crash would leave it; a
//! new node on the same data then recovers, and the report says how long that took and
//! checks that nothing is left.

use crate::bench::{data_centre, CreateVms};
use crate::node::{self, NodeOptions};
use crate::Distribution;
use anyhow::{bail, Context};
use flatstack_store::{recovery, Store};
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `flatstack bench recovery` was asked for.
pub struct Recovery {
    /// How many creates are in flight when the node stops.
    pub count: u32,
    pub hosts: u32,
    pub data_dir: Option<PathBuf>,
}

/// How long the crashed node's creates may take to reach the hypervisor step.
const SETTLE: Duration = Duration::from_secs(120);

pub async fn recovery(distribution: &Distribution, options: Recovery) -> anyhow::Result<()> {
    if options.count == 0 || options.hosts == 0 {
        bail!("--count and --hosts must be at least 1");
    }
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let temp = tempfile::Builder::new()
        .prefix("flatstack-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let node_options = NodeOptions::new(temp.path().join("node"), ([127, 0, 0, 1], 0).into());

    // The node that crashes, on a runtime of its own, dropped with every task where it is.
    let crashing = NodeOptions::new(node_options.data_dir.clone(), node_options.listen);
    let (count, hosts) = (options.count, options.hosts);
    let crashing_distribution = distribution.clone();
    let in_flight = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("a runtime for the node that crashes")?;
        let in_flight = runtime.block_on(creates_in_flight(
            &crashing_distribution,
            &crashing,
            count,
            hosts,
        ));
        runtime.shutdown_background();
        in_flight
    })
    .await
    .context("the crashing node's thread")??;

    let (kernel, _lock) = node::open(distribution, &node_options).await?;
    let store = kernel
        .get::<Store>()
        .context("the node was started without a store")?;
    let started = Instant::now();
    let recovered = recovery::recover(&kernel).await?;
    let took = started.elapsed();
    let left = [
        ("vm_instances", store.count("vm_instances").await?),
        ("host_allocations", store.count("host_allocations").await?),
        ("ip_addresses", store.count("ip_addresses").await?),
        ("dhcp_leases", store.count("dhcp_leases").await?),
        ("quota_allocations", store.count("quota_allocations").await?),
        ("volumes", store.count("volumes").await?),
    ];
    kernel.stop().await;
    println!("recovery of a crash with {in_flight} VM creates in flight (SQLite, {hosts} hosts)");
    println!(
        "  operations closed: {}, reconcilers' failure: {}",
        recovered.operations,
        recovered
            .failure
            .as_ref()
            .map_or("none".to_owned(), ToString::to_string)
    );
    println!(
        "  recovery took {:.0} ms ({:.2} ms per create)",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / in_flight.max(1) as f64
    );
    for (table, rows) in left {
        println!("  {table}: {rows} rows left");
        if rows != 0 {
            bail!("recovery left {rows} rows in {table}");
        }
    }
    if recovered.failure.is_some() || recovered.operations < in_flight as usize {
        bail!("recovery did not settle every create");
    }
    Ok(())
}

/// Starts a node, makes its hosts slow to start VMs and sends `count` creates; returns once
/// every one holds everything but its running VM (how many VMs are `Creating`).
async fn creates_in_flight(
    distribution: &Distribution,
    options: &NodeOptions,
    count: u32,
    hosts: u32,
) -> anyhow::Result<i64> {
    let (kernel, lock) = node::start(distribution, options).await?;
    let store = kernel
        .get::<Store>()
        .context("the node was started without a store")?;
    let (listener, address) = node::bind(options.listen).await?;
    tokio::spawn(node::serve_api(
        listener,
        kernel.clone(),
        std::future::pending(),
    ));
    let base = format!("http://{address}");
    let shape = CreateVms {
        count,
        concurrency: 100,
        hosts,
        data_dir: None,
        database_url: None,
        amqp_url: None,
    };
    let token = crate::token::admin_token(&options.data_dir);
    let body = data_centre(&base, token.as_deref(), &shape).await?;
    let http = crate::token::client(token.as_deref())?;
    let (_, listed) = get(&http, &format!("{base}/v1/hosts")).await?;
    for host in listed["inventories"].as_array().into_iter().flatten() {
        let uuid = host["uuid"].as_str().context("a host's uuid")?;
        let slow = json!({"action": "inject_failure", "operation": "start_vm",
            "delay_ms": flatstack_simulator::MAX_DELAY_MS});
        http.post(format!("{base}/v1/hosts/{uuid}/actions?wait=10"))
            .json(&slow)
            .send()
            .await?
            .error_for_status()?;
    }
    let url = format!("{base}/v1/vm-instances");
    let refused: Vec<String> = stream::iter(0..count)
        .map(|i| {
            let mut body = body.clone();
            body["name"] = json!(format!("bench-vm-{i}"));
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => None,
                    Ok(r) => Some(format!("{}", r.status())),
                    Err(e) => Some(e.to_string()),
                }
            }
        })
        .buffer_unordered(100)
        .filter_map(|refused| async { refused })
        .collect()
        .await;
    if let Some(first) = refused.first() {
        bail!("{} creates were refused; the first: {first}", refused.len());
    }
    // Every create has its lease (the step before the hypervisor's): it holds everything.
    let deadline = Instant::now() + SETTLE;
    while store.count("dhcp_leases").await? < i64::from(count) {
        if Instant::now() > deadline {
            bail!("the creates did not reach the hypervisor step in {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let creating = store.count("vm_instances").await?;
    // Dropped with the runtime: the lock goes with the process's file descriptor.
    drop(lock);
    Ok(creating)
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = http.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}
