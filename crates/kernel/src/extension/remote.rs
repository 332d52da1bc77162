//! Remote implementors: services outside the node that implement a veto point, as
//! Kubernetes admission webhooks do. A point opts in ([`AsyncVetoPoint::remote_input`],
//! declared with `extension_point!(... RemoteVetoPoint ..., remote = f)`), which publishes
//! the JSON its remote implementors are shown. Registrations are made at run time (the
//! node keeps them in its store and sets them here); a transport installed at run time
//! ([`RemoteCaller`], e.g. over AMQP) carries each call.
//!
//! A remote implementor runs after the point's in-process implementors (a cheap local
//! refusal spares the round trip), in its `order`, each bounded by its own timeout, and is
//! measured like an in-process one. When it does not answer — absent (nobody consumes its
//! queue), slow (no answer in time) or broken (an answer that is not one) — its failure
//! policy decides: `fail` refuses the operation, `ignore` lets it go on.

use super::registry::{CallStats, ImplementorDescription};
use super::OrderSpec;
use crate::{Fault, FaultCode};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The shortest timeout a remote implementor may ask for.
pub const MIN_REMOTE_TIMEOUT: Duration = Duration::from_millis(10);
/// The longest: an operation never waits longer on one remote implementor.
pub const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// What happens when a remote implementor does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// No answer refuses the operation.
    Fail,
    /// No answer lets the operation go on.
    Ignore,
}

/// One registration: who implements which point, where it is reached, how long it may
/// take and what its silence means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRegistration {
    /// The point, e.g. `vm.create.pre-check`.
    pub point: String,
    /// The service's name, unique per point, e.g. `naming-policy`.
    pub name: String,
    /// Where its calls are sent (an AMQP queue).
    pub queue: String,
    /// How long a call may take, in milliseconds.
    pub timeout_ms: u64,
    /// What its silence means.
    pub failure_policy: FailurePolicy,
    /// Its place among the point's remote implementors: lower first, then by name.
    pub order: i32,
}

/// What a remote implementor answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAnswer {
    /// The operation may go on.
    Allow,
    /// The operation is refused, for this reason.
    Refuse(String),
}

/// Why a remote implementor gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteFailure {
    /// Nobody consumes its queue: the service is not running.
    #[error("it is absent (nothing consumes queue `{0}`)")]
    Absent(String),
    /// The call could not be made or its answer was not one.
    #[error("{0}")]
    Broken(String),
}

/// Carries calls to remote implementors (the AMQP transport installs one).
#[async_trait]
pub trait RemoteCaller: Send + Sync {
    /// Asks `registration` about `input` on its point; the dispatcher bounds the wait.
    async fn veto(
        &self,
        registration: &RemoteRegistration,
        input: &Value,
    ) -> Result<RemoteAnswer, RemoteFailure>;

    /// Sends `event` to the observer `registration`; returns once it is delivered to its
    /// queue (no answer is awaited). The dispatcher bounds the wait.
    async fn notify(
        &self,
        registration: &RemoteRegistration,
        event: &Value,
    ) -> Result<(), RemoteFailure>;
}

/// One remote implementor with its metrics (kept across reloads of the registrations).
pub(crate) struct Remote {
    pub registration: RemoteRegistration,
    pub stats: Arc<CallStats>,
}

/// The remote implementors of every point, and the transport that reaches them.
#[derive(Default)]
pub struct RemoteImplementors {
    points: RwLock<HashMap<String, Arc<[Arc<Remote>]>>>,
    caller: OnceLock<Arc<dyn RemoteCaller>>,
}

impl RemoteImplementors {
    /// Installs the transport; a second one is refused (`false`).
    pub fn install(&self, caller: Arc<dyn RemoteCaller>) -> bool {
        self.caller.set(caller).is_ok()
    }

    /// Whether a transport is installed.
    pub fn reachable(&self) -> bool {
        self.caller.get().is_some()
    }

    /// Replaces every registration with `registrations` (metrics of those that stay are
    /// kept).
    pub fn set(&self, registrations: Vec<RemoteRegistration>) {
        let mut points = self
            .points
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by_point: HashMap<String, Vec<Arc<Remote>>> = HashMap::new();
        for registration in registrations {
            let stats = points
                .get(&registration.point)
                .and_then(|remotes| {
                    remotes
                        .iter()
                        .find(|r| r.registration.name == registration.name)
                        .map(|r| r.stats.clone())
                })
                .unwrap_or_else(|| {
                    Arc::new(CallStats::new(
                        &registration.point,
                        &registration.name,
                        true,
                    ))
                });
            by_point
                .entry(registration.point.clone())
                .or_default()
                .push(Arc::new(Remote {
                    registration,
                    stats,
                }));
        }
        *points = by_point
            .into_iter()
            .map(|(point, mut remotes)| {
                remotes.sort_by(|a, b| {
                    (a.registration.order, &a.registration.name)
                        .cmp(&(b.registration.order, &b.registration.name))
                });
                (point, remotes.into())
            })
            .collect();
    }

    pub(crate) fn of(&self, point: &str) -> Option<Arc<[Arc<Remote>]>> {
        self.points
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(point)
            .cloned()
    }

    pub(crate) fn caller(&self) -> Option<&Arc<dyn RemoteCaller>> {
        self.caller.get()
    }

    /// The remote implementors of `point` as introspection shows them.
    pub(crate) fn describe(&self, point: &str) -> Vec<ImplementorDescription> {
        self.of(point)
            .map(|remotes| {
                remotes
                    .iter()
                    .map(|r| ImplementorDescription {
                        plugin: r.registration.name.clone(),
                        order: OrderSpec::default(),
                        async_veto: true,
                        remote: Some(r.registration.clone()),
                        stats: r.stats.snapshot(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs `call` on the transport, bounded by `remote`'s timeout (clamped to the allowed
/// range) and measured in its stats; `Err` if it timed out. Without a transport, the call
/// fails as broken. Returns the timeout too, for the message that reports it.
async fn bounded<'a, T>(
    remote: &Remote,
    caller: Option<&'a Arc<dyn RemoteCaller>>,
    call: impl FnOnce(
        &'a Arc<dyn RemoteCaller>,
    ) -> futures::future::BoxFuture<'a, Result<T, RemoteFailure>>,
) -> (
    Result<Result<T, RemoteFailure>, tokio::time::error::Elapsed>,
    Duration,
) {
    let timeout = Duration::from_millis(remote.registration.timeout_ms)
        .clamp(MIN_REMOTE_TIMEOUT, MAX_REMOTE_TIMEOUT);
    let start = quanta::Instant::now();
    let outcome = match caller {
        Some(caller) => tokio::time::timeout(timeout, call(caller)).await,
        None => Ok(Err(RemoteFailure::Broken(
            "this node has no broker to reach it (serve --amqp-url)".into(),
        ))),
    };
    remote.stats.record(start.elapsed());
    (outcome, timeout)
}

/// Asks one remote implementor, bounded by its timeout, measured; its silence is decided
/// by its policy. `Ok(None)`: it allows (or its silence is ignored).
pub(crate) async fn ask(
    point: &'static str,
    remote: &Remote,
    caller: Option<&Arc<dyn RemoteCaller>>,
    input: &Value,
) -> Option<Fault> {
    let registration = &remote.registration;
    let (answer, timeout) =
        bounded(remote, caller, |caller| caller.veto(registration, input)).await;
    let name = registration.name.as_str();
    let (message, code) = match answer {
        Ok(Ok(RemoteAnswer::Allow)) => return None,
        Ok(Ok(RemoteAnswer::Refuse(reason))) => {
            remote.stats.vetoes.fetch_add(1, Relaxed);
            tracing::info!(point, remote = name, %reason, "vetoed by a remote implementor");
            return Some(
                Fault::new(
                    FaultCode::Vetoed,
                    format!("remote `{name}` vetoed `{point}`: {reason}"),
                )
                .with_detail("remote", name)
                .with_detail("point", point),
            );
        }
        Ok(Err(failure)) => {
            remote.stats.errors.fetch_add(1, Relaxed);
            (
                format!("remote `{name}` on `{point}`: {failure}"),
                FaultCode::Unavailable,
            )
        }
        Err(_) => {
            remote.stats.timeouts.fetch_add(1, Relaxed);
            (
                format!("remote `{name}` did not answer `{point}` within {timeout:?}"),
                FaultCode::Timeout,
            )
        }
    };
    match registration.failure_policy {
        FailurePolicy::Ignore => {
            tracing::warn!(point, remote = name, %message, "ignored (failure policy `ignore`)");
            None
        }
        FailurePolicy::Fail => {
            tracing::warn!(point, remote = name, %message, "refused (failure policy `fail`)");
            Some(
                Fault::new(code, message)
                    .with_detail("remote", name)
                    .with_detail("point", point)
                    .with_detail("failure_policy", "fail"),
            )
        }
    }
}

/// Sends `event` to one remote observer, bounded by its timeout, measured; a failure is
/// logged and counted (an observer never stops the flow, whatever its policy).
pub(crate) async fn notify(
    point: &'static str,
    remote: &Remote,
    caller: Option<&Arc<dyn RemoteCaller>>,
    event: &Value,
) {
    let registration = &remote.registration;
    let (sent, timeout) =
        bounded(remote, caller, |caller| caller.notify(registration, event)).await;
    let name = registration.name.as_str();
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => {
            remote.stats.errors.fetch_add(1, Relaxed);
            tracing::warn!(point, remote = name, %failure, "a remote observer was not reached");
        }
        Err(_) => {
            remote.stats.timeouts.fetch_add(1, Relaxed);
            tracing::warn!(
                point,
                remote = name,
                ?timeout,
                "a remote observer was not reached in time"
            );
        }
    }
}

/// The JSON a point's remote implementors are shown.
pub type Json = Value;

/// Accepts `value` as JSON for a point's remote implementors (what `remote = f` gives).
pub fn to_remote_input<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
