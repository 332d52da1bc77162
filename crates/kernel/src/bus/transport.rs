//! The transport trait: how requests and events leave this process.
//!
//! Local services are called directly; a request for a service this kernel does not have,
//! and every published event, is handed to the attached transport as JSON. The receiving
//! side calls [`super::Bus::deliver`] and [`super::Bus::deliver_event`], which act locally
//! only, so messages never loop between nodes.

use super::{Envelope, EventEnvelope};
use crate::{Fault, Kernel, WeakKernel};
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

/// Carries requests and events between kernels in different processes (a broker,
/// [`Loopback`] in tests); attached with [`super::Bus::attach_transport`].
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Short name for logs and introspection (`loopback`, `amqp`, ...).
    fn name(&self) -> &str;
    /// Delivers a request to a remote service and waits at most `timeout` for its reply.
    async fn request(&self, envelope: Envelope, timeout: Duration) -> Result<Value, Fault>;
    /// Publishes an event to remote subscribers; delivery is the transport's business.
    fn publish(&self, event: &EventEnvelope);
}

/// Connects a kernel to another kernel of the same process through JSON, exactly as a
/// broker would carry it: for tests of cross-process behaviour without a broker.
pub struct Loopback {
    peer: WeakKernel,
}

impl Loopback {
    /// Carries requests and events to `peer`, which it does not keep alive:
    /// `a.bus().attach_transport(Arc::new(Loopback::new(&b)))`; for both directions,
    /// attach one to each kernel.
    pub fn new(peer: &Kernel) -> Self {
        Loopback {
            peer: peer.downgrade(),
        }
    }

    fn peer(&self) -> Result<Kernel, Fault> {
        self.peer
            .upgrade()
            .ok_or_else(|| Fault::unavailable("loopback peer is gone"))
    }
}

#[async_trait]
impl Transport for Loopback {
    fn name(&self) -> &str {
        "loopback"
    }

    async fn request(&self, envelope: Envelope, timeout: Duration) -> Result<Value, Fault> {
        // Round-trip through text, as a broker would, so nothing typed leaks across.
        let wire = serde_json::to_string(&envelope).map_err(|e| Fault::internal(e.to_string()))?;
        let envelope: Envelope =
            serde_json::from_str(&wire).map_err(|e| Fault::internal(e.to_string()))?;
        self.peer()?.bus().deliver(envelope, timeout).await
    }

    fn publish(&self, event: &EventEnvelope) {
        if let Ok(peer) = self.peer() {
            peer.bus().deliver_event(event.clone());
        }
    }
}
