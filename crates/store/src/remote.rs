//! The registrations of remote implementors (services outside the node implementing an
//! extension point), kept so that every node of the cloud calls them and a restart keeps
//! them. The kernel holds the live copy (`Extensions::remote`); nodes reload it from here.

use crate::rows::Param;
use crate::{Db, Store, StoreError};
use flatstack_kernel::extension::remote::{FailurePolicy, RemoteRegistration};
use sqlx::Row;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS remote_implementors (
    point TEXT NOT NULL, name TEXT NOT NULL, queue TEXT NOT NULL, timeout_ms BIGINT NOT NULL,
    failure_policy TEXT NOT NULL, ordinal BIGINT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (point, name))";

impl Store {
    /// Every registration, by point then order.
    pub async fn remote_registrations(&self) -> Result<Vec<RemoteRegistration>, StoreError> {
        let rows = sqlx::query(
            "SELECT point, name, queue, timeout_ms, failure_policy, ordinal
             FROM remote_implementors ORDER BY point, ordinal, name",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter()
            .map(|row| {
                let policy: String = row.try_get("failure_policy").db()?;
                Ok(RemoteRegistration {
                    point: row.try_get("point").db()?,
                    name: row.try_get("name").db()?,
                    queue: row.try_get("queue").db()?,
                    timeout_ms: u64::try_from(row.try_get::<i64, _>("timeout_ms").db()?)
                        .unwrap_or(0),
                    failure_policy: if policy == "ignore" {
                        FailurePolicy::Ignore
                    } else {
                        FailurePolicy::Fail
                    },
                    order: i32::try_from(row.try_get::<i64, _>("ordinal").db()?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Records `registration`; `false` if the point already has one of that name.
    pub async fn add_remote_registration(
        &self,
        registration: &RemoteRegistration,
    ) -> Result<bool, StoreError> {
        let policy = match registration.failure_policy {
            FailurePolicy::Fail => "fail",
            FailurePolicy::Ignore => "ignore",
        };
        let params = [
            Param::text(&registration.point),
            Param::text(&registration.name),
            Param::text(&registration.queue),
            Param::Int(i64::try_from(registration.timeout_ms).unwrap_or(i64::MAX)),
            Param::text(policy),
            Param::Int(i64::from(registration.order)),
            Param::Text(crate::now().into()),
        ];
        let added = self
            .write_log_all(&[(
                "INSERT INTO remote_implementors
                   (point, name, queue, timeout_ms, failure_policy, ordinal, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (point, name) DO NOTHING",
                &params,
            )])
            .await?;
        Ok(added.first().copied().unwrap_or(0) > 0)
    }

    /// Removes the registration `name` of `point`; `false` if there was none.
    pub async fn remove_remote_registration(
        &self,
        point: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let params = [Param::text(point), Param::text(name)];
        let removed = self
            .write_log_all(&[(
                "DELETE FROM remote_implementors WHERE point = $1 AND name = $2",
                &params,
            )])
            .await?;
        Ok(removed.first().copied().unwrap_or(0) > 0)
    }
}
