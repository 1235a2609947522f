//! Eval jobs (`POST /v1/eval/benchmarks/{id}/jobs`): an evaluation run as a tokio task,
//! its state kept here for status, result and cancel. Jobs live in memory only (a restart
//! forgets them, as llama-stack's meta-reference provider does); at most [`MAX_RUNNING`]
//! run at once and the [`MAX_FINISHED`] most recent finished ones are kept.
//!
//! Cancelling aborts the task: the rows in flight are dropped, which ends their sequences
//! in the engine at its next step, and a cancelled job has no result (the rows generated
//! before the cancel are not kept: a partial result would score a different row set than
//! asked). Cancelling a finished job changes nothing.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::error::ApiError;
use crate::state::AppState;

/// Jobs running at once, all benchmarks together.
pub const MAX_RUNNING: usize = 4;
/// Finished jobs kept for their status and result; older ones are forgotten.
pub const MAX_FINISHED: usize = 100;

/// Where a job is (the client's `Job.status`).
#[derive(Debug, Clone)]
pub enum JobState {
    InProgress,
    /// The `EvaluateResponse`.
    Completed(Arc<Value>),
    Failed(ApiError),
    Cancelled,
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            JobState::InProgress => "in_progress",
            JobState::Completed(_) => "completed",
            JobState::Failed(_) => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// llama-stack's `Job` (with `error` for a failed job).
    pub fn to_json(&self, job_id: &str) -> Value {
        let mut v = json!({ "job_id": job_id, "status": self.name() });
        if let JobState::Failed(e) = self {
            v["error"] = Value::String(e.message.clone());
        }
        v
    }
}

#[derive(Debug)]
struct Entry {
    job_id: String,
    benchmark_id: String,
    state: JobState,
    abort: Option<AbortHandle>,
}

/// The eval jobs of this process (see the module docs).
#[derive(Debug, Default)]
pub struct EvalJobs {
    /// Oldest first.
    inner: Mutex<Vec<Entry>>,
}

impl EvalJobs {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Each change is one assignment, push or removal: a poisoned lock's data is whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of `job_id` if it belongs to `benchmark_id`.
    pub fn get(&self, benchmark_id: &str, job_id: &str) -> Option<JobState> {
        self.lock()
            .iter()
            .find(|e| e.job_id == job_id && e.benchmark_id == benchmark_id)
            .map(|e| e.state.clone())
    }

    /// Cancels `job_id` if it is still running; its state afterwards.
    pub fn cancel(&self, benchmark_id: &str, job_id: &str) -> Option<JobState> {
        let mut g = self.lock();
        let e = g
            .iter_mut()
            .find(|e| e.job_id == job_id && e.benchmark_id == benchmark_id)?;
        if matches!(e.state, JobState::InProgress) {
            if let Some(a) = e.abort.take() {
                a.abort();
            }
            e.state = JobState::Cancelled;
        }
        Some(e.state.clone())
    }

    /// Records the end of `job_id` (unless it was cancelled meanwhile).
    fn finish(&self, job_id: &str, r: Result<Value, ApiError>) {
        let mut g = self.lock();
        if let Some(e) = g.iter_mut().find(|e| e.job_id == job_id)
            && matches!(e.state, JobState::InProgress)
        {
            e.abort = None;
            e.state = match r {
                Ok(v) => JobState::Completed(Arc::new(v)),
                Err(err) => {
                    tracing::warn!(job_id, "eval job failed: {}", err.message);
                    JobState::Failed(err)
                }
            };
        }
    }
}

/// Starts `work` as a job of `benchmark_id`; its id. 429 when [`MAX_RUNNING`] jobs run.
pub fn start<F>(app: &Arc<AppState>, benchmark_id: &str, work: F) -> Result<String, ApiError>
where
    F: Future<Output = Result<Value, ApiError>> + Send + 'static,
{
    let mut g = app.evals.jobs.lock();
    let running = g
        .iter()
        .filter(|e| matches!(e.state, JobState::InProgress))
        .count();
    if running >= MAX_RUNNING {
        return Err(ApiError::busy(
            format!(
                "{running} eval jobs are running, the most at once; wait for one to finish or cancel one"
            ),
            10,
        ));
    }
    // Forget the oldest finished jobs beyond the limit.
    let finished = g.len() - running;
    let mut drop_n = (finished + 1).saturating_sub(MAX_FINISHED);
    g.retain(|e| {
        if drop_n > 0 && !matches!(e.state, JobState::InProgress) {
            drop_n -= 1;
            false
        } else {
            true
        }
    });
    let job_id = format!("evaljob-{}", crate::agents::api::new_id());
    let (app2, id2) = (app.clone(), job_id.clone());
    // Spawned under the lock: the task's `finish` waits for the entry to exist.
    let task = tokio::spawn(async move {
        let r = work.await;
        app2.evals.jobs.finish(&id2, r);
    });
    g.push(Entry {
        job_id: job_id.clone(),
        benchmark_id: benchmark_id.to_string(),
        state: JobState::InProgress,
        abort: Some(task.abort_handle()),
    });
    Ok(job_id)
}

/// 404 for a job id.
pub fn no_job(benchmark_id: &str, job_id: &str) -> ApiError {
    ApiError {
        param: Some("job_id".into()),
        code: Some("not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the benchmark '{benchmark_id}' has no job '{job_id}' (jobs are kept in memory \
                 until the server restarts; POST /v1/eval/benchmarks/{benchmark_id}/jobs starts one)"
            ),
        )
    }
}

/// 409 for the result of a job that has none.
pub fn no_result(job_id: &str, s: &JobState) -> ApiError {
    let message = match s {
        JobState::InProgress => format!(
            "the job '{job_id}' is still in_progress; poll its status until it is completed"
        ),
        JobState::Failed(e) => format!("the job '{job_id}' failed: {}", e.message),
        JobState::Cancelled => format!("the job '{job_id}' was cancelled and has no result"),
        JobState::Completed(_) => format!("the job '{job_id}' is completed"),
    };
    ApiError {
        code: Some("job_not_completed"),
        ..ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
    }
}
