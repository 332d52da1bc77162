//! Traces exported over OTLP/HTTP (`serve --otlp-endpoint`) to a collector played by the
//! test: a VM create is one trace, from the HTTP request through its operation to each
//! step of its flow; a bad endpoint stops the node at once.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::Node;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A collector on a free port: every span it was sent.
async fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes| async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut spans = spans.lock().expect("spans");
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    ""
                },
            ),
        )
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), spans)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_create_is_one_trace_from_request_to_flow_steps() {
    let (endpoint, spans) = collector().await;
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &["--otlp-endpoint".as_ref(), endpoint.as_str().as_ref()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let dc = common::cloud::data_centre(&node).await;
    let vm = node
        .create("vm-instances", common::cloud::vm_body(&dc, "traced"))
        .await;
    assert_eq!(vm["state"], "Running");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (operation, steps) = loop {
        let found = spans.lock().expect("spans").clone();
        let operation = found.iter().find(|s| {
            s.name == "operation" && attribute(s, "kind").as_deref() == Some("vm.create")
        });
        if let Some(operation) = operation {
            let steps: Vec<Span> = found
                .iter()
                .filter(|s| s.name == "flow.step" && s.trace_id == operation.trace_id)
                .cloned()
                .collect();
            if steps
                .iter()
                .any(|s| attribute(s, "step").as_deref() == Some("vm.running"))
            {
                break (operation.clone(), steps);
            }
        }
        assert!(Instant::now() < deadline, "no vm.create trace: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every step of the create's flow, in the operation's trace.
    for step in [
        "vm.record",
        "host.allocate",
        "nic.allocate",
        "hypervisor.start",
        "vm.running",
    ] {
        assert!(
            steps
                .iter()
                .any(|s| attribute(s, "step").as_deref() == Some(step)
                    && attribute(s, "flow").as_deref() == Some("vm.create")),
            "{step} is not in the trace: {steps:?}"
        );
    }
    // The operation is a child of the request that started it.
    let found = spans.lock().expect("spans").clone();
    let request = found
        .iter()
        .find(|s| s.span_id == operation.parent_span_id)
        .expect("the operation's parent was exported");
    assert_eq!(request.name, "http.request");
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/{kind}")
    );
    assert_eq!(
        attribute(request, "http.request.method").as_deref(),
        Some("POST")
    );
}

#[test]
fn a_bad_endpoint_stops_the_node_with_a_clear_error() {
    let dir = common::data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--otlp-endpoint", "ftp://collector"])
        .env_remove("FLATSTACK_DATABASE_URL")
        .output()
        .expect("flatstack runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--otlp-endpoint: `ftp://collector` is not an http(s) URL"),
        "{err}"
    );
}
