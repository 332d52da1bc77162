//! Registering services outside the node as implementors of an extension point
//! (`/v1/extension-points/{point}/remote-implementors`). These routes call no extension
//! point themselves, so a broken remote implementor can always be removed.

use crate::error::ApiError;
use crate::events::store;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flatstack_kernel::extension::remote::{
    FailurePolicy, RemoteRegistration, MAX_REMOTE_TIMEOUT, MIN_REMOTE_TIMEOUT,
};
use flatstack_kernel::{Fault, Kernel};
use flatstack_store::Store;
use serde::Deserialize;
use serde_json::json;

/// The body of a registration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    name: String,
    queue: String,
    timeout_ms: u64,
    #[serde(default = "fail")]
    failure_policy: FailurePolicy,
    #[serde(default)]
    order: i32,
}

fn fail() -> FailurePolicy {
    FailurePolicy::Fail
}

fn db(error: flatstack_store::StoreError) -> ApiError {
    ApiError(Fault::unavailable(format!("the store: {error}")))
}

/// The point, if it takes remote implementors.
fn remote_point(kernel: &Kernel, point: &str) -> Result<(), ApiError> {
    let described = kernel
        .extensions()
        .describe()
        .into_iter()
        .find(|p| p.name == point)
        .ok_or_else(|| ApiError(Fault::not_found(format!("no extension point `{point}`"))))?;
    if !described.remote {
        return Err(ApiError(Fault::invalid(
            "point",
            format!("`{point}` takes no remote implementors"),
        )));
    }
    Ok(())
}

/// Sets the kernel's remote implementors to what the store holds.
pub async fn reload_remote_implementors(kernel: &Kernel) -> Result<(), Fault> {
    let Some(store) = kernel.get::<Store>() else {
        return Ok(());
    };
    let registrations = store
        .remote_registrations()
        .await
        .map_err(|e| Fault::unavailable(format!("reading remote implementors: {e}")))?;
    kernel.extensions().remote().set(registrations);
    Ok(())
}

pub(crate) async fn list(
    kernel: &Kernel,
    point: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    remote_point(kernel, point)?;
    let all = store(kernel)?.remote_registrations().await.map_err(db)?;
    let of_point: Vec<_> = all.into_iter().filter(|r| r.point == point).collect();
    Ok(Json(
        json!({"inventories": of_point, "total": of_point.len()}),
    ))
}

pub(crate) async fn register(
    kernel: &Kernel,
    point: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    remote_point(kernel, point)?;
    let body: Register = serde_json::from_slice(body)
        .map_err(|e| ApiError(Fault::invalid("body", format!("not a registration: {e}"))))?;
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 63
        && body
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !name_ok {
        return Err(ApiError(Fault::invalid(
            "name",
            "a name is 1 to 63 of a-z, 0-9, `-`, `_` and `.`",
        )));
    }
    // AMQP's short strings; printable, so that it is safe to log and show.
    if body.queue.is_empty()
        || body.queue.len() > 255
        || !body.queue.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError(Fault::invalid(
            "queue",
            "a queue name is 1 to 255 printable ASCII characters, no spaces",
        )));
    }
    let (min, max) = (
        MIN_REMOTE_TIMEOUT.as_millis() as u64,
        MAX_REMOTE_TIMEOUT.as_millis() as u64,
    );
    if !(min..=max).contains(&body.timeout_ms) {
        return Err(ApiError(Fault::invalid(
            "timeout_ms",
            format!("timeout_ms is {min} to {max}"),
        )));
    }
    if !kernel.extensions().remote().reachable() {
        return Err(ApiError(Fault::unavailable(
            "this node has no broker to reach remote implementors: start it with --amqp-url",
        )));
    }
    let registration = RemoteRegistration {
        point: point.to_owned(),
        name: body.name,
        queue: body.queue,
        timeout_ms: body.timeout_ms,
        failure_policy: body.failure_policy,
        order: body.order,
    };
    let store = store(kernel)?;
    if !store
        .add_remote_registration(&registration)
        .await
        .map_err(db)?
    {
        return Err(ApiError(
            Fault::conflict(format!(
                "`{point}` already has a remote implementor named `{}`",
                registration.name
            ))
            .with_detail("field", "name"),
        ));
    }
    reload_remote_implementors(kernel).await?;
    tracing::info!(point, name = %registration.name, queue = %registration.queue, "remote implementor registered");
    Ok((
        StatusCode::CREATED,
        Json(json!({"inventory": registration})),
    )
        .into_response())
}

pub(crate) async fn remove(kernel: &Kernel, point: &str, name: &str) -> Result<Response, ApiError> {
    remote_point(kernel, point)?;
    if !store(kernel)?
        .remove_remote_registration(point, name)
        .await
        .map_err(db)?
    {
        return Err(ApiError(Fault::not_found(format!(
            "`{point}` has no remote implementor named `{}`",
            name.escape_debug()
        ))));
    }
    reload_remote_implementors(kernel).await?;
    tracing::info!(point, name, "remote implementor removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
