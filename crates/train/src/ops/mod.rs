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
pub mod dropout;
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

/// Runs `f` on `0..costs.len()` split into one contiguous range per pool thread, the
/// ranges about equal in total cost (`costs[i]`: item `i`'s work in elements). For work
/// made of unequal independent items (attention's causal row blocks) run as one section:
/// splitting each item over the threads instead costs a pool section per item and leaves
/// threads idle when an item does not divide evenly. Item `i` goes to the thread whose
/// share of the total cost holds the item's midpoint. `f` also gets its thread's index
/// (below `pool.n_threads()`), for scratch space of its own.
pub fn par_by_cost(pool: &ThreadPool, costs: &[usize], f: &(dyn Fn(usize, Range<usize>) + Sync)) {
    let n = costs.len();
    let total: usize = costs.iter().sum();
    if total < PAR_MIN || pool.n_threads() == 1 || n < 2 {
        f(0, 0..n);
        return;
    }
    // mid[i] = 2 · (cost before item i) + cost of item i: twice item i's midpoint.
    let mut mid = Vec::with_capacity(n);
    let mut before = 0;
    for &c in costs {
        mid.push(2 * before + c);
        before += c;
    }
    // The first item of thread t's share: the items whose midpoint lies before
    // t / nt of the total belong to earlier threads.
    let bound = |t: usize, nt: usize| {
        if t >= nt {
            n
        } else {
            mid.partition_point(|&m| m * nt < 2 * total * t)
        }
    };
    pool.run(&|t, nt| {
        let r = bound(t, nt)..bound(t + 1, nt);
        if !r.is_empty() {
            f(t, r);
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
