//! What still uses a resource, by kind and uuid: what a refusal to delete or detach it
//! names (never a table). The store finds the users its foreign keys know of
//! ([`crate::Tx::users_of`]); a plugin whose resources use another's without a foreign key
//! finds its own and refuses through an asynchronous `resource.delete.pre-check` or
//! `resource.detach.pre-check` veto, with the same [`Users::refusal`].

use crate::{StoreError, Tx};
use flatstack_kernel::Fault;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How many uuids of each kind a refusal shows; its count says how many there are.
pub const SHOWN: usize = 5;

/// Says that the rows of `table` stand for resources of `kind`, whose uuid is in `column`:
/// `uuid` for a kind's own table, e.g. `vm_instance_uuid` for the NICs of VMs. A plugin
/// registers one for each of its tables that refers to others
/// (`b.register(VMS.table_kind())`), so that a delete refused because of those rows names
/// the resources, not the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableKind {
    /// The table, e.g. `vm_nics`.
    pub table: &'static str,
    /// The API path of the kind, e.g. `vm-instances`.
    pub kind: &'static str,
    /// The table's column holding the resource's uuid: `uuid`, or e.g. `vm_instance_uuid`.
    pub column: &'static str,
    /// For a table of links between two kinds (attachments): the other kind and its
    /// column. A row that refers to the one being deleted through `column` stands for the
    /// other side: a cluster's attachment names the storage, the storage's the cluster.
    pub link: Option<(&'static str, &'static str)>,
}

impl TableKind {
    /// A kind's own table: each row is one of its resources.
    pub const fn own(table: &'static str, kind: &'static str) -> TableKind {
        TableKind {
            table,
            kind,
            column: "uuid",
            link: None,
        }
    }

    /// A table whose rows are parts of resources of `kind`, named in `column` (a VM's
    /// NICs, an L2 network's cluster attachments).
    pub const fn part(table: &'static str, kind: &'static str, column: &'static str) -> TableKind {
        TableKind {
            table,
            kind,
            column,
            link: None,
        }
    }

    /// A table of links between resources of two kinds, each `(kind, column)`: a storage
    /// attached to a cluster, an image placed on a backup storage.
    pub const fn link(
        table: &'static str,
        (kind, column): (&'static str, &'static str),
        other: (&'static str, &'static str),
    ) -> TableKind {
        TableKind {
            table,
            kind,
            column,
            link: Some(other),
        }
    }

    /// The kind and column that name the users among the rows referring through
    /// `through`; `None` if those rows are parts of the very resource they refer to.
    pub(crate) fn users_through(&self, through: &str) -> Option<(&'static str, &'static str)> {
        if self.column != through {
            return Some((self.kind, self.column));
        }
        self.link.filter(|(_, column)| *column != through)
    }
}

/// The resources that use another, by kind: each counted once, the first few named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Users {
    kinds: BTreeMap<String, Kind>,
    /// Rows of tables no [`TableKind`] names, by table.
    rows: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Kind {
    /// How many, when a query counted more than it listed.
    counted: u64,
    uuids: BTreeSet<String>,
}

impl Kind {
    fn count(&self) -> u64 {
        self.counted.max(self.uuids.len() as u64)
    }
}

impl Users {
    /// None yet.
    pub fn new() -> Users {
        Users::default()
    }

    /// One user; adding it again changes nothing.
    pub fn add(&mut self, kind: &str, uuid: &str) -> &mut Self {
        self.kinds
            .entry(kind.to_owned())
            .or_default()
            .uuids
            .insert(uuid.to_owned());
        self
    }

    /// `count` users of `kind`, of which `some` are named (a query counted them all and
    /// listed a few).
    pub fn add_counted(
        &mut self,
        kind: &str,
        count: u64,
        some: impl IntoIterator<Item = String>,
    ) -> &mut Self {
        let entry = self.kinds.entry(kind.to_owned()).or_default();
        entry.counted = entry.counted.max(count);
        entry.uuids.extend(some);
        self
    }

    /// The users of `kind` that `select` finds: a query (SQL both backends run, `$1`… taking
    /// `params`) whose one column `u` is their uuids, each once (`SELECT DISTINCT`, or a
    /// `UNION`). Counted in the database and the first [`SHOWN`] read, so that a resource
    /// used by thousands costs two small reads.
    pub async fn query(
        &mut self,
        tx: &mut Tx,
        kind: &str,
        select: &str,
        params: &[Value],
    ) -> Result<&mut Self, StoreError> {
        let counted = tx
            .query(
                &format!("SELECT COUNT(*) AS n FROM ({select}) AS t"),
                params,
            )
            .await?;
        let count = counted
            .first()
            .and_then(|row| row.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if count == 0 {
            return Ok(self);
        }
        let some = tx
            .query(&format!("{select} ORDER BY u LIMIT {SHOWN}"), params)
            .await?
            .into_iter()
            .filter_map(|mut row| match row.remove("u") {
                Some(Value::String(u)) => Some(u),
                _ => None,
            });
        Ok(self.add_counted(kind, count, some))
    }

    /// `count` rows of a table no [`TableKind`] names.
    pub(crate) fn add_rows(&mut self, table: &str, count: u64) {
        *self.rows.entry(table.to_owned()).or_default() += count;
    }

    /// Whether nothing uses the resource: a refusal would have nothing to name.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.rows.is_empty()
    }

    /// How many users of `kind`.
    pub fn count(&self, kind: &str) -> u64 {
        self.kinds.get(kind).map_or(0, Kind::count)
    }

    /// `Ok` if nothing uses it; otherwise [`Users::refusal`].
    pub fn check(&self, what: &str) -> Result<(), Fault> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.refusal(what))
        }
    }

    /// The `conflict` that refuses `what` (e.g. "cannot delete images 1f…") while these use
    /// it: the message names each kind with its first uuids and how many more ("it is
    /// still used by vm-instances 0a…, 3c… and 10 more"); `details.users` lists those as
    /// `{kind, uuid}`, and `details.user_counts` counts each kind.
    pub fn refusal(&self, what: &str) -> Fault {
        let mut parts = Vec::new();
        let mut users = Vec::new();
        let mut counts = Map::new();
        for (kind, found) in &self.kinds {
            let shown: Vec<&str> = found.uuids.iter().take(SHOWN).map(String::as_str).collect();
            let count = found.count();
            let more = count.saturating_sub(shown.len() as u64);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            parts.push(format!("{kind} {}{more}", shown.join(", ")));
            users.extend(shown.iter().map(|uuid| json!({"kind": kind, "uuid": uuid})));
            counts.insert(kind.clone(), json!(count));
        }
        for (table, count) in &self.rows {
            let rows = if *count == 1 { "row" } else { "rows" };
            parts.push(format!("{count} {rows} of {table}"));
        }
        let mut fault =
            Fault::conflict(format!("{what}: it is still used by {}", parts.join("; ")))
                .with_detail("users", Value::Array(users))
                .with_detail("user_counts", Value::Object(counts));
        if !self.rows.is_empty() {
            fault = fault.with_detail("rows", json!(self.rows));
        }
        fault
    }
}
