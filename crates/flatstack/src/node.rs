//! `flatstack serve`: the management node.

use crate::distribution;
use anyhow::Context;
use flatstack_kernel::{Kernel, Manifest};
use flatstack_store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct NodeOptions {
    pub data_dir: PathBuf,
    /// A database URL (`postgres://...`) instead of the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    pub manifest: Option<PathBuf>,
    /// Create the demo data centre once serving.
    pub demo: bool,
}

pub fn load_manifest(path: Option<&Path>) -> anyhow::Result<Manifest> {
    Ok(match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default(),
    })
}

/// Assembles the distribution with `store` provided to the plugins.
pub fn assemble(manifest: Manifest, store: Option<Arc<Store>>) -> anyhow::Result<Kernel> {
    let mut builder = Kernel::builder().manifest(manifest);
    if let Some(store) = store {
        builder = builder.provide(store);
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
    let kernel = assemble(manifest, Some(store.clone()))?;
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
    Ok(kernel)
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
