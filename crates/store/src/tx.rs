//! A transaction: records and the events that report them, committed together.

use crate::rows::{check_ident, to_json, Param};
use crate::sqlite::{self, Writer};
use crate::{Store, StoreError};
use flatstack_kernel::bus::Bus;
use flatstack_kernel::{Event, Fault};
use serde_json::{Map, Value};
use sqlx::{Any, Transaction};
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

type Publish = Box<dyn FnOnce(&Bus) + Send>;

pub struct Tx {
    store: Arc<Store>,
    tx: Conn,
    /// Begun by [`Store::read`]: statements that write are refused.
    read_only: bool,
    /// Events to publish in process once the transaction has committed.
    publish: Vec<Publish>,
}

/// Where a transaction runs: SQLite's one transaction connection (statements run inline,
/// see `sqlite.rs`), or a PostgreSQL connection from the pool.
enum Conn {
    Sqlite(SqliteTx),
    SqliteRead(sqlite::Reader),
    Postgres(Transaction<'static, Any>),
}

/// The SQLite connection with a transaction open on it, rolled back (inline, before the
/// connection is released) if it is dropped without commit.
struct SqliteTx(OwnedMutexGuard<Writer>);

impl Drop for SqliteTx {
    fn drop(&mut self) {
        self.0.rollback();
    }
}

/// Where `value` goes in a generated statement: `NULL` written out (an untyped literal,
/// which PostgreSQL types from its column; a NULL parameter is declared `text`, which a
/// BIGINT column refuses), or the next parameter, added to `params`.
fn mark<'a>(
    params: &mut Vec<Param<'a>>,
    column: &str,
    value: &'a Value,
) -> Result<String, StoreError> {
    if value.is_null() {
        return Ok("NULL".to_owned());
    }
    params.push(Param::of(column, value)?);
    Ok(format!("${}", params.len()))
}

/// Now, as RFC 3339 in UTC with milliseconds: sortable as text on every backend.
pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// `now` as [`now`] writes it.
pub(crate) fn timestamp(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
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
                writer.begin()?;
                Conn::Sqlite(SqliteTx(writer))
            }
            None => Conn::Postgres(store.pool.begin().await?),
        };
        store.count_begin();
        Ok(Tx {
            store,
            tx,
            read_only: false,
            publish: Vec::new(),
        })
    }

    pub(crate) async fn read(store: Arc<Store>) -> Result<Tx, StoreError> {
        let tx = match &store.readers {
            Some(readers) => Conn::SqliteRead(readers.begin()?),
            None => Conn::Postgres(store.pool.begin().await?),
        };
        store.count_begin();
        Ok(Tx {
            store,
            tx,
            read_only: true,
            publish: Vec::new(),
        })
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly(sql.to_owned()));
        }
        match &mut self.tx {
            Conn::SqliteRead(_) => Err(StoreError::ReadOnly(sql.to_owned())),
            Conn::Sqlite(writer) => writer.0.execute(sql, params),
            Conn::Postgres(tx) => {
                let mut query = sqlx::query(sql);
                for param in params {
                    query = param.bind(query);
                }
                Ok(query.execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    /// The rows of a query, as JSON objects; at most one if `one`.
    async fn fetch(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        one: bool,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let limit = if one { 1 } else { usize::MAX };
        match &mut self.tx {
            Conn::Sqlite(writer) => writer.0.fetch(sql, params, limit),
            Conn::SqliteRead(reader) => reader.fetch(sql, params, limit),
            Conn::Postgres(tx) => {
                let mut query = sqlx::query(sql);
                for param in params {
                    query = param.bind(query);
                }
                if one {
                    let row = query.fetch_optional(&mut **tx).await?;
                    row.as_ref().map(to_json).into_iter().collect()
                } else {
                    let rows = query.fetch_all(&mut **tx).await?;
                    rows.iter().map(to_json).collect()
                }
            }
        }
    }

    /// Rows of a query the helpers below do not cover (a join, a condition other than
    /// equality), as JSON objects: `$1`, `$2`… take `params` in order. Write it in SQL
    /// that SQLite and PostgreSQL both run.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let params = params
            .iter()
            .enumerate()
            .map(|(i, value)| Param::of(&format!("${}", i + 1), value))
            .collect::<Result<Vec<_>, _>>()?;
        self.fetch(sql, &params, false).await
    }

    /// Runs a statement the helpers do not cover and that returns no rows — typically a
    /// conditional `UPDATE ... WHERE available >= $1`, which changes a counter only if the
    /// condition still holds, race-free on both backends; how many rows it changed. `$1`,
    /// `$2`… take `params` in order. Write it in SQL that SQLite and PostgreSQL both run.
    pub async fn statement(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let params = params
            .iter()
            .enumerate()
            .map(|(i, value)| Param::of(&format!("${}", i + 1), value))
            .collect::<Result<Vec<_>, _>>()?;
        self.execute(sql, &params).await
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
        let mut params = Vec::with_capacity(row.len());
        for (column, value) in row {
            check_ident(column)?;
            columns.push(column.as_str());
            marks.push(mark(&mut params, column, value)?);
        }
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        self.execute(&sql, &params).await?;
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
        let rows = self.fetch(&sql, &[Param::text(uuid)], true).await?;
        Ok(rows.into_iter().next())
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
        let mut params = Vec::with_capacity(filters.len());
        for (i, (column, value)) in filters.iter().enumerate() {
            check_ident(column)?;
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(&format!("{column} = ${}", i + 1));
            params.push(Param::of(column, value)?);
        }
        sql.push_str(" ORDER BY created_at");
        for column in order {
            check_ident(column)?;
            sql.push_str(&format!(", {column}"));
        }
        self.fetch(&sql, &params, false).await
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
        let rows = self.fetch(&sql, &[Param::of(column, value)?], true).await?;
        rows.first()
            .and_then(|row| row.get("n"))
            .and_then(Value::as_i64)
            .ok_or_else(|| StoreError::Value {
                column: "n".into(),
                reason: format!("COUNT(*) of {table} gave no integer"),
            })
    }

    /// Sets `changes` on the row with this uuid, and `updated_at` to now unless `changes`
    /// sets it; `false` if none.
    pub async fn update(
        &mut self,
        table: &str,
        uuid: &str,
        changes: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        self.update_where(table, "uuid", uuid, changes).await
    }

    /// Sets `changes` on the rows where `key_column = key`, for tables keyed by something
    /// else than a uuid, and `updated_at` to now unless `changes` sets it (PostgreSQL
    /// refuses a column set twice); `false` if none.
    pub async fn update_where(
        &mut self,
        table: &str,
        key_column: &str,
        key: &str,
        changes: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        check_ident(table)?;
        check_ident(key_column)?;
        let mut sets = Vec::with_capacity(changes.len() + 1);
        let mut params = Vec::with_capacity(changes.len() + 2);
        for (column, value) in changes {
            check_ident(column)?;
            sets.push(format!("{column} = {}", mark(&mut params, column, value)?));
        }
        let at = Value::String(now());
        if !changes.contains_key("updated_at") {
            sets.push(format!(
                "updated_at = {}",
                mark(&mut params, "updated_at", &at)?
            ));
        }
        params.push(Param::text(key));
        let sql = format!(
            "UPDATE {table} SET {} WHERE {key_column} = ${}",
            sets.join(", "),
            params.len()
        );
        Ok(self.execute(&sql, &params).await? > 0)
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
                let sql = format!("DELETE FROM {child} WHERE uuid = $1");
                self.execute(&sql, &[Param::text(uuid)]).await?;
            }
        }
        let sql = format!("DELETE FROM {table} WHERE uuid = $1");
        if self.execute(&sql, &[Param::text(uuid)]).await? == 0 {
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
        self.execute(&sql, &[Param::text(value)]).await
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
        let rows = self.fetch(&sql, &[Param::text(key)], false).await?;
        rows.into_iter()
            .map(|mut row| match row.remove("v") {
                Some(Value::String(s)) => Ok(s),
                other => Err(StoreError::Value {
                    column: value_column.to_owned(),
                    reason: format!("expected text, found {}", other.unwrap_or(Value::Null)),
                }),
            })
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
        let params = [Param::text(a_value), Param::text(b_value)];
        Ok(self.execute(&sql, &params).await? > 0)
    }

    /// Records `event` in the outbox, in this transaction; it is published on the bus
    /// after [`Tx::commit`] and never if the transaction rolls back.
    pub async fn emit<E: Event>(&mut self, event: E) -> Result<(), StoreError> {
        let body = serde_json::to_string(&event).map_err(|e| StoreError::Value {
            column: "body".into(),
            reason: e.to_string(),
        })?;
        let params = [
            Param::text(E::NAME),
            Param::Text(body.into()),
            Param::Text(now().into()),
        ];
        self.execute(
            "INSERT INTO event_outbox (name, body, created_at) VALUES ($1, $2, $3)",
            &params,
        )
        .await?;
        self.publish
            .push(Box::new(move |bus: &Bus| bus.publish(event)));
        Ok(())
    }

    /// Commits, then publishes the emitted events in process.
    pub async fn commit(self, bus: &Bus) -> Result<(), StoreError> {
        self.commit_then(|publish| {
            for publish in publish {
                publish(bus);
            }
        })
        .await
    }

    /// Commits a transaction that emitted no event (the store's own bookkeeping, which has
    /// no bus at hand); an emitted event would be dropped, so it is an error.
    pub(crate) async fn commit_quietly(self) -> Result<(), StoreError> {
        if !self.publish.is_empty() {
            return Err(StoreError::Io(
                "a transaction that emitted events needs the bus to commit".into(),
            ));
        }
        self.commit_then(|_| {}).await
    }

    async fn commit_then(self, publish: impl FnOnce(Vec<Publish>)) -> Result<(), StoreError> {
        let handed_over = matches!(self.tx, Conn::Sqlite(_));
        match self.tx {
            // If COMMIT fails, dropping the connection rolls the transaction back.
            Conn::Sqlite(mut writer) => writer.0.commit()?,
            // Nothing to commit: ending it is releasing the connection.
            Conn::SqliteRead(_) => return Ok(()),
            Conn::Postgres(tx) => tx.commit().await?,
        }
        self.store.count_commit();
        publish(self.publish);
        if handed_over {
            // The SQLite connection now belongs to the next waiting transaction, woken on
            // this worker; until it runs, the one writer idles. Yielding lets it run now,
            // not after whatever this task does next: 10,000 VMs in 8.3 – 10.0 s against
            // 11.1 – 13.0 s without (docs/performance.md).
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}
