//! Counters the engine actor updates and the server reads (lock-free: atomics only, so
//! reading `/metrics` never waits on the engine).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A Prometheus-style histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    pub bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets from 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| seconds <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bound, the sum in seconds and the total count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cum = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Relaxed);
                acc
            })
            .collect();
        (
            cum,
            self.sum_micros.load(Relaxed) as f64 / 1e6,
            self.count.load(Relaxed),
        )
    }
}

/// What the engine is doing, for `/metrics` and for admission decisions.
#[derive(Debug)]
pub struct EngineStats {
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub steps: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
}

impl Default for EngineStats {
    fn default() -> Self {
        EngineStats {
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks_cached: AtomicU64::new(0),
            kv_blocks_total: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BUCKETS),
            itl: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let (cum, sum, n) = h.snapshot();
        assert_eq!(cum, vec![1, 2]);
        assert_eq!(n, 3);
        assert!((sum - 5.55).abs() < 1e-6);
    }
}
