//! Retention of the event outbox (`Store::prune_events`) on SQLite and on PostgreSQL: by
//! count and by age, the oldest first, in batches, and `seq` never reused afterwards.
//! PostgreSQL is the server at $FLATSTACK_TEST_POSTGRES (default: the local one, as on
//! the project's machines; `.ci/run` makes sure it is up), in a fresh database per test.

use flatstack_store::{EventRetention, Store, PRUNE_BATCH};
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::Duration;

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
        sqlx::query("INSERT INTO event_outbox (name, body, created_at) VALUES ($1, $2, $3)")
            .bind("test.event")
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

async fn exercise(store: Arc<Store>) {
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
    exercise(Store::open_data_dir(dir.path()).await.expect("store")).await;
}

#[tokio::test]
async fn the_outbox_is_pruned_oldest_first_on_postgresql() {
    let name = format!("flatstack_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin().await)
        .await
        .expect("create database");
    let store = Store::open(&format!("{}/{name}", server()))
        .await
        .expect("store");
    exercise(store.clone()).await;
    store.pool().close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin().await)
        .await
        .expect("drop database");
}
