//! Routes generated from the registered API resources.

use crate::auth::{admin_only, authorize, scope, JobStarted, Op};
use crate::children::{Catalogue, Child};
use crate::error::{body_of, status_of, ApiError};
use crate::events;
use crate::jobs::Jobs;
use crate::openapi;
use crate::remote;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use flatstack_header::identity::{Access, Caller, ListAudit};
use flatstack_header::{
    ApiAction, ApiActionExtension, ApiResource, DeleteResource, GetResource, ListResources,
    UpdateResource,
};
use flatstack_kernel::bus::Envelope;
use flatstack_kernel::{Fault, Kernel, Message};
use flatstack_store::operation::{NewOperation, OperationFilter, OperationState, Verb};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Api {
    pub(crate) kernel: Kernel,
    jobs: Jobs,
    /// Actions drivers add to other plugins' kinds: (path, action) → service.
    extensions: Vec<ApiActionExtension>,
    /// Every kind, and its child collections: its owner's and those other plugins add.
    catalogue: Catalogue,
}

type Shared = State<Arc<Api>>;

/// The `/v1` router of `kernel`'s registered API resources.
pub fn router(kernel: Kernel) -> Router {
    router_with_jobs(kernel).0
}

/// The router, and its jobs: a stopping node closes them (new state-changing requests
/// are then refused with `503`) and drains them ([`Jobs::close`], [`Jobs::drain`]).
pub fn router_with_jobs(kernel: Kernel) -> (Router, Jobs) {
    // The distribution refuses these at assembly (`check`); a kernel assembled without
    // that check is served as far as it is consistent: the first declaration wins.
    let (catalogue, errors) = Catalogue::new(&kernel);
    for error in errors {
        tracing::error!(%error, "left out of the API");
    }
    let extensions = kernel
        .registered::<ApiActionExtension>()
        .into_iter()
        .map(|(_, e)| e.clone())
        .collect();
    let jobs = Jobs::new(kernel.get::<flatstack_store::Store>());
    let api = Arc::new(Api {
        kernel,
        jobs: jobs.clone(),
        extensions,
        catalogue,
    });
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/version", get(version))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/v1/schemas", get(schemas))
        .route("/v1/schemas/events/{type}", get(event_schema))
        .route("/v1/events", get(list_events))
        .route("/v1/events/stream", get(stream_events))
        .route("/v1/plugins", get(plugins))
        .route("/v1/extension-points", get(extension_points))
        .route(
            "/v1/extension-points/{point}/remote-implementors",
            get(list_remote).post(register_remote),
        )
        .route(
            "/v1/extension-points/{point}/remote-implementors/{name}",
            axum::routing::delete(remove_remote),
        )
        .route("/v1/sessions", axum::routing::post(crate::identity::login))
        .route("/v1/permissions", get(crate::identity::permissions))
        .route("/v1/audit", get(audit))
        .route("/v1/jobs", get(list_jobs))
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
        .layer(axum::middleware::from_fn(json_bodies_only))
        .with_state(api.clone());
    let router = crate::auth::authenticated(router, &api.kernel)
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .layer(axum::middleware::from_fn(crate::metrics::track));
    (router, jobs)
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<f64>,
}

impl Api {
    /// A kind's actions, each with the service that runs it: its own, then those drivers
    /// added to it.
    pub(crate) fn actions<'a>(&'a self, r: &'a ApiResource) -> Vec<(&'a str, &'a ApiAction)> {
        let own = r.actions.iter().map(|a| (r.service, a));
        let added = self
            .extensions
            .iter()
            .filter(|e| e.path == r.path)
            .map(|e| (e.service, &e.action));
        own.chain(added).collect()
    }

    /// Every kind the API serves.
    pub(crate) fn resources(&self) -> impl Iterator<Item = &ApiResource> {
        self.catalogue.resources.values().map(|(_, r)| r)
    }

    fn resource(&self, kind: &str) -> Result<&ApiResource, ApiError> {
        self.catalogue
            .resources
            .get(kind)
            .map(|(_, r)| r)
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
            operation: None,
        };
        self.kernel.bus().request_json(envelope, None).await
    }

    /// Runs a state-changing message as a job — a durable operation, recorded before it
    /// starts; answers 202, or the result if `?wait=` is given and the job ends in time. A
    /// retry with the client's idempotency key answers the first request's job.
    async fn job(self: &Arc<Self>, wait: Option<f64>, success: StatusCode, call: Call) -> Response {
        let new = NewOperation {
            kind: call.message.clone(),
            service: call.service.clone(),
            verb: call.verb,
            resource_uuid: call.resource.clone(),
            request: call.body.clone(),
            idempotency_key: call.idempotency_key.clone(),
            account_uuid: Some(call.account.clone()),
        };
        let api = self.clone();
        let started = self
            .jobs
            .start(new, move |operation| async move {
                let envelope = Envelope {
                    service: call.service,
                    resource: call.resource,
                    message: call.message,
                    body: call.body,
                    operation: Some(operation),
                };
                api.kernel.bus().request_json(envelope, None).await
            })
            .await;
        let uuid = match started {
            Ok(started) => started.uuid,
            Err(fault) => return ApiError(fault).into_response(),
        };
        let mut response = self.answer(&uuid, wait, success).await;
        response.extensions_mut().insert(JobStarted(uuid));
        response
    }

    /// A job's answer: its result if it ends within `wait`, else `202` and where to look.
    async fn answer(&self, uuid: &str, wait: Option<f64>, success: StatusCode) -> Response {
        if let Some(seconds) = wait.filter(|s| s.is_finite() && *s > 0.0) {
            let wait = Duration::from_secs_f64(seconds.min(3600.0));
            match self.jobs.wait(uuid, wait).await {
                Ok(Some(job)) => {
                    return match (job.state, job.result, job.error) {
                        (OperationState::Succeeded, Some(Value::Null) | None, _) => {
                            StatusCode::NO_CONTENT.into_response()
                        }
                        (OperationState::Succeeded, Some(result), _) => {
                            (success, Json(json!({"inventory": result}))).into_response()
                        }
                        (_, _, Some(fault)) => ApiError(fault).into_response(),
                        _ => {
                            ApiError(Fault::internal("job ended without a result")).into_response()
                        }
                    };
                }
                Ok(None) => {}
                Err(fault) => return ApiError(fault).into_response(),
            }
        }
        (
            StatusCode::ACCEPTED,
            Json(json!({"job_uuid": uuid, "location": format!("/v1/jobs/{uuid}")})),
        )
            .into_response()
    }
}

/// A state-changing request on its way to becoming a job.
struct Call {
    service: String,
    resource: Option<String>,
    message: String,
    body: Value,
    verb: Verb,
    idempotency_key: Option<String>,
    /// The caller's account.
    account: String,
}

/// The client's `Idempotency-Key`, if it sent one (not valid text: refused with the key
/// checks of the journal, as an empty key).
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

/// Refuses (`415`, in the JSON error shape) a request whose body is not declared JSON: a
/// web page can send `text/plain` or a form to any origin without a preflight, so a body
/// read as JSON whatever its type would let any page the operator opens act on the cloud.
async fn json_bodies_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
    let headers = request.headers();
    let has_body = match headers.get(CONTENT_LENGTH) {
        Some(length) => length.to_str().ok().and_then(|l| l.parse::<u64>().ok()) != Some(0),
        None => headers.contains_key(TRANSFER_ENCODING),
    };
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .map(|t| {
            let media = t
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            media == "application/json" || media.ends_with("+json")
        })
        .unwrap_or(false);
    if has_body && !json {
        let fault = Fault::invalid(
            "content-type",
            "a request body must be JSON, sent with `Content-Type: application/json`",
        );
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(crate::error::body_of(&fault)),
        )
            .into_response();
    }
    next.run(request).await
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
    Extension(caller): Extension<Caller>,
    Path(kind): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    authorize(&caller, &kind, r.access, Op::Create)?;
    let mut body = object(&body)?;
    crate::text::check_body(&body)?;
    assign_owner(&caller, &kind, r.access, &mut body)?;
    if r.holds_secrets {
        // Its request or answer holds a secret: run at once, never journaled.
        let inventory = api
            .call(r.service, None, r.create, Value::Object(body))
            .await?;
        return Ok((StatusCode::CREATED, Json(json!({"inventory": inventory}))).into_response());
    }
    let call = Call {
        service: r.service.to_owned(),
        resource: None,
        message: r.create.to_owned(),
        body: Value::Object(body),
        verb: Verb::Create,
        idempotency_key: idempotency_key(&headers),
        account: caller.account_uuid.clone(),
    };
    Ok(api.job(q.wait, StatusCode::CREATED, call).await)
}

/// Who a new resource belongs to: the caller's account (or, for a credential, the caller),
/// never what the body says — unless the caller is an admin creating on another's behalf.
/// Of a shareable kind, only an admin's may be shared.
fn assign_owner(
    caller: &Caller,
    kind: &str,
    access: Access,
    body: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let (column, own) = match access {
        Access::Owned | Access::Shared => ("account_uuid", &caller.account_uuid),
        Access::Personal => ("user_uuid", &caller.user_uuid),
        Access::Infrastructure | Access::Admin => return Ok(()),
    };
    if !caller.is_admin() || !body.get(column).is_some_and(Value::is_string) {
        body.insert(column.to_owned(), Value::String(own.clone()));
    }
    if access == Access::Shared && !caller.is_admin() {
        if body.get(SHARED) == Some(&Value::Bool(true)) {
            return Err(ApiError(
                Fault::forbidden(format!("only admins share {kind}"))
                    .with_detail("field", SHARED)
                    .with_detail("permission", format!("{kind}:share")),
            ));
        }
        body.insert(SHARED.to_owned(), Value::Bool(false));
    }
    Ok(())
}

/// The field of an [`Access::Shared`] kind that shares a resource with every account.
const SHARED: &str = "shared";

async fn list(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path(kind): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    authorize(&caller, &kind, r.access, Op::Read)?;
    let mut filters: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    // Only the caller's own (and what is shared, if the kind shares), whatever the
    // filters say.
    if let Some(scope) = scope(&caller, r.access) {
        let column = if scope.shared {
            flatstack_header::resource::VISIBLE_TO
        } else {
            scope.column
        };
        filters.insert(column.to_owned(), Value::String(scope.own.to_owned()));
    }
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
    Extension(caller): Extension<Caller>,
    Path((kind, uuid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let r = api.resource(&kind)?;
    authorize(&caller, &kind, r.access, Op::Read)?;
    let inventory = api.visible(&caller, r, &uuid, Op::Read).await?;
    Ok(Json(json!({"inventory": inventory})))
}

impl Api {
    /// One resource's inventory, if `caller` may do `op` on it: another account's (or
    /// user's) answers exactly as a missing one, so that its existence does not leak; a
    /// shared one is read by all and changed by admins only (`403`).
    async fn visible(
        &self,
        caller: &Caller,
        r: &ApiResource,
        uuid: &str,
        op: Op,
    ) -> Result<Value, ApiError> {
        let inventory = self
            .call(r.service, Some(uuid), GetResource::NAME, json!({}))
            .await?;
        if let Some(scope) = scope(caller, r.access) {
            if inventory.get(scope.column).and_then(Value::as_str) == Some(scope.own) {
                return Ok(inventory);
            }
            if scope.shared && inventory.get(SHARED) == Some(&Value::Bool(true)) {
                if op == Op::Read {
                    return Ok(inventory);
                }
                return Err(ApiError(
                    Fault::forbidden(format!(
                        "{} {uuid} is shared: only admins change it",
                        r.path
                    ))
                    .with_detail("permission", format!("{}:{}", r.path, op.verb())),
                ));
            }
            return Err(ApiError(
                Fault::not_found(format!("no {} {uuid}", r.path)).with_detail("uuid", uuid),
            ));
        }
        Ok(inventory)
    }

    /// Checks `op` on one resource: the role's permission, then (for a caller that sees
    /// only its own) that the resource is its own.
    async fn may(
        &self,
        caller: &Caller,
        r: &ApiResource,
        uuid: &str,
        op: Op,
    ) -> Result<(), ApiError> {
        authorize(caller, r.path, r.access, op)?;
        if scope(caller, r.access).is_some() {
            self.visible(caller, r, uuid, op).await?;
        }
        Ok(())
    }
}

async fn update(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let body = object(&body)?;
    crate::text::check_body(&body)?;
    api.may(&caller, r, &uuid, Op::Update).await?;
    let call = Call {
        service: r.service.to_owned(),
        resource: Some(uuid),
        message: UpdateResource::NAME.to_owned(),
        body: Value::Object(body),
        verb: Verb::Update,
        idempotency_key: idempotency_key(&headers),
        account: caller.account_uuid.clone(),
    };
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

async fn delete(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    api.may(&caller, r, &uuid, Op::Delete).await?;
    if r.holds_secrets {
        // A credential's removal (a revocation) takes effect before the answer.
        api.call(r.service, Some(&uuid), DeleteResource::NAME, json!({}))
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let call = Call {
        service: r.service.to_owned(),
        resource: Some(uuid),
        message: DeleteResource::NAME.to_owned(),
        body: json!({}),
        verb: Verb::Delete,
        idempotency_key: idempotency_key(&headers),
        account: caller.account_uuid.clone(),
    };
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

async fn action(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((kind, uuid)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r = api.resource(&kind)?;
    let mut body = object(&body)?;
    crate::text::check_body(&body)?;
    let Some(Value::String(name)) = body.remove("action") else {
        return Err(ApiError(Fault::invalid(
            "action",
            "`action` (a string) is required",
        )));
    };
    let known = api.actions(r);
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
    let op = Op::Action {
        member: action.member,
    };
    api.may(&caller, r, &uuid, op).await?;
    let call = Call {
        service: (*service).to_owned(),
        resource: Some(uuid),
        message: action.message.to_owned(),
        body: Value::Object(body),
        verb: Verb::Action,
        idempotency_key: idempotency_key(&headers),
        account: caller.account_uuid.clone(),
    };
    Ok(api.job(q.wait, StatusCode::OK, call).await)
}

impl Api {
    /// Child collection `child` of `kind`, if `caller` may do `op` on the parent (read to
    /// list, update to create); for one another plugin serves, the parent is asked of its
    /// owner first, so a missing one is a `404` whatever that plugin does.
    async fn child(
        &self,
        caller: &Caller,
        (kind, uuid, child): (&str, &str, &str),
        op: Op,
    ) -> Result<&Child, ApiError> {
        let r = self.resource(kind)?;
        let c = self
            .catalogue
            .child(kind, child)
            .ok_or_else(|| ApiError(Fault::not_found(format!("{kind} have no `{child}`"))))?;
        authorize(caller, kind, r.access, op)?;
        if c.added || scope(caller, r.access).is_some() {
            self.visible(caller, r, uuid, op).await?;
        }
        Ok(c)
    }
}

async fn list_children(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((kind, uuid, sub)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let c = api.child(&caller, (&kind, &uuid, &sub), Op::Read).await?;
    // The query is the list message's body: `limit`, `cursor`, `sort` (`PageQuery`) for
    // the children that page, which refuse anything else by name.
    Ok(Json(
        api.call(c.service, Some(&uuid), c.list, json!(query))
            .await?,
    ))
}

async fn create_child(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((kind, uuid, sub)): Path<(String, String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = api.child(&caller, (&kind, &uuid, &sub), Op::Update).await?;
    let Some(create) = c.create else {
        let fault = Fault::invalid("", format!("the `{sub}` of {kind} are listed, not created"));
        return Ok((StatusCode::METHOD_NOT_ALLOWED, Json(body_of(&fault))).into_response());
    };
    let body = object(&body)?;
    crate::text::check_body(&body)?;
    let call = Call {
        service: c.service.to_owned(),
        resource: Some(uuid),
        message: create.to_owned(),
        body: Value::Object(body),
        verb: Verb::Action,
        idempotency_key: idempotency_key(&headers),
        account: caller.account_uuid.clone(),
    };
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

async fn job(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = api
        .jobs
        .get(&uuid)
        .await?
        // Another account's job answers as a missing one.
        .filter(|job| caller.is_admin() || job.account_uuid.as_ref() == Some(&caller.account_uuid))
        .ok_or_else(|| ApiError(Fault::not_found(format!("no job {uuid}"))))?;
    Ok(Json(job_view(&job)?))
}

/// A job as clients see it: its error in the API's error shape, with the HTTP status it
/// would have had.
fn job_view(job: &crate::jobs::Job) -> Result<Value, ApiError> {
    let mut view =
        serde_json::to_value(job).map_err(|e| ApiError(Fault::internal(e.to_string())))?;
    if let Some(fault) = &job.error {
        view["error"] = body_of(fault)["error"].clone();
        view["status"] = json!(status_of(fault.code).as_u16());
    }
    Ok(view)
}

#[derive(Deserialize)]
struct JobsQuery {
    state: Option<String>,
    kind: Option<String>,
    resource_uuid: Option<String>,
    account_uuid: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The most jobs one page holds.
const MAX_JOBS_PAGE: usize = 1000;

/// `GET /v1/jobs`: newest first, filtered by state, kind and resource, paged.
async fn list_jobs(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Query(q): Query<JobsQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            OperationState::parse(s).ok_or_else(|| {
                ApiError(Fault::invalid(
                    "state",
                    format!("unknown job state `{s}` (running, succeeded, failed)"),
                ))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_JOBS_PAGE {
        return Err(ApiError(Fault::invalid(
            "limit",
            format!("limit is 1 to {MAX_JOBS_PAGE}"),
        )));
    }
    let filter = OperationFilter {
        state,
        kind: q.kind,
        resource_uuid: q.resource_uuid,
        // Only the caller's account's, unless it is an admin (who may narrow to one).
        account_uuid: if caller.is_admin() {
            q.account_uuid
        } else {
            Some(caller.account_uuid.clone())
        },
    };
    let (page, next, total) = api.jobs.list(&filter, limit, q.cursor.as_deref()).await?;
    let inventories = page.iter().map(job_view).collect::<Result<Vec<_>, _>>()?;
    let mut answer = json!({"inventories": inventories, "total": total});
    if let Some(next) = next {
        answer["next"] = json!(next);
    }
    Ok(Json(answer))
}

/// Alive: the process answers. For a liveness probe; it reads nothing.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// Ready to serve: the store answers a read. The API is only served once the migrations
/// are applied and recovery is done (`flatstack serve` starts it after both), so an
/// answer at all says those; `503` while the store cannot be read.
async fn readyz(State(api): Shared) -> Result<Json<Value>, ApiError> {
    // The database's own message goes to the log, not to whoever asks.
    let not_ready = |error: flatstack_store::StoreError| {
        tracing::warn!(%error, "readiness: the store cannot be read");
        ApiError(Fault::unavailable("the store cannot be read"))
    };
    if let Some(store) = api.kernel.get::<flatstack_store::Store>() {
        let mut tx = store.read().await.map_err(not_ready)?;
        tx.query("SELECT 1 AS ready", &[])
            .await
            .map_err(not_ready)?;
    }
    Ok(Json(json!({"status": "ready"})))
}

/// What is running: the distribution's version, the commit it was built from, and the
/// plugins enabled.
async fn version(State(api): Shared) -> Json<Value> {
    let plugins: Vec<Value> = api
        .kernel
        .plugins()
        .into_iter()
        .map(|p| json!({"name": p.name, "description": p.description}))
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("FLATSTACK_GIT_COMMIT"),
        "plugins": plugins,
    }))
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
    Json(json!({"messages": messages, "events": events::event_types(&api.kernel)}))
}

async fn list_remote(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path(point): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "see remote implementors")?;
    remote::list(&api.kernel, &point).await
}

async fn register_remote(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path(point): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_only(&caller, "register remote implementors")?;
    remote::register(&api.kernel, &point, &body).await
}

async fn remove_remote(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Path((point, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin_only(&caller, "remove remote implementors")?;
    remote::remove(&api.kernel, &point, &name).await
}

async fn event_schema(State(api): Shared, Path(ty): Path<String>) -> Result<Json<Value>, ApiError> {
    events::schema(&api.kernel, &ty)
}

async fn list_events(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Query(params): Query<events::EventsParams>,
) -> Result<Response, ApiError> {
    // Events are every account's: admins (and services with an admin's token) only.
    admin_only(&caller, "read the event log")?;
    events::list(&api.kernel, params).await
}

async fn stream_events(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<events::EventsParams>,
) -> Result<Response, ApiError> {
    admin_only(&caller, "read the event log")?;
    events::stream(&api.kernel, &headers, params).await
}

async fn openapi_doc(State(api): Shared) -> Json<Value> {
    Json(openapi::document(&api.kernel))
}

/// `GET /v1/audit`: admins only; newest first, paged, filtered.
async fn audit(
    State(api): Shared,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListAudit>,
) -> Result<Json<Value>, ApiError> {
    admin_only(&caller, "read the audit trail")?;
    let page = api.kernel.ask(q).await?;
    Ok(Json(
        serde_json::to_value(page).map_err(|e| ApiError(Fault::internal(e.to_string())))?,
    ))
}
