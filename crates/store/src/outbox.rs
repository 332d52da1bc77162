//! Retention of the event outbox: every change writes a row to `event_outbox`, so without
//! pruning it grows for ever. The oldest rows go first, a bounded batch per transaction,
//! so a prune never holds SQLite's one writer for long. `seq` is never reused: SQLite's
//! `AUTOINCREMENT` and PostgreSQL's sequence both go on from the highest ever issued.

use crate::Db;
use crate::{Backend, Store, StoreError};
use sqlx::Row;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

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

impl Store {
    /// Deletes the events that `retention` no longer keeps, oldest first, at most
    /// [`PRUNE_BATCH`] per transaction; how many went. It stops at the oldest event that
    /// is kept, so an event is only ever pruned with every one before it: what remains is
    /// always a run of the newest `seq`s.
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
                if !(too_many || too_old) {
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

    /// Deletes the events up to `seq`, in one transaction; how many went.
    async fn delete_events_upto(&self, seq: i64) -> Result<u64, StoreError> {
        const DELETE: &str = "DELETE FROM event_outbox WHERE seq <= $1";
        match self.backend {
            // On the writer, as every SQLite write while the node serves (the pool's
            // connection would only wait for the writer's lock).
            Backend::Sqlite => {
                let mut writer = self.sqlite_writer("pruning events").await?;
                writer.begin()?;
                let done = writer
                    .execute(DELETE, &[crate::rows::Param::Int(seq)])
                    .and_then(|gone| writer.commit().map(|()| gone));
                if done.is_err() {
                    writer.rollback();
                }
                done
            }
            Backend::Postgres => Ok(sqlx::query(DELETE)
                .bind(seq)
                .execute(&self.pool)
                .await
                .db()?
                .rows_affected()),
        }
    }
}
