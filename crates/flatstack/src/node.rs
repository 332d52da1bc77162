//! `flatstack serve`: the management node.

use crate::lock::DataDirLock;
use crate::Distribution;
use anyhow::Context;
use flatstack_header::DataDir;
use flatstack_kernel::{Kernel, Manifest};
use flatstack_store::{recovery, EventRetention, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct NodeOptions {
    /// Locked for the node's lifetime; the SQLite file lives here unless `database_url`.
    pub data_dir: PathBuf,
    /// A database URL (`postgres://...`) instead of the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    pub manifest: Option<PathBuf>,
    /// Create the demo data centre once serving.
    pub demo: bool,
    /// Opt-in plugins to run too (added to the manifest's `enabled`).
    pub enable: Vec<String>,
    /// Host names the API answers to besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// On SIGTERM or SIGINT, how long the operations in flight may take to finish.
    pub shutdown_timeout: Duration,
    /// The RabbitMQ the event log is relayed to, if any.
    pub amqp_url: Option<String>,
    /// What the event outbox keeps.
    pub events: EventRetention,
    /// How often the periodic reconcilers run (hosts checked, VMs compared with what
    /// their hosts run, VMs left in transient states recovered).
    pub reconcile_interval: Duration,
    /// How long finished jobs are kept in the journal.
    pub jobs_retention: Duration,
    /// What a client may hold of the API: connections, header and body read times.
    pub limits: crate::http::Limits,
    /// Web origins whose pages may call the API from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Serve the API over TLS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
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
            enable: Vec::new(),
            allowed_hosts: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            amqp_url: None,
            events: EventRetention::DEFAULT,
            reconcile_interval: Duration::from_secs(60),
            jobs_retention: Duration::from_secs(7 * 24 * 3600),
            limits: crate::http::Limits::default(),
            cors_origins: Vec::new(),
            tls: None,
        }
    }
}

/// How often the node prunes the event outbox (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub fn load_manifest(path: Option<&Path>) -> anyhow::Result<Manifest> {
    Ok(match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default(),
    })
}

/// Assembles the distribution with `store` and the data directory provided to the plugins,
/// and checks what its plugins serve over the API.
pub fn assemble(
    distribution: &Distribution,
    manifest: Manifest,
    store: Option<Arc<Store>>,
    data_dir: Option<&Path>,
) -> anyhow::Result<Kernel> {
    let mut builder = distribution.kernel_builder().manifest(manifest);
    if let Some(store) = store {
        builder = builder.provide(store);
    }
    if let Some(dir) = data_dir {
        builder = builder.provide(Arc::new(DataDir(dir.to_owned())));
    }
    let kernel = builder.build().context("assembling the distribution")?;
    flatstack_api::check(&kernel).context("assembling the distribution")?;
    Ok(kernel)
}

/// Locks the data directory, opens the store, assembles and starts the plugins, applies
/// their migrations, and recovers what a stopped node left in flight. The node owns the
/// data directory while the lock is held.
pub async fn start(
    distribution: &Distribution,
    options: &NodeOptions,
) -> anyhow::Result<(Kernel, DataDirLock)> {
    crate::metrics::install();
    let (kernel, lock) = open(distribution, options).await?;
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
    Ok((kernel, lock))
}

/// [`start`] without the recovery: locked, migrated, the plugins started.
pub async fn open(
    distribution: &Distribution,
    options: &NodeOptions,
) -> anyhow::Result<(Kernel, DataDirLock)> {
    let lock = DataDirLock::acquire(&options.data_dir)?;
    tracing::debug!(lock = %lock.path().display(), "data directory locked");
    let mut manifest = load_manifest(options.manifest.as_deref())?;
    manifest.enabled.extend(options.enable.iter().cloned());
    let store = match &options.database_url {
        Some(url) => Store::open(url).await.context("opening the database")?,
        None => Store::open_data_dir(&options.data_dir)
            .await
            .with_context(|| format!("opening the store in {}", options.data_dir.display()))?,
    };
    let kernel = assemble(
        distribution,
        manifest,
        Some(store.clone()),
        Some(&options.data_dir),
    )?;
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
    Ok((kernel, lock))
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

/// The CORS layer for `origins` (e.g. `https://console.example.com`), outside the token
/// check so that a browser's preflight is answered; `None` (no cross-origin page may read
/// an answer) when there are none.
fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|origin| {
            let parsed = origin.trim().trim_end_matches('/');
            let valid = (parsed.starts_with("https://") || parsed.starts_with("http://"))
                && !parsed.contains('*');
            if !valid {
                anyhow::bail!(
                    "--cors-origin `{origin}`: give an origin, e.g. https://console.example.com"
                );
            }
            HeaderValue::from_str(parsed).with_context(|| format!("--cors-origin `{origin}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    ))
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
    let router = flatstack_api::allow_hosts(flatstack_api::router(kernel), Vec::new());
    crate::http::serve(
        listener,
        router,
        (crate::http::Limits::default(), None),
        shutdown,
    )
    .await
    .context("serving the API")
}

/// Serves the API until SIGTERM or SIGINT (Ctrl-C), then stops cleanly: new operations
/// are refused (`503`) while those in flight finish, for at most `shutdown_timeout` (a
/// second signal stops waiting); then the API closes and the plugins stop in reverse order.
pub async fn serve(distribution: &Distribution, options: NodeOptions) -> anyhow::Result<()> {
    // The command line's certificate, else the manifest's `[tls]`: read before anything
    // starts, so that a file that cannot be read stops nothing.
    let files = match &options.tls {
        Some(files) => Some(files.clone()),
        None => load_manifest(options.manifest.as_deref())?
            .tls
            .map(|tls| (tls.cert, tls.key)),
    };
    let tls = match &files {
        Some((cert, key)) => Some(crate::http::tls(cert, key)?),
        None => None,
    };
    let (kernel, _lock) = start(distribution, &options).await?;
    let (listener, address) = bind(options.listen).await?;
    // Before the address is announced: a signal sent from then on stops the node cleanly.
    let mut signals = match StopSignals::new() {
        Ok(signals) => signals,
        Err(e) => {
            kernel.stop().await;
            return Err(e).context("handling SIGTERM and SIGINT");
        }
    };
    if let Some(url) = &options.amqp_url {
        let caller = Arc::new(flatstack_amqp::AmqpCaller::new(url.clone()));
        kernel.extensions().remote().install(caller);
    }
    // Before the API serves: a create must not slip past a registered remote veto.
    if let Err(fault) = flatstack_api::reload_remote_implementors(&kernel).await {
        kernel.stop().await;
        return Err(anyhow::anyhow!("loading the remote implementors: {fault}"));
    }
    let (router, jobs) = flatstack_api::router_with_jobs(kernel.clone());
    // The same router answers requests over the broker (which carry no `Host`).
    let amqp_api = options
        .amqp_url
        .clone()
        .map(|url| flatstack_amqp::ApiServer::start(url, router.clone()));
    let router = crate::metrics::serve(router, kernel.clone());
    let router = flatstack_api::allow_hosts(router, options.allowed_hosts.clone());
    let router = match cors(&options.cors_origins) {
        Ok(Some(cors)) => router.layer(cors),
        Ok(None) => router,
        Err(e) => {
            kernel.stop().await;
            return Err(e);
        }
    };
    let (close_api, api_closed) = tokio::sync::oneshot::channel::<()>();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut server = tokio::spawn(crate::http::serve(
        listener,
        router,
        (options.limits, tls),
        async {
            let _ = api_closed.await;
        },
    ));
    let relay = match relay_events(&kernel, options.amqp_url.as_deref()).await {
        Ok(relay) => relay,
        Err(e) => {
            kernel.stop().await;
            return Err(e);
        }
    };
    let remote_registrations = tokio::spawn(reload_remote_implementors(kernel.clone()));
    let pruner = kernel
        .get::<Store>()
        .map(|store| tokio::spawn(prune_events(store, options.events)));
    let housekeeper = kernel.get::<Store>().map(|store| {
        tokio::spawn(housekeeping(
            kernel.clone(),
            store,
            options.reconcile_interval,
            options.jobs_retention,
        ))
    });
    // The first line of output: scripts and tests read the address from it.
    println!("flatstack listening on {scheme}://{address}");
    tracing::info!(%address, data_dir = %options.data_dir.display(), "management node ready");
    if options.demo {
        let base = format!("http://{address}");
        let token = crate::token::admin_token(&options.data_dir);
        tokio::spawn(async move {
            if let Err(error) = crate::demo::create(&base, token.as_deref()).await {
                tracing::error!(%error, "demo data centre");
            }
        });
    }

    let served = tokio::select! {
        signal = signals.next() => {
            tracing::info!(
                signal,
                timeout_s = options.shutdown_timeout.as_secs_f64(),
                "stopping: refusing new operations, waiting for those in flight"
            );
            None
        }
        // The server does not end by itself; if it does, it failed.
        served = &mut server => Some(served),
    };
    let deadline = tokio::time::Instant::now() + options.shutdown_timeout;
    jobs.close();
    let (left, hurried) = tokio::select! {
        left = jobs.drain(options.shutdown_timeout) => (left, false),
        signal = signals.next() => {
            tracing::warn!(signal, "second signal: not waiting for the operations in flight");
            (jobs.drain(Duration::ZERO).await, true)
        }
    };
    if left > 0 {
        for job in jobs.running() {
            tracing::warn!(
                job = %job.uuid,
                operation = %job.operation,
                created_at = %job.created_at,
                "left unfinished: its resources may be in a transitional state"
            );
        }
        tracing::warn!(unfinished = left, "operations left unfinished");
    }
    // Requests waiting on a finished job get their answer; only those on an unfinished
    // one would wait longer, and they are cut at the deadline (at once when hurried).
    let _ = close_api.send(());
    let outcome = match served {
        Some(Ok(served)) => served.context("serving the API"),
        Some(Err(failed)) => Err(anyhow::Error::new(failed).context("the API server task failed")),
        None => {
            let grace = if hurried {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            }
            // Time enough to write the answers of the jobs that just finished.
            .max(Duration::from_secs(1));
            match tokio::time::timeout(grace, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "closing the API"),
                Ok(Err(error)) => tracing::warn!(%error, "the API server task failed"),
                Err(_) => {
                    server.abort();
                    tracing::warn!("requests still open at the deadline were cut");
                }
            }
            Ok(())
        }
    };
    for task in [pruner, housekeeper].into_iter().flatten() {
        task.abort();
    }
    remote_registrations.abort();
    // What it has not had confirmed yet goes at the next start, from its cursor; requests
    // over the broker not answered yet go to another node, or to this one when it is back.
    drop(relay);
    drop(amqp_api);
    kernel.stop().await;
    tracing::info!(unfinished = left, "management node stopped");
    outcome
}

/// SIGTERM (what systemd and container runtimes send) and SIGINT (Ctrl-C).
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Starts relaying the event log to RabbitMQ at `url`; without one, removes the relay's
/// cursor, so that a relay switched off does not hold pruning back for ever.
async fn relay_events(
    kernel: &Kernel,
    url: Option<&str>,
) -> anyhow::Result<Option<flatstack_amqp::Relay>> {
    let Some(store) = kernel.get::<Store>() else {
        return Ok(None);
    };
    let Some(url) = url else {
        store
            .drop_event_cursor(flatstack_amqp::RELAY_CURSOR)
            .await
            .context("removing the event relay's cursor")?;
        return Ok(None);
    };
    let relay = flatstack_amqp::Relay::start(store, flatstack_amqp::RelayOptions::new(url))
        .await
        .context("starting the event relay (--amqp-url)")?;
    Ok(Some(relay))
}

/// How often a node reloads the remote implementors' registrations (those made through
/// another node of the cloud; its own take effect at once).
const REMOTE_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Keeps the kernel's remote implementors to the store's registrations, every
/// [`REMOTE_RELOAD_EVERY`].
async fn reload_remote_implementors(kernel: Kernel) {
    loop {
        tokio::time::sleep(REMOTE_RELOAD_EVERY).await;
        if let Err(fault) = flatstack_api::reload_remote_implementors(&kernel).await {
            tracing::warn!(%fault, "reloading the remote implementors failed");
        }
    }
}

/// Keeps the event outbox to `retention`: at once, then every [`PRUNE_EVERY`].
async fn prune_events(store: Arc<Store>, retention: EventRetention) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.prune_events(&retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "event outbox pruned"),
            Err(error) => tracing::warn!(%error, "pruning the event outbox failed"),
        }
    }
}
