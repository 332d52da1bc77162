//! Per-resource serial queues: ZStack's "sync signature" without locks in business logic.
//!
//! Each (service, resource id) has a lane: a channel drained by one task, so operations on one
//! resource run one after another while different resources run in parallel. A lane retires
//! when it runs dry, so idle resources cost nothing.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub(crate) type Job = BoxFuture<'static, ()>;

#[derive(Default)]
pub(crate) struct ResourceQueues {
    // Senders only send while holding this lock, and a lane only retires while holding it
    // after seeing its channel empty; so no job is ever sent to a retired lane.
    lanes: Mutex<HashMap<String, UnboundedSender<Job>>>,
    /// Jobs pushed and not yet started: those waiting behind their lane's running one.
    waiting: AtomicUsize,
}

impl ResourceQueues {
    pub fn push(self: &Arc<Self>, service: &str, resource: &str, job: Job) {
        let key = format!("{service}\u{0}{resource}");
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match lanes.get(&key) {
            Some(lane) => match lane.send(job) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => job,
        };
        let (tx, rx) = unbounded_channel();
        // The receiver is alive (held below), so this send cannot fail.
        let _ = tx.send(job);
        lanes.insert(key.clone(), tx);
        tokio::spawn(drain(self.clone(), key, rx));
    }

    /// Number of resources with queued or running work (for introspection and tests).
    pub fn active_lanes(&self) -> usize {
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Number of requests waiting behind another on their resource's lane (or about to
    /// start on it).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

async fn drain(queues: Arc<ResourceQueues>, key: String, mut rx: UnboundedReceiver<Job>) {
    loop {
        while let Ok(job) = rx.try_recv() {
            queues.waiting.fetch_sub(1, Ordering::Relaxed);
            job.await;
        }
        let mut lanes = queues.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if rx.is_empty() {
            lanes.remove(&key);
            return;
        }
    }
}
