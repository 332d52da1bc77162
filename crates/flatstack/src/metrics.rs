//! `/metrics`: the Prometheus text format, rendered from the `metrics` facade's recorder,
//! installed once per process (a second node in one process shares it).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use flatstack_kernel::Kernel;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Buckets for what takes microseconds to milliseconds, with a tail to seconds.
const FAST_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the process's recorder, if not yet: before the kernel is assembled, so that
/// what its extension points and transactions record from the first call is kept.
pub(crate) fn install() {
    let _ = handle();
}

/// The process's recorder, installed at the first call; `None` if another recorder was
/// installed first (then `/metrics` answers 503).
fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(flatstack_api::metrics::HTTP_DURATION.to_owned()),
                    flatstack_api::metrics::LATENCY_BUCKETS,
                )
                .ok()?
                // Extension calls and transactions take microseconds to milliseconds.
                .set_buckets_for_metric(
                    Matcher::Full(flatstack_kernel::extension::EXTENSION_CALL_SECONDS.to_owned()),
                    FAST_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(flatstack_store::TRANSACTION_SECONDS.to_owned()),
                    FAST_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics: no recorder installed; /metrics answers 503");
                    None
                }
            }
        })
        .clone()
}

/// Installs the recorder (so that what is counted from now on is kept) and adds `/metrics`.
pub(crate) fn serve(router: Router, kernel: Kernel) -> Router {
    let handle = handle();
    let metrics = Router::new().route(
        "/metrics",
        get({
            let kernel = kernel.clone();
            move || {
                let (kernel, handle) = (kernel.clone(), handle.clone());
                async move {
                    let Some(handle) = handle else {
                        return (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder")
                            .into_response();
                    };
                    flatstack_api::metrics::refresh(&kernel).await;
                    handle.run_upkeep();
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                        .into_response()
                }
            }
        }),
    );
    // A token is needed here too: the figures tell what the cloud holds.
    router.merge(flatstack_api::authenticated(metrics, &kernel))
}
