//! Asynchronous operations: each state-changing request runs as a job that clients poll at
//! `/v1/jobs/{uuid}` or wait for with `?wait=<seconds>`. A job **is** the durable operation
//! of the store's journal (`flatstack_store::operation`): recorded before its work starts,
//! closed with its result, readable after a restart (when recovery closed what a stopped
//! node left running). Jobs still running in this process are also kept in memory, so that
//! waiting for one is a wake-up, not polling.

use flatstack_kernel::Fault;
use flatstack_store::operation::{Begun, NewOperation, Operation, OperationFilter, OperationState};
use flatstack_store::Store;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// A job as `/v1/jobs/{uuid}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub uuid: String,
    /// What it does: the request's message, e.g. `vm.create`.
    pub operation: String,
    pub state: OperationState,
    /// 0 while running, 100 when finished.
    pub progress: u8,
    /// While it runs on this node, the flow step it is at (`vm.create: allocate-host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The resource it acts on (for a create, the one it made, once known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Fault>,
    /// Closed by recovery after the node stopped while it ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The account of the caller that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_uuid: Option<String>,
}

impl From<Operation> for Job {
    fn from(op: Operation) -> Job {
        Job {
            progress: if op.state == OperationState::Running {
                0
            } else {
                100
            },
            step: None,
            uuid: op.uuid,
            operation: op.kind,
            state: op.state,
            resource_uuid: op.resource_uuid,
            result: op.result,
            error: op.error,
            recovered: op.recovered,
            created_at: op.created_at,
            finished_at: op.finished_at,
            account_uuid: op.account_uuid,
        }
        .at_its_step()
    }
}

impl Job {
    /// While it runs on this node, with the flow step it is at.
    fn at_its_step(mut self) -> Job {
        if self.state == OperationState::Running {
            self.step = flatstack_kernel::progress::step(&self.uuid);
        }
        self
    }
}

/// How many finished jobs are also kept in memory (the journal keeps them all, for its
/// retention window): enough for the clients that wait on them as they finish.
pub const FINISHED_JOBS_KEPT: usize = 10_000;

/// Each job with a receiver that turns `true` when it finishes, and the finished ones in
/// the order they finished.
#[derive(Default)]
struct JobTable {
    jobs: HashMap<String, (Job, watch::Receiver<bool>)>,
    finished: VecDeque<String>,
}

/// A job that [`Jobs::start`] began, or found (same idempotency key and request).
#[derive(Debug, Clone)]
pub struct Started {
    pub uuid: String,
    /// An earlier request's job, answered again instead of doing the work twice.
    pub existing: bool,
}

/// The jobs of this node: in the store's journal if the kernel has a store, and in memory
/// while they run.
#[derive(Clone)]
pub struct Jobs {
    store: Option<Arc<Store>>,
    table: Arc<Mutex<JobTable>>,
    admission: Arc<Admission>,
}

/// Whether new jobs are accepted, and how many run: what a stopping node closes and then
/// waits on ([`Jobs::close`], [`Jobs::drain`]). One watched value, so that refusing after
/// close and counting a job in are one step: no job can start once a drain has begun.
#[derive(Default)]
struct Admission(watch::Sender<Gate>);

#[derive(Default, Clone, Copy)]
struct Gate {
    closed: bool,
    running: usize,
}

/// A job counted as running until dropped: at the end of its task, or as a panic unwinds it.
struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0 .0.send_modify(|gate| gate.running -= 1);
    }
}

impl Jobs {
    /// Jobs journaled in `store` (none: in memory only, forgotten by a restart).
    pub fn new(store: Option<Arc<Store>>) -> Jobs {
        Jobs {
            store,
            table: Arc::default(),
            admission: Arc::default(),
        }
    }

    /// Records the operation, then runs `work` (given the operation's uuid) as its job.
    /// With an idempotency key already used for the same request, answers that job
    /// instead (`existing`); for another request, `422`. Refused (`unavailable`) once the
    /// jobs are closed.
    pub async fn start<F, Fut>(&self, new: NewOperation, work: F) -> Result<Started, Fault>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<Value, Fault>> + Send + 'static,
    {
        let admitted = self.admit()?;
        let op = match &self.store {
            Some(store) => match store.begin_operation(new).await? {
                Begun::New(op) => op,
                Begun::Existing(op) => {
                    return Ok(Started {
                        uuid: op.uuid,
                        existing: true,
                    })
                }
            },
            None => Operation {
                uuid: flatstack_store::resource::new_uuid(),
                kind: new.kind,
                service: new.service,
                verb: new.verb,
                resource_uuid: new.resource_uuid,
                state: OperationState::Running,
                request: new.request,
                result: None,
                error: None,
                idempotency_key: new.idempotency_key,
                recovered: false,
                account_uuid: new.account_uuid,
                created_at: flatstack_store::now(),
                updated_at: flatstack_store::now(),
                finished_at: None,
            },
        };
        let uuid = op.uuid.clone();
        let kind = op.kind.clone();
        let (done_tx, done_rx) = watch::channel(false);
        self.lock()
            .jobs
            .insert(uuid.clone(), (Job::from(op), done_rx));
        // A trace's span for the whole operation, a child of the request's (both disabled,
        // and free, unless traces are exported).
        let span = tracing::debug_span!("operation", job = %uuid, kind = %kind);
        let work = work(uuid.clone());
        let jobs = self.clone();
        let id = uuid.clone();
        tokio::spawn(
            async move {
                // Dropped last, once the job's end is recorded and announced.
                let _admitted = admitted;
                let outcome = work.await;
                jobs.finish(&id, outcome).await;
                let _ = done_tx.send(true);
            }
            .instrument(span),
        );
        Ok(Started {
            uuid,
            existing: false,
        })
    }

    /// Counts a new job in, unless the jobs are closed.
    fn admit(&self) -> Result<Admitted, Fault> {
        let admitted = self.admission.0.send_if_modified(|gate| {
            if !gate.closed {
                gate.running += 1;
            }
            !gate.closed
        });
        if admitted {
            Ok(Admitted(self.admission.clone()))
        } else {
            Err(Fault::unavailable(
                "the node is stopping: it accepts no new operations",
            ))
        }
    }

    /// Refuses every job started from now on; those running go on.
    pub fn close(&self) {
        self.admission.0.send_modify(|gate| gate.closed = true);
    }

    /// Waits until no job runs, at most `timeout`; how many still run then. Meant after
    /// [`Jobs::close`], when no new job can start.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let mut gate = self.admission.0.subscribe();
        let _ = tokio::time::timeout(timeout, gate.wait_for(|g| g.running == 0)).await;
        self.admission.0.borrow().running
    }

    /// The jobs still running in this process, oldest first.
    pub fn running(&self) -> Vec<Job> {
        let mut running: Vec<Job> = self
            .lock()
            .jobs
            .values()
            .filter(|(job, _)| job.state == OperationState::Running)
            .map(|(job, _)| job.clone())
            .collect();
        running.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        running
    }

    /// Closes a job: in the journal first (retried while the store is busy: a result must
    /// not be lost to a moment's contention), then in memory.
    async fn finish(&self, uuid: &str, outcome: Result<Value, Fault>) {
        if let Some(store) = &self.store {
            let recorded = flatstack_store::recovery::retry("record a job's result", 8, || async {
                Ok(store.finish_operation(uuid, &outcome, false).await?)
            })
            .await;
            if let Err(fault) = recorded {
                // Left running in the journal: recovery closes it at the next start.
                tracing::error!(job = %uuid, %fault, "cannot record a job's result");
            }
        }
        let mut table = self.lock();
        if let Some((job, _)) = table.jobs.get_mut(uuid) {
            job.progress = 100;
            job.finished_at = Some(flatstack_store::now());
            if let Some(made) = outcome
                .as_ref()
                .ok()
                .and_then(|v| v.get("uuid"))
                .and_then(Value::as_str)
            {
                job.resource_uuid.get_or_insert_with(|| made.to_owned());
            }
            let state = if outcome.is_ok() {
                "succeeded"
            } else {
                "failed"
            };
            // One line per operation, for operators: what, on what, how it ended, how long.
            let duration_ms = time::OffsetDateTime::parse(
                &job.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map(|began| (time::OffsetDateTime::now_utc() - began).as_seconds_f64() * 1e3)
            .unwrap_or(0.0);
            let resource = job.resource_uuid.as_deref().unwrap_or("");
            match &outcome {
                Ok(_) => tracing::info!(
                    job = %uuid, kind = %job.operation, resource, duration_ms,
                    "operation succeeded"
                ),
                Err(fault) => tracing::info!(
                    job = %uuid, kind = %job.operation, resource, duration_ms,
                    code = fault.code.as_str(), "operation failed"
                ),
            }
            metrics::counter!("flatstack_jobs_total", "kind" => job.operation.clone(), "state" => state)
                .increment(1);
            match outcome {
                Ok(result) => {
                    job.state = OperationState::Succeeded;
                    job.result = Some(result);
                }
                Err(fault) => {
                    job.state = OperationState::Failed;
                    job.error = Some(fault);
                }
            }
        }
        table.finished.push_back(uuid.to_owned());
        while table.finished.len() > FINISHED_JOBS_KEPT {
            if let Some(old) = table.finished.pop_front() {
                table.jobs.remove(&old);
            }
        }
    }

    /// The job `uuid`: from memory if this process ran it, else (or while it runs, when
    /// its handler may have linked the resource it works on) from the journal.
    pub async fn get(&self, uuid: &str) -> Result<Option<Job>, Fault> {
        if let Some((job, _)) = self.lock().jobs.get(uuid) {
            if job.state != OperationState::Running || self.store.is_none() {
                return Ok(Some(job.clone().at_its_step()));
            }
        }
        match &self.store {
            Some(store) => Ok(store.operation(uuid).await?.map(Job::from)),
            None => Ok(None),
        }
    }

    /// The job once finished, or `None` if it is still running after `wait` (or unknown).
    pub async fn wait(&self, uuid: &str, wait: Duration) -> Result<Option<Job>, Fault> {
        let done = self.lock().jobs.get(uuid).map(|(_, rx)| rx.clone());
        if let Some(mut done) = done {
            let finished = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
            if !matches!(finished, Ok(Ok(_))) {
                return Ok(None);
            }
        }
        Ok(self
            .get(uuid)
            .await?
            .filter(|job| job.state != OperationState::Running))
    }

    /// Jobs matching `filter`, newest first: a page of at most `limit`, the cursor of the
    /// next page if there may be one, and how many match in all.
    pub async fn list(
        &self,
        filter: &OperationFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>, i64), Fault> {
        let Some(store) = &self.store else {
            let mut jobs: Vec<Job> = self
                .lock()
                .jobs
                .values()
                .map(|(job, _)| job.clone())
                .collect();
            jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            let total = jobs.len() as i64;
            jobs.truncate(limit);
            return Ok((jobs, None, total));
        };
        let page = store.operations(filter, limit, cursor).await?;
        let next = (page.len() >= limit)
            .then(|| page.last().map(Operation::cursor))
            .flatten();
        let total = store.count_operations(filter).await?;
        Ok((page.into_iter().map(Job::from).collect(), next, total))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatstack_store::operation::Verb;
    use serde_json::json;

    fn new(kind: &str) -> NewOperation {
        NewOperation {
            kind: kind.to_owned(),
            service: "svc".to_owned(),
            verb: Verb::Action,
            resource_uuid: None,
            request: json!({}),
            idempotency_key: None,
            account_uuid: None,
        }
    }

    #[tokio::test]
    async fn jobs_report_results_and_errors_and_old_ones_leave_memory() {
        let jobs = Jobs::new(None);
        let ok = jobs
            .start(new("op"), |_| async { Ok(json!({"x": 1})) })
            .await
            .expect("started")
            .uuid;
        let failed = jobs
            .start(new("op"), |_| async { Err(Fault::conflict("no")) })
            .await
            .expect("started")
            .uuid;
        let ok = jobs
            .wait(&ok, Duration::from_secs(5))
            .await
            .expect("read")
            .expect("finished");
        assert_eq!(
            (ok.state, ok.progress, ok.result),
            (OperationState::Succeeded, 100, Some(json!({"x": 1})))
        );
        let failed = jobs
            .wait(&failed, Duration::from_secs(5))
            .await
            .expect("read")
            .expect("finished");
        assert_eq!(failed.state, OperationState::Failed);
        assert_eq!(failed.error.map(|f| f.message), Some("no".to_owned()));

        let slow = jobs
            .start(new("slow"), |_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Value::Null)
            })
            .await
            .expect("started")
            .uuid;
        assert!(
            jobs.wait(&slow, Duration::from_millis(10))
                .await
                .expect("read")
                .is_none(),
            "still running"
        );

        let first = ok.uuid;
        let mut last = String::new();
        for _ in 0..FINISHED_JOBS_KEPT {
            last = jobs
                .start(new("op"), |_| async { Ok(Value::Null) })
                .await
                .expect("started")
                .uuid;
        }
        jobs.wait(&last, Duration::from_secs(5))
            .await
            .expect("read")
            .expect("finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            jobs.get(&first).await.expect("read").is_none(),
            "without a store, the oldest finished job is forgotten"
        );
        assert!(jobs.get(&slow).await.expect("read").is_some());
    }

    #[tokio::test]
    async fn closed_jobs_refuse_new_ones_and_drain_waits_for_those_running() {
        let jobs = Jobs::new(None);
        let quick = jobs
            .start(new("quick"), |_| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Value::Null)
            })
            .await
            .unwrap()
            .uuid;
        let stuck = jobs
            .start(new("stuck"), |_| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            })
            .await
            .unwrap()
            .uuid;
        jobs.start(new("panics"), |_| async { panic!("a job that panics") })
            .await
            .unwrap();
        jobs.close();
        let refused = jobs
            .start(new("late"), |_| async { Ok(Value::Null) })
            .await
            .expect_err("closed");
        assert_eq!(refused.code, flatstack_kernel::FaultCode::Unavailable);
        assert!(refused.message.contains("stopping"), "{}", refused.message);

        let started = std::time::Instant::now();
        // The panicked job is not counted (though its record still says running).
        assert_eq!(jobs.drain(Duration::from_secs(2)).await, 1, "the stuck one");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(
            jobs.get(&quick).await.unwrap().map(|j| j.state),
            Some(OperationState::Succeeded),
            "the running job finished"
        );
        let running: Vec<String> = jobs.running().into_iter().map(|j| j.uuid).collect();
        assert!(running.contains(&stuck) && !running.contains(&quick));

        let idle = Jobs::new(None);
        idle.close();
        assert_eq!(idle.drain(Duration::from_secs(5)).await, 0);
    }
}
