//! Transactions on SQLite's one transaction connection: a dropped `Tx` leaves nothing,
//! whatever came before it, and the counters count what began and what committed.

use flatstack_kernel::Kernel;
use flatstack_store::resource::row;
use flatstack_store::{Store, StoreError, Tx};
use serde_json::json;
use std::sync::Arc;

async fn store(dir: &std::path::Path) -> Arc<Store> {
    let store = Store::open_data_dir(dir).await.expect("store");
    sqlx::query("CREATE TABLE things (uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT, updated_at TEXT)")
        .execute(store.pool())
        .await
        .expect("table");
    store
}

fn thing(uuid: &str, name: &str) -> serde_json::Map<String, serde_json::Value> {
    row(json!({"uuid": uuid, "name": name}))
}

#[tokio::test]
async fn a_dropped_tx_leaves_nothing_and_the_next_one_is_atomic() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");

    // A read-only Tx dropped (as every read is), then a write dropped: neither stays.
    {
        let mut tx = store.begin().await.expect("begin");
        assert!(!tx.exists("things", "a").await.expect("read"));
    }
    {
        let mut tx = store.begin().await.expect("begin");
        tx.insert("things", &thing("a", "one"))
            .await
            .expect("insert");
    }
    assert_eq!(store.count("things").await.expect("count"), 0);

    // After a dropped Tx, the next one is still one transaction: dropped, nothing stays.
    {
        let mut tx = store.begin().await.expect("begin");
        tx.insert("things", &thing("b", "two"))
            .await
            .expect("insert");
        tx.insert("things", &thing("c", "three"))
            .await
            .expect("insert");
    }
    let mut tx = store.begin().await.expect("begin");
    assert!(!tx.exists("things", "b").await.expect("read"));
    tx.insert("things", &thing("d", "four"))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");
    assert_eq!(store.count("things").await.expect("count"), 1);

    // A failed statement, then the Tx dropped: the rows before it in the Tx go too.
    {
        let mut tx = store.begin().await.expect("begin");
        tx.insert("things", &thing("e", "five"))
            .await
            .expect("insert");
        assert!(tx.insert("things", &thing("f", "four")).await.is_err());
    }
    let mut tx = store.begin().await.expect("begin");
    assert!(!tx.exists("things", "e").await.expect("read"));
    drop(tx);
    assert_eq!(store.count("things").await.expect("count"), 1);
    assert_eq!((store.transactions(), store.commits()), (6, 1));
}

#[tokio::test]
async fn concurrent_transactions_take_turns() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, kernel) = (store.clone(), kernel.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await.expect("begin");
            let uuid = format!("t{i}");
            tx.insert("things", &thing(&uuid, &uuid))
                .await
                .expect("insert");
            tokio::task::yield_now().await;
            if i % 2 == 0 {
                tx.commit(kernel.bus()).await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(store.count("things").await.expect("count"), 25);
    assert_eq!((store.transactions(), store.commits()), (50, 25));
}

#[tokio::test]
async fn constraint_failures_are_conflicts_and_rows_come_back_as_json() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    sqlx::query(
        "CREATE TABLE parts (uuid TEXT PRIMARY KEY, thing_uuid TEXT NOT NULL REFERENCES things (uuid),
         size BIGINT, weight REAL, note TEXT)",
    )
    .execute(store.pool())
    .await
    .expect("table");
    let kernel = Kernel::builder().build().expect("kernel");

    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &thing("a", "one"))
        .await
        .expect("insert");
    tx.insert(
        "parts",
        &row(json!({"uuid": "p", "thing_uuid": "a", "size": 3, "weight": 1.5, "note": null})),
    )
    .await
    .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    let duplicate = tx
        .insert("things", &thing("b", "one"))
        .await
        .expect_err("a second `one`");
    let fault = flatstack_kernel::Fault::from(duplicate);
    assert_eq!(
        fault.code,
        flatstack_kernel::FaultCode::Conflict,
        "{fault:?}"
    );
    assert!(fault.message.contains("already exists"), "{fault:?}");
    let dangling = tx
        .insert("parts", &row(json!({"uuid": "q", "thing_uuid": "nothing"})))
        .await
        .expect_err("no such thing");
    let fault = flatstack_kernel::Fault::from(dangling);
    assert_eq!(
        fault.code,
        flatstack_kernel::FaultCode::Conflict,
        "{fault:?}"
    );

    // Values keep their JSON types; `$n` take their parameter wherever they are.
    let part = tx.get("parts", "p").await.expect("get").expect("row");
    assert_eq!(
        serde_json::Value::Object(part),
        json!({"uuid": "p", "thing_uuid": "a", "size": 3, "weight": 1.5, "note": null})
    );
    let rows = tx
        .query(
            "SELECT t.name AS name, p.size AS size FROM parts p JOIN things t ON t.uuid = p.thing_uuid
             WHERE p.size = $2 AND t.uuid = $1",
            &[json!("a"), json!(3)],
        )
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("name"), Some(&json!("one")));
    assert!(tx.query("SELECT $1, $2", &[json!(1)]).await.is_err());
}

#[tokio::test]
async fn reads_run_beside_an_open_write_and_refuse_to_write() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &thing("a", "one"))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");

    // A write is open, uncommitted: a read neither waits for it nor sees it.
    let mut writing = store.begin().await.expect("begin");
    writing
        .insert("things", &thing("b", "two"))
        .await
        .expect("insert");
    let mut read = tokio::time::timeout(std::time::Duration::from_secs(5), store.read())
        .await
        .expect("a read does not wait for the writer")
        .expect("read");
    assert!(read.exists("things", "a").await.expect("exists"));
    assert!(!read.exists("things", "b").await.expect("exists"));

    // Writing through a read is an error, and leaves nothing.
    let refused = read
        .insert("things", &thing("c", "three"))
        .await
        .expect_err("a read-only transaction");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    assert!(read.query("DELETE FROM things", &[]).await.is_err());
    drop(read);

    // Once the write commits, the next read sees it.
    writing.commit(kernel.bus()).await.expect("commit");
    let mut read = store.read().await.expect("read");
    assert!(read.exists("things", "b").await.expect("exists"));
    assert_eq!(
        read.list("things", &Default::default())
            .await
            .expect("list")
            .len(),
        2
    );
    assert_eq!(store.count("things").await.expect("count"), 2);
}

#[tokio::test]
async fn the_journal_replays_the_committed_writes_to_the_same_state() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &thing("before", "zero"))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");

    let copy = dir.path().join("copy.db");
    store.snapshot(&copy).await.expect("snapshot");
    store.keep_journal().await.expect("journal");
    for i in 0..10 {
        let mut tx = store.begin().await.expect("begin");
        let uuid = format!("t{i}");
        tx.insert("things", &thing(&uuid, &uuid))
            .await
            .expect("insert");
        if i % 3 == 0 {
            tx.update(
                "things",
                &uuid,
                &row(json!({"name": format!("renamed-{i}")})),
            )
            .await
            .expect("update");
        }
        // Every other one rolls back: not in the journal.
        if i % 2 == 0 {
            tx.commit(kernel.bus()).await.expect("commit");
        }
    }
    let journal = store
        .take_journal()
        .await
        .expect("take")
        .expect("a journal");
    assert!(store.take_journal().await.expect("take").is_none());
    assert_eq!(journal.transactions(), 5);
    // The five inserts and the updates of t0 and t6 (t3 and t9 rolled back); no BEGIN or
    // COMMIT.
    assert_eq!(journal.statements(), 7);

    journal.replay(&copy).expect("replay");
    let names = |store: Arc<Store>| async move {
        let mut read = store.read().await.expect("read");
        read.list("things", &Default::default())
            .await
            .expect("list")
            .into_iter()
            .map(|row| row["name"].clone())
            .collect::<Vec<_>>()
    };
    let replayed = Store::open(&format!("sqlite://{}", copy.display()))
        .await
        .expect("open the copy");
    let expected = names(store.clone()).await;
    assert_eq!(expected.len(), 6);
    assert_eq!(names(replayed.clone()).await, expected);

    // Replaying twice runs into the rows it wrote: an error, not a silent success.
    assert!(journal.replay(&copy).is_err());
}

/// What a caller may know of a store error: its kind and, for a refused write, the
/// constraint in terms of the data; the database driver's error stays inside.
#[tokio::test]
async fn errors_say_their_kind_and_the_constraint() {
    use flatstack_store::{ConstraintKind, StoreErrorKind};
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;

    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &thing("a", "one"))
        .await
        .expect("insert");
    let taken = tx
        .insert("things", &thing("b", "one"))
        .await
        .expect_err("the name is taken");
    assert_eq!(taken.kind(), StoreErrorKind::Constraint);
    assert!(taken.is_unique_violation());
    let constraint = taken.constraint().expect("described");
    assert_eq!(constraint.kind, ConstraintKind::Unique);
    assert_eq!(constraint.columns, ["name"]);
    assert_eq!(constraint.value.as_deref(), Some("one"));
    drop(tx);

    let mut read = store.read().await.expect("read");
    let refused = read
        .insert("things", &thing("c", "two"))
        .await
        .expect_err("a read-only Tx does not write");
    assert_eq!(refused.kind(), StoreErrorKind::ReadOnly);
    assert!(refused.constraint().is_none());

    let bad = read
        .get("no such table; --", "a")
        .await
        .expect_err("not an identifier");
    assert_eq!(bad.kind(), StoreErrorKind::Invalid);
}

/// A read on its own connection: whether `uuid` is committed.
async fn committed(store: &Arc<Store>, uuid: &str) -> bool {
    let mut read = store.read().await.expect("read");
    read.exists("things", uuid).await.expect("exists")
}

/// A transaction writes `uuid` and commits while another waits for the writer: its commit
/// (in a task, since it joins a group that another must commit) and the other transaction,
/// which now holds the writer.
async fn commit_while_another_waits(
    store: &Arc<Store>,
    kernel: &Kernel,
    uuid: &str,
    name: &str,
) -> (tokio::task::JoinHandle<Result<(), StoreError>>, Tx) {
    let mut first = store.begin().await.expect("begin");
    first
        .insert("things", &thing(uuid, name))
        .await
        .expect("insert");
    let begun = store.transactions();
    let second = tokio::spawn({
        let store = store.clone();
        async move { store.begin().await.expect("begin") }
    });
    // Begun transactions are counted once they have the writer: the second waits.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(store.transactions(), begun);
    let commit = tokio::spawn({
        let kernel = kernel.clone();
        async move { first.commit(kernel.bus()).await }
    });
    (commit, second.await.expect("task"))
}

#[tokio::test]
async fn a_commit_while_others_wait_returns_once_its_group_has_committed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");

    // The first writes while the second waits for the writer: its commit joins a group
    // that the second, or whoever comes next, commits.
    let (first, mut second) = commit_while_another_waits(&store, &kernel, "a", "one").await;
    // Not committed yet: its commit has not returned and other connections do not see it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !first.is_finished(),
        "a grouped commit returned before its group committed"
    );
    assert!(!committed(&store, "a").await);
    // The second sees it (it can only commit with it) and commits both.
    assert!(second.exists("things", "a").await.expect("exists"));
    second
        .insert("things", &thing("b", "two"))
        .await
        .expect("insert");
    second.commit(kernel.bus()).await.expect("commit");
    first.await.expect("task").expect("the group committed");
    assert!(committed(&store, "a").await && committed(&store, "b").await);
    assert_eq!((store.commits(), store.database_commits()), (2, 1));

    // The same, but the second rolls back: the first's commit still commits, alone.
    let (first, mut second) = commit_while_another_waits(&store, &kernel, "c", "three").await;
    second
        .insert("things", &thing("d", "four"))
        .await
        .expect("insert");
    drop(second);
    first
        .await
        .expect("task")
        .expect("committed without the second");
    assert!(committed(&store, "c").await);
    assert!(!committed(&store, "d").await);
    assert_eq!((store.commits(), store.database_commits()), (3, 2));
    assert_eq!(store.count("things").await.expect("count"), 3);
}

#[tokio::test]
async fn many_writers_commit_in_groups_and_each_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    // A transaction holds the writer while 200 wait, so that groups form.
    let holder = store.begin().await.expect("begin");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, kernel) = (store.clone(), kernel.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await.expect("begin");
            let uuid = format!("t{i}");
            tx.insert("things", &thing(&uuid, &uuid))
                .await
                .expect("insert");
            match i % 4 {
                // Rolled back after writing: none of it stays, the group goes on.
                0 => {
                    drop(tx);
                    false
                }
                // A refused statement (the name is taken), then committed: the rest stays.
                1 => {
                    assert!(tx.insert("things", &thing("x", "t1")).await.is_err());
                    tx.commit(kernel.bus()).await.expect("commit");
                    true
                }
                _ => {
                    tx.commit(kernel.bus()).await.expect("commit");
                    true
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(store.transactions(), 1, "the others wait for the writer");
    drop(holder);
    let mut kept = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let committed_it = task.await.expect("task");
        assert_eq!(
            committed(&store, &format!("t{i}")).await,
            committed_it,
            "t{i}"
        );
        kept += usize::from(committed_it);
    }
    assert_eq!(kept, 150);
    assert!(!committed(&store, "x").await);
    assert_eq!(store.count("things").await.expect("count"), 150);
    assert_eq!(store.commits(), 150);
    assert!(
        store.database_commits() <= 150 / 4,
        "{} database commits for 150 transactions",
        store.database_commits()
    );
}

#[tokio::test]
async fn a_holder_idle_while_its_group_waits_for_it_is_rolled_back_not_deadlocked() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    // This task's commit joins a group that the second would commit, but this task holds
    // the second (it has begun: a write, then idle) until its commit returns: a deadlock
    // but for the stall's end, after `sqlite::STALLED`.
    let (commit, mut second) = commit_while_another_waits(&store, &kernel, "a", "one").await;
    second
        .insert("things", &thing("b", "two"))
        .await
        .expect("insert");
    tokio::time::timeout(std::time::Duration::from_secs(5), commit)
        .await
        .expect("the commit returns once the stall is ended")
        .expect("task")
        .expect("the first committed");
    let refused = second
        .insert("things", &thing("c", "three"))
        .await
        .expect_err("the stalled transaction was rolled back");
    assert_eq!(refused.kind(), flatstack_store::StoreErrorKind::Busy);
    assert!(second.commit(kernel.bus()).await.is_err());
    assert!(committed(&store, "a").await);
    assert!(!committed(&store, "b").await && !committed(&store, "c").await);
    // The writer is whole again.
    let mut next = store.begin().await.expect("begin");
    next.insert("things", &thing("d", "four"))
        .await
        .expect("insert");
    next.commit(kernel.bus()).await.expect("commit");
    assert_eq!(store.count("things").await.expect("count"), 2);
}

/// A thread beside the writer copies what commits into the database file, long before the
/// writer's own checkpoint (every 10,000 pages of WAL) would: a copy of the file alone,
/// without its WAL, soon holds the committed row.
#[tokio::test]
async fn committed_pages_reach_the_database_file_in_the_background() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(dir.path()).await;
    let kernel = Kernel::builder().build().expect("kernel");
    let mut tx = store.begin().await.expect("begin");
    tx.insert("things", &thing("a", "in-the-file"))
        .await
        .expect("insert");
    tx.commit(kernel.bus()).await.expect("commit");

    let copy = dir.path().join("copy.db");
    let in_copy = || -> rusqlite::Result<i64> {
        std::fs::copy(dir.path().join("flatstack.db"), &copy).expect("copy the file");
        rusqlite::Connection::open(&copy)?.query_row(
            "SELECT count(*) FROM things WHERE name = 'in-the-file'",
            [],
            |row| row.get(0),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Until then the file has neither the table nor the row (both are in the WAL).
    while in_copy().unwrap_or(0) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the committed row never reached the database file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
