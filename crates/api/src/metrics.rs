//! What the node measures, through the `metrics` facade (the program installs the
//! Prometheus recorder and serves `/metrics`): every HTTP request by route and status, with
//! its latency; jobs by kind and outcome; and, read at each scrape from what the node
//! keeps anyway, extension calls per (point, implementor), the bus's busy lanes, store
//! transactions, the event log's newest sequence and readers' backlog, and capacities.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use flatstack_header::infra::{HostQuery, HostRecord};
use flatstack_header::network::IpUsage;
use flatstack_header::record;
use flatstack_header::storage::{PrimaryStorageQuery, PrimaryStorageRecord};
use flatstack_kernel::Kernel;
use flatstack_store::Store;
use metrics::{counter, gauge, histogram};
use std::time::Instant;
use tracing::Instrument;

/// The latency histogram's buckets, in seconds: from a cached read to a slow create.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The name of the HTTP latency histogram (for the recorder's buckets).
pub const HTTP_DURATION: &str = "flatstack_http_request_duration_seconds";

/// Counts and times each request by method, route (its template, e.g.
/// `/v1/{kind}/{uuid}`, never the raw path: bounded labels) and status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    // A trace's root for the request (disabled, and free, unless traces are exported).
    let span = tracing::debug_span!(
        "http.request",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let code = response.status().as_u16();
    span.record("http.response.status_code", code);
    let latency = started.elapsed();
    // The access log: a URI path is visible ASCII only (the HTTP parser refuses the rest),
    // so nothing a client sends reaches a terminal raw through it.
    let job = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.strip_prefix("/v1/jobs/"))
        .unwrap_or("");
    tracing::info!(
        target: "flatstack::access",
        method = %method,
        path = %path,
        status = code,
        latency_ms = latency.as_secs_f64() * 1e3,
        job,
        "request"
    );
    let status = code.to_string();
    counter!("flatstack_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(latency.as_secs_f64());
    response
}

/// Sets the figures read from the node's state, just before they are rendered.
pub async fn refresh(kernel: &Kernel) {
    for point in kernel.extensions().describe() {
        for imp in point.implementors {
            let labels = [
                ("point", point.name.clone()),
                ("implementor", imp.plugin.clone()),
                ("remote", imp.remote.is_some().to_string()),
            ];
            let stats = &imp.stats;
            counter!("flatstack_extension_calls_total", &labels).absolute(stats.calls);
            counter!("flatstack_extension_errors_total", &labels).absolute(stats.errors);
            counter!("flatstack_extension_vetoes_total", &labels).absolute(stats.vetoes);
            counter!("flatstack_extension_panics_total", &labels).absolute(stats.panics);
            counter!("flatstack_extension_timeouts_total", &labels).absolute(stats.timeouts);
            gauge!("flatstack_extension_call_mean_seconds", &labels)
                .set(stats.mean_ns as f64 / 1e9);
            gauge!("flatstack_extension_call_max_seconds", &labels).set(stats.max_ns as f64 / 1e9);
        }
    }
    gauge!("flatstack_bus_busy_lanes").set(kernel.bus().busy_resources() as f64);
    gauge!("flatstack_bus_queued_requests").set(kernel.bus().queued_requests() as f64);
    if let Some(store) = kernel.get::<Store>() {
        counter!("flatstack_store_transactions_total").absolute(store.transactions());
        counter!("flatstack_store_commits_total").absolute(store.commits());
        if let Ok(newest) = store.newest_event_seq().await {
            gauge!("flatstack_events_newest_seq").set(newest as f64);
            if let Ok(cursors) = store.event_cursors().await {
                for cursor in cursors {
                    let backlog = (newest - cursor.seq).max(0);
                    gauge!("flatstack_events_backlog", "reader" => cursor.name).set(backlog as f64);
                }
            }
        }
    }
    if let Ok(hosts) = record::find::<HostRecord>(kernel, HostQuery::default()).await {
        for host in hosts {
            let labels = [
                ("host", host.uuid.clone()),
                ("cluster", host.cluster_uuid.clone()),
            ];
            gauge!("flatstack_host_cpu_capacity", &labels).set(host.cpu_capacity as f64);
            gauge!("flatstack_host_cpu_available", &labels).set(host.available_cpu as f64);
            gauge!("flatstack_host_memory_capacity_bytes", &labels)
                .set(host.memory_capacity as f64);
            gauge!("flatstack_host_memory_available_bytes", &labels)
                .set(host.available_memory as f64);
        }
    }
    if let Ok(ranges) = kernel.bus().ask(IpUsage {}).await {
        for range in ranges {
            let labels = [
                ("ip_range", range.ip_range_uuid),
                ("l3_network", range.l3_network_uuid),
            ];
            gauge!("flatstack_ip_range_addresses", &labels).set(range.total as f64);
            gauge!("flatstack_ip_range_addresses_used", &labels).set(range.used as f64);
        }
    }
    if let Ok(storages) =
        record::find::<PrimaryStorageRecord>(kernel, PrimaryStorageQuery::default()).await
    {
        for storage in storages {
            let labels = [("storage", storage.uuid.clone())];
            gauge!("flatstack_primary_storage_capacity_bytes", &labels)
                .set(storage.total_capacity as f64);
            gauge!("flatstack_primary_storage_available_bytes", &labels)
                .set(storage.available_capacity as f64);
        }
    }
}
