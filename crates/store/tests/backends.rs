//! What must not differ between SQLite and PostgreSQL, checked on both: NULLs and booleans
//! in columns of every type, values converted by column type, `updated_at`, refused
//! constraints as conflicts about the data, other errors told without SQL, reads on one
//! snapshot; and on PostgreSQL, write transactions side by side, ordered by resource locks. PostgreSQL is the server of
//! `FLATSTACK_TEST_DATABASE_URL` if set, else the local one (`.ci/run` starts it); each
//! test gets a fresh database.

use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, FaultCode, Kernel};
use flatstack_store::resource::row;
use flatstack_store::{Backend, ResourceLock, Store, StoreErrorKind};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const SCHEMA: &str = "CREATE TABLE things (uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        size BIGINT, note TEXT, created_at TEXT, updated_at TEXT);
     CREATE TABLE parts (uuid TEXT PRIMARY KEY, thing_uuid TEXT REFERENCES things (uuid),
        slot BIGINT, label TEXT, weight REAL, created_at TEXT, updated_at TEXT,
        UNIQUE (thing_uuid, slot));
     CREATE TABLE notes (uuid TEXT PRIMARY KEY, thing_uuid TEXT REFERENCES things (uuid));";

/// Where a test store's data lives, removed when the test ends.
enum Place {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database(Database),
}

/// A store on each backend with the schema migrated (so the store knows its columns).
async fn stores() -> Vec<(Arc<Store>, Place)> {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = Store::open_data_dir(dir.path()).await.expect("sqlite");
    let database = Database::create();
    let postgres = Store::open(&database.url).await.expect("postgres");
    let mut out = Vec::new();
    for (store, place) in [
        (sqlite, Place::Dir(dir)),
        (postgres, Place::Database(database)),
    ] {
        migrate(&store).await;
        out.push((store, place));
    }
    out
}

/// A store on a fresh PostgreSQL database, its schema migrated; the database goes with
/// the second value.
async fn postgres_store() -> (Arc<Store>, Database) {
    let database = Database::create();
    let store = Store::open(&database.url).await.expect("postgres");
    migrate(&store).await;
    (store, database)
}

/// The tests' schema, applied to `store`.
async fn migrate(store: &Store) {
    let stream = vec![
        Migration::new(1, "things and parts", SCHEMA),
        // On PostgreSQL, text that a collation would sort unlike SQLite.
        Migration::new(
            2,
            "tags",
            "CREATE TABLE tags (owner TEXT, tag TEXT, created_at TEXT)",
        )
        .postgres(
            "CREATE TABLE tags (owner TEXT, tag TEXT COLLATE \"und-x-icu\", created_at TEXT)",
        ),
    ];
    store
        .migrate(&[("test".to_owned(), stream)])
        .await
        .expect("migrate");
}

#[tokio::test]
async fn nulls_booleans_and_numbers_as_text_fit_every_column_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        // A NULL first, in a BIGINT and a TEXT column (the statement is prepared with it),
        // then values in the same statement, then NULLs again.
        for (uuid, name, size, note) in [
            ("a", "one", json!(null), json!(null)),
            ("b", "two", json!(5), json!("x")),
            ("c", "three", json!(null), json!(null)),
        ] {
            tx.insert(
                "things",
                &row(json!({"uuid": uuid, "name": name, "size": size, "note": note})),
            )
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        }
        // Booleans are 1/0 in a BIGINT column; a number's text goes into a BIGINT column
        // and a number into a TEXT one, as SQLite's affinity converts them.
        tx.insert(
            "parts",
            &row(
                json!({"uuid": "p", "thing_uuid": "a", "slot": true, "label": 7, "weight": "1.5"}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        tx.insert(
            "parts",
            &row(json!({"uuid": "q", "thing_uuid": null, "slot": "8", "label": null, "weight": null})),
        )
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        let part = tx.get("parts", "p").await.expect("get").expect("row");
        assert_eq!(
            (&part["slot"], &part["label"], &part["weight"]),
            (&json!(1), &json!("7"), &json!(1.5)),
            "{backend:?}"
        );
        // A filter from a query string is text: it finds the integer it spells, and text
        // that is no number finds nothing (PostgreSQL would refuse to compare it).
        for (filter, found) in [("8", 1), ("08", 1), ("eight", 0)] {
            let filters = row(json!({ "slot": filter }));
            let rows = tx.list("parts", &filters).await.expect("list");
            assert_eq!(rows.len(), found, "{backend:?}: slot = {filter:?}");
            let n = tx
                .count_where("parts", "slot", &json!(filter))
                .await
                .expect("count");
            assert_eq!(n, found as i64, "{backend:?}: slot = {filter:?}");
        }
        // Booleans and counts computed by a query come back as integers on both.
        let rows = tx
            .query(
                "SELECT COUNT(*) AS n, MAX(size) AS biggest, COUNT(*) > $1 AS many FROM things WHERE note IS NULL OR note = $2",
                &[json!(1), json!(null)],
            )
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"n": 2, "biggest": null, "many": 1}),
            "{backend:?}"
        );

        // `updated_at` is set once: the caller's if it gives one, now otherwise.
        assert!(tx
            .update(
                "things",
                "a",
                &row(json!({"size": 3, "updated_at": "then"}))
            )
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}")));
        assert!(tx
            .update_where("things", "name", "two", &row(json!({"size": null})))
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}")));
        let a = tx.get("things", "a").await.expect("get").expect("row");
        let b = tx.get("things", "b").await.expect("get").expect("row");
        assert_eq!((&a["size"], &a["updated_at"]), (&json!(3), &json!("then")));
        assert_eq!(b["size"], Value::Null, "{backend:?}");
        assert!(b["updated_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")));
        tx.commit(kernel.bus()).await.expect("commit");
    }
}

#[tokio::test]
async fn refused_constraints_are_conflicts_about_the_data_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        tx.insert("things", &row(json!({"uuid": "a", "name": "one"})))
            .await
            .expect("insert");
        tx.insert(
            "parts",
            &row(json!({"uuid": "p", "thing_uuid": "a", "slot": 1})),
        )
        .await
        .expect("insert");
        tx.commit(kernel.bus()).await.expect("commit");

        // Each in a transaction of its own: on PostgreSQL a refused statement aborts it.
        let cases = [
            (
                "things",
                json!({"uuid": "b", "name": "one"}),
                json!({"field": "name", "value": "one"}),
            ),
            (
                "parts",
                json!({"uuid": "q", "thing_uuid": "a", "slot": 1}),
                json!({"field": "slot", "fields": ["thing_uuid", "slot"], "value": "(a, 1)"}),
            ),
            (
                "parts",
                json!({"uuid": "r", "thing_uuid": "nothing", "slot": 2}),
                json!({"field": "thing_uuid", "value": "nothing", "referred_table": "things"}),
            ),
        ];
        for (table, refused, details) in cases {
            let mut tx = store.begin().await.expect("begin");
            let error = tx
                .insert(table, &row(refused.clone()))
                .await
                .expect_err("refused");
            let fault = Fault::from(error);
            assert_eq!(fault.code, FaultCode::Conflict, "{backend:?}: {fault:?}");
            assert_eq!(fault.details, details, "{backend:?}: {fault:?}");
            assert_clean(&fault, backend);
        }
        // Deleting a row still referred to, without the helper that looks first.
        let mut tx = store.begin().await.expect("begin");
        let fault = Fault::from(
            tx.delete_where("things", "uuid", "a")
                .await
                .expect_err("refused"),
        );
        assert_eq!(fault.code, FaultCode::Conflict, "{backend:?}: {fault:?}");
        assert!(fault.message.contains("still referred to"), "{fault:?}");
        assert_clean(&fault, backend);
        drop(tx);

        // Any other database error is internal, and tells nothing of the statement.
        let mut tx = store.begin().await.expect("begin");
        let fault = Fault::from(
            tx.query(
                "SELECT nonsense FROM nowhere WHERE secret = $1",
                &[json!(1)],
            )
            .await
            .expect_err("no such table"),
        );
        assert_eq!(fault.code, FaultCode::Internal, "{backend:?}: {fault:?}");
        assert_clean(&fault, backend);
        assert!(!fault.message.contains("nowhere"), "{fault:?}");
    }
}

#[tokio::test]
async fn lists_sort_text_byte_by_byte_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        for tag in ["db", "ab", "Web", "a-b"] {
            let tag = row(json!({"owner": "o", "tag": tag, "created_at": "t"}));
            tx.insert("tags", &tag).await.expect("insert");
        }
        tx.commit(kernel.bus()).await.expect("commit");
        let mut tx = store.read().await.expect("read");
        let sorted = ["Web", "a-b", "ab", "db"];
        assert_eq!(
            tx.list_refs("tags", "owner", "o", "tag")
                .await
                .expect("refs"),
            sorted,
            "{backend:?}"
        );
        let listed: Vec<Value> = tx
            .list_by("tags", &row(json!({"owner": "o"})), &["tag"])
            .await
            .expect("list")
            .into_iter()
            .map(|row| row["tag"].clone())
            .collect();
        assert_eq!(listed, sorted.map(|t| json!(t)), "{backend:?}");
    }
}

#[tokio::test]
async fn foreign_keys_no_index_starts_with_are_indexed_on_both() {
    for (store, _place) in stores().await {
        let backend = store.backend();
        let indexes = match backend {
            Backend::Sqlite => "SELECT name AS name FROM sqlite_master WHERE type = 'index'",
            Backend::Postgres => {
                "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = current_schema()"
            }
        };
        let mut tx = store.read().await.expect("read");
        let names: Vec<Value> = tx
            .query(indexes, &[])
            .await
            .expect("indexes")
            .into_iter()
            .filter_map(|mut row| row.remove("name"))
            .collect();
        assert!(
            names.contains(&json!("fk_notes_thing_uuid")),
            "{backend:?}: {names:?}"
        );
        // `parts.thing_uuid` leads its UNIQUE index already.
        assert!(
            !names.contains(&json!("fk_parts_thing_uuid")),
            "{backend:?}: {names:?}"
        );
    }
}

/// No constraint name, statement or file path in what a client would see.
fn assert_clean(fault: &Fault, backend: Backend) {
    let text = serde_json::to_string(fault).expect("JSON");
    for leak in [
        "_key",
        "_fkey",
        "constraint",
        "INSERT",
        "DELETE",
        "SELECT",
        "/tmp",
        ".db",
    ] {
        assert!(!text.contains(leak), "{backend:?}: `{leak}` in {text}");
    }
}

#[tokio::test]
async fn reads_see_one_snapshot_and_never_wait_for_writes_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, place) in stores().await {
        let backend = store.backend();
        let mut first = store.begin().await.expect("begin");
        first
            .insert("things", &row(json!({"uuid": "a", "name": "one"})))
            .await
            .expect("insert");
        // On SQLite a second write waits for the first to end; on PostgreSQL it runs
        // beside it, on this node and on another (resource locks order those that must
        // not, see below). A read never waits.
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.begin().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        match &place {
            Place::Dir(_) => assert!(!second.is_finished(), "two writes at once on SQLite"),
            Place::Database(database) => {
                assert!(second.is_finished(), "PostgreSQL's writes run side by side");
                let other = Store::open(&database.url).await.expect("another store");
                let mut write = tokio::time::timeout(Duration::from_secs(5), other.begin())
                    .await
                    .expect("another node's write begins at once")
                    .expect("begin");
                // A row the first has inserted, not committed: the unique name waits for
                // it (PostgreSQL's own row locks), here only until the lock timeout.
                write
                    .query("SET LOCAL lock_timeout = '200ms'", &[])
                    .await
                    .expect("set");
                let duplicate = write
                    .insert("things", &row(json!({"uuid": "b", "name": "one"})))
                    .await
                    .expect_err("waits for the first's row");
                assert_eq!(
                    duplicate.kind(),
                    StoreErrorKind::Busy,
                    "a lock timeout is told as busy: {duplicate}"
                );
            }
        }
        let mut read = tokio::time::timeout(Duration::from_secs(5), store.read())
            .await
            .expect("a read does not wait")
            .expect("read");
        assert!(!read.exists("things", "a").await.expect("exists"));
        // The first commits (on SQLite its commit may wait for the second, which joins its
        // group: see `sqlite::Writer`), and the second begins.
        let committing = tokio::spawn({
            let kernel = kernel.clone();
            async move { first.commit(kernel.bus()).await }
        });
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second write begins once the first is done")
            .expect("task")
            .expect("begin");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), committing)
            .await
            .expect("the first commit returns")
            .expect("task")
            .expect("commit");
        let mut second = store.begin().await.expect("begin");
        // It sees what the first committed; the read keeps its snapshot.
        assert!(second.exists("things", "a").await.expect("exists"));
        assert!(
            !read.exists("things", "a").await.expect("exists"),
            "{backend:?}: a read sees one snapshot"
        );
        // A read refuses to write, on the database's side too (`Tx::query` is not checked).
        assert!(read
            .insert("things", &row(json!({"uuid": "z", "name": "z"})))
            .await
            .is_err());
        assert!(read
            .query("INSERT INTO things (uuid, name) VALUES ('z', 'z')", &[])
            .await
            .is_err());
        assert!(
            read.lock_resource(&[("things", "a")], ResourceLock::Shared)
                .await
                .is_err(),
            "a read holds no resource"
        );
        drop(second);
    }
}

#[tokio::test]
async fn resource_locks_order_postgresql_writes_across_nodes() {
    let kernel = Kernel::builder().build().expect("kernel");
    let (store, database) = postgres_store().await;
    let other = Store::open(&database.url).await.expect("another node");
    let begin_holding = |store: Arc<Store>, what: &'static str, mode: ResourceLock| async move {
        let mut tx = store.begin().await.expect("begin");
        tx.lock_resource(&[("things", what)], mode)
            .await
            .expect("lock");
        tx
    };
    // Shared holders do not wait for each other, on one node or two.
    let shared = begin_holding(store.clone(), "a", ResourceLock::Shared).await;
    let also_shared = tokio::time::timeout(
        Duration::from_secs(5),
        begin_holding(other.clone(), "a", ResourceLock::Shared),
    )
    .await
    .expect("two shared holders at once");
    // An exclusive one waits for both; another resource does not wait.
    let exclusive = tokio::spawn(begin_holding(other.clone(), "a", ResourceLock::Exclusive));
    let unrelated = tokio::time::timeout(
        Duration::from_secs(5),
        begin_holding(store.clone(), "b", ResourceLock::Exclusive),
    )
    .await
    .expect("another resource does not wait");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!exclusive.is_finished(), "exclusive while shared are held");
    shared.commit(kernel.bus()).await.expect("commit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !exclusive.is_finished(),
        "exclusive while one shared is held"
    );
    drop(also_shared);
    let exclusive = tokio::time::timeout(Duration::from_secs(5), exclusive)
        .await
        .expect("exclusive once no one shares it")
        .expect("task");
    // And a shared one now waits for it, until it ends.
    let waiting = tokio::spawn(begin_holding(store.clone(), "a", ResourceLock::Shared));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "shared while exclusive is held");
    drop(exclusive);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("shared once the exclusive one ended")
        .expect("task");
    drop(unrelated);
}

#[tokio::test]
async fn the_journal_replays_postgresql_transactions_on_another_database() {
    let kernel = Kernel::builder().build().expect("kernel");
    let (source, copy) = (Database::create(), Database::create());
    let store = Store::open(&source.url).await.expect("postgres");
    migrate(&store).await;
    let replayed = Store::open(&copy.url).await.expect("the copy");
    migrate(&replayed).await;

    store.keep_journal().await.expect("journal");
    for i in 0..10 {
        let mut tx = store.begin().await.expect("begin");
        let uuid = format!("t{i}");
        // NULLs and booleans are written into the statement's text: replayed as sent.
        let size = if i % 4 == 0 { json!(true) } else { json!(i) };
        tx.insert(
            "things",
            &row(json!({"uuid": uuid, "name": format!("n{i}"), "size": size, "note": null})),
        )
        .await
        .expect("insert");
        if i % 3 == 0 {
            tx.update(
                "things",
                &uuid,
                &row(json!({"note": format!("renamed-{i}")})),
            )
            .await
            .expect("update");
        }
        assert!(tx.get("things", &uuid).await.expect("get").is_some());
        // Every other one rolls back: not in the journal.
        if i % 2 == 0 {
            tx.commit(kernel.bus()).await.expect("commit");
        }
    }
    // A refused statement aborts its transaction on PostgreSQL: even if committed, it
    // commits nothing, and nothing of it is kept.
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &row(json!({"uuid": "z", "name": "z"})))
        .await
        .expect("insert");
    assert!(tx
        .insert("things", &row(json!({"uuid": "y", "name": "n0"})))
        .await
        .is_err());
    let _ = tx.commit(kernel.bus()).await;
    // Reads are not recorded.
    let mut read = store.read().await.expect("read");
    read.list("things", &Default::default())
        .await
        .expect("list");
    drop(read);
    let journal = store
        .take_journal()
        .await
        .expect("take")
        .expect("a journal");
    assert!(store.take_journal().await.expect("take").is_none());
    assert_eq!(journal.backend(), Backend::Postgres);
    assert_eq!(journal.transactions(), 5);
    // Five inserts, five reads and the updates of t0 and t6; no BEGIN or COMMIT.
    assert_eq!(journal.statements(), 12);
    assert!(
        journal
            .replay(std::path::Path::new("/nonexistent"))
            .is_err(),
        "a PostgreSQL journal does not replay on SQLite"
    );

    journal.replay_postgres(&copy.url).await.expect("replay");
    let things = |store: Arc<Store>| async move {
        let mut read = store.read().await.expect("read");
        read.list("things", &Default::default())
            .await
            .expect("list")
    };
    let expected = things(store.clone()).await;
    assert_eq!(expected.len(), 5);
    assert_eq!(
        expected[0]["size"],
        json!(1),
        "a boolean in a BIGINT column"
    );
    assert_eq!(things(replayed.clone()).await, expected);
    // Replaying twice runs into the rows it wrote: an error, not a silent success.
    assert!(journal.replay_postgres(&copy.url).await.is_err());
    store.close().await;
    replayed.close().await;
}

#[tokio::test]
async fn a_pooled_postgresql_connection_lost_while_idle_is_replaced() {
    let kernel = Kernel::builder().build().expect("kernel");
    let (store, database) = postgres_store().await;
    let write = |uuid: &'static str| {
        let (store, kernel) = (store.clone(), &kernel);
        async move {
            let mut tx = store.begin().await?;
            tx.insert("things", &row(json!({"uuid": uuid, "name": uuid})))
                .await?;
            tx.commit(kernel.bus()).await
        }
    };
    write("a").await.expect("a write");
    // Two read connections in the pool: one for each kind of read.
    let mut read = store.read().await.expect("read");
    let mut each = store.read_each().await.expect("read");
    assert!(read.exists("things", "a").await.expect("exists"));
    assert!(each.exists("things", "a").await.expect("exists"));
    drop((read, each));
    // The server ends every session of the database (as a restart would): the pool's idle
    // connections are dead, and nothing tests them before they are handed out.
    admin_statement(
        &database.admin,
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            database.name
        ),
    )
    .expect("terminate");
    tokio::time::sleep(Duration::from_millis(200)).await;
    write("b").await.expect("a write after the sessions ended");
    let mut read = store.read().await.expect("a read after the sessions ended");
    assert!(read.exists("things", "b").await.expect("exists"));
    let mut each = store.read_each().await.expect("read");
    assert!(each
        .exists("things", "b")
        .await
        .expect("a read of each statement after the sessions ended"));
    drop((read, each));
    store.close().await;
}

#[tokio::test]
async fn a_list_with_refs_reads_each_row_with_its_sorted_references_on_both() {
    use flatstack_store::Refs;
    let kernel = Kernel::builder().build().expect("kernel");
    let refs = Refs {
        table: "parts",
        key_column: "thing_uuid",
        value_column: "label",
    };
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        for (i, (uuid, size)) in [("a", 1), ("b", 2), ("c", 1)].into_iter().enumerate() {
            let at = format!("2026-01-01T00:00:0{i}Z");
            tx.insert(
                "things",
                &row(json!({"uuid": uuid, "name": uuid, "size": size, "created_at": at})),
            )
            .await
            .expect("thing");
        }
        // `a` has two parts (inserted out of order), `b` one, `c` none.
        for (uuid, thing, slot, label) in [
            ("p1", "a", 1, "zeta"),
            ("p2", "a", 2, "Alpha"),
            ("p3", "b", 1, "beta"),
        ] {
            tx.insert(
                "parts",
                &row(json!({"uuid": uuid, "thing_uuid": thing, "slot": slot, "label": label})),
            )
            .await
            .expect("part");
        }
        tx.commit(kernel.bus()).await.expect("commit");
        let mut read = store.read_each().await.expect("read");
        let all = read
            .list_with_refs("things", &Default::default(), &refs, "labels")
            .await
            .expect("list");
        let shown: Vec<(Value, Value)> = all
            .iter()
            .map(|r| (r["uuid"].clone(), r["labels"].clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (json!("a"), json!(["Alpha", "zeta"])),
                (json!("b"), json!(["beta"])),
                (json!("c"), json!([])),
            ],
            "{backend:?}: one row each, oldest first, references sorted byte by byte"
        );
        assert_eq!(
            all[0]["size"],
            json!(1),
            "{backend:?}: the row's own columns"
        );
        assert!(!all[0].contains_key("flatstack_ref_value"), "{backend:?}");
        // Filters narrow the rows as a list's do; a value no row can hold finds none.
        let ones = read
            .list_with_refs("things", &row(json!({"size": "1"})), &refs, "labels")
            .await
            .expect("filtered");
        let uuids: Vec<&Value> = ones.iter().map(|r| &r["uuid"]).collect();
        assert_eq!(uuids, vec![&json!("a"), &json!("c")], "{backend:?}");
        let none = read
            .list_with_refs("things", &row(json!({"size": "x"})), &refs, "labels")
            .await
            .expect("never equal");
        assert!(none.is_empty(), "{backend:?}");
        // A table name that is no identifier is refused.
        let bad = Refs {
            table: "parts; DROP TABLE parts",
            ..refs
        };
        assert!(read
            .list_with_refs("things", &Default::default(), &bad, "labels")
            .await
            .is_err());
        drop(read);
        assert_eq!(store.count("parts").await.expect("count"), 3, "{backend:?}");
        store.close().await;
    }
}

#[tokio::test]
async fn an_insert_unless_taken_skips_a_taken_row_and_the_transaction_goes_on_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        tx.insert("things", &row(json!({"uuid": "a", "name": "taken"})))
            .await
            .expect("insert");
        tx.commit(kernel.bus()).await.expect("commit");
        let mut tx = store.begin().await.expect("begin");
        // The name is taken (UNIQUE): not written, and no error.
        let written = tx
            .insert_unless_taken("things", &row(json!({"uuid": "b", "name": "taken"})))
            .await
            .expect("insert unless taken");
        assert!(!written, "{backend:?}: a taken name is not written");
        // The transaction is not aborted (it would be on PostgreSQL after a refused insert).
        let written = tx
            .insert_unless_taken("things", &row(json!({"uuid": "c", "name": "free"})))
            .await
            .expect("the transaction goes on");
        assert!(written, "{backend:?}: a free name is written");
        tx.commit(kernel.bus()).await.expect("commit");
        let mut read = store.read().await.expect("read");
        assert!(!read.exists("things", "b").await.expect("exists"));
        assert!(read.exists("things", "c").await.expect("exists"));
        // Bad input changes nothing: a table name that is no identifier is refused.
        drop(read);
        let mut tx = store.begin().await.expect("begin");
        assert!(tx
            .insert_unless_taken("things; DROP TABLE things", &row(json!({"uuid": "d"})))
            .await
            .is_err());
        drop(tx);
        assert_eq!(
            store.count("things").await.expect("count"),
            2,
            "{backend:?}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_postgresql_write_connection_waits_in_a_transaction_that_holds_nothing() {
    use sqlx::{Connection, Row};
    let kernel = Kernel::builder().build().expect("kernel");
    let (store, database) = postgres_store().await;
    // Writes side by side, so that the pool keeps several connections.
    let writes = (0..4).map(|i| {
        let (store, kernel) = (store.clone(), &kernel);
        async move {
            let mut tx = store.begin().await.expect("begin");
            tx.insert(
                "things",
                &row(json!({"uuid": format!("t{i}"), "name": format!("thing {i}")})),
            )
            .await
            .expect("insert");
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.commit(kernel.bus()).await.expect("commit");
        }
    });
    futures::future::join_all(writes).await;
    // Each waits for the next write in a transaction already begun, which holds no
    // transaction id, no snapshot (it would hold back VACUUM) and no lock.
    let mut admin = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let sessions = sqlx::query(
        "SELECT state, backend_xid IS NULL AS no_xid, backend_xmin IS NULL AS no_xmin,
                (SELECT COUNT(*) FROM pg_locks l WHERE l.pid = a.pid
                   AND l.locktype NOT IN ('virtualxid')) AS locks
         FROM pg_stat_activity a WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND state = 'idle in transaction'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("sessions");
    assert!(!sessions.is_empty(), "write connections wait begun");
    for session in &sessions {
        assert!(session.get::<bool, _>("no_xid"), "no transaction id");
        assert!(session.get::<bool, _>("no_xmin"), "no snapshot");
        assert_eq!(session.get::<i64, _>("locks"), 0, "no lock");
    }
    admin.close().await.expect("close");
    // And what the next transaction on one of them writes is its own: a transaction
    // dropped without commit leaves nothing, and the connection serves the next.
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &row(json!({"uuid": "gone", "name": "gone"})))
        .await
        .expect("insert");
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &row(json!({"uuid": "kept", "name": "kept"})))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");
    let mut read = store.read().await.expect("read");
    assert!(!read.exists("things", "gone").await.expect("exists"));
    assert!(read.exists("things", "kept").await.expect("exists"));
    assert_eq!(store.count("things").await.expect("count"), 5);
    drop(read);
    store.close().await;
}

#[tokio::test]
async fn a_postgresql_statement_abandoned_half_way_does_not_poison_the_pool() {
    let kernel = Kernel::builder().build().expect("kernel");
    let (store, _database) = postgres_store().await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &row(json!({"uuid": "a", "name": "a"})))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");
    // One transaction holds the row; another's update waits for it, and is abandoned
    // (its future dropped, as a timeout or a cancelled request does) while it waits.
    let mut holder = store.begin().await.expect("begin");
    holder
        .update("things", "a", &row(json!({"note": "holder"})))
        .await
        .expect("update");
    let mut waiter = store.begin().await.expect("begin");
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        waiter.update("things", "a", &row(json!({"note": "abandoned"}))),
    )
    .await;
    assert!(abandoned.is_err(), "the update waited for the row's lock");
    drop(waiter);
    holder.commit(kernel.bus()).await.expect("commit");
    // Whatever connection comes next runs its own transaction, many times over: the
    // abandoned one was closed, not handed out with its update still under way.
    for i in 0..40 {
        let mut tx = store.begin().await.expect("begin");
        tx.update("things", "a", &row(json!({"size": i})))
            .await
            .expect("update");
        tx.commit(kernel.bus()).await.expect("commit");
    }
    let mut read = store.read().await.expect("read");
    let thing = read.get("things", "a").await.expect("get").expect("a");
    assert_eq!(thing["note"], json!("holder"));
    assert_eq!(thing["size"], json!(39));
    drop(read);
    store.close().await;
}

/// A database created for one test on the PostgreSQL server, dropped with it.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin = std::env::var("FLATSTACK_TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = admin_statement(&admin, format!("CREATE DATABASE {name}")) {
            panic!(
                "these tests need PostgreSQL; cannot create a database through {admin}: {e}\n\
                 Start the local server with `pg_ctlcluster --skip-systemctl-redirect \
                 $(ls /etc/postgresql) main start`, or set FLATSTACK_TEST_DATABASE_URL to \
                 another server's URL."
            );
        }
        // The admin URL with the new database as its path, its parameters kept.
        let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let end = base[authority..]
            .find('/')
            .map_or(base.len(), |i| authority + i);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        Database {
            url: format!("{}/{name}{query}", &base[..end]),
            admin,
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin_statement(&self.admin, sql) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on a connection to `admin`, on a thread and runtime of its own (it is called
/// from `Drop` too, where the test's runtime must not block).
fn admin_statement(admin: &str, sql: String) -> Result<(), String> {
    use sqlx::Connection;
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let connect = sqlx::PgConnection::connect(&admin);
            let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .map_err(|_| "no answer in 10 s".to_owned())?
                .map_err(|e| e.to_string())?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".into()))
}

#[tokio::test]
async fn pages_walk_ten_thousand_rows_once_each_while_rows_are_inserted_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut tx = store.begin().await.expect("begin");
        for i in 0..10_000u32 {
            // Sizes repeat and some are NULL: the order needs the uuid to be total.
            let size = if i % 7 == 0 {
                json!(null)
            } else {
                json!(i % 100)
            };
            let at = format!("2026-01-01T00:00:{:02}.000Z", i % 60);
            tx.insert(
                "things",
                &row(
                    json!({"uuid": format!("{i:05}"), "name": format!("thing-{i}"),
                    "size": size, "created_at": at, "updated_at": at}),
                ),
            )
            .await
            .expect("insert");
        }
        tx.commit(kernel.bus()).await.expect("commit");
        let none = serde_json::Map::new();
        let mut extra = 0;
        for sort in [
            vec![("created_at", false), ("uuid", false)],
            vec![("size", true), ("uuid", false)],
            vec![("name", false), ("uuid", true)],
        ] {
            let mut seen = std::collections::BTreeSet::new();
            let mut after: Option<Vec<Value>> = None;
            loop {
                let mut tx = store.read().await.expect("read");
                let page = tx
                    .page("things", &none, &sort, after.as_deref(), 500)
                    .await
                    .expect("page");
                drop(tx);
                if page.is_empty() {
                    break;
                }
                for row in &page {
                    let uuid = row["uuid"].as_str().expect("uuid").to_owned();
                    assert!(
                        seen.insert(uuid.clone()),
                        "{backend:?} {sort:?}: {uuid} twice"
                    );
                }
                let last = page.last().expect("a row");
                after = Some(sort.iter().map(|(c, _)| last[*c].clone()).collect());
                // Rows come and go between pages: every row that stays is seen once.
                let mut tx = store.begin().await.expect("begin");
                extra += 1;
                tx.insert(
                    "things",
                    &row(
                        json!({"uuid": format!("new-{extra:03}"), "name": format!("new-{extra}"),
                        "size": 50, "created_at": "2026-01-01T00:00:30.000Z",
                        "updated_at": "2026-01-01T00:00:30.000Z"}),
                    ),
                )
                .await
                .expect("insert");
                tx.commit(kernel.bus()).await.expect("commit");
            }
            let originals = seen.iter().filter(|u| !u.starts_with("new-")).count();
            assert_eq!(originals, 10_000, "{backend:?} {sort:?}: every row once");
            let mut tx = store.read().await.expect("read");
            let total = tx.count("things", &none).await.expect("count");
            assert_eq!(total as usize, 10_000 + extra, "{backend:?}");
        }
    }
}

#[tokio::test]
async fn a_read_of_each_statement_sees_what_committed_and_writes_nothing_on_both() {
    let kernel = Kernel::builder().build().expect("kernel");
    for (store, _place) in stores().await {
        let backend = store.backend();
        let mut each = store.read_each().await.expect("read");
        assert!(!each.exists("things", "a").await.expect("exists"));
        let mut write = store.begin().await.expect("begin");
        write
            .insert("things", &row(json!({"uuid": "a", "name": "one"})))
            .await
            .expect("insert");
        write.commit(kernel.bus()).await.expect("commit");
        // SQLite's is a snapshot read (`Store::read`); PostgreSQL's next statement sees
        // what committed since the first.
        let seen = each.exists("things", "a").await.expect("exists");
        assert_eq!(seen, backend == Backend::Postgres, "{backend:?}");
        assert!(each
            .insert("things", &row(json!({"uuid": "z", "name": "z"})))
            .await
            .is_err());
        let refused = each
            .query("INSERT INTO things (uuid, name) VALUES ('z', 'z')", &[])
            .await;
        assert!(refused.is_err(), "{backend:?}: the database refuses too");
        drop(each);
        let mut read = store.read().await.expect("read");
        assert!(read.exists("things", "a").await.expect("exists"));
        assert!(
            !read.exists("things", "z").await.expect("exists"),
            "{backend:?}"
        );
    }
}
