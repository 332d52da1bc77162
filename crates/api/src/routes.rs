//! Routes generated from the registered API resources.

use crate::error::{body_of, status_of, ApiError};
use crate::jobs::{JobState, Jobs};
use crate::openapi;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flatstack_header::{
    ApiAction, ApiActionExtension, ApiResource, DeleteResource, GetResource, ListResources,
    UpdateResource,
};
use flatstack_kernel::bus::Envelope;
use flatstack_kernel::{Fault, Kernel, Message};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Api {
    kernel: Kernel,
    jobs: Jobs,
    resources: HashMap<&'static str, ApiResource>,
    /// Actions drivers add to other plugins' kinds: (path, action) → service.
    extensions: Vec<ApiActionExtension>,
}

type Shared = State<Arc<Api>>;

/// The `/v1` router of `kernel`'s registered API resources.
pub fn router(kernel: Kernel) -> Router {
    router_with_jobs(kernel).0
}

/// The router, and its jobs: a stopping node closes them (new state-changing requests
/// are then refused with `503`) and drains them ([`Jobs::close`], [`Jobs::drain`]).
pub fn router_with_jobs(kernel: Kernel) -> (Router, Jobs) {
    let resources = kernel
        .registered::<ApiResource>()
        .into_iter()
        .map(|(_, r)| (r.path, r.clone()))
        .collect();
    let extensions = kernel
        .registered::<ApiActionExtension>()
        .into_iter()
        .map(|(_, e)| e.clone())
        .collect();
    let jobs = Jobs::default();
    let api = Arc::new(Api {
        kernel,
        jobs: jobs.clone(),
        resources,
        extensions,
    });
    let router = Router::new()
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/v1/schemas", get(schemas))
        .route("/v1/plugins", get(plugins))
        .route("/v1/extension-points", get(extension_points))
        .route("/v1/jobs/{uuid}", get(job))
        .route("/v1/{kind}", get(list).post(create))
        .route("/v1/{kind}/types", get(types))
        .route("/v1/{kind}/{uuid}", get(show).patch(update).delete(delete))
        .route("/v1/{kind}/{uuid}/actions", axum::routing::post(action))
        .route(
            "/v1/{kind}/{uuid}/{child}",
            get(list_children).post(create_child),
        )
        .fallback(|| async { ApiError(Fault::not_found("no such route")) })
        .with_state(api);
    (router, jobs)
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<f64>,
}

impl Api {
    fn resource(&self, kind: &str) -> Result<&ApiResource, ApiError> {
        self.resources
            .get(kind)
            .ok_or_else(|| ApiError(Fault::not_found(format!("no resource kind `{kind}`"))))
    }

    async fn call(
        &self,
        service: &str,
        resource: Option<&str>,
        message: &str,
        body: Value,
    ) -> Result<Value, Fault> {
        let envelope = Envelope {
            service: service.to_owned(),
            resource: resource.map(str::to_owned),
            message: message.to_owned(),
            body,
        };
        self.kernel.bus().request_json(envelope, None).await
    }

    /// Runs a state-changing message as a job; answers 202, or the result if `?wait=`
    /// is given and the job ends in time.
    async fn job(
        self: &Arc<Self>,
        wait: Option<f64>,
        success: StatusCode,
        (service, resource, message, body): (String, Option<String>, String, Value),
    ) -> Response {
        let api = self.clone();
        let operation = message.clone();
        let started = self.jobs.start(&operation, async move {
            api.call(&service, resource.as_deref(), &message, body)
                .await
        });
        let uuid = match started {
            Ok(uuid) => uuid,
            // The node is stopping.
            Err(fault) => return ApiError(fault).into_response(),
        };
        if let Some(seconds) = wait.filter(|s| s.is_finite() && *s > 0.0) {
            let wait = Duration::from_secs_f64(seconds.min(3600.0));
            if let Some(job) = self.jobs.wait(&uuid, wait).await {
                return match (job.state, job.result, job.error) {
                    (JobState::Succeeded, Some(Value::Null) | None, _) => {
                        StatusCode::NO_CONTENT.into_response()
                    }
                    (JobState::Succeeded, Some(result), _) => {
                        (success, Json(json!({"inventory": result}))).into_response()
                    }
                    (_, _, Some(fault)) => ApiError(fault).into_response(),
                    _ => ApiError(Fault::internal("job ended without a result")).into_response(),
                };
            }
        }
        (
            StatusCode::ACCEPTED,
            Json(json!({"job_uuid": uuid, "location": format!("/v1/jobs/{uuid}")})),
        )
            .into_response()
    }
}

/// Parses a JSON object body; a malformed one is a 400 naming the problem.
fn object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError(Fault::invalid(
            "",
            "the body must be a JSON object",
        ))),
        Err(e) => Err(ApiError(Fault::invalid("", format!("malformed JSON: {e}")))),
    }
}

async fn create(
    State(api): Shared,
    Path(kind): Path<String>,
    Query(q): Query<WaitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let body = Value::Object(object(&body)?);
    let call = (r.service.to_owned(), None, r.create.to_owned(), body);
    Ok(api.job(q.wait, StatusCode::CREATED, call).await)
}

async fn list(
    State(api): Shared,
    Path(kind): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    let filters: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(Json(
        api.call(
            r.service,
            None,
            ListResources::NAME,
            json!({"filters": filters}),
        )
        .await?,
    ))
}

async fn show(
    State(api): Shared,
    Path((kind, uuid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    let inventory = api
        .call(r.service, Some(&uuid), GetResource::NAME, json!({}))
        .await?;
    Ok(Json(json!({"inventory": inventory})))
}

async fn update(
    State(api): Shared,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let body = Value::Object(object(&body)?);
    let call = (
        r.service.to_owned(),
        Some(uuid),
        UpdateResource::NAME.to_owned(),
        body,
    );
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

async fn delete(
    State(api): Shared,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let call = (
        r.service.to_owned(),
        Some(uuid),
        DeleteResource::NAME.to_owned(),
        json!({}),
    );
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

async fn action(
    State(api): Shared,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let mut body = object(&body)?;
    let Some(Value::String(name)) = body.remove("action") else {
        return Err(ApiError(Fault::invalid(
            "action",
            "`action` (a string) is required",
        )));
    };
    // The kind's own actions, then those drivers added to it.
    let own = r.actions.iter().map(|a| (r.service, a));
    let added = api
        .extensions
        .iter()
        .filter(|e| e.path == r.path)
        .map(|e| (e.service, &e.action));
    let known: Vec<(&str, &ApiAction)> = own.chain(added).collect();
    let Some((service, action)) = known.iter().find(|(_, a)| a.name == name) else {
        let names: Vec<&str> = known.iter().map(|(_, a)| a.name).collect();
        return Err(ApiError(Fault::invalid(
            "action",
            format!(
                "unknown action `{name}` on {kind} (known: {})",
                names.join(", ")
            ),
        )));
    };
    let call = (
        (*service).to_owned(),
        Some(uuid),
        action.message.to_owned(),
        Value::Object(body),
    );
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

fn child<'a>(
    r: &'a ApiResource,
    kind: &str,
    child: &str,
) -> Result<&'a flatstack_header::ApiChild, ApiError> {
    r.children
        .iter()
        .find(|c| c.path == child)
        .ok_or_else(|| ApiError(Fault::not_found(format!("{kind} have no `{child}`"))))
}

async fn list_children(
    State(api): Shared,
    Path((kind, uuid, sub)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    let c = child(r, &kind, &sub)?;
    Ok(Json(
        api.call(r.service, Some(&uuid), c.list, json!({})).await?,
    ))
}

async fn create_child(
    State(api): Shared,
    Path((kind, uuid, sub)): Path<(String, String, String)>,
    Query(q): Query<WaitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let c = child(r, &kind, &sub)?;
    let call = (
        r.service.to_owned(),
        Some(uuid),
        c.create.to_owned(),
        Value::Object(object(&body)?),
    );
    Ok(api.job(q.wait, StatusCode::CREATED, call).await)
}

async fn types(State(api): Shared, Path(kind): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    let Some(driver_kind) = r.driver_kind else {
        return Err(ApiError(Fault::not_found(format!(
            "{kind} have no driver types"
        ))));
    };
    let types = api
        .kernel
        .drivers()
        .describe()
        .remove(driver_kind)
        .unwrap_or_default();
    Ok(Json(json!({"types": types})))
}

async fn job(State(api): Shared, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    let job = api
        .jobs
        .get(&uuid)
        .ok_or_else(|| ApiError(Fault::not_found(format!("no job {uuid}"))))?;
    let mut view =
        serde_json::to_value(&job).map_err(|e| ApiError(Fault::internal(e.to_string())))?;
    if let Some(fault) = &job.error {
        view["error"] = body_of(fault)["error"].clone();
        view["status"] = json!(status_of(fault.code).as_u16());
    }
    Ok(Json(view))
}

async fn plugins(State(api): Shared) -> Json<Value> {
    Json(json!({"plugins": api.kernel.plugins()}))
}

async fn extension_points(State(api): Shared) -> Json<Value> {
    Json(json!({"extension_points": api.kernel.extensions().describe()}))
}

async fn schemas(State(api): Shared) -> Json<Value> {
    let messages: Map<String, Value> = api
        .kernel
        .bus()
        .messages()
        .iter()
        .map(|m| {
            let mut entry = json!({"kind": m.kind, "schema": m.schema()});
            if let Some(reply) = m.reply_schema() {
                entry["reply_schema"] = reply;
            }
            (m.name.to_owned(), entry)
        })
        .collect();
    Json(json!({"messages": messages}))
}

async fn openapi_doc(State(api): Shared) -> Json<Value> {
    Json(openapi::document(&api.kernel))
}
