//! A transaction: records and the events that report them, committed together.

use crate::journal::Recorded;
use crate::postgres;
use crate::rows::{check_ident, postgres_statement, to_json, Param};
use crate::sqlite::{self, Turn, Writer};
use crate::{Backend, ColumnType, Columns, ConstraintKind, Store, StoreError, Users};
use crate::{Db, Repr};
use flatstack_header::events::CanonicalEvent;
use flatstack_kernel::bus::Bus;
use flatstack_kernel::Fault;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

type Publish = Box<dyn FnOnce(&Bus) + Send>;

/// SQLite: at most so many transactions share one `COMMIT` (see `sqlite::Writer`), so
/// that the first of a group waits for a bounded number of others.
const GROUP_COMMIT: usize = 64;

/// A transaction on the store: from [`Store::begin`] (writes; one at a time, on either
/// backend) or [`Store::read`] (reads only, beside the writer). Rows go in and out as JSON
/// objects; events emitted with [`Tx::emit`] are written with the rows and published once
/// [`Tx::commit`] has committed. Dropped without a commit, it rolls back.
pub struct Tx {
    store: Arc<Store>,
    tx: Conn,
    /// When it began: a committed write's latency is recorded ([`TRANSACTION_SECONDS`]).
    began: std::time::Instant,
    /// Begun by [`Store::read`]: statements that write are refused.
    read_only: bool,
    /// Events to publish in process once the transaction has committed.
    publish: Vec<Publish>,
}

/// Where a transaction runs: SQLite's one transaction connection (statements run inline,
/// see `sqlite.rs`), or a PostgreSQL connection from a pool, with what it sent if the
/// store keeps a journal.
enum Conn {
    Sqlite(SqliteTx),
    SqliteRead(sqlite::Reader),
    Postgres(postgres::Connection, Option<Recorded>),
    /// PostgreSQL, [`Store::read_each`]: a connection of the read pool, each statement
    /// its own transaction (the connection's are read-only). Taken at the first statement.
    PostgresEach(Option<postgres::Connection>),
}

/// PostgreSQL: records, if a journal is kept, a statement as it was sent (`statement`,
/// `params`) and whether it succeeded.
fn journal_postgres(
    recorded: &mut Option<Recorded>,
    succeeded: bool,
    statement: &str,
    params: &[&Param<'_>],
    rows: Option<usize>,
) {
    if let Some(recorded) = recorded {
        recorded.record(succeeded, statement, params, rows);
    }
}

/// PostgreSQL: the rows of `sql` with `params` bound, at most one if `one`, as JSON
/// objects; recorded in `recorded` if a journal is kept. A statement that finds its
/// connection lost before it did anything is sent again on another
/// ([`postgres::Connection::done`]).
async fn postgres_fetch(
    conn: &mut postgres::Connection,
    sql: &str,
    params: &[Param<'_>],
    one: bool,
    recorded: &mut Option<Recorded>,
) -> Result<Vec<Map<String, Value>>, StoreError> {
    let (statement, params) = postgres_statement(sql, params);
    loop {
        let mut query = sqlx::query(&statement);
        for param in &params {
            query = param.bind(query);
        }
        let fetched = if one {
            let row = query.fetch_optional(conn.start()?).await;
            row.map(|row| row.into_iter().collect::<Vec<_>>())
        } else {
            query.fetch_all(conn.start()?).await
        };
        if conn.done(fetched.as_ref().err()).await? {
            continue;
        }
        let limit = if one { 1 } else { usize::MAX };
        journal_postgres(recorded, fetched.is_ok(), &statement, &params, Some(limit));
        return match fetched {
            Ok(rows) => rows.iter().map(to_json).collect(),
            Err(e) => Err(StoreError::from(Repr::from(e))),
        };
    }
}

/// A reference table, for [`Tx::list_with_refs`]: its rows name a row of another table in
/// `key_column` (by uuid) and hold a value for it in `value_column`.
pub struct Refs {
    /// The reference table.
    pub table: &'static str,
    /// Its column naming the row (its uuid).
    pub key_column: &'static str,
    /// Its column holding the value (e.g. the uuid of what the row is attached to).
    pub value_column: &'static str,
}

/// The name [`Tx::list_with_refs`] reads a reference's value under, removed from every
/// row: a name no table of Flatstack's has.
const REF_VALUE: &str = "flatstack_ref_value";

/// How a transaction holds a resource ([`Tx::lock_resource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceLock {
    /// Relies on it staying as it is: a VM being recorded holds its image. Any number of
    /// transactions hold a resource shared at once.
    Shared,
    /// Changes or removes it: the image's delete. Waits for those holding it shared, and
    /// they for it.
    Exclusive,
}

/// The key of `kind`/`uuid` among PostgreSQL's advisory locks: FNV-1a of the two, which
/// any node computes alike. Two resources that share a key only wait for each other.
fn lock_key(kind: &str, uuid: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in kind.bytes().chain([b'/']).chain(uuid.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The histogram of write transactions' durations, from begin to durable commit (the
/// wait for the writer included), by backend.
pub const TRANSACTION_SECONDS: &str = "flatstack_store_transaction_seconds";

/// The turn to write on SQLite's connection, with transaction number `.1` open on it,
/// rolled back (inline, before the turn is released) if it is dropped without commit.
struct SqliteTx(Turn, u64);

impl SqliteTx {
    /// The connection, if this transaction is still in progress on it.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let mut writer = self.0.lock();
        writer.check(self.1)?;
        Ok(writer)
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        self.0.lock().rollback_tx(self.1);
    }
}

/// The type of `column` in a table's `columns`, if known.
fn type_of(columns: &Option<Columns>, column: &str) -> Option<ColumnType> {
    columns.as_ref()?.get(column).copied()
}

/// Appends ` WHERE 1 = 1 AND column = $n ...` for `filters` to `sql`, and the parameters,
/// each bound as its column's type; `None` when a value can never equal its column (no
/// row matches). Lists, pages and counts filter alike.
fn equalities<'v>(
    types: &Option<Columns>,
    filters: &'v Map<String, Value>,
    sql: &mut String,
) -> Result<Option<Vec<Param<'v>>>, StoreError> {
    sql.push_str(" WHERE 1 = 1");
    let mut params = Vec::with_capacity(filters.len());
    for (column, value) in filters {
        if column == flatstack_header::resource::VISIBLE_TO {
            // What one account sees of a shareable kind: its own and the shared.
            let param = Param::for_column("account_uuid", value, type_of(types, "account_uuid"))?;
            params.push(param);
            sql.push_str(&format!(
                " AND (account_uuid = ${} OR shared = 1)",
                params.len()
            ));
            continue;
        }
        check_ident(column)?;
        let param = Param::for_column(column, value, type_of(types, column))?;
        if param.never_equals(type_of(types, column)) {
            return Ok(None);
        }
        params.push(param);
        sql.push_str(&format!(" AND {column} = ${}", params.len()));
    }
    Ok(Some(params))
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
        let began = std::time::Instant::now();
        let tx = match store.writer().await? {
            Some(turn) => {
                let number = turn.lock().begin()?;
                Conn::Sqlite(SqliteTx(turn, number))
            }
            None => {
                let (tx, recorded) = store.postgres_write().await?;
                Conn::Postgres(tx, recorded)
            }
        };
        store.count_begin();
        Ok(Tx {
            store,
            tx,
            began,
            read_only: false,
            publish: Vec::new(),
        })
    }

    pub(crate) async fn read_each(store: Arc<Store>) -> Result<Tx, StoreError> {
        if store.backend() == Backend::Sqlite {
            return Tx::read(store).await;
        }
        store.count_begin();
        Ok(Tx {
            store,
            tx: Conn::PostgresEach(None),
            began: std::time::Instant::now(),
            read_only: true,
            publish: Vec::new(),
        })
    }

    pub(crate) async fn read(store: Arc<Store>) -> Result<Tx, StoreError> {
        let tx = match &store.readers {
            Some(readers) => Conn::SqliteRead(readers.begin()?),
            None => Conn::Postgres(store.postgres_read().await?, None),
        };
        store.count_begin();
        Ok(Tx {
            store,
            tx,
            began: std::time::Instant::now(),
            read_only: true,
            publish: Vec::new(),
        })
    }

    /// Runs a statement that returns no rows; how many rows it changed. A refused
    /// constraint is described ([`StoreError::constraint`]).
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        if self.read_only {
            return Err(StoreError::read_only(sql));
        }
        let result = match &mut self.tx {
            Conn::SqliteRead(_) | Conn::PostgresEach(_) => Err(StoreError::read_only(sql)),
            Conn::Sqlite(writer) => writer.writer().and_then(|mut w| w.execute(sql, params)),
            Conn::Postgres(conn, recorded) => {
                let (statement, params) = postgres_statement(sql, params);
                loop {
                    let mut query = sqlx::query(&statement);
                    for param in &params {
                        query = param.bind(query);
                    }
                    let done = query.execute(conn.start()?).await;
                    if conn.done(done.as_ref().err()).await? {
                        continue;
                    }
                    journal_postgres(recorded, done.is_ok(), &statement, &params, None);
                    break done.map(|done| done.rows_affected()).db();
                }
            }
        };
        result.map_err(|e| e.classify(sql))
    }

    /// The rows of a query, as JSON objects; at most one if `one`.
    async fn fetch(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        one: bool,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let limit = if one { 1 } else { usize::MAX };
        let result = match &mut self.tx {
            Conn::Sqlite(writer) => writer
                .writer()
                .and_then(|mut w| w.fetch(sql, params, limit)),
            Conn::SqliteRead(reader) => reader.fetch(sql, params, limit),
            Conn::PostgresEach(conn) => {
                let conn = match conn {
                    Some(conn) => conn,
                    None => conn.insert(self.store.postgres_read_connection().await?),
                };
                postgres_fetch(conn, sql, params, one, &mut None).await
            }
            Conn::Postgres(conn, recorded) => {
                postgres_fetch(conn, sql, params, one, recorded).await
            }
        };
        // A query may write too (`INSERT ... RETURNING`).
        result.map_err(|e| e.classify(sql))
    }

    /// Holds the resources `resources` (each a kind, as the API names it, and a uuid) until
    /// the transaction ends, `mode` ([`ResourceLock`]): how a check and the write it
    /// decides stay true while other write transactions run, on this node or another,
    /// where no constraint says it (an image's delete checks that no VM uses it, while a
    /// VM being recorded names it). Kinds and uuids, not tables: a plugin locks what it
    /// relies on of another's without touching its rows. On PostgreSQL these are
    /// transaction advisory locks, taken in one round trip and a stable order (so two
    /// transactions never wait for each other); on SQLite, where write transactions run
    /// one at a time, there is nothing to do. A read-only transaction cannot hold one.
    pub async fn lock_resource(
        &mut self,
        resources: &[(&str, &str)],
        mode: ResourceLock,
    ) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::read_only("a resource lock"));
        }
        if self.store.backend() != Backend::Postgres || resources.is_empty() {
            return Ok(());
        }
        let function = match mode {
            ResourceLock::Shared => "pg_advisory_xact_lock_shared",
            ResourceLock::Exclusive => "pg_advisory_xact_lock",
        };
        let mut keys: Vec<i64> = resources
            .iter()
            .map(|(kind, uuid)| lock_key(kind, uuid))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let calls: Vec<String> = (1..=keys.len())
            .map(|n| format!("{function}(${n})"))
            .collect();
        let sql = format!("SELECT {}", calls.join(", "));
        let params: Vec<Param<'_>> = keys.into_iter().map(Param::Int).collect();
        self.execute(&sql, &params).await.map(drop)
    }

    /// Rows of a query the helpers below do not cover (a join, a condition other than
    /// equality), as JSON objects: `$1`, `$2`… take `params` in order. Write it in SQL
    /// that SQLite and PostgreSQL both run, and that yields integers, reals, text or
    /// booleans (cast an aggregate such as `SUM` to `BIGINT`: PostgreSQL's `NUMERIC` is not
    /// mapped). Unlike the helpers, it does not convert `params` to their columns' types:
    /// give numbers for numeric columns.
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

    /// The allocation record of `consumer` in `table` (an owner's table of what each
    /// consumer holds, keyed by `consumer_uuid`), if it holds something there.
    pub async fn allocation(
        &mut self,
        table: &str,
        consumer: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        check_ident(table)?;
        let sql = format!("SELECT * FROM {table} WHERE consumer_uuid = $1");
        let rows = self.fetch(&sql, &[Param::text(consumer)], true).await?;
        Ok(rows.into_iter().next())
    }

    /// Removes the allocation record of `consumer` from `table` and returns it — only if
    /// this transaction is the one that removed it: what a release gives back, exactly
    /// once however often (or however concurrently) it runs.
    pub async fn take_allocation(
        &mut self,
        table: &str,
        consumer: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let Some(held) = self.allocation(table, consumer).await? else {
            return Ok(None);
        };
        let sql = format!("DELETE FROM {table} WHERE consumer_uuid = $1");
        let removed = self.execute(&sql, &[Param::text(consumer)]).await?;
        Ok((removed > 0).then_some(held))
    }

    /// Inserts `row` (column → value) into `table`.
    pub async fn insert(
        &mut self,
        table: &str,
        row: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.insert_row(table, row, "").await.map(drop)
    }

    /// Writes `row`, the allocation record of its `consumer_uuid`, into `table` (see
    /// [`Tx::allocation`]) unless that consumer already has one there: whether it wrote
    /// it. One statement, race-free (`ON CONFLICT (consumer_uuid) DO NOTHING`): written
    /// before the owner takes what it records, a retried reservation takes nothing more.
    pub async fn insert_allocation(
        &mut self,
        table: &str,
        row: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .insert_row(table, row, " ON CONFLICT (consumer_uuid) DO NOTHING")
            .await?;
        Ok(inserted > 0)
    }

    /// Writes `row` into `table` unless a unique constraint already holds a row like it (an
    /// address another consumer took): whether it wrote it. One statement
    /// (`ON CONFLICT DO NOTHING`), so a write transaction is not aborted by the refusal;
    /// on PostgreSQL a row like it not yet committed is waited for.
    pub async fn insert_unless_taken(
        &mut self,
        table: &str,
        row: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .insert_row(table, row, " ON CONFLICT DO NOTHING")
            .await?;
        Ok(inserted > 0)
    }

    /// `INSERT INTO table ... VALUES ...` and `tail`; the rows it wrote.
    async fn insert_row(
        &mut self,
        table: &str,
        row: &Map<String, Value>,
        tail: &str,
    ) -> Result<u64, StoreError> {
        check_ident(table)?;
        let types = self.store.columns_of(table);
        let mut columns = Vec::with_capacity(row.len());
        let mut marks = Vec::with_capacity(row.len());
        let mut params = Vec::with_capacity(row.len());
        for (i, (column, value)) in row.iter().enumerate() {
            check_ident(column)?;
            columns.push(column.as_str());
            marks.push(format!("${}", i + 1));
            params.push(Param::for_column(column, value, type_of(&types, column))?);
        }
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({}){tail}",
            columns.join(", "),
            marks.join(", ")
        );
        match self.execute(&sql, &params).await {
            Ok(written) => Ok(written),
            Err(e) => Err(self.explain(e, table, row).await),
        }
    }

    /// Completes what a refused constraint says with what the statement wrote to `table`:
    /// the key's value (SQLite names only the columns) and, on SQLite, which reference is
    /// missing (it names none). Any other error is returned as it is.
    async fn explain(
        &mut self,
        error: StoreError,
        table: &str,
        row: &Map<String, Value>,
    ) -> StoreError {
        let mut constraint = match error.into_constraint() {
            Ok(constraint) => constraint,
            Err(error) => return error,
        };
        constraint.table.get_or_insert_with(|| table.to_owned());
        let sqlite = matches!(self.tx, Conn::Sqlite(_));
        if sqlite
            && constraint.kind == ConstraintKind::MissingReference
            && constraint.columns.is_empty()
        {
            // Only the statement failed: on SQLite the transaction can still read (on
            // PostgreSQL it is aborted, but PostgreSQL has said which key it was).
            for (column, parent, parent_column) in self.store.references_of(table) {
                let Some(value) = row.get(&column).filter(|v| !v.is_null()) else {
                    continue;
                };
                if let Ok(0) = self.count_where(&parent, &parent_column, value).await {
                    constraint.columns = vec![column];
                    constraint.other_table = Some(parent);
                    break;
                }
            }
        }
        if constraint.value.is_none() && !constraint.columns.is_empty() {
            let text = |value: &Value| match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let values: Option<Vec<String>> = constraint
                .columns
                .iter()
                .map(|column| row.get(column).map(text))
                .collect();
            constraint.value = values.map(|values| match values.as_slice() {
                [one] => one.clone(),
                many => format!("({})", many.join(", ")),
            });
        }
        StoreError::constraint_refused(constraint)
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

    /// Like [`Tx::list`], each row with the values of its references in `refs` (rows of
    /// `refs.table` whose `key_column` is the row's uuid) as the list `field`, sorted: one
    /// statement (a join), where reading them row by row costs one more a row.
    pub async fn list_with_refs(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
        refs: &Refs,
        field: &str,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        for ident in [table, refs.table, refs.key_column, refs.value_column] {
            check_ident(ident)?;
        }
        let types = self.store.columns_of(table);
        let mut inner = format!("SELECT * FROM {table}");
        let Some(params) = equalities(&types, filters, &mut inner)? else {
            return Ok(Vec::new());
        };
        let ref_types = self.store.columns_of(refs.table);
        let sql = format!(
            "SELECT t.*, r.{value} AS {REF_VALUE} FROM ({inner}) t \
             LEFT JOIN {ref_table} r ON r.{key} = t.uuid \
             ORDER BY t.{created}, t.{uuid}, r.{order}",
            value = refs.value_column,
            ref_table = refs.table,
            key = refs.key_column,
            created = self.sort_key(&types, "created_at"),
            uuid = self.sort_key(&types, "uuid"),
            order = self.sort_key(&ref_types, refs.value_column),
        );
        let mut rows: Vec<Map<String, Value>> = Vec::new();
        for mut row in self.fetch(&sql, &params, false).await? {
            // One row a reference (or one with NULL for none), the references sorted.
            let value = row.remove(REF_VALUE).unwrap_or(Value::Null);
            if rows.last().map(|last| last.get("uuid")) != Some(row.get("uuid")) {
                row.insert(field.to_owned(), Value::Array(Vec::new()));
                rows.push(row);
            }
            let values = rows.last_mut().and_then(|last| last.get_mut(field));
            if let (Some(Value::Array(values)), false) = (values, value.is_null()) {
                values.push(value);
            }
        }
        Ok(rows)
    }

    /// Like [`Tx::list`], for tables without a `uuid`: sorted by `created_at`, then `order`.
    pub async fn list_by(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
        order: &[&str],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        check_ident(table)?;
        let types = self.store.columns_of(table);
        let mut sql = format!("SELECT * FROM {table}");
        let Some(params) = equalities(&types, filters, &mut sql)? else {
            return Ok(Vec::new());
        };
        sql.push_str(" ORDER BY ");
        sql.push_str(&self.sort_key(&types, "created_at"));
        for column in order {
            check_ident(column)?;
            sql.push_str(", ");
            sql.push_str(&self.sort_key(&types, column));
        }
        self.fetch(&sql, &params, false).await
    }

    /// One page of `table`'s rows matching every `column = value` of `filters`, in the
    /// order of `sort` (each column with `true` for descending; end it with `uuid`, so that
    /// the order is total), from just after the row whose sort values are `after`, at most
    /// `limit`. Keyset paging: a page does not move when rows are inserted or deleted
    /// before it, so a walk through the pages sees every row that stays once. A `NULL`
    /// sorts as the lowest value.
    pub async fn page(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
        sort: &[(&str, bool)],
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        check_ident(table)?;
        let types = self.store.columns_of(table);
        let mut sql = format!("SELECT * FROM {table}");
        let Some(mut params) = equalities(&types, filters, &mut sql)? else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::with_capacity(sort.len());
        for (column, _) in sort {
            check_ident(column)?;
            keys.push(self.page_key(&types, column));
        }
        // A NULL in the cursor compares as the lowest value, as the keys do.
        let after: Option<Vec<Value>> = after.map(|values| {
            sort.iter()
                .zip(values)
                .map(
                    |((column, _), value)| match (value, type_of(&types, column)) {
                        (Value::Null, Some(ColumnType::Text)) => Value::String(String::new()),
                        (Value::Null, _) => Value::from(i64::MIN + 1),
                        (value, _) => value.clone(),
                    },
                )
                .collect()
        });
        if let Some(after) = &after {
            // (k0 > v0) OR (k0 = v0 AND k1 > v1) OR ..., `<` for a descending column.
            let mut marks = Vec::with_capacity(sort.len());
            for ((column, _), value) in sort.iter().zip(after) {
                params.push(Param::for_column(column, value, type_of(&types, column))?);
                marks.push(format!("${}", params.len()));
            }
            let mut alternatives = Vec::with_capacity(sort.len());
            for i in 0..sort.len().min(marks.len()) {
                let mut terms: Vec<String> = (0..i)
                    .map(|j| format!("{} = {}", keys[j], marks[j]))
                    .collect();
                let op = if sort[i].1 { "<" } else { ">" };
                terms.push(format!("{} {op} {}", keys[i], marks[i]));
                alternatives.push(format!("({})", terms.join(" AND ")));
            }
            if !alternatives.is_empty() {
                sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
            }
        }
        let order: Vec<String> = keys
            .iter()
            .zip(sort)
            .map(|(key, (_, desc))| format!("{key} {}", if *desc { "DESC" } else { "ASC" }))
            .collect();
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        sql.push_str(&format!(" LIMIT {limit}"));
        self.fetch(&sql, &params, false).await
    }

    /// How many rows of `table` match every `column = value` of `filters`.
    pub async fn count(
        &mut self,
        table: &str,
        filters: &Map<String, Value>,
    ) -> Result<u64, StoreError> {
        check_ident(table)?;
        let types = self.store.columns_of(table);
        let mut sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let Some(params) = equalities(&types, filters, &mut sql)? else {
            return Ok(0);
        };
        let rows = self.fetch(&sql, &params, true).await?;
        Ok(rows
            .first()
            .and_then(|row| row.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    /// A column as a page's sort key: `NULL` as the lowest value (so that keyset
    /// comparisons hold), text byte by byte on both backends.
    fn page_key(&self, types: &Option<Columns>, column: &str) -> String {
        match type_of(types, column) {
            Some(ColumnType::Text) => {
                self.sort_key(types, column)
                    .replacen(column, &format!("COALESCE({column}, '')"), 1)
            }
            Some(ColumnType::Integer | ColumnType::Real) => {
                format!("COALESCE({column}, {})", i64::MIN + 1)
            }
            _ => column.to_owned(),
        }
    }

    /// `column` as an `ORDER BY` term that sorts text byte by byte, as SQLite does: on
    /// PostgreSQL text sorts by the database's collation otherwise (`en_US` puts `db`
    /// before `Web` and ignores punctuation), so lists would come in another order.
    fn sort_key(&self, types: &Option<Columns>, column: &str) -> String {
        match (self.store.backend(), type_of(types, column)) {
            (Backend::Postgres, Some(ColumnType::Text)) => format!("{column} COLLATE \"C\""),
            _ => column.to_owned(),
        }
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
        let ty = type_of(&self.store.columns_of(table), column);
        let param = Param::for_column(column, value, ty)?;
        if param.never_equals(ty) {
            return Ok(0);
        }
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1");
        let rows = self.fetch(&sql, &[param], true).await?;
        rows.first()
            .and_then(|row| row.get("n"))
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                StoreError::from(Repr::Value {
                    column: "n".into(),
                    reason: format!("COUNT(*) of {table} gave no integer"),
                })
            })
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

    /// Sets `changes` on the rows where `key_column = key`, for tables keyed by something
    /// else than a uuid, and `updated_at` to now unless `changes` sets it; `false` if none.
    pub async fn update_where(
        &mut self,
        table: &str,
        key_column: &str,
        key: &str,
        changes: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        check_ident(table)?;
        check_ident(key_column)?;
        let types = self.store.columns_of(table);
        let mut sets = Vec::with_capacity(changes.len() + 1);
        let mut params = Vec::with_capacity(changes.len() + 2);
        for (column, value) in changes {
            check_ident(column)?;
            params.push(Param::for_column(column, value, type_of(&types, column))?);
            sets.push(format!("{column} = ${}", params.len()));
        }
        // Once: PostgreSQL refuses a column assigned twice (SQLite keeps the last).
        if !changes.contains_key("updated_at") {
            params.push(Param::Text(now().into()));
            sets.push(format!("updated_at = ${}", params.len()));
        }
        params.push(Param::text(key));
        let sql = format!(
            "UPDATE {table} SET {} WHERE {key_column} = ${}",
            sets.join(", "),
            params.len()
        );
        match self.execute(&sql, &params).await {
            Ok(changed) => Ok(changed > 0),
            Err(e) => Err(self.explain(e, table, changes).await),
        }
    }

    /// Deletes the row with this uuid. Refused with a `conflict` naming the resources
    /// (kinds and uuids, see [`Tx::users_of`]) whose rows still refer to it through foreign
    /// keys; `not_found` if there is no such row. A driver's own record (keyed by the base
    /// uuid) goes with it.
    pub async fn delete(&mut self, table: &str, uuid: &str) -> Result<(), Fault> {
        check_ident(table)?;
        let users = self.users_of(table, uuid).await?;
        if !users.is_empty() {
            let what = match self.store.table_kind(table) {
                Some(own) if own.column == "uuid" => format!("{} {uuid}", own.kind),
                _ => uuid.to_owned(),
            };
            let mut refusal = users.refusal(&format!("cannot delete {what}"));
            refusal.message.push_str("; delete or detach those first");
            return Err(refusal);
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

    /// The resources whose rows refer to row `uuid` of `table` through foreign keys, by
    /// kind: each referring table stands for the kind a plugin named it with
    /// ([`crate::TableKind`]); rows of a table nobody named are counted by table. A
    /// driver's own record (keyed by the base uuid) is not a user.
    pub async fn users_of(&mut self, table: &str, uuid: &str) -> Result<Users, StoreError> {
        check_ident(table)?;
        let mut users = Users::new();
        let mut by_kind: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (child, column) in self.store.referrers_of(table) {
            if column == "uuid" {
                continue;
            }
            check_ident(&child)?;
            check_ident(&column)?;
            let named = self
                .store
                .table_kind(&child)
                .and_then(|named| named.users_through(&column));
            match named {
                Some((kind, owner)) => {
                    check_ident(owner)?;
                    by_kind.entry(kind).or_default().push(format!(
                        "SELECT {owner} AS u FROM {child} WHERE {column} = $1 AND {owner} IS NOT NULL"
                    ));
                }
                None => {
                    let n = self
                        .count_where(&child, &column, &Value::String(uuid.to_owned()))
                        .await?;
                    if n > 0 {
                        users.add_rows(&child, n.unsigned_abs());
                    }
                }
            }
        }
        // One query per kind, so that a resource referring through several tables (a VM
        // through its NICs and its leases) counts once.
        let id = [Value::String(uuid.to_owned())];
        for (kind, selects) in by_kind {
            users
                .query(self, kind, &selects.join(" UNION "), &id)
                .await?;
        }
        Ok(users)
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
        let order = self.sort_key(&self.store.columns_of(table), value_column);
        let sql = format!(
            "SELECT {value_column} AS v FROM {table} WHERE {key_column} = $1 ORDER BY {order}"
        );
        let rows = self.fetch(&sql, &[Param::text(key)], false).await?;
        rows.into_iter()
            .map(|mut row| match row.remove("v") {
                Some(Value::String(s)) => Ok(s),
                other => Err(StoreError::from(Repr::Value {
                    column: value_column.to_owned(),
                    reason: format!("expected text, found {}", other.unwrap_or(Value::Null)),
                })),
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

    /// Records `event` in the event log, in this transaction; it is published on the bus
    /// after [`Tx::commit`] and never if the transaction rolls back.
    pub async fn emit<E: CanonicalEvent>(&mut self, event: E) -> Result<(), StoreError> {
        let body = serde_json::to_string(&event).map_err(|e| {
            StoreError::from(Repr::Value {
                column: "body".into(),
                reason: e.to_string(),
            })
        })?;
        let params = [
            Param::Text(uuid::Uuid::new_v4().to_string().into()),
            Param::Text(event.event_type().into()),
            Param::text(event.kind()),
            Param::text(event.subject()),
            Param::text(E::NAME),
            Param::Text(body.into()),
            Param::Text(now().into()),
        ];
        let sql = crate::events::insert_event(self.store.backend());
        self.execute(sql, &params).await?;
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
            return Err(StoreError::io(
                "a transaction that emitted events needs the bus to commit",
            ));
        }
        self.commit_then(|_| {}).await
    }

    async fn commit_then(self, publish: impl FnOnce(Vec<Publish>)) -> Result<(), StoreError> {
        let handed_over = matches!(self.tx, Conn::Sqlite(_));
        match self.tx {
            // If COMMIT fails, dropping the connection rolls the transaction back.
            // Counted while the writer is still held: a journal taken meanwhile (which
            // waits for the writer) agrees with the count.
            // While others wait to write, the commit joins the group that the last of
            // them commits (see `sqlite::Writer`), and waits for it.
            Conn::Sqlite(writer) => {
                let (members, group) = {
                    let mut w = writer.writer()?;
                    (w.join_group()?, w.group())
                };
                match group {
                    Some((number, settled))
                        if members < GROUP_COMMIT && self.store.writers_waiting() > 0 =>
                    {
                        let slot = writer.0.slot.clone();
                        drop(writer);
                        self.store.settle_group(slot, number, settled).await?;
                    }
                    _ => {
                        let committed = writer.0.lock().flush()?;
                        self.store.count_commits(committed);
                    }
                }
            }
            // Nothing to commit: ending it is releasing the connection.
            Conn::SqliteRead(_) | Conn::PostgresEach(_) => return Ok(()),
            Conn::Postgres(mut conn, _) if self.read_only => {
                conn.end_read().await;
                return Ok(());
            }
            Conn::Postgres(mut conn, recorded) => {
                conn.commit().await?;
                self.store.postgres_committed(recorded);
            }
        }
        if !self.read_only {
            let backend = match self.store.backend() {
                crate::Backend::Sqlite => "sqlite",
                crate::Backend::Postgres => "postgres",
            };
            metrics::histogram!(TRANSACTION_SECONDS, "backend" => backend)
                .record(self.began.elapsed().as_secs_f64());
        }
        if !self.publish.is_empty() {
            self.store.count_events_committed();
        }
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
