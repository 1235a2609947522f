//! The integer path of a frozen matrix ([`BaseCompute::Int8`]): the products of a frozen
//! base through the tensor crate's integer GEMM ([`matmul_int`]) instead of f32 panels.
//!
//! ```text
//! forward          y  (T, out) = x (T, in) · Wᵀ     W's stored blocks: exact for Q8_0, Q4_0,
//!                                                  Q4_1, Q5_0, Q5_1, Q4_K; F16, BF16, F32,
//!                                                  Q6_K rounded per call to 12-bit blocks
//! backward_input   dx (T, in) += dy (T, out) · W    a 12-bit copy of Wᵀ (in, out), made once
//! ```
//!
//! The activations (`x`, `dy`) are quantized per call to 16-bit integers in blocks of 32
//! (each within 1.5e-5 of its block's largest value), so the forward over an
//! integer-stored base is within about 1e-5 relative of the f32 path. The backward reads
//! `Wᵀ`, whose blocks run along W's output dimension, the other way from W's stored
//! blocks: each of W's rows has its own scale inside a block of `Wᵀ`, so no integer
//! kernel can read `dy · W` from W's blocks, and `Wᵀ` is rounded once at load to 12-bit
//! blocks (a [`WideMatrix`], 2.125 bytes per weight). That moves each weight by at most
//! 1/4094 of its `Wᵀ` block's largest magnitude: `dx` is the exact gradient of a base
//! that differs from the stored one by that much. (An 8-bit `Wᵀ`, 1.06 bytes per weight,
//! moved SmolLM2's LoRA gradients by up to 7 %; 12 bits cost the kernel nothing, its
//! integer sums have room for them.) `tests/frozen_int.rs` bounds the effect on the loss,
//! the LoRA gradients and a training run.
//!
//! Why integers: on AVX2 a 16-bit multiply-add (`vpmaddwd`) does 16 products per µop,
//! twice an f32 FMA's 8, and the base is most of a LoRA step's arithmetic
//! (`examples/frozen_bench.rs` compares the paths).

use std::cell::RefCell;

use ferrollama_model::Tensor;
use ferrollama_tensor::{
    INT_BLOCK, IntActs, IntWeights, TensorError, ThreadPool, WideMatrix, int_readable, matmul_int,
};

use crate::error::{Result, TrainError};

/// How a frozen base multiplies (`finetune --base-compute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseCompute {
    /// f32 arithmetic on decoded panels of the stored matrix: the exact products of the
    /// stored base (to summation order), and the backward is the exact gradient.
    #[default]
    F32,
    /// Integer arithmetic: the stored blocks (F16/BF16/F32/Q6_K rounded to 12 bits per
    /// call) times 16-bit activations, and a transposed 12-bit copy for the backward
    /// (+2.125 bytes per weight). Faster; the gradient is that of the base with its
    /// weights rounded to 12 bits along the other axis. A matrix whose sides are not
    /// multiples of 32 stays on f32.
    Int8,
}

impl BaseCompute {
    /// The command line's name.
    pub fn name(self) -> &'static str {
        match self {
            BaseCompute::F32 => "f32",
            BaseCompute::Int8 => "int8",
        }
    }

    /// `f32` or `int8`.
    pub fn parse(s: &str) -> Result<BaseCompute> {
        match s {
            "f32" => Ok(BaseCompute::F32),
            "int8" => Ok(BaseCompute::Int8),
            _ => Err(TrainError::Config(format!(
                "unknown base compute {s:?}: use f32 or int8"
            ))),
        }
    }
}

/// What the integer path reads besides the stored matrix.
#[derive(Clone)]
pub(crate) struct IntCopies {
    /// `Wᵀ (in, out)` in 12-bit blocks.
    bwd: WideMatrix,
}

impl IntCopies {
    /// The copies for `w (rows, cols)`, or `None` where a side is not a multiple of 32 or
    /// the type is not one the integer GEMM reads (the matrix then stays on f32).
    pub(crate) fn build(w: &Tensor, pool: &ThreadPool) -> Result<Option<IntCopies>> {
        let (rows, cols) = (w.rows, w.cols);
        let aligned = |n: usize| n > 0 && n.is_multiple_of(INT_BLOCK);
        if !aligned(rows) || !aligned(cols) || !int_readable(w.dtype) {
            return Ok(None);
        }
        let bwd =
            WideMatrix::transposed(pool, w.dtype, w.data(), rows, cols).map_err(kernel_error)?;
        Ok(Some(IntCopies { bwd }))
    }

    /// Bytes of the copies.
    pub(crate) fn bytes(&self) -> usize {
        self.bwd.bytes()
    }

    /// `y (T, rows) = x (T, cols) · Wᵀ` over the stored matrix.
    pub(crate) fn forward(
        &self,
        pool: &ThreadPool,
        stored: &Tensor,
        y: &mut [f32],
        x: &[f32],
    ) -> Result<()> {
        let w = IntWeights::Blocks {
            dtype: stored.dtype,
            data: stored.data(),
        };
        gemm(pool, w, stored.rows, stored.cols, x, y, false)
    }

    /// `dx (T, cols) += dy (T, rows) · W`.
    pub(crate) fn backward_input(
        &self,
        pool: &ThreadPool,
        dx: &mut [f32],
        dy: &[f32],
    ) -> Result<()> {
        let (rows, cols) = (self.bwd.rows(), self.bwd.cols());
        gemm(pool, IntWeights::Wide(&self.bwd), rows, cols, dy, dx, true)
    }
}

std::thread_local! {
    /// The calling thread's quantized activations, kept between calls so a warm pass
    /// does not allocate.
    static ACTS: RefCell<IntActs> = RefCell::new(IntActs::default());
}

/// `out (+)= x · Mᵀ` for `M (rows, cols)`.
fn gemm(
    pool: &ThreadPool,
    m: IntWeights<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let mut run = |acts: &mut IntActs| matmul_int(pool, m, rows, cols, x, out, accumulate, acts);
    ACTS.with(|a| match a.try_borrow_mut() {
        Ok(mut acts) => run(&mut acts),
        // Re-entered on this thread (a pass inside a pass): a fresh buffer.
        Err(_) => run(&mut IntActs::default()),
    })
    .map_err(kernel_error)
}

fn kernel_error(e: TensorError) -> TrainError {
    TrainError::Config(format!("frozen matrix (int8): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy holds `Wᵀ`: its rows are W's columns within 12-bit rounding (half a block
    /// scale, the scale being the block's largest / 2047); unaligned matrices get none.
    #[test]
    fn the_transposed_copy_is_the_transpose() {
        use ferrollama_tensor::{DType, quantize_row};
        let (rows, cols) = (64, 96);
        let mut s = 7u64;
        let vals: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let mut data = vec![0u8; rows * cols * 2];
        for (src, dst) in vals.chunks_exact(cols).zip(data.chunks_exact_mut(cols * 2)) {
            quantize_row(DType::F16, src, dst).expect("f16");
        }
        let w = Tensor::owned(DType::F16, rows, cols, data).expect("tensor");
        let wf = w.to_f32().expect("widen");
        let pool = ThreadPool::new(2);
        let c = IntCopies::build(&w, &pool)
            .expect("build")
            .expect("aligned");
        assert_eq!((c.bwd.rows(), c.bwd.cols()), (cols, rows));
        assert_eq!(c.bytes(), rows * cols * 2 + rows * cols / 32 * 4);
        let wt = c.bwd.to_f32();
        for cc in 0..cols {
            for b in 0..rows / INT_BLOCK {
                let blk: Vec<f32> = (0..INT_BLOCK)
                    .map(|i| wf[(b * INT_BLOCK + i) * cols + cc])
                    .collect();
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, &want) in blk.iter().enumerate() {
                    let got = wt[cc * rows + b * INT_BLOCK + i];
                    assert!(
                        (got - want).abs() <= amax / 4094.0 * 1.001,
                        "Wᵀ[{cc}][{}] {got} vs W {want}",
                        b * INT_BLOCK + i
                    );
                }
            }
        }
        let odd = Tensor::owned(DType::F32, 3, 32, vec![0; 3 * 32 * 4]).expect("tensor");
        assert!(IntCopies::build(&odd, &pool).expect("build").is_none());
    }

    #[test]
    fn names_parse_back() {
        for c in [BaseCompute::F32, BaseCompute::Int8] {
            assert_eq!(BaseCompute::parse(c.name()).expect("parse"), c);
        }
        assert!(BaseCompute::parse("int4").is_err());
    }
}
