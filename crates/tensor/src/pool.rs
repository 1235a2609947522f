//! `ThreadPool`: persistent workers for per-token parallel work.
//!
//! Decode runs hundreds of small parallel sections per token, so dispatch
//! latency matters more than anything else: workers spin on an epoch
//! counter for a short while (new work is usually microseconds away) and
//! only then park on a condvar. The calling thread takes part as thread 0,
//! so a pool of n threads spawns n-1 workers. Workers are pinned to distinct
//! CPUs of the process's affinity set (best effort, Linux only) so their
//! caches stay warm; the caller's own affinity is left alone.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);

type Job = &'static (dyn Fn(usize, usize) + Sync);

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
}

// SAFETY: `job` is written by `run` only before publishing a new epoch
// (release) and after all workers reported completion (acquire), and read by
// workers only between those points, so accesses never overlap.
unsafe impl Sync for Shared {}

/// A fixed set of threads that run one closure at a time on all of them.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` (a nested or concurrent call runs single-threaded).
    running: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.shared.n_threads)
            .finish()
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
    /// including the calling thread.
    pub fn new(n_threads: usize) -> ThreadPool {
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
        });
        #[cfg(target_os = "linux")]
        let cpus = allowed_cpus();
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
        if workers.len() + 1 != n {
            return ThreadPool::shrink(shared, workers);
        }
        ThreadPool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Fallback when fewer workers could be spawned: stop them and use a
    /// single-threaded pool.
    fn shrink(shared: Arc<Shared>, workers: Vec<JoinHandle<()>>) -> ThreadPool {
        let old = ThreadPool {
            shared,
            workers,
            running: Mutex::new(()),
        };
        drop(old);
        ThreadPool::new(1)
    }

    /// Number of threads, including the caller.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(i, n)` for every thread index `i < n` (the caller is 0) and
    /// returns when all have finished. If the pool is already running (a
    /// nested or concurrent call), runs `f(0, 1)` on the caller instead.
    /// A panic in `f` on any thread is re-raised here after all threads stop.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.n_threads;
        let guard = match self.running.try_lock() {
            Ok(g) => g,
            Err(_) => {
                f(0, 1);
                return;
            }
        };
        if n == 1 {
            f(0, 1);
            drop(guard);
            return;
        }
        let sh = &*self.shared;
        // SAFETY: we erase the lifetime of `f`; it is only used until every
        // worker has decremented `remaining`, and we wait for that below
        // before returning (also on panic).
        let job: Job = unsafe { core::mem::transmute::<&(dyn Fn(usize, usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: the previous run waited for all
        // of them, and they only read after observing the next epoch.
        unsafe { *sh.job.get() = Some(job) };
        sh.remaining.store(n - 1, Ordering::Relaxed);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.park.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0u32;
        while sh.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins < 1 << 16 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: all workers are done with the job.
        unsafe { *sh.job.get() = None };
        let worker_panicked = sh.panicked.swap(false, Ordering::Relaxed);
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
