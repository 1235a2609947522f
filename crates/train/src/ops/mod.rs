//! The operations of the Llama forward pass, each with its backward next to it (llm.c's
//! layout). Conventions, all row-major:
//! - `forward(out, inputs..)` overwrites `out`;
//! - `backward(dinputs.., dout, saved inputs..)` **adds** into the input gradients (a
//!   tensor used twice, like the residual stream, collects both contributions) and into
//!   the weight gradients (gradient accumulation across micro-batches is then free).
//!
//! Shapes use `T` tokens of one sequence, `C` channels.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod soft_target;
pub mod swiglu;

use crate::Float;

/// `y += x`.
pub fn add_into<F: Float>(y: &mut [F], x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}
