//! OpenTelemetry trace export, off unless the operator asks (`serve --otlp-endpoint`): the
//! node's spans — each HTTP request (`http.request`), each operation a job runs
//! (`operation`), each flow step (`flow.step`) and the extension calls in them — sent to an
//! OTLP/HTTP collector (protobuf, `<endpoint>/v1/traces`) by a batch exporter on its own
//! thread. The spans are `DEBUG` spans of Flatstack's own crates: without an exporter they
//! are disabled where they are made (the logs' filter stops at `INFO`), so they cost
//! nothing.

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Why traces cannot be exported as asked.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The endpoint is not an `http` or `https` URL.
    #[error("--otlp-endpoint: `{0}` is not an http(s) URL (e.g. http://127.0.0.1:4318)")]
    Endpoint(String),
    /// The exporter refused its configuration.
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
}

/// The exporter: its spans are flushed and it stops when this is dropped (at the node's
/// end).
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// An exporter to the collector at `endpoint` (its base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` has it), its HTTP requests sent on `runtime`.
    pub fn start(endpoint: &str, runtime: tokio::runtime::Handle) -> Result<Traces, TraceError> {
        let url = reqwest::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| TraceError::Endpoint(flatstack_api::escape(endpoint).into_owned()))?;
        let traces = format!("{}/v1/traces", url.as_str().trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpClient {
                http: reqwest::Client::new(),
                runtime,
            })
            .with_endpoint(traces)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("flatstack").build())
            .build();
        Ok(Traces { provider })
    }

    /// The layer that turns Flatstack's spans into OpenTelemetry spans (with the warnings
    /// and errors logged in them as span events).
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("flatstack"))
            .with_filter(FilterFn::new(exported))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing the traces to the OTLP collector: {e}");
        }
    }
}

/// Flatstack's spans down to `DEBUG`, and the warnings and errors logged in them.
fn exported(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("flatstack")
        && if meta.is_span() {
            *meta.level() <= Level::DEBUG
        } else {
            *meta.level() <= Level::WARN
        }
}

/// The exporter's HTTP client: the node's reqwest, each request run on the node's runtime
/// (the exporter's own thread has none).
#[derive(Debug)]
struct OtlpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let response = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut answer = Response::builder().status(status);
        if let Some(all) = answer.headers_mut() {
            *all = headers;
        }
        Ok(answer.body(body)?)
    }
}
