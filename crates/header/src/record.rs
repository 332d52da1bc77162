//! Typed records: what a kind's owner publishes of its resources for other plugins to
//! know, and the two requests that read them — [`GetRecord`] (one, by uuid) and
//! [`FindRecords`] (those matching a typed query). A plugin never reads another plugin's
//! tables: it asks the owner, by type, and the owner answers from its own (it serves them
//! with `ResourceTable::serve_record`, in `flatstack-store`).
//!
//! A record is a stable, typed subset of the kind's inventory: the owner may add columns,
//! rename tables or move to another store without breaking its readers, and a field that
//! is missing or of the wrong type is an error, never a silent zero.
//!
//! ```ignore
//! let host: Option<HostRecord> = record::get(&kernel, &uuid).await?;
//! let connected = record::find::<HostRecord>(&kernel, HostQuery {
//!     status: Some(HostStatus::Connected), ..Default::default()
//! }).await?;
//! ```

use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{Addressed, Fault, Kernel, Message, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// A kind's published record.
pub trait Record:
    Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static
{
    /// The kind, as the API names it (e.g. `hosts`): for messages that say "no such ...".
    const KIND: &'static str;
    /// The owner's service, which answers [`GetRecord`] and [`FindRecords`].
    const SERVICE: &'static str;
    /// The wire name of its [`GetRecord`] request, e.g. `host.record.get`.
    const GET: &'static str;
    /// The wire name of its [`FindRecords`] request, e.g. `host.record.find`.
    const FIND: &'static str;
    /// What [`FindRecords`] may filter by: each field optional, `None` matching every
    /// record; the fields set must all match. Field names are the record's.
    type Query: Serialize + DeserializeOwned + JsonSchema + Default + Clone + Send + Sync + 'static;
    /// Whether the record has fields beyond its table's columns (an L2 network's attached
    /// clusters), which the owner's decoration fills: only then is it run, as a record is
    /// read on hot paths (every VM create reads several).
    const DECORATED: bool = false;
}

/// One record by uuid; `None` if there is no such resource.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "", deny_unknown_fields)]
pub struct GetRecord<R: Record> {
    /// The resource's uuid.
    pub uuid: String,
    #[serde(skip)]
    #[schemars(skip)]
    record: PhantomData<fn() -> R>,
}

impl<R: Record> GetRecord<R> {
    /// Asks for the record of `uuid`.
    pub fn new(uuid: impl Into<String>) -> Self {
        GetRecord {
            uuid: uuid.into(),
            record: PhantomData,
        }
    }
}

impl<R: Record> Message for GetRecord<R> {
    const NAME: &'static str = R::GET;
}
impl<R: Record> Request for GetRecord<R> {
    type Reply = Option<R>;
}
impl<R: Record> Addressed for GetRecord<R> {
    const SERVICE: &'static str = R::SERVICE;
}

/// The records matching `query`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "", deny_unknown_fields)]
pub struct FindRecords<R: Record> {
    /// What the records must match; the default matches every record.
    #[serde(default)]
    pub query: R::Query,
}

impl<R: Record> FindRecords<R> {
    /// Asks for the records matching `query`.
    pub fn new(query: R::Query) -> Self {
        FindRecords { query }
    }
}

impl<R: Record> Message for FindRecords<R> {
    const NAME: &'static str = R::FIND;
}
impl<R: Record> Request for FindRecords<R> {
    type Reply = Vec<R>;
}
impl<R: Record> Addressed for FindRecords<R> {
    const SERVICE: &'static str = R::SERVICE;
}

/// One record by uuid, from its owner; `None` if there is no such resource.
pub async fn get<R: Record>(kernel: &Kernel, uuid: &str) -> Result<Option<R>, Fault> {
    kernel.ask(GetRecord::<R>::new(uuid)).await
}

/// One record that a request names in `field`: `400` naming the field if there is none.
pub async fn named<R: Record>(kernel: &Kernel, field: &str, uuid: &str) -> Result<R, Fault> {
    get(kernel, uuid).await?.ok_or_else(|| {
        Fault::invalid(
            field,
            format!("no {} {uuid}", R::KIND.trim_end_matches('s')),
        )
    })
}

/// The records matching `query`, from their owner.
pub async fn find<R: Record>(kernel: &Kernel, query: R::Query) -> Result<Vec<R>, Fault> {
    kernel.ask(FindRecords::<R>::new(query)).await
}

/// Declares a [`Record`]: `record!(HostRecord, query HostQuery, kind "hosts",
/// service HOST_SERVICE, "host.record");` — the get and find requests are named
/// `<prefix>.get` and `<prefix>.find`. A record with fields the owner's decoration fills
/// ends with `, decorated`.
#[macro_export]
macro_rules! record {
    ($record:ty, query $filter:ty, kind $kind:literal, service $service:expr, $prefix:literal $(, $decorated:ident)?) => {
        impl $crate::record::Record for $record {
            const KIND: &'static str = $kind;
            const SERVICE: &'static str = $service;
            const GET: &'static str = concat!($prefix, ".get");
            const FIND: &'static str = concat!($prefix, ".find");
            type Query = $filter;
            $(const DECORATED: bool = $crate::record!(@flag $decorated);)?
        }
    };
    (@flag decorated) => {
        true
    };
}
