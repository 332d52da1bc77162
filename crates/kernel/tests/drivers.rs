//! Strategy plugins: a type registry per kind, and a driver that overrides one message of
//! its base, adds one of its own and delegates everything else.

use flatstack_kernel::driver::{call, DriverKind, Handled, Incoming, Resource};
use flatstack_kernel::schemars::JsonSchema;
use flatstack_kernel::{
    async_trait, FaultCode, Kernel, Message, MessageContext, Plugin, PluginBuilder, Request,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

// --- The kind, as a header crate would declare it. ---
struct L2Networks;
impl DriverKind for L2Networks {
    const KIND: &'static str = "l2-networks";
    type Factory = dyn L2Factory;
}
trait L2Factory: Send + Sync {
    fn resource(&self, name: &str) -> Arc<dyn Resource>;
}

macro_rules! request {
    ($t:ident, $name:literal, $reply:ty) => {
        impl Message for $t {
            const NAME: &'static str = $name;
        }
        impl Request for $t {
            type Reply = $reply;
        }
    };
}
#[derive(Serialize, Deserialize, JsonSchema)]
struct Describe;
request!(Describe, "l2.describe", String);
#[derive(Serialize, Deserialize, JsonSchema)]
struct Rename(String);
request!(Rename, "l2.rename", String);
#[derive(Serialize, Deserialize, JsonSchema)]
struct SetVlan(u16);
request!(SetVlan, "l2.vlan.set", u16);
#[derive(Serialize, Deserialize, JsonSchema)]
struct Explode;
request!(Explode, "l2.explode", ());

// --- The base implementation (NoVlan). ---
struct NoVlan {
    name: Mutex<String>,
}
#[async_trait]
impl Resource for NoVlan {
    async fn handle(&self, msg: Incoming, _cx: &MessageContext) -> Handled {
        let msg = match msg.take::<Describe>() {
            Ok(Describe) => {
                return Handled::reply(Ok(format!("novlan {}", self.name.lock().unwrap())))
            }
            Err(msg) => msg,
        };
        match msg.take::<Rename>() {
            Ok(Rename(new)) => {
                *self.name.lock().unwrap() = new.clone();
                Handled::reply(Ok(new))
            }
            Err(msg) => Handled::NotMine(msg),
        }
    }
}
struct NoVlanFactory;
impl L2Factory for NoVlanFactory {
    fn resource(&self, name: &str) -> Arc<dyn Resource> {
        Arc::new(NoVlan {
            name: Mutex::new(name.to_owned()),
        })
    }
}

// --- A driver over the base (Vlan): overrides Describe, adds SetVlan. ---
struct Vlan {
    base: Arc<dyn Resource>,
    vlan: Mutex<u16>,
}
#[async_trait]
impl Resource for Vlan {
    async fn handle(&self, msg: Incoming, cx: &MessageContext) -> Handled {
        let msg = match msg.take::<SetVlan>() {
            Ok(SetVlan(v)) => {
                *self.vlan.lock().unwrap() = v;
                return Handled::reply(Ok(v));
            }
            Err(msg) => msg,
        };
        let msg = match msg.take::<Describe>() {
            Ok(Describe) => {
                let base = call(&*self.base, Describe, cx).await;
                let vlan = *self.vlan.lock().unwrap();
                return Handled::reply(base.map(|b| format!("{b} vlan {vlan}")));
            }
            Err(msg) => msg,
        };
        self.base.handle(msg, cx).await
    }
}
struct VlanFactory;
impl L2Factory for VlanFactory {
    fn resource(&self, name: &str) -> Arc<dyn Resource> {
        Arc::new(Vlan {
            base: NoVlanFactory.resource(name),
            vlan: Mutex::new(1),
        })
    }
}

struct NoVlanPlugin;
impl Plugin for NoVlanPlugin {
    fn name(&self) -> &'static str {
        "l2-novlan"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.driver_kind::<L2Networks>()
            .driver::<L2Networks>("L2NoVlanNetwork", Arc::new(NoVlanFactory));
    }
}
struct VlanPlugin;
impl Plugin for VlanPlugin {
    fn name(&self) -> &'static str {
        "l2-vlan"
    }
    fn build(&self, b: &mut PluginBuilder<'_>) {
        b.driver::<L2Networks>("L2VlanNetwork", Arc::new(VlanFactory));
    }
}

fn kernel() -> Kernel {
    Kernel::builder()
        .plugin(VlanPlugin)
        .plugin(NoVlanPlugin)
        .build()
        .unwrap()
}

fn cx(k: &Kernel) -> MessageContext {
    MessageContext {
        kernel: k.clone(),
        resource: None,
        operation: None,
    }
}

#[test]
fn types_are_listed_and_unknown_types_are_invalid_input() {
    let k = kernel();
    let registry = k.drivers().of::<L2Networks>().unwrap();
    assert_eq!(registry.names(), ["L2NoVlanNetwork", "L2VlanNetwork"]);
    let fault = k.drivers().get::<L2Networks>("Openvswitch").err().unwrap();
    assert_eq!(fault.code, FaultCode::InvalidArgument);
    assert_eq!(fault.detail_str("field"), Some("type"));
    assert!(
        fault.message.contains("L2NoVlanNetwork, L2VlanNetwork"),
        "{}",
        fault.message
    );
}

#[tokio::test]
async fn a_driver_overrides_adds_and_delegates() {
    let k = kernel();
    let cx = cx(&k);
    // The concrete implementation is found from the type stored in a record.
    let stored_type = "L2VlanNetwork";
    let vlan = k
        .drivers()
        .get::<L2Networks>(stored_type)
        .unwrap()
        .resource("net0");

    assert_eq!(
        call(&*vlan, SetVlan(100), &cx).await.unwrap(),
        100,
        "its own message"
    );
    assert_eq!(
        call(&*vlan, Describe, &cx).await.unwrap(),
        "novlan net0 vlan 100",
        "overridden, built on the base's answer"
    );
    assert_eq!(
        call(&*vlan, Rename("net1".into()), &cx).await.unwrap(),
        "net1",
        "delegated"
    );
    assert_eq!(
        call(&*vlan, Describe, &cx).await.unwrap(),
        "novlan net1 vlan 100"
    );

    let fault = call(&*vlan, Explode, &cx).await.unwrap_err();
    assert_eq!(fault.code, FaultCode::InvalidArgument, "nobody handles it");
    assert!(fault.message.contains("l2.explode"));

    // The base alone knows nothing of the driver's message.
    let base = k
        .drivers()
        .get::<L2Networks>("L2NoVlanNetwork")
        .unwrap()
        .resource("b");
    assert!(call(&*base, SetVlan(5), &cx).await.is_err());
}
