//! `L2VlanNetwork`: an 802.1Q-tagged L2 network. A thin driver over the `L2NoVlanNetwork`
//! base: it validates and stores its `vlan` and delegates everything else to the base.

use flatstack_header::network::{L2NetworkDriver, L2Networks, L2_NO_VLAN};
use flatstack_header::Inventory;
use flatstack_kernel::driver::{Handled, Incoming, Resource};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::schemars::{json_schema, Schema};
use flatstack_kernel::{async_trait, Fault, Kernel, MessageContext, Plugin, PluginBuilder};
use serde_json::json;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// The type name.
pub const L2_VLAN: &str = "L2VlanNetwork";
/// 0 and 4095 are reserved by 802.1Q.
const VLAN_IDS: RangeInclusive<i64> = 1..=4094;

pub struct L2VlanPlugin;

impl Plugin for L2VlanPlugin {
    fn name(&self) -> &'static str {
        "l2-vlan"
    }

    fn description(&self) -> &'static str {
        "The L2VlanNetwork type: VLAN-tagged L2 networks over the NoVlan base."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its table extends `l2_networks`, and its resources delegate to the base type.
        &["l2-network"]
    }

    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.migration(Migration::new(
            1,
            "vlan l2 networks",
            "CREATE TABLE l2_vlan_networks (
                uuid TEXT PRIMARY KEY REFERENCES l2_networks (uuid), vlan BIGINT NOT NULL)",
        ));
        b.driver::<L2Networks>(L2_VLAN, Arc::new(VlanDriver));
    }
}

struct VlanDriver;

impl L2NetworkDriver for VlanDriver {
    fn table(&self) -> Option<&'static str> {
        Some("l2_vlan_networks")
    }

    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault> {
        let mut own = Inventory::new();
        for (key, value) in params {
            match key.as_str() {
                "vlan" => {
                    let vlan =
                        value
                            .as_i64()
                            .filter(|v| VLAN_IDS.contains(v))
                            .ok_or_else(|| {
                                Fault::invalid(
                                    "vlan",
                                    format!("vlan must be an integer from 1 to 4094, not {value}"),
                                )
                            })?;
                    own.insert("vlan".into(), json!(vlan));
                }
                other => {
                    return Err(Fault::invalid(
                        other,
                        format!("unknown field `{other}` for an {L2_VLAN}"),
                    ))
                }
            }
        }
        if !own.contains_key("vlan") {
            return Err(Fault::invalid(
                "vlan",
                format!("an {L2_VLAN} needs `vlan` (1 to 4094)"),
            ));
        }
        Ok(own)
    }

    fn fields(&self) -> Option<Schema> {
        Some(json_schema!({
            "type": "object",
            "properties": {"vlan": {
                "description": "The 802.1Q VLAN id.",
                "type": "integer", "minimum": VLAN_IDS.start(), "maximum": VLAN_IDS.end()
            }},
            "required": ["vlan"],
            "additionalProperties": false
        }))
    }

    fn unique_per_interface(&self) -> &'static [&'static str] {
        &["vlan"]
    }

    fn resource(&self, kernel: &Kernel, network: Inventory) -> Result<Arc<dyn Resource>, Fault> {
        // The base comes from the type registry: plugins never link each other's code.
        let base = kernel
            .drivers()
            .get::<L2Networks>(L2_NO_VLAN)
            .map_err(|f| {
                Fault::internal(format!("the {L2_NO_VLAN} base is missing: {}", f.message))
            })?
            .resource(kernel, network)?;
        Ok(Arc::new(Vlan { base }))
    }
}

/// One VLAN network: nothing differs from the base for attach/detach yet, so every
/// message goes to it; overrides (e.g. host-side tagging checks) would come first here.
struct Vlan {
    base: Arc<dyn Resource>,
}

#[async_trait]
impl Resource for Vlan {
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
        self.base.handle(msg, cx).await
    }
}
