//! Images, registered on backup storage: each placement takes the image's size from that
//! backup storage's capacity, and gives it back when the image is deleted.

use flatstack_header::storage::CreateImage;
use flatstack_header::storage::ImageRecord;
use flatstack_header::{ApiResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{Fault, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::resource::{check_name, row, text, ResourceTable};
use flatstack_store::TableKind;
use flatstack_store::Tx;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const FORMATS: &[&str] = &["qcow2", "raw", "iso", "vmdk"];
const REFS: &str = "image_backup_storage_refs";

static IMAGES: ResourceTable = ResourceTable {
    kind: "images",
    table: "images",
    filters: &["name", "format", "status"],
    joined: None,
    before_delete: Some(|tx, image| Box::pin(release(tx, image))),
    decorate: Some(|tx, image| Box::pin(placements(tx, image))),
};

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
        ));
        let mut service = b.service("image", ());
        IMAGES.serve(&mut service);
        IMAGES.serve_record::<ImageRecord, _>(&mut service);
        service
            .handle::<CreateImage, _, _>(|_, msg, cx| async move { create(&cx.kernel, msg).await });
        b.register(ApiResource {
            path: "images",
            service: "image",
            create: CreateImage::NAME,
            driver_kind: None,
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
    let row = row(json!({
        "name": msg.name, "description": msg.description, "url": msg.url,
        "format": msg.format, "size": size, "status": "Ready",
    }));
    IMAGES
        .create(kernel, row, move |tx, uuid| {
            Box::pin(place(tx, uuid, size, targets))
        })
        .await
}

/// Places the image on each backup storage, taking its size from their capacity, in the
/// create's transaction: all placements or none.
async fn place(
    tx: &mut Tx,
    image: &str,
    size: i64,
    targets: BTreeSet<String>,
) -> Result<(), Fault> {
    for bs in targets {
        // One conditional update: the check and the take cannot be split by another
        // writer, on any backend.
        let taken = tx
            .statement(
                "UPDATE backup_storage SET available_capacity = available_capacity - $1,
                     updated_at = $2
                 WHERE uuid = $3 AND available_capacity >= $1",
                &[json!(size), json!(flatstack_store::now()), json!(bs)],
            )
            .await?;
        if taken == 0 {
            let storage = tx.get("backup_storage", &bs).await?.ok_or_else(|| {
                Fault::invalid("backup_storage_uuids", format!("no backup storage {bs}"))
            })?;
            let available = storage
                .get("available_capacity")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            return Err(Fault::conflict(format!(
                "backup storage {bs} has {available} bytes free, the image needs {size}"
            ))
            .with_detail("field", "backup_storage_uuids"));
        }
        let placement = row(
            json!({"image_uuid": image, "backup_storage_uuid": bs, "created_at": flatstack_store::now()}),
        );
        tx.insert(REFS, &placement).await?;
    }
    Ok(())
}

/// Gives each placement's capacity back and removes the placements (before the image goes).
async fn release(tx: &mut Tx, image: &Inventory) -> Result<(), Fault> {
    let uuid = text(image, "uuid");
    let size = image.get("size").and_then(Value::as_i64).unwrap_or(0);
    for bs in tx
        .list_refs(REFS, "image_uuid", uuid, "backup_storage_uuid")
        .await?
    {
        // The placement's delete decides: a release that runs twice gives back once.
        if tx
            .delete_ref(REFS, ("image_uuid", uuid), ("backup_storage_uuid", &bs))
            .await?
        {
            tx.statement(
                "UPDATE backup_storage SET available_capacity = available_capacity + $1,
                     updated_at = $2
                 WHERE uuid = $3",
                &[json!(size), json!(flatstack_store::now()), json!(bs)],
            )
            .await?;
        }
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
