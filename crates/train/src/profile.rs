//! Wall time of a training step by phase, for `examples/step_bench.rs --profile`: which
//! part of a step is slow, and which part does not get faster with a second thread.
//!
//! Off by default; a disabled [`span`] is one relaxed load. Enabled, each span reads the
//! clock and the pool's counters twice (tens of nanoseconds against phases of
//! milliseconds). Spans do not nest: the phases are the leaves of a step, and what no span
//! covers (allocation, the serial glue between ops) is the step's time minus their sum.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ferrollama_tensor::ThreadPool;

/// The leaves of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Embedding lookup, RMSNorm, RoPE, SwiGLU, residual adds.
    FwdElementwise,
    /// `x Wᵀ` of the seven projections (with an adapter's path).
    FwdProj,
    FwdAttention,
    /// The logits: `x_L · outputᵀ`.
    FwdOutput,
    /// Cross-entropy (or another objective) and its gradient of the logits.
    Loss,
    /// `dx += dlogits · output`.
    BwdOutputDx,
    /// `d output += dlogitsᵀ · x_L` (the tied embedding's gradient).
    BwdOutputDw,
    /// `dx += dy · W` of the seven projections (with an adapter's `dA`, `dB`).
    BwdProjDx,
    /// `dW += dyᵀ · x` of the seven projections.
    BwdProjDw,
    BwdAttention,
    /// The backwards of RMSNorm, RoPE, SwiGLU.
    BwdElementwise,
    /// The scatter-add into the embedding's gradient.
    BwdEmbedding,
    /// Setting the gradients to zero before a step.
    ZeroGrads,
    ClipNorm,
    AdamW,
}

impl Phase {
    pub const ALL: [Phase; 15] = [
        Phase::FwdElementwise,
        Phase::FwdProj,
        Phase::FwdAttention,
        Phase::FwdOutput,
        Phase::Loss,
        Phase::BwdOutputDx,
        Phase::BwdOutputDw,
        Phase::BwdProjDx,
        Phase::BwdProjDw,
        Phase::BwdAttention,
        Phase::BwdElementwise,
        Phase::BwdEmbedding,
        Phase::ZeroGrads,
        Phase::ClipNorm,
        Phase::AdamW,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::FwdElementwise => "fwd elementwise",
            Phase::FwdProj => "fwd projections",
            Phase::FwdAttention => "fwd attention",
            Phase::FwdOutput => "fwd output (logits)",
            Phase::Loss => "cross-entropy",
            Phase::BwdOutputDx => "bwd output dX",
            Phase::BwdOutputDw => "bwd output dW",
            Phase::BwdProjDx => "bwd projections dX",
            Phase::BwdProjDw => "bwd projections dW",
            Phase::BwdAttention => "bwd attention",
            Phase::BwdElementwise => "bwd elementwise",
            Phase::BwdEmbedding => "bwd embedding",
            Phase::ZeroGrads => "zero grads",
            Phase::ClipNorm => "clip grad norm",
            Phase::AdamW => "adamw",
        }
    }
}

const N: usize = Phase::ALL.len();

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// CPU time of the whole process (all threads) within the phase: against the wall time
/// it says how many threads worked (a spinning pool thread counts as working).
static CPU_NANOS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static CALLS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Pool sections run on the caller alone (contention back-off) within the phase.
static SOLO: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static PARALLEL: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Contention back-offs the pool started within the phase (a window it judged skewed).
static BACKOFFS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Minor page faults of the process within the phase (fresh memory touched).
static FAULTS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

/// Turns the counting on or off (it starts off).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Sets every count back to zero.
pub fn reset() {
    for a in NANOS
        .iter()
        .chain(&CPU_NANOS)
        .chain(&CALLS)
        .chain(&SOLO)
        .chain(&PARALLEL)
        .chain(&BACKOFFS)
        .chain(&FAULTS)
    {
        a.store(0, Ordering::Relaxed);
    }
}

/// One phase's totals since the last [`reset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseTotals {
    pub phase: Phase,
    pub seconds: f64,
    /// CPU seconds of the process (all threads) within the phase.
    pub cpu_seconds: f64,
    pub calls: u64,
    /// Pool sections of the phase run on all threads / on the caller alone.
    pub parallel_runs: u64,
    pub solo_runs: u64,
    pub backoffs: u64,
    pub page_faults: u64,
}

/// Every phase's totals since the last [`reset`], in [`Phase::ALL`]'s order.
pub fn totals() -> Vec<PhaseTotals> {
    Phase::ALL
        .iter()
        .enumerate()
        .map(|(i, &phase)| PhaseTotals {
            phase,
            seconds: NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9,
            cpu_seconds: CPU_NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9,
            calls: CALLS[i].load(Ordering::Relaxed),
            parallel_runs: PARALLEL[i].load(Ordering::Relaxed),
            solo_runs: SOLO[i].load(Ordering::Relaxed),
            backoffs: BACKOFFS[i].load(Ordering::Relaxed),
            page_faults: FAULTS[i].load(Ordering::Relaxed),
        })
        .collect()
}

/// Counts the time until it is dropped towards its phase.
#[derive(Debug)]
#[must_use = "a span counts until it is dropped"]
pub struct Span<'p> {
    phase: usize,
    pool: &'p ThreadPool,
    start: Option<(Instant, u64, u64, u64, u64, u64)>,
}

/// Minor page faults of this process so far (0 where they cannot be read).
fn minor_faults() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: `ru` is plain data for the call to fill.
        unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
                return ru.ru_minflt.max(0) as u64;
            }
        }
    }
    0
}

/// CPU time of this process so far, ns (0 where the clock cannot be read).
fn process_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    0
}

/// Starts counting `phase` (nothing when profiling is off).
pub fn span(pool: &ThreadPool, phase: Phase) -> Span<'_> {
    let start = ENABLED.load(Ordering::Relaxed).then(|| {
        let s = pool.stats();
        (
            Instant::now(),
            process_cpu_ns(),
            s.parallel_runs,
            s.solo_runs,
            s.backoffs,
            minor_faults(),
        )
    });
    Span {
        phase: phase as usize,
        pool,
        start,
    }
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        if let Some((t0, cpu0, par, solo, back, flt)) = self.start {
            let ns = t0.elapsed().as_nanos() as u64;
            let cpu = process_cpu_ns().saturating_sub(cpu0);
            CPU_NANOS[self.phase].fetch_add(cpu, Ordering::Relaxed);
            let s = self.pool.stats();
            NANOS[self.phase].fetch_add(ns, Ordering::Relaxed);
            CALLS[self.phase].fetch_add(1, Ordering::Relaxed);
            PARALLEL[self.phase].fetch_add(s.parallel_runs - par, Ordering::Relaxed);
            SOLO[self.phase].fetch_add(s.solo_runs - solo, Ordering::Relaxed);
            BACKOFFS[self.phase].fetch_add(s.backoffs - back, Ordering::Relaxed);
            FAULTS[self.phase].fetch_add(minor_faults().saturating_sub(flt), Ordering::Relaxed);
        }
    }
}
