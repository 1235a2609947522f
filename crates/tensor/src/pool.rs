//! `ThreadPool`: persistent workers for per-token parallel work.
//!
//! Decode runs hundreds of small parallel sections per token, so dispatch
//! latency matters more than anything else: workers spin on an epoch
//! counter for a short while (new work is usually microseconds away) and
//! only then park on a condvar. The calling thread takes part as thread 0,
//! so a pool of n threads spawns n-1 workers.
//!
//! Sharing the machine. Every section ends when its slowest thread ends, so
//! one thread that the OS deschedules (another process wants its core) stalls
//! the whole section for a scheduler time slice, and a token has hundreds of
//! sections: on a 2-core machine with one core busy, two threads decoded 25×
//! slower than unloaded. Three habits keep that from happening:
//! - No pinning by default: a pinned thread cannot move away from a busy
//!   core (set `FERROLLAMA_PIN=1` to pin workers on a dedicated machine).
//! - Waiting is bounded: idle workers spin at most [`SPIN`] and then park, and
//!   the caller yields its core while it waits, so waiting threads do not
//!   take time from threads with work.
//! - The pool watches for oversubscription: it measures, per section, how
//!   long the first-finished thread waited for the last one. When that skew
//!   is a large share of the section time over a window ([`WINDOW`],
//!   [`SKEW_LIMIT`]), other processes are taking our cores, and the pool runs
//!   sections on the calling thread alone for a back-off period (the OS then
//!   moves that one thread to whichever core is free), then probes with all
//!   threads again. A balanced section on an idle machine has a skew of a few
//!   percent, far from the limit.
//!
//! Kernels split work by `(thread index, thread count)` and already handle a
//! count of 1 (nested calls), so running alone needs nothing from them.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
pub const SPIN: Duration = Duration::from_micros(300);
/// How long the caller spins for stragglers before it starts yielding its core.
const CALLER_SPIN: Duration = Duration::from_micros(50);
/// Section time over which the skew is judged. Long enough to hold many
/// sections (a decoded token is ~200), short enough to react within tokens.
pub const WINDOW: Duration = Duration::from_millis(20);
/// Skew share of section time above which the machine counts as
/// oversubscribed. Balanced sections on an idle machine measure a few percent;
/// a thread that loses its core for a time slice makes it approach 100%.
pub const SKEW_LIMIT: f64 = 0.30;
/// First back-off; doubled while probes keep finding contention.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest back-off between probes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

type Job = &'static (dyn Fn(usize, usize) + Sync);

/// How a pool behaves; [`ThreadPool::new`] reads it from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Pin workers to distinct CPUs (only helps on a machine nobody else uses).
    pub pin: bool,
    /// Run sections on the caller alone while other processes take our cores.
    pub adaptive: bool,
    /// First back-off when contention is seen.
    pub backoff_min: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            pin: false,
            adaptive: true,
            backoff_min: BACKOFF_MIN,
        }
    }
}

impl PoolOptions {
    /// Defaults, changed by `FERROLLAMA_PIN=1` (pin workers) and
    /// `FERROLLAMA_ADAPTIVE=0` (never fall back to one thread); benchmarks use
    /// them to show the old behaviour next to the new.
    pub fn from_env() -> PoolOptions {
        let flag = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string());
        let mut o = PoolOptions::default();
        if let Some(v) = flag("FERROLLAMA_PIN") {
            o.pin = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = flag("FERROLLAMA_ADAPTIVE") {
            o.adaptive = !matches!(v.as_str(), "0" | "false" | "no");
        }
        o
    }
}

/// What the pool did so far (for benchmarks, `bench --json` and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolStats {
    /// Sections run on all threads.
    pub parallel_runs: u64,
    /// Sections run on the caller alone because of contention.
    pub solo_runs: u64,
    /// Times contention was detected (each starts a back-off).
    pub backoffs: u64,
    /// Skew share of the last judged window (0..1).
    pub last_skew: f64,
}

struct Shared {
    n_threads: usize,
    /// Bumped once per `run`; workers wait for it to change.
    epoch: AtomicU64,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    /// Workers currently parked (so `run` knows whether to notify).
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// The current job; written only by `run` while no worker reads it.
    job: UnsafeCell<Option<Job>>,
    park: Mutex<()>,
    wake: Condvar,
    /// Time origin of the finish stamps below.
    base: Instant,
    /// Earliest and latest worker finish of the current job, ns since `base`.
    first_done: AtomicU64,
    last_done: AtomicU64,
    solo_runs: AtomicU64,
    parallel_runs: AtomicU64,
    backoffs: AtomicU64,
    last_skew_milli: AtomicU64,
}

// SAFETY: `job` is written by `run` only before publishing a new epoch
// (release) and after all workers reported completion (acquire), and read by
// workers only between those points, so accesses never overlap.
unsafe impl Sync for Shared {}

impl Shared {
    fn ns_since_base(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }
}

/// A fixed set of threads that run one closure at a time on all of them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` (a nested or concurrent call runs single-threaded) and
    /// holds the contention detector.
    running: Mutex<Adapt>,
    options: PoolOptions,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.shared.n_threads)
            .field("options", &self.options)
            .finish()
    }
}

/// What the detector decided after one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going as before.
    Continue,
    /// Contention: run on the caller alone until the given instant.
    SoloUntil(Instant),
}

/// The contention detector: section times and skews summed over a window,
/// judged when the window is full. Pure bookkeeping, so it is tested alone.
#[derive(Debug, Clone)]
pub struct Adapt {
    total: Duration,
    skew: Duration,
    backoff: Duration,
    backoff_min: Duration,
    /// The window in progress is the first after a back-off.
    probing: bool,
    solo_until: Option<Instant>,
}

impl Adapt {
    pub fn new(backoff_min: Duration) -> Adapt {
        Adapt {
            total: Duration::ZERO,
            skew: Duration::ZERO,
            backoff: backoff_min,
            backoff_min,
            probing: false,
            solo_until: None,
        }
    }

    /// Whether a section starting at `now` runs on the caller alone. The first
    /// section after a back-off is a probe.
    pub fn solo(&mut self, now: Instant) -> bool {
        match self.solo_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.solo_until = None;
                self.probing = true;
                self.total = Duration::ZERO;
                self.skew = Duration::ZERO;
                false
            }
            None => false,
        }
    }

    /// Records a parallel section of wall time `total` whose threads finished
    /// `skew` apart, and judges the window when it is full. Returns the skew
    /// share of a judged window too.
    pub fn observe(
        &mut self,
        total: Duration,
        skew: Duration,
        now: Instant,
    ) -> (Verdict, Option<f64>) {
        self.total += total;
        self.skew += skew.min(total);
        if self.total < WINDOW {
            return (Verdict::Continue, None);
        }
        let share = self.skew.as_secs_f64() / self.total.as_secs_f64();
        self.total = Duration::ZERO;
        self.skew = Duration::ZERO;
        let probing = std::mem::replace(&mut self.probing, false);
        if share <= SKEW_LIMIT {
            // A clean window: the next contention starts from the shortest back-off.
            self.backoff = self.backoff_min;
            return (Verdict::Continue, Some(share));
        }
        // Contention again right after a back-off: wait longer before the next probe.
        if probing {
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX.max(self.backoff_min));
        } else {
            self.backoff = self.backoff_min;
        }
        let until = now + self.backoff;
        self.solo_until = Some(until);
        (Verdict::SoloUntil(until), Some(share))
    }
}

/// Number of CPUs this process may run on.
fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    // SAFETY: plain data; failure is ignored (pinning is best effort).
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl ThreadPool {
    /// Creates a pool of `n_threads` (clamped to 1..=available cores),
    /// including the calling thread, with options from the environment
    /// ([`PoolOptions::from_env`]).
    pub fn new(n_threads: usize) -> ThreadPool {
        ThreadPool::with_options(n_threads, PoolOptions::from_env())
    }

    /// Creates a pool with explicit options.
    pub fn with_options(n_threads: usize, options: PoolOptions) -> ThreadPool {
        let n = n_threads.clamp(1, available_cores());
        let shared = Arc::new(Shared {
            n_threads: n,
            epoch: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            park: Mutex::new(()),
            wake: Condvar::new(),
            base: Instant::now(),
            first_done: AtomicU64::new(u64::MAX),
            last_done: AtomicU64::new(0),
            solo_runs: AtomicU64::new(0),
            parallel_runs: AtomicU64::new(0),
            backoffs: AtomicU64::new(0),
            last_skew_milli: AtomicU64::new(0),
        });
        #[cfg(target_os = "linux")]
        let cpus = if options.pin {
            allowed_cpus()
        } else {
            Vec::new()
        };
        let mut workers = Vec::with_capacity(n - 1);
        for idx in 1..n {
            let sh = Arc::clone(&shared);
            #[cfg(target_os = "linux")]
            let cpu = if cpus.len() >= n {
                cpus.get(idx).copied()
            } else {
                None
            };
            let spawned = std::thread::Builder::new()
                .name(format!("ferrollama-{idx}"))
                .spawn(move || {
                    #[cfg(target_os = "linux")]
                    if let Some(c) = cpu {
                        pin_current_thread(c);
                    }
                    worker_loop(&sh, idx);
                });
            match spawned {
                Ok(h) => workers.push(h),
                // Could not spawn: run with fewer threads rather than fail.
                Err(_) => break,
            }
        }
        let pool = ThreadPool {
            shared,
            workers,
            running: Mutex::new(Adapt::new(options.backoff_min)),
            options,
        };
        if pool.workers.len() + 1 != n {
            // Fewer workers than asked: stop them and use a single-threaded pool.
            drop(pool);
            return ThreadPool::with_options(1, options);
        }
        pool
    }

    /// Number of threads, including the caller.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// The options this pool runs with.
    pub fn options(&self) -> PoolOptions {
        self.options
    }

    /// Counters of what the pool did so far.
    pub fn stats(&self) -> PoolStats {
        let sh = &*self.shared;
        PoolStats {
            parallel_runs: sh.parallel_runs.load(Ordering::Relaxed),
            solo_runs: sh.solo_runs.load(Ordering::Relaxed),
            backoffs: sh.backoffs.load(Ordering::Relaxed),
            last_skew: sh.last_skew_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// Runs `f(i, n)` for every thread index `i < n` (the caller is 0) and
    /// returns when all have finished. If the pool is already running (a
    /// nested or concurrent call), or other processes are taking our cores
    /// (see the module notes), runs `f(0, 1)` on the caller instead.
    /// A panic in `f` on any thread is re-raised here after all threads stop.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        let mut guard = match self.running.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                f(0, 1);
                return;
            }
        };
        if n == 1 {
            f(0, 1);
            return;
        }
        let sh = &*self.shared;
        let adaptive = self.options.adaptive;
        if adaptive && guard.solo(Instant::now()) {
            sh.solo_runs.fetch_add(1, Ordering::Relaxed);
            f(0, 1);
            return;
        }
        // SAFETY: we erase the lifetime of `f`; it is only used until every
        // worker has decremented `remaining`, and we wait for that below
        // before returning (also on panic).
        let job: Job = unsafe { core::mem::transmute::<&(dyn Fn(usize, usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: the previous run waited for all
        // of them, and they only read after observing the next epoch.
        unsafe { *sh.job.get() = Some(job) };
        sh.first_done.store(u64::MAX, Ordering::Relaxed);
        sh.last_done.store(0, Ordering::Relaxed);
        sh.remaining.store(n - 1, Ordering::Relaxed);
        let t0 = Instant::now();
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.park.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let t_mine = Instant::now();
        let mut spins = 0u32;
        while sh.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            // Spin briefly (the others are usually microseconds behind), then
            // yield so a worker that shares our core can finish.
            if !spins.is_multiple_of(64) || t_mine.elapsed() < CALLER_SPIN {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let t_end = Instant::now();
        // SAFETY: all workers are done with the job.
        unsafe { *sh.job.get() = None };
        let worker_panicked = sh.panicked.swap(false, Ordering::Relaxed);
        sh.parallel_runs.fetch_add(1, Ordering::Relaxed);
        if adaptive {
            let mine_ns = sh.ns_since_base(t_mine);
            let first = sh.first_done.load(Ordering::Relaxed).min(mine_ns);
            let last = sh.last_done.load(Ordering::Relaxed).max(mine_ns);
            let skew = Duration::from_nanos(last.saturating_sub(first));
            let (verdict, share) = guard.observe(t_end - t0, skew, t_end);
            if let Some(s) = share {
                sh.last_skew_milli
                    .store((s * 1000.0).round() as u64, Ordering::Relaxed);
            }
            if let Verdict::SoloUntil(_) = verdict {
                sh.backoffs.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(guard);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if worker_panicked {
            panic!("a ThreadPool worker panicked while running a job");
        }
    }
}

fn worker_loop(sh: &Shared, idx: usize) {
    let mut seen = 0u64;
    loop {
        // Spin, then park, until the epoch moves.
        let start = Instant::now();
        let mut spins = 0u32;
        let mut e = sh.epoch.load(Ordering::Acquire);
        while e == seen {
            core::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut g = sh.park.lock().unwrap_or_else(|p| p.into_inner());
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                while sh.epoch.load(Ordering::SeqCst) == seen {
                    g = sh.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(g);
            }
            e = sh.epoch.load(Ordering::Acquire);
        }
        seen = e;
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `run` published the job before bumping the epoch we just
        // observed (acquire), and keeps it alive until we decrement below.
        let job = unsafe { *sh.job.get() };
        if let Some(f) = job
            && catch_unwind(AssertUnwindSafe(|| f(idx, sh.n_threads))).is_err()
        {
            sh.panicked.store(true, Ordering::Relaxed);
        }
        let done = sh.ns_since_base(Instant::now());
        sh.first_done.fetch_min(done, Ordering::Relaxed);
        sh.last_done.fetch_max(done, Ordering::Relaxed);
        sh.remaining.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::Release);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _l = sh.park.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
