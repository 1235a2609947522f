//! Runs a batch of the Batches API in the background: reads its input file, answers every
//! line through the router (as `ferrollama batch` does), then stores the output and error
//! files in the Files API.
//!
//! Batch work comes after interactive requests: at most a quarter of the engine's running
//! slots are the batch's, and no line starts while any request waits in the engine's queue,
//! so a chat arriving during a batch is admitted at the next step. A cancel stops new lines;
//! those running finish, and what is done is kept in the output file. A server restarted
//! mid-batch resumes it, skipping the custom_ids its files already hold.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrollama_rag::{NewFile, Purpose};
use serde_json::{Value, json};

use super::store::{BatchEntry, Status};
use super::{Done, LineError, Request, append, duplicates, error_line, parse_line};
use crate::job::unix_now;
use crate::state::AppState;

/// Starts (or resumes) a batch in the background.
pub fn start(app: &Arc<AppState>, entry: Arc<BatchEntry>) {
    tokio::spawn(run(app.clone(), entry));
}

/// Resumes every batch a previous server left unfinished.
pub fn resume_all(app: &Arc<AppState>) {
    for e in app.batches.list() {
        if !e.snapshot().status.is_final() {
            start(app, e);
        }
    }
}

async fn run(app: Arc<AppState>, entry: Arc<BatchEntry>) {
    let Ok(_turn) = app.batches.turn.acquire().await else {
        return;
    };
    if let Err(e) = process(&app, &entry).await {
        let id = entry.snapshot().id;
        if e == SHUTDOWN {
            // Left as it is: the next start resumes it.
            tracing::info!(batch = %id, "batch paused by the shutdown");
            return;
        }
        tracing::error!(batch = %id, "batch failed: {e}");
        entry.update(|r| {
            r.status = Status::Failed;
            r.failed_at = Some(unix_now());
            r.errors
                .push(json!({"code": "server_error", "message": e, "line": null, "param": null}));
        });
    }
}

/// Why a run stopped when the server shuts down (its lines are not failures: they run
/// again after the restart).
const SHUTDOWN: &str = "the server is shutting down";

/// Fails the batch at validation with `errors`.
fn fail(entry: &BatchEntry, errors: Vec<Value>) {
    entry.update(|r| {
        r.status = Status::Failed;
        r.failed_at = Some(unix_now());
        r.errors = errors;
    });
}

async fn process(app: &Arc<AppState>, entry: &Arc<BatchEntry>) -> Result<(), String> {
    let rec = entry.snapshot();
    if entry.cancel.load(Ordering::SeqCst) {
        return finish(app, entry, true).await;
    }
    let store = app.files.store.clone();
    let file_id = rec.input_file_id.clone();
    let input = tokio::task::spawn_blocking(move || store.read_content(&file_id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(input) = input else {
        fail(
            entry,
            vec![
                json!({"code": "invalid_file", "message": format!("the input file {} no longer exists", rec.input_file_id), "line": null, "param": "input_file_id"}),
            ],
        );
        return Ok(());
    };
    let mut parsed: Vec<Result<Request, LineError>> = Vec::new();
    for (k, raw) in input.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = k + 1;
        parsed.push(match std::str::from_utf8(raw) {
            Ok(s) => parse_line(line, s.trim_end_matches('\r'), Some(&rec.endpoint)),
            Err(e) => Err(LineError {
                line,
                custom_id: None,
                code: "invalid_json",
                message: format!("not valid UTF-8: {e}"),
            }),
        });
    }
    if parsed.is_empty() {
        fail(
            entry,
            vec![
                json!({"code": "empty_file", "message": "the input file has no requests", "line": null, "param": "input_file_id"}),
            ],
        );
        return Ok(());
    }
    let dups = duplicates(parsed.iter().filter_map(|r| match r {
        Ok(q) => Some((q.line, q.custom_id.as_str())),
        Err(e) => e.custom_id.as_deref().map(|c| (e.line, c)),
    }));
    if !dups.is_empty() {
        let errors = dups
            .iter()
            .map(|(id, lines)| {
                json!({"code": "duplicate_custom_id",
                       "message": format!("custom_id {id:?} is used on lines {lines:?}"),
                       "line": lines.get(1), "param": "custom_id"})
            })
            .collect();
        fail(entry, errors);
        return Ok(());
    }
    // What an earlier run of this batch (before a restart) finished.
    let (out_path, err_path) = (entry.output_path(), entry.errors_path());
    let (mut ok_done, mut err_done) = (Done::default(), Done::default());
    ok_done.read_into(&out_path).map_err(|e| e.to_string())?;
    err_done.read_into(&err_path).map_err(|e| e.to_string())?;
    let done = |r: &Result<Request, LineError>| {
        let (id, line) = match r {
            Ok(q) => (Some(q.custom_id.as_str()), q.line),
            Err(e) => (e.custom_id.as_deref(), e.line),
        };
        match id {
            Some(c) => ok_done.ids.contains(c) || err_done.ids.contains(c),
            None => err_done.lines.contains(&line),
        }
    };
    let total = parsed.len();
    let (mut completed, mut failed) =
        (ok_done.ids.len(), err_done.ids.len() + err_done.lines.len());
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))
    };
    let mut out_f = open(&out_path)?;
    let mut err_f = open(&err_path)?;
    let mut reqs = Vec::new();
    for r in parsed.into_iter().filter(|r| !done(r)) {
        match r {
            Ok(q) => reqs.push(q),
            Err(e) => {
                append(&mut err_f, &error_line(&e)).map_err(|e| e.to_string())?;
                failed += 1;
            }
        }
    }
    super::default_model(app, &mut reqs);
    entry.update(|r| {
        if r.status == Status::Validating {
            r.status = Status::InProgress;
            r.in_progress_at = Some(unix_now());
        }
        r.request_counts.total = total;
        r.request_counts.completed = completed;
        r.request_counts.failed = failed;
    });
    let concurrency = (app.engine.config().max_running / 4).clamp(1, 32);
    let engine = app.engine.clone();
    let gate = move || {
        let engine = engine.clone();
        async move {
            // Interactive requests first: wait while any request waits for a slot.
            while engine.stats().queue_depth.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    super::run_all(
        crate::router(app.clone()),
        app.api_key.clone(),
        reqs,
        concurrency,
        entry.cancel.clone(),
        gate,
        |o| -> Result<(), String> {
            if !o.ok() && app.engine.is_closed() {
                // Refused because of the shutdown, not because of the line.
                return Err(SHUTDOWN.to_string());
            }
            let f = if o.ok() { &mut out_f } else { &mut err_f };
            append(f, &o.out).map_err(|e| e.to_string())?;
            if o.ok() {
                completed += 1;
            } else {
                failed += 1;
            }
            entry.update(|r| {
                r.request_counts.completed = completed;
                r.request_counts.failed = failed;
            });
            Ok(())
        },
    )
    .await?;
    out_f.flush().map_err(|e| e.to_string())?;
    err_f.flush().map_err(|e| e.to_string())?;
    let cancelled = entry.cancel.load(Ordering::SeqCst);
    finish(app, entry, cancelled).await
}

/// Stores the output and error files in the Files API and ends the batch: completed, or
/// cancelled (keeping the lines that finished).
async fn finish(
    app: &Arc<AppState>,
    entry: &Arc<BatchEntry>,
    cancelled: bool,
) -> Result<(), String> {
    if !cancelled {
        entry.update(|r| {
            r.status = Status::Finalizing;
            r.finalizing_at = Some(unix_now());
        });
    }
    let id = entry.snapshot().id;
    let output = upload(app, &entry.output_path(), format!("{id}_output.jsonl")).await?;
    let errors = upload(app, &entry.errors_path(), format!("{id}_error.jsonl")).await?;
    entry.update(|r| {
        r.output_file_id = output;
        r.error_file_id = errors;
        let now = Some(unix_now());
        if cancelled {
            r.status = Status::Cancelled;
            r.cancelled_at = now;
        } else {
            r.status = Status::Completed;
            r.completed_at = now;
        }
    });
    Ok(())
}

/// `path` as a Files API file (purpose `batch`), or `None` when it holds nothing.
async fn upload(app: &AppState, path: &Path, filename: String) -> Result<Option<String>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let store = app.files.store.clone();
    let f = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut up = store.begin_upload().map_err(|e| e.to_string())?;
        up.write_all(&bytes).map_err(|e| e.to_string())?;
        up.commit(NewFile {
            filename,
            purpose: Purpose::Batch,
            expires_after: None,
        })
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(Some(f.id))
}
