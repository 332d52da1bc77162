//! The message bus: request/reply, timeouts, per-resource serialisation, events, JSON.

use flatstack_kernel::bus::{Envelope, EventEnvelope, Loopback};
use flatstack_kernel::schemars::JsonSchema;
use flatstack_kernel::{
    Event, Fault, FaultCode, Kernel, Message, MessageContext, Plugin, PluginBuilder, Request,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}
impl Message for Add {
    const NAME: &'static str = "calc.add";
}
impl Request for Add {
    type Reply = i64;
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Sleep {
    ms: u64,
}
impl Message for Sleep {
    const NAME: &'static str = "calc.sleep";
}
impl Request for Sleep {
    type Reply = ();
}

/// Reads a resource: answered beside its queue.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Peek;
impl Message for Peek {
    const NAME: &'static str = "calc.peek";
    const READS_ONLY: bool = true;
}
impl Request for Peek {
    type Reply = ();
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Explode;
impl Message for Explode {
    const NAME: &'static str = "calc.explode";
}
impl Request for Explode {
    type Reply = ();
}

/// Touches a resource: notes how many touches of the same resource overlap.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Touch;
impl Message for Touch {
    const NAME: &'static str = "calc.touch";
}
impl Request for Touch {
    type Reply = ();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Added {
    sum: i64,
}
impl Message for Added {
    const NAME: &'static str = "calc.added";
}
impl Event for Added {}

#[derive(Default)]
struct Calc {
    /// Per resource: touches in progress; `max_overlap` is the worst seen on one resource.
    in_progress: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    max_overlap: AtomicUsize,
    /// Touches in progress across all resources, and the worst seen.
    global: AtomicUsize,
    max_global: AtomicUsize,
}

struct CalcPlugin(Arc<Calc>);
impl Plugin for CalcPlugin {
    fn name(&self) -> &'static str {
        "calc"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.event::<Added>();
        b.service_arc("calc", self.0.clone())
            .handle::<Add, _, _>(|_, m, cx: MessageContext| async move {
                let sum = m.a + m.b;
                cx.kernel.bus().publish(Added { sum });
                Ok(sum)
            })
            .handle::<Sleep, _, _>(|_, m, _| async move {
                tokio::time::sleep(Duration::from_millis(m.ms)).await;
                Ok(())
            })
            .handle::<Peek, _, _>(|_, _, _| async move { Ok(()) })
            .handle::<Explode, _, _>(|_, _, _| async move {
                if true {
                    panic!("calculator on fire");
                }
                Ok(())
            })
            .handle::<Touch, _, _>(|calc, _, cx| async move {
                let id = cx.resource_id()?.to_owned();
                let overlap = {
                    let mut map = calc.in_progress.lock().unwrap();
                    let n = map.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                calc.max_overlap.fetch_max(overlap, Ordering::SeqCst);
                let g = calc.global.fetch_add(1, Ordering::SeqCst) + 1;
                calc.max_global.fetch_max(g, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                tokio::task::yield_now().await;
                calc.global.fetch_sub(1, Ordering::SeqCst);
                *calc.in_progress.lock().unwrap().get_mut(&id).unwrap() -= 1;
                Ok(())
            });
    }
}

fn kernel() -> (Kernel, Arc<Calc>) {
    let calc = Arc::new(Calc::default());
    let k = Kernel::builder()
        .plugin(CalcPlugin(calc.clone()))
        .build()
        .unwrap();
    (k, calc)
}

#[tokio::test]
async fn typed_request_reply() {
    let (k, _) = kernel();
    assert_eq!(k.request("calc", Add { a: 2, b: 40 }).await.unwrap(), 42);
}

#[tokio::test]
async fn a_request_times_out_with_a_clear_fault() {
    let (k, _) = kernel();
    let fault = k
        .request("calc", Sleep { ms: 10_000 })
        .timeout(Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Timeout);
    assert!(fault.message.contains("calc.sleep"), "{}", fault.message);
    let fault = k
        .request("calc", Sleep { ms: 10_000 })
        .resource("r1")
        .timeout(Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::Timeout);
}

#[tokio::test]
async fn unknown_service_and_panicking_handler_are_faults_not_crashes() {
    let (k, _) = kernel();
    let fault = k.request("nope", Add { a: 1, b: 1 }).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::NotFound);
    let fault = k.request("calc", Explode).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal);
    assert!(
        fault.message.contains("calculator on fire"),
        "{}",
        fault.message
    );
    let fault = k.request("calc", Explode).resource("r").await.unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal);
    // The bus still works afterwards, including that resource's lane.
    k.request("calc", Touch).resource("r").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_one_resource_never_overlap_but_different_resources_do() {
    let (k, calc) = kernel();
    let mut calls = Vec::new();
    for i in 0..200 {
        let k = k.clone();
        calls.push(tokio::spawn(async move {
            k.request("calc", Touch)
                .resource(format!("vm-{}", i % 4))
                .await
        }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        calc.max_overlap.load(Ordering::SeqCst),
        1,
        "two requests for one resource ran at the same time"
    );
    assert!(
        calc.max_global.load(Ordering::SeqCst) > 1,
        "different resources should run in parallel"
    );
    // Idle lanes retire.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(k.bus().busy_resources(), 0);
}

#[tokio::test]
async fn a_read_does_not_wait_behind_the_resources_queue() {
    let (k, _) = kernel();
    let slow = {
        let k = k.clone();
        tokio::spawn(async move { k.request("calc", Sleep { ms: 2000 }).resource("vm-1").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the sleep, a write would time out; the read answers at once, typed
    // and as JSON.
    let queued = k
        .request("calc", Touch)
        .resource("vm-1")
        .timeout(Duration::from_millis(300))
        .await;
    assert_eq!(queued.unwrap_err().code, FaultCode::Timeout);
    k.request("calc", Peek)
        .resource("vm-1")
        .timeout(Duration::from_millis(300))
        .await
        .expect("the read answers beside the queue");
    let envelope = Envelope {
        service: "calc".into(),
        resource: Some("vm-1".into()),
        message: "calc.peek".into(),
        body: json!(null),
        operation: None,
    };
    k.bus()
        .request_json(envelope, Some(Duration::from_millis(300)))
        .await
        .expect("and as JSON");
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_waiting_behind_their_resources_lane_are_counted() {
    let (k, _) = kernel();
    assert_eq!(k.bus().queued_requests(), 0);
    let mut calls = Vec::new();
    for _ in 0..3 {
        let k = k.clone();
        calls.push(tokio::spawn(async move {
            k.request("calc", Sleep { ms: 200 }).resource("vm-1").await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One sleeping, two behind it; one lane busy.
    assert_eq!(k.bus().queued_requests(), 2);
    assert_eq!(k.bus().busy_resources(), 1);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(k.bus().queued_requests(), 0);
}

#[tokio::test]
async fn a_resource_request_without_a_resource_is_refused() {
    let (k, _) = kernel();
    let fault = k.request("calc", Touch).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::InvalidArgument);
    assert_eq!(fault.detail_str("field"), Some("resource"));
}

#[tokio::test]
async fn json_requests_decode_by_name_and_name_bad_fields() {
    let (k, _) = kernel();
    let env = |body| Envelope {
        service: "calc".into(),
        resource: None,
        message: "calc.add".into(),
        body,
        operation: None,
    };
    let reply = k
        .bus()
        .request_json(env(json!({"a": 1, "b": 2})), None)
        .await;
    assert_eq!(reply.unwrap(), json!(3));
    let fault = k
        .bus()
        .request_json(env(json!({"a": 1})), None)
        .await
        .unwrap_err();
    assert_eq!(fault.code, FaultCode::InvalidArgument);
    assert_eq!(fault.detail_str("field"), Some("b"));
    let fault = k
        .bus()
        .request_json(env(json!({"a": "one", "b": 2})), None)
        .await
        .unwrap_err();
    assert_eq!(fault.detail_str("field"), Some("a"));
    let mut unknown = env(json!({}));
    unknown.message = "calc.divide".into();
    let fault = k.bus().request_json(unknown, None).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::InvalidArgument);
    assert!(fault.message.contains("calc.divide"));
}

#[tokio::test]
async fn events_reach_typed_and_pattern_subscribers() {
    let (k, _) = kernel();
    let mut typed = k.bus().subscribe::<Added>();
    let mut all_calc = k.bus().subscribe_pattern("calc.*");
    let mut other = k.bus().subscribe_pattern("vm.#");
    k.request("calc", Add { a: 1, b: 2 }).await.unwrap();
    assert_eq!(typed.recv().await.unwrap(), Added { sum: 3 });
    assert_eq!(
        all_calc.recv().await.unwrap(),
        EventEnvelope {
            name: "calc.added".into(),
            body: json!({"sum": 3})
        }
    );
    assert!(other.try_recv().is_err());
    // Dropped subscribers are pruned, not an error.
    drop(typed);
    k.request("calc", Add { a: 1, b: 1 }).await.unwrap();
    assert_eq!(all_calc.recv().await.unwrap().body, json!({"sum": 2}));
}

#[tokio::test]
async fn messages_cross_a_transport_as_json() {
    // `node` has the calc service; `edge` has none and reaches it through the transport.
    let (node, _) = kernel();
    struct Empty;
    impl Plugin for Empty {
        fn name(&self) -> &'static str {
            "empty"
        }
        fn build(&self, b: &mut PluginBuilder<'_>) {
            b.event::<Added>();
        }
    }
    let edge = Kernel::builder().plugin(Empty).build().unwrap();
    let fault = edge.request("calc", Add { a: 1, b: 1 }).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::NotFound, "no transport yet");

    edge.bus().attach_transport(Arc::new(Loopback::new(&node)));
    node.bus().attach_transport(Arc::new(Loopback::new(&edge)));
    let mut remote_events = edge.bus().subscribe::<Added>();
    assert_eq!(
        edge.request("calc", Add { a: 20, b: 22 }).await.unwrap(),
        42
    );
    assert_eq!(remote_events.recv().await.unwrap(), Added { sum: 42 });
    let fault: Fault = edge.request("calc", Explode).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::Internal, "faults cross intact");
}

#[tokio::test]
async fn message_schemas_are_registered_by_name() {
    let (k, _) = kernel();
    let add = k.bus().messages().get("calc.add").unwrap();
    let schema = add.schema();
    assert_eq!(schema["properties"]["a"]["type"], "integer");
    assert_eq!(add.reply_schema().unwrap()["type"], "integer");
    assert!(k.bus().messages().get("calc.added").is_some());
    let services = k.bus().services();
    assert_eq!(services[0].id, "calc");
    assert!(services[0].messages.contains(&"calc.touch"));
}
