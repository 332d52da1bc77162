//! `bench auth`: what authentication and authorization cost a request, beside the same
//! request without them, on a node started in process (its real identity plugin and
//! store). Requests go through the router in process (`tower::ServiceExt::oneshot`), so
//! what is measured is the layer, not the network.

use crate::bench::BenchNode;
use crate::node::NodeOptions;
use crate::Distribution;
use anyhow::Context;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Runs `requests` of each kind, best of three rounds.
pub(crate) async fn run(distribution: &Distribution, requests: u32) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("a temporary data directory")?;
    let options = NodeOptions::new(temp.path().join("node"), ([127, 0, 0, 1], 0).into());
    let node = BenchNode::start(distribution, &options).await?;
    let outcome = measure(&node, requests).await;
    node.stop().await?;
    let figures = outcome?;
    println!("one request at a time through the router in process, {requests} each (mean):");
    for (what, cost) in &figures {
        println!("  {what:<44} {:>8.2} µs", cost.as_secs_f64() * 1e6);
    }
    let raw = figures[0].1.as_secs_f64();
    let cached = figures[1].1.as_secs_f64();
    println!(
        "  authentication (cached token) per request   {:>8.2} µs ({:.2} x the raw request)",
        (cached - raw) * 1e6,
        cached / raw
    );
    Ok(())
}

async fn measure(node: &BenchNode, requests: u32) -> anyhow::Result<Vec<(String, Duration)>> {
    let token = node
        .token
        .clone()
        .context("the node wrote no admin token")?;
    let handler = Router::new().route("/x", get(|| async { "ok" }).post(|| async { "ok" }));
    let guarded = flatstack_api::authenticated(handler.clone(), &node.kernel);
    let bearer = format!("Bearer {token}");
    let cases: [(&str, &Router, Method, Option<&str>); 4] = [
        (
            "raw request (no authentication)",
            &handler,
            Method::GET,
            None,
        ),
        (
            "GET with a token (cached)",
            &guarded,
            Method::GET,
            Some(&bearer),
        ),
        (
            "POST with a token (cached, audited)",
            &guarded,
            Method::POST,
            Some(&bearer),
        ),
        (
            "GET with an unknown token (a store read)",
            &guarded,
            Method::GET,
            Some("Bearer fst_unknown"),
        ),
    ];
    let mut figures = Vec::new();
    for (what, router, method, authorization) in cases {
        // The best of three rounds: the mean per request of the least disturbed.
        let mut best = Duration::MAX;
        for _ in 0..3 {
            best = best.min(time(router, requests, &method, authorization).await?);
        }
        figures.push((what.to_owned(), best));
    }
    Ok(figures)
}

/// The mean time of `count` requests `method /x` through `router`, one after another.
async fn time(
    router: &Router,
    count: u32,
    method: &Method,
    authorization: Option<&str>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..count {
        let mut request = Request::builder().method(method.clone()).uri("/x");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = router.clone().oneshot(request.body(Body::empty())?).await?;
        let status = response.status();
        if status != StatusCode::OK && status != StatusCode::UNAUTHORIZED {
            anyhow::bail!("answered {status}");
        }
    }
    Ok(started.elapsed() / count.max(1))
}
