//! Host tags, and a host-allocator filter that places a VM only on hosts carrying every tag
//! its create asks for (`host_tags`). Tags are set with actions on hosts; neither the host
//! nor the VM plugin knows this plugin exists.

use flatstack_header::infra::HostRecord;
use flatstack_header::points::Deleted;
use flatstack_header::record;
use flatstack_header::vm::{HostFilter, VmWork};
use flatstack_header::{ApiAction, ApiActionExtension, Inventory, ResourceChange};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{self, JsonSchema};
use flatstack_kernel::{
    async_trait, Fault, Filter, Kernel, KernelRef, Message, Observe, Plugin, PluginBuilder, Request,
};
use flatstack_store::resource::{row, store};
use serde::{Deserialize, Serialize};
use serde_json::json;

const TAGS: &str = "host_tags";

/// Adds a tag to a host (addressed to it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTag {
    pub tag: String,
}
impl Message for AddTag {
    const NAME: &'static str = "host-tags.add";
}
impl Request for AddTag {
    type Reply = Inventory;
}

/// Removes a tag from a host (addressed to it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveTag {
    pub tag: String,
}
impl Message for RemoveTag {
    const NAME: &'static str = "host-tags.remove";
}
impl Request for RemoveTag {
    type Reply = Inventory;
}

fn check_tag(tag: &str) -> Result<(), Fault> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:=".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Fault::invalid(
            "tag",
            "a tag is 1 to 64 letters, digits or - _ . : =",
        ))
    }
}

async fn tags_of(kernel: &Kernel, host: &str) -> Result<Inventory, Fault> {
    let mut tx = store(kernel)?.read().await?;
    let tags = tx.list_refs(TAGS, "host_uuid", host, "tag").await?;
    let mut out = Inventory::new();
    out.insert("host_uuid".into(), json!(host));
    out.insert("tags".into(), json!(tags));
    Ok(out)
}

/// Keeps the hosts that carry every requested tag.
struct Tagged(KernelRef);

#[async_trait]
impl Filter<HostFilter> for Tagged {
    async fn filter(&self, vm: &VmWork, hosts: Vec<HostRecord>) -> Result<Vec<HostRecord>, Fault> {
        if vm.host_tags.is_empty() {
            return Ok(hosts);
        }
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.read().await?;
        let mut kept = Vec::new();
        for host in hosts {
            let tags = tx.list_refs(TAGS, "host_uuid", &host.uuid, "tag").await?;
            if vm.host_tags.iter().all(|t| tags.contains(t)) {
                kept.push(host);
            }
        }
        Ok(kept)
    }
}

/// A deleted host's tags go with it.
struct Forget(KernelRef);

#[async_trait]
impl Observe<Deleted> for Forget {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind != "hosts" {
            return Ok(());
        }
        let kernel = self.0.get()?;
        let mut tx = store(&kernel)?.begin().await?;
        for tag in tx.list_refs(TAGS, "host_uuid", &change.uuid, "tag").await? {
            tx.delete_ref(TAGS, ("host_uuid", &change.uuid), ("tag", &tag))
                .await?;
        }
        tx.commit(kernel.bus()).await?;
        Ok(())
    }
}

pub struct HostTagsPlugin;

impl Plugin for HostTagsPlugin {
    fn name(&self) -> &'static str {
        "host-tags"
    }

    fn description(&self) -> &'static str {
        "Host tags, and the host-allocator filter that honours a VM's host_tags."
    }

    fn requires(&self) -> &'static [&'static str] {
        &["host"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        // No foreign key to hosts: tags are this plugin's, removed when their host goes
        // (observer below), never a reason to refuse deleting a host.
        b.migration(Migration::new(
            1,
            "host tags",
            "CREATE TABLE host_tags (
                host_uuid TEXT NOT NULL, tag TEXT NOT NULL, created_at TEXT NOT NULL,
                PRIMARY KEY (host_uuid, tag))",
        ));
        let kernel = b.kernel();
        b.filter::<HostFilter>(Tagged(kernel.clone()));
        b.observe::<Deleted>(Forget(kernel));
        b.service("host-tags", ())
            .handle::<AddTag, _, _>(|_, msg, cx| async move {
                check_tag(&msg.tag)?;
                let host = cx.resource_id()?.to_owned();
                if record::get::<HostRecord>(&cx.kernel, &host).await?.is_none() {
                    return Err(Fault::not_found(format!("no host {host}")));
                }
                let mut tx = store(&cx.kernel)?.begin().await?;
                if !tx.list_refs(TAGS, "host_uuid", &host, "tag").await?.contains(&msg.tag) {
                    let tag = row(json!({"host_uuid": host, "tag": msg.tag, "created_at": flatstack_store::now()}));
                    tx.insert(TAGS, &tag).await?;
                }
                tx.commit(cx.kernel.bus()).await?;
                tags_of(&cx.kernel, &host).await
            })
            .handle::<RemoveTag, _, _>(|_, msg, cx| async move {
                let host = cx.resource_id()?.to_owned();
                let mut tx = store(&cx.kernel)?.begin().await?;
                if !tx.delete_ref(TAGS, ("host_uuid", &host), ("tag", &msg.tag)).await? {
                    return Err(Fault::conflict(format!("host {host} has no tag `{}`", msg.tag))
                        .with_detail("field", "tag"));
                }
                tx.commit(cx.kernel.bus()).await?;
                tags_of(&cx.kernel, &host).await
            });
        for (name, message) in [("add_tag", AddTag::NAME), ("remove_tag", RemoveTag::NAME)] {
            b.register(ApiActionExtension {
                path: "hosts",
                service: "host-tags",
                action: ApiAction::admin(name, message),
            });
        }
    }
}
