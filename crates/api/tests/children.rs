//! Child collections a plugin adds to another plugin's kind: served over HTTP by the adding
//! plugin's service (after the parent is found), in the OpenAPI document, and refused at
//! assembly when their kind is unknown or their segment taken.

use flatstack_api::CheckError;
use flatstack_header::api::ApiChildExtension;
use flatstack_header::identity::{AuthMethod, Authenticator, Caller, Role};
use flatstack_header::{ApiChild, ApiResource, GetResource, Inventory, InventoryList};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Fault, Kernel, Message, Plugin, PluginBuilder, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::future::IntoFuture;

/// Lists a thing's tags (addressed to the thing).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
struct ListTags {}
impl Message for ListTags {
    const NAME: &'static str = "tag.list";
}
impl Request for ListTags {
    type Reply = InventoryList;
}

/// Creates a thing (answered by `things`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
struct CreateThing {}
impl Message for CreateThing {
    const NAME: &'static str = "thing.create";
}
impl Request for CreateThing {
    type Reply = Inventory;
}

/// Lists a thing's parts (answered by `things`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
struct ListParts {}
impl Message for ListParts {
    const NAME: &'static str = "thing.part.list";
}
impl Request for ListParts {
    type Reply = InventoryList;
}

/// Creates a thing's part (answered by `things`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
struct CreatePart {}
impl Message for CreatePart {
    const NAME: &'static str = "thing.part.create";
}
impl Request for CreatePart {
    type Reply = Inventory;
}

/// Owns `things`, of which only `t1` exists, with a child collection of its own, `parts`.
struct Things;

impl Plugin for Things {
    fn name(&self) -> &'static str {
        "things"
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.register(AuthMethod::new("test", std::sync::Arc::new(TestTokens)));
        b.service("things", ())
            .handle::<CreateThing, _, _>(|_, _, _| async move { Ok(Inventory::new()) })
            .handle::<ListParts, _, _>(|_, _, _| async move { Ok(InventoryList::default()) })
            .handle::<CreatePart, _, _>(|_, _, _| async move { Ok(Inventory::new()) })
            .handle::<GetResource, _, _>(|_, _, cx| async move {
                match cx.resource_id()? {
                    "t1" => Ok(Inventory::from_iter([("uuid".into(), json!("t1"))])),
                    other => Err(Fault::not_found(format!("no thing {other}"))),
                }
            });
        b.register(ApiResource {
            path: "things",
            service: "things",
            create: "thing.create",
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: None,
            filters: &[],
            actions: &[],
            children: &[ApiChild {
                path: "parts",
                create: CreatePart::NAME,
                list: ListParts::NAME,
                inventory: None,
            }],
            inventory: None,
        });
    }
}

/// Adds `child` (served by its own service `tags`) to a kind it does not own.
struct Adds(&'static str, ApiChildExtension);

impl Plugin for Adds {
    fn name(&self) -> &'static str {
        self.0
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.service(self.0, ())
            .handle::<ListTags, _, _>(|_, _, cx| async move {
                let tag = Inventory::from_iter([("thing".into(), json!(cx.resource_id()?))]);
                Ok(InventoryList {
                    next: None,
                    inventories: vec![tag],
                    total: 1,
                })
            });
        b.register(self.1.clone());
    }
}

fn tags(kind: &'static str, child: &'static str) -> ApiChildExtension {
    ApiChildExtension::new(kind, child, "tags", ListTags::NAME)
}

fn kernel(adds: Vec<Adds>) -> Kernel {
    adds.into_iter()
        .fold(Kernel::builder().plugin(Things), |b, p| b.plugin(p))
        .build()
        .expect("assembles")
}

/// The one token the test kernel knows: an admin's.
const TOKEN: &str = "test-admin";

/// Knows [`TOKEN`], as an admin.
struct TestTokens;

#[flatstack_kernel::async_trait]
impl Authenticator for TestTokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>, Fault> {
        Ok((token == TOKEN)
            .then(|| Caller::new("u".into(), "admin".into(), "a".into(), Role::Admin)))
    }
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn another_plugins_child_is_served_after_its_parent_is_found() {
    let kernel = kernel(vec![Adds("tags", tags("things", "tags"))]);
    flatstack_api::check(&kernel).expect("consistent");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(axum::serve(listener, flatstack_api::router(kernel)).into_future());

    let (status, list) = get(&base, "/v1/things/t1/tags").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["inventories"][0]["thing"], "t1", "{list}");
    // The owner says the parent does not exist: the adding plugin is not asked.
    let (status, error) = get(&base, "/v1/things/t2/tags").await;
    assert_eq!(status, 404, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("no thing t2"));
    let (status, _) = get(&base, "/v1/things/t1/labels").await;
    assert_eq!(status, 404);
    // Listed, not created: it has no create message.
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/things/t1/tags"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 405);

    let (_, doc) = get(&base, "/v1/openapi.json").await;
    let added = &doc["paths"]["/v1/things/{uuid}/tags"];
    assert_eq!(added["get"]["operationId"], "things.tags.list", "{added}");
    assert!(added["post"].is_null(), "{added}");
    let own = &doc["paths"]["/v1/things/{uuid}/parts"];
    assert!(own["get"].is_object() && own["post"].is_object(), "{own}");
    server.abort();
}

#[test]
fn a_child_with_a_create_message_is_created_through_its_own_service() {
    let child = tags("things", "tags").with_create("tag.create");
    let kernel = kernel(vec![Adds("tags", child)]);
    let doc = flatstack_api::openapi::document(&kernel);
    let post = &doc["paths"]["/v1/things/{uuid}/tags"]["post"];
    assert_eq!(post["operationId"], "things.tags.create", "{post}");
}

#[test]
fn assembly_refuses_a_child_whose_service_does_not_answer_its_messages() {
    let child = tags("things", "tags").with_create("tag.create");
    let error = flatstack_api::check(&kernel(vec![Adds("tags", child)])).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "plugin `tags` declares child `tags` of `things` as message `tag.create`, \
         which service `tags` does not answer"
    );
}

#[test]
fn assembly_refuses_a_child_on_an_unknown_kind_or_a_taken_segment() {
    let refused = |adds: Vec<Adds>| flatstack_api::check(&kernel(adds)).expect_err("refused");

    let error = refused(vec![Adds("tags", tags("thingz", "tags"))]);
    assert_eq!(
        error,
        CheckError::UnknownKind {
            plugin: "tags".into(),
            kind: "thingz".into(),
            child: "tags".into()
        }
    );
    assert!(
        error.to_string().contains("`tags` adds `tags` to `thingz`"),
        "{error}"
    );

    // The owner's own child, then another plugin's.
    let error = refused(vec![Adds("tags", tags("things", "parts"))]);
    assert_eq!(
        error.to_string(),
        "`/v1/things/{uuid}/parts` is declared twice: by `things` and by `tags`"
    );
    // Two plugins adding the same child: named in plugin order.
    let error = refused(vec![
        Adds("labels", tags("things", "tags")),
        Adds("tags", tags("things", "tags")),
    ]);
    assert!(
        matches!(&error, CheckError::DuplicateChild { first, second, .. } if first == "labels" && second == "tags"),
        "{error}"
    );
    let error = refused(vec![Adds("tags", tags("things", "actions"))]);
    assert!(matches!(error, CheckError::InvalidChild { .. }), "{error}");
    let error = refused(vec![Adds("tags", tags("things", "Tags"))]);
    assert!(error.to_string().contains("kebab-case"), "{error}");
}

/// Adds an API declaration of its own: an action, or a kind.
struct Declares(&'static str, fn(&mut PluginBuilder<'_>));

impl Plugin for Declares {
    fn name(&self) -> &'static str {
        self.0
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        (self.1)(b)
    }
}

fn check_with(plugin: Declares) -> Result<(), CheckError> {
    let kernel = Kernel::builder()
        .plugin(Things)
        .plugin(plugin)
        .build()
        .expect("assembles");
    flatstack_api::check(&kernel)
}

fn kind(path: &'static str, service: &'static str, create: &'static str) -> ApiResource {
    ApiResource {
        path,
        service,
        create,
        driver_kind: None,
        filters: &[],
        actions: &[],
        children: &[],
        inventory: None,
        access: flatstack_header::identity::Access::Infrastructure,
        holds_secrets: false,
    }
}

#[test]
fn assembly_refuses_a_kind_whose_service_or_create_is_unknown() {
    let error = check_with(Declares("gadgets", |b| {
        b.register(kind("gadgets", "gadget", "gadget.create"));
    }))
    .expect_err("refused");
    assert!(
        matches!(&error, CheckError::UnknownService { plugin, service, .. } if plugin == "gadgets" && service == "gadget"),
        "{error}"
    );
    assert!(error.to_string().contains("`gadget`"), "{error}");

    let error = check_with(Declares("gadgets", |b| {
        b.service("gadget", ())
            .handle::<CreateThing, _, _>(|_, _, _| async move { Ok(Inventory::new()) });
        b.register(kind("gadgets", "gadget", "gadget.create"));
    }))
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "plugin `gadgets` declares the create of `gadgets` as message `gadget.create`, \
         which service `gadget` does not answer"
    );

    // A kind served twice: named with both plugins.
    let error = check_with(Declares("others", |b| {
        b.register(kind("things", "things", CreateThing::NAME));
    }))
    .expect_err("refused");
    assert!(
        matches!(&error, CheckError::DuplicateKind { kind, .. } if kind == "things"),
        "{error}"
    );
}

#[test]
fn assembly_refuses_an_action_its_service_does_not_answer_or_declared_twice() {
    use flatstack_header::{ApiAction, ApiActionExtension};
    // Another plugin's action, with a message its service does not answer.
    let error = check_with(Declares("polish", |b| {
        b.service("polish", ());
        b.register(ApiActionExtension {
            path: "things",
            service: "polish",
            action: ApiAction::admin("polish", "polish.run"),
        });
    }))
    .expect_err("refused");
    assert!(
        matches!(&error, CheckError::UnknownMessage { plugin, message, what, .. }
            if plugin == "polish" && message == "polish.run" && what == "action `polish`"),
        "{error}"
    );
    // On a kind nobody serves.
    let error = check_with(Declares("polish", |b| {
        b.service("polish", ())
            .handle::<CreateThing, _, _>(|_, _, _| async move { Ok(Inventory::new()) });
        b.register(ApiActionExtension {
            path: "thingz",
            service: "polish",
            action: ApiAction::admin("polish", CreateThing::NAME),
        });
    }))
    .expect_err("refused");
    assert_eq!(
        error,
        CheckError::ActionOnUnknownKind {
            plugin: "polish".into(),
            kind: "thingz".into(),
            action: "polish".into()
        }
    );
    // Twice on one kind.
    let error = check_with(Declares("polish", |b| {
        b.service("polish", ())
            .handle::<CreateThing, _, _>(|_, _, _| async move { Ok(Inventory::new()) });
        for _ in 0..2 {
            b.register(ApiActionExtension {
                path: "things",
                service: "polish",
                action: ApiAction::admin("polish", CreateThing::NAME),
            });
        }
    }))
    .expect_err("refused");
    assert!(
        matches!(&error, CheckError::DuplicateAction { kind, action, .. } if kind == "things" && action == "polish"),
        "{error}"
    );
    // Well declared: accepted, and its body in the document takes `action` and the
    // message's fields (a closed message does not forbid `action`).
    let kernel = Kernel::builder()
        .plugin(Things)
        .plugin(Declares("polish", |b| {
            b.service("polish", ())
                .handle::<CreateThing, _, _>(|_, _, _| async move { Ok(Inventory::new()) });
            b.register(ApiActionExtension {
                path: "things",
                service: "polish",
                action: ApiAction::admin("polish", CreateThing::NAME),
            });
        }))
        .build()
        .expect("assembles");
    assert_eq!(flatstack_api::check(&kernel), Ok(()));
    let doc = flatstack_api::openapi::document(&kernel);
    let body = &doc["paths"]["/v1/things/{uuid}/actions"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert_eq!(body["discriminator"]["propertyName"], "action", "{body}");
    let variant = &doc["components"]["schemas"]["things.actions.polish"];
    assert_eq!(
        variant["properties"]["action"]["const"], "polish",
        "{variant}"
    );
    assert_eq!(variant["required"], json!(["action"]), "{variant}");
}
