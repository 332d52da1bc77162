//! L3 networks: IPv4 subnets on L2 networks, their IP ranges, and IP address management
//! (IPAM) for the plugins that need addresses (the VM plugin, network services).
//!
//! Everything that reads and then writes an L3 network's addresses or ranges is a request
//! addressed to the L3 network, so the bus runs it on that network's queue, one after
//! another: no locks, and the `UNIQUE (l3_network_uuid, ip)` constraint backs it anyway.

mod ipv4;

use flatstack_header::infra::HostRecord;
use flatstack_header::network::L2NetworkRecord;
use flatstack_header::network::L3NetworkRecord;
use flatstack_header::network::{
    AllocateIp, CreateIpRange, CreateL3Network, IpRangeUsage, IpUsage, ListIpAddresses,
    ListIpRanges, ReleaseIp, ReleaseIps, IP_RANGE_SERVICE, L3_NETWORK_SERVICE,
};
use flatstack_header::record;
use flatstack_header::vm::{HostFilter, VmWork};
use flatstack_header::{ApiChild, ApiResource, Inventory, InventoryList, PageQuery};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{
    async_trait, Fault, Filter, Kernel, KernelRef, Message, MessageContext, Plugin, PluginBuilder,
};
use flatstack_store::resource::{check_name, new_uuid, store, text, Pager, ResourceTable};
use flatstack_store::{now, Tx};
use ipv4::{dotted, Range};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

static L3_NETWORKS: ResourceTable = ResourceTable::new("l3-networks", "l3_networks")
    .filters(&["name", "l2_network_uuid", "zone_uuid", "account_uuid"])
    .shareable();

static IP_RANGES: ResourceTable = ResourceTable::new("ip-ranges", "ip_ranges").filters(&[
    "name",
    "l3_network_uuid",
    "network_cidr",
]);

pub struct L3NetworkPlugin;

impl Plugin for L3NetworkPlugin {
    fn name(&self) -> &'static str {
        "l3-network"
    }

    fn description(&self) -> &'static str {
        "L3 networks, their IP ranges and IP address management."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its tables refer to L2 networks (and, through them, zones).
        &["l2-network"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        // Only hosts whose cluster is attached to every requested network's L2 can take
        // a VM: the VM plugin does not know how networks reach hosts.
        let kernel = b.kernel();
        b.filter::<HostFilter>(ReachesNetworks(kernel));
        b.migration(Migration::new(
            1,
            "l3 networks",
            "CREATE TABLE l3_networks (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                l2_network_uuid TEXT NOT NULL REFERENCES l2_networks (uuid),
                zone_uuid TEXT NOT NULL REFERENCES zones (uuid),
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ))
        .migration(Migration::new(
            2,
            "ip ranges",
            "CREATE TABLE ip_ranges (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                l3_network_uuid TEXT NOT NULL REFERENCES l3_networks (uuid),
                start_ip TEXT NOT NULL, end_ip TEXT NOT NULL, netmask TEXT NOT NULL,
                gateway TEXT NOT NULL, network_cidr TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        ))
        .migration(Migration::new(
            3,
            "ip addresses",
            "CREATE TABLE ip_addresses (
                uuid TEXT PRIMARY KEY,
                l3_network_uuid TEXT NOT NULL REFERENCES l3_networks (uuid),
                ip_range_uuid TEXT NOT NULL REFERENCES ip_ranges (uuid),
                ip TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                UNIQUE (l3_network_uuid, ip))",
        ))
        .migration(Migration::new(
            4,
            "who holds each ip address",
            // Written with the address, so that what a consumer (a VM) holds can be given
            // back from this record alone: after a restart, or twice, it is the same.
            "ALTER TABLE ip_addresses ADD COLUMN consumer_uuid TEXT;
             CREATE INDEX ip_addresses_by_consumer ON ip_addresses (consumer_uuid);",
        ))
        .migration(Migration::new(
            5,
            "l3 networks owned by an account, and shared or not",
            // The networks made before were admins' and everyone's: they stay so.
            "ALTER TABLE l3_networks ADD COLUMN account_uuid TEXT NOT NULL
                 DEFAULT '00000000000000000000000000000001';
             ALTER TABLE l3_networks ADD COLUMN shared BIGINT NOT NULL DEFAULT 1;
             CREATE INDEX l3_networks_by_account ON l3_networks (account_uuid);",
        ));

        let mut l3 = b.service(L3_NETWORK_SERVICE, Hints::default());
        L3_NETWORKS.serve(&mut l3);
        L3_NETWORKS.serve_record::<L3NetworkRecord, _>(&mut l3);
        l3.handle::<CreateL3Network, _, _>(
            |_, msg, cx| async move { create(&cx.kernel, msg).await },
        )
        .handle::<CreateIpRange, _, _>(|hints, msg, cx| async move {
            let l3 = cx.resource_id()?;
            // A new range may offer addresses below the hint.
            hints.forget(l3);
            create_range(&cx.kernel, l3, msg).await
        })
        .handle::<ListIpRanges, _, _>(|_, msg, cx| async move {
            list_ranges(&cx.kernel, cx.resource_id()?, &msg.0).await
        })
        .handle::<AllocateIp, _, _>(|hints, msg, cx| async move {
            allocate(&cx.kernel, &hints, cx.resource_id()?, msg).await
        })
        .handle::<ReleaseIp, _, _>(|hints, msg, cx| async move {
            release(&cx.kernel, &hints, cx.resource_id()?, msg).await
        })
        .handle::<ReleaseIps, _, _>(|hints, msg, cx| async move {
            release_consumer(&cx.kernel, &hints, &msg.consumer).await
        })
        .handle::<IpUsage, _, _>(|_, _, cx| async move { ip_usage(&cx.kernel).await })
        .handle::<ListIpAddresses, _, _>(|_, _, cx| async move {
            list_addresses(&cx.kernel, cx.resource_id()?).await
        });

        // IP ranges are resources too (show, update, delete); a create sent here is
        // handed to the L3 network's queue.
        let mut ranges = b.service(IP_RANGE_SERVICE, ());
        IP_RANGES.serve(&mut ranges);
        ranges.handle::<CreateIpRange, _, _>(
            |_, msg, cx| async move { forward_range(&cx, msg).await },
        );

        b.register(ApiResource {
            path: "l3-networks",
            service: L3_NETWORK_SERVICE,
            create: CreateL3Network::NAME,
            // Members build their own on the cloud's L2 networks; admins' are shared.
            access: flatstack_header::identity::Access::Shared,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(flatstack_header::inventory::schema::<flatstack_header::inventory::L3NetworkInventory>),
            filters: L3_NETWORKS.filters,
            actions: &[],
            children: &[ApiChild {
                path: "ip-ranges",
                create: CreateIpRange::NAME,
                list: ListIpRanges::NAME,
                inventory: None, // those of `ip-ranges`, whose create this is
            }],
        })
        .register(ApiResource {
            path: "ip-ranges",
            service: IP_RANGE_SERVICE,
            create: CreateIpRange::NAME,
            // Every network's ranges, private ones included: admins only. Members reach
            // their networks' through `/v1/l3-networks/{uuid}/ip-ranges`, which checks the
            // network is theirs (or shared).
            access: flatstack_header::identity::Access::Admin,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(flatstack_header::inventory::schema::<flatstack_header::inventory::IpRangeInventory>),
            filters: IP_RANGES.filters,
            actions: &[],
            children: &[],
        });
        // What refusals call the rows of these tables (kinds, not tables).
        b.register(L3_NETWORKS.table_kind())
            .register(IP_RANGES.table_kind());
    }
}

fn object(value: Value) -> Result<Map<String, Value>, Fault> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Fault::internal("row is an object")),
    }
}

async fn create(kernel: &Kernel, msg: CreateL3Network) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    // The row's foreign key keeps the L2 network from going before the row is written.
    let zone = record::named::<L2NetworkRecord>(kernel, "l2_network_uuid", &msg.l2_network_uuid)
        .await?
        .zone_uuid;
    let row = object(json!({
        "name": msg.name, "description": msg.description,
        "l2_network_uuid": msg.l2_network_uuid, "zone_uuid": zone,
        "account_uuid": msg.account_uuid, "shared": i64::from(msg.shared),
    }))?;
    L3_NETWORKS
        .create(kernel, row, |_, _| Box::pin(async { Ok(()) }))
        .await
}

/// A range as stored, with its parsed form.
struct StoredRange {
    range: Range,
    row: Inventory,
}

impl StoredRange {
    fn uuid(&self) -> &str {
        text(&self.row, "uuid")
    }
}

/// The ranges of an L3 network, lowest first.
async fn ranges_of(tx: &mut Tx, l3: &str) -> Result<Vec<StoredRange>, Fault> {
    let mut filters = Map::new();
    filters.insert("l3_network_uuid".into(), json!(l3));
    stored_ranges(tx, &filters).await
}

/// The ranges matching `filters` (column = value), lowest first.
async fn stored_ranges(
    tx: &mut Tx,
    filters: &Map<String, Value>,
) -> Result<Vec<StoredRange>, Fault> {
    let mut ranges = Vec::new();
    for row in tx.list("ip_ranges", filters).await? {
        let range = Range::parse(
            text(&row, "start_ip"),
            text(&row, "end_ip"),
            text(&row, "netmask"),
            text(&row, "gateway"),
        )
        .map_err(|f| {
            Fault::internal(format!(
                "stored IP range {} is invalid: {}",
                text(&row, "uuid"),
                f.message
            ))
        })?;
        ranges.push(StoredRange { range, row });
    }
    ranges.sort_by_key(|r| r.range.start);
    Ok(ranges)
}

/// Sent unaddressed to the `ip-range` service (`POST /v1/ip-ranges`): hands the create
/// to the L3 network's queue, where it runs serialised with the network's IPAM.
async fn forward_range(cx: &MessageContext, msg: CreateIpRange) -> Result<Inventory, Fault> {
    let Some(l3) = msg.l3_network_uuid.clone() else {
        return Err(Fault::invalid(
            "l3_network_uuid",
            "l3_network_uuid is required (or POST to /v1/l3-networks/{uuid}/ip-ranges)",
        ));
    };
    {
        let mut tx = store(&cx.kernel)?.begin().await?;
        if !tx.exists("l3_networks", &l3).await? {
            return Err(Fault::invalid(
                "l3_network_uuid",
                format!("no L3 network {l3}"),
            ));
        }
    }
    cx.kernel
        .request(L3_NETWORK_SERVICE, msg)
        .resource(l3)
        .await
}

async fn create_range(kernel: &Kernel, l3: &str, msg: CreateIpRange) -> Result<Inventory, Fault> {
    check_name(&msg.name)?;
    if msg
        .l3_network_uuid
        .as_deref()
        .is_some_and(|given| given != l3)
    {
        return Err(Fault::invalid(
            "l3_network_uuid",
            format!("l3_network_uuid differs from the addressed L3 network {l3}"),
        ));
    }
    let range = Range::parse(&msg.start_ip, &msg.end_ip, &msg.netmask, &msg.gateway)?;
    {
        let mut tx = store(kernel)?.begin().await?;
        L3_NETWORKS.read(kernel, &mut tx, l3).await?;
        for other in ranges_of(&mut tx, l3).await? {
            check_fits(&range, &other, l3)?;
        }
    }
    let row = object(json!({
        "name": msg.name, "description": msg.description, "l3_network_uuid": l3,
        "start_ip": dotted(range.start), "end_ip": dotted(range.end),
        "netmask": dotted(range.mask), "gateway": dotted(range.gateway),
        "network_cidr": range.cidr(),
    }))?;
    IP_RANGES
        .create(kernel, row, |_, _| Box::pin(async { Ok(()) }))
        .await
}

/// An L3 network is one subnet with one gateway, and its ranges never overlap: a new
/// range that breaks this conflicts with an existing one (409, naming the field).
fn check_fits(new: &Range, other: &StoredRange, l3: &str) -> Result<(), Fault> {
    let o = &other.range;
    let clash = |field: &str, why: String| {
        Err(Fault::conflict(format!("L3 network {l3}: {why}"))
            .with_detail("field", field)
            .with_detail("ip_range_uuid", other.uuid()))
    };
    if new.mask != o.mask {
        return clash(
            "netmask",
            format!("its subnet is {}, not /{}", o.cidr(), new.prefix()),
        );
    }
    if new.network() != o.network() {
        return clash(
            "start_ip",
            format!("its subnet is {}, not {}", o.cidr(), new.cidr()),
        );
    }
    if new.gateway != o.gateway {
        return clash(
            "gateway",
            format!(
                "its gateway is {}, not {}",
                dotted(o.gateway),
                dotted(new.gateway)
            ),
        );
    }
    if new.overlaps(o) {
        return clash(
            "start_ip",
            format!(
                "{}-{} overlaps range {} ({}-{})",
                dotted(new.start),
                dotted(new.end),
                other.uuid(),
                dotted(o.start),
                dotted(o.end)
            ),
        );
    }
    Ok(())
}

async fn list_ranges(kernel: &Kernel, l3: &str, query: &PageQuery) -> Result<InventoryList, Fault> {
    let mut tx = store(kernel)?.read().await?;
    L3_NETWORKS.read(kernel, &mut tx, l3).await?;
    let mut filters = Map::new();
    filters.insert("l3_network_uuid".into(), json!(l3));
    let pager = Pager {
        what: "ip-ranges",
        sortable: &["name", "created_at", "uuid"],
        default_sort: "created_at",
        key: &["uuid"],
    };
    pager.page(&mut tx, "ip_ranges", &filters, query).await
}

/// Every range's size and allocated addresses.
async fn ip_usage(kernel: &Kernel) -> Result<Vec<IpRangeUsage>, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let mut usage = Vec::new();
    for stored in stored_ranges(&mut tx, &Map::new()).await? {
        let used = tx
            .count_where("ip_addresses", "ip_range_uuid", &json!(stored.uuid()))
            .await?;
        usage.push(IpRangeUsage {
            ip_range_uuid: stored.uuid().to_owned(),
            l3_network_uuid: text(&stored.row, "l3_network_uuid").to_owned(),
            total: u64::from(stored.range.end - stored.range.start) + 1,
            used: used.max(0) as u64,
        });
    }
    Ok(usage)
}

/// The allocated addresses of an L3 network, lowest first.
async fn used_ips(tx: &mut Tx, l3: &str) -> Result<Vec<(u32, Inventory)>, Fault> {
    let mut filters = Map::new();
    filters.insert("l3_network_uuid".into(), json!(l3));
    let mut used = Vec::new();
    for row in tx.list("ip_addresses", &filters).await? {
        let ip = ipv4::parse("ip", text(&row, "ip"))
            .map_err(|f| Fault::internal(format!("stored address: {}", f.message)))?;
        used.push((ip, row));
    }
    used.sort_by_key(|(ip, _)| *ip);
    Ok(used)
}

/// An allocation as callers see it: with its range's netmask and gateway, which a NIC needs.
fn address_inventory(mut row: Inventory, ranges: &[StoredRange]) -> Inventory {
    let range_uuid = text(&row, "ip_range_uuid").to_owned();
    if let Some(range) = ranges.iter().find(|r| r.uuid() == range_uuid) {
        for key in ["netmask", "gateway"] {
            row.insert(key.into(), json!(text(&range.row, key)));
        }
    }
    row
}

/// Per L3 network, an address below which every address of its ranges is taken: where
/// the search for the lowest free one starts, so an allocation costs a few indexed lookups
/// instead of reading every allocated address. Only requests on the network's queue read
/// or move it, one at a time. Without a hint (after a restart, or once a range is added)
/// the search starts from the bottom; the `UNIQUE (l3_network_uuid, ip)` constraint, not
/// the hint, is what guarantees an address is never given twice.
#[derive(Default)]
struct Hints(Mutex<HashMap<String, u32>>);

impl Hints {
    fn map(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn floor(&self, l3: &str) -> u32 {
        self.map().get(l3).copied().unwrap_or(0)
    }

    fn taken_below(&self, l3: &str, ip: u32) {
        self.map().insert(l3.to_owned(), ip);
    }

    fn freed(&self, l3: &str, ip: u32) {
        if let Some(floor) = self.map().get_mut(l3) {
            *floor = (*floor).min(ip);
        }
    }

    fn forget(&self, l3: &str) {
        self.map().remove(l3);
    }
}

/// Allocates `ip` of `range` in `l3` to `consumer`, unless it is allocated already: the
/// address's row, or `None`. One statement: the unique index on the network's addresses
/// decides, and a create beside this one that holds the address uncommitted is waited for.
async fn take_address(
    tx: &mut Tx,
    l3: &str,
    range: &StoredRange,
    ip: u32,
    consumer: &Option<String>,
) -> Result<Option<Inventory>, Fault> {
    let at = now();
    let row = object(json!({
        "uuid": new_uuid(), "l3_network_uuid": l3, "ip_range_uuid": range.uuid(),
        "ip": dotted(ip), "consumer_uuid": consumer, "created_at": at, "updated_at": at,
    }))?;
    Ok(tx
        .insert_unless_taken("ip_addresses", &row)
        .await?
        .then_some(row))
}

/// Allocates the lowest free address of the ranges (lowest first) at or above `floor`.
async fn take_lowest_free(
    tx: &mut Tx,
    l3: &str,
    ranges: &[StoredRange],
    floor: u32,
    consumer: &Option<String>,
) -> Result<Option<(u32, Inventory)>, Fault> {
    for range in ranges {
        // u64: a range may end at 255.255.255.255.
        let mut ip = u64::from(range.range.start.max(floor));
        while ip <= u64::from(range.range.end) {
            let candidate = u32::try_from(ip).map_err(|_| Fault::internal("address overflow"))?;
            if let Some(row) = take_address(tx, l3, range, candidate, consumer).await? {
                return Ok(Some((candidate, row)));
            }
            ip += 1;
        }
    }
    Ok(None)
}

async fn allocate(
    kernel: &Kernel,
    hints: &Hints,
    l3: &str,
    msg: AllocateIp,
) -> Result<Inventory, Fault> {
    let requested = msg
        .ip
        .as_deref()
        .map(|ip| ipv4::parse("ip", ip))
        .transpose()?;
    let mut tx = store(kernel)?.begin().await?;
    let ranges = ranges_of(&mut tx, l3).await?;
    if ranges.is_empty() {
        // An unknown network is a 404, not "no range". A network with ranges exists; the
        // address's foreign key refuses it if it is deleted meanwhile.
        L3_NETWORKS.read(kernel, &mut tx, l3).await?;
    }
    let row = match requested {
        Some(ip) => {
            let range = ranges
                .iter()
                .find(|r| r.range.contains(ip))
                .ok_or_else(|| {
                    Fault::invalid(
                        "ip",
                        format!("{} is in no IP range of L3 network {l3}", dotted(ip)),
                    )
                })?;
            take_address(&mut tx, l3, range, ip, &msg.consumer)
                .await?
                .ok_or_else(|| {
                    Fault::conflict(format!(
                        "{} is already allocated in L3 network {l3}",
                        dotted(ip)
                    ))
                    .with_detail("field", "ip")
                })?
        }
        None => match take_lowest_free(&mut tx, l3, &ranges, hints.floor(l3), &msg.consumer).await?
        {
            Some((ip, row)) => {
                tx.commit(kernel.bus()).await?;
                hints.taken_below(l3, ip.saturating_add(1));
                return Ok(address_inventory(row, &ranges));
            }
            None => {
                let why = if ranges.is_empty() {
                    format!("L3 network {l3} has no IP range")
                } else {
                    let used = tx
                        .count_where("ip_addresses", "l3_network_uuid", &json!(l3))
                        .await?;
                    format!(
                        "every address of L3 network {l3} is allocated ({used} in {} ranges)",
                        ranges.len()
                    )
                };
                return Err(Fault::conflict(format!("no free IP address: {why}"))
                    .with_detail("l3_network_uuid", l3));
            }
        },
    };
    tx.commit(kernel.bus()).await?;
    Ok(address_inventory(row, &ranges))
}

async fn release(kernel: &Kernel, hints: &Hints, l3: &str, msg: ReleaseIp) -> Result<(), Fault> {
    // Parsed and re-printed, so `10.0.0.010`-style spellings cannot miss the stored form.
    let parsed = ipv4::parse("ip", &msg.ip)?;
    let ip = dotted(parsed);
    let mut tx = store(kernel)?.begin().await?;
    L3_NETWORKS.read(kernel, &mut tx, l3).await?;
    let mut filters = Map::new();
    filters.insert("l3_network_uuid".into(), json!(l3));
    filters.insert("ip".into(), json!(ip));
    let found = tx.list("ip_addresses", &filters).await?;
    let Some(row) = found.first() else {
        return Err(
            Fault::not_found(format!("{ip} is not allocated in L3 network {l3}"))
                .with_detail("field", "ip"),
        );
    };
    tx.delete("ip_addresses", text(row, "uuid")).await?;
    tx.commit(kernel.bus()).await?;
    hints.freed(l3, parsed);
    Ok(())
}

/// Gives back every address `consumer` holds, on any network; how many. Not on a network's
/// queue (a recovery does not know the networks): the delete decides, and lowering a hint
/// is always safe.
async fn release_consumer(kernel: &Kernel, hints: &Hints, consumer: &str) -> Result<u64, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let held = tx
        .query(
            "SELECT l3_network_uuid, ip FROM ip_addresses WHERE consumer_uuid = $1",
            &[json!(consumer)],
        )
        .await?;
    let gone = tx
        .statement(
            "DELETE FROM ip_addresses WHERE consumer_uuid = $1",
            &[json!(consumer)],
        )
        .await?;
    tx.commit(kernel.bus()).await?;
    for address in &held {
        if let Ok(ip) = ipv4::parse("ip", text(address, "ip")) {
            hints.freed(text(address, "l3_network_uuid"), ip);
        }
    }
    Ok(gone)
}

async fn list_addresses(kernel: &Kernel, l3: &str) -> Result<InventoryList, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    L3_NETWORKS.read(kernel, &mut tx, l3).await?;
    let ranges = ranges_of(&mut tx, l3).await?;
    let inventories: Vec<Inventory> = used_ips(&mut tx, l3)
        .await?
        .into_iter()
        .map(|(_, row)| address_inventory(row, &ranges))
        .collect();
    Ok(InventoryList {
        next: None,
        total: inventories.len() as u64,
        inventories,
    })
}

/// The clusters the L2 network under L3 network `l3` is attached to.
async fn attached_clusters(kernel: &Kernel, l3: &str) -> Result<Vec<String>, Fault> {
    let l2 = {
        let mut tx = store(kernel)?.read_each().await?;
        let Some(network) = tx.get("l3_networks", l3).await? else {
            return Err(Fault::conflict(format!("L3 network {l3} is gone")));
        };
        text(&network, "l2_network_uuid").to_owned()
    };
    let Some(l2) = record::get::<L2NetworkRecord>(kernel, &l2).await? else {
        return Err(Fault::conflict(format!("L2 network {l2} is gone")));
    };
    Ok(l2.attached_cluster_uuids)
}

/// Keeps the hosts whose cluster is attached to the L2 network of every L3 network the VM
/// asks for.
struct ReachesNetworks(KernelRef);

#[async_trait]
impl Filter<HostFilter> for ReachesNetworks {
    async fn filter(&self, vm: &VmWork, hosts: Vec<HostRecord>) -> Result<Vec<HostRecord>, Fault> {
        let kernel = self.0.get()?;
        let mut reach: Option<std::collections::BTreeSet<String>> = None;
        for l3 in &vm.l3_network_uuids {
            // As the create read them, if it did; else from the networks' owners.
            let known = vm
                .networks
                .iter()
                .find(|n| &n.l3_network_uuid == l3)
                .and_then(|n| n.attached_cluster_uuids.clone());
            let attached = match known {
                Some(attached) => attached,
                None => attached_clusters(&kernel, l3).await?,
            };
            let clusters: std::collections::BTreeSet<String> = attached.into_iter().collect();
            reach = Some(match reach {
                None => clusters,
                Some(so_far) => so_far.intersection(&clusters).cloned().collect(),
            });
        }
        let reach = reach.unwrap_or_default();
        Ok(hosts
            .into_iter()
            .filter(|h| reach.contains(&h.cluster_uuid))
            .collect())
    }
}
