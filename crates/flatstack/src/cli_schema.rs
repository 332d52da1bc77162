//! What the client reads of a node's OpenAPI document (`/v1/openapi.json`): the fields a
//! kind's create, update and actions take (their JSON types, whether required, their
//! allowed values), its list's filters and its child collections. The client knows no
//! kind: it asks the node, so a plugin's kind is explained and typed like the core's.

use serde_json::Value;

/// One field of a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// The JSON type: `string`, `integer`, `number`, `boolean`, `array`, `object`, or empty
    /// when the document does not say.
    pub json_type: String,
    pub required: bool,
    /// The values it may take (`enum`), if listed.
    pub choices: Vec<String>,
}

/// What can be done with one kind.
#[derive(Debug, Default)]
pub struct KindSchema {
    pub create: Vec<Field>,
    pub update: Vec<Field>,
    pub filters: Vec<String>,
    /// Each action's name and fields (`action` itself left out).
    pub actions: Vec<(String, Vec<Field>)>,
    /// Each child collection's name and the fields its create takes.
    pub children: Vec<(String, Vec<Field>)>,
    /// The columns its inventory declares for tables, in order (`x-column`).
    pub columns: Vec<Column>,
    /// Its inventory's fields that are sizes in bytes (`x-unit = "bytes"`).
    pub bytes: Vec<String>,
}

/// A column of a kind's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The inventory's field.
    pub field: String,
    pub header: String,
    /// For an array of objects: the field of each that is shown.
    pub each: Option<String>,
}

/// Which body of a kind.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Create,
    Update,
    Action(&'a str),
    Child(&'a str),
}

/// The schema `$ref` points at, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/components/schemas/")
            .and_then(|name| doc["components"]["schemas"].get(name))
            .unwrap_or(&Value::Null),
        None => schema,
    }
}

/// The JSON type a schema declares (the first that is not `null`), following `$ref`.
fn json_type(doc: &Value, schema: &Value) -> String {
    let schema = resolve(doc, schema);
    match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or_default()
            .to_owned(),
        _ if schema.get("enum").is_some() => "string".to_owned(),
        _ => String::new(),
    }
}

fn choices(doc: &Value, schema: &Value) -> Vec<String> {
    resolve(doc, schema)["enum"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The fields of a body schema: its properties and those of what it combines (`allOf`;
/// `oneOf`/`anyOf` variants, such as a driver type's own fields, as optional).
pub fn fields(doc: &Value, schema: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    collect(doc, schema, true, &mut out, 0);
    out
}

fn collect(doc: &Value, schema: &Value, binding: bool, out: &mut Vec<Field>, depth: usize) {
    if depth > 8 {
        return;
    }
    let schema = resolve(doc, schema);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        if out.iter().any(|f: &Field| &f.name == name) {
            continue;
        }
        out.push(Field {
            name: name.clone(),
            json_type: json_type(doc, property),
            required: binding && required.contains(&name.as_str()),
            choices: choices(doc, property),
        });
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        collect(doc, part, binding, out, depth + 1);
    }
    for key in ["oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            collect(doc, part, false, out, depth + 1);
        }
    }
}

fn body(operation: &Value) -> &Value {
    &operation["requestBody"]["content"]["application/json"]["schema"]
}

/// What the document says of `kind`; `None` if it serves no such kind.
pub fn kind(doc: &Value, kind: &str) -> Option<KindSchema> {
    let paths = doc["paths"].as_object()?;
    let collection = paths.get(&format!("/v1/{kind}"))?;
    let mut schema = KindSchema {
        create: fields(doc, body(&collection["post"])),
        ..KindSchema::default()
    };
    if let Some(one) = paths.get(&format!("/v1/{kind}/{{uuid}}")) {
        schema.update = fields(doc, body(&one["patch"]));
    }
    schema.filters = collection["get"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .filter(|name| !matches!(*name, "limit" | "cursor" | "sort"))
        .map(str::to_owned)
        .collect();
    if let Some(actions) = paths.get(&format!("/v1/{kind}/{{uuid}}/actions")) {
        let request = resolve(doc, body(&actions["post"]));
        for variant in request["oneOf"].as_array().into_iter().flatten() {
            let variant = resolve(doc, variant);
            let Some(name) = variant["properties"]["action"]["const"].as_str() else {
                continue;
            };
            let mut action_fields = fields(doc, variant);
            action_fields.retain(|f| f.name != "action");
            schema.actions.push((name.to_owned(), action_fields));
        }
    }
    table(doc, &collection["get"], &mut schema);
    let prefix = format!("/v1/{kind}/{{uuid}}/");
    for (path, item) in paths {
        if let Some(child) = path.strip_prefix(&prefix) {
            if !child.contains('/') && child != "actions" {
                let create = fields(doc, body(&item["post"]));
                schema.children.push((child.to_owned(), create));
            }
        }
    }
    Some(schema)
}

/// The resource kinds the document serves (`/v1/{kind}` with a list), sorted.
pub fn kinds(doc: &Value) -> Vec<String> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(path, item)| {
            let kind = path.strip_prefix("/v1/")?;
            (!kind.contains('/') && item["get"]["operationId"] == format!("{kind}.list"))
                .then(|| kind.to_owned())
        })
        .collect()
}

/// What the list of a kind's child collection (`/v1/{kind}/{uuid}/{child}`) shows: its
/// rows' columns and sizes (the rest left empty).
pub fn child(doc: &Value, kind: &str, child: &str) -> Option<KindSchema> {
    let item = doc["paths"].get(format!("/v1/{kind}/{{uuid}}/{child}"))?;
    let mut schema = KindSchema::default();
    table(doc, &item["get"], &mut schema);
    Some(schema)
}

/// The columns (`x-column`) and sizes (`x-unit`) of the rows a list operation answers.
fn table(doc: &Value, list: &Value, schema: &mut KindSchema) {
    let items = &list["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        ["inventories"]["items"];
    let mut properties = Vec::new();
    inventory_properties(doc, items, &mut properties, 0);
    let mut declared: Vec<(i64, Column)> = Vec::new();
    for (name, property) in properties {
        if property["x-unit"] == "bytes" {
            schema.bytes.push(name.clone());
        }
        if let Some(order) = property["x-column"].as_i64() {
            let header = property["x-column-header"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| name.to_uppercase());
            let each = property["x-column-each"].as_str().map(str::to_owned);
            declared.push((
                order,
                Column {
                    field: name,
                    header,
                    each,
                },
            ));
        }
    }
    declared.sort_by_key(|(order, _)| *order);
    schema.columns = declared.into_iter().map(|(_, column)| column).collect();
}

/// The properties of an inventory schema (a typed kind's variants' too), first seen kept.
fn inventory_properties(doc: &Value, schema: &Value, out: &mut Vec<(String, Value)>, depth: usize) {
    if depth > 8 {
        return;
    }
    let schema = resolve(doc, schema);
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        match out.iter_mut().find(|(n, _)| n == name) {
            None => out.push((name.clone(), property.clone())),
            // Seen in a variant first (a typed kind's `type`): the base's table hints join.
            Some((_, seen)) => {
                for (key, value) in property.as_object().into_iter().flatten() {
                    if key.starts_with("x-") && seen.get(key).is_none() {
                        seen[key] = value.clone();
                    }
                }
            }
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            inventory_properties(doc, part, out, depth + 1);
        }
    }
}

/// The kind a reference field names (`image_uuid` → `images`, `l3_network_uuids` →
/// `l3-networks`, `primary_storage_uuid` → `primary-storage`), if the document serves it.
pub fn referred_kind(doc: &Value, field: &str) -> Option<String> {
    let base = field
        .strip_suffix("_uuids")
        .or_else(|| field.strip_suffix("_uuid"))?
        .replace('_', "-");
    [format!("{base}s"), base]
        .into_iter()
        .find(|kind| doc["paths"].get(format!("/v1/{kind}")).is_some())
}

/// A size in bytes as people read it: `512 B`, `1.5 KiB`, `10.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The fields of one body of a kind (none known: empty).
pub fn fields_of<'a>(schema: &'a KindSchema, target: Target<'_>) -> &'a [Field] {
    let named = |list: &'a [(String, Vec<Field>)], name: &str| -> &'a [Field] {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.as_slice())
            .unwrap_or_default()
    };
    match target {
        Target::Create => &schema.create,
        Target::Update => &schema.update,
        Target::Action(name) => named(&schema.actions, name),
        Target::Child(name) => named(&schema.children, name),
    }
}

/// A field as `--help` shows it: `name*  string  (a|b|c)`.
pub fn describe(field: &Field) -> String {
    let mut line = format!("{}{}", field.name, if field.required { "*" } else { "" });
    if !field.json_type.is_empty() {
        line = format!("{line:<28} {}", field.json_type);
    }
    if !field.choices.is_empty() {
        line = format!("{line} ({})", field.choices.join("|"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "paths": {
                "/v1/things": {
                    "get": {"parameters": [
                        {"in": "query", "name": "name"}, {"in": "query", "name": "limit"}
                    ], "responses": {"200": {"content": {"application/json": {"schema": {
                        "properties": {"inventories": {"items":
                            {"$ref": "#/components/schemas/ThingInventory"}}}}}}}}},
                    "post": {"requestBody": {"content": {"application/json": {"schema":
                        {"$ref": "#/components/schemas/thing.create"}}}}}
                },
                "/v1/things/{uuid}/actions": {
                    "post": {"requestBody": {"content": {"application/json": {"schema":
                        {"oneOf": [{"$ref": "#/components/schemas/things.actions.paint"}]}}}}}
                },
                "/v1/things/{uuid}/parts": {}
            },
            "components": {"schemas": {
                "thing.create": {
                    "properties": {
                        "name": {"type": "string"},
                        "size": {"type": ["integer", "null"]},
                        "colour": {"$ref": "#/components/schemas/Colour"}
                    },
                    "required": ["name"],
                    "oneOf": [{"properties": {"depth": {"type": "number"}}, "required": ["depth"]}]
                },
                "Colour": {"type": "string", "enum": ["red", "blue"]},
                "ThingInventory": {"properties": {
                    "uuid": {"type": "string"},
                    "size": {"type": "integer", "x-unit": "bytes", "x-column": 2},
                    "name": {"type": "string", "x-column": 1},
                    "parts": {"type": "array", "x-column": 3, "x-column-header": "PART NAMES",
                        "x-column-each": "name"}
                }},
                "things.actions.paint": {
                    "properties": {"action": {"const": "paint"}, "colour": {"type": "string"}},
                    "required": ["action", "colour"]
                }
            }}
        })
    }

    #[test]
    fn a_kind_is_read_from_the_document() {
        let doc = doc();
        let things = kind(&doc, "things").expect("served");
        let field = |name: &str| {
            things
                .create
                .iter()
                .find(|f| f.name == name)
                .cloned()
                .expect(name)
        };
        assert!(field("name").required);
        assert_eq!(field("size").json_type, "integer");
        assert!(!field("size").required);
        assert_eq!(field("colour").choices, ["red", "blue"]);
        // A variant's field is shown, not required of every body.
        assert!(!field("depth").required);
        assert_eq!(things.filters, ["name"]);
        assert_eq!(things.actions.len(), 1);
        assert_eq!(things.actions[0].0, "paint");
        assert_eq!(things.actions[0].1.len(), 1, "`action` itself is left out");
        assert!(things.actions[0].1[0].required);
        assert_eq!(things.children.len(), 1);
        assert_eq!(things.children[0].0, "parts");
        assert!(fields_of(&things, Target::Action("paint"))[0].required);
        assert!(fields_of(&things, Target::Child("parts")).is_empty());
        assert!(fields_of(&things, Target::Action("scrub")).is_empty());
        assert!(kind(&doc, "spaceships").is_none());
        let headers: Vec<&str> = things.columns.iter().map(|c| c.header.as_str()).collect();
        assert_eq!(headers, ["NAME", "SIZE", "PART NAMES"]);
        assert_eq!(things.columns[2].each.as_deref(), Some("name"));
        assert_eq!(things.bytes, ["size"]);
    }

    #[test]
    fn a_reference_field_names_its_kind() {
        let doc = json!({"paths": {"/v1/images": {}, "/v1/primary-storage": {},
            "/v1/l3-networks": {}}});
        assert_eq!(referred_kind(&doc, "image_uuid").as_deref(), Some("images"));
        assert_eq!(
            referred_kind(&doc, "l3_network_uuids").as_deref(),
            Some("l3-networks")
        );
        assert_eq!(
            referred_kind(&doc, "primary_storage_uuid").as_deref(),
            Some("primary-storage")
        );
        assert_eq!(referred_kind(&doc, "spaceship_uuid"), None);
        assert_eq!(referred_kind(&doc, "name"), None);
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(10 * (1u64 << 40)), "10.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
