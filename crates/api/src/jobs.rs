//! Asynchronous operations: each state-changing request runs as a job that clients poll
//! at `/v1/jobs/{uuid}` or wait for with `?wait=<seconds>`.

use flatstack_kernel::Fault;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A job as `/v1/jobs/{uuid}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub uuid: String,
    /// What it does, e.g. `zone.create`.
    pub operation: String,
    pub state: JobState,
    /// 0 while running, 100 when finished.
    pub progress: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Fault>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// How many finished jobs are kept for clients to read; the oldest go first.
pub const FINISHED_JOBS_KEPT: usize = 10_000;

/// Each job with a receiver that turns `true` when it finishes, and the finished ones in
/// the order they finished.
#[derive(Default)]
struct JobTable {
    jobs: HashMap<String, (Job, watch::Receiver<bool>)>,
    finished: VecDeque<String>,
}

/// The jobs of this node, kept in memory (not across restarts).
#[derive(Default, Clone)]
pub struct Jobs {
    jobs: Arc<Mutex<JobTable>>,
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
    /// Starts `work` as a job and returns its uuid; refused (`unavailable`) once the jobs
    /// are closed.
    pub fn start<F>(&self, operation: &str, work: F) -> Result<String, Fault>
    where
        F: Future<Output = Result<Value, Fault>> + Send + 'static,
    {
        let admitted = self.admit()?;
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let (done_tx, done_rx) = watch::channel(false);
        let job = Job {
            uuid: uuid.clone(),
            operation: operation.to_owned(),
            state: JobState::Running,
            progress: 0,
            result: None,
            error: None,
            created_at: now(),
            finished_at: None,
        };
        self.lock().jobs.insert(uuid.clone(), (job, done_rx));
        let jobs = self.clone();
        let id = uuid.clone();
        tokio::spawn(async move {
            // Dropped last, once the job's end is recorded and announced.
            let _admitted = admitted;
            let outcome = work.await;
            let mut table = jobs.lock();
            if let Some((job, _)) = table.jobs.get_mut(&id) {
                job.progress = 100;
                job.finished_at = Some(now());
                match outcome {
                    Ok(result) => {
                        job.state = JobState::Succeeded;
                        job.result = Some(result);
                    }
                    Err(fault) => {
                        job.state = JobState::Failed;
                        job.error = Some(fault);
                    }
                }
            }
            table.finished.push_back(id);
            while table.finished.len() > FINISHED_JOBS_KEPT {
                if let Some(old) = table.finished.pop_front() {
                    table.jobs.remove(&old);
                }
            }
            drop(table);
            let _ = done_tx.send(true);
        });
        Ok(uuid)
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

    /// The jobs still running, oldest first.
    pub fn running(&self) -> Vec<Job> {
        let mut running: Vec<Job> = self
            .lock()
            .jobs
            .values()
            .filter(|(job, _)| job.state == JobState::Running)
            .map(|(job, _)| job.clone())
            .collect();
        running.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        running
    }

    pub fn get(&self, uuid: &str) -> Option<Job> {
        self.lock().jobs.get(uuid).map(|(job, _)| job.clone())
    }

    /// The job once finished, or `None` if it is still running after `wait`.
    pub async fn wait(&self, uuid: &str, wait: Duration) -> Option<Job> {
        let mut done = self.lock().jobs.get(uuid).map(|(_, rx)| rx.clone())?;
        let finished = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        match finished {
            Ok(Ok(_)) => self.get(uuid),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn jobs_report_results_and_errors_and_old_ones_are_forgotten() {
        let jobs = Jobs::default();
        let ok = jobs.start("op", async { Ok(json!({"x": 1})) }).unwrap();
        let failed = jobs
            .start("op", async { Err(Fault::conflict("no")) })
            .unwrap();
        let ok = jobs
            .wait(&ok, Duration::from_secs(5))
            .await
            .expect("finished");
        assert_eq!(
            (ok.state, ok.progress, ok.result),
            (JobState::Succeeded, 100, Some(json!({"x": 1})))
        );
        let failed = jobs
            .wait(&failed, Duration::from_secs(5))
            .await
            .expect("finished");
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.error.map(|f| f.message), Some("no".to_owned()));

        let slow = jobs
            .start("slow", async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Value::Null)
            })
            .unwrap();
        assert!(
            jobs.wait(&slow, Duration::from_millis(10)).await.is_none(),
            "still running"
        );
        assert_eq!(jobs.get(&slow).map(|j| j.state), Some(JobState::Running));

        let first = ok.uuid;
        let mut last = String::new();
        for _ in 0..FINISHED_JOBS_KEPT {
            last = jobs.start("op", async { Ok(Value::Null) }).unwrap();
        }
        jobs.wait(&last, Duration::from_secs(5))
            .await
            .expect("finished");
        // Let the other tasks finish too.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            jobs.get(&first).is_none(),
            "the oldest finished job is forgotten"
        );
        assert!(jobs.get(&last).is_some());
        assert!(
            jobs.get(&slow).is_some(),
            "running jobs are never forgotten"
        );
    }

    #[tokio::test]
    async fn closed_jobs_refuse_new_ones_and_drain_waits_for_those_running() {
        let jobs = Jobs::default();
        let quick = jobs
            .start("quick", async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Value::Null)
            })
            .unwrap();
        let stuck = jobs
            .start("stuck", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            })
            .unwrap();
        jobs.start("panics", async { panic!("a job that panics") })
            .unwrap();
        jobs.close();
        let refused = jobs
            .start("late", async { Ok(Value::Null) })
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
            jobs.get(&quick).map(|j| j.state),
            Some(JobState::Succeeded),
            "the running job finished"
        );
        let running: Vec<String> = jobs.running().into_iter().map(|j| j.uuid).collect();
        assert!(running.contains(&stuck) && !running.contains(&quick));

        let idle = Jobs::default();
        idle.close();
        assert_eq!(idle.drain(Duration::from_secs(5)).await, 0);
    }
}
