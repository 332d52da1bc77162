//! The OpenAPI 3.1 document, generated from the registered API resources and the JSON
//! Schemas of their messages (OpenAPI 3.1 uses JSON Schema 2020-12, as schemars does).

use crate::children::{Catalogue, Child};
use flatstack_header::{
    ApiAction, ApiActionExtension, ApiResource, Inventory, InventoryList, UpdateResource,
};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Kernel, Message};
use serde_json::{json, Map, Value};

/// The OpenAPI document of `kernel`'s API.
pub fn document(kernel: &Kernel) -> Value {
    let mut doc = Doc::default();
    doc.schema("Error", error_schema());
    doc.schema(
        "Accepted",
        json!({
            "type": "object", "required": ["job_uuid", "location"],
            "properties": {"job_uuid": {"type": "string"}, "location": {"type": "string"}}
        }),
    );
    doc.schema("Inventory", schema_of::<Inventory>());
    doc.schema("InventoryList", schema_of::<InventoryList>());
    doc.schema(UpdateResource::NAME, schema_of::<UpdateResource>());
    // As the router serves them: a declaration the distribution's check refuses is left out.
    let (catalogue, _) = Catalogue::new(kernel);
    for (_, r) in catalogue.resources.values() {
        let children = catalogue
            .children
            .get(r.path)
            .map_or(&[][..], Vec::as_slice);
        doc.resource(kernel, r, children);
    }
    doc.fixed();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Flatstack", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The management node's API; generated from the loaded plugins."},
        "paths": doc.paths,
        "components": {"schemas": doc.schemas},
    })
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": ["invalid_argument", "not_found", "conflict", "vetoed", "unavailable", "timeout", "internal"]},
                "message": {"type": "string"},
                "details": {}
            }
        }}
    })
}

#[derive(Default)]
struct Doc {
    paths: Map<String, Value>,
    schemas: Map<String, Value>,
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Rewrites schemars' local `#/$defs/X` references to the document's components.
fn relink(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            map.values_mut().for_each(relink);
        }
        Value::Array(items) => items.iter_mut().for_each(relink),
        _ => {}
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

impl Doc {
    /// Adds a schema (and its `$defs`) to the components; returns a reference to it.
    fn schema(&mut self, name: &str, mut schema: Value) -> Value {
        if let Value::Object(map) = &mut schema {
            map.remove("$schema");
            if let Some(Value::Object(defs)) = map.remove("$defs") {
                for (def, mut s) in defs {
                    relink(&mut s);
                    self.schemas.insert(def, s);
                }
            }
        }
        relink(&mut schema);
        self.schemas.insert(name.to_owned(), schema);
        reference(name)
    }

    fn message(&mut self, kernel: &Kernel, name: &str) -> Value {
        let schema = kernel
            .bus()
            .messages()
            .get(name)
            .map(|m| m.schema())
            .unwrap_or_else(|| json!({"type": "object"}));
        self.schema(name, schema)
    }

    fn errors(codes: &[&str]) -> Map<String, Value> {
        codes
            .iter()
            .map(|c| ((*c).to_owned(), response("error", Some(reference("Error")))))
            .collect()
    }

    fn job_op(
        &self,
        id: String,
        summary: String,
        body: Option<Value>,
        success: &str,
        errors: &[&str],
    ) -> Value {
        let mut responses = Self::errors(errors);
        responses.insert(
            success.into(),
            response(
                "finished (with ?wait=)",
                Some(
                    json!({"type": "object", "properties": {"inventory": reference("Inventory")}}),
                ),
            ),
        );
        responses.insert(
            "202".into(),
            response("accepted: a job was started", Some(reference("Accepted"))),
        );
        let mut op = json!({
            "operationId": id, "summary": summary,
            "parameters": [{"name": "wait", "in": "query", "required": false,
                            "description": "Seconds to wait for the job before answering 202.",
                            "schema": {"type": "number"}}],
            "responses": responses,
        });
        if let Some(body) = body {
            op["requestBody"] = json_body(body);
        }
        op
    }

    fn resource(&mut self, kernel: &Kernel, r: &ApiResource, children: &[Child]) {
        let p = r.path;
        let uuid_param =
            json!({"name": "uuid", "in": "path", "required": true, "schema": {"type": "string"}});
        let create = self.message(kernel, r.create);
        let filters: Vec<Value> = r.filters.iter().map(|f| json!({"name": f, "in": "query", "required": false, "schema": {"type": "string"}})).collect();
        let mut list_responses = Self::errors(&["400"]);
        list_responses.insert(
            "200".into(),
            response("the list", Some(reference("InventoryList"))),
        );
        self.paths.insert(format!("/v1/{p}"), json!({
            "get": {"operationId": format!("{p}.list"), "summary": format!("List {p}"), "parameters": filters, "responses": list_responses},
            "post": self.job_op(format!("{p}.create"), format!("Create one of {p}"), Some(create), "201", &["400", "409", "422"]),
        }));
        let mut show_responses = Self::errors(&["404"]);
        show_responses.insert(
            "200".into(),
            response(
                "the resource",
                Some(
                    json!({"type": "object", "properties": {"inventory": reference("Inventory")}}),
                ),
            ),
        );
        let mut item = json!({
            "parameters": [uuid_param.clone()],
            "get": {"operationId": format!("{p}.show"), "summary": format!("Show one of {p}"), "responses": show_responses},
            "patch": self.job_op(format!("{p}.update"), format!("Update one of {p}"), Some(reference(UpdateResource::NAME)), "200", &["400", "404", "422"]),
            "delete": self.job_op(format!("{p}.delete"), format!("Delete one of {p}"), None, "204", &["404", "409", "422"]),
        });
        item["delete"]["responses"]["204"] = response("deleted (with ?wait=)", None);
        self.paths.insert(format!("/v1/{p}/{{uuid}}"), item);
        // The kind's own actions and those drivers added to it.
        let extensions = kernel.registered::<ApiActionExtension>();
        let actions: Vec<&ApiAction> = r
            .actions
            .iter()
            .chain(
                extensions
                    .iter()
                    .filter(|(_, e)| e.path == p)
                    .map(|(_, e)| &e.action),
            )
            .collect();
        if !actions.is_empty() {
            let variants: Vec<Value> = actions.iter().map(|a| {
                let body = self.message(kernel, a.message);
                json!({"allOf": [body, {"type": "object", "required": ["action"], "properties": {"action": {"const": a.name}}}]})
            }).collect();
            self.paths.insert(format!("/v1/{p}/{{uuid}}/actions"), json!({
                "parameters": [uuid_param.clone()],
                "post": self.job_op(format!("{p}.action"), format!("An action on one of {p}"), Some(json!({"oneOf": variants})), "200", &["400", "404", "409", "422"]),
            }));
        }
        // The kind's own children and those other plugins add to it.
        for c in children {
            let mut list_responses = Self::errors(&["404"]);
            list_responses.insert(
                "200".into(),
                response("the list", Some(reference("InventoryList"))),
            );
            let mut item = json!({
                "parameters": [uuid_param.clone()],
                "get": {"operationId": format!("{p}.{}.list", c.path), "summary": format!("List the {} of one of {p}", c.path), "responses": list_responses},
            });
            if let Some(create) = c.create {
                let body = self.message(kernel, create);
                item["post"] = self.job_op(
                    format!("{p}.{}.create", c.path),
                    format!("Create {} on one of {p}", c.path),
                    Some(body),
                    "201",
                    &["400", "404", "409", "422"],
                );
            }
            self.paths
                .insert(format!("/v1/{p}/{{uuid}}/{}", c.path), item);
        }
        if r.driver_kind.is_some() {
            self.paths.insert(format!("/v1/{p}/types"), json!({
                "get": {"operationId": format!("{p}.types"), "summary": format!("Driver types of {p}"),
                        "responses": {"200": response("the types", Some(json!({"type": "object"})))}}
            }));
        }
    }

    fn fixed(&mut self) {
        let ok = |d: &str| json!({"200": response(d, Some(json!({"type": "object"})))});
        self.paths.insert("/v1/jobs/{uuid}".into(), json!({"get": {
            "operationId": "jobs.show", "summary": "State, progress and result of a job",
            "parameters": [{"name": "uuid", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": response("the job", Some(json!({"type": "object"}))), "404": response("error", Some(reference("Error")))}}}));
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
        ] {
            self.paths.insert(
                path.into(),
                json!({"get": {"operationId": id, "summary": summary, "responses": ok(summary)}}),
            );
        }
    }
}
