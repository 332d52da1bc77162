//! L2 networks: the base record, cluster attachment, and the base type `L2NoVlanNetwork`.
//! Other types (`L2VlanNetwork`, ...) plug in as drivers of the `L2Networks` kind: they
//! validate and store their own fields and hand per-network messages to this base.

use flatstack_header::infra::ZoneRecord;
use flatstack_header::network::L2NetworkRecord;
use flatstack_header::network::{
    AttachL2Cluster, CreateL2Network, DetachL2Cluster, L2NetworkDriver, L2Networks, ListL2Clusters,
    L2_NETWORK_SERVICE, L2_NO_VLAN,
};
use flatstack_header::record::{self, Record as _};
use flatstack_header::{ApiAction, ApiChild, ApiResource, Inventory, InventoryList, PageQuery};
use flatstack_kernel::driver::{call, Handled, Incoming, Resource};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{json_schema, Schema};
use flatstack_kernel::{
    async_trait, Fault, Kernel, Message, MessageContext, Plugin, PluginBuilder,
};
use flatstack_store::attach::Attachments;
use flatstack_store::resource::{check_name, store, text, ResourceTable};
use flatstack_store::{ResourceLock, Tx};
use serde_json::{json, Value};
use std::sync::Arc;

static L2_NETWORKS: ResourceTable = ResourceTable::new("l2-networks", "l2_networks")
    .filters(&["name", "zone_uuid", "type", "physical_interface"])
    .joined(|kernel, network| {
        let l2_type = network.get("type")?.as_str()?;
        kernel.drivers().get::<L2Networks>(l2_type).ok()?.table()
    })
    .attached(&CLUSTER_ATTACHMENTS, "attached_cluster_uuids");

/// Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
const MAX_INTERFACE_LEN: usize = 15;

pub struct L2NetworkPlugin;

impl Plugin for L2NetworkPlugin {
    fn name(&self) -> &'static str {
        "l2-network"
    }

    fn description(&self) -> &'static str {
        "L2 networks, their cluster attachments and the L2NoVlanNetwork base type."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its tables refer to zones and clusters.
        &["cluster"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "l2 networks",
            "CREATE TABLE l2_networks (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                type TEXT NOT NULL, zone_uuid TEXT NOT NULL REFERENCES zones (uuid),
                physical_interface TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ))
        .migration(Migration::new(
            2,
            "l2 network cluster attachments",
            "CREATE TABLE l2_cluster_refs (
                l2_network_uuid TEXT NOT NULL REFERENCES l2_networks (uuid),
                cluster_uuid TEXT NOT NULL REFERENCES clusters (uuid),
                created_at TEXT NOT NULL,
                PRIMARY KEY (l2_network_uuid, cluster_uuid))",
        ));
        b.driver_kind::<L2Networks>()
            .driver::<L2Networks>(L2_NO_VLAN, Arc::new(NoVlanDriver));
        let mut service = b.service(L2_NETWORK_SERVICE, ());
        L2_NETWORKS.serve(&mut service);
        L2_NETWORKS.serve_record::<L2NetworkRecord, _>(&mut service);
        service
            .handle::<CreateL2Network, _, _>(
                |_, msg, cx| async move { create(&cx.kernel, msg).await },
            )
            // Per-network messages go to the network's concrete resource (its driver's).
            .handle::<AttachL2Cluster, _, _>(|_, msg, cx| async move {
                call(&*resource_of(&cx).await?, msg, &cx).await
            })
            .handle::<DetachL2Cluster, _, _>(|_, msg, cx| async move {
                call(&*resource_of(&cx).await?, msg, &cx).await
            })
            .handle::<ListL2Clusters, _, _>(|_, msg, cx| async move {
                list_clusters(&cx.kernel, cx.resource_id()?, &msg.0).await
            });
        b.register(ApiResource {
            path: "l2-networks",
            service: L2_NETWORK_SERVICE,
            create: CreateL2Network::NAME,
            access: flatstack_header::identity::Access::Infrastructure,
            holds_secrets: false,
            driver_kind: Some("l2-networks"),
            inventory: Some(
                flatstack_header::inventory::schema::<
                    flatstack_header::inventory::L2NetworkInventory,
                >,
            ),
            filters: L2_NETWORKS.filters,
            actions: const {
                &[
                    ApiAction::admin("attach_cluster", AttachL2Cluster::NAME),
                    ApiAction::admin("detach_cluster", DetachL2Cluster::NAME),
                ]
            },
            // `GET .../clusters` lists the attachments; `POST` is the attach action.
            children: &[ApiChild {
                path: "clusters",
                create: AttachL2Cluster::NAME,
                list: ListL2Clusters::NAME,
                inventory: Some(
                    flatstack_header::inventory::schema::<
                        flatstack_header::inventory::L2ClusterAttachment,
                    >,
                ),
            }],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(L2_NETWORKS.table_kind())
            .register(CLUSTER_ATTACHMENTS.table_kind());
    }
}

async fn create(kernel: &Kernel, msg: CreateL2Network) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    let driver = kernel.drivers().get::<L2Networks>(&msg.l2_type)?;
    check_interface(&msg.physical_interface)?;
    let own = driver.validate(&msg.driver)?;
    record::named::<ZoneRecord>(kernel, "zone_uuid", &msg.zone_uuid).await?;
    let row = json!({
        "name": msg.name, "description": msg.description, "type": msg.l2_type,
        "zone_uuid": msg.zone_uuid, "physical_interface": msg.physical_interface,
    });
    let Value::Object(row) = row else {
        return Err(Fault::internal("row is an object"));
    };
    let table = driver.table();
    let unique = driver.unique_per_interface();
    let (zone, interface, l2_type) = (msg.zone_uuid, msg.physical_interface, msg.l2_type);
    L2_NETWORKS
        .create(kernel, row, move |tx, uuid| {
            Box::pin(async move {
                let Some(table) = table else {
                    return Ok(());
                };
                let place = Place {
                    zone: &zone,
                    interface: &interface,
                    l2_type: &l2_type,
                };
                check_unique(tx, table, unique, &place, &own).await?;
                let mut own = own;
                own.insert("uuid".into(), json!(uuid));
                tx.insert(table, &own).await?;
                Ok(())
            })
        })
        .await
}

fn check_interface(name: &str) -> Result<(), Fault> {
    let ok = !name.is_empty()
        && name.len() <= MAX_INTERFACE_LEN
        && name.chars().all(|c| c.is_ascii_graphic() && c != '/');
    if ok {
        Ok(())
    } else {
        Err(Fault::invalid(
            "physical_interface",
            format!(
                "physical_interface must be an interface name of 1 to {MAX_INTERFACE_LEN} \
                 printable ASCII characters without `/` or spaces, not `{name}`"
            ),
        ))
    }
}

/// Where a new network goes, for the uniqueness check.
struct Place<'a> {
    zone: &'a str,
    interface: &'a str,
    l2_type: &'a str,
}

/// Refuses a second network of a type with the same identifying columns on the same
/// interface of the same zone. It runs inside the create transaction, which holds the
/// zone exclusively until it commits (on SQLite, its one writer), so nothing slips in
/// between the check and the insert.
async fn check_unique(
    tx: &mut Tx,
    table: &str,
    columns: &[&str],
    place: &Place<'_>,
    own: &Inventory,
) -> Result<(), Fault> {
    let Some(first) = columns.first() else {
        return Ok(());
    };
    for name in std::iter::once(&table).chain(columns) {
        if !is_identifier(name) {
            return Err(Fault::internal(format!(
                "driver identifier `{name}` is not a SQL identifier"
            )));
        }
    }
    tx.lock_resource(&[(ZoneRecord::KIND, place.zone)], ResourceLock::Exclusive)
        .await?;
    let mut sql = format!(
        "SELECT b.uuid AS uuid FROM l2_networks b JOIN {table} d ON d.uuid = b.uuid
         WHERE b.zone_uuid = $1 AND b.physical_interface = $2"
    );
    for (i, column) in columns.iter().enumerate() {
        sql.push_str(&format!(" AND d.{column} = ${}", i + 3));
    }
    let mut params = vec![
        Value::String(place.zone.to_owned()),
        Value::String(place.interface.to_owned()),
    ];
    let mut described = Vec::new();
    for column in columns {
        let value = own.get(*column).unwrap_or(&Value::Null);
        described.push(format!("{column} {value}"));
        params.push(value.clone());
    }
    let existing = tx.query(&sql, &params).await?.into_iter().next();
    if let Some(row) = existing {
        let uuid = row
            .get("uuid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(Fault::conflict(format!(
            "{} {uuid} already uses {} on {} in zone {}",
            place.l2_type,
            described.join(", "),
            place.interface,
            place.zone
        ))
        .with_detail("field", *first)
        .with_detail("l2_network_uuid", uuid));
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The concrete resource of the addressed network, from its driver.
async fn resource_of(cx: &MessageContext) -> Result<Arc<dyn Resource>, Fault> {
    let uuid = cx.resource_id()?;
    let network = {
        let mut tx = store(&cx.kernel)?.begin().await?;
        L2_NETWORKS.read(&cx.kernel, &mut tx, uuid).await?
    };
    let l2_type = text(&network, "type").to_owned();
    let driver = cx
        .kernel
        .drivers()
        .get::<L2Networks>(&l2_type)
        .map_err(|_| {
            // A stored type whose plugin is not loaded is the node's state, not bad input.
            Fault::unavailable(format!(
                "L2 network {uuid} is of type `{l2_type}`, which no loaded plugin provides"
            ))
        })?;
    driver.resource(&cx.kernel, network)
}

/// `L2NoVlanNetwork`: no fields or table of its own.
struct NoVlanDriver;

impl L2NetworkDriver for NoVlanDriver {
    fn table(&self) -> Option<&'static str> {
        None
    }

    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault> {
        match params.keys().next() {
            Some(field) => Err(Fault::invalid(
                field,
                format!("unknown field `{field}` for an {L2_NO_VLAN}"),
            )),
            None => Ok(Inventory::new()),
        }
    }

    fn fields(&self) -> Option<Schema> {
        // None: the base's fields are all it takes.
        Some(json_schema!({"type": "object", "additionalProperties": false}))
    }

    fn resource(&self, _kernel: &Kernel, network: Inventory) -> Result<Arc<dyn Resource>, Fault> {
        Ok(Arc::new(NoVlan { network }))
    }
}

/// The base implementation of one L2 network; other types delegate to it.
struct NoVlan {
    network: Inventory,
}

#[async_trait]
impl Resource for NoVlan {
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
        let msg = match msg.take::<AttachL2Cluster>() {
            Ok(msg) => return Handled::reply(attach(&cx.kernel, &self.network, msg).await),
            Err(other) => other,
        };
        match msg.take::<DetachL2Cluster>() {
            Ok(msg) => Handled::reply(detach(&cx.kernel, &self.network, msg).await),
            Err(other) => Handled::NotMine(other),
        }
    }
}

/// L2 networks attach to clusters of their zone.
static CLUSTER_ATTACHMENTS: Attachments = Attachments::new(
    "l2-networks",
    "l2_cluster_refs",
    "l2_network_uuid",
    "clusters",
    "clusters",
    "cluster_uuid",
)
.same("zone_uuid");

async fn attach(
    kernel: &Kernel,
    network: &Inventory,
    msg: AttachL2Cluster,
) -> Result<Inventory, Fault> {
    CLUSTER_ATTACHMENTS
        .attach(kernel, network, &msg.cluster_uuid)
        .await?;
    reread(kernel, network).await
}

async fn detach(
    kernel: &Kernel,
    network: &Inventory,
    msg: DetachL2Cluster,
) -> Result<Inventory, Fault> {
    CLUSTER_ATTACHMENTS
        .detach(kernel, network, &msg.cluster_uuid)
        .await?;
    reread(kernel, network).await
}

async fn reread(kernel: &Kernel, network: &Inventory) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    L2_NETWORKS
        .read(kernel, &mut tx, text(network, "uuid"))
        .await
}

async fn list_clusters(
    kernel: &Kernel,
    uuid: &str,
    query: &PageQuery,
) -> Result<InventoryList, Fault> {
    reread(
        kernel,
        &Inventory::from_iter([("uuid".to_owned(), json!(uuid))]),
    )
    .await?;
    CLUSTER_ATTACHMENTS.list(kernel, uuid, query).await
}
