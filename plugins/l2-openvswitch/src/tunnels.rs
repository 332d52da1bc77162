//! The tunnel mesh of each Openvswitch network: one tunnel for every pair of hosts that run
//! VMs on the network, keyed by the network's tunnel key. Each tunnel is a row of
//! `openvswitch_tunnels`, written before the hosts are asked and removed after, and an
//! object on each of its two hosts (`ovs.tunnel.create` / `.delete` through the host's
//! agent, [`CallHostAgent`]).
//!
//! Every change to one network's tunnels is a request addressed to the network on this
//! plugin's service, so they run one at a time: a create joining the mesh, an undo or a
//! release leaving it, a resync. Which hosts need the mesh is read, in that request, from
//! the NICs on the network (`NicRecord`), VMs being created included.

use crate::network::{is_ours, NETWORKS};
use crate::{OPENVSWITCH, SERVICE};
use flatstack_header::infra::{AgentCommand, CallHostAgent, HostQuery, HostRecord, HostStatus};
use flatstack_header::network::{L2Networks, L2_NETWORK_SERVICE};
use flatstack_header::record;
use flatstack_header::vm::{NicQuery, NicRecord, VmState};
use flatstack_header::{GetResource, Inventory, InventoryList, PageQuery};
use flatstack_kernel::bus::ServiceBuilder;
use flatstack_kernel::driver::{call, Resource};
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{request, Fault, Kernel, MessageContext};
use flatstack_store::resource::{new_uuid, row, store, Pager};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The tunnels' table.
pub(crate) const TUNNELS: &str = "openvswitch_tunnels";
/// The agent commands' namespace: `ovs.tunnel.create`, `.delete`, `.list`.
pub const NAMESPACE: &str = "ovs.tunnel";

/// The tunnels of the addressed L2 network (`GET /v1/l2-networks/{uuid}/tunnels`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ListTunnels(pub PageQuery);
request!(ListTunnels = "openvswitch.tunnel.list" => InventoryList, service SERVICE);

/// Makes the addressed network's tunnels what its VMs need: missing ones made, needless
/// ones removed, and every host given back the tunnel ends it lost (and rid of ends it
/// should not have). The action `resync_tunnels`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncTunnels {}
request!(ResyncTunnels = "openvswitch.tunnel.resync" => TunnelResync, service SERVICE);

/// Makes the host of a VM being created join the addressed network's mesh: a tunnel to
/// each other host that runs VMs on the network. Replies with the uuids of the tunnels it
/// made (none if they all existed). On failure it removes what it made and names the host
/// that refused.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureTunnels {
    /// The VM being created: the tunnels made are recorded as its create's.
    pub vm_instance_uuid: String,
    /// Its host.
    pub host_uuid: String,
}
request!(EnsureTunnels = "openvswitch.tunnel.ensure" => Vec<String>, service SERVICE);

/// Removes, of the addressed network's tunnels that a VM's create made (`tunnels`, and
/// those recorded as its create's) or that touch `host_uuid`, those that nothing needs
/// once the VM is gone; those still needed are kept (and no longer recorded as the
/// create's). Idempotent. Replies how many were removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseTunnels {
    /// The VM that goes (its create failed, or it is destroyed).
    pub vm_instance_uuid: String,
    /// Its host, at destroy: the host's tunnels go if this was its last VM on the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<String>,
    /// The tunnels its create made, as the create's slot says.
    #[serde(default)]
    pub tunnels: Vec<String>,
}
request!(ReleaseTunnels = "openvswitch.tunnel.release" => u64, service SERVICE);

/// A tunnel between two hosts of an Openvswitch network, as
/// `GET /v1/l2-networks/{uuid}/tunnels` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelInventory {
    /// The tunnel's uuid.
    pub uuid: String,
    /// Its network.
    pub l2_network_uuid: String,
    /// One end: the host whose uuid sorts first.
    pub host_uuid: String,
    /// The other end.
    pub peer_host_uuid: String,
    /// The network's tunnel key.
    pub tunnel_key: u32,
    /// The network's tunnel protocol, e.g. `gre`.
    pub tunnel_protocol: String,
    /// The VM whose create made it, while that create may still be undone; `null` once
    /// other VMs need it too, or for a tunnel a resync made.
    pub vm_instance_uuid: Option<String>,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
}

/// Two hosts joined by a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct TunnelPair {
    /// The host whose uuid sorts first.
    pub host_uuid: String,
    /// The other.
    pub peer_host_uuid: String,
}

impl TunnelPair {
    fn of(a: &str, b: &str) -> Self {
        let (host, peer) = if a <= b { (a, b) } else { (b, a) };
        TunnelPair {
            host_uuid: host.to_owned(),
            peer_host_uuid: peer.to_owned(),
        }
    }
}

/// What a host was given back or rid of by a resync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostRepair {
    /// The host.
    pub host_uuid: String,
    /// Tunnel ends it had lost, made again.
    pub created: u64,
    /// Tunnel ends of the network it should not have had, removed.
    pub deleted: u64,
}

/// What `resync_tunnels` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TunnelResync {
    /// The network.
    pub l2_network_uuid: String,
    /// How many tunnels it has now.
    pub tunnels: u64,
    /// Tunnels that were missing, made.
    pub added: Vec<TunnelPair>,
    /// Tunnels nothing needed, removed.
    pub removed: Vec<TunnelPair>,
    /// Hosts whose tunnel ends were repaired.
    pub repaired: Vec<HostRepair>,
}

/// Serves the plugin's messages. The two the API sends go to the network's concrete
/// resource, found through its type, as the base's own per-network messages do.
pub(crate) fn serve(service: &mut ServiceBuilder<'_, ()>) {
    service
        .handle::<ListTunnels, _, _>(|_, msg, cx| async move {
            call(&*concrete(&cx).await?, msg, &cx)
                .await
                .map_err(|f| not_ours(&cx, f))
        })
        .handle::<ResyncTunnels, _, _>(|_, msg, cx| async move {
            call(&*concrete(&cx).await?, msg, &cx)
                .await
                .map_err(|f| not_ours(&cx, f))
        })
        .handle::<EnsureTunnels, _, _>(|_, msg, cx| async move {
            ensure(&cx.kernel, cx.resource_id()?, msg).await
        })
        .handle::<ReleaseTunnels, _, _>(|_, msg, cx| async move {
            release(&cx.kernel, cx.resource_id()?, msg).await
        });
}

/// The addressed network's concrete resource, from its type's driver.
async fn concrete(cx: &MessageContext) -> Result<Arc<dyn Resource>, Fault> {
    let uuid = cx.resource_id()?;
    let network: Inventory = cx
        .kernel
        .request(L2_NETWORK_SERVICE, GetResource {})
        .resource(uuid)
        .await?;
    let l2_type = network
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let driver = cx
        .kernel
        .drivers()
        .get::<L2Networks>(&l2_type)
        .map_err(|_| {
            Fault::unavailable(format!(
                "L2 network {uuid} is of type `{l2_type}`, which no loaded plugin provides"
            ))
        })?;
    driver.resource(&cx.kernel, network)
}

/// A network of another type does not know the message: say so plainly.
fn not_ours(cx: &MessageContext, fault: Fault) -> Fault {
    if fault.detail_str("field") != Some("message") {
        return fault;
    }
    let uuid = cx.resource_id().unwrap_or_default();
    Fault::invalid(
        "uuid",
        format!("L2 network {uuid} is not an {OPENVSWITCH} network: it has no tunnels"),
    )
}

/// An Openvswitch network's own record.
struct Net {
    uuid: String,
    bridge: String,
    protocol: String,
    key: u64,
}

async fn net(kernel: &Kernel, uuid: &str) -> Result<Net, Fault> {
    let row = {
        let mut tx = store(kernel)?.read().await?;
        tx.get(NETWORKS, uuid).await?
    };
    let row = row.ok_or_else(|| {
        Fault::conflict(format!(
            "L2 network {uuid} is not an {OPENVSWITCH} network (or is gone)"
        ))
    })?;
    let text = |column: &str| {
        row.get(column)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(Net {
        uuid: uuid.to_owned(),
        bridge: text("bridge"),
        protocol: text("tunnel_protocol"),
        key: row.get("tunnel_key").and_then(Value::as_u64).unwrap_or(0),
    })
}

// ANCHOR: needed_hosts
/// The hosts that need the network's mesh: those of the VMs with a NIC on it, VMs being
/// created included, but not `except` (a VM going away) nor VMs destroyed or being
/// destroyed. Read from the VM plugin's published NIC records, never its tables.
async fn needed_hosts(kernel: &Kernel, l2: &str, except: &str) -> Result<BTreeSet<String>, Fault> {
    let nics = record::find::<NicRecord>(
        kernel,
        NicQuery {
            l2_network_uuid: Some(l2.to_owned()),
            ..Default::default()
        },
    )
    .await?;
    Ok(nics
        .into_iter()
        .filter(|nic| nic.vm_instance_uuid != except)
        .filter(|nic| !matches!(nic.vm_state, VmState::Destroyed | VmState::Destroying))
        .filter_map(|nic| nic.host_uuid)
        .collect())
}
// ANCHOR_END: needed_hosts

/// The network's tunnels, by pair.
async fn tunnels_of(kernel: &Kernel, l2: &str) -> Result<Vec<TunnelInventory>, Fault> {
    let rows = {
        let mut tx = store(kernel)?.read().await?;
        let mut filter = Inventory::new();
        filter.insert("l2_network_uuid".into(), json!(l2));
        tx.list_by(TUNNELS, &filter, &["host_uuid", "peer_host_uuid"])
            .await?
    };
    rows.into_iter().map(tunnel).collect()
}

/// A row of the tunnels' table, read.
fn tunnel(row: Inventory) -> Result<TunnelInventory, Fault> {
    serde_json::from_value(Value::Object(row))
        .map_err(|e| Fault::internal(format!("a row of {TUNNELS} does not read: {e}")))
}

/// The hosts' records, by uuid (a host since deleted is absent).
async fn hosts(
    kernel: &Kernel,
    uuids: &BTreeSet<String>,
) -> Result<BTreeMap<String, HostRecord>, Fault> {
    let mut out = BTreeMap::new();
    for uuid in uuids {
        if let Some(host) = record::get::<HostRecord>(kernel, uuid).await? {
            out.insert(uuid.clone(), host);
        }
    }
    Ok(out)
}

/// Both ends of each tunnel.
fn ends(tunnels: &[TunnelInventory]) -> BTreeSet<String> {
    let mut ends = BTreeSet::new();
    for tunnel in tunnels {
        ends.insert(tunnel.host_uuid.clone());
        ends.insert(tunnel.peer_host_uuid.clone());
    }
    ends
}

// ANCHOR: agent
/// Sends `name` with `body` to a host's agent, through the host plugin and the host's
/// driver; a failure names the host.
async fn agent(
    kernel: &Kernel,
    host: &HostRecord,
    name: &str,
    body: Value,
) -> Result<Value, Fault> {
    let command = AgentCommand::new(name, body);
    match kernel
        .ask(CallHostAgent { command })
        .resource(&host.uuid)
        .await
    {
        Ok(answer) => Ok(answer),
        Err(fault) => Err(Fault::new(
            fault.code,
            format!(
                "host {} ({}) refused `{name}`: {}",
                host.name, host.uuid, fault.message
            ),
        )
        .with_detail("host_uuid", host.uuid.as_str())
        .with_detail("command", name)),
    }
}
// ANCHOR_END: agent

/// The id of the tunnel end, on a host, towards `peer` on network `l2`.
fn end_id(l2: &str, peer: &str) -> String {
    format!("{l2}-{peer}")
}

/// Makes a tunnel's two ends. If the second host refuses, the first end is taken back.
async fn make_ends(
    kernel: &Kernel,
    net: &Net,
    a: &HostRecord,
    b: &HostRecord,
) -> Result<(), Fault> {
    make_end(kernel, net, a, b).await?;
    if let Err(fault) = make_end(kernel, net, b, a).await {
        return Err(match remove_end(kernel, &net.uuid, a, &b.uuid).await {
            Ok(()) => fault,
            Err(undo) => fault.with_undo_failure(None, undo),
        });
    }
    Ok(())
}

/// The end on `host` of the tunnel to `peer` (made again, the same, if it is there).
async fn make_end(
    kernel: &Kernel,
    net: &Net,
    host: &HostRecord,
    peer: &HostRecord,
) -> Result<(), Fault> {
    let body = json!({
        "id": end_id(&net.uuid, &peer.uuid), "l2_network_uuid": net.uuid,
        "bridge": net.bridge, "protocol": net.protocol, "key": net.key,
        "remote_ip": peer.management_ip, "remote_host_uuid": peer.uuid,
    });
    agent(kernel, host, &format!("{NAMESPACE}.create"), body).await?;
    Ok(())
}

/// Removes the end on `host` of the tunnel to `peer` (nothing if it is not there).
async fn remove_end(kernel: &Kernel, l2: &str, host: &HostRecord, peer: &str) -> Result<(), Fault> {
    let body = json!({"id": end_id(l2, peer)});
    agent(kernel, host, &format!("{NAMESPACE}.delete"), body).await?;
    Ok(())
}

/// Removes a tunnel: its ends on the hosts still there, then its row. A host that refuses
/// leaves the row, so that the removal is tried again later.
async fn remove(
    kernel: &Kernel,
    tunnel: &TunnelInventory,
    hosts: &BTreeMap<String, HostRecord>,
) -> Result<(), Fault> {
    let ends = [
        (&tunnel.host_uuid, &tunnel.peer_host_uuid),
        (&tunnel.peer_host_uuid, &tunnel.host_uuid),
    ];
    for (host, peer) in ends {
        if let Some(host) = hosts.get(host) {
            remove_end(kernel, &tunnel.l2_network_uuid, host, peer).await?;
        }
    }
    let mut tx = store(kernel)?.begin().await?;
    tx.statement(
        "DELETE FROM openvswitch_tunnels WHERE uuid = $1",
        &[json!(tunnel.uuid)],
    )
    .await?;
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// Records a tunnel (before its hosts are asked, so that a crash in between leaves a row
/// that says what to remove); its uuid.
async fn record_tunnel(
    kernel: &Kernel,
    net: &Net,
    pair: &TunnelPair,
    vm: Option<&str>,
) -> Result<TunnelInventory, Fault> {
    let tunnel = TunnelInventory {
        uuid: new_uuid(),
        l2_network_uuid: net.uuid.clone(),
        host_uuid: pair.host_uuid.clone(),
        peer_host_uuid: pair.peer_host_uuid.clone(),
        tunnel_key: u32::try_from(net.key).unwrap_or_default(),
        tunnel_protocol: net.protocol.clone(),
        vm_instance_uuid: vm.map(str::to_owned),
        created_at: flatstack_store::now(),
    };
    let value = serde_json::to_value(&tunnel).map_err(|e| Fault::internal(e.to_string()))?;
    let mut tx = store(kernel)?.begin().await?;
    tx.insert(TUNNELS, &row(value)).await?;
    tx.commit(kernel.bus()).await?;
    Ok(tunnel)
}

// ANCHOR: ensure
/// [`EnsureTunnels`]: the VM's host joins the mesh. Each missing tunnel is recorded as
/// this create's, then made on both hosts; if a host refuses, every tunnel this request
/// made is removed again and the refusal, naming the host, is the answer.
async fn ensure(kernel: &Kernel, l2: &str, msg: EnsureTunnels) -> Result<Vec<String>, Fault> {
    let net = net(kernel, l2).await?;
    let mut needed = needed_hosts(kernel, l2, "").await?;
    needed.insert(msg.host_uuid.clone());
    let existing: BTreeSet<TunnelPair> = tunnels_of(kernel, l2)
        .await?
        .into_iter()
        .map(|t| TunnelPair::of(&t.host_uuid, &t.peer_host_uuid))
        .collect();
    let hosts = hosts(kernel, &needed).await?;
    let me = hosts
        .get(&msg.host_uuid)
        .ok_or_else(|| Fault::not_found(format!("no host {}", msg.host_uuid)))?;
    let mut made: Vec<TunnelInventory> = Vec::new();
    for peer in hosts.values().filter(|h| h.uuid != me.uuid) {
        let pair = TunnelPair::of(&me.uuid, &peer.uuid);
        if existing.contains(&pair) {
            continue;
        }
        let tunnel = record_tunnel(kernel, &net, &pair, Some(&msg.vm_instance_uuid)).await?;
        made.push(tunnel);
        if let Err(fault) = make_ends(kernel, &net, me, peer).await {
            // Back to what was there before this request: nothing it made stays.
            let mut fault = fault;
            for tunnel in made.iter().rev() {
                if let Err(undo) = remove(kernel, tunnel, &hosts).await {
                    tracing::error!(tunnel = %tunnel.uuid, %undo, "cannot remove a tunnel a failed create made");
                    fault = fault.with_undo_failure(None, undo);
                }
            }
            return Err(fault);
        }
    }
    if !made.is_empty() {
        tracing::info!(network = %l2, vm = %msg.vm_instance_uuid, host = %me.uuid,
            tunnels = made.len(), "joined the tunnel mesh");
    }
    Ok(made.into_iter().map(|t| t.uuid).collect())
}
// ANCHOR_END: ensure

// ANCHOR: release
/// [`ReleaseTunnels`]: of the tunnels the VM's create made or that touch its host, those
/// nothing needs without the VM go; a tunnel the create made that others now need is kept
/// and no longer the create's. Every removal is tried; the first failure is the answer.
async fn release(kernel: &Kernel, l2: &str, msg: ReleaseTunnels) -> Result<u64, Fault> {
    let vm = msg.vm_instance_uuid.as_str();
    let candidates: Vec<TunnelInventory> = tunnels_of(kernel, l2)
        .await?
        .into_iter()
        .filter(|t| {
            msg.tunnels.contains(&t.uuid)
                || t.vm_instance_uuid.as_deref() == Some(vm)
                || msg
                    .host_uuid
                    .as_ref()
                    .is_some_and(|h| *h == t.host_uuid || *h == t.peer_host_uuid)
        })
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let needed = needed_hosts(kernel, l2, vm).await?;
    let hosts = hosts(kernel, &ends(&candidates)).await?;
    let (mut removed, mut failure) = (0, None::<Fault>);
    for tunnel in candidates {
        if needed.contains(&tunnel.host_uuid) && needed.contains(&tunnel.peer_host_uuid) {
            if tunnel.vm_instance_uuid.as_deref() == Some(vm) {
                let mut tx = store(kernel)?.begin().await?;
                tx.statement(
                    "UPDATE openvswitch_tunnels SET vm_instance_uuid = NULL WHERE uuid = $1",
                    &[json!(tunnel.uuid)],
                )
                .await?;
                tx.commit(kernel.bus()).await?;
            }
            continue;
        }
        match remove(kernel, &tunnel, &hosts).await {
            Ok(()) => removed += 1,
            Err(fault) => {
                tracing::warn!(tunnel = %tunnel.uuid, %fault, "cannot remove a tunnel");
                failure.get_or_insert(fault);
            }
        }
    }
    match failure {
        Some(fault) => Err(fault),
        None => Ok(removed),
    }
}
// ANCHOR_END: release

/// `GET /v1/l2-networks/{uuid}/tunnels`: a page of them, by host and peer unless `query`
/// sorts otherwise.
pub(crate) async fn list(
    kernel: &Kernel,
    network: &Inventory,
    query: &PageQuery,
) -> Result<InventoryList, Fault> {
    let l2 = network
        .get("uuid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut filter = Inventory::new();
    filter.insert("l2_network_uuid".into(), json!(l2));
    let pager = Pager {
        what: "tunnels",
        sortable: &["host_uuid", "peer_host_uuid", "created_at", "uuid"],
        default_sort: "host_uuid,peer_host_uuid",
        key: &["uuid"],
    };
    let mut tx = store(kernel)?.read().await?;
    let mut page = pager.page(&mut tx, TUNNELS, &filter, query).await?;
    // Each row as the typed inventory shows it.
    for row in &mut page.inventories {
        match serde_json::to_value(tunnel(std::mem::take(row))?) {
            Ok(Value::Object(typed)) => *row = typed,
            _ => return Err(Fault::internal("a tunnel is an object")),
        }
    }
    Ok(page)
}

// ANCHOR: resync
/// `resync_tunnels`: the rows made what the VMs need, then every host's ends what the rows
/// say — those it lost made again, those it should not have removed.
pub(crate) async fn resync(kernel: &Kernel, network: &Inventory) -> Result<TunnelResync, Fault> {
    if !is_ours(network) {
        return Err(Fault::internal("an Openvswitch resource for another type"));
    }
    let l2 = network
        .get("uuid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let net = net(kernel, l2).await?;
    let needed = needed_hosts(kernel, l2, "").await?;
    let rows = tunnels_of(kernel, l2).await?;
    // Every host that may hold an end: those needed, those of the rows, and the other
    // connected hosts of the clusters the network is attached to.
    let mut all: BTreeSet<String> = needed.clone();
    all.extend(ends(&rows));
    let clusters = network
        .get("attached_cluster_uuids")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut bystanders = BTreeSet::new();
    for cluster in clusters.iter().filter_map(Value::as_str) {
        let query = HostQuery {
            cluster_uuid: Some(cluster.to_owned()),
            status: Some(HostStatus::Connected),
            ..Default::default()
        };
        for host in record::find::<HostRecord>(kernel, query).await? {
            if all.insert(host.uuid.clone()) {
                bystanders.insert(host.uuid);
            }
        }
    }
    let hosts = hosts(kernel, &all).await?;
    let wanted: BTreeSet<TunnelPair> = needed
        .iter()
        .flat_map(|a| {
            needed
                .iter()
                .filter(move |b| a < *b)
                .map(move |b| TunnelPair::of(a, b))
        })
        .filter(|pair| {
            hosts.contains_key(&pair.host_uuid) && hosts.contains_key(&pair.peer_host_uuid)
        })
        .collect();
    let mut report = TunnelResync {
        l2_network_uuid: l2.to_owned(),
        tunnels: wanted.len() as u64,
        added: Vec::new(),
        removed: Vec::new(),
        repaired: Vec::new(),
    };
    let mut have = BTreeSet::new();
    for tunnel in rows {
        let pair = TunnelPair::of(&tunnel.host_uuid, &tunnel.peer_host_uuid);
        if wanted.contains(&pair) {
            have.insert(pair);
        } else {
            remove(kernel, &tunnel, &hosts).await?;
            report.removed.push(pair);
        }
    }
    for pair in wanted.difference(&have) {
        record_tunnel(kernel, &net, pair, None).await?;
        report.added.push(pair.clone());
    }
    // Each host's ends, compared with what it should hold.
    for host in hosts.values() {
        let expected: BTreeSet<String> = wanted
            .iter()
            .filter_map(|p| match (&p.host_uuid, &p.peer_host_uuid) {
                (a, b) if *a == host.uuid => Some(b.clone()),
                (a, b) if *b == host.uuid => Some(a.clone()),
                _ => None,
            })
            .collect();
        let listed = agent(
            kernel,
            host,
            &format!("{NAMESPACE}.list"),
            json!({"l2_network_uuid": l2}),
        )
        .await;
        let listed = match listed {
            Ok(listed) => listed,
            // A host with no VM on the network is asked only in passing.
            Err(fault) if bystanders.contains(&host.uuid) => {
                tracing::warn!(host = %host.uuid, %fault, "cannot list a host's tunnel ends");
                continue;
            }
            Err(fault) => return Err(fault),
        };
        let held: BTreeSet<String> = listed["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["remote_host_uuid"].as_str().map(str::to_owned))
            .collect();
        let mut repair = HostRepair {
            host_uuid: host.uuid.clone(),
            created: 0,
            deleted: 0,
        };
        for peer in expected.difference(&held) {
            if let Some(peer) = hosts.get(peer) {
                make_end(kernel, &net, host, peer).await?;
                repair.created += 1;
            }
        }
        for peer in held.difference(&expected) {
            remove_end(kernel, l2, host, peer).await?;
            repair.deleted += 1;
        }
        if repair.created + repair.deleted > 0 {
            report.repaired.push(repair);
        }
    }
    if !(report.added.is_empty() && report.removed.is_empty() && report.repaired.is_empty()) {
        tracing::info!(network = %l2, added = report.added.len(), removed = report.removed.len(),
            repaired = report.repaired.len(), "tunnels resynchronised");
    }
    Ok(report)
}
// ANCHOR_END: resync

/// Removes every tunnel of a network that is gone: its ends on the hosts, then its rows.
pub(crate) async fn remove_all(kernel: &Kernel, l2: &str) -> Result<u64, Fault> {
    let tunnels = tunnels_of(kernel, l2).await?;
    let hosts = hosts(kernel, &ends(&tunnels)).await?;
    let mut removed = 0;
    for tunnel in &tunnels {
        remove(kernel, tunnel, &hosts).await?;
        removed += 1;
    }
    Ok(removed)
}

/// The networks that have tunnels recorded.
pub(crate) async fn networks_with_tunnels(kernel: &Kernel) -> Result<BTreeSet<String>, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let rows = tx
        .query(
            "SELECT DISTINCT l2_network_uuid AS uuid FROM openvswitch_tunnels",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("uuid").and_then(Value::as_str).map(str::to_owned))
        .collect())
}
