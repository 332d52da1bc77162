//! Where the plugin takes part in other components' flows: the VM's create
//! (`vm.pre-instantiate`, do/undo) and destroy (`vm.release`), the host's connection
//! (`host.connect`), the L2 network's delete (`resource.deleted`), and the node's start (a
//! reconciler).

use crate::network::{is_ours, Keys};
use crate::tunnels::{self, EnsureTunnels, ReleaseTunnels, ResyncTunnels};
use crate::{DAEMON, OPENVSWITCH, PLUGIN};
use flatstack_header::infra::{AgentCommand, HostConnect, HostConnection, HostRecord, Hosts};
use flatstack_header::network::{L2NetworkQuery, L2NetworkRecord};
use flatstack_header::points::Deleted;
use flatstack_header::record;
use flatstack_header::vm::{VmPreInstantiate, VmRelease, VmWork};
use flatstack_header::ResourceChange;
use flatstack_kernel::{async_trait, DoUndo, Fault, Kernel, KernelRef, Observe, Release};
use flatstack_store::resource::store;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The VM's part in the tunnel mesh of each Openvswitch network it has a NIC on.
pub(crate) struct Mesh(pub(crate) KernelRef);

// ANCHOR: made
/// The tunnels this create made, by network: what its undo takes back, and only those.
/// A type private to this plugin, so no other plugin can read or clobber the slot.
#[derive(Clone, Default)]
struct Made(Vec<(String, Vec<String>)>);
// ANCHOR_END: made

/// The Openvswitch networks of a VM's NICs, each once.
fn networks_of(vm: &VmWork) -> BTreeSet<String> {
    vm.nics
        .iter()
        .filter(|nic| nic.l2_type == OPENVSWITCH)
        .map(|nic| nic.l2_network_uuid.clone())
        .collect()
}

/// The networks where the tunnels this VM's create made are recorded, whatever memory says
/// (after a restart the slot is empty).
async fn recorded_networks(kernel: &Kernel, vm: &str) -> Result<BTreeSet<String>, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let rows = tx
        .query(
            "SELECT DISTINCT l2_network_uuid AS uuid FROM openvswitch_tunnels
             WHERE vm_instance_uuid = $1",
            &[json!(vm)],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("uuid").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

impl Mesh {
    /// Takes the VM out of each network's mesh: what `made` lists, what is recorded as its
    /// create's, and (at destroy) what touches `host`, where nothing needs it any more.
    async fn leave(
        &self,
        kernel: &Kernel,
        vm: &VmWork,
        host: Option<&str>,
        made: &Made,
    ) -> Result<(), Fault> {
        let mut networks = recorded_networks(kernel, &vm.vm_uuid).await?;
        networks.extend(made.0.iter().map(|(network, _)| network.clone()));
        if host.is_some() {
            networks.extend(networks_of(vm));
        }
        let mut failure = None::<Fault>;
        for network in networks {
            let tunnels = made
                .0
                .iter()
                .filter(|(n, _)| *n == network)
                .flat_map(|(_, t)| t.iter().cloned())
                .collect();
            let release = ReleaseTunnels {
                vm_instance_uuid: vm.vm_uuid.clone(),
                host_uuid: host.map(str::to_owned),
                tunnels,
            };
            if let Err(fault) = kernel.ask(release).resource(&network).await {
                failure.get_or_insert(fault);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

// ANCHOR: pre_instantiate
#[async_trait]
impl DoUndo<VmPreInstantiate> for Mesh {
    /// Before the VM starts: its host joins the mesh of each of its Openvswitch networks.
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let networks = networks_of(vm);
        if networks.is_empty() {
            return Ok(()); // most VMs: nothing to do, nothing read
        }
        let kernel = self.0.get()?;
        let host = vm
            .host_uuid()
            .ok_or_else(|| Fault::internal("a VM reaches vm.pre-instantiate with its host"))?
            .to_owned();
        let mut made = Made::default();
        for network in networks {
            let ensure = EnsureTunnels {
                vm_instance_uuid: vm.vm_uuid.clone(),
                host_uuid: host.clone(),
            };
            match kernel.ask(ensure).resource(&network).await {
                Ok(tunnels) => made.0.push((network, tunnels)),
                Err(fault) => {
                    // This run failed, so no undo follows: take back what it made so far.
                    return Err(match self.leave(&kernel, vm, None, &made).await {
                        Ok(()) => fault,
                        Err(undo) => fault.with_undo_failure(None, undo),
                    });
                }
            }
        }
        vm.slots.insert(made);
        Ok(())
    }

    /// A later step failed (or recovery undoes a create a stop interrupted): the tunnels
    /// this create made go, unless other VMs now need them.
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let made = vm.slots.remove::<Made>().unwrap_or_default();
        let kernel = self.0.get()?;
        self.leave(&kernel, vm, None, &made).await
    }
}
// ANCHOR_END: pre_instantiate

// ANCHOR: vm_release
#[async_trait]
impl Release<VmRelease> for Mesh {
    /// The VM is destroyed: where it was its host's last VM on a network, the host's
    /// tunnels of that network go (on both ends). The same when run twice.
    async fn release(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let host = vm.host_uuid().map(str::to_owned);
        self.leave(&kernel, vm, host.as_deref(), &Made::default())
            .await
    }
}
// ANCHOR_END: vm_release

/// Refuses to connect a host that does not run Open vSwitch in a cluster an Openvswitch
/// network is attached to.
pub(crate) struct DaemonCheck(pub(crate) KernelRef);

// ANCHOR: host_connect
#[async_trait]
impl DoUndo<HostConnect> for DaemonCheck {
    async fn run(&self, connection: &mut HostConnection) -> Result<(), Fault> {
        let kernel = self.0.get()?;
        let host: HostRecord = serde_json::from_value(Value::Object(connection.host.clone()))
            .map_err(|e| Fault::internal(format!("a host's inventory does not read: {e}")))?;
        let networks: Vec<String> = record::find::<L2NetworkRecord>(
            &kernel,
            L2NetworkQuery {
                l2_type: Some(OPENVSWITCH.to_owned()),
                ..Default::default()
            },
        )
        .await?
        .into_iter()
        .filter(|n| n.attached_cluster_uuids.contains(&host.cluster_uuid))
        .map(|n| n.uuid)
        .collect();
        if networks.is_empty() {
            return Ok(());
        }
        // The connect runs on the host's own queue, where a `CallHostAgent` would wait
        // behind it: ask the driver directly.
        let driver = kernel.drivers().get::<Hosts>(&host.host_type)?;
        let status = AgentCommand::new("daemon.status", json!({"daemon": DAEMON}));
        let answer = driver
            .call_agent(&kernel, &host, &status)
            .await
            .map_err(|f| {
                Fault::new(
                    f.code,
                    format!(
                        "cannot ask host {} ({}) whether Open vSwitch runs: {}",
                        host.name, host.uuid, f.message
                    ),
                )
            })?;
        if answer["running"] != json!(true) {
            return Err(Fault::conflict(format!(
                "host {} ({}) does not run the Open vSwitch daemon (`{DAEMON}`), which the \
                 {OPENVSWITCH} L2 networks attached to its cluster need: {}",
                host.name,
                host.uuid,
                networks.join(", ")
            ))
            .with_detail("host_uuid", host.uuid.as_str())
            .with_detail("plugin", PLUGIN));
        }
        Ok(())
    }

    async fn undo(&self, _connection: &mut HostConnection) -> Result<(), Fault> {
        Ok(()) // a check: nothing to take back
    }
}
// ANCHOR_END: host_connect

// ANCHOR: deleted
/// A deleted Openvswitch network's key is free, and its tunnels go after it: the base owns
/// the delete (the store removes the driver's row with the base's), the tunnels are the
/// type's own.
pub(crate) struct NetworkDeleted {
    pub(crate) keys: Arc<Keys>,
    pub(crate) kernel: KernelRef,
}

#[async_trait]
impl Observe<Deleted> for NetworkDeleted {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind != "l2-networks" || !is_ours(&change.inventory) {
            return Ok(());
        }
        self.keys.forget(&change.uuid);
        let kernel = self.kernel.get()?;
        // An observer's failure is only logged: the reconciler at start removes them.
        let removed = tunnels::remove_all(&kernel, &change.uuid).await?;
        if removed > 0 {
            tracing::info!(network = %change.uuid, removed, "removed a deleted network's tunnels");
        }
        Ok(())
    }
}
// ANCHOR_END: deleted

// ANCHOR: reconcile
/// At start, after the VM plugin has settled interrupted creates (undoing them calls our
/// undo): every Openvswitch network's tunnels made what its VMs need, on the hosts too,
/// and the tunnels of networks deleted meanwhile removed. A network that cannot be settled
/// is reported; the others still are.
pub(crate) async fn reconcile(kernel: Kernel) -> Result<(), Fault> {
    let networks = record::find::<L2NetworkRecord>(
        &kernel,
        L2NetworkQuery {
            l2_type: Some(OPENVSWITCH.to_owned()),
            ..Default::default()
        },
    )
    .await?;
    let mut failure = None::<Fault>;
    let mut alive = BTreeSet::new();
    for network in networks {
        alive.insert(network.uuid.clone());
        if let Err(fault) = kernel.ask(ResyncTunnels {}).resource(&network.uuid).await {
            tracing::warn!(network = %network.uuid, %fault, "cannot resynchronise its tunnels");
            failure.get_or_insert(fault);
        }
    }
    for gone in tunnels::networks_with_tunnels(&kernel).await? {
        if !alive.contains(&gone) {
            if let Err(fault) = tunnels::remove_all(&kernel, &gone).await {
                failure.get_or_insert(fault);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}
// ANCHOR_END: reconcile
