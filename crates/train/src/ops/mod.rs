//! The operations of the Llama forward pass, each with its backward next to it (llm.c's
//! layout). Conventions, all row-major:
//! - `forward(out, inputs..)` overwrites `out`;
//! - `backward(dinputs.., dout, saved inputs..)` **adds** into the input gradients (a
//!   tensor used twice, like the residual stream, collects both contributions) and into
//!   the weight gradients (gradient accumulation across micro-batches is then free).
//!
//! Shapes use `T` tokens of one sequence, `C` channels.
//!
//! Threading: the element-wise ops split their rows (or, for a weight gradient summed
//! over rows, their columns) into one contiguous range per pool thread. Every output is
//! still computed by one thread in the serial loop's order, so the result has the same
//! bits for any thread count.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod soft_target;
pub mod swiglu;

use std::ops::Range;

use ferrollama_tensor::ThreadPool;

use crate::Float;

/// Below this many elements of work a section runs on the caller: waking the pool
/// costs more than it saves (the gradient checks' tiny model lands here).
const PAR_MIN: usize = 4096;

/// Runs `f` on `0..n` split into one contiguous range per pool thread; `work` is the
/// section's size in elements, to keep tiny sections off the pool.
pub fn par_ranges(pool: &ThreadPool, n: usize, work: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    if work < PAR_MIN || pool.n_threads() == 1 {
        f(0..n);
        return;
    }
    pool.run(&|t, nt| {
        let r = n * t / nt..n * (t + 1) / nt;
        if !r.is_empty() {
            f(r);
        }
    });
}

/// `y += x`.
pub fn add_into<F: Float>(y: &mut [F], x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// [`add_into`] over the pool.
pub fn add_into_par<F: Float>(pool: &ThreadPool, y: &mut [F], x: &[F]) {
    let n = y.len().min(x.len());
    let ys = ferrollama_tensor::SyncSlice::new(y);
    par_ranges(pool, n, n, &|r| {
        // SAFETY: the ranges of different threads are disjoint.
        let y = unsafe { ys.slice_mut(r.start, r.len()) };
        add_into(y, &x[r]);
    });
}
