//! Rotary position embedding on adjacent pairs (Meta's complex-number layout: dimensions
//! `2i, 2i + 1` of a head are one complex number), with Llama 3.1's frequency scaling.
//! A rotation is linear and orthogonal, so the backward is the inverse rotation.

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::par_ranges;
use crate::Float;

/// cos and sin of every (position, pair) angle.
#[derive(Debug, Clone)]
pub struct RopeTables<F> {
    pub pairs: usize,
    pub cos: Vec<F>, // (T, pairs)
    pub sin: Vec<F>, // (T, pairs)
}

impl<F: Float> RopeTables<F> {
    /// Angles `t · θ^(-2i/rope_dims) / divisors[i]` for `t < len`: the divisors are Llama
    /// 3.1's scaling (`RopeScaling::freq_divisors`, or a GGUF's `rope_freqs`); empty means
    /// none. The angle is formed in f64.
    pub fn new(len: usize, rope_dims: usize, theta: f32, divisors: &[f32]) -> Self {
        let pairs = rope_dims / 2;
        let div = |i: usize| divisors.get(i).copied().unwrap_or(1.0);
        let freqs: Vec<f64> = (0..pairs)
            .map(|i| {
                // Meta computes the frequencies in f32; the same rounding here keeps the
                // PyTorch-pinned losses close.
                let f = 1.0f32 / theta.powf((2 * i) as f32 / rope_dims as f32);
                f64::from(f / div(i))
            })
            .collect();
        let mut cos = Vec::with_capacity(len * pairs);
        let mut sin = Vec::with_capacity(len * pairs);
        for t in 0..len {
            for &f in &freqs {
                let a = t as f64 * f;
                cos.push(F::from_f64(a.cos()));
                sin.push(F::from_f64(a.sin()));
            }
        }
        RopeTables { pairs, cos, sin }
    }
}

/// `out (T, heads · hd) = rotate(x (T, heads · hd))`: each head's first `2 · pairs`
/// dimensions rotated by its position's angles, the rest copied. `tab` covers at least T
/// positions. Rows are spread over the pool.
pub fn forward<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    x: &[F],
    width: usize,
    hd: usize,
    tab: &RopeTables<F>,
) {
    rotate_par(pool, out, x, width, hd, tab, Mode::Forward);
}

/// `dx += rotate⁻¹(dout)` (the transpose of a rotation is its inverse).
pub fn backward<F: Float>(
    pool: &ThreadPool,
    dx: &mut [F],
    dout: &[F],
    width: usize,
    hd: usize,
    tab: &RopeTables<F>,
) {
    rotate_par(pool, dx, dout, width, hd, tab, Mode::AddInverse);
}

/// `out = rotate⁻¹(x)`, whatever `out` held: [`backward`] into a buffer that holds no
/// gradient yet.
pub fn inverse<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    x: &[F],
    width: usize,
    hd: usize,
    tab: &RopeTables<F>,
) {
    rotate_par(pool, out, x, width, hd, tab, Mode::Inverse);
}

/// What [`rotate`] does with its rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `out = R x`.
    Forward,
    /// `out = Rᵀ x`.
    Inverse,
    /// `out += Rᵀ x`.
    AddInverse,
}

fn rotate_par<F: Float>(
    pool: &ThreadPool,
    out: &mut [F],
    x: &[F],
    width: usize,
    hd: usize,
    tab: &RopeTables<F>,
    mode: Mode,
) {
    let t = out.len().min(x.len()) / width.max(1);
    let os = SyncSlice::new(out);
    par_ranges(pool, t, t * width, &|rows| {
        let (a, b) = (rows.start * width, rows.end * width);
        // SAFETY: the row ranges of different threads are disjoint.
        let o = unsafe { os.slice_mut(a, b - a) };
        rotate(o, &x[a..b], rows.start, width, hd, tab, mode);
    });
}

/// `out = R x`, `out = Rᵀ x` or `out += Rᵀ x` (`mode`) for the rows from position
/// `first` on.
fn rotate<F: Float>(
    out: &mut [F],
    x: &[F],
    first: usize,
    width: usize,
    hd: usize,
    tab: &RopeTables<F>,
    mode: Mode,
) {
    let p = tab.pairs;
    for (i, (orow, xrow)) in out
        .chunks_exact_mut(width)
        .zip(x.chunks_exact(width))
        .enumerate()
    {
        let t = first + i;
        let cos = &tab.cos[t * p..(t + 1) * p];
        let sin = &tab.sin[t * p..(t + 1) * p];
        for (oh, xh) in orow.chunks_exact_mut(hd).zip(xrow.chunks_exact(hd)) {
            for i in 0..p {
                let (x0, x1) = (xh[2 * i], xh[2 * i + 1]);
                let (c, s) = (cos[i], sin[i]);
                match mode {
                    // (x0 + i x1) · (c + i s)
                    Mode::Forward => {
                        oh[2 * i] = x0 * c - x1 * s;
                        oh[2 * i + 1] = x0 * s + x1 * c;
                    }
                    // (x0 + i x1) · (c - i s)
                    Mode::Inverse => {
                        oh[2 * i] = x0 * c + x1 * s;
                        oh[2 * i + 1] = x1 * c - x0 * s;
                    }
                    Mode::AddInverse => {
                        oh[2 * i] += x0 * c + x1 * s;
                        oh[2 * i + 1] += x1 * c - x0 * s;
                    }
                }
            }
            for i in 2 * p..hd {
                if mode == Mode::AddInverse {
                    oh[i] += xh[i];
                } else {
                    oh[i] = xh[i];
                }
            }
        }
    }
}
