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
use flatstack_header::points::DetachCheck;
use flatstack_header::vm::state as vm_state;
use flatstack_header::volume::kind;
use flatstack_header::Attachment;
use flatstack_kernel::{async_trait, AsyncVeto, Fault, KernelRef, PluginBuilder};
use flatstack_store::resource::store;
use flatstack_store::Users;
use serde_json::json;

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
        // The detach holds the writer: read beside it, never begin.
        let mut tx = store(&kernel)?.read().await?;
        let mut users = Users::new();
        users
            .query(
                &mut tx,
                VMS,
                "SELECT DISTINCT v.uuid AS u FROM volumes vol
                   JOIN vm_instances v ON v.uuid = vol.vm_instance_uuid
                   LEFT JOIN hosts h ON h.uuid = v.host_uuid
                  WHERE vol.primary_storage_uuid = $1
                    AND (v.host_uuid IS NULL OR h.cluster_uuid = $2)
                 UNION
                 SELECT v.uuid AS u FROM vm_instances v
                  WHERE v.state = $3 AND NOT EXISTS (
                    SELECT 1 FROM volumes vol
                     WHERE vol.vm_instance_uuid = v.uuid AND vol.type = $4)",
                &[
                    json!(storage),
                    json!(cluster),
                    json!(vm_state::CREATING),
                    json!(kind::ROOT),
                ],
            )
            .await?;
        users.check(&format!(
            "cannot detach primary-storage {storage} from clusters {cluster}"
        ))
    }
}
