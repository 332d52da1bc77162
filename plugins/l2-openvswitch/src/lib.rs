//! `Openvswitch`: the white paper's own example of a plugin, an L2 network type built on
//! Open vSwitch with GRE tunnels between the hosts of each network, added to Flatstack
//! without changing a line of any other component. `docs/tutorial-l2-driver.md` builds it
//! step by step; every excerpt there is taken from this crate (between `ANCHOR` comments)
//! and checked by `tests/tutorial.rs`.
//!
//! - **the type and its factory** ([`network`]): `POST /v1/l2-networks {"type":
//!   "Openvswitch"}` validates the bridge, the tunnel protocol and the tunnel key (each
//!   network takes its own key, unique among Openvswitch networks) and stores them in
//!   `openvswitch_networks`, joined to the base record;
//! - **the concrete network** ([`network::Openvswitch`]): its tunnels
//!   (`GET /v1/l2-networks/{uuid}/tunnels`) and `resync_tunnels`; everything else (attach,
//!   detach, ...) goes to the `L2NoVlanNetwork` base, found in the type registry;
//! - **the tunnel mesh** ([`tunnels`]): one tunnel per pair of hosts that run VMs on the
//!   network, recorded in `openvswitch_tunnels` and set up on both hosts through their
//!   agents (`CallHostAgent`); one network's tunnel work runs on that network's queue;
//! - **the extensions** ([`extensions`]): `vm.pre-instantiate` (do/undo) makes the new
//!   VM's host join the mesh, `vm.release` takes it out when its last VM on the network
//!   goes, `host.connect` refuses a host without the Open vSwitch daemon in a cluster an
//!   Openvswitch network is attached to; a reconciler at start makes every network's
//!   tunnels what its VMs need.

pub mod extensions;
pub mod network;
pub mod tunnels;

use flatstack_header::api::ApiChildExtension;
use flatstack_header::infra::HostConnect;
use flatstack_header::network::L2Networks;
use flatstack_header::points::{Created, Deleted};
use flatstack_header::vm::{VmPreInstantiate, VmRelease};
use flatstack_header::{ApiAction, ApiActionExtension};
use flatstack_kernel::migration::Migration;
use flatstack_kernel::{async_trait, ConfigKey, Fault, Kernel, Message, Plugin, PluginBuilder};
use flatstack_store::recovery::Reconciler;
use flatstack_store::TableKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The type name, as records store it in `type`.
pub const OPENVSWITCH: &str = "Openvswitch";
/// The plugin's name (in the manifest and in every error).
pub const PLUGIN: &str = "l2-openvswitch";
/// The service that answers this plugin's messages, each addressed to an L2 network: one
/// network's tunnel work runs on its own queue, one request at a time.
pub const SERVICE: &str = "openvswitch";
/// The child collection's segment under an L2 network.
pub const TUNNELS_PATH: &str = "tunnels";
/// The Open vSwitch daemon, as a host's agent names it in `daemon.status`.
pub const DAEMON: &str = "openvswitch";
/// The tunnel protocols this plugin knows how to ask a host for.
pub const PROTOCOLS: &[&str] = &["gre", "vxlan", "geneve"];
/// Tunnel keys are 32 bits; 0 means "no key" to Open vSwitch.
pub const MAX_TUNNEL_KEY: u32 = u32::MAX;

// ANCHOR: config
/// A range of tunnel keys, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRange {
    /// The first key.
    pub first: u32,
    /// The last key.
    pub last: u32,
}

impl KeyRange {
    /// Why the range is not one keys can be taken from, if it is not.
    pub fn check(&self) -> Result<(), String> {
        if self.first == 0 || self.first > self.last {
            return Err(format!(
                "must be 1 <= first <= last <= {MAX_TUNNEL_KEY}, not {}..={}",
                self.first, self.last
            ));
        }
        Ok(())
    }
}

/// The bridge a network's tunnels are plugged into when its create does not say.
pub const DEFAULT_BRIDGE: ConfigKey<String> = ConfigKey::new(
    "openvswitch.default_bridge",
    "The Open vSwitch bridge of a network whose create gives no `bridge`.",
    || "br-int".to_owned(),
)
.with_validator(|bridge| network::check_bridge(bridge).map_err(|f| f.message));

/// Where a network's key comes from when its create gives neither a key nor a range.
pub const TUNNEL_KEY_RANGE: ConfigKey<KeyRange> = ConfigKey::new(
    "openvswitch.tunnel_key_range",
    "The tunnel keys networks take (the lowest free one) when their create names none.",
    || KeyRange {
        first: 1,
        last: MAX_TUNNEL_KEY,
    },
)
.with_validator(KeyRange::check);

/// The tunnel protocols a network may use; the first is the default.
pub const TUNNEL_PROTOCOLS: ConfigKey<Vec<String>> = ConfigKey::new(
    "openvswitch.tunnel_protocols",
    "The tunnel protocols networks may use (gre, vxlan, geneve); the first is the default.",
    || vec!["gre".to_owned(), "vxlan".to_owned()],
)
.with_validator(|protocols| {
    if protocols.is_empty() {
        return Err("name at least one protocol".into());
    }
    match protocols.iter().find(|p| !PROTOCOLS.contains(&p.as_str())) {
        Some(unknown) => Err(format!(
            "unknown protocol `{unknown}` (known: {})",
            PROTOCOLS.join(", ")
        )),
        None => Ok(()),
    }
});
// ANCHOR_END: config

/// The plugin: one line in a distribution (`.plugin(OpenvswitchPlugin)`).
pub struct OpenvswitchPlugin;

#[async_trait]
impl Plugin for OpenvswitchPlugin {
    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn description(&self) -> &'static str {
        "The Openvswitch L2 type: GRE tunnels between the hosts of each network's VMs."
    }

    fn requires(&self) -> &'static [&'static str] {
        // Its tables refer to L2 networks and hosts; it takes part in VM creates and host
        // connections, and reads NICs' and hosts' records.
        &["l2-network", "host", "vm"]
    }

    // ANCHOR: build
    fn build(&self, b: &mut PluginBuilder<'_>) {
        // ANCHOR: migration
        b.migration(Migration::new(
            1,
            "openvswitch networks and tunnels",
            "CREATE TABLE openvswitch_networks (
                uuid TEXT PRIMARY KEY REFERENCES l2_networks (uuid),
                bridge TEXT NOT NULL, tunnel_protocol TEXT NOT NULL,
                tunnel_key BIGINT NOT NULL UNIQUE);
             CREATE TABLE openvswitch_tunnels (
                uuid TEXT PRIMARY KEY,
                l2_network_uuid TEXT NOT NULL,
                host_uuid TEXT NOT NULL REFERENCES hosts (uuid),
                peer_host_uuid TEXT NOT NULL REFERENCES hosts (uuid),
                tunnel_key BIGINT NOT NULL, tunnel_protocol TEXT NOT NULL,
                vm_instance_uuid TEXT, created_at TEXT NOT NULL,
                UNIQUE (l2_network_uuid, host_uuid, peer_host_uuid));
             CREATE INDEX openvswitch_tunnels_by_vm ON openvswitch_tunnels (vm_instance_uuid)",
        ));
        // ANCHOR_END: migration
        b.config(&DEFAULT_BRIDGE)
            .config(&TUNNEL_KEY_RANGE)
            .config(&TUNNEL_PROTOCOLS);

        // The type: its factory validates and stores the network's own fields.
        let keys = Arc::new(network::Keys::default());
        let kernel = b.kernel();
        b.driver::<L2Networks>(
            OPENVSWITCH,
            Arc::new(network::OpenvswitchDriver::new(
                kernel.clone(),
                keys.clone(),
            )),
        );
        // The keys taken, known from the store at start and kept by these observers.
        b.observe::<Created>(network::KeysKept(keys.clone()));
        b.register(network::KeyBook(keys.clone()));

        // The extensions: VM create (do/undo), VM destroy (release), host connection.
        b.do_undo::<VmPreInstantiate>(extensions::Mesh(kernel.clone()));
        b.release::<VmRelease>(extensions::Mesh(kernel.clone()));
        b.do_undo::<HostConnect>(extensions::DaemonCheck(kernel.clone()));
        // A deleted network's key is free and its tunnels go (the delete is the base's).
        b.observe::<Deleted>(extensions::NetworkDeleted { keys, kernel });
        b.register(Reconciler::at_start(
            "openvswitch tunnels are what the VMs need",
            |kernel| Box::pin(extensions::reconcile(kernel)),
        ));

        // Its messages, each addressed to a network, and where the API shows them.
        tunnels::serve(&mut b.service(SERVICE, ()));
        b.register(
            ApiChildExtension::new(
                "l2-networks",
                TUNNELS_PATH,
                SERVICE,
                tunnels::ListTunnels::NAME,
            )
            .with_inventory(flatstack_header::inventory::schema::<tunnels::TunnelInventory>),
        );
        b.register(ApiActionExtension {
            path: "l2-networks",
            service: SERVICE,
            action: ApiAction::admin("resync_tunnels", tunnels::ResyncTunnels::NAME),
        });
        // A refusal that names a tunnel names its network, not the table.
        b.register(TableKind::part(
            tunnels::TUNNELS,
            "l2-networks",
            "l2_network_uuid",
        ));
    }
    // ANCHOR_END: build

    /// Learns the keys networks hold, before the API serves.
    async fn start(&self, kernel: &Kernel) -> Result<(), Fault> {
        for (_, book) in kernel.registered::<network::KeyBook>() {
            book.0.load(kernel).await?;
        }
        Ok(())
    }
}
