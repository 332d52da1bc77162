//! The common resource life cycle on a real SQLite file: extension points around create
//! and delete, canonical events only after commit, and nothing left behind on failure.

use flatstack_header::points::{Create, CreateCheck, DeleteCheck};
use flatstack_header::{DeleteResource, Inventory, ResourceChange, ResourceCreated};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, DoUndo, Fault, FaultCode, Kernel, Plugin, PluginBuilder, Veto,
};
use flatstack_store::resource::{row, ResourceTable};
use flatstack_store::Store;
use serde_json::json;
use std::sync::{Arc, Mutex};

static RACKS: ResourceTable = ResourceTable::new("racks", "racks").filters(&["name"]);

struct Racks;
impl Plugin for Racks {
    fn name(&self) -> &'static str {
        "racks"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(1, "racks", "CREATE TABLE racks (uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"));
        b.event::<ResourceCreated>();
        let mut service = b.service("rack", ());
        RACKS.serve(&mut service);
    }
}

/// Refuses names starting with `bad`, fails the create of `fail*` and the undo of
/// `stuck*`, records its work.
#[derive(Clone, Default)]
struct Guard(Arc<Mutex<Vec<String>>>);
impl Veto<CreateCheck> for Guard {
    fn check(&self, change: &ResourceChange) -> Result<(), Fault> {
        match change.inventory["name"].as_str() {
            Some(name) if name.starts_with("bad") => Err(Fault::invalid("name", "not that name")),
            _ => Ok(()),
        }
    }
}
impl Veto<DeleteCheck> for Guard {
    fn check(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.inventory["name"] == "keep" {
            return Err(Fault::conflict("keep is kept"));
        }
        Ok(())
    }
}
#[async_trait]
impl DoUndo<Create> for Guard {
    async fn run(&self, change: &mut ResourceChange) -> Result<(), Fault> {
        if change.inventory["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("fail"))
        {
            return Err(Fault::unavailable("cannot prepare"));
        }
        self.0
            .lock()
            .unwrap()
            .push(format!("did {}", change.inventory["name"]));
        Ok(())
    }
    async fn undo(&self, change: &mut ResourceChange) -> Result<(), Fault> {
        if change.inventory["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("stuck"))
        {
            return Err(Fault::internal("cannot give back"));
        }
        self.0
            .lock()
            .unwrap()
            .push(format!("undid {}", change.inventory["name"]));
        Ok(())
    }
}
struct GuardPlugin(Guard);
impl Plugin for GuardPlugin {
    fn name(&self) -> &'static str {
        "guard"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.veto::<CreateCheck>(self.0.clone());
        b.veto::<DeleteCheck>(self.0.clone());
        b.do_undo::<Create>(self.0.clone());
    }
}

async fn node(dir: &std::path::Path, guard: Guard) -> (Kernel, Arc<Store>) {
    let store = Store::open_data_dir(dir).await.unwrap();
    let kernel = Kernel::builder()
        .plugin(Racks)
        .plugin(GuardPlugin(guard))
        .provide(store.clone())
        .build()
        .unwrap();
    let streams: Vec<_> = kernel.migrations().clone().into_iter().collect();
    store.migrate(&streams).await.unwrap();
    kernel.start().await.unwrap();
    (kernel, store)
}

async fn create(kernel: &Kernel, name: &str) -> Result<Inventory, Fault> {
    RACKS.create_row(kernel, row(json!({"name": name}))).await
}

#[tokio::test]
async fn failures_anywhere_in_a_create_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard::default();
    let (kernel, store) = node(dir.path(), guard.clone()).await;
    let mut events = kernel.bus().subscribe::<ResourceCreated>();

    let vetoed = create(&kernel, "bad-rack").await.unwrap_err();
    assert_eq!(vetoed.code, FaultCode::Vetoed);
    assert_eq!(vetoed.detail_str("plugin"), Some("guard"));

    let failed = create(&kernel, "fail-rack").await.unwrap_err();
    assert_eq!(failed.code, FaultCode::Unavailable);
    assert_eq!(failed.detail_str("point"), Some("resource.create"));

    let first = create(&kernel, "r1").await.unwrap();
    assert_eq!(
        events.recv().await.unwrap().uuid,
        first["uuid"].as_str().unwrap()
    );
    // The same name again: the write fails (UNIQUE), and the plugin's work is undone.
    let duplicate = create(&kernel, "r1").await.unwrap_err();
    assert_eq!(duplicate.code, FaultCode::Conflict);
    assert!(!duplicate.rollback_incomplete(), "{duplicate:?}");
    assert_eq!(
        *guard.0.lock().unwrap(),
        ["did \"r1\"", "did \"r1\"", "undid \"r1\""]
    );

    assert_eq!(store.count("racks").await.unwrap(), 1);
    store.sequence_events().await.unwrap();
    assert_eq!(
        store.count("event_outbox").await.unwrap(),
        1,
        "one event, for the one create"
    );
    assert!(
        events.try_recv().is_err(),
        "no event for a create that failed"
    );
}

#[tokio::test]
async fn an_undo_that_fails_after_a_failed_write_is_on_the_writes_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, store) = node(dir.path(), Guard::default()).await;
    create(&kernel, "stuck").await.unwrap();
    // The write fails (UNIQUE) and the plugin cannot give back what it did: the answer is
    // the write's fault, and it says what was left.
    let failed = create(&kernel, "stuck").await.unwrap_err();
    assert_eq!(failed.code, FaultCode::Conflict, "{failed:?}");
    assert!(failed.rollback_incomplete(), "{failed:?}");
    assert_eq!(
        failed.details["undo_failed"],
        json!([{
            "plugin": "guard",
            "point": "resource.create",
            "code": "internal",
            "message": "plugin `guard` failed at `resource.create`: cannot give back",
        }])
    );
    assert_eq!(
        failed.details["rollback_failed"],
        json!(["resource.create"])
    );
    assert_eq!(store.count("racks").await.unwrap(), 1);
}

#[tokio::test]
async fn a_delete_veto_keeps_the_row_and_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, store) = node(dir.path(), Guard::default()).await;
    let keep = create(&kernel, "keep").await.unwrap();
    let uuid = keep["uuid"].as_str().unwrap().to_owned();
    let refused = kernel
        .request("rack", DeleteResource {})
        .resource(uuid.clone())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code,
        FaultCode::Conflict,
        "a state conflict stays a conflict"
    );
    assert_eq!(store.count("racks").await.unwrap(), 1);
    let other = create(&kernel, "other").await.unwrap();
    kernel
        .request("rack", DeleteResource {})
        .resource(other["uuid"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(store.count("racks").await.unwrap(), 1);
    let missing = kernel
        .request("rack", DeleteResource {})
        .resource("0".repeat(32))
        .await
        .unwrap_err();
    assert_eq!(missing.code, FaultCode::NotFound);
}
