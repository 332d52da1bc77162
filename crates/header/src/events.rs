//! Canonical events as they leave the node: CloudEvents 1.0 in JSON, for services in any
//! language (docs/integration.md is their specification).
//!
//! Every change to a resource writes one of the resource events ([`ResourceCreated`],
//! ...) to the store's event log in the change's own transaction. Outside the node each
//! is a [`CloudEvent`] whose `type` names the kind, the verb and the major version, e.g.
//! `io.flatstack.vm-instances.created.v1`: a consumer binds to the types it wants
//! (`io.flatstack.vm-instances.#` on the AMQP exchange, `?type=` over HTTP).
//!
//! Versioning: a minor change only adds optional fields to `data`, under the same type;
//! an incompatible one is a new major version (`.v2`), emitted beside the old one for a
//! deprecation window.

use crate::resource::{
    ResourceAttached, ResourceCreated, ResourceDeleted, ResourceDetached, ResourceStateChanged,
    ResourceUpdated,
};
use flatstack_kernel::schemars::{self, JsonSchema, Schema};
use flatstack_kernel::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The prefix of every event type: reverse DNS, as CloudEvents recommends.
pub const TYPE_PREFIX: &str = "io.flatstack";

/// The major version every event type carries today.
pub const MAJOR_VERSION: u32 = 1;

/// The CloudEvents version of [`CloudEvent::specversion`].
pub const SPEC_VERSION: &str = "1.0";

/// The content type an event is published with (AMQP `content-type`, the CloudEvents
/// structured mode).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The type of the events of `kind` with `verb`, e.g. `io.flatstack.hosts.state-changed.v1`.
pub fn event_type(kind: &str, verb: &str) -> String {
    format!("{TYPE_PREFIX}.{kind}.{verb}.v{MAJOR_VERSION}")
}

/// Where the JSON Schema of an event type's `data` is served, relative to the node's API.
pub fn schema_path(event_type: &str) -> String {
    format!("/v1/schemas/events/{event_type}")
}

/// An event that leaves the node: its kind, subject and verb make its CloudEvents `type`.
pub trait CanonicalEvent: Event + Serialize {
    /// The verb in the type: `created`, `updated`, ...
    const VERB: &'static str;
    /// One sentence: when it is emitted.
    const WHEN: &'static str;
    /// The API path of the kind of the resource it is about, e.g. `vm-instances`.
    fn kind(&self) -> &str;
    /// The resource's uuid: the CloudEvents `subject`.
    fn subject(&self) -> &str;
    /// Its CloudEvents `type`.
    fn event_type(&self) -> String {
        event_type(self.kind(), Self::VERB)
    }
    /// The JSON Schema of its `data` (`inventory` as an open object: the kind's own
    /// inventory schema is put in by whoever knows it, see [`EventSchema`]).
    fn data_schema() -> Schema
    where
        Self: JsonSchema + Sized,
    {
        schemars::schema_for!(Self)
    }
}

macro_rules! canonical {
    ($ty:ty, $verb:literal, $when:literal, |$e:ident| $kind:expr, $subject:expr) => {
        impl CanonicalEvent for $ty {
            const VERB: &'static str = $verb;
            const WHEN: &'static str = $when;
            fn kind(&self) -> &str {
                let $e = self;
                &$kind
            }
            fn subject(&self) -> &str {
                let $e = self;
                &$subject
            }
        }
    };
}

canonical!(
    ResourceCreated,
    "created",
    "A resource was created; `data.inventory` is the resource as created.",
    |e| e.kind,
    e.uuid
);
canonical!(
    ResourceUpdated,
    "updated",
    "A resource's fields changed; `data.inventory` is the resource as it is now.",
    |e| e.kind,
    e.uuid
);
canonical!(
    ResourceDeleted,
    "deleted",
    "A resource was deleted (a VM destroyed, a volume deleted).",
    |e| e.kind,
    e.uuid
);
canonical!(
    ResourceStateChanged,
    "state-changed",
    "A resource's state or status changed: `data.field` (`state`, `status`) went `from` → `to` (a VM `Starting` → `Running`, a host `Connected` → `Disconnected`).",
    |e| e.0.kind,
    e.0.uuid
);
canonical!(
    ResourceAttached,
    "attached",
    "A resource was attached to another (`data.target_kind`, `data.target_uuid`): a volume to a VM, primary storage or an L2 network to a cluster.",
    |e| e.0.kind,
    e.0.uuid
);
canonical!(
    ResourceDetached,
    "detached",
    "A resource was detached from another (`data.target_kind`, `data.target_uuid`).",
    |e| e.0.kind,
    e.0.uuid
);

/// One verb of the canonical events, what [`EventSchema::all`] lists for every kind.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The verb: `created`, `updated`, ...
    pub verb: &'static str,
    /// When it is emitted.
    pub when: &'static str,
    /// The JSON Schema of its `data`, whatever the kind.
    pub data: Schema,
}

impl EventSchema {
    /// Every verb, with the schema of its `data`.
    pub fn all() -> Vec<EventSchema> {
        fn of<E: CanonicalEvent + JsonSchema>() -> EventSchema {
            EventSchema {
                verb: E::VERB,
                when: E::WHEN,
                data: E::data_schema(),
            }
        }
        vec![
            of::<ResourceCreated>(),
            of::<ResourceUpdated>(),
            of::<ResourceDeleted>(),
            of::<ResourceStateChanged>(),
            of::<ResourceAttached>(),
            of::<ResourceDetached>(),
        ]
    }
}

/// An event type a plugin adds to the canonical ones (beyond the resource verbs every kind
/// has), registered in its `build` (`b.register(CanonicalType::of::<E>("hosts"))`) so that
/// `/v1/schemas` lists it with the schema of its `data`.
#[derive(Debug, Clone)]
pub struct CanonicalType {
    /// The kind its events are about.
    pub kind: &'static str,
    /// The verb, and when it is emitted.
    pub schema: EventSchema,
}

impl CanonicalType {
    /// The type of `E`'s events about resources of `kind`.
    pub fn of<E: CanonicalEvent + JsonSchema>(kind: &'static str) -> CanonicalType {
        CanonicalType {
            kind,
            schema: EventSchema {
                verb: E::VERB,
                when: E::WHEN,
                data: E::data_schema(),
            },
        }
    }
}

/// A canonical event as a service outside the node receives it: CloudEvents 1.0, JSON
/// (structured mode), with the node's sequence number as the extension attribute `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per event (a uuid): the same event delivered twice has the same id.
    pub id: String,
    /// Where it comes from: `/v1/<kind>`.
    pub source: String,
    /// `io.flatstack.<kind>.<verb>.v<major>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The uuid of the resource it is about.
    pub subject: String,
    /// When the change's transaction wrote it (RFC 3339, UTC).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The schema of `data`: `flatstack:` followed by the path the node serves it at.
    pub dataschema: String,
    /// The node's sequence number: strictly increasing in commit order, never reused; a
    /// consumer that remembers the highest it processed drops any repeat.
    pub seq: i64,
    /// The change itself (see the type's schema).
    pub data: Value,
}

impl CloudEvent {
    /// The event of `seq`, from the columns the store keeps.
    pub fn new(
        seq: i64,
        id: String,
        event_type: String,
        kind: &str,
        subject: String,
        time: String,
        data: Value,
    ) -> CloudEvent {
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id,
            source: format!("/v1/{kind}"),
            dataschema: format!("flatstack:{}", schema_path(&event_type)),
            event_type,
            subject,
            time,
            datacontenttype: "application/json".to_owned(),
            seq,
            data,
        }
    }
}

/// One stored event, its `data` still JSON text: what the relay publishes without parsing
/// it again ([`RawEvent::encode`]), and what [`RawEvent::parse`] makes a [`CloudEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The sequence number.
    pub seq: i64,
    /// The CloudEvents `id`.
    pub id: String,
    /// The CloudEvents `type`.
    pub event_type: String,
    /// The kind it is about.
    pub kind: String,
    /// The resource's uuid.
    pub subject: String,
    /// When it was written.
    pub time: String,
    /// `data`, as JSON text.
    pub data: String,
}

impl RawEvent {
    /// The event, `data` parsed.
    pub fn parse(self) -> Result<CloudEvent, serde_json::Error> {
        let data = serde_json::from_str(&self.data)?;
        Ok(CloudEvent::new(
            self.seq,
            self.id,
            self.event_type,
            &self.kind,
            self.subject,
            self.time,
            data,
        ))
    }

    /// The CloudEvent's JSON, the same as serialising [`RawEvent::parse`]'s result, with
    /// `data` copied as it is stored rather than parsed and printed again.
    pub fn encode(&self) -> String {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        format!(
            "{{\"specversion\":\"{SPEC_VERSION}\",\"id\":{},\"source\":{},\"type\":{},\"subject\":{},\"time\":{},\"datacontenttype\":\"application/json\",\"dataschema\":{},\"seq\":{},\"data\":{}}}",
            text(&self.id),
            text(&format!("/v1/{}", self.kind)),
            text(&self.event_type),
            text(&self.subject),
            text(&self.time),
            text(&format!("flatstack:{}", schema_path(&self.event_type))),
            self.seq,
            self.data,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::StateChange;

    #[test]
    fn a_raw_event_encodes_as_its_parsed_event_serialises() {
        let raw = RawEvent {
            seq: 7,
            id: "id-\"1\"".into(),
            event_type: "io.flatstack.zones.created.v1".into(),
            kind: "zones".into(),
            subject: "z\u{1b}1".into(),
            time: "2026-12-04T15:30:25.893Z".into(),
            data: r#"{"kind":"zones","uuid":"z1","inventory":{"name":"a\nb"}}"#.into(),
        };
        let encoded: Value = serde_json::from_str(&raw.encode()).expect("JSON");
        let parsed = serde_json::to_value(raw.parse().expect("parses")).expect("value");
        assert_eq!(encoded, parsed);
    }

    #[test]
    fn types_name_kind_verb_and_major_version() {
        let change = ResourceStateChanged(StateChange {
            kind: "hosts".into(),
            uuid: "h1".into(),
            field: "status".into(),
            from: "Connected".into(),
            to: "Disconnected".into(),
        });
        assert_eq!(change.event_type(), "io.flatstack.hosts.state-changed.v1");
        assert_eq!(change.subject(), "h1");
        let verbs: Vec<_> = EventSchema::all().iter().map(|s| s.verb).collect();
        assert_eq!(
            verbs,
            [
                "created",
                "updated",
                "deleted",
                "state-changed",
                "attached",
                "detached"
            ]
        );
    }
}
