//! Dropout (Srivastava et al. 2014) on a LoRA branch's input, as PEFT's `lora_dropout`:
//! `y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ`, `drop(x) = x ⊙ m / (1 - p)` with `m_i` kept with
//! probability `1 - p`. The base path always sees `x` itself.
//!
//! The mask is never stored. Element `i` of the mask keyed `key` is a pure function of
//! `(key, i)` (a SplitMix64 finalizer over both), so the backward, and the recomputed
//! forward of activation checkpointing, draw exactly the forward's mask, and a resumed
//! run draws the masks an uninterrupted run draws: keys come from the run's seed, the
//! step, the micro-batch, the sequence, the layer and the projection ([`Mask::salted`]).
//! Evaluation passes no key and so has no dropout.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// The SplitMix64 finalizer of `a + golden · (b + 1)`: a well-mixed `u64` from two.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_add(b.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One dropout mask: which elements are kept, and the factor `1 / (1 - p)` they get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mask {
    key: u64,
    /// Element `i` is dropped when `mix(key, i) < threshold` (`threshold = p · 2⁶⁴`).
    threshold: u64,
    keep_scale: f64,
}

impl Mask {
    /// The mask of drop probability `p` keyed `key`; `None` for `p = 0` (no dropout: the
    /// pass is then exactly the one without it). `p` must lie in `[0, 1)`
    /// ([`crate::LoraConfig`] checks it).
    pub fn new(p: f64, key: u64) -> Option<Mask> {
        if !(p > 0.0 && p < 1.0) {
            return None;
        }
        // p · 2⁶⁴, below 2⁶⁴ for p < 1 (the cast saturates in any case).
        let threshold = (p * 18_446_744_073_709_551_616.0) as u64;
        Some(Mask {
            key,
            threshold,
            keep_scale: 1.0 / (1.0 - p),
        })
    }

    /// An independent mask for a part (a sequence, a layer, a projection) of this one's.
    pub fn salted(self, salt: u64) -> Mask {
        Mask {
            key: mix(self.key, salt),
            ..self
        }
    }

    /// Whether element `i` is kept.
    pub fn keeps(&self, i: usize) -> bool {
        mix(self.key, i as u64) >= self.threshold
    }

    /// `out = x ⊙ m / (1 - p)`, spread over the pool.
    pub fn apply<F: Float>(&self, pool: &ThreadPool, out: &mut [F], x: &[F]) {
        let n = out.len().min(x.len());
        let keep = F::from_f64(self.keep_scale);
        let os = SyncSlice::new(out);
        par_ranges(pool, n, n, &|r| {
            // SAFETY: the ranges of different threads are disjoint.
            let o = unsafe { os.slice_mut(r.start, r.len()) };
            for ((o, &x), i) in o.iter_mut().zip(&x[r.clone()]).zip(r) {
                *o = if self.keeps(i) { x * keep } else { F::ZERO };
            }
        });
    }

    /// `y += g ⊙ m / (1 - p)`: the backward of [`Mask::apply`], added into `y`.
    pub fn backward<F: Float>(&self, pool: &ThreadPool, y: &mut [F], g: &[F]) {
        let n = y.len().min(g.len());
        let keep = F::from_f64(self.keep_scale);
        let ys = SyncSlice::new(y);
        par_ranges(pool, n, n, &|r| {
            // SAFETY: the ranges of different threads are disjoint.
            let y = unsafe { ys.slice_mut(r.start, r.len()) };
            for ((y, &g), i) in y.iter_mut().zip(&g[r.clone()]).zip(r) {
                if self.keeps(i) {
                    *y += g * keep;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_dropout_is_no_mask_and_the_kept_fraction_is_one_minus_p() {
        assert!(Mask::new(0.0, 1).is_none());
        assert!(Mask::new(1.0, 1).is_none());
        assert!(Mask::new(f64::NAN, 1).is_none());
        for p in [0.05, 0.1, 0.5, 0.9] {
            let m = Mask::new(p, 42).unwrap();
            let n = 200_000;
            let kept = (0..n).filter(|&i| m.keeps(i)).count() as f64 / n as f64;
            // Binomial standard deviation at n = 2·10⁵ is at most 1.1e-3.
            assert!((kept - (1.0 - p)).abs() < 6e-3, "p {p}: kept {kept}");
        }
    }

    #[test]
    fn masks_of_other_salts_are_independent_and_the_same_salt_repeats() {
        let m = Mask::new(0.5, 7).unwrap();
        let (a, b) = (m.salted(1), m.salted(2));
        let n = 100_000;
        let same = (0..n).filter(|&i| a.keeps(i) == b.keeps(i)).count() as f64 / n as f64;
        assert!((same - 0.5).abs() < 0.01, "agreement {same}");
        assert!((0..n).all(|i| a.keeps(i) == m.salted(1).keeps(i)));
    }

    #[test]
    fn apply_scales_kept_elements_and_backward_routes_gradients_through_them() {
        let pool = ThreadPool::new(1);
        let m = Mask::new(0.25, 3).unwrap();
        let x: Vec<f64> = (0..64).map(|i| i as f64 + 1.0).collect();
        let mut out = vec![0.0; 64];
        m.apply(&pool, &mut out, &x);
        let mut g = vec![1.0; 64];
        m.backward(&pool, &mut g, &x);
        for i in 0..64 {
            let want = if m.keeps(i) { x[i] * (1.0 / 0.75) } else { 0.0 };
            assert_eq!(out[i], want);
            assert_eq!(g[i], 1.0 + want);
        }
        assert!(out.contains(&0.0) && out.iter().any(|&v| v != 0.0));
    }
}
