//! Primary storage (volumes) and backup storage (images): two typed kinds whose drivers
//! plug in by type. Primary storage is attached to the clusters that may use it.

use flatstack_header::infra::ZoneRecord;
use flatstack_header::record;
use flatstack_header::storage::PrimaryStorageRecord;
use flatstack_header::storage::{
    AttachPrimaryStorage, BackupStorageConsumers, BackupStorages, CreateBackupStorage,
    CreatePrimaryStorage, CreateStorage, DetachPrimaryStorage, PrimaryStorages,
    ReleaseBackupStorage, ReleaseStorage, ReserveBackupStorage, ReserveStorage,
    BACKUP_STORAGE_SERVICE, PRIMARY_STORAGE_SERVICE,
};
use flatstack_header::{ApiAction, ApiResource, Inventory};
use flatstack_kernel::driver::DriverKind;
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Kernel, Message, MessageContext, Plugin, PluginBuilder};
use flatstack_store::attach::Attachments;
use flatstack_store::resource::{check_name, row, store, text, ResourceTable};
use flatstack_store::{TableKind, Tx};
use serde_json::{json, Value};

static PRIMARY: ResourceTable = ResourceTable::new("primary-storage", "primary_storage")
    .filters(&["name", "zone_uuid", "type"])
    .joined(|kernel, ps| {
        let t = ps.get("type")?.as_str()?;
        kernel.drivers().get::<PrimaryStorages>(t).ok()?.table()
    })
    .attached(&CLUSTER_ATTACHMENTS, "attached_cluster_uuids");

static BACKUP: ResourceTable = ResourceTable::new("backup-storage", "backup_storage")
    .filters(&["name", "zone_uuid", "type"])
    .joined(|kernel, bs| {
        let t = bs.get("type")?.as_str()?;
        kernel.drivers().get::<BackupStorages>(t).ok()?.table()
    });

const STORAGE_COLUMNS: &str =
    "uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
    type TEXT NOT NULL, zone_uuid TEXT NOT NULL REFERENCES zones (uuid), url TEXT NOT NULL,
    status TEXT NOT NULL, total_capacity BIGINT NOT NULL, available_capacity BIGINT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL";

pub struct StoragePlugin;

impl Plugin for StoragePlugin {
    fn name(&self) -> &'static str {
        "storage"
    }

    fn description(&self) -> &'static str {
        "Primary and backup storage; storage drivers plug in by type."
    }

    fn requires(&self) -> &'static [&'static str] {
        &["cluster"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        // Static SQL: the column list is shared by the two kinds' tables.
        static SCHEMA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let schema = SCHEMA.get_or_init(|| {
            format!(
                "CREATE TABLE primary_storage ({STORAGE_COLUMNS});
                 CREATE TABLE backup_storage ({STORAGE_COLUMNS});
                 CREATE TABLE primary_storage_cluster_refs (
                    primary_storage_uuid TEXT NOT NULL REFERENCES primary_storage (uuid),
                    cluster_uuid TEXT NOT NULL REFERENCES clusters (uuid),
                    created_at TEXT NOT NULL,
                    PRIMARY KEY (primary_storage_uuid, cluster_uuid));"
            )
        });
        b.migration(Migration::new(1, "storage", schema));
        b.migration(Migration::new(
            2,
            "what each consumer holds of primary storage",
            // One row per consumer (a volume), written with the take and removed with the
            // give-back: a release that runs twice frees once.
            "CREATE TABLE primary_storage_allocations (
                consumer_uuid TEXT PRIMARY KEY,
                primary_storage_uuid TEXT NOT NULL REFERENCES primary_storage (uuid),
                size BIGINT NOT NULL, created_at TEXT NOT NULL)",
        ));
        b.migration(Migration::new(
            3,
            "what each consumer holds of backup storage",
            // One row per consumer (an image) and backup storage it is placed on.
            "CREATE TABLE backup_storage_allocations (
                consumer_uuid TEXT NOT NULL,
                backup_storage_uuid TEXT NOT NULL REFERENCES backup_storage (uuid),
                size BIGINT NOT NULL, created_at TEXT NOT NULL,
                PRIMARY KEY (consumer_uuid, backup_storage_uuid))",
        ));
        b.driver_kind::<PrimaryStorages>()
            .driver_kind::<BackupStorages>();

        let mut primary = b.service(PRIMARY_STORAGE_SERVICE, ());
        PRIMARY.serve(&mut primary);
        PRIMARY.serve_record::<PrimaryStorageRecord, _>(&mut primary);
        primary
            .handle::<CreatePrimaryStorage, _, _>(|_, msg, cx| async move {
                create::<PrimaryStorages>(&cx.kernel, &PRIMARY, msg.0).await
            })
            .handle::<AttachPrimaryStorage, _, _>(|_, msg, cx| async move {
                attach(&cx, &msg.cluster_uuid).await
            })
            .handle::<DetachPrimaryStorage, _, _>(|_, msg, cx| async move {
                detach(&cx, &msg.cluster_uuid).await
            })
            .handle::<ReserveStorage, _, _>(|_, msg, cx| async move {
                reserve(
                    &cx.kernel,
                    cx.resource_id()?,
                    &msg.consumer,
                    bytes(msg.size)?,
                )
                .await
            })
            .handle::<ReleaseStorage, _, _>(|_, msg, cx| async move {
                release(&cx.kernel, &msg.consumer).await
            });
        b.register(ApiResource {
            path: "primary-storage",
            service: PRIMARY_STORAGE_SERVICE,
            create: CreatePrimaryStorage::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: Some(PrimaryStorages::KIND),
            inventory: Some(
                flatstack_header::inventory::schema::<
                    flatstack_header::inventory::PrimaryStorageInventory,
                >,
            ),
            filters: PRIMARY.filters,
            actions: const {
                &[
                    ApiAction::admin("attach_cluster", AttachPrimaryStorage::NAME),
                    ApiAction::admin("detach_cluster", DetachPrimaryStorage::NAME),
                ]
            },
            children: &[],
        });

        let mut backup = b.service(BACKUP_STORAGE_SERVICE, ());
        BACKUP.serve(&mut backup);
        backup
            .handle::<CreateBackupStorage, _, _>(|_, msg, cx| async move {
                create::<BackupStorages>(&cx.kernel, &BACKUP, msg.0).await
            })
            .handle::<ReserveBackupStorage, _, _>(|_, msg, cx| async move {
                reserve_backup(
                    &cx.kernel,
                    cx.resource_id()?,
                    &msg.consumer,
                    bytes(msg.size)?,
                )
                .await
            })
            .handle::<ReleaseBackupStorage, _, _>(|_, msg, cx| async move {
                release_backup(&cx.kernel, &msg.consumer).await
            })
            .handle::<BackupStorageConsumers, _, _>(|_, _, cx| async move {
                let mut tx = store(&cx.kernel)?.read().await?;
                let rows = tx
                    .query(
                        "SELECT DISTINCT consumer_uuid FROM backup_storage_allocations",
                        &[],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| text(r, "consumer_uuid").to_owned())
                    .collect())
            });
        b.register(ApiResource {
            path: "backup-storage",
            service: BACKUP_STORAGE_SERVICE,
            create: CreateBackupStorage::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: Some(BackupStorages::KIND),
            inventory: Some(
                flatstack_header::inventory::schema::<
                    flatstack_header::inventory::BackupStorageInventory,
                >,
            ),
            filters: BACKUP.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(PRIMARY.table_kind())
            .register(BACKUP.table_kind())
            .register(CLUSTER_ATTACHMENTS.table_kind())
            // Bytes held stand for the volumes that hold them.
            .register(TableKind::part(
                "primary_storage_allocations",
                "volumes",
                "consumer_uuid",
            ))
            .register(TableKind::part(
                "backup_storage_allocations",
                "images",
                "consumer_uuid",
            ));
    }
}

async fn create<K>(
    kernel: &Kernel,
    kind: &'static ResourceTable,
    msg: CreateStorage,
) -> Result<Inventory, Fault>
where
    K: DriverKind<Factory = dyn flatstack_header::storage::StorageDriver>,
{
    check_name(&msg.name)?;
    let driver = kernel.drivers().get::<K>(&msg.storage_type)?;
    if msg.url.trim().is_empty() {
        return Err(Fault::invalid("url", "url must not be empty"));
    }
    let capacity = i64::try_from(msg.total_capacity)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| {
            Fault::invalid(
                "total_capacity",
                "total_capacity must be between 1 and 2^63-1 bytes",
            )
        })?;
    let own = driver.validate(&msg.url, &msg.driver)?;
    record::named::<ZoneRecord>(kernel, "zone_uuid", &msg.zone_uuid).await?;
    let row = row(json!({
        "name": msg.name, "description": msg.description, "type": msg.storage_type,
        "zone_uuid": msg.zone_uuid, "url": msg.url, "status": "Connected",
        "total_capacity": capacity, "available_capacity": capacity,
    }));
    kind.create_typed(kernel, row, driver.table(), own).await
}

/// Primary storage attaches to clusters of its zone.
static CLUSTER_ATTACHMENTS: Attachments = Attachments::new(
    "primary-storage",
    "primary_storage_cluster_refs",
    "primary_storage_uuid",
    "clusters",
    "clusters",
    "cluster_uuid",
)
.same("zone_uuid");

async fn attach(cx: &MessageContext, cluster_uuid: &str) -> Result<Inventory, Fault> {
    let ps = with_clusters(&cx.kernel, cx.resource_id()?).await?;
    CLUSTER_ATTACHMENTS
        .attach(&cx.kernel, &ps, cluster_uuid)
        .await?;
    with_clusters(&cx.kernel, cx.resource_id()?).await
}

async fn detach(cx: &MessageContext, cluster_uuid: &str) -> Result<Inventory, Fault> {
    let ps = with_clusters(&cx.kernel, cx.resource_id()?).await?;
    CLUSTER_ATTACHMENTS
        .detach(&cx.kernel, &ps, cluster_uuid)
        .await?;
    with_clusters(&cx.kernel, cx.resource_id()?).await
}

/// The inventory with the attached clusters' uuids.
async fn with_clusters(kernel: &Kernel, ps: &str) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    PRIMARY.read(kernel, &mut tx, ps).await
}

fn bytes(size: u64) -> Result<i64, Fault> {
    i64::try_from(size).map_err(|_| Fault::invalid("size", "size must be below 2^63 bytes"))
}

/// Takes a consumer's bytes of one primary storage: the consumer's record and a
/// conditional update (never below zero, whatever else runs, on any node), in one
/// transaction. The record goes first: asked again for the same consumer, it inserts
/// nothing and takes nothing more.
async fn reserve(
    kernel: &Kernel,
    uuid: &str,
    consumer: &str,
    size: i64,
) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let record = row(json!({
        "consumer_uuid": consumer, "primary_storage_uuid": uuid, "size": size,
        "created_at": flatstack_store::now(),
    }));
    let recorded = tx
        .insert_allocation("primary_storage_allocations", &record)
        .await
        .map_err(|e| PRIMARY.missing_as_not_found(uuid, e))?;
    if !recorded {
        let held = tx
            .allocation("primary_storage_allocations", consumer)
            .await?
            .unwrap_or_default();
        let on = text(&held, "primary_storage_uuid");
        if on == uuid {
            return PRIMARY.read(kernel, &mut tx, uuid).await;
        }
        return Err(Fault::conflict(format!(
            "{consumer} already holds bytes of primary storage {on}"
        )));
    }
    // Refused, the transaction is dropped and takes the record back too.
    let ps = take(kernel, &mut tx, &PRIMARY, uuid, size).await?;
    tx.commit(kernel.bus()).await?;
    Ok(ps)
}

/// Gives back the bytes a consumer holds, wherever they are; `false` if it holds none. The
/// record's delete decides, so two releases of one consumer free once.
async fn release(kernel: &Kernel, consumer: &str) -> Result<bool, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let Some(held) = tx
        .take_allocation("primary_storage_allocations", consumer)
        .await?
    else {
        return Ok(false);
    };
    give(&mut tx, &PRIMARY, &held, "primary_storage_uuid").await?;
    tx.commit(kernel.bus()).await?;
    Ok(true)
}

/// Takes `size` bytes of one storage of `kind`: one conditional update, never below zero
/// whatever else runs, on any node. Returns the storage as it is after.
async fn take(
    kernel: &Kernel,
    tx: &mut Tx,
    kind: &ResourceTable,
    uuid: &str,
    size: i64,
) -> Result<Inventory, Fault> {
    let taken = tx
        .query(
            &format!(
                "UPDATE {} SET available_capacity = available_capacity - $1, updated_at = $2
                 WHERE uuid = $3 AND available_capacity >= $1 RETURNING *",
                kind.table
            ),
            &[json!(size), json!(flatstack_store::now()), json!(uuid)],
        )
        .await?;
    let Some(taken) = taken.into_iter().next() else {
        let storage = kind.read(kernel, tx, uuid).await?;
        let free = storage.get("available_capacity").and_then(Value::as_i64);
        return Err(Fault::conflict(format!(
            "{} {uuid} has {} bytes free; {size} are needed",
            kind.kind.replace('-', " "),
            free.unwrap_or(0),
        )));
    };
    kind.inventory_of(kernel, tx, taken).await
}

/// Gives back the bytes an allocation record holds, to the storage its `column` names.
async fn give(
    tx: &mut Tx,
    kind: &ResourceTable,
    held: &Inventory,
    column: &str,
) -> Result<(), Fault> {
    let size = held
        .get("size")
        .and_then(Value::as_i64)
        .ok_or_else(|| Fault::internal("an allocation record without its size"))?;
    tx.statement(
        &format!(
            "UPDATE {} SET available_capacity = available_capacity + $1, updated_at = $2
             WHERE uuid = $3",
            kind.table
        ),
        &[
            json!(size),
            json!(flatstack_store::now()),
            json!(text(held, column)),
        ],
    )
    .await?;
    Ok(())
}

/// Takes a consumer's bytes of one backup storage, with its record, in one transaction.
/// Asked again for the same consumer and storage, it takes nothing more.
async fn reserve_backup(
    kernel: &Kernel,
    uuid: &str,
    consumer: &str,
    size: i64,
) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let held = tx
        .query(
            "SELECT size FROM backup_storage_allocations
              WHERE consumer_uuid = $1 AND backup_storage_uuid = $2",
            &[json!(consumer), json!(uuid)],
        )
        .await?;
    if !held.is_empty() {
        return Ok(());
    }
    take(kernel, &mut tx, &BACKUP, uuid, size).await?;
    let record = row(json!({
        "consumer_uuid": consumer, "backup_storage_uuid": uuid, "size": size,
        "created_at": flatstack_store::now(),
    }));
    tx.insert("backup_storage_allocations", &record).await?;
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// Gives back every byte a consumer holds of backup storage; how many storages it held
/// bytes of. Each record's delete decides, so two releases give back once.
async fn release_backup(kernel: &Kernel, consumer: &str) -> Result<u32, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let held = tx
        .query(
            "SELECT backup_storage_uuid, size FROM backup_storage_allocations
              WHERE consumer_uuid = $1",
            &[json!(consumer)],
        )
        .await?;
    let mut released = 0;
    for held in &held {
        let bs = text(held, "backup_storage_uuid");
        let removed = tx
            .delete_ref(
                "backup_storage_allocations",
                ("consumer_uuid", consumer),
                ("backup_storage_uuid", bs),
            )
            .await?;
        if removed {
            give(&mut tx, &BACKUP, held, "backup_storage_uuid").await?;
            released += 1;
        }
    }
    tx.commit(kernel.bus()).await?;
    Ok(released)
}
