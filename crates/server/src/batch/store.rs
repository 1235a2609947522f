//! Batch records of the Batches API, kept on disk so a restarted server still lists them
//! and resumes the unfinished ones: `DIR/BATCH_ID/batch.json` (rewritten atomically on
//! every change) beside the batch's `output.jsonl` and `errors.jsonl` as they grow.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a batch is (OpenAI's statuses; `expired` never happens here: a batch runs until
/// it is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Failed | Status::Completed | Status::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::Failed => "failed",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
}

/// `request_counts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
}

/// One batch, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: String,
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    pub status: Status,
    pub metadata: Value,
    pub created_at: u64,
    pub expires_at: u64,
    pub in_progress_at: Option<u64>,
    pub finalizing_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub cancelling_at: Option<u64>,
    pub cancelled_at: Option<u64>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub request_counts: Counts,
    /// Why the batch failed validation (`{code, message, line, param}` each).
    pub errors: Vec<Value>,
}

impl BatchRecord {
    /// OpenAI's `batch` object.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": if self.errors.is_empty() {
                Value::Null
            } else {
                json!({"object": "list", "data": self.errors})
            },
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.name(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": null,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": self.request_counts,
            "metadata": self.metadata,
        })
    }
}

/// A batch and its folder.
#[derive(Debug)]
pub struct BatchEntry {
    pub dir: PathBuf,
    record: Mutex<BatchRecord>,
    /// Set by a cancel: no new line starts.
    pub cancel: Arc<AtomicBool>,
}

impl BatchEntry {
    pub fn snapshot(&self) -> BatchRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the record and saves it (a failed save is logged: the batch goes on, and
    /// the record is saved again at its next change).
    pub fn update(&self, f: impl FnOnce(&mut BatchRecord)) -> BatchRecord {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r);
        if let Err(e) = save(&self.dir, &r) {
            tracing::warn!(batch = %r.id, "cannot save the batch record: {e}");
        }
        r.clone()
    }

    pub fn output_path(&self) -> PathBuf {
        self.dir.join("output.jsonl")
    }

    pub fn errors_path(&self) -> PathBuf {
        self.dir.join("errors.jsonl")
    }
}

fn save(dir: &Path, r: &BatchRecord) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    let tmp = dir.join(".batch.json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join("batch.json"))
}

/// Every batch of the server.
#[derive(Debug)]
pub struct Batches {
    dir: PathBuf,
    entries: Mutex<Vec<Arc<BatchEntry>>>,
    /// Batches run one at a time, in the order they were created.
    pub(crate) turn: tokio::sync::Semaphore,
}

impl Batches {
    /// Batches under `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Batches> {
        std::fs::create_dir_all(dir)?;
        let mut entries = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let path = e.path();
            let Ok(text) = std::fs::read(path.join("batch.json")) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<BatchRecord>(&text) else {
                tracing::warn!(path = %path.display(), "unreadable batch record, skipped");
                continue;
            };
            entries.push(Arc::new(BatchEntry {
                dir: path,
                cancel: Arc::new(AtomicBool::new(record.status == Status::Cancelling)),
                record: Mutex::new(record),
            }));
        }
        entries.sort_by_key(|e| (e.snapshot().created_at, e.snapshot().id));
        Ok(Batches {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
            turn: tokio::sync::Semaphore::new(1),
        })
    }

    /// No batches yet, kept in a fresh temporary folder (`--data-dir :memory:`, tests).
    pub fn temporary() -> Batches {
        Batches {
            dir: std::env::temp_dir().join(format!(
                "ferrollama-batches-{}-{:x}",
                std::process::id(),
                crate::openai::rand_seed()
            )),
            entries: Mutex::new(Vec::new()),
            turn: tokio::sync::Semaphore::new(1),
        }
    }

    /// Every batch, oldest first.
    pub fn list(&self) -> Vec<Arc<BatchEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<BatchEntry>> {
        self.list().into_iter().find(|e| e.snapshot().id == id)
    }

    /// Adds a batch: its folder and record.
    pub fn add(&self, record: BatchRecord) -> std::io::Result<Arc<BatchEntry>> {
        let dir = self.dir.join(&record.id);
        std::fs::create_dir_all(&dir)?;
        save(&dir, &record)?;
        let e = Arc::new(BatchEntry {
            dir,
            record: Mutex::new(record),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
        Ok(e)
    }
}
