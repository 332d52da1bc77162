//! The event log on SQLite and on PostgreSQL: events read back as CloudEvents in commit
//! order, filtered and paged; a reader tailing the log while many transactions emit never
//! misses one; retention (`Store::prune_events`) by count and by age, the oldest first, in
//! batches, never past a reader's cursor, `seq` never reused afterwards, and a read of
//! pruned events told apart (`EventsGone`).
//! PostgreSQL is the server at $FLATSTACK_TEST_POSTGRES (default: the local one, as on
//! the project's machines; `.ci/run` makes sure it is up), in a fresh database per test.

use flatstack_header::{ResourceCreated, ResourceDeleted};
use flatstack_kernel::Kernel;
use flatstack_store::{EventQuery, EventRetention, EventsGone, Store, PRUNE_BATCH};
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::Duration;

/// Runs `test` on a store in a database of its own on the PostgreSQL server, dropped
/// after it.
async fn on_fresh_postgresql<F, Fut>(test: F)
where
    F: FnOnce(Arc<Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin().await)
        .await
        .expect("create database");
    let store = Store::open(&format!("{}/{name}", server()))
        .await
        .expect("store");
    test(store.clone()).await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin().await)
        .await
        .expect("drop database");
}

fn server() -> String {
    std::env::var("FLATSTACK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&format!("{}/postgres", server()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed for this test: {e}", server()))
}

/// Appends events whose `created_at` is `at`, one transaction for all.
async fn append(store: &Store, count: usize, at: &str) {
    let mut tx = store.pool().begin().await.expect("begin");
    for i in 0..count {
        sqlx::query(
            "INSERT INTO event_outbox (id, type, kind, subject, name, body, created_at)
             VALUES ($1, 'io.flatstack.racks.updated.v1', 'racks', 'r', 'test.event', $2, $3)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(format!("{{\"i\": {i}}}"))
        .bind(at)
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
}

/// The `seq` of every event, in order.
async fn seqs(store: &Store) -> Vec<i64> {
    sqlx::query("SELECT seq FROM event_outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("select")
        .iter()
        .map(|row| row.try_get::<i64, _>("seq").expect("seq"))
        .collect()
}

const LONG_AGO: &str = "2001-02-03T04:05:06.789Z";

fn recently() -> String {
    flatstack_store::now()
}

async fn prune(store: Arc<Store>) {
    store.migrate(&[]).await.expect("migrate");
    let unbounded = EventRetention {
        max_age: None,
        max_count: None,
    };
    assert_eq!(store.prune_events(&unbounded).await.expect("prune"), 0);
    assert_eq!(
        store
            .prune_events(&EventRetention::DEFAULT)
            .await
            .expect("prune"),
        0,
        "an empty outbox"
    );

    // By count, over several batches: the newest stay.
    let total = 2 * PRUNE_BATCH + 500;
    append(&store, total, &recently()).await;
    let before = seqs(&store).await;
    assert_eq!(before.len(), total);
    let by_count = EventRetention {
        max_age: None,
        max_count: Some(100),
    };
    let gone = store.prune_events(&by_count).await.expect("prune");
    assert_eq!(gone, (total - 100) as u64);
    assert_eq!(seqs(&store).await, before[total - 100..], "the newest 100");
    assert_eq!(store.prune_events(&by_count).await.expect("prune"), 0);
    assert_eq!(
        store
            .prune_events(&EventRetention {
                max_age: Some(Duration::from_secs(3600)),
                max_count: None,
            })
            .await
            .expect("prune"),
        0,
        "nothing is an hour old"
    );

    // By age: old events behind recent ones go; the recent ones stay, even beyond the
    // count bound's reach.
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("DELETE FROM event_outbox")
        .execute(&mut *tx)
        .await
        .expect("clear");
    tx.commit().await.expect("commit");
    append(&store, 30, LONG_AGO).await;
    append(&store, 20, &recently()).await;
    let before = seqs(&store).await;
    let by_age = EventRetention {
        max_age: Some(Duration::from_secs(24 * 3600)),
        max_count: Some(1_000_000),
    };
    assert_eq!(store.prune_events(&by_age).await.expect("prune"), 30);
    assert_eq!(seqs(&store).await, before[30..]);

    // Both bounds: whichever keeps fewer.
    append(&store, 5, &recently()).await;
    let both = EventRetention {
        max_age: Some(Duration::from_secs(24 * 3600)),
        max_count: Some(10),
    };
    assert_eq!(store.prune_events(&both).await.expect("prune"), 15);
    assert_eq!(seqs(&store).await.len(), 10);

    // Everything pruned, then a new event: its seq goes on from the highest ever issued.
    let highest = *seqs(&store).await.last().expect("events");
    // (Later than the newest event's millisecond.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let everything = EventRetention {
        max_age: Some(Duration::ZERO),
        max_count: None,
    };
    assert_eq!(store.prune_events(&everything).await.expect("prune"), 10);
    assert!(seqs(&store).await.is_empty());
    append(&store, 1, &recently()).await;
    let next = seqs(&store).await;
    assert_eq!(next.len(), 1);
    assert!(next[0] > highest, "seq {} reused after {highest}", next[0]);
}

#[tokio::test]
async fn the_outbox_is_pruned_oldest_first_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open_data_dir(dir.path()).await.expect("store");
    prune(store.clone()).await;
    cursors_and_gone(store).await;
}

#[tokio::test]
async fn the_outbox_is_pruned_oldest_first_on_postgresql() {
    on_fresh_postgresql(|store| async move {
        prune(store.clone()).await;
        cursors_and_gone(store).await;
    })
    .await;
}

/// A cursor holds pruning back; reading pruned events is `EventsGone`, saying where to
/// start again.
async fn cursors_and_gone(store: Arc<Store>) {
    let everything = EventRetention {
        max_age: None,
        max_count: Some(0),
    };
    store.prune_events(&everything).await.expect("prune");
    append(&store, 10, &recently()).await;
    let all = seqs(&store).await;
    // A relay has delivered the first four: only those may go.
    store
        .set_event_cursor("relay", all[3])
        .await
        .expect("cursor");
    assert_eq!(store.prune_events(&everything).await.expect("prune"), 4);
    assert_eq!(seqs(&store).await, all[4..]);
    assert_eq!(
        store
            .event_cursor("relay")
            .await
            .expect("cursor")
            .map(|c| c.seq),
        Some(all[3])
    );
    // Reading from before the window: told which is the oldest kept.
    let query = |after| EventQuery {
        after,
        limit: 100,
        ..EventQuery::default()
    };
    let gone = store.events(&query(0)).await.expect("read").unwrap_err();
    assert_eq!(
        gone,
        EventsGone {
            pruned_upto: all[3],
            oldest: all[4]
        }
    );
    let page = store
        .events(&query(all[3]))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(page.events.len(), 6);
    assert_eq!(page.next, all[9]);
    // Once the cursor is gone, pruning is no longer held back.
    store.drop_event_cursor("relay").await.expect("drop");
    assert_eq!(store.prune_events(&everything).await.expect("prune"), 6);
    let gone = store
        .events(&query(all[3]))
        .await
        .expect("read")
        .unwrap_err();
    assert_eq!(gone.pruned_upto, all[9]);
    assert_eq!(
        gone.oldest,
        all[9] + 1,
        "an empty log: the next seq to come"
    );
    // Caught up with the end: nothing, and the same place to go on from.
    let page = store
        .events(&query(all[9]))
        .await
        .expect("read")
        .expect("kept");
    assert!(page.events.is_empty());
    assert_eq!(page.next, all[9]);
}

/// Many transactions emit concurrently while a reader tails the log with small pages: it
/// sees every event exactly once, in strictly increasing `seq`, as CloudEvents with the
/// columns they were written with; filters and `next` behave.
async fn tailing(store: Arc<Store>) {
    store.migrate(&[]).await.expect("migrate");
    let kernel = Kernel::builder()
        .provide(store.clone())
        .build()
        .expect("kernel");
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, kernel) = (store.clone(), kernel.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = store.begin().await.expect("begin");
                let uuid = format!("rack-{w}-{i}");
                tx.emit(ResourceCreated {
                    kind: "racks".into(),
                    uuid: uuid.clone(),
                    inventory: serde_json::json!({"uuid": uuid})
                        .as_object()
                        .cloned()
                        .unwrap(),
                })
                .await
                .expect("emit");
                if i % 5 == 0 {
                    tx.emit(ResourceDeleted {
                        kind: "racks".into(),
                        uuid,
                    })
                    .await
                    .expect("emit");
                }
                // One in ten rolls back: its events must never be seen.
                if i % 10 == 9 {
                    drop(tx);
                } else {
                    tx.commit(kernel.bus()).await.expect("commit");
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let expected =
        WRITERS * (EACH - EACH / 10 + (0..EACH).filter(|i| i % 5 == 0 && i % 10 != 9).count());
    let mut seen = Vec::new();
    let mut after = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} of {expected}",
            seen.len()
        );
        let page = store
            .events(&EventQuery {
                after,
                limit: 7,
                ..EventQuery::default()
            })
            .await
            .expect("read")
            .expect("nothing pruned");
        for event in &page.events {
            assert!(event.seq > after, "{} after {after}", event.seq);
            after = event.seq;
        }
        assert!(page.next >= after);
        after = page.next;
        seen.extend(page.events);
        tokio::task::yield_now().await;
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(seen.len(), expected, "every committed event, once");
    assert!(!seen
        .iter()
        .any(|e| e.subject.ends_with("-9") || e.subject.ends_with("-19")));
    let created = &seen[0];
    assert_eq!(created.specversion, "1.0");
    assert_eq!(created.source, "/v1/racks");
    assert!(created.event_type.starts_with("io.flatstack.racks."));
    assert_eq!(created.data["kind"], "racks");
    let ids: std::collections::HashSet<_> = seen.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "ids are unique");
    // Filters: by type, by subject.
    let deleted = store
        .events(&EventQuery {
            after: 0,
            limit: 1000,
            event_type: Some("io.flatstack.racks.deleted.v1".into()),
            ..EventQuery::default()
        })
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        deleted.events.len(),
        expected - WRITERS * (EACH - EACH / 10)
    );
    assert_eq!(
        deleted.next,
        seen.last().expect("events").seq,
        "all looked at"
    );
    let one = store
        .events(&EventQuery {
            after: 0,
            limit: 1000,
            subject: Some("rack-3-5".into()),
            ..EventQuery::default()
        })
        .await
        .expect("read")
        .expect("kept");
    let verbs: Vec<_> = one.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        verbs,
        [
            "io.flatstack.racks.created.v1",
            "io.flatstack.racks.deleted.v1"
        ]
    );
}

#[tokio::test]
async fn a_tailing_reader_misses_no_event_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    tailing(Store::open_data_dir(dir.path()).await.expect("store")).await;
}

#[tokio::test]
async fn a_tailing_reader_misses_no_event_on_postgresql() {
    on_fresh_postgresql(tailing).await;
}

/// PostgreSQL's write transactions run side by side: one that emitted first may commit
/// last. A reader that has read past the later one's event still gets the earlier one's,
/// numbered after it once committed, and never the event of one rolled back.
#[tokio::test]
async fn an_event_committed_out_of_order_is_not_skipped_on_postgresql() {
    on_fresh_postgresql(out_of_order).await;
}

async fn out_of_order(store: Arc<Store>) {
    store.migrate(&[]).await.expect("migrate");
    let kernel = Kernel::builder()
        .provide(store.clone())
        .build()
        .expect("kernel");
    let created = |uuid: &str| ResourceCreated {
        kind: "racks".into(),
        uuid: uuid.into(),
        inventory: serde_json::json!({"uuid": uuid})
            .as_object()
            .cloned()
            .unwrap(),
    };
    let read = |after: i64| {
        let store = store.clone();
        async move {
            store
                .events(&EventQuery {
                    after,
                    limit: 100,
                    ..EventQuery::default()
                })
                .await
                .expect("read")
                .expect("kept")
        }
    };
    let mut early = store.begin().await.expect("begin");
    early.emit(created("early")).await.expect("emit");
    let mut undone = store.begin().await.expect("begin");
    undone.emit(created("undone")).await.expect("emit");
    let mut late = store.begin().await.expect("begin");
    late.emit(created("late")).await.expect("emit");
    late.commit(kernel.bus()).await.expect("commit");

    let first = read(0).await;
    let subjects: Vec<_> = first.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["late"], "only what has committed");
    early.commit(kernel.bus()).await.expect("commit");
    drop(undone);
    let second = read(first.next).await;
    let subjects: Vec<_> = second.events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["early"],
        "the earlier event, after the reader's position"
    );
    assert!(second.events[0].seq > first.events[0].seq);
    assert!(read(second.next).await.events.is_empty());
}
