//! Kernel overheads, each beside the raw cost of the same work in the same run:
//! - a veto point with 10 implementors vs 10 direct `dyn` calls;
//! - bus request/reply vs a raw tokio `mpsc` + `oneshot` round trip, sequential and with
//!   100 concurrent callers;
//! - a 10-step flow vs 10 directly awaited calls.
//!
//! `cargo bench -p flatstack-kernel`; the ratios are written up in docs/performance.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use flatstack_kernel::schemars::JsonSchema;
use flatstack_kernel::{
    async_trait, ExtensionPoint, Fault, Flow, Kernel, Message, Plugin, PluginBuilder, Request,
    Step, Veto, VetoPoint,
};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const IMPLEMENTORS: usize = 10;

// ---- veto point ----
struct Check;
impl ExtensionPoint for Check {
    const NAME: &'static str = "bench.check";
    const DESCRIPTION: &'static str = "bench";
}
impl VetoPoint for Check {
    type Input = u64;
}

/// The same work for the dispatcher and the baseline: a comparison on the input.
trait DirectCheck: Send + Sync {
    fn check(&self, input: &u64) -> Result<(), Fault>;
}
struct Limit(u64);
impl DirectCheck for Limit {
    #[inline(never)]
    fn check(&self, input: &u64) -> Result<(), Fault> {
        if *input > self.0 {
            Err(Fault::conflict("over"))
        } else {
            Ok(())
        }
    }
}
impl Veto<Check> for Limit {
    #[inline(never)]
    fn check(&self, input: &u64) -> Result<(), Fault> {
        DirectCheck::check(self, input)
    }
}

struct VetoPlugin(&'static str);
impl Plugin for VetoPlugin {
    fn name(&self) -> &'static str {
        self.0
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.veto::<Check>(Limit(u64::MAX));
    }
}

const NAMES: [&str; IMPLEMENTORS] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];

fn veto(c: &mut Criterion) {
    let mut builder = Kernel::builder();
    for name in NAMES {
        builder = builder.plugin(VetoPlugin(name));
    }
    let kernel = builder.build().expect("bench kernel");
    let direct: Vec<Box<dyn DirectCheck>> = (0..IMPLEMENTORS)
        .map(|_| Box::new(Limit(u64::MAX)) as Box<dyn DirectCheck>)
        .collect();
    let mut g = c.benchmark_group("veto_10_implementors");
    g.bench_function("raw_dyn_calls", |b| {
        b.iter(|| {
            for d in &direct {
                black_box(d.check(black_box(&7))).ok();
            }
        })
    });
    g.bench_function("extension_point", |b| {
        b.iter(|| black_box(kernel.extensions().veto::<Check>(black_box(&7))))
    });
    g.finish();
}

// ---- bus ----
#[derive(Serialize, Deserialize, JsonSchema)]
struct Ping(u64);
impl Message for Ping {
    const NAME: &'static str = "bench.ping";
}
impl Request for Ping {
    type Reply = u64;
}

/// Like `Ping`, but the handler waits once, so it takes the spawned-task path.
#[derive(Serialize, Deserialize, JsonSchema)]
struct PingWaits(u64);
impl Message for PingWaits {
    const NAME: &'static str = "bench.ping-waits";
}
impl Request for PingWaits {
    type Reply = u64;
}

struct PingPlugin;
impl Plugin for PingPlugin {
    fn name(&self) -> &'static str {
        "ping"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.service("ping", ())
            .handle::<Ping, _, _>(|_, Ping(n), _| async move { Ok(n + 1) })
            .handle::<PingWaits, _, _>(|_, PingWaits(n), _| async move {
                tokio::task::yield_now().await;
                Ok(n + 1)
            });
    }
}

type RawRequest = (u64, oneshot::Sender<u64>);

/// The baseline: one server task answering over mpsc + oneshot.
fn raw_server(rt: &Runtime) -> mpsc::Sender<RawRequest> {
    let (tx, mut rx) = mpsc::channel::<RawRequest>(1024);
    rt.spawn(async move {
        while let Some((n, reply)) = rx.recv().await {
            let _ = reply.send(n + 1);
        }
    });
    tx
}

async fn raw_call(tx: &mpsc::Sender<RawRequest>, n: u64) -> u64 {
    let (reply, answer) = oneshot::channel();
    tx.send((n, reply)).await.expect("raw server alive");
    answer.await.expect("raw server replies")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn bus(c: &mut Criterion) {
    let rt = runtime();
    let kernel = Kernel::builder()
        .plugin(PingPlugin)
        .build()
        .expect("bench kernel");
    let raw = raw_server(&rt);

    let mut g = c.benchmark_group("request_reply_sequential");
    g.bench_function("raw_mpsc_oneshot", |b| {
        b.to_async(&rt).iter(|| raw_call(&raw, black_box(1)))
    });
    g.bench_function("bus", |b| {
        b.to_async(&rt).iter(|| async {
            kernel
                .request("ping", Ping(black_box(1)))
                .await
                .expect("reply")
        })
    });
    g.bench_function("bus_handler_that_waits", |b| {
        b.to_async(&rt).iter(|| async {
            kernel
                .request("ping", PingWaits(black_box(1)))
                .await
                .expect("reply")
        })
    });
    g.bench_function("bus_resource_lane", |b| {
        b.to_async(&rt).iter(|| async {
            kernel
                .request("ping", Ping(black_box(1)))
                .resource("vm-1")
                .await
                .expect("reply")
        })
    });
    g.finish();

    // 100 callers at once, each making one request: time per batch of 100.
    let mut g = c.benchmark_group("request_reply_100_concurrent");
    g.throughput(criterion::Throughput::Elements(100));
    g.bench_function("raw_mpsc_oneshot", |b| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..100)
                .map(|i| {
                    let raw = raw.clone();
                    tokio::spawn(async move { raw_call(&raw, i).await })
                })
                .collect();
            for call in calls {
                call.await.expect("joined");
            }
        })
    });
    g.bench_function("bus", |b| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..100)
                .map(|i| {
                    let k = kernel.clone();
                    tokio::spawn(async move { k.request("ping", Ping(i)).await })
                })
                .collect();
            for call in calls {
                call.await.expect("joined").expect("reply");
            }
        })
    });
    g.finish();
}

// ---- flow ----
struct Ctx(u64);
struct Add;
#[async_trait]
impl Step<Ctx> for Add {
    fn name(&self) -> &str {
        "add"
    }
    async fn run(&self, ctx: &mut Ctx) -> Result<(), Fault> {
        ctx.0 = direct_step(ctx.0).await;
        Ok(())
    }
}

#[inline(never)]
async fn direct_step(n: u64) -> u64 {
    black_box(n + 1)
}

fn flow(c: &mut Criterion) {
    let rt = runtime();
    let mut flow = Flow::new("bench");
    for _ in 0..10 {
        flow = flow.step(Add);
    }
    let sink = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("flow_10_steps");
    g.bench_function("raw_awaited_calls", |b| {
        b.to_async(&rt).iter_batched(
            || Ctx(0),
            |mut ctx| {
                let sink = sink.clone();
                async move {
                    for _ in 0..10 {
                        ctx.0 = direct_step(ctx.0).await;
                    }
                    sink.fetch_add(ctx.0, Ordering::Relaxed);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("flow", |b| {
        b.to_async(&rt).iter_batched(
            || Ctx(0),
            |mut ctx| {
                let (flow, sink) = (&flow, sink.clone());
                async move {
                    flow.run(&mut ctx).await.expect("flow runs");
                    sink.fetch_add(ctx.0, Ordering::Relaxed);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, veto, bus, flow);
criterion_main!(benches);
