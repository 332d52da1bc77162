//! Many-to-many attachments kept in a reference table of the attached kind's plugin:
//! primary storage to clusters, L2 networks to clusters. Attach and detach run the
//! `resource.attach`/`resource.detach` extension points and write the canonical events in
//! the same transaction as the reference row.

use crate::resource::{row, store, text, Pager};
use crate::Tx;
use flatstack_header::points::{AttachCheck, Attached, DetachCheck, Detached};
use flatstack_header::{
    Attachment, Inventory, InventoryList, PageQuery, ResourceAttached, ResourceDetached,
};
use flatstack_kernel::{Fault, Kernel};
use serde_json::json;

/// How one kind attaches to another, usually a `static` of the attached kind's plugin:
///
/// ```
/// # use flatstack_store::attach::Attachments;
/// static CLUSTER_ATTACHMENTS: Attachments = Attachments::new(
///     "primary-storage", "primary_storage_cluster_refs", "primary_storage_uuid",
///     "clusters", "clusters", "cluster_uuid",
/// )
/// .same("zone_uuid");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Attachments {
    /// The attached kind's API path, e.g. `primary-storage`.
    pub kind: &'static str,
    /// The reference table: (`owner_column`, `target_column`, `created_at`).
    pub table: &'static str,
    /// The reference table's column holding the attached resource's uuid, e.g.
    /// `primary_storage_uuid`.
    pub owner_column: &'static str,
    /// The API path of the kind attached to, e.g. `clusters`.
    pub target_kind: &'static str,
    /// That kind's table, e.g. `clusters`.
    pub target_table: &'static str,
    /// The reference table's column holding the target's uuid, e.g. `cluster_uuid`; also
    /// the attach and detach requests' field, named in their `400`s.
    pub target_column: &'static str,
    /// A column both must agree on (e.g. `zone_uuid`): attaching across it is refused.
    pub same: Option<&'static str>,
}

impl Attachments {
    /// Resources of `kind` attach to those of `target_kind` (rows of `target_table`), each
    /// attachment a row of `table` naming the first in `owner_column` and the second in
    /// `target_column`.
    pub const fn new(
        kind: &'static str,
        table: &'static str,
        owner_column: &'static str,
        target_kind: &'static str,
        target_table: &'static str,
        target_column: &'static str,
    ) -> Self {
        Attachments {
            kind,
            table,
            owner_column,
            target_kind,
            target_table,
            target_column,
            same: None,
        }
    }

    /// Refuses attaching across `column`: both rows must hold the same value in it (e.g.
    /// `zone_uuid`).
    pub const fn same(mut self, column: &'static str) -> Self {
        self.same = Some(column);
        self
    }

    /// Names the reference table's rows as links between the two kinds, for refusals that
    /// name resources: `b.register(ATTACHMENTS.table_kind())` in the plugin's `build`.
    pub const fn table_kind(&self) -> crate::TableKind {
        crate::TableKind::link(
            self.table,
            (self.kind, self.owner_column),
            (self.target_kind, self.target_column),
        )
    }

    fn attachment(&self, owner: &str, target: &str) -> Attachment {
        Attachment {
            kind: self.kind.to_owned(),
            uuid: owner.to_owned(),
            target_kind: self.target_kind.to_owned(),
            target_uuid: target.to_owned(),
        }
    }

    /// Attaches `owner` (an inventory of the attached kind) to `target`.
    pub async fn attach(
        &self,
        kernel: &Kernel,
        owner: &Inventory,
        target: &str,
    ) -> Result<(), Fault> {
        let uuid = text(owner, "uuid");
        let mut tx = store(kernel)?.begin().await?;
        let found = tx.get(self.target_table, target).await?.ok_or_else(|| {
            Fault::invalid(
                self.target_column,
                format!("no {} {target}", self.target_kind),
            )
        })?;
        if let Some(column) = self.same {
            if text(&found, column) != text(owner, column) {
                return Err(Fault::invalid(
                    self.target_column,
                    format!(
                        "{} {target} and {} {uuid} differ in {column}",
                        self.target_kind, self.kind
                    ),
                ));
            }
        }
        if self
            .targets(&mut tx, uuid)
            .await?
            .iter()
            .any(|t| t == target)
        {
            return Err(Fault::conflict(format!(
                "{} {uuid} is already attached to {} {target}",
                self.kind, self.target_kind
            ))
            .with_detail("field", self.target_column));
        }
        let attachment = self.attachment(uuid, target);
        kernel.extensions().veto::<AttachCheck>(&attachment)?;
        let reference = row(
            json!({self.owner_column: uuid, self.target_column: target, "created_at": crate::now()}),
        );
        tx.insert(self.table, &reference).await?;
        tx.emit(ResourceAttached(attachment.clone())).await?;
        tx.commit(kernel.bus()).await?;
        kernel.extensions().observe::<Attached>(&attachment).await;
        Ok(())
    }

    /// Detaches `owner` from `target`; `conflict` if they are not attached, or if a plugin
    /// refuses because its resources use the one through the other.
    pub async fn detach(
        &self,
        kernel: &Kernel,
        owner: &Inventory,
        target: &str,
    ) -> Result<(), Fault> {
        let uuid = text(owner, "uuid");
        let attachment = self.attachment(uuid, target);
        let mut tx = store(kernel)?.begin().await?;
        // Held until the detach commits: a transaction that places a user on the owner
        // through this attachment (a root volume on a primary storage) holds the owner
        // shared, so it commits before the vetoes read, and they see its user, or waits
        // and then finds the attachment gone (see docs/plugins.md).
        tx.lock_resource(&[(self.kind, uuid)], crate::ResourceLock::Exclusive)
            .await?;
        if !self
            .targets(&mut tx, uuid)
            .await?
            .iter()
            .any(|t| t == target)
        {
            return Err(Fault::conflict(format!(
                "{} {uuid} is not attached to {} {target}",
                self.kind, self.target_kind
            ))
            .with_detail("field", self.target_column));
        }
        // Awaited inside the transaction, which holds SQLite's one writer: an asynchronous
        // veto's read (through `Store::read`) sees exactly what this detach will change.
        kernel
            .extensions()
            .veto_async::<DetachCheck>(&attachment)
            .await?;
        tx.delete_ref(
            self.table,
            (self.owner_column, uuid),
            (self.target_column, target),
        )
        .await?;
        tx.emit(ResourceDetached(attachment.clone())).await?;
        tx.commit(kernel.bus()).await?;
        kernel.extensions().observe::<Detached>(&attachment).await;
        Ok(())
    }

    /// The uuids `owner` is attached to, sorted.
    pub async fn targets(&self, tx: &mut Tx, owner: &str) -> Result<Vec<String>, Fault> {
        Ok(tx
            .list_refs(self.table, self.owner_column, owner, self.target_column)
            .await?)
    }

    /// A page of the reference rows of `owner` (`query`: sorted by the target column,
    /// the default, or `created_at`).
    pub async fn list(
        &self,
        kernel: &Kernel,
        owner: &str,
        query: &PageQuery,
    ) -> Result<InventoryList, Fault> {
        let mut tx = store(kernel)?.read().await?;
        let mut filter = Inventory::new();
        filter.insert(self.owner_column.into(), json!(owner));
        let pager = Pager {
            what: self.target_kind,
            sortable: &[self.target_column, "created_at"],
            default_sort: self.target_column,
            key: &[self.target_column],
        };
        pager.page(&mut tx, self.table, &filter, query).await
    }
}
