//! Quotas: how many VMs, vCPUs and bytes of memory an account may hold. A create takes its
//! share in `vm.create.reserve` (the first step of the create, so a refusal costs
//! nothing) and gives it back if the create fails or the VM is destroyed. Reservations for
//! one account are conditional updates, recorded per VM: concurrent creates, on any number of
//! nodes, can never exceed a quota together, and a return that runs twice frees once.

use flatstack_header::vm::{VmRelease, VmReserve, VmWork};
use flatstack_header::{ApiResource, Inventory};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, DoUndo, Fault, FaultCode, Kernel, KernelRef, Message, Plugin, PluginBuilder,
    Release,
};
use flatstack_store::resource::{check_name, row, store, ResourceTable};
use flatstack_store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

static QUOTAS: ResourceTable = ResourceTable::new("quotas", "quotas").filters(&["account_uuid"]);

/// Sets an account's limits (one quota per account).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuota {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub account_uuid: String,
    pub max_vm_num: u32,
    pub max_cpu_num: u32,
    /// Bytes.
    pub max_memory_size: u64,
}
flatstack_kernel::request!(CreateQuota = "quota.create" => Inventory, service SERVICE);

/// An account's limits, as the API answers them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaInventory {
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub account_uuid: String,
    pub max_vm_num: u64,
    pub max_cpu_num: u64,
    /// Bytes.
    pub max_memory_size: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// Takes a consumer's (a VM's) share of the addressed account's quota: refused if it would
/// exceed it. Recorded per consumer, so asking again takes nothing more.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeUsage {
    pub consumer: String,
    pub vm_num: i64,
    pub cpu_num: i64,
    pub memory_size: i64,
}
flatstack_kernel::request!(TakeUsage = "quota.usage.take" => (), service SERVICE);

/// Gives back a consumer's share, whichever account it counted against; `true` if it held
/// one. Idempotent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnUsage {
    pub consumer: String,
}
flatstack_kernel::request!(ReturnUsage = "quota.usage.return" => bool, service SERVICE);

const SERVICE: &str = "quota";

struct Reserve(KernelRef);

/// At destroy, the same as undoing the create: from the same records.
#[async_trait]
impl Release<VmRelease> for Reserve {
    async fn release(&self, vm: &mut VmWork) -> Result<(), Fault> {
        DoUndo::<VmReserve>::undo(self, vm).await
    }
}

#[async_trait]
impl DoUndo<VmReserve> for Reserve {
    async fn run(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let memory = i64::try_from(vm.memory_size)
            .map_err(|_| Fault::invalid("memory_size", "too large"))?;
        let take = TakeUsage {
            consumer: vm.vm_uuid.clone(),
            vm_num: 1,
            cpu_num: i64::from(vm.cpu_num),
            memory_size: memory,
        };
        self.0
            .get()?
            .ask(take)
            .resource(vm.account_uuid.as_str())
            .await
    }

    /// Works from the consumer's record alone: after a restart, or twice, it is the same.
    async fn undo(&self, vm: &mut VmWork) -> Result<(), Fault> {
        let release = ReturnUsage {
            consumer: vm.vm_uuid.clone(),
        };
        self.0.get()?.ask(release).await?;
        Ok(())
    }
}

/// Takes a consumer's usage for one account: a conditional update that refuses to pass the
/// account's quota (race-free on any number of nodes) and the consumer's record, in one
/// transaction.
async fn take_usage(kernel: &Kernel, account_uuid: &str, take: TakeUsage) -> Result<(), Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let at = flatstack_store::now();
    // The consumer's record first: one that already holds usage (a retried request)
    // inserts nothing and takes nothing more. Refused below, the transaction is dropped
    // and takes the record back too.
    let record = row(json!({
        "consumer_uuid": take.consumer, "account_uuid": account_uuid, "vm_num": take.vm_num,
        "cpu_num": take.cpu_num, "memory_size": take.memory_size, "created_at": at,
    }));
    if !tx.insert_allocation("quota_allocations", &record).await? {
        return Ok(());
    }
    let amounts = [
        json!(take.vm_num),
        json!(take.cpu_num),
        json!(take.memory_size),
    ];
    // The update takes nothing when the account is over quota, or has no usage row: its
    // first take, or a return beside this one (on PostgreSQL, where write transactions run
    // side by side) deleted the row back at zero. Then the row is made and the update
    // tried again.
    let mut attempts = 0;
    let taken = loop {
        attempts += 1;
        let taken = tx
            .statement(
                "UPDATE quota_usage SET vm_num = vm_num + $1, cpu_num = cpu_num + $2,
                     memory_size = memory_size + $3, updated_at = $4
                 WHERE account_uuid = $5 AND NOT EXISTS (SELECT 1 FROM quotas q WHERE q.account_uuid = $5 AND (
                     quota_usage.vm_num + $1 > q.max_vm_num OR quota_usage.cpu_num + $2 > q.max_cpu_num
                     OR quota_usage.memory_size + $3 > q.max_memory_size))",
                &[
                    amounts[0].clone(),
                    amounts[1].clone(),
                    amounts[2].clone(),
                    json!(at),
                    json!(account_uuid),
                ],
            )
            .await?;
        if taken > 0 || attempts >= 4 {
            break taken;
        }
        let exists = tx
            .count_where("quota_usage", "account_uuid", &json!(account_uuid))
            .await?
            > 0;
        if exists {
            break 0;
        }
        tx.statement(
            "INSERT INTO quota_usage (account_uuid, vm_num, cpu_num, memory_size, created_at, updated_at)
             VALUES ($1, 0, 0, 0, $2, $2) ON CONFLICT (account_uuid) DO NOTHING",
            &[json!(account_uuid), json!(at)],
        )
        .await?;
    };
    if taken == 0 {
        return Err(refusal(&mut tx, account_uuid, &take).await);
    }
    tx.commit(kernel.bus()).await?;
    Ok(())
}

/// Why `take` does not fit the account's quota: the first limit it would pass.
async fn refusal(tx: &mut Tx, account_uuid: &str, take: &TakeUsage) -> Fault {
    let mut filter = Inventory::new();
    filter.insert("account_uuid".into(), json!(account_uuid));
    let (usage, quota) = match (
        tx.list_by("quota_usage", &filter, &["account_uuid"]).await,
        tx.list("quotas", &filter).await,
    ) {
        (Ok(mut usage), Ok(mut quota)) => (usage.pop().unwrap_or_default(), quota.pop()),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let Some(quota) = quota else {
        return Fault::internal(format!(
            "account {account_uuid}: usage refused without a quota"
        ));
    };
    let number = |row: &Inventory, column: &str| row.get(column).and_then(Value::as_i64);
    for (what, column, limit, wanted) in [
        ("VMs", "vm_num", "max_vm_num", take.vm_num),
        ("vCPUs", "cpu_num", "max_cpu_num", take.cpu_num),
        (
            "bytes of memory",
            "memory_size",
            "max_memory_size",
            take.memory_size,
        ),
    ] {
        let next = number(&usage, column).unwrap_or(0) + wanted;
        let limit_value = number(&quota, limit).unwrap_or(i64::MAX);
        if next > limit_value {
            return Fault::new(
                FaultCode::Vetoed,
                format!(
                    "account {account_uuid} may hold {limit_value} {what}; this would make {next}"
                ),
            )
            .with_detail("quota", limit);
        }
    }
    Fault::conflict(format!(
        "account {account_uuid}: the quota changed meanwhile; retry"
    ))
}

/// Gives back a consumer's usage; `false` if it held none. The record's delete decides, so
/// two returns free once. An account who holds nothing has no usage row: a create that was
/// refused or rolled back leaves the table as it found it.
async fn return_usage(kernel: &Kernel, consumer: &str) -> Result<bool, Fault> {
    let mut tx = store(kernel)?.begin().await?;
    let Some(held) = tx.take_allocation("quota_allocations", consumer).await? else {
        return Ok(false);
    };
    let account_uuid = held.get("account_uuid").cloned().unwrap_or(Value::Null);
    let amount = |column: &str| held.get(column).cloned().unwrap_or(json!(0));
    tx.statement(
        "UPDATE quota_usage SET vm_num = vm_num - $1, cpu_num = cpu_num - $2,
             memory_size = memory_size - $3, updated_at = $4
         WHERE account_uuid = $5",
        &[
            amount("vm_num"),
            amount("cpu_num"),
            amount("memory_size"),
            json!(flatstack_store::now()),
            account_uuid.clone(),
        ],
    )
    .await?;
    tx.statement(
        "DELETE FROM quota_usage WHERE account_uuid = $1 AND vm_num <= 0 AND cpu_num <= 0
             AND memory_size <= 0",
        &[account_uuid],
    )
    .await?;
    tx.commit(kernel.bus()).await?;
    Ok(true)
}

pub struct QuotaPlugin;

impl Plugin for QuotaPlugin {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn description(&self) -> &'static str {
        "Per-account limits on VMs, vCPUs and memory, enforced when a VM is created."
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
        b.migration(Migration::new(
            2,
            "what each consumer holds of its owner's quota",
            // Written with the usage it takes, removed with the usage it gives back: a
            // return that runs twice frees once.
            "CREATE TABLE quota_allocations (
                consumer_uuid TEXT PRIMARY KEY, owner TEXT NOT NULL,
                vm_num BIGINT NOT NULL, cpu_num BIGINT NOT NULL, memory_size BIGINT NOT NULL,
                created_at TEXT NOT NULL)",
        ));
        b.migration(Migration::new(
            3,
            "quotas per account",
            "ALTER TABLE quotas RENAME COLUMN owner TO account_uuid;
             ALTER TABLE quota_usage RENAME COLUMN owner TO account_uuid;
             ALTER TABLE quota_allocations RENAME COLUMN owner TO account_uuid;",
        ));
        b.do_undo::<VmReserve>(Reserve(b.kernel()));
        b.release::<VmRelease>(Reserve(b.kernel()));
        let mut service = b.service(SERVICE, ());
        QUOTAS.serve(&mut service);
        service
            .handle::<CreateQuota, _, _>(|_, msg, cx| async move {
                check_name(&msg.name)?;
                if msg.account_uuid.trim().is_empty() {
                    return Err(Fault::invalid("account_uuid", "account_uuid must not be empty"));
                }
                let memory = i64::try_from(msg.max_memory_size)
                    .map_err(|_| Fault::invalid("max_memory_size", "max_memory_size is too large"))?;
                let quota = row(json!({"name": msg.name, "description": msg.description, "account_uuid": msg.account_uuid,
                    "max_vm_num": msg.max_vm_num, "max_cpu_num": msg.max_cpu_num, "max_memory_size": memory}));
                QUOTAS.create_row(&cx.kernel, quota).await
            })
            .handle::<TakeUsage, _, _>(|_, msg, cx| async move {
                take_usage(&cx.kernel, cx.resource_id()?, msg).await
            })
            .handle::<ReturnUsage, _, _>(|_, msg, cx| async move {
                return_usage(&cx.kernel, &msg.consumer).await
            });
        b.register(ApiResource {
            path: "quotas",
            service: SERVICE,
            create: CreateQuota::NAME,
            access: flatstack_header::identity::Access::Admin,
            holds_secrets: false,
            driver_kind: None,
            inventory: Some(flatstack_header::inventory::schema::<QuotaInventory>),
            filters: QUOTAS.filters,
            actions: &[],
            children: &[],
        });
    }
}
