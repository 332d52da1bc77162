//! Images, registered on backup storage: each placement takes the image's size from that
//! backup storage's capacity, and gives it back when the image is deleted.

use flatstack_header::points::Deleted;
use flatstack_header::storage::{
    BackupStorageConsumers, CreateImage, ImageRecord, ReleaseBackupStorage, ReserveBackupStorage,
    IMAGE_SERVICE,
};
use flatstack_header::{ApiResource, Inventory, ResourceChange};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, Fault, FaultCode, Kernel, KernelRef, Message, Observe, Plugin, PluginBuilder,
};
use flatstack_store::recovery::Reconciler;
use flatstack_store::resource::{check_name, new_uuid, row, store, text, ResourceTable};
use flatstack_store::TableKind;
use flatstack_store::Tx;
use serde_json::json;
use std::collections::BTreeSet;

const FORMATS: &[&str] = &["qcow2", "raw", "iso", "vmdk"];
const REFS: &str = "image_backup_storage_refs";

static IMAGES: ResourceTable = ResourceTable::new("images", "images")
    .filters(&["name", "format", "status", "account_uuid"])
    .shareable()
    .before_delete(|tx, image| Box::pin(unplace(tx, image)))
    .decorate(|tx, image| Box::pin(placements(tx, image)));

pub struct ImagePlugin;

impl Plugin for ImagePlugin {
    fn name(&self) -> &'static str {
        "image"
    }

    fn description(&self) -> &'static str {
        "Images registered on backup storage."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its placements refer to backup storage.
        &["storage"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "images",
            "CREATE TABLE images (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                url TEXT NOT NULL, format TEXT NOT NULL, size BIGINT NOT NULL,
                status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE image_backup_storage_refs (
                image_uuid TEXT NOT NULL REFERENCES images (uuid),
                backup_storage_uuid TEXT NOT NULL REFERENCES backup_storage (uuid),
                created_at TEXT NOT NULL,
                PRIMARY KEY (image_uuid, backup_storage_uuid));",
        ))
        .migration(Migration::new(
            2,
            "images owned by an account, and shared or not",
            // The images registered before were admins' and everyone's: they stay so.
            "ALTER TABLE images ADD COLUMN account_uuid TEXT NOT NULL
                 DEFAULT '00000000000000000000000000000001';
             ALTER TABLE images ADD COLUMN shared BIGINT NOT NULL DEFAULT 1;
             CREATE INDEX images_by_account ON images (account_uuid);",
        ));
        let kernel = b.kernel();
        b.observe::<Deleted>(GiveBack(kernel));
        b.register(Reconciler::at_start(
            "backup storage held by no image",
            |kernel| Box::pin(release_orphans(kernel)),
        ));
        let mut service = b.service(IMAGE_SERVICE, ());
        IMAGES.serve(&mut service);
        IMAGES.serve_record::<ImageRecord, _>(&mut service);
        service
            .handle::<CreateImage, _, _>(|_, msg, cx| async move { create(&cx.kernel, msg).await });
        b.register(ApiResource {
            path: "images",
            service: IMAGE_SERVICE,
            create: CreateImage::NAME,
            // Members register private images; admins' are public.
            access: flatstack_header::identity::Access::Shared,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(
                flatstack_header::inventory::schema::<flatstack_header::inventory::ImageInventory>,
            ),
            filters: IMAGES.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(IMAGES.table_kind()).register(TableKind::link(
            REFS,
            (IMAGES.kind, "image_uuid"),
            ("backup-storage", "backup_storage_uuid"),
        ));
    }
}

async fn create(kernel: &Kernel, msg: CreateImage) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    if msg.url.trim().is_empty() {
        return Err(Fault::invalid("url", "url must not be empty"));
    }
    if !FORMATS.contains(&msg.format.as_str()) {
        return Err(Fault::invalid(
            "format",
            format!(
                "unknown format `{}` (known: {})",
                msg.format,
                FORMATS.join(", ")
            ),
        ));
    }
    let size = i64::try_from(msg.size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| Fault::invalid("size", "size must be between 1 and 2^63-1 bytes"))?;
    let targets: BTreeSet<String> = msg.backup_storage_uuids.iter().cloned().collect();
    if targets.is_empty() || targets.len() != msg.backup_storage_uuids.len() {
        return Err(Fault::invalid(
            "backup_storage_uuids",
            "name one or more backup storages, each once",
        ));
    }
    // The image's bytes are taken from each backup storage by its owner, before the
    // image's row exists: a create stopped half-way leaves bytes held by no image, which
    // the reconciler below gives back at the next start.
    let uuid = new_uuid();
    if let Err(fault) = reserve(kernel, &uuid, msg.size, &targets).await {
        return Err(give_back(kernel, &uuid, fault).await);
    }
    let row = row(json!({
        "uuid": uuid, "name": msg.name, "description": msg.description, "url": msg.url,
        "format": msg.format, "size": size, "status": "Ready",
        "account_uuid": msg.account_uuid, "shared": i64::from(msg.shared),
    }));
    let created = IMAGES
        .create(kernel, row, move |tx, uuid| {
            Box::pin(place(tx, uuid, targets))
        })
        .await;
    match created {
        Ok(image) => Ok(image),
        Err(fault) => Err(give_back(kernel, &uuid, fault).await),
    }
}

/// Takes the image's size from each backup storage it goes on.
async fn reserve(
    kernel: &Kernel,
    image: &str,
    size: u64,
    targets: &BTreeSet<String>,
) -> Result<(), Fault> {
    for bs in targets {
        let reserve = ReserveBackupStorage {
            consumer: image.to_owned(),
            size,
        };
        kernel
            .ask(reserve)
            .resource(bs)
            .await
            .map_err(|fault| match fault.code {
                FaultCode::NotFound => {
                    Fault::invalid("backup_storage_uuids", format!("no backup storage {bs}"))
                }
                _ => fault.with_detail("field", "backup_storage_uuids"),
            })?;
    }
    Ok(())
}

/// Gives back what a create that failed took; a give-back that fails too is reported
/// with the create's fault (and done at the next start).
async fn give_back(kernel: &Kernel, image: &str, fault: Fault) -> Fault {
    match release(kernel, image).await {
        Ok(_) => fault,
        Err(undo) => {
            tracing::error!(%image, fault = %undo, "giving back backup storage failed");
            fault.with_undo_failure(Some("backup-storage.reserve"), undo)
        }
    }
}

/// Gives back every byte of backup storage held for `image`, wherever (the storage plugin's
/// record of it decides, so twice gives back once).
async fn release(kernel: &Kernel, image: &str) -> Result<(), Fault> {
    let release = ReleaseBackupStorage {
        consumer: image.to_owned(),
    };
    kernel.ask(release).await.map(|_| ())
}

/// Records where the image is placed, in the create's transaction.
async fn place(tx: &mut Tx, image: &str, targets: BTreeSet<String>) -> Result<(), Fault> {
    for bs in targets {
        let placement = row(
            json!({"image_uuid": image, "backup_storage_uuid": bs, "created_at": flatstack_store::now()}),
        );
        tx.insert(REFS, &placement).await?;
    }
    Ok(())
}

/// Removes the placements before the image goes; its bytes are given back once the
/// delete has committed ([`GiveBack`]).
async fn unplace(tx: &mut Tx, image: &Inventory) -> Result<(), Fault> {
    let uuid = text(image, "uuid");
    for bs in tx
        .list_refs(REFS, "image_uuid", uuid, "backup_storage_uuid")
        .await?
    {
        tx.delete_ref(REFS, ("image_uuid", uuid), ("backup_storage_uuid", &bs))
            .await?;
    }
    Ok(())
}

/// Gives a deleted image's bytes back to its backup storages.
struct GiveBack(KernelRef);

#[async_trait]
impl Observe<Deleted> for GiveBack {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind != IMAGES.kind {
            return Ok(());
        }
        release(&self.0.get()?, &change.uuid).await
    }
}

/// At start, before requests: bytes of backup storage held for an image that does not
/// exist (a create or a delete stopped half-way) are given back. Exact because nothing is
/// in flight then.
async fn release_orphans(kernel: Kernel) -> Result<(), Fault> {
    let consumers = kernel.ask(BackupStorageConsumers {}).await?;
    let mut orphans = Vec::new();
    {
        let mut tx = store(&kernel)?.read().await?;
        for consumer in consumers {
            if !tx.exists(IMAGES.table, &consumer).await? {
                orphans.push(consumer);
            }
        }
    }
    for consumer in orphans {
        tracing::info!(image = %consumer, "giving back backup storage held by no image");
        release(&kernel, &consumer).await?;
    }
    Ok(())
}

/// Shows where the image is.
async fn placements(tx: &mut Tx, image: &mut Inventory) -> Result<(), Fault> {
    let uuid = text(image, "uuid").to_owned();
    let on = tx
        .list_refs(REFS, "image_uuid", &uuid, "backup_storage_uuid")
        .await?;
    image.insert("backup_storage_uuids".into(), json!(on));
    Ok(())
}
