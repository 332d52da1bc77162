//! Primary storage kept attached to a cluster while the volumes of VMs there are on it:
//! the volume plugin knows which volumes are on which storage and whose they are, so it
//! refuses — through an asynchronous veto that reads the store inside the detach's
//! transaction — to detach primary storage from a cluster while it holds volumes of VMs
//! in that cluster; the refusal (`409`) names the VMs.
//!
//! A VM being created counts from the moment its row exists (`Creating`): until its host
//! is recorded (when it runs) a VM with a volume on the storage counts for every cluster,
//! and one without a root volume yet may still be given one there. A create that records
//! its row after this check does so once the detach has committed (the detach holds the
//! writer), and its storage choice then sees the storage detached.

use crate::VOLUMES;
use flatstack_header::infra::{HostQuery, HostRecord};
use flatstack_header::points::DetachCheck;
use flatstack_header::record;
use flatstack_header::vm::{VmQuery, VmRecord, VmState};
use flatstack_header::volume::kind;
use flatstack_header::Attachment;
use flatstack_kernel::{async_trait, AsyncVeto, Fault, KernelRef, PluginBuilder};
use flatstack_store::resource::{store, text};
use flatstack_store::Users;
use serde_json::json;
use std::collections::BTreeSet;

/// The kind the refusal names: the VMs whose volumes these are.
const VMS: &str = "vm-instances";

/// Registers the veto and the name of the volumes table.
pub(crate) fn build(b: &mut PluginBuilder<'_>) {
    b.register(VOLUMES.table_kind());
    b.veto_async::<DetachCheck>(OnStorage(b.kernel()));
}

struct OnStorage(KernelRef);

#[async_trait]
impl AsyncVeto<DetachCheck> for OnStorage {
    async fn check(&self, attachment: &Attachment) -> Result<(), Fault> {
        if attachment.kind != "primary-storage" || attachment.target_kind != "clusters" {
            return Ok(());
        }
        let (storage, cluster) = (&attachment.uuid, &attachment.target_uuid);
        let kernel = self.0.get()?;
        let host_query = HostQuery {
            cluster_uuid: Some(cluster.clone()),
            ..Default::default()
        };
        let creating_query = VmQuery {
            state: Some(VmState::Creating),
            ..Default::default()
        };
        let (hosts, creating) = futures::try_join!(
            record::find::<HostRecord>(&kernel, host_query),
            record::find::<VmRecord>(&kernel, creating_query),
        )?;
        let in_cluster: BTreeSet<String> = hosts.into_iter().map(|h| h.uuid).collect();
        // The detach holds the writer: read beside it, never begin.
        let mut tx = store(&kernel)?.read().await?;
        let holders = tx
            .query(
                "SELECT DISTINCT vm_instance_uuid AS vm FROM volumes
                  WHERE primary_storage_uuid = $1 AND vm_instance_uuid IS NOT NULL",
                &[json!(storage)],
            )
            .await?;
        let mut users = Users::new();
        for holder in &holders {
            let vm = text(holder, "vm");
            // Not placed yet (or gone): it may be placed in this cluster.
            let placed_elsewhere = record::get::<VmRecord>(&kernel, vm)
                .await?
                .and_then(|vm| vm.host_uuid)
                .is_some_and(|host| !in_cluster.contains(&host));
            if !placed_elsewhere {
                users.add(VMS, vm);
            }
        }
        // VMs being created that have no root volume yet may still be given one here.
        for vm in creating {
            let root = tx
                .query(
                    "SELECT uuid FROM volumes WHERE vm_instance_uuid = $1 AND type = $2",
                    &[json!(vm.uuid), json!(kind::ROOT)],
                )
                .await?;
            if root.is_empty() {
                users.add(VMS, &vm.uuid);
            }
        }
        users.check(&format!(
            "cannot detach primary-storage {storage} from clusters {cluster}"
        ))
    }
}
