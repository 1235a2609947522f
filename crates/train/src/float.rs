//! The number type of a training run: `f32` for real runs, `f64` for the gradient checks,
//! where finite differences need the extra digits. Only what the ops use, plus the one
//! matrix kernel the training pass spends its time in: [`Float::gemm`], plain loops by
//! default (the reference, and f64's path) and the tensor crate's packed SIMD GEMM for f32.

use std::cell::RefCell;

use ferrollama_tensor::{
    Epilogue, PackedF32, ThreadPool, matmul_f32_packed_part_with, matmul_f32_packed_with,
    matmul_f32_packed_xt_with,
};

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Debug
    + Display
    + PartialOrd
    + Default
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;

    /// A matrix prepared once by [`Float::prepare`] for several [`Float::gemm_prepared`]
    /// products with its leading blocks: packed panels for f32, the matrix as given for
    /// f64.
    type Prepared: Default + Debug + Send + Sync;

    /// Prepares `M (oc, c)` stored as `w` (`layout` as in [`Float::gemm`]) into `p`,
    /// reusing its storage.
    fn prepare(
        pool: &ThreadPool,
        p: &mut Self::Prepared,
        w: &[Self],
        layout: Layout,
        c: usize,
        oc: usize,
    );

    /// `out (t, oc) (+)= x (t, c) · M[..oc, ..c]ᵀ` with the prepared `M`: its first `oc`
    /// rows and `c` columns.
    #[allow(clippy::too_many_arguments)]
    fn gemm_prepared(
        pool: &ThreadPool,
        out: &mut [Self],
        x: &[Self],
        p: &Self::Prepared,
        c: usize,
        oc: usize,
        accumulate: bool,
    );
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn cos(self) -> Self;
    fn sin(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;

    /// `x[i] = exp(x[i] - shift)`, returning `Σ x[i]` (a softmax's or log-sum-exp's
    /// exponentials given the row's max). In order with libm's `exp` by default (f64, the
    /// gradient checks); f32 overrides it with the tensor crate's SIMD `exp` (within 2
    /// ulp, summed in lanes): libm's is a call per element, and a training step takes
    /// tens of millions of them.
    fn exp_shifted_sum(x: &mut [Self], shift: Self) -> Self {
        let mut s = Self::ZERO;
        for v in x.iter_mut() {
            *v = (*v - shift).exp();
            s += *v;
        }
        s
    }

    /// `out[i] = σ(x[i]) = 1 / (1 + exp(-x[i]))`; f32 on the SIMD `exp` as
    /// [`Float::exp_shifted_sum`].
    fn sigmoid_into(out: &mut [Self], x: &[Self]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = Self::ONE / (Self::ONE + (-v).exp());
        }
    }

    /// `out (t, oc) (+)= x (t, c) · Mᵀ` where the matrix `M (oc, c)` is stored as `w`:
    /// row-major `(oc, c)`, or with [`Layout::Transposed`] as its transpose `(c, oc)`.
    /// `accumulate` adds to `out` instead of overwriting it.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        pool: &ThreadPool,
        out: &mut [Self],
        x: &[Self],
        w: &[Self],
        layout: Layout,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        let _ = pool;
        gemm_scalar(out, x, w, layout, c, oc, accumulate);
    }

    /// [`Float::gemm`] with `x` stored transposed: `xt (c, t)`, `x[i][k] = xt[k * t + i]`.
    /// A weight gradient `dW += dYᵀ · X` reads its `dYᵀ` this way from `dY` as the
    /// backward holds it, instead of from a transposed copy.
    #[allow(clippy::too_many_arguments)]
    fn gemm_xt(
        pool: &ThreadPool,
        out: &mut [Self],
        xt: &[Self],
        w: &[Self],
        layout: Layout,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        let _ = pool;
        gemm_scalar_xt(out, xt, w, layout, c, oc, accumulate);
    }
}

/// How [`Float::gemm`]'s matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `M` itself, row-major `(oc, c)`, as `nn.Linear` keeps its weight.
    Rows,
    /// `Mᵀ`, row-major `(c, oc)`: the backward's `dY · W` and `dYᵀ · X` use a weight or
    /// an activation this way without copying it.
    Transposed,
}

/// The reference of [`Float::gemm`]: one dot product per output, in order of `k`.
pub fn gemm_scalar<F: Float>(
    out: &mut [F],
    x: &[F],
    w: &[F],
    layout: Layout,
    c: usize,
    oc: usize,
    accumulate: bool,
) {
    for (o, xr) in out.chunks_exact_mut(oc).zip(x.chunks_exact(c)) {
        for (j, o) in o.iter_mut().enumerate() {
            let mut s = F::ZERO;
            for (k, &a) in xr.iter().enumerate() {
                let m = match layout {
                    Layout::Rows => w[j * c + k],
                    Layout::Transposed => w[k * oc + j],
                };
                s += a * m;
            }
            if accumulate {
                *o += s;
            } else {
                *o = s;
            }
        }
    }
}

/// The reference of [`Float::gemm_xt`]: [`gemm_scalar`] reading `x` from its transpose.
pub fn gemm_scalar_xt<F: Float>(
    out: &mut [F],
    xt: &[F],
    w: &[F],
    layout: Layout,
    c: usize,
    oc: usize,
    accumulate: bool,
) {
    let t = xt.len() / c.max(1);
    for (i, o) in out.chunks_exact_mut(oc).enumerate().take(t) {
        for (j, o) in o.iter_mut().enumerate() {
            let mut s = F::ZERO;
            for k in 0..c {
                let m = match layout {
                    Layout::Rows => w[j * c + k],
                    Layout::Transposed => w[k * oc + j],
                };
                s += xt[k * t + i] * m;
            }
            if accumulate {
                *o += s;
            } else {
                *o = s;
            }
        }
    }
}

thread_local! {
    /// The matrix the f32 GEMM packs into on this thread, kept for the next call: the
    /// training pass packs every weight twice a step, and fresh storage for each would
    /// fault its pages in again (113 MB for SmolLM2's tied embedding).
    static PACKED: RefCell<PackedF32> = RefCell::new(PackedF32::default());
}

/// Frees the packing storage the f32 GEMM keeps on this thread.
pub fn release_gemm_buffers() {
    PACKED.with_borrow_mut(|p| *p = PackedF32::default());
}

/// `M` packed for the f32 GEMM into this thread's kept storage, then `run` on it; `false`
/// where the shapes do not fit (only a caller's mistake).
fn with_packed(
    pool: &ThreadPool,
    w: &[f32],
    layout: Layout,
    c: usize,
    oc: usize,
    run: &mut dyn FnMut(&PackedF32) -> bool,
) -> bool {
    PACKED.with_borrow_mut(|p| {
        let packed = match layout {
            Layout::Rows => p.repack_on(pool, w, oc, c),
            Layout::Transposed => p.repack_transposed_on(pool, w, c, oc),
        };
        packed.is_ok() && run(p)
    })
}

/// [`Float::Prepared`] of the plain-loop path: the matrix as given.
#[derive(Debug, Clone)]
pub struct Plain<F> {
    w: Vec<F>,
    layout: Layout,
    c: usize,
    oc: usize,
}

impl<F> Default for Plain<F> {
    fn default() -> Self {
        Plain {
            w: Vec::new(),
            layout: Layout::Rows,
            c: 0,
            oc: 0,
        }
    }
}

/// [`Float::gemm_prepared`] of the plain-loop path ([`gemm_scalar`] on a leading block).
fn gemm_plain<F: Float>(
    out: &mut [F],
    x: &[F],
    p: &Plain<F>,
    c: usize,
    oc: usize,
    accumulate: bool,
) {
    for (o, xr) in out.chunks_exact_mut(oc).zip(x.chunks_exact(c)) {
        for (j, o) in o.iter_mut().enumerate() {
            let mut s = F::ZERO;
            for (k, &a) in xr.iter().enumerate() {
                let m = match p.layout {
                    Layout::Rows => p.w[j * p.c + k],
                    Layout::Transposed => p.w[k * p.oc + j],
                };
                s += a * m;
            }
            if accumulate {
                *o += s;
            } else {
                *o = s;
            }
        }
    }
}

macro_rules! float_ops {
    ($t:ty) => {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        #[inline(always)]
        fn from_f64(x: f64) -> Self {
            x as $t
        }
        #[inline(always)]
        fn to_f64(self) -> f64 {
            self as f64
        }
        #[inline(always)]
        fn exp(self) -> Self {
            <$t>::exp(self)
        }
        #[inline(always)]
        fn ln(self) -> Self {
            <$t>::ln(self)
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            <$t>::sqrt(self)
        }
        #[inline(always)]
        fn cos(self) -> Self {
            <$t>::cos(self)
        }
        #[inline(always)]
        fn sin(self) -> Self {
            <$t>::sin(self)
        }
        #[inline(always)]
        fn max(self, other: Self) -> Self {
            <$t>::max(self, other)
        }
        #[inline(always)]
        fn is_finite(self) -> bool {
            <$t>::is_finite(self)
        }
    };
}

impl Float for f64 {
    float_ops!(f64);

    type Prepared = Plain<f64>;

    fn prepare(_: &ThreadPool, p: &mut Plain<f64>, w: &[f64], layout: Layout, c: usize, oc: usize) {
        p.w.clear();
        p.w.extend_from_slice(w);
        (p.layout, p.c, p.oc) = (layout, c, oc);
    }

    fn gemm_prepared(
        _: &ThreadPool,
        out: &mut [f64],
        x: &[f64],
        p: &Plain<f64>,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        gemm_plain(out, x, p, c, oc, accumulate);
    }
}

impl Float for f32 {
    float_ops!(f32);

    type Prepared = PackedF32;

    fn prepare(
        pool: &ThreadPool,
        p: &mut PackedF32,
        w: &[f32],
        layout: Layout,
        c: usize,
        oc: usize,
    ) {
        let done = match layout {
            Layout::Rows => p.repack_on(pool, w, oc, c),
            Layout::Transposed => p.repack_transposed_on(pool, w, c, oc),
        };
        // A shape the caller got wrong leaves the matrix empty; the product then fails
        // its own check and falls back to nothing sensible, so say it loudly in tests.
        debug_assert!(done.is_ok(), "prepare: {} values for {oc} x {c}", w.len());
    }

    fn gemm_prepared(
        pool: &ThreadPool,
        out: &mut [f32],
        x: &[f32],
        p: &PackedF32,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        let t = x.len() / c.max(1);
        let epi = Epilogue {
            accumulate,
            ..Epilogue::default()
        };
        let done = matmul_f32_packed_part_with(pool, p, oc, c, x, t, out, epi);
        debug_assert!(
            done.is_ok(),
            "gemm_prepared: {oc} x {c} of {} x {}",
            p.rows(),
            p.cols()
        );
    }

    fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        ferrollama_tensor::exp_shifted_sum(x, shift)
    }

    fn sigmoid_into(out: &mut [f32], x: &[f32]) {
        ferrollama_tensor::sigmoid_into(out, x)
    }

    /// The matrix is repacked into the GEMM's panels on every call (on the pool's
    /// threads, into storage kept on the calling thread): weights change every step, and
    /// packing is O(oc · c) against the product's O(t · oc · c). Keeping packed copies of
    /// a frozen base instead would cost its size again in memory (twice: the backward
    /// reads it transposed).
    fn gemm(
        pool: &ThreadPool,
        out: &mut [f32],
        x: &[f32],
        w: &[f32],
        layout: Layout,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        let t = x.len() / c.max(1);
        let epi = Epilogue {
            accumulate,
            ..Epilogue::default()
        };
        let mut out = Some(out);
        let done = with_packed(pool, w, layout, c, oc, &mut |p| {
            out.as_deref_mut()
                .is_some_and(|o| matmul_f32_packed_with(pool, p, x, t, o, epi).is_ok())
        });
        if !done && let Some(out) = out {
            // Only a shape the caller got wrong lands here; the loops give the same answer.
            gemm_scalar(out, x, w, layout, c, oc, accumulate);
        }
    }

    fn gemm_xt(
        pool: &ThreadPool,
        out: &mut [f32],
        xt: &[f32],
        w: &[f32],
        layout: Layout,
        c: usize,
        oc: usize,
        accumulate: bool,
    ) {
        let t = xt.len() / c.max(1);
        let epi = Epilogue {
            accumulate,
            ..Epilogue::default()
        };
        let mut out = Some(out);
        let done = with_packed(pool, w, layout, c, oc, &mut |p| {
            out.as_deref_mut()
                .is_some_and(|o| matmul_f32_packed_xt_with(pool, p, xt, t, o, epi).is_ok())
        });
        if !done && let Some(out) = out {
            gemm_scalar_xt(out, xt, w, layout, c, oc, accumulate);
        }
    }
}
