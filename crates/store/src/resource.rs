//! The common life cycle of a resource kind stored in one table: create, get, list,
//! update, delete — with the life-cycle extension points and canonical events. A plugin
//! declares a [`ResourceTable`] and calls [`ResourceTable::serve`]; only its create
//! handler (validation, driver records) is its own.

use crate::attach::Attachments;
use crate::{Store, Tx};
use flatstack_header::points::{
    Create, CreateCheck, Created, DeleteCheck, Deleted, StateChanged, UpdateCheck,
};
use flatstack_header::{
    DeleteResource, FindRecords, GetRecord, GetResource, Inventory, InventoryList, ListResources,
    PageQuery, Record, ResourceChange, ResourceCreated, ResourceDeleted, ResourceStateChanged,
    ResourceUpdated, StateChange, UpdateResource,
};
use flatstack_kernel::bus::ServiceBuilder;
use flatstack_kernel::{Fault, Kernel, MessageContext};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// A resource kind and the table its base records live in, usually a `static` of the
/// plugin that owns the kind, made with [`ResourceTable::new`] and its setters.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResourceTable {
    /// The API path of the kind, e.g. `zones`.
    pub kind: &'static str,
    /// Its table; it has `uuid`, `name`, `description`, `created_at`, `updated_at`.
    pub table: &'static str,
    /// Columns a list may filter on.
    pub filters: &'static [&'static str],
    /// For typed kinds: the driver's own table for a base row, whose columns join the
    /// inventory (joined inheritance: the driver's record is keyed by the base uuid).
    pub joined: Option<fn(&Kernel, &Inventory) -> Option<&'static str>>,
    /// Runs inside the delete's transaction, before the rows go: for a kind that owns rows
    /// of other tables (an image's placements) or gives capacity back.
    pub before_delete: Option<BeforeDelete>,
    /// Adds what the inventory shows beyond the rows (e.g. an image's placements).
    pub decorate: Option<Decorate>,
    /// The resources each is attached to, shown as a list field (e.g. a primary storage's
    /// `attached_cluster_uuids`); see [`ResourceTable::attached`].
    pub attached: Option<(&'static Attachments, &'static str)>,
    /// Its rows have `account_uuid` and `shared`: a list may ask for what one account sees
    /// ([`flatstack_header::resource::VISIBLE_TO`]).
    pub shareable: bool,
}

impl ResourceTable {
    /// Kind `kind` (its API path, e.g. `racks`) stored in `table`, with no list filters,
    /// no joined driver table, nothing to do before a delete and nothing added to the
    /// inventory; the setters below add those:
    ///
    /// ```
    /// # use flatstack_store::resource::ResourceTable;
    /// static RACKS: ResourceTable = ResourceTable::new("racks", "racks").filters(&["name"]);
    /// ```
    pub const fn new(kind: &'static str, table: &'static str) -> Self {
        ResourceTable {
            kind,
            table,
            filters: &[],
            joined: None,
            before_delete: None,
            decorate: None,
            attached: None,
            shareable: false,
        }
    }

    /// Its rows have `account_uuid` and `shared` (an `Access::Shared` kind): a list may
    /// filter on what one account sees, its own and the shared ones; `shared`, stored as
    /// 0 or 1, reads as a boolean in its inventories and records.
    pub const fn shareable(mut self) -> Self {
        self.shareable = true;
        self
    }

    /// Sets the columns a list may filter on (`GET /v1/{kind}?column=value`).
    pub const fn filters(mut self, filters: &'static [&'static str]) -> Self {
        self.filters = filters;
        self
    }

    /// Joins the driver's own table, which `joined` names for a base row (`None` if the
    /// row's type has none), to the inventory.
    pub const fn joined(mut self, joined: fn(&Kernel, &Inventory) -> Option<&'static str>) -> Self {
        self.joined = Some(joined);
        self
    }

    /// Runs `before_delete` inside a delete's transaction, before the rows go.
    pub const fn before_delete(mut self, before_delete: BeforeDelete) -> Self {
        self.before_delete = Some(before_delete);
        self
    }

    /// Has `decorate` add to every inventory of the kind what its rows do not hold.
    pub const fn decorate(mut self, decorate: Decorate) -> Self {
        self.decorate = Some(decorate);
        self
    }

    /// Shows the uuids of what each resource is attached to through `attachments` (its
    /// references, in the target's order) as the list `field` of its inventories and
    /// records. Records read by uuid or found by other plugins (`serve_record`) get them
    /// in the same statement as the row (a join), where a [`ResourceTable::decorate`]
    /// costs one more.
    pub const fn attached(
        mut self,
        attachments: &'static Attachments,
        field: &'static str,
    ) -> Self {
        self.attached = Some((attachments, field));
        self
    }

    /// Names this kind's table, for refusals that name resources rather than tables:
    /// `b.register(TABLE.table_kind())` in the plugin's `build`.
    pub const fn table_kind(&self) -> crate::TableKind {
        crate::TableKind::own(self.table, self.kind)
    }
}

/// See [`ResourceTable::decorate`].
pub type Decorate = for<'t> fn(&'t mut Tx, &'t mut Inventory) -> BoxFuture<'t, Result<(), Fault>>;

/// A shareable kind's `shared` column, stored as 0 or 1 (the same on both backends), as
/// its inventories and records say it: `true` or `false`.
fn shared_as_bool(inventory: &mut Inventory) {
    let shared = inventory
        .get("shared")
        .and_then(Value::as_i64)
        .is_some_and(|n| n != 0);
    inventory.insert("shared".into(), Value::Bool(shared));
}

/// See [`ResourceTable::before_delete`].
pub type BeforeDelete = for<'t> fn(&'t mut Tx, &'t Inventory) -> BoxFuture<'t, Result<(), Fault>>;

/// The most resources one page of a list holds (and how many a list without `limit`
/// answers).
pub const MAX_PAGE: usize = 1000;

/// A page's end as an opaque cursor: its last row's values of the `order` columns, as hex
/// of their JSON. (Lists here and the audit trail, which pages its own table.)
pub fn encode_cursor(last: &Inventory, order: &[(&str, bool)]) -> String {
    let values: Vec<&Value> = order
        .iter()
        .map(|(column, _)| last.get(*column).unwrap_or(&Value::Null))
        .collect();
    serde_json::to_string(&values)
        .unwrap_or_default()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The values an [`encode_cursor`] cursor of `columns` columns holds; a `400` naming
/// `cursor` for anything else.
pub fn decode_cursor(text: &str, columns: usize) -> Result<Vec<Value>, Fault> {
    let bad = || Fault::invalid("cursor", "not a cursor this list gave (for this sort)");
    if !text.len().is_multiple_of(2) || text.len() > 8192 {
        return Err(bad());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let values: Vec<Value> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if values.len() != columns || values.iter().any(|v| v.is_array() || v.is_object()) {
        return Err(bad());
    }
    Ok(values)
}

/// How one table's rows are listed a page at a time, by any list: a kind's, a child
/// collection's ([`PageQuery`] in its list message), a plugin's own table.
#[derive(Debug, Clone, Copy)]
pub struct Pager<'a> {
    /// What the rows are, for refusals: `l2-networks`, `tunnels`.
    pub what: &'a str,
    /// The columns a `sort` may name.
    pub sortable: &'a [&'a str],
    /// The order when the query names none (a `sort` text).
    pub default_sort: &'a str,
    /// Columns that make the order total, appended to every order that lacks them: a
    /// cursor then names one row, and no row is skipped or seen twice across pages.
    pub key: &'a [&'a str],
}

impl Pager<'_> {
    /// The page of `table`'s rows matching `filters` (column = value) that `query` asks
    /// for, with the cursor of the next and the count of every match. A `limit` outside 1
    /// to [`MAX_PAGE`], a `sort` naming another column or one twice, or a cursor this
    /// order did not give is a `400` naming the parameter.
    pub async fn page(
        &self,
        tx: &mut Tx,
        table: &str,
        filters: &Map<String, Value>,
        query: &PageQuery,
    ) -> Result<InventoryList, Fault> {
        let limit = match query.limit {
            None => MAX_PAGE,
            Some(l) if (1..=MAX_PAGE as u64).contains(&l) => l as usize,
            Some(_) => return Err(Fault::invalid("limit", format!("limit is 1 to {MAX_PAGE}"))),
        };
        let sort = self.order(query.sort.as_deref().unwrap_or(self.default_sort))?;
        let order: Vec<(&str, bool)> = sort.iter().map(|(c, d)| (c.as_str(), *d)).collect();
        let after = match &query.cursor {
            Some(cursor) => Some(decode_cursor(cursor, order.len())?),
            None => None,
        };
        let total = tx.count(table, filters).await?;
        let mut inventories = tx
            .page(table, filters, &order, after.as_deref(), limit + 1)
            .await?;
        let next = if inventories.len() > limit {
            inventories.truncate(limit);
            inventories.last().map(|last| encode_cursor(last, &order))
        } else {
            None
        };
        Ok(InventoryList {
            total,
            inventories,
            next,
        })
    }

    /// The order `sort` asks for, the key columns last.
    fn order(&self, sort: &str) -> Result<Vec<(String, bool)>, Fault> {
        let mut order: Vec<(String, bool)> = Vec::new();
        for term in sort.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (column, desc) = match term.strip_prefix('-') {
                Some(column) => (column, true),
                None => (term, false),
            };
            if !self.sortable.contains(&column) || order.iter().any(|(c, _)| c == column) {
                return Err(Fault::invalid(
                    "sort",
                    format!(
                        "{} sort by {}, each once (`-` for descending); not `{column}`",
                        self.what,
                        self.sortable.join(", ")
                    ),
                ));
            }
            order.push((column.to_owned(), desc));
        }
        for key in self.key {
            if !order.iter().any(|(c, _)| c == key) {
                order.push(((*key).to_owned(), false));
            }
        }
        Ok(order)
    }
}

/// The store the distribution provided.
pub fn store(kernel: &Kernel) -> Result<Arc<Store>, Fault> {
    kernel
        .get::<Store>()
        .ok_or_else(|| Fault::unavailable("no store is configured"))
}

/// A new resource uuid: 32 lowercase hex characters.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The uuid a resource derives from another for one `purpose` (a VM's root volume): the
/// same every time, so what was taken for it can be found from the other's uuid alone,
/// even if the node stopped before the derived resource's row was written.
pub fn derived_uuid(base: &str, purpose: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{base}/{purpose}").as_bytes(),
    )
    .simple()
    .to_string()
}

/// The text in `column` of an inventory or row; empty if it is absent or not text.
pub fn text<'a>(inventory: &'a Inventory, column: &str) -> &'a str {
    inventory
        .get(column)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A row from a `json!({...})` object literal.
pub fn row(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Refuses an empty or over-long `name`.
pub fn check_name(name: &str) -> Result<(), Fault> {
    if name.trim().is_empty() {
        return Err(Fault::invalid("name", "name must not be empty"));
    }
    if name.len() > 255 {
        return Err(Fault::invalid("name", "name must be at most 255 bytes"));
    }
    Ok(())
}

impl ResourceTable {
    /// Adds the handlers of the common messages (get, list, update, delete) to a service.
    pub fn serve<S: Send + Sync + 'static>(&'static self, service: &mut ServiceBuilder<'_, S>) {
        self.serve_reads(service);
        service
            .handle::<DeleteResource, _, _>(move |_, _, cx| async move { self.delete(&cx).await });
    }

    /// Serves the kind's published record `R` ([`GetRecord`], [`FindRecords`]): typed views
    /// of its base rows (with what `decorate` adds), so that other plugins read them from
    /// the owner and never from its table. Each query field is a column of the table.
    pub fn serve_record<R: Record, S: Send + Sync + 'static>(
        &'static self,
        service: &mut ServiceBuilder<'_, S>,
    ) {
        service
            .handle::<GetRecord<R>, _, _>(move |_, msg, cx| async move {
                // Read on every VM create, several times: its statements (the row, and
                // what a decoration adds, which need not see one snapshot with it) run
                // without a transaction around them.
                let mut tx = store(&cx.kernel)?.read_each().await?;
                let row = match self.attached_refs::<R>() {
                    Some((refs, field)) => {
                        let mut by_uuid = Map::new();
                        by_uuid.insert("uuid".into(), json!(msg.uuid));
                        let rows = tx.list_with_refs(self.table, &by_uuid, &refs, field);
                        rows.await?.into_iter().next()
                    }
                    None => tx.get(self.table, &msg.uuid).await?,
                };
                match row {
                    Some(row) => self.record(&mut tx, row).await.map(Some),
                    None => Ok(None),
                }
            })
            .handle::<FindRecords<R>, _, _>(move |_, msg, cx| async move {
                let filters = match serde_json::to_value(&msg.query) {
                    Ok(Value::Object(query)) => query
                        .into_iter()
                        .filter(|(_, value)| !value.is_null())
                        .collect(),
                    _ => Map::new(),
                };
                let mut tx = store(&cx.kernel)?.read_each().await?;
                let rows = match self.attached_refs::<R>() {
                    Some((refs, field)) => {
                        tx.list_with_refs(self.table, &filters, &refs, field)
                            .await?
                    }
                    None => tx.list(self.table, &filters).await?,
                };
                let mut records = Vec::with_capacity(rows.len());
                for row in rows {
                    records.push(self.record(&mut tx, row).await?);
                }
                Ok(records)
            });
    }

    /// A row as the kind's record `R` (e.g. one an `UPDATE ... RETURNING *` gave back);
    /// a row that does not read as one is the owner's bug, reported as such (never a
    /// default value).
    pub async fn record<R: Record>(&self, tx: &mut Tx, mut row: Inventory) -> Result<R, Fault> {
        if self.shareable {
            shared_as_bool(&mut row);
        }
        if R::DECORATED {
            self.add_attached(tx, &mut row).await?;
            if let Some(decorate) = self.decorate {
                decorate(tx, &mut row).await?;
            }
        }
        serde_json::from_value(Value::Object(row)).map_err(|e| {
            Fault::internal(format!(
                "a row of {} does not read as its published record: {e}",
                self.table
            ))
        })
    }

    /// One resource as the kind's record `R`, in `tx` (e.g. as a write left it).
    pub async fn read_record<R: Record>(&self, tx: &mut Tx, uuid: &str) -> Result<R, Fault> {
        let row = tx
            .get(self.table, uuid)
            .await?
            .ok_or_else(|| self.not_found(uuid))?;
        self.record(tx, row).await
    }

    /// Adds get, list and update only: for a kind whose delete is a flow of its own.
    pub fn serve_reads<S: Send + Sync + 'static>(
        &'static self,
        service: &mut ServiceBuilder<'_, S>,
    ) {
        service
            .handle::<GetResource, _, _>(move |_, _, cx| async move { self.get(&cx).await })
            .handle::<ListResources, _, _>(move |_, msg, cx| async move {
                self.list(&cx.kernel, msg.filters).await
            })
            .handle::<UpdateResource, _, _>(move |_, msg, cx| async move {
                self.update(&cx, msg).await
            });
    }

    /// Creates a resource: the create veto, the create do/undo point, then one
    /// transaction with the base row (with uuid and timestamps), `extra` — the driver's or
    /// kind's own rows — and the canonical event; then the created observers.
    pub async fn create<F>(
        &self,
        kernel: &Kernel,
        mut row: Map<String, Value>,
        extra: F,
    ) -> Result<Inventory, Fault>
    where
        F: for<'t> FnOnce(&'t mut Tx, &'t str) -> BoxFuture<'t, Result<(), Fault>>,
    {
        // A kind that must name the resource before writing it (to create its bytes on a
        // device first, say) passes its uuid in the row.
        let uuid = match row.get("uuid").and_then(Value::as_str) {
            Some(uuid) => uuid.to_owned(),
            None => new_uuid(),
        };
        let at = crate::now();
        row.insert("uuid".into(), Value::String(uuid.clone()));
        row.insert("created_at".into(), Value::String(at.clone()));
        row.insert("updated_at".into(), Value::String(at));
        let mut change = ResourceChange {
            kind: self.kind,
            uuid: uuid.clone(),
            inventory: row.clone(),
        };
        kernel.extensions().veto::<CreateCheck>(&change)?;
        // Plugins' work runs before the transaction opens, so that it may use the store
        // itself; it is undone if the write fails.
        kernel.extensions().run::<Create>(&mut change).await?;
        match self.write(kernel, row, extra, &uuid).await {
            Ok(inventory) => change.inventory = inventory,
            Err(fault) => {
                // The write's fault is the answer, with any undo that failed (each is
                // logged by the dispatcher too).
                return Err(
                    match kernel.extensions().undo::<Create>(&mut change).await {
                        Ok(()) => fault,
                        Err(undo) => fault.with_undo_failure(None, undo),
                    },
                );
            }
        }
        kernel.extensions().observe::<Created>(&change).await;
        Ok(change.inventory)
    }

    /// The create's one transaction: base row, `extra` rows, the canonical event.
    async fn write<F>(
        &self,
        kernel: &Kernel,
        row: Map<String, Value>,
        extra: F,
        uuid: &str,
    ) -> Result<Inventory, Fault>
    where
        F: for<'t> FnOnce(&'t mut Tx, &'t str) -> BoxFuture<'t, Result<(), Fault>>,
    {
        let mut tx = store(kernel)?.begin().await?;
        tx.insert(self.table, &row).await?;
        extra(&mut tx, uuid).await?;
        let inventory = self.read(kernel, &mut tx, uuid).await?;
        tx.emit(ResourceCreated {
            kind: self.kind.to_owned(),
            uuid: uuid.to_owned(),
            inventory: inventory.clone(),
        })
        .await?;
        tx.commit(kernel.bus()).await?;
        Ok(inventory)
    }

    /// Creates a resource that is one row (see [`ResourceTable::create`]).
    pub async fn create_row(
        &self,
        kernel: &Kernel,
        row: Map<String, Value>,
    ) -> Result<Inventory, Fault> {
        self.create(kernel, row, |_, _| Box::pin(async { Ok(()) }))
            .await
    }

    /// Creates a resource of a typed kind: the base row, and the driver's own record
    /// (`own`, keyed by the new uuid) in `driver_table` in the same transaction.
    pub async fn create_typed(
        &self,
        kernel: &Kernel,
        row: Map<String, Value>,
        driver_table: Option<&'static str>,
        mut own: Inventory,
    ) -> Result<Inventory, Fault> {
        self.create(kernel, row, move |tx, uuid| {
            Box::pin(async move {
                if let Some(table) = driver_table {
                    own.insert("uuid".into(), Value::String(uuid.to_owned()));
                    tx.insert(table, &own).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn get(&self, cx: &MessageContext) -> Result<Inventory, Fault> {
        let uuid = cx.resource_id()?;
        let mut tx = store(&cx.kernel)?.read().await?;
        self.read(&cx.kernel, &mut tx, uuid).await
    }

    /// One resource's inventory: its base row joined with its driver's record.
    pub async fn read(&self, kernel: &Kernel, tx: &mut Tx, uuid: &str) -> Result<Inventory, Fault> {
        let mut inventory = tx
            .get(self.table, uuid)
            .await?
            .ok_or_else(|| self.not_found(uuid))?;
        self.join(kernel, tx, &mut inventory).await?;
        Ok(inventory)
    }

    /// Where records `R` read what they are attached to with their rows, and the field
    /// it goes in: if the kind has attachments ([`ResourceTable::attached`]) and `R` shows
    /// them.
    fn attached_refs<R: Record>(&self) -> Option<(crate::Refs, &'static str)> {
        let (attachments, field) = self.attached.filter(|_| R::DECORATED)?;
        let refs = crate::Refs {
            table: attachments.table,
            key_column: attachments.owner_column,
            value_column: attachments.target_column,
        };
        Some((refs, field))
    }

    /// Adds what the resource is attached to ([`ResourceTable::attached`]) to `row`,
    /// unless it was read with it.
    async fn add_attached(&self, tx: &mut Tx, row: &mut Inventory) -> Result<(), Fault> {
        let Some((attachments, field)) = self.attached else {
            return Ok(());
        };
        if row.contains_key(field) {
            return Ok(());
        }
        let uuid = text(row, "uuid").to_owned();
        let targets = attachments.targets(tx, &uuid).await?;
        row.insert(field.into(), json!(targets));
        Ok(())
    }

    /// One resource's inventory from its base row as a write gave it back
    /// (`UPDATE ... RETURNING *`), joined as [`ResourceTable::read`] joins it.
    pub async fn inventory_of(
        &self,
        kernel: &Kernel,
        tx: &mut Tx,
        mut row: Inventory,
    ) -> Result<Inventory, Fault> {
        self.join(kernel, tx, &mut row).await?;
        Ok(row)
    }

    async fn join(
        &self,
        kernel: &Kernel,
        tx: &mut Tx,
        inventory: &mut Inventory,
    ) -> Result<(), Fault> {
        if self.shareable {
            shared_as_bool(inventory);
        }
        self.add_attached(tx, inventory).await?;
        if let Some(decorate) = self.decorate {
            decorate(tx, inventory).await?;
        }
        let Some(table) = self.joined.and_then(|joined| joined(kernel, inventory)) else {
            return Ok(());
        };
        let uuid = text(inventory, "uuid").to_owned();
        if let Some(own) = tx.get(table, &uuid).await? {
            for (column, value) in own {
                inventory.entry(column).or_insert(value);
            }
        }
        Ok(())
    }

    /// A page of the kind's resources: `filters` (columns of `filters`), and the paging
    /// parameters `limit`, `sort` and `cursor` ([`PageQuery`]): sorted by `name`,
    /// `created_at` (the default), `updated_at`, `uuid` or a filter's column; `uuid` ends
    /// every order. `total` counts every match.
    async fn list(
        &self,
        kernel: &Kernel,
        mut filters: Map<String, Value>,
    ) -> Result<InventoryList, Fault> {
        let query = PageQuery {
            limit: match filters.remove("limit") {
                None => None,
                Some(limit) => Some(
                    limit
                        .as_u64()
                        .or_else(|| limit.as_str().and_then(|l| l.parse().ok()))
                        .ok_or_else(|| {
                            Fault::invalid("limit", format!("limit is 1 to {MAX_PAGE}"))
                        })?,
                ),
            },
            cursor: filters.remove("cursor").map(|c| match c {
                Value::String(c) => c,
                other => other.to_string(),
            }),
            sort: filters.remove("sort").map(|s| match s {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        };
        let allowed = |k: &str| {
            self.filters.contains(&k)
                || (self.shareable && k == flatstack_header::resource::VISIBLE_TO)
        };
        if let Some(bad) = filters.keys().find(|k| !allowed(k)) {
            return Err(Fault::invalid(
                bad,
                format!(
                    "{} cannot be filtered by `{bad}` (filters: {})",
                    self.kind,
                    self.filters.join(", ")
                ),
            ));
        }
        let mut sortable = vec!["name", "created_at", "updated_at", "uuid"];
        sortable.extend(self.filters.iter().copied());
        let pager = Pager {
            what: self.kind,
            sortable: &sortable,
            default_sort: "created_at",
            key: &["uuid"],
        };
        let mut tx = store(kernel)?.read().await?;
        let mut list = pager.page(&mut tx, self.table, &filters, &query).await?;
        for inventory in &mut list.inventories {
            self.join(kernel, &mut tx, inventory).await?;
        }
        Ok(list)
    }

    async fn update(&self, cx: &MessageContext, msg: UpdateResource) -> Result<Inventory, Fault> {
        let uuid = cx.resource_id()?;
        let mut changes = Map::new();
        if let Some(name) = msg.name {
            check_name(&name)?;
            changes.insert("name".into(), Value::String(name));
        }
        if let Some(description) = msg.description {
            changes.insert("description".into(), Value::String(description));
        }
        let kernel = &cx.kernel;
        let mut tx = store(kernel)?.begin().await?;
        let mut inventory = tx
            .get(self.table, uuid)
            .await?
            .ok_or_else(|| self.not_found(uuid))?;
        if changes.is_empty() {
            return Ok(inventory);
        }
        inventory.extend(changes.clone());
        let change = ResourceChange {
            kind: self.kind,
            uuid: uuid.to_owned(),
            inventory,
        };
        kernel.extensions().veto::<UpdateCheck>(&change)?;
        self.apply(kernel, tx, uuid, &changes).await
    }

    async fn delete(&self, cx: &MessageContext) -> Result<(), Fault> {
        self.remove(&cx.kernel, cx.resource_id()?).await
    }

    /// Deletes one resource: the delete veto (awaited: plugins whose resources use it may
    /// read the store to refuse), the rows (refused while referred to, naming the users),
    /// the canonical event, commit, then the deleted observers.
    pub async fn remove(&self, kernel: &Kernel, uuid: &str) -> Result<(), Fault> {
        let mut tx = store(kernel)?.begin().await?;
        // Held until the delete commits: a transaction that relies on the resource (a VM
        // recorded with its image) holds it shared, so it commits before the vetoes read,
        // and they see its user, or waits and then finds the resource gone.
        tx.lock_resource(&[(self.kind, uuid)], crate::ResourceLock::Exclusive)
            .await?;
        let inventory = tx
            .get(self.table, uuid)
            .await?
            .ok_or_else(|| self.not_found(uuid))?;
        let change = ResourceChange {
            kind: self.kind,
            uuid: uuid.to_owned(),
            inventory,
        };
        // Inside the transaction, which holds SQLite's one writer (PostgreSQL: the lock
        // above): an asynchronous veto's read (through `Store::read`) sees every user.
        kernel
            .extensions()
            .veto_async::<DeleteCheck>(&change)
            .await?;
        if let Some(before_delete) = self.before_delete {
            before_delete(&mut tx, &change.inventory).await?;
        }
        tx.delete(self.table, uuid).await?;
        tx.emit(ResourceDeleted {
            kind: self.kind.to_owned(),
            uuid: uuid.to_owned(),
        })
        .await?;
        tx.commit(kernel.bus()).await?;
        kernel.extensions().observe::<Deleted>(&change).await;
        Ok(())
    }

    /// Moves one resource's `field` (a state or status column) to `to`: the update, its
    /// `resource.updated` and `resource.state-changed` events in one transaction, then the
    /// state-changed observers. Nothing happens if it is already `to`.
    pub async fn set_state(
        &self,
        kernel: &Kernel,
        uuid: &str,
        field: &str,
        to: &str,
    ) -> Result<Inventory, Fault> {
        let mut tx = store(kernel)?.begin().await?;
        let before = self.read(kernel, &mut tx, uuid).await?;
        let from = before
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if from == to {
            return Ok(before);
        }
        let change = StateChange {
            kind: self.kind.to_owned(),
            uuid: uuid.to_owned(),
            field: field.to_owned(),
            from,
            to: to.to_owned(),
        };
        tx.emit(ResourceStateChanged(change.clone())).await?;
        let mut changes = Map::new();
        changes.insert(field.to_owned(), Value::String(to.to_owned()));
        let inventory = self.apply(kernel, tx, uuid, &changes).await?;
        kernel.extensions().observe::<StateChanged>(&change).await;
        Ok(inventory)
    }

    /// Writes `changes`, then reads the new inventory (joined and decorated), records the
    /// canonical event and commits.
    async fn apply(
        &self,
        kernel: &Kernel,
        mut tx: Tx,
        uuid: &str,
        changes: &Map<String, Value>,
    ) -> Result<Inventory, Fault> {
        if !tx.update(self.table, uuid, changes).await? {
            return Err(self.not_found(uuid));
        }
        let inventory = self.read(kernel, &mut tx, uuid).await?;
        tx.emit(ResourceUpdated {
            kind: self.kind.to_owned(),
            uuid: uuid.to_owned(),
            inventory: inventory.clone(),
        })
        .await?;
        tx.commit(kernel.bus()).await?;
        Ok(inventory)
    }

    /// `error`, from writing a row that refers to this kind's `uuid` (an allocation record
    /// naming its host): the resource's `404` if there is no such resource, else as is.
    pub fn missing_as_not_found(&self, uuid: &str, error: crate::StoreError) -> Fault {
        match error.constraint().map(|c| c.kind) {
            Some(crate::ConstraintKind::MissingReference) => self.not_found(uuid),
            _ => Fault::from(error),
        }
    }

    /// The kind's `404` for `uuid`.
    pub fn not_found(&self, uuid: &str) -> Fault {
        Fault::not_found(format!("no {} {uuid}", self.kind)).with_detail("uuid", uuid)
    }
}
