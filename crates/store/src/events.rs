//! The event log: every change writes its canonical events to `event_outbox` in its own
//! transaction, with a sequence number (`seq`). Readers (the HTTP event stream, the AMQP
//! relay) take "the events after N"; the log is pruned to a retention by age and count.
//!
//! **Nothing is skipped.** A reader that has seen every `seq` up to N and asks for those
//! after N must never miss one that commits later with a smaller `seq`. On SQLite that
//! holds because write transactions run one at a time, so `seq`s are issued in commit
//! order. On PostgreSQL they run side by side, and a `seq` taken at insert would commit
//! out of order; so a transaction writes its events to `event_staging` instead, and they
//! are numbered once committed ([`Store::sequence_events`]): one numbering at a time
//! (an advisory lock, on every node), each moving into `event_outbox`, in the order they
//! were staged, the staged rows its snapshot sees, which were all committed. A numbering
//! commits before the next begins, so a reader that sees a `seq` sees every smaller one.
//! Readers number what is staged before they read, so an event is readable as soon as
//! its transaction has committed.
//!
//! **Nothing relayed is pruned unseen.** A relay keeps its position as a named cursor
//! ([`Store::event_cursor`]); pruning never goes past the lowest cursor, so an outage of
//! the broker holds the events back rather than losing them. `pruned_upto` remembers how
//! far pruning went, so that asking for events older than the window is told apart from
//! asking for events that do not exist yet.
//!
//! `seq` is never reused: SQLite's `AUTOINCREMENT` and PostgreSQL's sequence both go on
//! from the highest ever issued.

use crate::rows::Param;
use crate::Db;
use crate::{Backend, Store, StoreError};
use flatstack_header::events::{CloudEvent, RawEvent};
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The statements that create the log (idempotent), for `backend`. A log written before
/// events had CloudEvents columns (which nothing could read) is replaced.
pub(crate) fn schema(backend: Backend) -> Vec<&'static str> {
    let seq = match backend {
        Backend::Sqlite => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "seq BIGSERIAL PRIMARY KEY",
    };
    let outbox = match backend {
        Backend::Sqlite => SQLITE_OUTBOX,
        Backend::Postgres => POSTGRES_OUTBOX,
    };
    debug_assert!(outbox.contains(seq));
    let mut schema = vec![
        outbox,
        "CREATE INDEX IF NOT EXISTS event_outbox_subject ON event_outbox (subject)",
        "CREATE TABLE IF NOT EXISTS event_log (
            id INTEGER PRIMARY KEY CHECK (id = 1), pruned_upto BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS event_cursors (
            name TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated_at TEXT NOT NULL)",
        crate::remote::SCHEMA,
    ];
    if backend == Backend::Postgres {
        schema.push(POSTGRES_STAGING);
    }
    schema
}

/// How [`crate::Tx::emit`] writes an event: into `event_outbox` on SQLite, which numbers
/// it as it comes, into `event_staging` on PostgreSQL ([`Store::sequence_events`]).
pub(crate) fn insert_event(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "INSERT INTO event_outbox (id, type, kind, subject, name, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        }
        Backend::Postgres => {
            "INSERT INTO event_staging (id, type, kind, subject, name, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        }
    }
}

const SQLITE_OUTBOX: &str = "CREATE TABLE IF NOT EXISTS event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, subject TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL)";
const POSTGRES_OUTBOX: &str = "CREATE TABLE IF NOT EXISTS event_outbox (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, subject TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL)";
const POSTGRES_STAGING: &str = "CREATE TABLE IF NOT EXISTS event_staging (
    pos BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, subject TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    created_at TEXT NOT NULL)";

/// PostgreSQL: the advisory lock that one numbering of staged events holds at a time.
const SEQUENCER_LOCK: i64 = 7380095427620824942;

/// PostgreSQL: the most staged events one numbering moves.
const SEQUENCE_BATCH: i64 = 10_000;

/// PostgreSQL: numbers committed staged events, oldest staged first, into the log.
const SEQUENCE: &str = "WITH moved AS (
        DELETE FROM event_staging WHERE pos IN
            (SELECT pos FROM event_staging ORDER BY pos LIMIT $1)
        RETURNING pos, id, type, kind, subject, name, body, created_at)
    INSERT INTO event_outbox (seq, id, type, kind, subject, name, body, created_at)
    SELECT nextval(pg_get_serial_sequence('event_outbox', 'seq')),
           id, type, kind, subject, name, body, created_at
    FROM (SELECT * FROM moved ORDER BY pos) ordered";

/// How long and how many events the outbox keeps; `None` puts no bound on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Events older than this go.
    pub max_age: Option<Duration>,
    /// Only this many of the newest events stay.
    pub max_count: Option<u64>,
}

impl EventRetention {
    /// What the node keeps unless told otherwise: a week, and at most a million events.
    pub const DEFAULT: EventRetention = EventRetention {
        max_age: Some(Duration::from_secs(7 * 24 * 3600)),
        max_count: Some(1_000_000),
    };
}

impl Default for EventRetention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The most rows one pruning transaction deletes: a few milliseconds of the writer.
pub const PRUNE_BATCH: usize = 1000;

/// Which events to read: those after `after`, at most `limit`, optionally only of one
/// type, subject or kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Events with a greater `seq` than this (0: from the oldest kept).
    pub after: i64,
    /// At most this many.
    pub limit: u32,
    /// Only this CloudEvents `type`.
    pub event_type: Option<String>,
    /// Only about this resource.
    pub subject: Option<String>,
    /// Only about resources of this kind (its API path, e.g. `vm-instances`).
    pub kind: Option<String>,
}

/// Events read, in `seq` order, and where to go on from.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<CloudEvent>,
    /// The `after` of the next read: every event up to it that matched was returned.
    pub next: i64,
}

/// Events read, `data` left as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEventPage {
    /// The events, oldest first.
    pub events: Vec<RawEvent>,
    /// As [`EventPage::next`].
    pub next: i64,
}

/// The events asked for were pruned: the oldest kept is `oldest` (the log may be empty,
/// in which case it is the next `seq` to be issued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events up to {pruned_upto} were pruned; the oldest kept is {oldest}")]
pub struct EventsGone {
    /// The highest `seq` pruned.
    pub pruned_upto: i64,
    /// The lowest `seq` that may still be read.
    pub oldest: i64,
}

/// A reader's position in the log, kept in the store: the AMQP relay's last confirmed
/// event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// Who reads, e.g. `amqp-relay`.
    pub name: String,
    /// Every event up to this one was delivered.
    pub seq: i64,
}

impl Store {
    /// Creates the event log's tables, replacing a log of the old shape.
    pub(crate) async fn create_event_log(&self) -> Result<(), StoreError> {
        // The old shape had no `type`: nothing could read its rows, so they go.
        if sqlx::query("SELECT type FROM event_outbox LIMIT 0")
            .execute(&self.pool)
            .await
            .is_err()
        {
            sqlx::query("DROP TABLE IF EXISTS event_outbox")
                .execute(&self.pool)
                .await
                .db()?;
        }
        for statement in schema(self.backend) {
            sqlx::query(statement).execute(&self.pool).await.db()?;
        }
        sqlx::query(
            "INSERT INTO event_log (id, pruned_upto) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        )
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    /// PostgreSQL: numbers the events of committed transactions (see the module's doc),
    /// how many; nothing to do on SQLite, whose events are numbered as they are written.
    pub async fn sequence_events(&self) -> Result<u64, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        let mut moved = 0;
        loop {
            let mut tx = self.pool.begin().await.db()?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SEQUENCER_LOCK)
                .execute(&mut *tx)
                .await
                .db()?;
            let done = sqlx::query(SEQUENCE)
                .bind(SEQUENCE_BATCH)
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected();
            tx.commit().await.db()?;
            moved += done;
            if done < SEQUENCE_BATCH as u64 {
                return Ok(moved);
            }
        }
    }

    /// Wakes when a transaction that emitted events has committed on this node: readers
    /// wait on it between reads (and poll too, for other nodes' commits).
    pub fn events_committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_committed.subscribe()
    }

    pub(crate) fn count_events_committed(&self) {
        self.events_committed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The events `query` asks for, or [`EventsGone`] if some it asks for were pruned.
    pub async fn events(
        self: &std::sync::Arc<Self>,
        query: &EventQuery,
    ) -> Result<Result<EventPage, EventsGone>, StoreError> {
        let page = match self.raw_events(query).await? {
            Ok(page) => page,
            Err(gone) => return Ok(Err(gone)),
        };
        let events = page
            .events
            .into_iter()
            .map(|raw| {
                let seq = raw.seq;
                raw.parse().map_err(|e| {
                    StoreError::io(format!("event {seq} has a body that is not JSON: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ok(EventPage {
            events,
            next: page.next,
        }))
    }

    /// [`Store::events`] with each event's `data` left as the JSON text stored: for the
    /// relay, which publishes it as it is ([`RawEvent::encode`]).
    pub async fn raw_events(
        self: &std::sync::Arc<Self>,
        query: &EventQuery,
    ) -> Result<Result<RawEventPage, EventsGone>, StoreError> {
        self.sequence_events().await?;
        // One snapshot: the bounds and the page agree.
        let mut tx = self.read().await?;
        let bounds = tx
            .query(
                "SELECT pruned_upto, (SELECT COALESCE(MAX(seq), 0) FROM event_outbox) AS newest
                 FROM event_log WHERE id = 1",
                &[],
            )
            .await?;
        let int = |row: Option<&serde_json::Map<String, Value>>, column| {
            row.and_then(|row| row.get(column))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let (pruned_upto, newest) = (
            int(bounds.first(), "pruned_upto"),
            int(bounds.first(), "newest"),
        );
        if query.after < pruned_upto {
            let oldest = self
                .oldest_event_in(&mut tx)
                .await?
                .unwrap_or(newest.max(pruned_upto) + 1);
            return Ok(Err(EventsGone {
                pruned_upto,
                oldest,
            }));
        }
        let mut sql = String::from(
            "SELECT seq, id, type, kind, subject, body, created_at FROM event_outbox
             WHERE seq > $1 AND seq <= $2",
        );
        let mut params = vec![json!(query.after), json!(newest)];
        for (column, value) in [
            ("type", &query.event_type),
            ("subject", &query.subject),
            ("kind", &query.kind),
        ] {
            if let Some(value) = value {
                params.push(json!(value));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        }
        params.push(json!(query.limit));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
        let rows = tx.query(&sql, &params).await?;
        let full = rows.len() >= query.limit as usize;
        let events = rows
            .into_iter()
            .map(raw_event)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match events.last() {
            Some(last) if full => last.seq,
            // Everything up to the newest was looked at.
            _ => newest.max(query.after),
        };
        Ok(Ok(RawEventPage { events, next }))
    }

    /// The highest `seq` issued and still kept (0 if the log is empty).
    pub async fn newest_event_seq(&self) -> Result<i64, StoreError> {
        self.sequence_events().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM event_outbox")
            .fetch_one(&self.pool)
            .await
            .db()?;
        row.try_get::<i64, _>("seq").db()
    }

    async fn oldest_event_in(&self, tx: &mut crate::Tx) -> Result<Option<i64>, StoreError> {
        let rows = tx
            .query("SELECT MIN(seq) AS oldest FROM event_outbox", &[])
            .await?;
        Ok(rows
            .first()
            .and_then(|row| row.get("oldest"))
            .and_then(Value::as_i64))
    }

    /// The position of the reader `name`, if it has one.
    pub async fn event_cursor(&self, name: &str) -> Result<Option<EventCursor>, StoreError> {
        let row = sqlx::query("SELECT seq FROM event_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        Ok(match row {
            Some(row) => Some(EventCursor {
                name: name.to_owned(),
                seq: row.try_get("seq").db()?,
            }),
            None => None,
        })
    }

    /// Every reader's position.
    pub async fn event_cursors(&self) -> Result<Vec<EventCursor>, StoreError> {
        let rows = sqlx::query("SELECT name, seq FROM event_cursors ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .db()?;
        rows.iter()
            .map(|row| {
                Ok(EventCursor {
                    name: row.try_get("name").db()?,
                    seq: row.try_get("seq").db()?,
                })
            })
            .collect()
    }

    /// Moves (or creates) the cursor of reader `name` to `seq`.
    pub async fn set_event_cursor(&self, name: &str, seq: i64) -> Result<(), StoreError> {
        let now = crate::now();
        let params = [Param::text(name), Param::Int(seq), Param::Text(now.into())];
        self.write_log(
            "INSERT INTO event_cursors (name, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            &params,
        )
        .await
        .map(drop)
    }

    /// Removes the cursor of reader `name`: pruning no longer waits for it.
    pub async fn drop_event_cursor(&self, name: &str) -> Result<(), StoreError> {
        self.write_log(
            "DELETE FROM event_cursors WHERE name = $1",
            &[Param::text(name)],
        )
        .await
        .map(drop)
    }

    /// Deletes the events that `retention` no longer keeps, oldest first, at most
    /// [`PRUNE_BATCH`] per transaction, never past a reader's cursor; how many went. It
    /// stops at the oldest event that is kept, so an event is only ever pruned with every
    /// one before it: what remains is always a run of the newest `seq`s.
    pub async fn prune_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        // A bound too far back to compute keeps everything.
        let cutoff = retention
            .max_age
            .and_then(|age| OffsetDateTime::now_utc().checked_sub(age.try_into().ok()?));
        let beyond_count = match retention.max_count {
            Some(keep) => self.newest_beyond(keep).await?,
            None => None,
        };
        if cutoff.is_none() && beyond_count.is_none() {
            return Ok(0);
        }
        let cursor: Option<i64> = sqlx::query("SELECT MIN(seq) AS seq FROM event_cursors")
            .fetch_one(&self.pool)
            .await
            .db()?
            .try_get("seq")
            .db()?;
        let mut deleted = 0;
        loop {
            let oldest =
                sqlx::query("SELECT seq, created_at FROM event_outbox ORDER BY seq LIMIT $1")
                    .bind(PRUNE_BATCH as i64)
                    .fetch_all(&self.pool)
                    .await
                    .db()?;
            let mut upto = None;
            for row in &oldest {
                let seq: i64 = row.try_get("seq").db()?;
                let created_at: String = row.try_get("created_at").db()?;
                let too_many = beyond_count.is_some_and(|last| seq <= last);
                // A time that does not parse is kept (and so is everything after it).
                let too_old = cutoff.is_some_and(|cutoff| {
                    OffsetDateTime::parse(&created_at, &Rfc3339).is_ok_and(|t| t < cutoff)
                });
                let unread = cursor.is_some_and(|cursor| seq > cursor);
                if !(too_many || too_old) || unread {
                    break;
                }
                upto = Some(seq);
            }
            let Some(upto) = upto else { break };
            let gone = self.delete_events_upto(upto).await?;
            deleted += gone;
            let whole_batch = oldest.len() == PRUNE_BATCH
                && oldest
                    .last()
                    .and_then(|row| row.try_get::<i64, _>("seq").ok())
                    == Some(upto);
            if gone == 0 || !whole_batch {
                break;
            }
            // Let whatever waits for the writer have it between batches.
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }

    /// The `seq` of the newest event beyond the `keep` newest ones, if there are more.
    async fn newest_beyond(&self, keep: u64) -> Result<Option<i64>, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let row = sqlx::query("SELECT seq FROM event_outbox ORDER BY seq DESC LIMIT 1 OFFSET $1")
            .bind(keep)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        Ok(match row {
            Some(row) => Some(row.try_get("seq").db()?),
            None => None,
        })
    }

    /// Deletes the events up to `seq` and records how far pruning went, in one
    /// transaction; how many went.
    async fn delete_events_upto(&self, seq: i64) -> Result<u64, StoreError> {
        let params = [Param::Int(seq)];
        let gone = self
            .write_log_all(&[
                ("DELETE FROM event_outbox WHERE seq <= $1", &params),
                (
                    "UPDATE event_log SET pruned_upto = $1 WHERE id = 1 AND pruned_upto < $1",
                    &params,
                ),
            ])
            .await?;
        Ok(gone.first().copied().unwrap_or(0))
    }

    async fn write_log(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let done = self.write_log_all(&[(sql, params)]).await?;
        Ok(done.first().copied().unwrap_or(0))
    }

    /// Runs the store's own bookkeeping statements (the event log's, the remote
    /// registrations') in one transaction: on SQLite on the
    /// writer, as every SQLite write while the node serves (the pool's connection would
    /// only wait for the writer's lock); how many rows each changed.
    pub(crate) async fn write_log_all(
        &self,
        statements: &[(&str, &[Param<'_>])],
    ) -> Result<Vec<u64>, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.sqlite_writer("the event log").await?;
                let mut writer = turn.lock();
                writer.begin()?;
                let done = statements
                    .iter()
                    .map(|(sql, params)| writer.execute(sql, params))
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|done| writer.commit().map(|_| done));
                if done.is_err() {
                    writer.rollback();
                }
                done
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await.db()?;
                let mut done = Vec::with_capacity(statements.len());
                for (sql, params) in statements {
                    let (statement, params) = crate::rows::postgres_statement(sql, params);
                    let mut query = sqlx::query(&statement);
                    for param in &params {
                        query = param.bind(query);
                    }
                    done.push(query.execute(&mut *tx).await.db()?.rows_affected());
                }
                tx.commit().await.db()?;
                Ok(done)
            }
        }
    }
}

/// A row of `event_outbox` as the event it stands for.
fn raw_event(row: serde_json::Map<String, Value>) -> Result<RawEvent, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> {
        match row.get(column) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(StoreError::io(format!("event_outbox.{column} is not text"))),
        }
    };
    let seq = row
        .get("seq")
        .and_then(Value::as_i64)
        .ok_or_else(|| StoreError::io("event_outbox.seq is not an integer"))?;
    Ok(RawEvent {
        seq,
        id: text("id")?,
        event_type: text("type")?,
        kind: text("kind")?,
        subject: text("subject")?,
        time: text("created_at")?,
        data: text("body")?,
    })
}
