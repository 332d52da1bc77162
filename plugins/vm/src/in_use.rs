//! What VMs use, kept from going while they use it: the VM plugin knows its VMs use their
//! image, their instance offering, and — through their NICs, recorded with it — the L2
//! network under their L3 networks, in their host's cluster. So it refuses, through asynchronous vetoes that
//! read the store, to delete an image or an offering that a VM uses, or to detach an L2
//! network from a cluster while NICs of VMs there use it; the refusal (`409`) names the
//! VMs. A VM counts from the moment its row exists (`Creating`); one being created counts
//! even before it has NICs and a host.
//!
//! Why vetoes and not foreign keys: the owner's delete awaits them inside its transaction,
//! which holds SQLite's one writer, so their read sees exactly what the delete changes;
//! adding a foreign key to `vm_instances` would mean rebuilding the table on SQLite (with a
//! fixed column list, while its schema is still changing). The create's side of the race
//! is closed where the VM's row is written: once it is committed, the create asks the
//! owners whether its image and offering are still there (`flow.rs`, `Record`).

use crate::VMS;
use flatstack_header::infra::{HostQuery, HostRecord};
use flatstack_header::points::{DeleteCheck, DetachCheck};
use flatstack_header::record;
use flatstack_header::vm::{VmReserve, VmStarted, VmWork};
use flatstack_header::{Attachment, ResourceChange};
use flatstack_kernel::{async_trait, AsyncVeto, DoUndo, Fault, KernelRef, Observe, PluginBuilder};
use flatstack_store::resource::{store, text};
use flatstack_store::{TableKind, Users};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Registers the vetoes, what they need to know of VMs being created, and the names of
/// the VM plugin's tables.
pub(crate) fn build(b: &mut PluginBuilder<'_>) {
    let kernel = b.kernel();
    let creating = Creating::default();
    b.register(VMS.table_kind())
        .register(TableKind::part("vm_nics", VMS.kind, "vm_instance_uuid"));
    b.veto_async::<DeleteCheck>(Sources(kernel.clone()));
    b.veto_async::<DetachCheck>(Networks {
        kernel: kernel.clone(),
        creating: creating.clone(),
    });
    // Known before the VM's row is recorded, forgotten once its NICs and host are.
    b.do_undo::<VmReserve>(Track(creating.clone())).order(-100);
    b.observe::<VmStarted>(Track(creating));
}

/// The L2 networks of each VM being created, by VM: known from its first step, before its
/// NICs are recorded (with its host, when they are allocated).
#[derive(Clone, Default)]
struct Creating(Arc<Mutex<BTreeMap<String, Vec<String>>>>);

impl Creating {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps [`Creating`] up to date: from the create's first step until the VM runs (its
/// NICs and host recorded) or the create is undone.
struct Track(Creating);

#[async_trait]
impl DoUndo<VmReserve> for Track {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        self.0.lock().insert(
            vm.vm_uuid.clone(),
            vm.networks
                .iter()
                .map(|n| n.l2_network_uuid.clone())
                .collect(),
        );
        Ok(())
    }

    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        self.0.lock().remove(&vm.vm_uuid);
        Ok(())
    }
}

#[async_trait]
impl Observe<VmStarted> for Track {
    async fn observe(&self, vm: &VmWork) -> Result<(), Fault> {
        self.0.lock().remove(&vm.vm_uuid);
        Ok(())
    }
}

/// Refuses to delete an image or an instance offering while VMs (in any state, `Creating`
/// included) were made from it.
struct Sources(KernelRef);

#[async_trait]
impl AsyncVeto<DeleteCheck> for Sources {
    async fn check(&self, change: &ResourceChange) -> Result<(), Fault> {
        let column = match change.kind {
            "images" => "image_uuid",
            "instance-offerings" => "instance_offering_uuid",
            _ => return Ok(()),
        };
        let kernel = self.0.get()?;
        // The delete holds the writer: read beside it, never begin.
        let mut tx = store(&kernel)?.read().await?;
        let mut users = Users::new();
        users
            .query(
                &mut tx,
                VMS.kind,
                &format!("SELECT uuid AS u FROM vm_instances WHERE {column} = $1"),
                &[json!(change.uuid)],
            )
            .await?;
        users.check(&format!("cannot delete {} {}", change.kind, change.uuid))
    }
}

/// Refuses to detach an L2 network from a cluster while NICs of VMs in that cluster (or
/// VMs not yet placed) are on an L3 network on it.
struct Networks {
    kernel: KernelRef,
    creating: Creating,
}

#[async_trait]
impl AsyncVeto<DetachCheck> for Networks {
    async fn check(&self, attachment: &Attachment) -> Result<(), Fault> {
        if attachment.kind != "l2-networks" || attachment.target_kind != "clusters" {
            return Ok(());
        }
        let (l2, cluster) = (&attachment.uuid, &attachment.target_uuid);
        let kernel = self.kernel.get()?;
        // What the host plugin knows: the cluster's hosts.
        let host_query = HostQuery {
            cluster_uuid: Some(cluster.clone()),
            ..Default::default()
        };
        let in_cluster: BTreeSet<String> = record::find::<HostRecord>(&kernel, host_query)
            .await?
            .into_iter()
            .map(|h| h.uuid)
            .collect();
        let mut users = Users::new();
        // A VM without a host has not been placed yet: it may be placed in this cluster.
        let mut tx = store(&kernel)?.read().await?;
        for nic in tx
            .query(
                "SELECT DISTINCT v.uuid AS u, v.host_uuid AS host FROM vm_nics n
                   JOIN vm_instances v ON v.uuid = n.vm_instance_uuid
                  WHERE n.l2_network_uuid = $1",
                &[json!(l2)],
            )
            .await?
        {
            let placed_elsewhere = nic
                .get("host")
                .and_then(|h| h.as_str())
                .is_some_and(|h| !in_cluster.contains(h));
            if !placed_elsewhere {
                users.add(VMS.kind, text(&nic, "u"));
            }
        }
        // VMs being created, whose NICs are not recorded yet. One that starts after this
        // read records its row only once this detach has committed (the detach holds the
        // writer), and then its host filters see the network detached.
        for (vm, l2s) in self.creating.lock().iter() {
            if l2s.contains(l2) {
                users.add(VMS.kind, vm);
            }
        }
        users.check(&format!(
            "cannot detach l2-networks {l2} from clusters {cluster}"
        ))
    }
}
