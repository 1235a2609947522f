//! Each vector store's vectors in memory, and its HNSW graph built in the background.
//!
//! Why: linking an HNSW graph over 100K 384-d vectors takes ~40 s of one core. It used to
//! happen inside the first search of a store past the threshold (and per chunk, under the
//! index's write lock, on every completed file after that), so that search and every one
//! queued behind it stalled. Now no search or write ever waits for graph work:
//!
//! - A store's live vectors are split in two: an immutable [`Graph`] snapshot (a
//!   [`VectorIndex`] with its graph linked, shared by `Arc`) and a `delta`, a flat
//!   [`VectorIndex`] of the vectors the graph does not cover (all of them before the first
//!   build; afterwards those completed since the snapshot was taken). Vectors of the graph
//!   that were removed (or replaced: SQLite may reuse a deleted row id) since are `dead`
//!   and filtered out of its results.
//! - A search is the graph's approximate top k (when the store holds at least
//!   [`IndexParams::hnsw_threshold`] vectors) merged with an exact SIMD scan of the delta;
//!   with no graph yet it is the exact scan of everything. A file completed a moment ago
//!   is therefore found at once, and a removed one never.
//! - When a store reaches the threshold, or its graph is stale (delta + dead above
//!   [`IndexTuning::stale_fraction`] of it), a search or write starts a build on a thread
//!   of its own: a copy of the graph extended by the delta (and with the dead removed), or a
//!   fresh graph from all live vectors when there is no graph yet or too much of it died.
//!   It holds no lock while linking; it swaps the result in under the write lock in a few
//!   milliseconds, recomputing what is dead or still pending from per-vector stamps, so
//!   writes made meanwhile are kept.
//! - One build per store at a time, and one at a time in the process (they queue), since
//!   each saturates a core. Deleting a store cancels its build (checked every 1024 links,
//!   and before the swap). A failed or panicking build leaves the store on its exact scan
//!   and is retried after [`IndexTuning::retry_after`]; nothing is poisoned.
//!
//! The graph is not persisted: after a restart the first search loads the vectors from
//! SQLite (what the exact scan needs anyway) and answers exactly while the graph is rebuilt
//! in the background.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::vector_index::{IndexParams, VectorIndex};

/// A graph search post-filters removed vectors (asking for `k + dead` results) while at
/// most this many are dead; beyond it the removed ones are skipped during the walk.
const POSTFILTER_MAX: usize = 256;

/// Links between two cancellation checks in a build.
const CANCEL_EVERY: usize = 1024;

/// When and how the SQLite backend builds its graphs ([`crate::SqliteStore::set_index_tuning`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexTuning {
    /// The graph's parameters; `hnsw_threshold` is the live vector count at which a store
    /// gets a graph and its searches use it (`usize::MAX`: never, always the exact scan).
    pub params: IndexParams,
    /// A graph is rebuilt (extended) once the vectors it does not cover plus those it
    /// holds but were removed exceed this fraction of it...
    pub stale_fraction: f64,
    /// ...and this count (so small changes to a big store are just scanned beside it).
    pub min_stale: usize,
    /// After a failed build, the next one starts no sooner than this.
    pub retry_after: Duration,
}

impl Default for IndexTuning {
    fn default() -> Self {
        IndexTuning {
            params: IndexParams::default(),
            // At 100K vectors: up to 10K scanned exactly beside the graph (~1.5 ms), and an
            // extension links those 10K (~4 s in the background) instead of all 110K.
            stale_fraction: 0.1,
            min_stale: 2_000,
            retry_after: Duration::from_secs(60),
        }
    }
}

/// What a store's index holds and does ([`crate::SqliteStore::index_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexStatus {
    /// Live vectors.
    pub vectors: usize,
    /// Live vectors the graph covers.
    pub graph: usize,
    /// Live vectors outside the graph, scanned exactly beside it.
    pub pending: usize,
    /// Vectors of the graph removed since it was built (filtered out of its results).
    pub dead: usize,
    /// Whether searches currently go through the graph.
    pub graph_searched: bool,
    /// A build is queued or running.
    pub building: bool,
    /// Builds swapped in so far.
    pub builds: u64,
    /// Builds that failed so far, and the last one's reason.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What every store's index of one [`crate::SqliteStore`] shares: the tuning, the
/// one-build-at-a-time slot, the count of running builds, and the test hooks.
#[derive(Debug, Default)]
pub(super) struct Shared {
    tuning: RwLock<IndexTuning>,
    /// Held by the build that is linking (builds queue on it).
    slot: Mutex<()>,
    /// Build threads alive, and its condvar (signalled when one ends).
    running: Mutex<usize>,
    ended: Condvar,
    /// Test hook: builds wait here, after their snapshot, while true.
    hold: Mutex<bool>,
    released: Condvar,
    /// Test hook: builds waiting at the gate, signalled when one arrives.
    at_gate: Mutex<usize>,
    arrived: Condvar,
    /// Test hook: this many coming builds panic after their snapshot.
    fail_next: AtomicUsize,
}

impl Shared {
    pub(super) fn tuning(&self) -> IndexTuning {
        *self
            .tuning
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_tuning(&self, t: IndexTuning) {
        *self
            .tuning
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }

    pub(super) fn set_hold(&self, hold: bool) {
        *lock(&self.hold) = hold;
        self.released.notify_all();
    }

    pub(super) fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Waits until a build waits at the gate (its snapshot taken); false on timeout.
    pub(super) fn wait_held(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = lock(&self.at_gate);
        while *n == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .arrived
                .wait_timeout(n, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Waits until no build thread is alive; false on timeout.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = lock(&self.running);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .ended
                .wait_timeout(n, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Wakes builds held at the gate (they find themselves cancelled when their store or
    /// the whole backend is gone).
    pub(super) fn wake_all(&self) {
        // Under the gate's lock, so a build between its cancellation check and its wait
        // cannot miss the wake-up.
        let _gate = lock(&self.hold);
        self.released.notify_all();
    }
}

/// Every lock here guards data that each critical section leaves consistent (no section
/// can panic halfway through a multi-step update that matters), so a poisoned lock is
/// taken over rather than failing every later call.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A built graph over a snapshot of a store's vectors.
#[derive(Debug, Clone)]
struct Graph {
    /// Linked at any size (threshold 0).
    index: VectorIndex,
    /// id -> stamp of the vector the graph holds for it.
    stamps: HashMap<u64, u64>,
    /// Removed or replaced slots inside `index` (a full build starts again at 0).
    tombstones: usize,
}

#[derive(Debug)]
struct Entry {
    file: Arc<str>,
    /// Unique per insert: tells whether the graph's vector for an id is the live one.
    stamp: u64,
}

#[derive(Debug)]
struct State {
    loaded: bool,
    next_stamp: u64,
    live: HashMap<u64, Entry>,
    graph: Option<Arc<Graph>>,
    /// Ids the graph holds whose vector is no longer live.
    dead: HashSet<u64>,
    /// The live vectors the graph does not cover; never linked.
    delta: VectorIndex,
}

impl State {
    fn new(dim: usize) -> State {
        State {
            loaded: false,
            next_stamp: 0,
            live: HashMap::new(),
            graph: None,
            dead: HashSet::new(),
            delta: VectorIndex::with_params(dim, flat_params()),
        }
    }

    fn covered(&self, id: u64) -> bool {
        match (&self.graph, self.live.get(&id)) {
            (Some(g), Some(e)) => g.stamps.get(&id) == Some(&e.stamp),
            _ => false,
        }
    }

    fn insert(&mut self, id: i64, file: Arc<str>, v: &[f32]) -> Result<(), StoreError> {
        let id = u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("chunk id {id}")))?;
        // Checked (dimension, finite) before anything changes.
        self.delta
            .insert(id, v)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if self
            .graph
            .as_ref()
            .is_some_and(|g| g.stamps.contains_key(&id))
        {
            // Whatever the graph holds for this id is not the new vector.
            self.dead.insert(id);
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.live.insert(id, Entry { file, stamp });
        Ok(())
    }

    fn remove(&mut self, id: u64) {
        if self.live.remove(&id).is_none() {
            return;
        }
        self.delta.remove(id);
        if self
            .graph
            .as_ref()
            .is_some_and(|g| g.stamps.contains_key(&id))
        {
            self.dead.insert(id);
        }
    }

    fn wants_build(&self, t: &IndexTuning) -> bool {
        if !self.loaded || self.live.len() < t.params.hnsw_threshold {
            return false;
        }
        match &self.graph {
            None => true,
            Some(g) => {
                let stale = self.delta.len() + self.dead.len();
                stale > t.min_stale && stale as f64 > t.stale_fraction * g.index.len() as f64
            }
        }
    }
}

/// The delta's parameters: a flat index that never links a graph.
fn flat_params() -> IndexParams {
    IndexParams {
        hnsw_threshold: usize::MAX,
        ..IndexParams::default()
    }
}

#[derive(Debug, Default)]
struct BuildState {
    building: bool,
    builds: u64,
    failures: u64,
    last_error: Option<String>,
    /// When the last build failed (cleared by a success); the next waits `retry_after`.
    failed_at: Option<Instant>,
}

/// One vector store's vectors ([`State`]) and its build bookkeeping.
#[derive(Debug)]
pub(super) struct StoreIndex {
    dim: usize,
    shared: Arc<Shared>,
    state: RwLock<State>,
    build: Mutex<BuildState>,
    /// Set when the store is deleted (or the backend dropped): a build stops and never
    /// swaps in.
    cancelled: AtomicBool,
}

/// What a build does, decided from a snapshot under the read lock.
enum Plan {
    /// Link every live vector into a fresh graph.
    Full {
        ids: Vec<(u64, u64)>,
        data: Vec<f32>,
    },
    /// Copy the graph, unlink the removed, link the pending.
    Extend {
        base: Arc<Graph>,
        dead: Vec<u64>,
        ids: Vec<(u64, u64)>,
        data: Vec<f32>,
    },
}

/// Why a build produced nothing.
enum Stop {
    Cancelled,
    Failed(String),
}

impl StoreIndex {
    pub(super) fn new(dim: usize, shared: Arc<Shared>) -> StoreIndex {
        StoreIndex {
            dim,
            shared,
            state: RwLock::new(State::new(dim)),
            build: Mutex::new(BuildState::default()),
            cancelled: AtomicBool::new(false),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the vectors once: `rows` pushes every stored `(chunk id, file, vector)` of
    /// the store through its callback. Writes to the store wait meanwhile (the write lock
    /// is held), so none is lost between the read and the install; on error nothing is
    /// kept and the next search loads again.
    pub(super) fn ensure_loaded(
        &self,
        rows: impl FnOnce(
            &mut dyn FnMut(i64, Arc<str>, &[f32]) -> Result<(), StoreError>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.read().loaded {
            return Ok(());
        }
        let mut st = self.write();
        if st.loaded {
            return Ok(());
        }
        let mut fresh = State::new(self.dim);
        rows(&mut |id, file, v| fresh.insert(id, file, v))?;
        fresh.loaded = true;
        *st = fresh;
        Ok(())
    }

    /// A completed file's chunks (ignored until loaded: the load reads them from SQLite).
    pub(super) fn insert_file<'a>(
        self: &Arc<Self>,
        file: &str,
        chunks: impl Iterator<Item = (i64, &'a [f32])>,
    ) -> Result<(), StoreError> {
        {
            let mut st = self.write();
            if !st.loaded {
                return Ok(());
            }
            let f: Arc<str> = Arc::from(file);
            for (id, v) in chunks {
                st.insert(id, f.clone(), v)?;
            }
        }
        self.maybe_build();
        Ok(())
    }

    /// Forgets a removed file's chunks.
    pub(super) fn remove_file(self: &Arc<Self>, file_id: &str) {
        {
            let mut st = self.write();
            let ids: Vec<u64> = st
                .live
                .iter()
                .filter(|(_, e)| &*e.file == file_id)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                st.remove(id);
            }
        }
        self.maybe_build();
    }

    /// The `k` best (chunk id, cosine) among chunks whose file passes `allowed`: the
    /// graph's results (when searched) merged with the exact scan of the rest.
    pub(super) fn search(
        self: &Arc<Self>,
        q: &[f32],
        k: usize,
        allowed: Option<&HashSet<String>>,
    ) -> Result<Vec<(i64, f32)>, StoreError> {
        let threshold = self.shared.tuning().params.hnsw_threshold;
        let mut hits = {
            let st = self.read();
            let file_ok = |id: u64| {
                allowed.is_none_or(|a| st.live.get(&id).is_some_and(|e| a.contains(&*e.file)))
            };
            let err = |e: crate::VectorIndexError| StoreError::Invalid(e.to_string());
            let mut hits = Vec::with_capacity(2 * k);
            if let Some(g) = &st.graph {
                let pass = |id: u64| !st.dead.contains(&id) && file_ok(id);
                let cheap = allowed.is_none() && st.dead.is_empty();
                if st.live.len() >= threshold {
                    if allowed.is_none() && st.dead.len() <= POSTFILTER_MAX {
                        let found = g.index.search(q, k + st.dead.len(), None).map_err(err)?;
                        hits.extend(
                            found
                                .into_iter()
                                .filter(|(id, _)| !st.dead.contains(id))
                                .take(k),
                        );
                    } else {
                        hits.extend(g.index.search(q, k, Some(&pass)).map_err(err)?);
                    }
                } else if cheap {
                    hits.extend(g.index.exact_search(q, k, None).map_err(err)?);
                } else {
                    hits.extend(g.index.exact_search(q, k, Some(&pass)).map_err(err)?);
                }
            }
            let found = match allowed {
                None => st.delta.search(q, k, None),
                Some(_) => st.delta.search(q, k, Some(&file_ok)),
            };
            hits.extend(found.map_err(err)?);
            hits
        };
        // Best first; equal scores by id, so results do not depend on which part held them.
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.dedup_by_key(|h| h.0);
        hits.truncate(k);
        self.maybe_build();
        Ok(hits
            .into_iter()
            .filter_map(|(id, s)| i64::try_from(id).ok().map(|id| (id, s)))
            .collect())
    }

    pub(super) fn status(&self) -> IndexStatus {
        let threshold = self.shared.tuning().params.hnsw_threshold;
        let (vectors, graph, pending, dead, searched) = {
            let st = self.read();
            let graph = st
                .graph
                .as_ref()
                .map_or(0, |g| g.index.len() - st.dead.len().min(g.index.len()));
            (
                st.live.len(),
                graph,
                st.delta.len(),
                st.dead.len(),
                st.graph.is_some() && st.live.len() >= threshold,
            )
        };
        let b = lock(&self.build);
        IndexStatus {
            vectors,
            graph,
            pending,
            dead,
            graph_searched: searched,
            building: b.building,
            builds: b.builds,
            failures: b.failures,
            last_error: b.last_error.clone(),
        }
    }

    /// Waits until no build of this store runs or is due (starting one that is due);
    /// returns the status then, or `None` on timeout.
    pub(super) fn wait_built(self: &Arc<Self>, timeout: Duration) -> Option<IndexStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.maybe_build() {
                return Some(self.status());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let n = lock(&self.shared.running);
            if *n > 0 {
                // Woken when any build ends; rechecked with a cap in case it was this
                // store's and ended between the check above and this wait.
                let _ = self
                    .shared
                    .ended
                    .wait_timeout(n, left.min(Duration::from_millis(50)));
            }
        }
    }

    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.shared.wake_all();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Starts a background build if one is due and none runs; true if one is running or
    /// queued after the call.
    pub(super) fn maybe_build(self: &Arc<Self>) -> bool {
        if self.is_cancelled() {
            return false;
        }
        let tuning = self.shared.tuning();
        let mut b = lock(&self.build);
        if b.building {
            return true;
        }
        if b.failed_at
            .is_some_and(|t| t.elapsed() < tuning.retry_after)
        {
            return false;
        }
        if !self.read().wants_build(&tuning) {
            return false;
        }
        b.building = true;
        *lock(&self.shared.running) += 1;
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hnsw-build".into())
            .spawn(move || me.run_build());
        if let Err(e) = spawned {
            b.building = false;
            b.failures += 1;
            b.last_error = Some(format!("cannot start a build thread: {e}"));
            b.failed_at = Some(Instant::now());
            drop(b);
            self.end_thread();
            tracing::warn!("vector index build not started: {e}");
            return false;
        }
        true
    }

    fn end_thread(&self) {
        let mut n = lock(&self.shared.running);
        *n = n.saturating_sub(1);
        self.shared.ended.notify_all();
    }

    /// The build thread's body: one build, its outcome recorded; a panic is caught so the
    /// store keeps answering (exactly) and retries later.
    fn run_build(self: Arc<Self>) {
        let t0 = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.build_once()))
            .unwrap_or_else(|p| {
                let why = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                Err(Stop::Failed(format!("the build panicked: {why}")))
            });
        {
            let mut b = lock(&self.build);
            b.building = false;
            match &outcome {
                Ok(n) => {
                    b.builds += 1;
                    b.failed_at = None;
                    tracing::info!(
                        vectors = n,
                        seconds = t0.elapsed().as_secs_f64(),
                        "vector store graph built"
                    );
                }
                Err(Stop::Cancelled) => {}
                Err(Stop::Failed(why)) => {
                    b.failures += 1;
                    b.last_error = Some(why.clone());
                    b.failed_at = Some(Instant::now());
                    tracing::warn!("vector store graph build failed (searches stay exact): {why}");
                }
            }
        }
        self.end_thread();
        // Writes made during the build may already make the new graph stale.
        if outcome.is_ok() {
            self.maybe_build();
        }
    }

    /// Snapshot, link (no lock held), swap. Returns the vectors linked.
    fn build_once(&self) -> Result<usize, Stop> {
        let _slot = lock(&self.shared.slot);
        if self.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let tuning = self.shared.tuning();
        let plan = self.plan();
        {
            let mut held = lock(&self.shared.hold);
            if *held {
                *lock(&self.shared.at_gate) += 1;
                self.shared.arrived.notify_all();
                while *held && !self.is_cancelled() {
                    held = self
                        .shared
                        .released
                        .wait(held)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let mut n = lock(&self.shared.at_gate);
                *n = n.saturating_sub(1);
            }
        }
        if self.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if self
            .shared
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Test hook: the worst failure, a panic in the middle of a build.
            std::panic::panic_any("injected index build failure".to_string());
        }
        let graph = self.link(plan, tuning.params)?;
        let linked = graph.index.len();
        let mut st = self.write();
        if self.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let graph = Arc::new(graph);
        st.graph = Some(graph.clone());
        // Vectors removed or replaced while linking are dead; vectors added meanwhile
        // stay pending. Both follow from the stamps, whatever happened in between.
        let dead: HashSet<u64> = graph
            .stamps
            .iter()
            .filter(|&(id, s)| st.live.get(id).map(|e| e.stamp) != Some(*s))
            .map(|(&id, _)| id)
            .collect();
        st.dead = dead;
        let mut delta = VectorIndex::with_params(self.dim, flat_params());
        for (id, v) in st.delta.vectors() {
            if !st.covered(id) {
                delta
                    .insert(id, v)
                    .map_err(|e| Stop::Failed(e.to_string()))?;
            }
        }
        st.delta = delta;
        Ok(linked)
    }

    fn plan(&self) -> Plan {
        let st = self.read();
        let mut ids = Vec::with_capacity(st.live.len());
        let mut data = Vec::new();
        let stamp = |id: u64| st.live.get(&id).map_or(0, |e| e.stamp);
        if let Some(g) = &st.graph {
            // Extending relinks only what changed; once a quarter of the graph is dead
            // weight, a fresh graph is better (and compacts the storage).
            if g.tombstones + st.dead.len() <= g.index.len() / 4 {
                data.reserve(st.delta.len() * self.dim);
                for (id, v) in st.delta.vectors() {
                    ids.push((id, stamp(id)));
                    data.extend_from_slice(v);
                }
                return Plan::Extend {
                    base: g.clone(),
                    dead: st.dead.iter().copied().collect(),
                    ids,
                    data,
                };
            }
            data.reserve(st.live.len() * self.dim);
            for (id, v) in g.index.vectors() {
                if !st.dead.contains(&id) {
                    ids.push((id, stamp(id)));
                    data.extend_from_slice(v);
                }
            }
        }
        data.reserve(st.delta.len() * self.dim);
        for (id, v) in st.delta.vectors() {
            ids.push((id, stamp(id)));
            data.extend_from_slice(v);
        }
        Plan::Full { ids, data }
    }

    fn link(&self, plan: Plan, params: IndexParams) -> Result<Graph, Stop> {
        let dim = self.dim;
        let (mut g, ids, data) = match plan {
            Plan::Full { ids, data } => {
                let g = Graph {
                    index: VectorIndex::with_params(
                        dim,
                        IndexParams {
                            hnsw_threshold: 0,
                            ..params
                        },
                    ),
                    stamps: HashMap::with_capacity(ids.len()),
                    tombstones: 0,
                };
                (g, ids, data)
            }
            Plan::Extend {
                base,
                dead,
                ids,
                data,
            } => {
                let mut g = Graph::clone(&base);
                drop(base);
                for id in dead {
                    if g.index.remove(id) {
                        g.tombstones += 1;
                    }
                    g.stamps.remove(&id);
                }
                (g, ids, data)
            }
        };
        for (i, ((id, stamp), v)) in ids.iter().zip(data.chunks_exact(dim.max(1))).enumerate() {
            if i % CANCEL_EVERY == 0 && self.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if g.index.contains(*id) {
                g.tombstones += 1;
            }
            g.index
                .insert(*id, v)
                .map_err(|e| Stop::Failed(e.to_string()))?;
            g.stamps.insert(*id, *stamp);
        }
        Ok(g)
    }
}
