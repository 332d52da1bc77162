//! The type: its factory ([`OpenvswitchDriver`]), which validates and stores a network's
//! own fields and gives it its tunnel key, and the concrete network ([`Openvswitch`]),
//! which handles its own messages and hands the rest to the `L2NoVlanNetwork` base.

use crate::tunnels::{self, ListTunnels, ResyncTunnels};
use crate::{KeyRange, DEFAULT_BRIDGE, MAX_TUNNEL_KEY, OPENVSWITCH, TUNNEL_KEY_RANGE};
use crate::{PROTOCOLS, TUNNEL_PROTOCOLS};
use flatstack_header::network::{L2NetworkDriver, L2Networks, L2_NO_VLAN};
use flatstack_header::points::Created;
use flatstack_header::{Inventory, ResourceChange};
use flatstack_kernel::driver::{Handled, Incoming, Resource};
use flatstack_kernel::schemars::{json_schema, Schema};
use flatstack_kernel::{async_trait, Fault, Kernel, KernelRef, MessageContext, Observe};
use flatstack_store::resource::store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The driver's own table, joined to the base `l2_networks` by uuid.
pub(crate) const NETWORKS: &str = "openvswitch_networks";

/// Linux's limit on an interface name: 15 bytes (IFNAMSIZ - 1).
const MAX_INTERFACE_LEN: usize = 15;

/// A key handed to a create that has not committed yet is held this long; a create that
/// failed before writing its row gives it back only by this expiry.
const PENDING_FOR: Duration = Duration::from_secs(60);

/// Whether `name` can name a bridge, as Linux checks a network interface's name: 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or whitespace (and, here, printable ASCII).
pub fn check_bridge(name: &str) -> Result<(), Fault> {
    let ok = !name.is_empty()
        && name.len() <= MAX_INTERFACE_LEN
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(Fault::invalid(
            "bridge",
            format!(
                "bridge must be an interface name of 1 to {MAX_INTERFACE_LEN} printable ASCII \
                 characters without `/`, `:` or spaces (and not `.` or `..`), not {name:?}"
            ),
        ))
    }
}

/// The tunnel keys of Openvswitch networks, as this node knows them: those stored (read at
/// start, then kept by [`KeysKept`]) and those handed to creates still in flight. The
/// factory picks a key without waiting (validation is synchronous); the table's `UNIQUE`
/// constraint refuses, with a `409` naming `tunnel_key`, whatever this book could not see
/// (another node on the same database).
#[derive(Default)]
pub struct Keys(Mutex<KeysInner>);

#[derive(Default)]
struct KeysInner {
    /// Key → the network holding it.
    held: BTreeMap<u32, String>,
    /// Keys handed to creates not yet committed, and when.
    pending: BTreeMap<u32, Instant>,
}

impl Keys {
    fn lock(&self) -> MutexGuard<'_, KeysInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every stored network's key.
    pub(crate) async fn load(&self, kernel: &Kernel) -> Result<(), Fault> {
        let rows = {
            let mut tx = store(kernel)?.read().await?;
            tx.query("SELECT uuid, tunnel_key FROM openvswitch_networks", &[])
                .await?
        };
        let mut keys = self.lock();
        keys.held = rows
            .iter()
            .filter_map(|row| {
                let key = row.get("tunnel_key")?.as_u64()?;
                let uuid = row.get("uuid")?.as_str()?;
                Some((u32::try_from(key).ok()?, uuid.to_owned()))
            })
            .collect();
        Ok(())
    }

    /// The key `network` held is free: the network is deleted.
    pub(crate) fn forget(&self, network: &str) {
        self.lock().held.retain(|_, uuid| uuid != network);
    }

    // ANCHOR: take_key
    /// Takes `wanted`, or else the lowest key of `range` that no network holds and no
    /// create in flight was given. Concurrent creates each get their own key: they take
    /// it under this lock.
    fn take(&self, wanted: Option<u32>, range: KeyRange) -> Result<u32, Fault> {
        let mut keys = self.lock();
        let now = Instant::now();
        keys.pending
            .retain(|_, at| now.duration_since(*at) < PENDING_FOR);
        let free = |keys: &KeysInner, key: &u32| {
            !keys.held.contains_key(key) && !keys.pending.contains_key(key)
        };
        let key = match wanted {
            Some(key) if free(&keys, &key) => key,
            Some(key) => {
                let holder = keys.held.get(&key).cloned().unwrap_or_default();
                return Err(Fault::conflict(format!(
                    "tunnel key {key} is taken (by L2 network {holder:?} or a create in flight)"
                ))
                .with_detail("field", "tunnel_key"));
            }
            None => (range.first..=range.last)
                .find(|key| free(&keys, key))
                .ok_or_else(|| {
                    Fault::conflict(format!(
                        "every tunnel key from {} to {} is taken",
                        range.first, range.last
                    ))
                    .with_detail("field", "tunnel_key_range")
                })?,
        };
        keys.pending.insert(key, now);
        Ok(key)
    }
    // ANCHOR_END: take_key
}

/// The keys of this kernel's book, registered so that `start` finds them.
pub(crate) struct KeyBook(pub(crate) Arc<Keys>);

/// Keeps the book as networks are created (the key is held; deleted, it is free:
/// [`crate::extensions::NetworkDeleted`]).
pub(crate) struct KeysKept(pub(crate) Arc<Keys>);

#[async_trait]
impl Observe<Created> for KeysKept {
    async fn observe(&self, change: &ResourceChange) -> Result<(), Fault> {
        if change.kind != "l2-networks" || !is_ours(&change.inventory) {
            return Ok(());
        }
        let key = change.inventory.get("tunnel_key").and_then(Value::as_u64);
        if let Some(key) = key.and_then(|k| u32::try_from(k).ok()) {
            let mut keys = self.0.lock();
            keys.pending.remove(&key);
            keys.held.insert(key, change.uuid.clone());
        }
        Ok(())
    }
}

/// Whether an L2 network's inventory is of this type.
pub(crate) fn is_ours(network: &Inventory) -> bool {
    network.get("type").and_then(Value::as_str) == Some(OPENVSWITCH)
}

/// The factory of the `Openvswitch` type.
pub struct OpenvswitchDriver {
    kernel: KernelRef,
    keys: Arc<Keys>,
}

impl OpenvswitchDriver {
    pub(crate) fn new(kernel: KernelRef, keys: Arc<Keys>) -> Self {
        OpenvswitchDriver { kernel, keys }
    }
}

/// A tunnel key from a field's JSON value.
fn tunnel_key(field: &str, value: &Value) -> Result<u32, Fault> {
    value
        .as_u64()
        .filter(|key| *key >= 1)
        .and_then(|key| u32::try_from(key).ok())
        .ok_or_else(|| {
            Fault::invalid(
                field,
                format!("a tunnel key is an integer from 1 to {MAX_TUNNEL_KEY}, not {value}"),
            )
        })
}

// ANCHOR: factory
impl L2NetworkDriver for OpenvswitchDriver {
    fn table(&self) -> Option<&'static str> {
        Some(NETWORKS)
    }

    /// Checks the type's own fields — every other one is refused, naming it — and returns
    /// the row of its own table: the bridge, the protocol and the network's tunnel key.
    fn validate(&self, params: &Inventory) -> Result<Inventory, Fault> {
        let kernel = self.kernel.get()?;
        let config = kernel.config();
        let protocols = config.get(&TUNNEL_PROTOCOLS);
        let mut bridge = config.get(&DEFAULT_BRIDGE);
        let mut protocol = protocols.first().cloned().unwrap_or_else(|| "gre".into());
        let (mut wanted, mut range) = (None, None);
        for (field, value) in params {
            match field.as_str() {
                "bridge" => {
                    bridge = value.as_str().unwrap_or_default().to_owned();
                    check_bridge(&bridge)?;
                }
                "tunnel_protocol" => {
                    protocol = value
                        .as_str()
                        .filter(|p| protocols.iter().any(|allowed| allowed == p))
                        .ok_or_else(|| {
                            Fault::invalid(
                                "tunnel_protocol",
                                format!(
                                    "tunnel_protocol must be one of {}, not {value}",
                                    protocols.join(", ")
                                ),
                            )
                        })?
                        .to_owned();
                }
                "tunnel_key" => wanted = Some(tunnel_key("tunnel_key", value)?),
                "tunnel_key_range" => {
                    let bad = |why: String| {
                        Fault::invalid(
                            "tunnel_key_range",
                            format!("tunnel_key_range must be {{\"first\": .., \"last\": ..}} with 1 <= first <= last <= {MAX_TUNNEL_KEY}: {why}"),
                        )
                    };
                    if !value.is_object() {
                        return Err(bad(format!("not {value}")));
                    }
                    let given: KeyRange =
                        serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
                    given.check().map_err(bad)?;
                    range = Some(given);
                }
                other => {
                    return Err(Fault::invalid(
                        other,
                        format!("unknown field `{other}` for an {OPENVSWITCH} network"),
                    ))
                }
            }
        }
        if wanted.is_some() && range.is_some() {
            return Err(Fault::invalid(
                "tunnel_key_range",
                "give tunnel_key or tunnel_key_range, not both",
            ));
        }
        // Last: a key is taken only for a create whose fields are all good.
        let range = range.unwrap_or_else(|| config.get(&TUNNEL_KEY_RANGE));
        let key = self.keys.take(wanted, range)?;
        let mut own = Inventory::new();
        own.insert("bridge".into(), json!(bridge));
        own.insert("tunnel_protocol".into(), json!(protocol));
        own.insert("tunnel_key".into(), json!(key));
        Ok(own)
    }

    fn fields(&self) -> Option<Schema> {
        // The create's fields and the inventory's: `tunnel_key` is given or assigned.
        Some(json_schema!({
            "type": "object",
            "properties": {
                "bridge": {
                    "description": "The Open vSwitch bridge the network's tunnels are plugged into: an interface name (1 to 15 printable ASCII characters, no `/`, `:` or spaces). The configured default (`openvswitch.default_bridge`, `br-int`) if not given.",
                    "type": "string", "minLength": 1, "maxLength": MAX_INTERFACE_LEN,
                    "pattern": "^[!-.0-9;-~]+$", "default": "br-int"
                },
                "tunnel_protocol": {
                    "description": "The tunnels' protocol: one of `openvswitch.tunnel_protocols` (by default gre and vxlan); the first of them (gre) if not given.",
                    "type": "string", "enum": PROTOCOLS, "default": "gre"
                },
                "tunnel_key": {
                    "description": "The key of the network's tunnels, unique among Openvswitch networks: given, or the lowest free key of `tunnel_key_range`.",
                    "type": "integer", "minimum": 1, "maximum": MAX_TUNNEL_KEY
                },
                "tunnel_key_range": {
                    "description": "Where the network's key is taken from (the lowest free key) when `tunnel_key` is not given; `openvswitch.tunnel_key_range` (1 to 4294967295) if neither is. Not kept: the key is.",
                    "type": "object",
                    "properties": {
                        "first": {"type": "integer", "minimum": 1, "maximum": MAX_TUNNEL_KEY},
                        "last": {"type": "integer", "minimum": 1, "maximum": MAX_TUNNEL_KEY}
                    },
                    "required": ["first", "last"],
                    "additionalProperties": false
                }
            },
            "additionalProperties": false
        }))
    }

    fn resource(&self, kernel: &Kernel, network: Inventory) -> Result<Arc<dyn Resource>, Fault> {
        // The base comes from the type registry: a plugin never links another's code.
        let base = kernel
            .drivers()
            .get::<L2Networks>(L2_NO_VLAN)?
            .resource(kernel, network.clone())?;
        Ok(Arc::new(Openvswitch { base, network }))
    }
}
// ANCHOR_END: factory

// ANCHOR: resource
/// One Openvswitch network: its tunnels are its own business; attach, detach and the rest
/// are the base's.
pub struct Openvswitch {
    base: Arc<dyn Resource>,
    network: Inventory,
}

#[async_trait]
impl Resource for Openvswitch {
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
        let msg = match msg.take::<ListTunnels>() {
            Ok(msg) => {
                return Handled::reply(tunnels::list(&cx.kernel, &self.network, &msg.0).await)
            }
            Err(other) => other,
        };
        let msg = match msg.take::<ResyncTunnels>() {
            Ok(_) => return Handled::reply(tunnels::resync(&cx.kernel, &self.network).await),
            Err(other) => other,
        };
        self.base.handle(msg, cx).await
    }
}
// ANCHOR_END: resource
