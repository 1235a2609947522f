//! [`EvalStore`]: registered datasets, scoring functions and benchmarks, in memory and
//! optionally in a folder (`DIR/datasets/HASH.json` per dataset, `DIR/scoring-functions.json`,
//! `DIR/benchmarks.json`), and the eval jobs (in memory only, see `eval_jobs.rs`). Files
//! are named by a hash of the id, so any id is safe as a name; each is replaced whole
//! through a temporary file and a rename, so a crash leaves the old or the new version.
//! The lock is held across the write so that concurrent appends to one dataset keep
//! their order on disk; callers run these methods off the async workers.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ferrollama_eval::scoring::{Row, ScoringFnDef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A registered dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub identifier: String,
    pub purpose: String,
    /// The source as registered (for a `rows` source, the rows it was registered with).
    pub source: Value,
    pub metadata: Value,
    /// The rows now: the source's, then any appended.
    pub rows: Vec<Row>,
}

impl Dataset {
    /// The API object (llama-stack's `Dataset`).
    pub fn to_json(&self) -> Value {
        json!({
            "identifier": self.identifier,
            "provider_id": "localfs",
            "provider_resource_id": self.identifier,
            "purpose": self.purpose,
            "source": self.source,
            "metadata": self.metadata,
            "type": "dataset",
        })
    }
}

/// A registered benchmark: the dataset an eval job runs over and the scoring functions
/// it scores with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    pub identifier: String,
    pub dataset_id: String,
    pub scoring_functions: Vec<String>,
    pub metadata: Value,
    pub provider_resource_id: String,
}

impl Benchmark {
    /// The API object (llama-stack's `Benchmark`).
    pub fn to_json(&self) -> Value {
        json!({
            "identifier": self.identifier,
            "provider_id": "meta-reference",
            "provider_resource_id": self.provider_resource_id,
            "dataset_id": self.dataset_id,
            "scoring_functions": self.scoring_functions,
            "metadata": self.metadata,
            "type": "benchmark",
        })
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the dataset '{0}' is already registered; DELETE /v1/datasets/{0} first or pick another id"
    )]
    DuplicateDataset(String),
    #[error("the scoring function '{0}' already exists; pick another scoring_fn_id")]
    DuplicateFunction(String),
    #[error(
        "the benchmark '{0}' is already registered; DELETE /v1/eval/benchmarks/{0} first or pick another benchmark_id"
    )]
    DuplicateBenchmark(String),
    #[error("the dataset '{0}' does not exist; GET /v1/datasets lists the datasets")]
    NoDataset(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Inner {
    /// In registration order (listings keep it), each with its sequence number (its
    /// place in the listing after a restart).
    datasets: Vec<(u64, Dataset)>,
    /// Registered at runtime (the built-ins are not stored).
    functions: Vec<ScoringFnDef>,
    /// In registration order.
    benchmarks: Vec<Benchmark>,
}

/// Datasets and scoring functions (see the module docs). `Default` keeps them in memory.
#[derive(Debug, Default)]
pub struct EvalStore {
    dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// The eval jobs of this process.
    pub jobs: super::eval_jobs::EvalJobs,
}

const FUNCTIONS_FILE: &str = "scoring-functions.json";
const BENCHMARKS_FILE: &str = "benchmarks.json";

impl EvalStore {
    /// State kept in `dir` (created if missing), with what is there loaded. A file that
    /// cannot be read is skipped with a warning rather than keeping the server down.
    pub fn open(dir: &Path) -> Result<EvalStore, StoreError> {
        let io = |path: &Path, source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let ds_dir = dir.join("datasets");
        std::fs::create_dir_all(&ds_dir).map_err(|e| io(&ds_dir, e))?;
        let mut inner = Inner::default();
        let mut entries: Vec<_> = std::fs::read_dir(&ds_dir)
            .map_err(|e| io(&ds_dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        let mut loaded: Vec<(u64, Dataset)> = Vec::new();
        for p in entries {
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Stored>(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => loaded.push((s.seq, s.dataset)),
                Err(e) => tracing::warn!("skipping dataset file {}: {e}", p.display()),
            }
        }
        // Registration order survives restarts through the sequence number.
        loaded.sort_by_key(|(seq, _)| *seq);
        inner.datasets = loaded;
        if let Some(f) = read_list(&dir.join(FUNCTIONS_FILE)) {
            inner.functions = f;
        }
        if let Some(b) = read_list(&dir.join(BENCHMARKS_FILE)) {
            inner.benchmarks = b;
        }
        Ok(EvalStore {
            dir: Some(dir.to_path_buf()),
            inner: Mutex::new(inner),
            jobs: Default::default(),
        })
    }

    /// Writes a list file (in memory: nothing).
    fn save_list<T: Serialize>(&self, file: &str, items: &[T]) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(file);
        let bytes = serde_json::to_vec_pretty(items).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is applied in memory only after its file is written, so the data
        // behind a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dataset_path(&self, id: &str) -> Option<PathBuf> {
        let h = Sha256::digest(id.as_bytes());
        let name: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .as_ref()
            .map(|d| d.join("datasets").join(format!("{name}.json")))
    }

    fn save_dataset(&self, d: &Dataset, seq: u64) -> Result<(), StoreError> {
        let Some(path) = self.dataset_path(&d.identifier) else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec(&StoredRef { seq, dataset: d }).map_err(|e| StoreError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        write_atomic(&path, &bytes)
    }

    /// Adds `d`.
    pub fn register(&self, d: Dataset) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.datasets.iter().any(|(_, x)| x.identifier == d.identifier) {
            return Err(StoreError::DuplicateDataset(d.identifier));
        }
        let seq = now_seq();
        self.save_dataset(&d, seq)?;
        g.datasets.push((seq, d));
        Ok(())
    }

    /// Every dataset, in registration order.
    pub fn list(&self) -> Vec<Dataset> {
        self.lock()
            .datasets
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// The dataset `id`.
    pub fn get(&self, id: &str) -> Option<Dataset> {
        self.lock()
            .datasets
            .iter()
            .find(|(_, d)| d.identifier == id)
            .map(|(_, d)| d.clone())
    }

    /// A page of `id`'s rows (`limit` None: to the end) and whether more follow.
    pub fn rows(&self, id: &str, start: usize, limit: Option<usize>) -> Option<(Vec<Row>, bool)> {
        let g = self.lock();
        let (_, d) = g.datasets.iter().find(|(_, d)| d.identifier == id)?;
        let n = d.rows.len();
        let end = limit.map_or(n, |l| start.saturating_add(l).min(n));
        let page = d
            .rows
            .get(start..end)
            .map(<[Row]>::to_vec)
            .unwrap_or_default();
        Some((page, end < n))
    }

    /// Appends `rows` to `id`.
    pub fn append(&self, id: &str, rows: Vec<Row>) -> Result<(), StoreError> {
        let mut g = self.lock();
        let (seq, d) = g
            .datasets
            .iter_mut()
            .find(|(_, d)| d.identifier == id)
            .ok_or_else(|| StoreError::NoDataset(id.to_string()))?;
        let mut next = d.clone();
        next.rows.extend(rows);
        self.save_dataset(&next, *seq)?;
        *d = next;
        Ok(())
    }

    /// Removes `id`; false when there is no such dataset.
    pub fn unregister(&self, id: &str) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let Some(i) = g.datasets.iter().position(|(_, d)| d.identifier == id) else {
            return Ok(false);
        };
        if let Some(p) = self.dataset_path(id) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path: p, source }),
            }
        }
        g.datasets.remove(i);
        Ok(true)
    }

    /// The scoring functions registered at runtime.
    pub fn functions(&self) -> Vec<ScoringFnDef> {
        self.lock().functions.clone()
    }

    /// Adds a scoring function (the caller has checked it against the built-ins).
    pub fn add_function(&self, f: ScoringFnDef) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.functions.iter().any(|x| x.identifier == f.identifier) {
            return Err(StoreError::DuplicateFunction(f.identifier));
        }
        let mut next = g.functions.clone();
        next.push(f);
        self.save_list(FUNCTIONS_FILE, &next)?;
        g.functions = next;
        Ok(())
    }

    /// Every benchmark, in registration order.
    pub fn benchmarks(&self) -> Vec<Benchmark> {
        self.lock().benchmarks.clone()
    }

    /// The benchmark `id`.
    pub fn benchmark(&self, id: &str) -> Option<Benchmark> {
        self.lock()
            .benchmarks
            .iter()
            .find(|b| b.identifier == id)
            .cloned()
    }

    /// Adds a benchmark (the caller has checked its dataset and functions).
    pub fn add_benchmark(&self, b: Benchmark) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.benchmarks.iter().any(|x| x.identifier == b.identifier) {
            return Err(StoreError::DuplicateBenchmark(b.identifier));
        }
        let mut next = g.benchmarks.clone();
        next.push(b);
        self.save_list(BENCHMARKS_FILE, &next)?;
        g.benchmarks = next;
        Ok(())
    }

    /// Removes the benchmark `id`; false when there is none.
    pub fn remove_benchmark(&self, id: &str) -> Result<bool, StoreError> {
        let mut g = self.lock();
        let Some(i) = g.benchmarks.iter().position(|b| b.identifier == id) else {
            return Ok(false);
        };
        let mut next = g.benchmarks.clone();
        next.remove(i);
        self.save_list(BENCHMARKS_FILE, &next)?;
        g.benchmarks = next;
        Ok(true)
    }
}

/// A list file's items, or None when it is missing or unreadable (with a warning).
fn read_list<T: serde::de::DeserializeOwned>(path: &Path) -> Option<Vec<T>> {
    if !path.exists() {
        return None;
    }
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("skipping {}: {e}", path.display());
            None
        }
    }
}

/// A dataset file: the dataset and its place in the listing.
#[derive(Deserialize)]
struct Stored {
    seq: u64,
    dataset: Dataset,
}

#[derive(Serialize)]
struct StoredRef<'a> {
    seq: u64,
    dataset: &'a Dataset,
}

/// A registration sequence number: nanoseconds since the epoch, kept increasing within
/// the process.
fn now_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let prev = LAST.fetch_max(now, Ordering::Relaxed);
    if prev >= now {
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ds(id: &str, n: usize) -> Dataset {
        Dataset {
            identifier: id.into(),
            purpose: "eval/question-answer".into(),
            source: json!({"type": "uri", "uri": "data:,"}),
            metadata: json!({}),
            rows: (0..n)
                .map(|i| json!({"i": i}).as_object().cloned().unwrap())
                .collect(),
        }
    }

    #[test]
    fn pages_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let s = EvalStore::open(dir.path()).unwrap();
        s.register(ds("b/../x", 5)).unwrap();
        s.register(ds("a", 1)).unwrap();
        assert!(matches!(
            s.register(ds("a", 1)),
            Err(StoreError::DuplicateDataset(_))
        ));
        let (page, more) = s.rows("b/../x", 1, Some(2)).unwrap();
        assert_eq!((page.len(), more), (2, true));
        assert_eq!(page[0]["i"], 1);
        assert!(!s.rows("b/../x", 3, None).unwrap().1);
        assert_eq!(s.rows("b/../x", 9, Some(2)).unwrap().0.len(), 0);
        s.append(
            "b/../x",
            vec![json!({"i": 5}).as_object().cloned().unwrap()],
        )
        .unwrap();
        drop(s);
        let s = EvalStore::open(dir.path()).unwrap();
        let ids: Vec<String> = s.list().into_iter().map(|d| d.identifier).collect();
        assert_eq!(ids, ["b/../x", "a"]);
        assert_eq!(s.get("b/../x").unwrap().rows.len(), 6);
        assert!(s.unregister("a").unwrap());
        assert!(!s.unregister("a").unwrap());
        let s = EvalStore::open(dir.path()).unwrap();
        assert_eq!(s.list().len(), 1);
    }
}
