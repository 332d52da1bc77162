//! `flatstack serve`: the management node.

use crate::distribution;
use anyhow::Context;
use flatstack_header::DataDir;
use flatstack_kernel::{Kernel, Manifest};
use flatstack_store::{recovery, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct NodeOptions {
    pub data_dir: PathBuf,
    /// A database URL (`postgres://...`) instead of the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    pub manifest: Option<PathBuf>,
    /// Create the demo data centre once serving.
    pub demo: bool,
    /// How often the periodic reconcilers run (hosts checked, VMs compared with what
    /// their hosts run, VMs left in transient states recovered).
    pub reconcile_interval: Duration,
    /// How long finished jobs are kept in the journal.
    pub jobs_retention: Duration,
}

impl NodeOptions {
    /// The options of a node on `data_dir`, listening on `listen`, everything else default.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> NodeOptions {
        NodeOptions {
            data_dir,
            database_url: None,
            listen,
            manifest: None,
            demo: false,
            reconcile_interval: Duration::from_secs(60),
            jobs_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

pub fn load_manifest(path: Option<&Path>) -> anyhow::Result<Manifest> {
    Ok(match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default(),
    })
}

/// Assembles the distribution with `store` and the data directory provided to the plugins.
pub fn assemble(
    manifest: Manifest,
    store: Option<Arc<Store>>,
    data_dir: Option<&Path>,
) -> anyhow::Result<Kernel> {
    let mut builder = Kernel::builder().manifest(manifest);
    if let Some(store) = store {
        builder = builder.provide(store);
    }
    if let Some(dir) = data_dir {
        builder = builder.provide(Arc::new(DataDir(dir.to_owned())));
    }
    distribution::plugins(builder)
        .build()
        .context("assembling the distribution")
}

/// Opens the store, assembles and starts the plugins, applies their migrations.
pub async fn start(options: &NodeOptions) -> anyhow::Result<Kernel> {
    let manifest = load_manifest(options.manifest.as_deref())?;
    let store = match &options.database_url {
        Some(url) => Store::open(url).await.context("opening the database")?,
        None => Store::open_data_dir(&options.data_dir)
            .await
            .with_context(|| format!("opening the store in {}", options.data_dir.display()))?,
    };
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating the data directory {}", options.data_dir.display()))?;
    let kernel = assemble(manifest, Some(store.clone()), Some(&options.data_dir))?;
    // Migrations in plugin start order, so a table is created before those that refer to it.
    let streams: Vec<_> = kernel
        .plugins()
        .into_iter()
        .filter_map(|p| {
            let stream = kernel.migrations().get(&p.name)?.clone();
            Some((p.name, stream))
        })
        .collect();
    store
        .migrate(&streams)
        .await
        .context("applying migrations")?;
    kernel.start().await.context("starting the plugins")?;
    // Before the API accepts a request: what a stopped node left in flight is finished or
    // undone, and every operation it left running is closed.
    let recovered = recovery::recover(&kernel)
        .await
        .context("recovering interrupted operations")?;
    if let Some(fault) = &recovered.failure {
        tracing::error!(%fault, "recovery left something unsettled; it is retried periodically");
    }
    tracing::info!(
        operations = recovered.operations,
        elapsed_ms = recovered.elapsed.as_millis() as u64,
        "recovery done"
    );
    tokio::spawn(housekeeping(
        kernel.clone(),
        store,
        options.reconcile_interval,
        options.jobs_retention,
    ));
    Ok(kernel)
}

/// Every `interval`: the periodic reconcilers, and the journal's finished jobs older than
/// `retention` removed (in batches, so the writer is never held long).
async fn housekeeping(kernel: Kernel, store: Arc<Store>, interval: Duration, retention: Duration) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(fault) = recovery::sync(&kernel).await {
            tracing::warn!(%fault, "periodic reconciliation");
        }
        loop {
            match store.prune_operations(retention, 1000).await {
                Ok(1000) => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "pruning finished jobs");
                    break;
                }
            }
        }
    }
}

/// Binds the API's listener; port 0 picks a free port (the address says which).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

/// Serves `kernel`'s HTTP API on `listener` until `shutdown` completes.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    kernel: Kernel,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, flatstack_api::router(kernel))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")
}

/// Serves the API until Ctrl-C, then stops the plugins.
pub async fn serve(options: NodeOptions) -> anyhow::Result<()> {
    let kernel = start(&options).await?;
    let (listener, address) = bind(options.listen).await?;
    // The first line of output: scripts and tests read the address from it.
    println!("flatstack listening on http://{address}");
    tracing::info!(%address, data_dir = %options.data_dir.display(), "management node ready");
    if options.demo {
        let base = format!("http://{address}");
        tokio::spawn(async move {
            if let Err(error) = crate::demo::create(&base).await {
                tracing::error!(%error, "demo data centre");
            }
        });
    }
    serve_api(listener, kernel.clone(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    kernel.stop().await;
    Ok(())
}
