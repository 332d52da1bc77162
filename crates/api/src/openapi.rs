//! The OpenAPI 3.1 document, generated from the registered API resources and the JSON
//! Schemas of their messages (OpenAPI 3.1 uses JSON Schema 2020-12, as schemars does).
//!
//! Every kind's inventory has the schema its owner declares (`ApiResource::inventory`); a
//! typed kind's inventory and create request are a `oneOf` by `type`, one variant per
//! registered driver type with the fields that type publishes (`DriverKind::fields`); an
//! action's body is a `oneOf` by `action`, each variant its message's fields and `action`.
//! A client generated from the document alone can call every operation.

use crate::children::{Catalogue, Child};
use flatstack_header::{
    ApiAction, ApiActionExtension, ApiResource, Inventory, InventoryList, UpdateResource,
};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Kernel, Message};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The OpenAPI document of `kernel`'s API.
pub fn document(kernel: &Kernel) -> Value {
    let mut doc = Doc::default();
    doc.schema("Error", error_schema());
    doc.schema(
        "Accepted",
        json!({
            "type": "object", "required": ["job_uuid", "location"],
            "properties": {"job_uuid": {"type": "string"}, "location": {"type": "string"}},
            "additionalProperties": false
        }),
    );
    doc.schema("Job", job_schema());
    doc.schema("Inventory", schema_of::<Inventory>());
    doc.schema("InventoryList", schema_of::<InventoryList>());
    doc.schema(UpdateResource::NAME, schema_of::<UpdateResource>());
    // As the router serves them: a declaration the distribution's check refuses is left out.
    let (catalogue, _) = Catalogue::new(kernel);
    // Every kind's inventory first: a child collection may hold another kind's resources.
    let mut typed = Vec::new();
    for (_, r) in catalogue.resources.values() {
        let types = doc.types(kernel, r);
        let inventory = doc.inventory(r, &types);
        doc.kinds.insert(r.create, inventory.clone());
        typed.push((types, inventory));
    }
    for ((_, r), (types, inventory)) in catalogue.resources.values().zip(typed) {
        let children = catalogue
            .children
            .get(r.path)
            .map_or(&[][..], Vec::as_slice);
        doc.resource(kernel, r, children, &types, inventory);
    }
    doc.fixed();
    secure(&mut doc.paths);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Flatstack", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The management node's API; generated from the loaded plugins."},
        "paths": doc.paths,
        "security": [{"bearer": []}],
        "components": {
            "schemas": doc.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API token (POST /v1/tokens), a session token (POST \
                    /v1/sessions), or the admin token a node writes to \
                    <data dir>/admin.token at its first start."}},
        },
    })
}

/// Each kind (its API path) and the schema of its inventory, as a reference into the
/// OpenAPI document served at `/v1/openapi.json`: what the canonical events about it carry.
pub(crate) fn inventory_references(kernel: &Kernel) -> Vec<(String, Value)> {
    let mut doc = Doc::default();
    let (catalogue, _) = Catalogue::new(kernel);
    catalogue
        .resources
        .values()
        .map(|(_, r)| {
            let types = doc.types(kernel, r);
            let mut inventory = doc.inventory(r, &types);
            if let Some(Value::String(target)) = inventory.get_mut("$ref") {
                *target = format!("/v1/openapi.json{target}");
            }
            (r.path.to_owned(), inventory)
        })
        .collect()
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

const ERROR_CODES: [&str; 10] = [
    "invalid_argument",
    "not_found",
    "conflict",
    "vetoed",
    "unavailable",
    "timeout",
    "internal",
    "unauthenticated",
    "forbidden",
    "too_many_requests",
];

fn error_body() -> Value {
    json!({
        "type": "object", "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "enum": ERROR_CODES},
            "message": {"type": "string"},
            "details": {"description": "What the error is about: `field`, `users`, a veto's `plugin` and `point`, ..."}
        },
        "additionalProperties": false
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": error_body()},
        "additionalProperties": false
    })
}

/// A job as `/v1/jobs/{uuid}` shows it (`crate::jobs::Job`, its error as the API's).
fn job_schema() -> Value {
    json!({
        "type": "object",
        "required": ["uuid", "operation", "state", "progress", "created_at"],
        "properties": {
            "uuid": {"type": "string"},
            "operation": {"type": "string", "description": "The request's message, e.g. `vm.create`."},
            "state": {"type": "string", "enum": ["running", "succeeded", "failed"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "step": {"type": "string", "description": "While it runs on this node, the flow step it is at, e.g. `vm.create: allocate-host`."},
            "resource_uuid": {"type": "string", "description": "The resource it acts on (for a create, the one it made, once known)."},
            "result": {"description": "The reply: for a create, update or action, the resource's inventory."},
            "error": error_body(),
            "status": {"type": "integer", "description": "The HTTP status its error would have had."},
            "recovered": {"type": "boolean", "description": "Closed by recovery after the node stopped while it ran."},
            "created_at": {"type": "string"},
            "finished_at": {"type": "string"},
            "account_uuid": {"type": "string", "description": "The account of the caller that started it."}
        },
        "additionalProperties": false
    })
}

#[derive(Default)]
struct Doc {
    paths: Map<String, Value>,
    schemas: Map<String, Value>,
    /// Each kind's inventory, by the kind's create message.
    kinds: BTreeMap<&'static str, Value>,
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Rewrites schemars' local `#/$defs/X` references to the document's components, and
/// makes string enums plain `enum`s.
fn relink(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            plain_enum(map);
            map.values_mut().for_each(relink);
        }
        Value::Array(items) => items.iter_mut().for_each(relink),
        _ => {}
    }
}

/// A `oneOf` of string constants (what schemars makes of an enum whose variants have doc
/// comments) as one string `enum`, the variants' descriptions in the schema's: what client
/// generators read best.
fn plain_enum(map: &mut Map<String, Value>) {
    let Some(Value::Array(variants)) = map.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    let mut described = Vec::new();
    for variant in variants {
        let Some(v) = variant.as_object() else {
            return;
        };
        if v.get("type") != Some(&json!("string"))
            || v.keys()
                .any(|k| !["type", "const", "enum", "description"].contains(&k.as_str()))
        {
            return;
        }
        let consts: Vec<Value> = match (v.get("const"), v.get("enum")) {
            (Some(c @ Value::String(_)), None) => vec![c.clone()],
            (None, Some(Value::Array(e))) if e.iter().all(Value::is_string) => e.clone(),
            _ => return,
        };
        if let Some(Value::String(d)) = v.get("description") {
            let names: Vec<&str> = consts.iter().filter_map(Value::as_str).collect();
            described.push(format!("`{}`: {d}", names.join("`, `")));
        }
        values.extend(consts);
    }
    map.remove("oneOf");
    map.insert("type".into(), json!("string"));
    map.insert("enum".into(), Value::Array(values));
    if !described.is_empty() {
        let mut text = map
            .get("description")
            .and_then(Value::as_str)
            .map(|d| format!("{d}\n\n"))
            .unwrap_or_default();
        text.push_str(&described.join("\n"));
        map.insert("description".into(), json!(text));
    }
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn response(description: &str, schema: Option<Value>) -> Value {
    match schema {
        Some(schema) => {
            json!({"description": description, "content": {"application/json": {"schema": schema}}})
        }
        None => json!({"description": description}),
    }
}

/// `{"inventory": schema}`, as one resource is answered.
fn one(schema: Value) -> Value {
    json!({"type": "object", "required": ["inventory"], "properties": {"inventory": schema},
           "additionalProperties": false})
}

/// `{"inventories": [schema], "total": n}`, as a list is answered.
fn many(schema: Value) -> Value {
    json!({"type": "object", "required": ["inventories", "total"],
           "properties": {"inventories": {"type": "array", "items": schema},
                          "total": {"type": "integer", "minimum": 0},
                          "next": {"type": "string", "description": "The cursor of the next page; absent on the last."}},
           "additionalProperties": false})
}

/// A `oneOf` of `variants` (component names by discriminating value), told apart by
/// `property`.
fn one_of(property: &str, variants: &[(String, String)]) -> Value {
    let refs: Vec<Value> = variants.iter().map(|(_, name)| reference(name)).collect();
    let mapping: Map<String, Value> = variants
        .iter()
        .map(|(value, name)| (value.clone(), reference(name)["$ref"].clone()))
        .collect();
    json!({"oneOf": refs, "discriminator": {"propertyName": property, "mapping": mapping}})
}

fn object_field<'a>(schema: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    schema.get(field).and_then(Value::as_object)
}

fn strings(schema: &Value, field: &str) -> Vec<Value> {
    schema
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether `schema` is the reply of a message that answers nothing (`()`).
fn nothing(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null"))
}

/// Whether `schema` is a closed object (`additionalProperties: false`).
fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

/// One variant of an object schema: `base`'s properties and required fields with `own`'s
/// added (`own_required`: its required fields too) and `field` fixed to `value`; closed if
/// `closed` says so.
fn variant(
    base: &Value,
    own: Option<&Value>,
    own_required: bool,
    field: &str,
    value: &str,
    closed: bool,
) -> Value {
    let mut properties = object_field(base, "properties")
        .cloned()
        .unwrap_or_default();
    let mut required = strings(base, "required");
    if let Some(own) = own {
        if let Some(props) = object_field(own, "properties") {
            properties.extend(props.clone());
        }
        if own_required {
            for r in strings(own, "required") {
                if !required.contains(&r) {
                    required.push(r);
                }
            }
        }
    }
    let mut fixed = json!({"type": "string", "const": value});
    // The base's description and its extensions (a table column) stay with the field.
    for (key, kept) in properties
        .get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if key == "description" || key.starts_with("x-") {
            fixed[key.as_str()] = kept.clone();
        }
    }
    properties.insert(field.to_owned(), fixed);
    if !required.contains(&json!(field)) {
        required.insert(0, json!(field));
    }
    let mut schema = json!({"type": "object", "properties": properties, "required": required});
    if let Some(description) = base.get("description") {
        schema["description"] = description.clone();
    }
    if closed {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

impl Doc {
    /// Moves `schema`'s `$defs` to the components and points its references there.
    fn adopt(&mut self, schema: &mut Value) {
        if let Value::Object(map) = schema {
            map.remove("$schema");
            if let Some(Value::Object(defs)) = map.remove("$defs") {
                for (def, mut s) in defs {
                    relink(&mut s);
                    self.schemas.insert(def, s);
                }
            }
        }
        relink(schema);
    }

    /// Adds a schema (and its `$defs`) to the components; returns a reference to it.
    fn schema(&mut self, name: &str, mut schema: Value) -> Value {
        self.adopt(&mut schema);
        self.schemas.insert(name.to_owned(), schema);
        reference(name)
    }

    /// The component `schema` refers to, followed through `$ref`s (a transparent message
    /// is a reference to the type it wraps).
    fn resolve(&self, schema: &Value) -> Value {
        let mut current = schema.clone();
        for _ in 0..8 {
            let target = current
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| self.schemas.get(name));
            match target {
                Some(target) if current.get("properties").is_none() => current = target.clone(),
                _ => break,
            }
        }
        current
    }

    /// A message's schema as a component named after it (an object of any fields if the
    /// kernel does not know it); returns the reference.
    fn message(&mut self, kernel: &Kernel, name: &str) -> Value {
        let schema = match kernel.bus().messages().get(name) {
            Some(m) => {
                let mut schema = m.schema();
                // Titled after the message's own type, not the one a transparent message
                // wraps: generated clients name their models by title, once each.
                let title = m.rust_type.rsplit("::").next().unwrap_or(name);
                if let (Value::Object(map), false) = (&mut schema, m.rust_type.contains('<')) {
                    map.insert("title".into(), json!(title));
                }
                schema
            }
            None => json!({"type": "object"}),
        };
        self.schema(name, schema)
    }

    /// The schema of a message's reply, as a value to put in a document (its `$defs` in
    /// the components); the generic inventory if it has none.
    fn reply(&mut self, kernel: &Kernel, name: &str) -> Value {
        match kernel
            .bus()
            .messages()
            .get(name)
            .and_then(|m| m.reply_schema())
        {
            Some(mut schema) => {
                self.adopt(&mut schema);
                if self.schemas.get("Inventory") == Some(&schema) {
                    reference("Inventory")
                } else {
                    schema
                }
            }
            None => reference("Inventory"),
        }
    }

    /// The driver types of `r`'s kind, with the schema of each one's own fields (their
    /// `$defs` in the components).
    fn types(&mut self, kernel: &Kernel, r: &ApiResource) -> Vec<(String, Option<Value>)> {
        let Some(kind) = r.driver_kind else {
            return Vec::new();
        };
        let types = kernel.drivers().describe().remove(kind).unwrap_or_default();
        types
            .into_iter()
            .map(|t| {
                let fields = t.fields.map(|mut fields| {
                    self.adopt(&mut fields);
                    fields
                });
                (t.name, fields)
            })
            .collect()
    }

    /// The kind's inventory as a component; a typed kind's is a `oneOf` by `type`, one
    /// variant per type with the fields it publishes. Returns the reference.
    fn inventory(&mut self, r: &ApiResource, types: &[(String, Option<Value>)]) -> Value {
        let Some(inventory) = r.inventory else {
            return reference("Inventory");
        };
        let mut base = serde_json::to_value(inventory()).unwrap_or_else(|_| json!({}));
        let name = match base.get("title").and_then(Value::as_str) {
            Some(title) => title.to_owned(),
            None => format!("{}.inventory", r.path),
        };
        if types.is_empty() {
            return self.schema(&name, base);
        }
        self.adopt(&mut base);
        let base_closed = closed(&base);
        let mut variants = Vec::new();
        for (type_name, fields) in types {
            let own_closed = fields.as_ref().is_some_and(closed);
            let v = variant(
                &base,
                fields.as_ref(),
                false,
                "type",
                type_name,
                base_closed && own_closed,
            );
            let component = format!("{name}.{type_name}");
            self.schemas.insert(component.clone(), v);
            variants.push((type_name.clone(), component));
        }
        let mut schema = one_of("type", &variants);
        if let Some(description) = base.get("description") {
            schema["description"] = description.clone();
        }
        self.schema(&name, schema)
    }

    /// The create request's body: the message; for a typed kind, a `oneOf` by `type`, each
    /// variant the message's fields and those its type publishes.
    fn create_body(
        &mut self,
        kernel: &Kernel,
        r: &ApiResource,
        types: &[(String, Option<Value>)],
    ) -> Value {
        let message = self.message(kernel, r.create);
        if types.is_empty() {
            return message;
        }
        let base = self.resolve(&message);
        let mut variants = Vec::new();
        for (type_name, fields) in types {
            // The base takes any driver field; a type that publishes its fields, just those.
            let own_closed = fields.as_ref().is_some_and(closed);
            let v = variant(&base, fields.as_ref(), true, "type", type_name, own_closed);
            let component = format!("{}.{type_name}", r.create);
            self.schemas.insert(component.clone(), v);
            variants.push((type_name.clone(), component));
        }
        one_of("type", &variants)
    }

    /// The errors an operation answers with; `default` for the rest (`500`, `504`, ...).
    fn errors(codes: &[&str]) -> Map<String, Value> {
        codes
            .iter()
            .chain(&["default"])
            .map(|c| ((*c).to_owned(), response("error", Some(reference("Error")))))
            .collect()
    }

    /// A state-changing operation: a job, `202`, or with `?wait=` its result (`success`
    /// with `result`, `204` if it has none).
    fn job_op(
        id: String,
        summary: String,
        body: Option<Value>,
        (success, result): (&str, Option<Value>),
        errors: &[&str],
    ) -> Value {
        let mut responses = Self::errors(errors);
        responses.insert(
            "503".into(),
            response("the node is stopping", Some(reference("Error"))),
        );
        match result {
            Some(result) => {
                responses.insert(
                    success.into(),
                    response("finished (with ?wait=)", Some(one(result))),
                );
            }
            None => {
                responses.insert("204".into(), response("finished (with ?wait=)", None));
            }
        }
        responses.insert(
            "202".into(),
            response("accepted: a job was started", Some(reference("Accepted"))),
        );
        let mut op = json!({
            "operationId": id, "summary": summary,
            "parameters": [
                {"name": "wait", "in": "query", "required": false,
                 "description": "Seconds to wait for the job before answering 202.",
                 "schema": {"type": "number", "minimum": 0}},
                {"name": "Idempotency-Key", "in": "header", "required": false,
                 "description": "A retry with the same key answers the first request's job.",
                 "schema": {"type": "string"}}
            ],
            "responses": responses,
        });
        if let Some(body) = body {
            op["requestBody"] = json_body(body);
        }
        op
    }

    fn resource(
        &mut self,
        kernel: &Kernel,
        r: &ApiResource,
        children: &[Child],
        types: &[(String, Option<Value>)],
        inventory: Value,
    ) {
        let p = r.path;
        let uuid_param =
            json!({"name": "uuid", "in": "path", "required": true, "schema": {"type": "string"}});
        let create = self.create_body(kernel, r, types);
        let mut filters: Vec<Value> = r.filters.iter().map(|f| json!({"name": f, "in": "query", "required": false, "schema": {"type": "string"}})).collect();
        filters.extend([
            json!({"name": "limit", "in": "query", "required": false, "description": "At most this many (1 to 1000, 1000 if absent).", "schema": {"type": "integer", "minimum": 1, "maximum": flatstack_store::resource::MAX_PAGE}}),
            json!({"name": "cursor", "in": "query", "required": false, "description": "The `next` of the previous page.", "schema": {"type": "string"}}),
            json!({"name": "sort", "in": "query", "required": false, "description": "Columns to sort by, comma-separated, `-` for descending: name, created_at (the default), updated_at, uuid or a filter's column.", "schema": {"type": "string"}}),
        ]);
        let mut list_responses = Self::errors(&["400"]);
        list_responses.insert(
            "200".into(),
            response("the list", Some(many(inventory.clone()))),
        );
        self.paths.insert(format!("/v1/{p}"), json!({
            "get": {"operationId": format!("{p}.list"), "summary": format!("List {p}"), "parameters": filters, "responses": list_responses},
            "post": Self::job_op(format!("{p}.create"), format!("Create one of {p}"), Some(create), ("201", Some(inventory.clone())), &["400", "409", "422"]),
        }));
        let mut show_responses = Self::errors(&["404"]);
        show_responses.insert(
            "200".into(),
            response("the resource", Some(one(inventory.clone()))),
        );
        let item = json!({
            "parameters": [uuid_param.clone()],
            "get": {"operationId": format!("{p}.show"), "summary": format!("Show one of {p}"), "responses": show_responses},
            "patch": Self::job_op(format!("{p}.update"), format!("Update one of {p}"), Some(reference(UpdateResource::NAME)), ("200", Some(inventory.clone())), &["400", "404", "422"]),
            "delete": Self::job_op(format!("{p}.delete"), format!("Delete one of {p}"), None, ("204", None), &["404", "409", "422"]),
        });
        self.paths.insert(format!("/v1/{p}/{{uuid}}"), item);
        self.actions(kernel, r, &inventory, &uuid_param);
        // The kind's own children and those other plugins add to it.
        for c in children {
            // A child whose create is a kind's create holds resources of that kind (an L3
            // network's IP ranges); one whose create is an action of its parent's kind
            // answers with the parent (an L2 network's clusters, attached).
            let of_kind = c.create.and_then(|create| self.kinds.get(create).cloned());
            let parents = c
                .create
                .filter(|create| !c.added && r.actions.iter().any(|a| a.message == *create));
            let declared = c.inventory.map(|schema| {
                let schema = serde_json::to_value(schema()).unwrap_or_else(|_| json!({}));
                let name = match schema.get("title").and_then(Value::as_str) {
                    Some(title) => title.to_owned(),
                    None => format!("{p}.{}.inventory", c.path),
                };
                self.schema(&name, schema)
            });
            let mut list_responses = Self::errors(&["404"]);
            let list = match declared.as_ref().or(of_kind.as_ref()) {
                Some(inventory) => many(inventory.clone()),
                None => self.reply(kernel, c.list),
            };
            list_responses.insert("200".into(), response("the list", Some(list)));
            // The list message's fields are the query's (`PageQuery`'s, for those that
            // page); one that takes none answers `400` to any.
            let message = self.message(kernel, c.list);
            let fields = self.resolve(&message);
            let query: Vec<Value> = fields
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(name, schema)| {
                    let mut param =
                        json!({"name": name, "in": "query", "required": false, "schema": schema});
                    if let Some(text) = schema.get("description") {
                        param["description"] = text.clone();
                    }
                    param
                })
                .collect();
            if !query.is_empty() {
                list_responses.insert("400".into(), response("error", Some(reference("Error"))));
            }
            let mut item = json!({
                "parameters": [uuid_param.clone()],
                "get": {"operationId": format!("{p}.{}.list", c.path), "summary": format!("List the {} of one of {p}", c.path), "parameters": query, "responses": list_responses},
            });
            if let Some(create) = c.create {
                let body = self.message(kernel, create);
                let result = match (of_kind, parents) {
                    (Some(inventory), _) => Some(inventory),
                    (None, Some(_)) => Some(inventory.clone()),
                    (None, None) => Some(self.reply(kernel, create)).filter(|r| !nothing(r)),
                };
                item["post"] = Self::job_op(
                    format!("{p}.{}.create", c.path),
                    format!("Create {} on one of {p}", c.path),
                    Some(body),
                    ("201", result),
                    &["400", "404", "409", "422"],
                );
            }
            self.paths
                .insert(format!("/v1/{p}/{{uuid}}/{}", c.path), item);
        }
        if r.driver_kind.is_some() {
            let names: Vec<&str> = types.iter().map(|(name, _)| name.as_str()).collect();
            let answer = json!({
                "type": "object", "required": ["types"],
                "properties": {"types": {"type": "array", "items": {
                    "type": "object", "required": ["name", "plugin"],
                    "properties": {
                        "name": {"type": "string", "enum": names},
                        "plugin": {"type": "string"},
                        "fields": {"description": "The JSON Schema of the type's own create fields."}
                    },
                    "additionalProperties": false
                }}},
                "additionalProperties": false
            });
            let mut responses = Self::errors(&[]);
            responses.insert("200".into(), response("the types", Some(answer)));
            self.paths.insert(format!("/v1/{p}/types"), json!({
                "get": {"operationId": format!("{p}.types"), "summary": format!("Driver types of {p}"),
                        "responses": responses}
            }));
        }
    }

    /// `/v1/{p}/{uuid}/actions`: the kind's own actions and those other plugins add to it,
    /// a `oneOf` by `action`. An action of the kind's owner that replies with an inventory
    /// replies with the kind's.
    fn actions(&mut self, kernel: &Kernel, r: &ApiResource, inventory: &Value, uuid: &Value) {
        let p = r.path;
        let extensions = kernel.registered::<ApiActionExtension>();
        let actions: Vec<(bool, &ApiAction)> = r
            .actions
            .iter()
            .map(|a| (true, a))
            .chain(
                extensions
                    .iter()
                    .filter(|(_, e)| e.path == p)
                    .map(|(_, e)| (false, &e.action)),
            )
            .collect();
        if actions.is_empty() {
            return;
        }
        let mut variants = Vec::new();
        let mut replies: Vec<Value> = Vec::new();
        for (own, a) in actions {
            let message = self.message(kernel, a.message);
            let body = self.resolve(&message);
            let component = format!("{p}.actions.{}", a.name);
            let v = if body.get("$ref").is_some() || body.get("oneOf").is_some() {
                // Not a plain object: the message's schema as it is, with `action`.
                json!({"allOf": [message, {"type": "object", "required": ["action"],
                       "properties": {"action": {"type": "string", "const": a.name}}}]})
            } else {
                variant(&body, None, false, "action", a.name, closed(&body))
            };
            self.schemas.insert(component.clone(), v);
            variants.push((a.name.to_owned(), component));
            let mut reply = self.reply(kernel, a.message);
            if own && reply == reference("Inventory") {
                reply = inventory.clone();
            }
            if !replies.contains(&reply) {
                replies.push(reply);
            }
        }
        // A reply of nothing is answered `204`.
        let result = match replies.len() {
            1 if nothing(&replies[0]) => None,
            1 => Some(replies.remove(0)),
            _ => Some(json!({"anyOf": replies})),
        };
        self.paths.insert(format!("/v1/{p}/{{uuid}}/actions"), json!({
            "parameters": [uuid.clone()],
            "post": Self::job_op(format!("{p}.action"), format!("An action on one of {p}"), Some(one_of("action", &variants)), ("200", result), &["400", "404", "409", "422"]),
        }));
    }

    fn fixed(&mut self) {
        let error = response("error", Some(reference("Error")));
        let ok = |d: &str| {
            let mut responses = Self::errors(&[]);
            responses.insert("200".into(), response(d, Some(json!({"type": "object"}))));
            responses
        };
        self.paths.insert("/v1/jobs/{uuid}".into(), json!({"get": {
            "operationId": "jobs.show", "summary": "State, progress and result of a job",
            "parameters": [{"name": "uuid", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": response("the job", Some(reference("Job"))), "404": error.clone(), "default": error.clone()}}}));
        let mut page = many(reference("Job"));
        page["properties"]["next"] = json!({"type": "string", "description": "The cursor of the next page; absent on the last."});
        self.paths.insert("/v1/jobs".into(), json!({"get": {
            "operationId": "jobs.list", "summary": "Jobs, newest first",
            "parameters": [
                {"name": "state", "in": "query", "required": false, "schema": {"type": "string", "enum": ["running", "succeeded", "failed"]}},
                {"name": "kind", "in": "query", "required": false, "description": "The request's message, e.g. `vm.create`.", "schema": {"type": "string"}},
                {"name": "resource_uuid", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "account_uuid", "in": "query", "required": false, "description": "Jobs of this account (admins; others see only their account's).", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}}
            ],
            "responses": {"200": response("a page of jobs", Some(page)), "400": error.clone(), "default": error}}}));
        // The event log (docs/integration.md). Its server-sent-events form,
        // `/v1/events/stream`, is left out: OpenAPI does not describe a stream of events.
        let mut event = schema_of::<flatstack_header::events::CloudEvent>();
        event["properties"]["data"] = json!({
            "type": "object", "additionalProperties": true,
            "description": "The change itself: its schema is the type's, at `dataschema`."
        });
        self.schema("CloudEvent", event);
        self.paths.insert("/v1/events".into(), json!({"get": {
            "operationId": "events.list",
            "summary": "Canonical events after a sequence number, in sequence order (also as server-sent events at /v1/events/stream)",
            "parameters": [
                {"name": "after", "in": "query", "required": false, "description": "Events with a greater `seq` (0: from the oldest kept).", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "type", "in": "query", "required": false, "description": "Only this type, e.g. `io.flatstack.vm-instances.created.v1`.", "schema": {"type": "string"}},
                {"name": "subject", "in": "query", "required": false, "description": "Only about this resource (its uuid).", "schema": {"type": "string"}},
                {"name": "kind", "in": "query", "required": false, "description": "Only about resources of this kind, e.g. `vm-instances`.", "schema": {"type": "string"}}
            ],
            "responses": {
                "200": response("the events, and the `after` to continue from", Some(json!({
                    "type": "object", "required": ["events", "next"], "additionalProperties": false,
                    "properties": {
                        "events": {"type": "array", "items": reference("CloudEvent")},
                        "next": {"type": "integer", "description": "Every matching event up to this `seq` was returned."}
                    }
                }))),
                "400": error.clone(),
                "410": response("the events asked for were pruned; `error.details.oldest` is the oldest kept", Some(reference("Error"))),
                "default": error.clone()
            }}}));
        // Identity: the login, the permissions, the audit trail.
        self.schema(
            "Session",
            schema_of::<flatstack_header::identity::Session>(),
        );
        self.schema(
            "AuditPage",
            schema_of::<flatstack_header::identity::AuditPage>(),
        );
        self.paths.insert("/v1/sessions".into(), json!({"post": {
            "operationId": "sessions.create", "summary": "Log in with a name and password for a session token",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["name", "password"], "additionalProperties": false,
                "properties": {"name": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": {
                "201": response("the session; its token is shown only now", Some(json!({"type": "object",
                    "required": ["inventory"], "properties": {"inventory": reference("Session")}}))),
                "401": error.clone(),
                "429": response("too many failed logins for this name; wait a minute", Some(reference("Error"))),
                "default": error.clone()}}}));
        self.paths.insert("/v1/permissions".into(), json!({"get": {
            "operationId": "permissions.list", "summary": "Every permission, its kind's access, and the roles that hold it",
            "responses": {"200": response("the permissions", Some(json!({"type": "object"}))), "default": error.clone()}}}));
        self.paths.insert("/v1/audit".into(), json!({"get": {
            "operationId": "audit.list", "summary": "The audit trail, newest first (admins)",
            "parameters": [
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "user_uuid", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "account_uuid", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "method", "in": "query", "required": false, "schema": {"type": "string"}}
            ],
            "responses": {"200": response("a page of records", Some(reference("AuditPage"))), "400": error.clone(), "default": error.clone()}}}));
        self.paths.insert("/v1/schemas/events/{type}".into(), json!({"get": {
            "operationId": "events.schema", "summary": "The JSON Schema of an event type's `data`",
            "parameters": [{"name": "type", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": response("the schema", Some(json!({"type": "object"}))), "404": error.clone(), "default": error.clone()}}}));
        for (path, id, summary) in [
            (
                "/v1/plugins",
                "plugins.list",
                "Loaded plugins and what each contributes",
            ),
            (
                "/v1/extension-points",
                "extension_points.list",
                "Every extension point with its implementors",
            ),
            (
                "/v1/schemas",
                "schemas.list",
                "The JSON Schema of every message and event",
            ),
            ("/v1/openapi.json", "openapi", "This document"),
            ("/healthz", "health.alive", "Alive: the process answers"),
            (
                "/readyz",
                "health.ready",
                "Ready: the store answers (503 while it cannot be read)",
            ),
            (
                "/v1/version",
                "version",
                "The version, the commit built from and the enabled plugins",
            ),
        ] {
            self.paths.insert(
                path.into(),
                json!({"get": {"operationId": id, "summary": summary, "responses": ok(summary)}}),
            );
        }
    }
}

/// Marks the public operations as needing no token, and gives every other one its `401`
/// and `403` (the document's default security is the bearer token).
fn secure(paths: &mut Map<String, Value>) {
    let error = json!({"description": "refused", "content": {"application/json":
        {"schema": {"$ref": "#/components/schemas/Error"}}}});
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            // Path items also hold `parameters`, shared by their operations.
            let (Ok(method), Some(operation)) = (
                method.to_uppercase().parse::<axum::http::Method>(),
                operation.as_object_mut(),
            ) else {
                continue;
            };
            if crate::auth::is_public(&method, path) {
                operation.insert("security".into(), json!([]));
                continue;
            }
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                for status in ["401", "403"] {
                    responses.entry(status).or_insert_with(|| error.clone());
                }
            }
        }
    }
}
