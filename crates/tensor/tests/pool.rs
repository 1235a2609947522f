//! ThreadPool: every index exactly once, fast repeated dispatch, clean drop.

use ferrollama_tensor::{SyncSlice, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[test]
fn run_calls_every_index_exactly_once_10k_times() {
    for n in [1usize, 2, 4, 64] {
        let pool = ThreadPool::new(n);
        let nt = pool.n_threads();
        assert!(nt >= 1 && nt <= n.max(1));
        let counts: Vec<AtomicUsize> = (0..nt).map(|_| AtomicUsize::new(0)).collect();
        let t0 = Instant::now();
        for round in 0..10_000usize {
            pool.run(&|i, total| {
                assert_eq!(total, nt);
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            // After run() returns, every index has run for this round.
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), round + 1);
            }
        }
        let el = t0.elapsed();
        assert!(el.as_secs_f64() < 5.0, "10k runs took {el:?}");
    }
}

#[test]
fn disjoint_writes_through_sync_slice() {
    let pool = ThreadPool::new(2);
    let mut out = vec![0usize; 1000];
    {
        let s = SyncSlice::new(&mut out);
        pool.run(&|i, n| {
            for k in (i..s.len()).step_by(n) {
                // SAFETY: index k is written by thread k % n only.
                unsafe { s.write(k, k * 2) };
            }
        });
    }
    assert!(out.iter().enumerate().all(|(k, v)| *v == 2 * k));
}

#[test]
fn nested_run_does_not_deadlock() {
    let pool = ThreadPool::new(2);
    let hits = AtomicUsize::new(0);
    pool.run(&|i, _| {
        if i == 0 {
            pool.run(&|j, n| {
                assert_eq!((j, n), (0, 1));
                hits.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

#[test]
fn drop_after_idle_and_parked_workers() {
    for _ in 0..50 {
        let pool = ThreadPool::new(2);
        pool.run(&|_, _| {});
        drop(pool);
    }
    let pool = ThreadPool::new(2);
    pool.run(&|_, _| {});
    // Let the worker park, then wake it with more work, then drop.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let c = AtomicUsize::new(0);
    pool.run(&|_, _| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(c.load(Ordering::Relaxed), pool.n_threads());
    drop(pool);
    // Never-used pool.
    drop(ThreadPool::new(2));
}

#[test]
fn worker_panic_is_reported_not_deadlocked() {
    let pool = ThreadPool::new(2);
    if pool.n_threads() < 2 {
        return;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(&|i, _| {
            if i == 1 {
                panic!("boom");
            }
        })
    }));
    assert!(r.is_err());
    // The pool still works afterwards.
    let c = AtomicUsize::new(0);
    pool.run(&|_, _| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(c.load(Ordering::Relaxed), 2);
}
