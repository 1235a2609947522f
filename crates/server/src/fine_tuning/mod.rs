//! Fine-tuning jobs behind two APIs: OpenAI's (`/v1/fine_tuning/jobs`, [`openai`]) and
//! Llama Stack's post-training (`/v1/post-training/...`, [`llama_stack`]). Both create the
//! same [`JobEntry`], run by one background worker thread through the train crate's
//! [`Job`] (the code behind `ferrollama finetune`), one job at a time.
//!
//! Jobs yield to interactive requests: before every optimizer step the worker waits while
//! the engine has sequences running or queued, so a chat never waits for training (a job
//! under constant load makes no progress; that is the intended priority).
//!
//! Each job lives in `DIR/JOB_ID/`: `job.json` (what the APIs show, rewritten atomically on
//! every change), the training and validation files as given, and `out/` (the checkpoint and
//! the adapter or model). A server restarted while a job was queued or running queues it
//! again and resumes it from its last checkpoint. When a job succeeds its result is handed
//! to the [`OnComplete`] hook, which serves it under the job's `fine_tuned_model` name.

pub mod llama_stack;
pub mod openai;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ferrollama_engine::metrics::EngineStats;
use ferrollama_engine::scheduler::Engine;
use ferrollama_tensor::ThreadPool;
use ferrollama_train::job::{Control, Job, JobSpec, Output};
use ferrollama_train::{Event, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::unix_now;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reading the model and data (bad lines fail the job here).
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// One entry of a job's event log (OpenAI's `fine_tuning.job.event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: String,
    pub created_at: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// `message` or `metrics`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
}

/// A checkpoint a job wrote (the last one of each kind is kept on disk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCheckpoint {
    pub id: String,
    pub created_at: u64,
    pub step: u64,
    pub epoch: u64,
    pub train_loss: Option<f64>,
    pub valid_loss: Option<f64>,
    pub path: PathBuf,
}

/// What a job was asked to do and how it is going (the `job.json` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// Which API created it (`openai` or `llama_stack`), for the shapes it is shown in.
    pub api: String,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The base model id requests name.
    pub model: String,
    pub base_path: PathBuf,
    /// The engine's index of the base model.
    pub base_index: usize,
    pub training_file: String,
    pub validation_file: Option<String>,
    /// `lora` or `full`.
    pub method: String,
    /// The settings as the job will train with (rank, alpha, lr, epochs...).
    pub hyperparameters: Value,
    pub suffix: Option<String>,
    pub seed: u64,
    pub status: Status,
    /// The name the result is served under, once it succeeded.
    pub fine_tuned_model: Option<String>,
    /// The adapter (LoRA) or model (full) written.
    pub result_path: Option<PathBuf>,
    pub trained_tokens: u64,
    pub error: Option<String>,
    pub events: Vec<JobEvent>,
    pub checkpoints: Vec<JobCheckpoint>,
    pub metadata: Value,
}

/// A job shared by the worker and the handlers.
#[derive(Debug)]
pub struct JobEntry {
    pub dir: PathBuf,
    pub record: Mutex<JobRecord>,
    pub cancel: AtomicBool,
}

impl JobEntry {
    /// A copy of the record.
    pub fn snapshot(&self) -> JobRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r);
        if let Err(e) = save_record(&self.dir, &r) {
            tracing::warn!(job = %r.id, "cannot save the job record: {e}");
        }
    }

    fn event(&self, level: &str, kind: &str, message: String, data: Value) {
        self.update(|r| {
            let id = format!("ftevent-{}", short_id());
            r.events.push(JobEvent {
                id,
                created_at: unix_now(),
                level: level.into(),
                message,
                kind: kind.into(),
                data,
            });
        });
    }
}

/// Serves a finished job's result under a model name: `(name, result path, base model
/// index, is_adapter)`.
pub type OnComplete = Arc<dyn Fn(&str, &Path, usize, bool) -> Result<(), String> + Send + Sync>;

/// Every job and the queue the worker takes them from.
pub struct FineTuning {
    dir: PathBuf,
    jobs: Mutex<Vec<Arc<JobEntry>>>,
    queue: Mutex<VecDeque<Arc<JobEntry>>>,
    wake: Condvar,
    on_complete: Mutex<Option<OnComplete>>,
}

impl std::fmt::Debug for FineTuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FineTuning")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
/// 24 random hex digits.
pub fn short_id() -> String {
    format!(
        "{:012x}{:012x}",
        crate::openai::rand_seed() & 0xffff_ffff_ffff,
        crate::openai::rand_seed() & 0xffff_ffff_ffff
    )
}

/// Whether `id` can name a job folder (Llama Stack lets the client choose the id).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn save_record(dir: &Path, r: &JobRecord) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    let tmp = dir.join(".job.json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join("job.json"))
}

impl FineTuning {
    /// Jobs under `dir` (created if missing); jobs a previous server left queued or
    /// running are queued again, to resume from their checkpoints.
    pub fn open(dir: &Path) -> std::io::Result<FineTuning> {
        std::fs::create_dir_all(dir)?;
        let mut jobs = Vec::new();
        let mut queue = VecDeque::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let Ok(text) = std::fs::read(path.join("job.json")) else {
                continue;
            };
            let Ok(mut record) = serde_json::from_slice::<JobRecord>(&text) else {
                tracing::warn!(path = %path.display(), "unreadable fine-tuning job record, skipped");
                continue;
            };
            let requeue = !record.status.is_final();
            if requeue {
                // The spec is rebuilt from the files in the folder by the worker.
                record.status = Status::Queued;
            }
            let e = Arc::new(JobEntry {
                dir: path,
                record: Mutex::new(record),
                cancel: AtomicBool::new(false),
            });
            if requeue {
                queue.push_back(e.clone());
            }
            jobs.push(e);
        }
        jobs.sort_by_key(|j| j.snapshot().created_at);
        Ok(FineTuning {
            dir: dir.to_path_buf(),
            jobs: Mutex::new(jobs),
            queue: Mutex::new(queue),
            wake: Condvar::new(),
            on_complete: Mutex::new(None),
        })
    }

    /// No jobs yet, kept in a fresh folder under the system's temporary directory (created
    /// when the first job is): for `--data-dir :memory:` and tests.
    pub fn temporary() -> FineTuning {
        let dir = std::env::temp_dir().join(format!(
            "ferrollama-fine-tuning-{}-{}",
            std::process::id(),
            short_id()
        ));
        FineTuning {
            dir,
            jobs: Mutex::new(Vec::new()),
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            on_complete: Mutex::new(None),
        }
    }

    /// Sets what serves a finished job's result, and hands it every job that already
    /// succeeded (so their names are served again after a restart).
    pub fn set_on_complete(&self, hook: OnComplete) {
        for j in self.list() {
            let r = j.snapshot();
            if let (Status::Succeeded, Some(name), Some(path)) =
                (r.status, &r.fine_tuned_model, &r.result_path)
                && let Err(e) = hook(name, path, r.base_index, r.method == "lora")
            {
                tracing::warn!(job = %r.id, "cannot serve {name} again: {e}");
            }
        }
        *self.on_complete.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<Arc<JobEntry>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<JobEntry>> {
        self.list().into_iter().find(|j| j.snapshot().id == id)
    }

    /// The folder a new job `id` will use.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Adds a job (its folder already holds its files) and queues it.
    pub fn submit(&self, dir: PathBuf, record: JobRecord) -> std::io::Result<Arc<JobEntry>> {
        save_record(&dir, &record)?;
        let e = Arc::new(JobEntry {
            dir,
            record: Mutex::new(record),
            cancel: AtomicBool::new(false),
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(e.clone());
        self.wake.notify_all();
        Ok(e)
    }

    /// Asks a job to stop: a queued one ends at once, a running one after its current
    /// step (with a checkpoint). Returns the record after the request.
    pub fn cancel(&self, job: &JobEntry) -> JobRecord {
        job.cancel.store(true, Ordering::SeqCst);
        let r = job.snapshot();
        if matches!(r.status, Status::Queued | Status::ValidatingFiles) {
            self.queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|q| !std::ptr::eq(q.as_ref(), job));
            job.update(|r| {
                r.status = Status::Cancelled;
                r.finished_at = Some(unix_now());
            });
            job.event("info", "message", "Job cancelled".into(), json!({}));
        }
        job.snapshot()
    }

    /// Starts the worker thread: jobs run one at a time on a pool of `threads`, yielding
    /// to the engine's requests (`stats`).
    pub fn start_worker(self: &Arc<Self>, engine: Engine, threads: usize) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fine-tuning".into())
            .spawn(move || {
                let pool = ThreadPool::new(threads.max(1));
                loop {
                    let job = {
                        let mut q = me.queue.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(j) = q.pop_front() {
                                break j;
                            }
                            q = me.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    me.run_job(&job, &pool, engine.stats());
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the fine-tuning worker: {e}");
        }
    }

    fn run_job(&self, job: &JobEntry, pool: &ThreadPool, stats: &EngineStats) {
        let r = job.snapshot();
        if job.cancel.load(Ordering::SeqCst) || r.status.is_final() {
            return;
        }
        let spec = match spec_of(&job.dir, &r) {
            Ok(s) => s,
            Err(e) => return fail(job, e),
        };
        job.update(|r| r.status = Status::ValidatingFiles);
        let resumed = spec.resume;
        let prepared = Job::prepare(spec);
        let mut prepared = match prepared {
            Ok(p) => p,
            Err(e) => return fail(job, e.to_string()),
        };
        apply_step_cap(&mut prepared, &r.hyperparameters);
        for n in &prepared.notes {
            job.event("warn", "message", n.clone(), json!({}));
        }
        let total = prepared.trainer.total_steps();
        let at = prepared.trainer.progress.step;
        job.update(|r| {
            r.status = Status::Running;
            r.started_at.get_or_insert(unix_now());
            if resumed {
                // Steps after the checkpoint were lost with the process and run again: their
                // metrics and tokens would otherwise count twice.
                let lost: u64 = r
                    .events
                    .iter()
                    .filter(|e| e.kind == "metrics" && step_of(e).is_some_and(|s| s > at))
                    .filter_map(|e| e.data.get("tokens").and_then(Value::as_u64))
                    .sum();
                r.trained_tokens = r.trained_tokens.saturating_sub(lost);
                r.events
                    .retain(|e| e.kind != "metrics" || step_of(e).is_none_or(|s| s <= at));
            }
        });
        job.event(
            "info",
            "message",
            if resumed {
                format!("Fine-tuning job resumed at step {at} of {total}")
            } else {
                format!("Fine-tuning job started: {total} steps")
            },
            json!({"total_steps": total}),
        );
        let control = Yield { job, stats };
        let mut last_loss = None;
        let mut on = |e: &Event| match e {
            Event::Step(s) => {
                last_loss = Some(s.loss);
                job.update(|r| r.trained_tokens += s.tokens as u64);
                job.event(
                    "info",
                    "metrics",
                    format!(
                        "Step {}/{}: training loss={:.4}",
                        s.step, s.total_steps, s.loss
                    ),
                    json!({"step": s.step, "total_steps": s.total_steps, "train_loss": s.loss,
                           "grad_norm": s.grad_norm, "learning_rate": s.lr,
                           "tokens": s.tokens, "tokens_per_s": s.tokens_per_s,
                           "epoch": s.epoch}),
                );
            }
            Event::EvalDpo { step, metrics } => {
                job.event(
                    "info",
                    "metrics",
                    format!("Step {step}: validation DPO loss={:.4}", metrics.loss()),
                    json!({"step": step, "valid_loss": metrics.loss(),
                           "valid_reward_accuracy": metrics.accuracy()}),
                );
            }
            Event::Eval { step, loss } => {
                job.event(
                    "info",
                    "metrics",
                    format!("Step {step}: validation loss={loss:.4}"),
                    json!({"step": step, "valid_loss": loss}),
                );
                job.update(|r| {
                    if let Some(c) = r.checkpoints.iter_mut().rev().find(|c| c.step == *step) {
                        c.valid_loss = Some(*loss);
                    }
                });
            }
            Event::Checkpoint { step } => {
                let ck = JobCheckpoint {
                    id: format!("ftckpt-{}", short_id()),
                    created_at: unix_now(),
                    step: *step,
                    epoch: 0,
                    train_loss: last_loss,
                    valid_loss: None,
                    path: job.dir.join("out"),
                };
                job.update(|r| {
                    r.checkpoints.retain(|c| c.step != *step);
                    r.checkpoints.push(ck);
                });
            }
        };
        match prepared.run(pool, &control, &mut on) {
            Ok(out) => {
                let (path, is_adapter) = match out {
                    Output::Adapter { gguf, .. } => (gguf, true),
                    Output::Model(p) => (p, false),
                };
                let name = fine_tuned_name(&r);
                let served = self
                    .on_complete
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .map(|hook| hook(&name, &path, r.base_index, is_adapter));
                if let Some(Err(e)) = &served {
                    job.event(
                        "warn",
                        "message",
                        format!("The result was written but cannot be served: {e}"),
                        json!({}),
                    );
                }
                job.update(|r| {
                    r.status = Status::Succeeded;
                    r.finished_at = Some(unix_now());
                    r.result_path = Some(path.clone());
                    r.fine_tuned_model = Some(name.clone());
                });
                job.event(
                    "info",
                    "message",
                    format!("The job has successfully completed: {name}"),
                    json!({"fine_tuned_model": name}),
                );
            }
            Err(TrainError::Cancelled { step }) => {
                job.update(|r| {
                    r.status = Status::Cancelled;
                    r.finished_at = Some(unix_now());
                });
                job.event(
                    "info",
                    "message",
                    format!("Job cancelled at step {step}"),
                    json!({"step": step}),
                );
            }
            Err(e) => fail(job, e.to_string()),
        }
    }
}

/// The name a succeeded job's result is served under: `ft:BASE:SUFFIX:ID`, as OpenAI's.
fn fine_tuned_name(r: &JobRecord) -> String {
    // Ids are ASCII (`valid_id`, or ours); `get` keeps a non-ASCII one from panicking.
    let tail = r.id.get(r.id.len().saturating_sub(8)..).unwrap_or(&r.id);
    format!(
        "ft:{}:{}:{tail}",
        r.model,
        r.suffix.as_deref().unwrap_or("ferrollama")
    )
}

fn fail(job: &JobEntry, message: String) {
    job.update(|r| {
        r.status = Status::Failed;
        r.finished_at = Some(unix_now());
        r.error = Some(message.clone());
    });
    job.event(
        "error",
        "message",
        format!("Job failed: {message}"),
        json!({}),
    );
}

/// The step a metrics event reports.
fn step_of(e: &JobEvent) -> Option<u64> {
    e.data.get("step").and_then(Value::as_u64)
}

/// A Llama Stack `max_steps_per_epoch` caps the run at `epochs × cap` steps.
fn apply_step_cap(job: &mut Job, hp: &Value) {
    let cap = hp.get("max_steps_per_epoch").and_then(Value::as_u64);
    let epochs = hp.get("n_epochs").and_then(Value::as_u64).unwrap_or(1);
    if let Some(cap) = cap.filter(|&c| c > 0) {
        let total = job.trainer.total_steps().min(cap * epochs);
        job.trainer.config.length = ferrollama_train::Length::Steps(total);
    }
}

/// The train crate's job for a record: its files in its folder, its settings from the
/// record's hyperparameters (validated when the job was created).
fn spec_of(dir: &Path, r: &JobRecord) -> Result<JobSpec, String> {
    let hp = &r.hyperparameters;
    let f = |k: &str| hp.get(k).and_then(Value::as_f64);
    let u = |k: &str| hp.get(k).and_then(Value::as_u64);
    let method = if r.method == "lora" {
        let targets = hp
            .get("lora_targets")
            .and_then(Value::as_str)
            .unwrap_or("all");
        ferrollama_train::job::Method::Lora(ferrollama_train::LoraConfig {
            dropout: f("lora_dropout").unwrap_or(0.0),
            rank: u("lora_rank").unwrap_or(16) as usize,
            alpha: f("lora_alpha").unwrap_or(32.0),
            targets: ferrollama_train::Target::parse_list(targets).map_err(|e| e.to_string())?,
        })
    } else {
        ferrollama_train::job::Method::Full
    };
    let out = dir.join("out");
    let resume = out
        .join(ferrollama_train::checkpoint::CHECKPOINT_FILE)
        .exists();
    let config = ferrollama_train::TrainConfig {
        length: ferrollama_train::Length::Epochs(u("n_epochs").unwrap_or(3)),
        lr: f("learning_rate").unwrap_or(2e-4),
        warmup: u("warmup_steps").unwrap_or(0),
        batch_size: u("batch_size").unwrap_or(4).max(1) as usize,
        grad_accum: u("gradient_accumulation_steps").unwrap_or(1).max(1) as usize,
        max_grad_norm: 1.0,
        adamw: ferrollama_train::AdamWConfig {
            weight_decay: f("weight_decay").unwrap_or(0.01),
            ..Default::default()
        },
        seed: r.seed,
        eval_every: u("eval_every").unwrap_or(0),
        checkpoint_every: u("checkpoint_every").unwrap_or(10),
        recompute: hp
            .get("activation_checkpointing")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Ok(JobSpec {
        model: r.base_path.clone(),
        data: dir.join("train.jsonl"),
        eval: r
            .validation_file
            .as_ref()
            .map(|_| dir.join("validation.jsonl")),
        method,
        // A DPO job (OpenAI `method.type = "dpo"`, Llama Stack `preference-optimize`)
        // records its β; everything else is supervised.
        loss: match f("dpo_beta") {
            Some(beta) => ferrollama_train::job::Loss::Dpo { beta },
            None => ferrollama_train::job::Loss::CrossEntropy,
        },
        config,
        sequences: ferrollama_train::data::SequenceOptions {
            seq_len: u("seq_len").unwrap_or(2048).max(1) as usize,
            policy: if hp.get("truncate").and_then(Value::as_bool) == Some(true) {
                ferrollama_train::data::LengthPolicy::Truncate
            } else {
                ferrollama_train::data::LengthPolicy::Refuse
            },
        },
        out,
        resume,
        out_type: ferrollama_train::job::OutType::F16,
        base_compute: ferrollama_train::BaseCompute::F32,
    })
}

/// Between steps: stop when cancelled; wait while the engine serves requests.
struct Yield<'a> {
    job: &'a JobEntry,
    stats: &'a EngineStats,
}

impl Control for Yield<'_> {
    fn proceed(&self) -> bool {
        loop {
            if self.job.cancel.load(Ordering::SeqCst) {
                return false;
            }
            let busy = self.stats.running.load(Ordering::Relaxed) > 0
                || self.stats.queue_depth.load(Ordering::Relaxed) > 0;
            if !busy {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Copies a training file into the job's folder: a Files API id (`file-...`), or a path
/// on the server's machine.
pub async fn fetch_file(
    app: &crate::state::AppState,
    source: &str,
    dest: &Path,
    param: &str,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    let bytes = if source.starts_with("file-") {
        app.files
            .read_bytes(source)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot read {source}: {e}")))?
            .ok_or_else(|| {
                ApiError::invalid_param(
                    param,
                    format!("no file {source}: upload it with POST /v1/files first"),
                )
            })?
    } else {
        let p = PathBuf::from(source);
        if !p.is_absolute() {
            return Err(ApiError::invalid_param(
                param,
                format!(
                    "{source:?} is neither a file id from /v1/files nor an absolute path on the \
                     server"
                ),
            ));
        }
        let shown = p.display().to_string();
        tokio::task::spawn_blocking(move || std::fs::read(p))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .map_err(|e| ApiError::invalid_param(param, format!("cannot read {shown}: {e}")))?
    };
    if bytes.is_empty() {
        return Err(ApiError::invalid_param(
            param,
            format!("{source} is empty: a training file needs at least one JSONL record"),
        ));
    }
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::write(dest, bytes))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::unavailable(format!("cannot store {source}: {e}")))
}

/// Serves every succeeded job's result under its `fine_tuned_model` name: an adapter on
/// its base model (as `POST /v1/load_lora_adapter` would), a fully fine-tuned model loaded
/// into the engine beside the others. Jobs that succeeded before a restart are served
/// again at once.
pub fn serve_results(app: &Arc<crate::state::AppState>) {
    let weak = Arc::downgrade(app);
    let hook: OnComplete = Arc::new(move |name, path, base, is_adapter| {
        let app = weak.upgrade().ok_or("the server is stopping")?;
        if app.models.contains(name) {
            return Err(format!("the name {name} is already in use"));
        }
        let (model, lora) = if is_adapter {
            let m = app
                .engine
                .model(base)
                .ok_or_else(|| format!("base model index {base} is not loaded"))?;
            let lora = ferrollama_engine::Lora::load(name.to_string(), path, &m)
                .map_err(|e| e.to_string())?;
            (base, Some(Arc::new(lora)))
        } else {
            let m = ferrollama_engine::Model::load(path).map_err(|e| e.to_string())?;
            let i = app.engine.load(Arc::new(m)).map_err(|e| e.to_string())?;
            app.models.note_loaded(path.to_path_buf(), i);
            (i, None)
        };
        app.models
            .insert(crate::state::Registered {
                id: name.to_string(),
                model,
                provider_model_id: path.display().to_string(),
                metadata: json!({"fine_tuned": true}),
                lora,
            })
            .map_err(|e| e.to_string())
    });
    app.fine_tuning.set_on_complete(hook);
}
