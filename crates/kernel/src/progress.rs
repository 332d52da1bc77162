//! What each running operation is doing right now: the flow step its handler runs, for
//! `/v1/jobs/{uuid}` and the client's progress line.
//!
//! The bus runs a request that names an operation ([`crate::MessageContext::operation`])
//! inside that operation's scope; [`crate::Flow::run`] notes each step it starts under the
//! scope's operation, and forgets it when the flow ends (a nested flow gives the outer
//! one's step back). In memory only: a step lasts a moment, and after a restart an
//! unfinished operation is recovery's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

tokio::task_local! {
    static OPERATION: Arc<str>;
}

/// The step each operation runs now, as `flow: step`. Keyed by operation uuid, which no two
/// kernels of a process share.
static STEPS: LazyLock<Mutex<HashMap<Arc<str>, String>>> = LazyLock::new(Default::default);

fn steps() -> std::sync::MutexGuard<'static, HashMap<Arc<str>, String>> {
    STEPS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `future`, run as part of `operation`: the flows it runs note their steps under it.
pub(crate) fn scope<F: Future>(operation: Arc<str>, future: F) -> impl Future<Output = F::Output> {
    OPERATION.scope(operation, future)
}

/// The step operation `uuid` runs now (`vm.create: allocate-host`), if a flow of it runs.
pub fn step(uuid: &str) -> Option<String> {
    steps().get(uuid).cloned()
}

/// A flow running as part of an operation: notes its steps, and on drop (the flow's end,
/// however it ends) gives back what was noted before it.
pub(crate) struct Noted {
    operation: Arc<str>,
    before: Option<String>,
}

impl Noted {
    /// The flow starting now, if it runs in an operation's scope.
    pub(crate) fn start() -> Option<Noted> {
        let operation = OPERATION.try_with(Arc::clone).ok()?;
        let before = steps().get(&operation).cloned();
        Some(Noted { operation, before })
    }

    /// Step `step` of flow `flow` begins.
    pub(crate) fn step(&self, flow: &str, step: &str) {
        steps().insert(self.operation.clone(), format!("{flow}: {step}"));
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        let mut steps = steps();
        match self.before.take() {
            Some(before) => steps.insert(self.operation.clone(), before),
            None => steps.remove(&self.operation),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flow_notes_its_steps_under_its_operation_and_forgets_them_at_its_end() {
        assert!(Noted::start().is_none(), "no operation, nothing noted");
        let op: Arc<str> = Arc::from("op-progress-test");
        scope(op.clone(), async {
            let outer = Noted::start().expect("in scope");
            outer.step("outer", "one");
            assert_eq!(step("op-progress-test").as_deref(), Some("outer: one"));
            {
                let inner = Noted::start().expect("in scope");
                inner.step("inner", "a");
                assert_eq!(step("op-progress-test").as_deref(), Some("inner: a"));
            }
            assert_eq!(step("op-progress-test").as_deref(), Some("outer: one"));
        })
        .await;
        assert_eq!(step("op-progress-test"), None);
    }
}
