//! Cross-entropy of the next-token distribution, averaged over the tokens that count
//! (chat data: the assistant's tokens only).
//!
//! Rows (positions) are spread over the pool; the per-row losses are summed in order
//! afterwards, so the loss has the same bits for any thread count.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// `Σ_t w[t] · -log softmax(logits[t])[targets[t]]` and the number of counted tokens; `w`
/// is 1 for a counted token, 0 otherwise. The caller divides by the count it averages over.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    logits: &[F],
    targets: &[u32],
    counted: &[bool],
    v: usize,
) -> F {
    let t = targets
        .len()
        .min(counted.len())
        .min(logits.len() / v.max(1));
    let mut losses = vec![F::ZERO; t];
    let ls = SyncSlice::new(&mut losses);
    par_ranges(pool, t, t * v, &|rows| {
        for i in rows {
            if counted[i] {
                let row = &logits[i * v..(i + 1) * v];
                // SAFETY: each row's loss is written by the one thread that has the row.
                unsafe { ls.write(i, log_sum_exp(row) - row[targets[i] as usize]) };
            }
        }
    });
    sum_counted(&losses, counted)
}

/// `dlogits[t] += scale · (softmax(logits[t]) - onehot(targets[t]))` for counted tokens,
/// where `scale` is `dloss / count`.
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dlogits: &mut [F],
    logits: &[F],
    targets: &[u32],
    counted: &[bool],
    v: usize,
    scale: F,
) {
    let t = targets
        .len()
        .min(counted.len())
        .min(logits.len() / v.max(1));
    let ds = SyncSlice::new(dlogits);
    par_ranges(pool, t, t * v, &|rows| {
        for i in rows {
            if !counted[i] {
                continue;
            }
            let row = &logits[i * v..(i + 1) * v];
            // SAFETY: each row is written by the one thread that has it.
            let d = unsafe { ds.slice_mut(i * v, v) };
            let tgt = targets[i] as usize;
            let lse = log_sum_exp(row);
            for (j, (d, &x)) in d.iter_mut().zip(row).enumerate() {
                let p = (x - lse).exp();
                let y = if j == tgt { F::ONE } else { F::ZERO };
                *d += scale * (p - y);
            }
        }
    });
}

/// [`forward`] and [`backward`] in one pass over the logits, which are replaced by their
/// gradient (`scale · (softmax - onehot)`, zero on rows that are not counted): the
/// training pass needs the logits for nothing else, and this saves a second `(T, V)`
/// buffer and a second `exp` per logit. Returns the summed loss.
pub fn forward_backward<F: Float>(
    pool: &ThreadPool,
    logits: &mut [F],
    targets: &[u32],
    counted: &[bool],
    v: usize,
    scale: F,
) -> F {
    let t = targets
        .len()
        .min(counted.len())
        .min(logits.len() / v.max(1));
    let mut losses = vec![F::ZERO; t];
    let (ls, lg) = (SyncSlice::new(&mut losses), SyncSlice::new(logits));
    par_ranges(pool, t, t * v, &|rows| {
        for i in rows {
            // SAFETY: each row is read and written by the one thread that has it.
            let row = unsafe { lg.slice_mut(i * v, v) };
            if !counted[i] {
                row.fill(F::ZERO);
                continue;
            }
            let tgt = targets[i] as usize;
            let mut max = F::from_f64(f64::NEG_INFINITY);
            for &x in row.iter() {
                max = max.max(x);
            }
            let at_target = row[tgt];
            let s = F::exp_shifted_sum(row, max);
            // SAFETY: as above, for the row's loss.
            unsafe { ls.write(i, max + s.ln() - at_target) };
            let k = scale / s;
            for x in row.iter_mut() {
                *x *= k;
            }
            row[tgt] -= scale;
        }
    });
    sum_counted(&losses, counted)
}

fn sum_counted<F: Float>(losses: &[F], counted: &[bool]) -> F {
    let mut loss = F::ZERO;
    for (&l, &c) in losses.iter().zip(counted) {
        if c {
            loss += l;
        }
    }
    loss
}

fn log_sum_exp<F: Float>(row: &[F]) -> F {
    let mut max = F::from_f64(f64::NEG_INFINITY);
    for &x in row {
        max = max.max(x);
    }
    let mut s = F::ZERO;
    for &x in row {
        s += (x - max).exp();
    }
    max + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused pass gives the loss of `forward` and the gradient of `backward`.
    #[test]
    fn fused_pass_matches_forward_and_backward() {
        let (t, v) = (9, 700);
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let logits: Vec<f64> = (0..t * v)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20001) as f64 / 1000.0 - 10.0
            })
            .collect();
        let targets: Vec<u32> = (0..t as u32).map(|i| (i * 77) % v as u32).collect();
        let counted: Vec<bool> = (0..t).map(|i| i % 4 != 1).collect();
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let want = forward(&pool, &logits, &targets, &counted, v);
            let mut dwant = vec![0.0; t * v];
            backward(&pool, &mut dwant, &logits, &targets, &counted, v, 0.25);
            let mut got = logits.clone();
            let loss = forward_backward(&pool, &mut got, &targets, &counted, v, 0.25);
            assert_eq!(loss.to_bits(), want.to_bits(), "{threads} threads");
            for (i, (&g, &w)) in got.iter().zip(&dwant).enumerate() {
                assert!((g - w).abs() < 1e-15, "[{i}] {g} vs {w}");
            }
        }
    }
}
