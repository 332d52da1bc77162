//! Quotas: how many VMs, vCPUs and bytes of memory an owner may hold. A create takes its
//! share in `vm.create.reserve` (the first step of the create, so a refusal costs
//! nothing) and gives it back if the create fails or the VM is destroyed. Reservations for
//! one owner are requests addressed to that owner, so they run one at a time: concurrent
//! creates can never exceed a quota together.

use flatstack_header::vm::{VmReserve, VmWork};
use flatstack_header::{ApiResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, DoUndo, Fault, FaultCode, Kernel, KernelRef, Message, Plugin, PluginBuilder,
    Request,
};
use flatstack_store::resource::{check_name, row, store, ResourceTable};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

static QUOTAS: ResourceTable = ResourceTable {
    kind: "quotas",
    table: "quotas",
    filters: &["owner"],
    joined: None,
    before_delete: None,
    decorate: None,
};

/// Sets an owner's limits (one quota per owner).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuota {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub owner: String,
    pub max_vm_num: u32,
    pub max_cpu_num: u32,
    /// Bytes.
    pub max_memory_size: u64,
}
impl Message for CreateQuota {
    const NAME: &'static str = "quota.create";
}
impl Request for CreateQuota {
    type Reply = Inventory;
}

/// Takes (or, negative, gives back) usage for the addressed owner.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeUsage {
    pub vm_num: i64,
    pub cpu_num: i64,
    pub memory_size: i64,
}
impl Message for ChangeUsage {
    const NAME: &'static str = "quota.usage.change";
}
impl Request for ChangeUsage {
    type Reply = Inventory;
}

const SERVICE: &str = "quota";

struct Reserve(KernelRef);

impl Reserve {
    async fn change(&self, vm: &VmWork, sign: i64) -> Result<(), Fault> {
        let memory = i64::try_from(vm.memory_size)
            .map_err(|_| Fault::invalid("memory_size", "too large"))?;
        let change = ChangeUsage {
            vm_num: sign,
            cpu_num: sign * i64::from(vm.cpu_num),
            memory_size: sign * memory,
        };
        self.0
            .get()?
            .request(SERVICE, change)
            .resource(vm.owner.as_str())
            .await?;
        Ok(())
    }
}

#[async_trait]
impl DoUndo<VmReserve> for Reserve {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        self.change(vm, 1).await
    }
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        self.change(vm, -1).await
    }
}

/// Applies a usage change for one owner; refuses one that would exceed the owner's quota.
async fn change_usage(
    kernel: &Kernel,
    owner: &str,
    change: ChangeUsage,
) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let mut filter = Inventory::new();
    filter.insert("owner".into(), json!(owner));
    let usage = tx.list_by("quota_usage", &filter, &["owner"]).await?.pop();
    let used = |column: &str| {
        usage
            .as_ref()
            .and_then(|u| u.get(column))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let next = (
        used("vm_num") + change.vm_num,
        used("cpu_num") + change.cpu_num,
        used("memory_size") + change.memory_size,
    );
    if change.vm_num > 0 || change.cpu_num > 0 || change.memory_size > 0 {
        if let Some(quota) = tx.list("quotas", &filter).await?.pop() {
            let limit = |column: &str| {
                quota
                    .get(column)
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX)
            };
            for (what, value, column) in [
                ("VMs", next.0, "max_vm_num"),
                ("vCPUs", next.1, "max_cpu_num"),
                ("bytes of memory", next.2, "max_memory_size"),
            ] {
                if value > limit(column) {
                    return Err(Fault::new(
                        FaultCode::Vetoed,
                        format!(
                            "owner `{owner}` may hold {} {what}; this would make {value}",
                            limit(column)
                        ),
                    )
                    .with_detail("quota", column));
                }
            }
        }
    }
    let values = row(
        json!({"vm_num": next.0.max(0), "cpu_num": next.1.max(0), "memory_size": next.2.max(0)}),
    );
    if next.0 <= 0 && next.1 <= 0 && next.2 <= 0 {
        // An owner who holds nothing has no usage row: a create that was refused or
        // rolled back leaves the table as it found it.
        tx.delete_where("quota_usage", "owner", owner).await?;
    } else if usage.is_some() {
        tx.update_where("quota_usage", "owner", owner, &values)
            .await?;
    } else {
        let mut new = values.clone();
        new.insert("owner".into(), json!(owner));
        new.insert("created_at".into(), json!(flatstack_store::now()));
        new.insert("updated_at".into(), json!(flatstack_store::now()));
        tx.insert("quota_usage", &new).await?;
    }
    tx.commit(kernel.bus()).await?;
    let mut out = values;
    out.insert("owner".into(), json!(owner));
    Ok(out)
}

pub struct QuotaPlugin;

impl Plugin for QuotaPlugin {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn description(&self) -> &'static str {
        "Per-owner limits on VMs, vCPUs and memory, enforced when a VM is created."
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "quotas and usage",
            "CREATE TABLE quotas (
                uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                owner TEXT NOT NULL UNIQUE, max_vm_num BIGINT NOT NULL, max_cpu_num BIGINT NOT NULL,
                max_memory_size BIGINT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
             CREATE TABLE quota_usage (
                owner TEXT PRIMARY KEY, vm_num BIGINT NOT NULL, cpu_num BIGINT NOT NULL,
                memory_size BIGINT NOT NULL, created_at TEXT, updated_at TEXT NOT NULL);",
        ));
        b.do_undo::<VmReserve>(Reserve(b.kernel()));
        let mut service = b.service(SERVICE, ());
        QUOTAS.serve(&mut service);
        service
            .handle::<CreateQuota, _, _>(|_, msg, cx| async move {
                check_name(&msg.name)?;
                if msg.owner.trim().is_empty() {
                    return Err(Fault::invalid("owner", "owner must not be empty"));
                }
                let memory = i64::try_from(msg.max_memory_size)
                    .map_err(|_| Fault::invalid("max_memory_size", "max_memory_size is too large"))?;
                let quota = row(json!({"name": msg.name, "description": msg.description, "owner": msg.owner,
                    "max_vm_num": msg.max_vm_num, "max_cpu_num": msg.max_cpu_num, "max_memory_size": memory}));
                QUOTAS.create_row(&cx.kernel, quota).await
            })
            .handle::<ChangeUsage, _, _>(|_, msg, cx| async move {
                change_usage(&cx.kernel, cx.resource_id()?, msg).await
            });
        b.register(ApiResource {
            path: "quotas",
            service: SERVICE,
            create: CreateQuota::NAME,
            driver_kind: None,
            filters: QUOTAS.filters,
            actions: &[],
            children: &[],
        });
    }
}
