//! Runs batch lines concurrently through [`super::dispatch`], handing each answer on as
//! soon as it is there (so a caller can write it out at once and lose nothing to a kill).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use serde_json::Value;
use tokio::task::JoinSet;

use super::line::{Request, result_line};

/// A line's answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub line: usize,
    pub custom_id: String,
    pub status: u16,
    /// The output line (OpenAI's `{"id", "custom_id", "response", "error"}`).
    pub out: Value,
}

impl Outcome {
    /// Whether it belongs in the output file (else the error file).
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Runs `reqs` with at most `concurrency` in flight, calling `sink` with each answer in
/// the order they finish. Before each line starts, `gate` is awaited (the server holds
/// batch work back while interactive requests wait). When `cancel` is set no new line
/// starts; those in flight finish. A `sink` error stops the run and is returned.
pub async fn run_all<E, G, F>(
    router: Router,
    api_key: Option<String>,
    reqs: Vec<Request>,
    concurrency: usize,
    cancel: Arc<AtomicBool>,
    gate: impl Fn() -> G,
    mut sink: F,
) -> Result<(), E>
where
    G: Future<Output = ()>,
    F: FnMut(Outcome) -> Result<(), E>,
{
    let mut set = JoinSet::new();
    let api_key: Option<Arc<str>> = api_key.map(Into::into);
    let mut pending = reqs.into_iter();
    loop {
        while set.len() < concurrency.max(1) && !cancel.load(Ordering::Relaxed) {
            let Some(req) = pending.next() else {
                break;
            };
            gate().await;
            let (router, key) = (router.clone(), api_key.clone());
            set.spawn(async move {
                let (status, request_id, body) =
                    super::dispatch(&router, key.as_deref(), &req).await;
                Outcome {
                    line: req.line,
                    out: result_line(&req.custom_id, status, &request_id, body),
                    custom_id: req.custom_id,
                    status,
                }
            });
        }
        match set.join_next().await {
            Some(Ok(o)) => sink(o)?,
            // A panicked line task: its line is left unanswered (a rerun runs it again).
            Some(Err(e)) => tracing::error!("a batch line failed: {e}"),
            None => return Ok(()),
        }
    }
}
