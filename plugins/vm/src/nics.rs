//! The VMs' NICs as the VM plugin publishes them (`NicRecord`): found by VM, L3 network,
//! L2 network or host, for plugins that must know which VMs use a network where; and
//! `GET /v1/l2-networks/{uuid}/vm-nics`, a child collection on another plugin's kind.

use crate::VMS;
use flatstack_header::api::ApiChildExtension;
use flatstack_header::network::{L2NetworkRecord, L3NetworkRecord};
use flatstack_header::record;
use flatstack_header::vm::{ListNetworkNics, NicQuery, NicRecord, VM_SERVICE};
use flatstack_header::{FindRecords, GetRecord, InventoryList};
use flatstack_kernel::bus::ServiceBuilder;
use flatstack_kernel::{Fault, Kernel, Message};
use flatstack_store::resource::store;
use serde_json::{json, Value};

/// Serves the NIC record and the child collection on L2 networks.
pub(crate) fn serve<S: Send + Sync + 'static>(service: &mut ServiceBuilder<'_, S>) {
    service
        .handle::<FindRecords<NicRecord>, _, _>(|_, msg, cx| async move {
            find(&cx.kernel, &msg.query).await
        })
        .handle::<GetRecord<NicRecord>, _, _>(|_, msg, cx| async move {
            let mut found = find_where(&cx.kernel, &[("n.uuid", &msg.uuid)]).await?;
            Ok(found.pop())
        })
        .handle::<ListNetworkNics, _, _>(|_, _, cx| async move {
            let query = NicQuery {
                l2_network_uuid: Some(cx.resource_id()?.to_owned()),
                ..NicQuery::default()
            };
            let inventories = find(&cx.kernel, &query)
                .await?
                .into_iter()
                .map(|nic| match serde_json::to_value(nic) {
                    Ok(Value::Object(inventory)) => Ok(inventory),
                    _ => Err(Fault::internal("a NIC record is not an object")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(InventoryList {
                next: None,
                total: inventories.len() as u64,
                inventories,
            })
        });
}

/// The child collection it adds to L2 networks.
pub(crate) const ON_L2_NETWORKS: ApiChildExtension =
    ApiChildExtension::new("l2-networks", "vm-nics", VM_SERVICE, ListNetworkNics::NAME)
        .with_inventory(flatstack_header::inventory::schema::<NicRecord>);

async fn find(kernel: &Kernel, query: &NicQuery) -> Result<Vec<NicRecord>, Fault> {
    let mut conditions = Vec::new();
    for (column, value) in [
        ("n.vm_instance_uuid", &query.vm_instance_uuid),
        ("n.l3_network_uuid", &query.l3_network_uuid),
        ("n.l2_network_uuid", &query.l2_network_uuid),
        ("v.host_uuid", &query.host_uuid),
    ] {
        if let Some(value) = value {
            conditions.push((column, value.as_str()));
        }
    }
    find_where(kernel, &conditions).await
}

/// The NICs matching every `(column, value)`; the columns are this module's constants.
async fn find_where(kernel: &Kernel, conditions: &[(&str, &str)]) -> Result<Vec<NicRecord>, Fault> {
    let mut sql = format!(
        "SELECT n.uuid, n.vm_instance_uuid, v.state AS vm_state, v.host_uuid,
                n.l3_network_uuid, n.l2_network_uuid, n.l2_type, n.ip, n.mac
           FROM vm_nics n JOIN {} v ON v.uuid = n.vm_instance_uuid",
        VMS.table
    );
    for (i, (column, _)) in conditions.iter().enumerate() {
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        sql.push_str(&format!("{column} = ${}", i + 1));
    }
    sql.push_str(" ORDER BY n.created_at, n.uuid");
    let params: Vec<Value> = conditions.iter().map(|(_, v)| json!(v)).collect();
    let mut tx = store(kernel)?.read().await?;
    tx.query(&sql, &params)
        .await?
        .into_iter()
        .map(|row| {
            serde_json::from_value(Value::Object(row))
                .map_err(|e| Fault::internal(format!("a NIC row does not read as its record: {e}")))
        })
        .collect()
}

/// At start: NICs recorded before their L2 network was (by an older node) get it, from
/// the L3 and L2 networks' owners, so that every NIC reads as a [`NicRecord`].
pub(crate) async fn fill_l2_networks(kernel: Kernel) -> Result<(), Fault> {
    let l3s = {
        let mut tx = store(&kernel)?.read().await?;
        tx.query(
            "SELECT DISTINCT l3_network_uuid FROM vm_nics WHERE l2_network_uuid IS NULL",
            &[],
        )
        .await?
    };
    for row in l3s {
        let l3_uuid = flatstack_store::resource::text(&row, "l3_network_uuid").to_owned();
        let Some(l3) = record::get::<L3NetworkRecord>(&kernel, &l3_uuid).await? else {
            continue;
        };
        let Some(l2) = record::get::<L2NetworkRecord>(&kernel, &l3.l2_network_uuid).await? else {
            continue;
        };
        let mut tx = store(&kernel)?.begin().await?;
        tx.statement(
            "UPDATE vm_nics SET l2_network_uuid = $1, l2_type = $2
              WHERE l3_network_uuid = $3 AND l2_network_uuid IS NULL",
            &[json!(l2.uuid), json!(l2.l2_type), json!(l3_uuid)],
        )
        .await?;
        tx.commit(kernel.bus()).await?;
    }
    Ok(())
}
