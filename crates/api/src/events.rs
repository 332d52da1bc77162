//! The event stream over HTTP, for services without a broker: `GET /v1/events` pages
//! through the store's event log in sequence order; `GET /v1/events/stream` follows it as
//! server-sent events. Both resume from a sequence number, and say `410` when the events
//! asked for were pruned. Also the event types' schemas under `/v1/schemas`.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flatstack_header::events::{event_type, schema_path, CanonicalType, EventSchema};
use flatstack_kernel::{Fault, Kernel};
use flatstack_store::{EventPage, EventQuery, EventsGone, Store};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The most events one page holds.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// How often a stream looks for events committed by other nodes (those of this node wake
/// it at once).
const STREAM_POLL: Duration = Duration::from_secs(1);

/// The query of both routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    after: Option<i64>,
    limit: Option<u32>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    subject: Option<String>,
    kind: Option<String>,
}

impl EventsParams {
    fn query(self, after: Option<i64>) -> Result<EventQuery, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_EVENTS_PAGE {
            return Err(Fault::invalid("limit", format!("limit is 1 to {MAX_EVENTS_PAGE}")).into());
        }
        let after = after.or(self.after).unwrap_or(0);
        if after < 0 {
            return Err(Fault::invalid("after", "after is a sequence number, 0 or more").into());
        }
        Ok(EventQuery {
            after,
            limit,
            event_type: self.event_type,
            subject: self.subject,
            kind: self.kind,
        })
    }
}

/// The node's store, or `503` for a kernel assembled without one (what the event log and
/// the remote registrations are kept in).
pub(crate) fn store(kernel: &Kernel) -> Result<Arc<Store>, ApiError> {
    kernel
        .get::<Store>()
        .ok_or_else(|| ApiError(Fault::unavailable("this node has no store")))
}

/// `410 Gone` in the error shape, saying which is the oldest event kept.
fn gone(gone: EventsGone) -> Response {
    let body = json!({"error": {
        "code": "gone",
        "message": format!(
            "the events asked for were pruned; the oldest kept is {}: start again from after={}",
            gone.oldest,
            gone.oldest - 1
        ),
        "details": {"oldest": gone.oldest, "pruned_upto": gone.pruned_upto},
    }});
    (StatusCode::GONE, Json(body)).into_response()
}

async fn read(
    store: &Arc<Store>,
    query: &EventQuery,
) -> Result<Result<EventPage, EventsGone>, ApiError> {
    store
        .events(query)
        .await
        .map_err(|e| ApiError(Fault::unavailable(format!("reading the event log: {e}"))))
}

/// `GET /v1/events?after=&limit=&type=&subject=&kind=`.
pub(crate) async fn list(kernel: &Kernel, params: EventsParams) -> Result<Response, ApiError> {
    let store = store(kernel)?;
    let query = params.query(None)?;
    Ok(match read(&store, &query).await? {
        Ok(page) => Json(json!({"events": page.events, "next": page.next})).into_response(),
        Err(g) => gone(g),
    })
}

/// `GET /v1/events/stream`: server-sent events, `id:` the sequence, `event:` the type,
/// `data:` the CloudEvent. Resumes after `Last-Event-ID` (what a reconnecting browser
/// sends) or `?after=`.
pub(crate) async fn stream(
    kernel: &Kernel,
    headers: &HeaderMap,
    params: EventsParams,
) -> Result<Response, ApiError> {
    let store = store(kernel)?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError(Fault::invalid(
                        "Last-Event-ID",
                        "Last-Event-ID is a sequence number",
                    ))
                })?,
        ),
        None => None,
    };
    let query = params.query(last_event_id)?;
    // The first page decides the answer: a stream that cannot start is a 410, not an
    // empty stream.
    let first = match read(&store, &query).await? {
        Ok(page) => page,
        Err(g) => return Ok(gone(g)),
    };
    let committed = store.events_committed();
    let state = Follow {
        store,
        query,
        pending: first.events.into(),
        next: first.next,
        committed,
        done: false,
    };
    let events = futures::stream::unfold(state, Follow::step);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A stream's position: the events read but not yet sent, and where to read from next.
struct Follow {
    store: Arc<Store>,
    query: EventQuery,
    pending: std::collections::VecDeque<flatstack_header::events::CloudEvent>,
    next: i64,
    committed: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

impl Follow {
    async fn step(mut self) -> Option<(Result<SseEvent, std::convert::Infallible>, Follow)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let sse = SseEvent::default()
                    .id(event.seq.to_string())
                    .event(event.event_type.clone())
                    .json_data(&event)
                    .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                return Some((Ok(sse), self));
            }
            self.query.after = self.next;
            // Seen before reading: a commit from now on wakes the wait below.
            self.committed.borrow_and_update();
            match self.store.events(&self.query).await {
                Ok(Ok(page)) if !page.events.is_empty() => {
                    self.next = page.next;
                    self.pending = page.events.into();
                }
                Ok(Ok(page)) => {
                    self.next = page.next;
                    // Woken by a commit here, or after a while for other nodes'.
                    let _ = tokio::time::timeout(STREAM_POLL, self.committed.changed()).await;
                }
                // The reader fell behind the retention: say so and end, as a 410 would.
                Ok(Err(g)) => {
                    self.done = true;
                    let sse = SseEvent::default().event("gone").data(
                        json!({"oldest": g.oldest, "pruned_upto": g.pruned_upto}).to_string(),
                    );
                    return Some((Ok(sse), self));
                }
                Err(error) => {
                    tracing::warn!(%error, "an event stream could not read the log; retrying");
                    tokio::time::sleep(STREAM_POLL).await;
                }
            }
        }
    }
}

/// Every event type the node emits, by type: for each kind, each verb.
pub(crate) fn event_types(kernel: &Kernel) -> Map<String, Value> {
    let inventories = crate::openapi::inventory_references(kernel);
    let added: Vec<CanonicalType> = kernel
        .registered::<CanonicalType>()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    let mut types = Map::new();
    for (kind, inventory) in inventories {
        let own = added
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.schema.clone());
        for verb in EventSchema::all().into_iter().chain(own) {
            let ty = event_type(&kind, verb.verb);
            let mut data = serde_json::to_value(&verb.data).unwrap_or_default();
            // The kind's own inventory schema, in the OpenAPI document.
            if let Some(property) = data.pointer_mut("/properties/inventory") {
                *property = inventory.clone();
            }
            if let Some(kind_property) = data.pointer_mut("/properties/kind") {
                kind_property["const"] = json!(kind);
            }
            types.insert(
                ty.clone(),
                json!({"kind": kind, "verb": verb.verb, "when": verb.when,
                       "schema": schema_path(&ty), "data": data}),
            );
        }
    }
    types
}

/// `GET /v1/schemas/events/{type}`: the JSON Schema of the type's `data`.
pub(crate) fn schema(kernel: &Kernel, ty: &str) -> Result<Json<Value>, ApiError> {
    let mut types = event_types(kernel);
    let entry = types
        .remove(ty)
        .ok_or_else(|| ApiError(Fault::not_found(format!("no event type `{ty}`"))))?;
    let mut schema = entry["data"].clone();
    schema["$id"] = json!(schema_path(ty));
    schema["description"] = entry["when"].clone();
    Ok(Json(schema))
}
