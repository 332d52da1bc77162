//! `/metrics`: the Prometheus text format, rendered from the `metrics` facade's recorder,
//! installed once per process (a second node in one process shares it).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use flatstack_kernel::Kernel;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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
