//! Nothing orphaned: a delete or a detach refused while other resources use the resource —
//! through foreign keys (the store names the users by kind and uuid, never by table) or
//! through an asynchronous veto that reads the store inside the delete's transaction.

use flatstack_header::points::{DeleteCheck, DetachCheck};
use flatstack_header::{Attachment, DeleteResource, ResourceChange};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, AsyncVeto, Fault, FaultCode, Kernel, KernelRef, Plugin, PluginBuilder,
};
use flatstack_store::attach::Attachments;
use flatstack_store::resource::{row, store, ResourceTable};
use flatstack_store::{ResourcePlugin, Store, TableKind, Users};
use serde_json::{json, Value};
use std::sync::Arc;

static RACKS: ResourceTable = ResourceTable::new("racks", "racks").filters(&["name"]);

static SERVERS: ResourceTable = ResourceTable::new("servers", "servers").filters(&["name"]);

static ROOMS: Attachments = Attachments::new(
    "racks",
    "rack_room_refs",
    "rack_uuid",
    "rooms",
    "rooms",
    "room_uuid",
);

/// Racks, rooms they attach to, servers in racks (and their slots, parts of servers),
/// cables nobody names, and bookings — which refer to racks and rooms without a foreign key.
struct Racks;
impl Plugin for Racks {
    fn name(&self) -> &'static str {
        "racks"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "racks",
            "CREATE TABLE racks (uuid TEXT PRIMARY KEY, name TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE rooms (uuid TEXT PRIMARY KEY, name TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE rack_room_refs (
                rack_uuid TEXT NOT NULL REFERENCES racks (uuid),
                room_uuid TEXT NOT NULL REFERENCES rooms (uuid), created_at TEXT NOT NULL);
             CREATE TABLE servers (uuid TEXT PRIMARY KEY, name TEXT NOT NULL,
                rack_uuid TEXT NOT NULL REFERENCES racks (uuid),
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE slots (uuid TEXT PRIMARY KEY,
                server_uuid TEXT NOT NULL REFERENCES servers (uuid),
                rack_uuid TEXT NOT NULL REFERENCES racks (uuid));
             CREATE TABLE cables (uuid TEXT PRIMARY KEY,
                rack_uuid TEXT NOT NULL REFERENCES racks (uuid));
             CREATE TABLE bookings (uuid TEXT PRIMARY KEY, target TEXT NOT NULL);",
        ));
        b.register(RACKS.table_kind())
            .register(SERVERS.table_kind())
            .register(ROOMS.table_kind())
            .register(TableKind::part("slots", "servers", "server_uuid"));
        let mut racks = b.service("rack", ());
        RACKS.serve(&mut racks);
        let mut servers = b.service("server", ());
        SERVERS.serve(&mut servers);
    }
}

/// Refuses to delete or detach what a booking names: it reads the bookings (through
/// `Store::read`, while the owner holds the writer) and names them as users.
struct Bookings(KernelRef);

impl Bookings {
    async fn users(&self, uuid: &str) -> Result<Users, Fault> {
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.read().await?;
        let mut users = Users::new();
        for booking in tx
            .query(
                "SELECT uuid FROM bookings WHERE target = $1 ORDER BY uuid",
                &[json!(uuid)],
            )
            .await?
        {
            users.add("bookings", booking["uuid"].as_str().unwrap_or_default());
        }
        Ok(users)
    }
}

#[async_trait]
impl AsyncVeto<DeleteCheck> for Bookings {
    async fn check(&self, change: &ResourceChange) -> Result<(), Fault> {
        self.users(&change.uuid)
            .await?
            .check(&format!("cannot delete {} {}", change.kind, change.uuid))
    }
}

#[async_trait]
impl AsyncVeto<DetachCheck> for Bookings {
    async fn check(&self, attachment: &Attachment) -> Result<(), Fault> {
        self.users(&attachment.target_uuid).await?.check(&format!(
            "cannot detach {} {} from {} {}",
            attachment.kind, attachment.uuid, attachment.target_kind, attachment.target_uuid
        ))
    }
}

struct BookingsPlugin;
impl Plugin for BookingsPlugin {
    fn name(&self) -> &'static str {
        "bookings"
    }
    fn requires(&self) -> &'static [&'static str] {
        &["racks"]
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        let kernel = b.kernel();
        b.veto_async::<DeleteCheck>(Bookings(kernel.clone()));
        b.veto_async::<DetachCheck>(Bookings(kernel));
    }
}

async fn node(dir: &std::path::Path) -> (Kernel, Arc<Store>) {
    let store = Store::open_data_dir(dir).await.unwrap();
    let kernel = Kernel::builder()
        .plugin(ResourcePlugin)
        .plugin(Racks)
        .plugin(BookingsPlugin)
        .provide(store.clone())
        .build()
        .unwrap();
    let streams: Vec<_> = kernel.migrations().clone().into_iter().collect();
    store.migrate(&streams).await.unwrap();
    kernel.start().await.unwrap();
    (kernel, store)
}

async fn insert(kernel: &Kernel, table: &str, row: Value) {
    let mut tx = store(kernel).unwrap().begin().await.unwrap();
    tx.insert(table, &flatstack_store::resource::row(row))
        .await
        .unwrap();
    tx.commit(kernel.bus()).await.unwrap();
}

async fn delete(kernel: &Kernel, service: &str, uuid: &str) -> Result<(), Fault> {
    kernel
        .request(service, DeleteResource {})
        .resource(uuid)
        .await
}

fn users(fault: &Fault) -> Vec<(String, String)> {
    fault.details["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {fault:?}"))
        .iter()
        .map(|u| {
            (
                u["kind"].as_str().unwrap().to_owned(),
                u["uuid"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_delete_refused_by_foreign_keys_names_kinds_and_uuids_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, store) = node(dir.path()).await;
    let rack = RACKS
        .create_row(&kernel, row(json!({"name": "r1"})))
        .await
        .unwrap();
    let rack = rack["uuid"].as_str().unwrap().to_owned();
    let mut servers = Vec::new();
    for i in 0..7 {
        let server = SERVERS
            .create_row(
                &kernel,
                row(json!({"name": format!("s{i}"), "rack_uuid": rack})),
            )
            .await
            .unwrap();
        servers.push(server["uuid"].as_str().unwrap().to_owned());
    }
    servers.sort();
    // Server 0 also refers to the rack through a slot: still one server.
    insert(
        &kernel,
        "slots",
        json!({"uuid": "slot-0", "server_uuid": servers[0], "rack_uuid": rack}),
    )
    .await;
    insert(&kernel, "cables", json!({"uuid": "c1", "rack_uuid": rack})).await;

    let refused = delete(&kernel, "rack", &rack).await.unwrap_err();
    assert_eq!(refused.code, FaultCode::Conflict, "{refused:?}");
    let expected: Vec<(String, String)> = servers[..5]
        .iter()
        .map(|s| ("servers".to_owned(), s.clone()))
        .collect();
    assert_eq!(users(&refused), expected, "the first five, in order");
    assert_eq!(refused.details["user_counts"], json!({"servers": 7}));
    assert_eq!(refused.details["rows"], json!({"cables": 1}));
    assert!(
        refused.message.starts_with(&format!(
            "cannot delete racks {rack}: it is still used by servers {} and 2 more; 1 row of cables; delete or detach those first",
            servers[..5].join(", ")
        )),
        "{}",
        refused.message
    );
    assert_eq!(store.count("racks").await.unwrap(), 1, "nothing changed");
}

#[tokio::test]
async fn an_asynchronous_veto_reads_the_store_inside_the_delete_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, store) = node(dir.path()).await;
    let rack = RACKS
        .create_row(&kernel, row(json!({"name": "r1"})))
        .await
        .unwrap();
    let rack = rack["uuid"].as_str().unwrap().to_owned();
    insert(&kernel, "bookings", json!({"uuid": "b2", "target": rack})).await;
    insert(&kernel, "bookings", json!({"uuid": "b1", "target": rack})).await;

    let refused = delete(&kernel, "rack", &rack).await.unwrap_err();
    assert_eq!(refused.code, FaultCode::Conflict, "{refused:?}");
    assert_eq!(refused.detail_str("plugin"), Some("bookings"));
    assert_eq!(
        refused.detail_str("point"),
        Some("resource.delete.pre-check")
    );
    assert_eq!(
        users(&refused),
        [
            ("bookings".to_owned(), "b1".to_owned()),
            ("bookings".to_owned(), "b2".to_owned())
        ]
    );
    assert!(
        refused.message.contains(&format!(
            "cannot delete racks {rack}: it is still used by bookings b1, b2"
        )),
        "{}",
        refused.message
    );
    assert_eq!(store.count("racks").await.unwrap(), 1, "nothing changed");
    store.sequence_events().await.unwrap();
    assert_eq!(
        store.count("event_outbox").await.unwrap(),
        1,
        "only the create's event"
    );

    let mut tx = store.begin().await.unwrap();
    tx.delete_where("bookings", "target", &rack).await.unwrap();
    tx.commit(kernel.bus()).await.unwrap();
    delete(&kernel, "rack", &rack)
        .await
        .expect("no longer used");
    assert_eq!(store.count("racks").await.unwrap(), 0);
}

#[tokio::test]
async fn an_asynchronous_veto_refuses_a_detach_and_leaves_the_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, store) = node(dir.path()).await;
    let rack = RACKS
        .create_row(&kernel, row(json!({"name": "r1"})))
        .await
        .unwrap();
    insert(
        &kernel,
        "rooms",
        json!({"uuid": "room-1", "name": "a", "created_at": "t", "updated_at": "t"}),
    )
    .await;
    ROOMS.attach(&kernel, &rack, "room-1").await.unwrap();
    insert(
        &kernel,
        "bookings",
        json!({"uuid": "b1", "target": "room-1"}),
    )
    .await;

    let refused = ROOMS.detach(&kernel, &rack, "room-1").await.unwrap_err();
    assert_eq!(refused.code, FaultCode::Conflict, "{refused:?}");
    assert_eq!(
        refused.detail_str("point"),
        Some("resource.detach.pre-check")
    );
    assert_eq!(users(&refused), [("bookings".to_owned(), "b1".to_owned())]);
    let mut tx = store.read().await.unwrap();
    assert_eq!(
        ROOMS
            .targets(&mut tx, rack["uuid"].as_str().unwrap())
            .await
            .unwrap(),
        ["room-1"],
        "still attached"
    );
    drop(tx);

    // The room cannot go either while the rack is attached to it: the store names the
    // rack (the reference row stands for it), not the reference table.
    let mut tx = store.begin().await.unwrap();
    tx.delete_where("bookings", "uuid", "b1").await.unwrap();
    let refused = tx.delete("rooms", "room-1").await.unwrap_err();
    assert_eq!(
        users(&refused),
        [(
            "racks".to_owned(),
            rack["uuid"].as_str().unwrap().to_owned()
        )]
    );
    tx.commit(kernel.bus()).await.unwrap();
    ROOMS
        .detach(&kernel, &rack, "room-1")
        .await
        .expect("no longer used");
}
