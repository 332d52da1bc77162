//! A transaction: records and the events that report them, committed together.

use crate::rows::{bind, check_ident, to_json};
use crate::{Store, StoreError, Writer};
use flatstack_kernel::bus::Bus;
use flatstack_kernel::{Event, Fault};
use serde_json::{Map, Value};
use sqlx::{Any, AnyConnection, Row, Transaction};
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

type Publish = Box<dyn FnOnce(&Bus) + Send>;

pub struct Tx {
    store: Arc<Store>,
    tx: Conn,
    /// Events to publish in process once the transaction has committed.
    publish: Vec<Publish>,
}

/// Where a transaction runs: SQLite's one transaction connection, or one from the pool.
enum Conn {
    Writer(OwnedMutexGuard<Writer>),
    Pooled(Transaction<'static, Any>),
}

impl std::ops::Deref for Conn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Conn::Writer(writer) => &writer.conn,
            Conn::Pooled(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Writer(writer) => &mut writer.conn,
            Conn::Pooled(tx) => &mut *tx,
        }
    }
}

/// Now, as RFC 3339 in UTC with milliseconds: sortable as text on every backend.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    let now = now
        .replace_nanosecond(u32::from(millis) * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Tx {
    pub(crate) async fn begin(store: Arc<Store>) -> Result<Tx, StoreError> {
        let tx = match store.writer().await? {
            Some(mut writer) => {
                // One left open by a dropped Tx (every read-only one) or a failed commit is
                // rolled back first, in the same round trip to the connection's thread.
                let rolled_back = writer.open
                    && sqlx::Executor::execute(&mut writer.conn, "ROLLBACK; BEGIN")
                        .await
                        .is_ok();
                if !rolled_back {
                    // An error above only says no transaction was left to roll back.
                    writer.open = false;
                    sqlx::query("BEGIN").execute(&mut writer.conn).await?;
                }
                writer.open = true;
                Conn::Writer(writer)
            }
            None => Conn::Pooled(store.pool.begin().await?),
        };
        store.count_begin();
        Ok(Tx {
            store,
            tx,
            publish: Vec::new(),
        })
    }

    /// The connection, for queries the helpers below do not cover.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Inserts `row` (column → value) into `table`.
    pub async fn insert(
        &mut self,
        table: &str,
        row: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        check_ident(table)?;
        let mut columns = Vec::with_capacity(row.len());
        let mut marks = Vec::with_capacity(row.len());
        for (i, column) in row.keys().enumerate() {
            check_ident(column)?;
            columns.push(column.as_str());
            marks.push(format!("${}", i + 1));
        }
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (column, value) in row {
            query = bind(query, column, value)?;
        }
        query.execute(&mut *self.tx).await?;
        Ok(())
    }

    /// The row of `table` whose `uuid` is `uuid`.
    pub async fn get(
        &mut self,
        table: &str,
        uuid: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        check_ident(table)?;
        let sql = format!("SELECT * FROM {table} WHERE uuid = $1");
        let row = sqlx::query(&sql)
            .bind(uuid)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(to_json).transpose()
    }

    /// Whether `table` has a row with this uuid.
    pub async fn exists(&mut self, table: &str, uuid: &str) -> Result<bool, StoreError> {
        Ok(self
            .count_where(table, "uuid", &Value::String(uuid.to_owned()))
            .await?
            > 0)
    }

    /// Rows of `table` matching every `column = value` of `filters`, oldest first.
    pub async fn list(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        self.list_by(table, filters, &["uuid"]).await
    }

    /// Like [`Tx::list`], for tables without a `uuid`: sorted by `created_at`, then `order`.
    pub async fn list_by(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
        order: &[&str],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        check_ident(table)?;
        let mut sql = format!("SELECT * FROM {table}");
        for (i, column) in filters.keys().enumerate() {
            check_ident(column)?;
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(&format!("{column} = ${}", i + 1));
        }
        sql.push_str(" ORDER BY created_at");
        for column in order {
            check_ident(column)?;
            sql.push_str(&format!(", {column}"));
        }
        let mut query = sqlx::query(&sql);
        for (column, value) in filters {
            query = bind(query, column, value)?;
        }
        let rows = query.fetch_all(&mut *self.tx).await?;
        rows.iter().map(to_json).collect()
    }

    /// Rows of `table` where `column = value`.
    pub async fn count_where(
        &mut self,
        table: &str,
        column: &str,
        value: &Value,
    ) -> Result<i64, StoreError> {
        check_ident(table)?;
        check_ident(column)?;
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1");
        let row = bind(sqlx::query(&sql), column, value)?
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Sets `changes` on the row with this uuid (and `updated_at`); `false` if none.
    pub async fn update(
        &mut self,
        table: &str,
        uuid: &str,
        changes: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        self.update_where(table, "uuid", uuid, changes).await
    }

    /// Sets `changes` (and `updated_at`) on the rows where `key_column = key`, for tables
    /// keyed by something else than a uuid; `false` if none.
    pub async fn update_where(
        &mut self,
        table: &str,
        key_column: &str,
        key: &str,
        changes: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        check_ident(table)?;
        check_ident(key_column)?;
        let mut sets = Vec::new();
        for (i, column) in changes.keys().enumerate() {
            check_ident(column)?;
            sets.push(format!("{column} = ${}", i + 1));
        }
        sets.push(format!("updated_at = ${}", changes.len() + 1));
        let sql = format!(
            "UPDATE {table} SET {} WHERE {key_column} = ${}",
            sets.join(", "),
            changes.len() + 2
        );
        let mut query = sqlx::query(&sql);
        for (column, value) in changes {
            query = bind(query, column, value)?;
        }
        let done = query.bind(now()).bind(key).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the row with this uuid. Refused with a `conflict` naming the referring
    /// tables while foreign keys still point at it; `not_found` if there is no such row.
    pub async fn delete(&mut self, table: &str, uuid: &str) -> Result<(), Fault> {
        check_ident(table)?;
        let id = Value::String(uuid.to_owned());
        let mut holders = Vec::new();
        for (child, column) in self.store.referrers_of(table) {
            // A driver's own record (keyed by the base uuid) goes with its base row.
            if column == "uuid" {
                continue;
            }
            let n = self.count_where(&child, &column, &id).await?;
            if n > 0 {
                holders.push(format!("{n} in {child}"));
            }
        }
        if !holders.is_empty() {
            return Err(Fault::conflict(format!(
                "{uuid} is still referred to ({}); delete or detach those first",
                holders.join(", ")
            ))
            .with_detail("referrers", holders));
        }
        for (child, column) in self.store.referrers_of(table) {
            if column == "uuid" {
                sqlx::query(&format!("DELETE FROM {child} WHERE uuid = $1"))
                    .bind(uuid)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(StoreError::from)?;
            }
        }
        let sql = format!("DELETE FROM {table} WHERE uuid = $1");
        let done = sqlx::query(&sql)
            .bind(uuid)
            .execute(&mut *self.tx)
            .await
            .map_err(StoreError::from)?;
        if done.rows_affected() == 0 {
            return Err(Fault::not_found(format!("no {table} {uuid}")));
        }
        Ok(())
    }

    /// Deletes the rows of `table` where `column = value` (for tables without a `uuid`,
    /// which nothing refers to); returns how many went.
    pub async fn delete_where(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<u64, StoreError> {
        check_ident(table)?;
        check_ident(column)?;
        let sql = format!("DELETE FROM {table} WHERE {column} = $1");
        let done = sqlx::query(&sql).bind(value).execute(&mut *self.tx).await?;
        Ok(done.rows_affected())
    }

    /// The `value_column` of the rows of reference table `table` where `key_column = key`,
    /// sorted: e.g. the clusters a storage is attached to.
    pub async fn list_refs(
        &mut self,
        table: &str,
        key_column: &str,
        key: &str,
        value_column: &str,
    ) -> Result<Vec<String>, StoreError> {
        for ident in [table, key_column, value_column] {
            check_ident(ident)?;
        }
        let sql = format!(
            "SELECT {value_column} AS v FROM {table} WHERE {key_column} = $1 ORDER BY {value_column}"
        );
        let rows = sqlx::query(&sql).bind(key).fetch_all(&mut *self.tx).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("v").map_err(StoreError::from))
            .collect()
    }

    /// Deletes the rows of `table` where both `column = value` pairs hold; `false` if none.
    pub async fn delete_ref(
        &mut self,
        table: &str,
        (a, a_value): (&str, &str),
        (b, b_value): (&str, &str),
    ) -> Result<bool, StoreError> {
        for ident in [table, a, b] {
            check_ident(ident)?;
        }
        let sql = format!("DELETE FROM {table} WHERE {a} = $1 AND {b} = $2");
        let done = sqlx::query(&sql)
            .bind(a_value)
            .bind(b_value)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records `event` in the outbox, in this transaction; it is published on the bus
    /// after [`Tx::commit`] and never if the transaction rolls back.
    pub async fn emit<E: Event>(&mut self, event: E) -> Result<(), StoreError> {
        let body = serde_json::to_string(&event).map_err(|e| StoreError::Value {
            column: "body".into(),
            reason: e.to_string(),
        })?;
        sqlx::query("INSERT INTO event_outbox (name, body, created_at) VALUES ($1, $2, $3)")
            .bind(E::NAME)
            .bind(body)
            .bind(now())
            .execute(&mut *self.tx)
            .await?;
        self.publish
            .push(Box::new(move |bus: &Bus| bus.publish(event)));
        Ok(())
    }

    /// Commits, then publishes the emitted events in process.
    pub async fn commit(self, bus: &Bus) -> Result<(), StoreError> {
        match self.tx {
            Conn::Writer(mut writer) => {
                sqlx::query("COMMIT").execute(&mut writer.conn).await?;
                writer.open = false;
            }
            Conn::Pooled(tx) => tx.commit().await?,
        }
        self.store.count_commit();
        for publish in self.publish {
            publish(bus);
        }
        Ok(())
    }
}
