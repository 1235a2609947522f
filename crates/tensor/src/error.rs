//! Typed errors for every fallible tensor operation.
//!
//! Kernels are fed lengths that come from model files, so every mismatch is
//! reported as data (op name, dtype, expected and actual lengths) instead of a
//! panic: a corrupt GGUF must produce an error message, never an abort.

use crate::DType;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The element count is not a whole number of blocks of `dtype`.
    #[error("{op}: {n} elements is not a multiple of the {dtype:?} block length {block_len}")]
    NotBlockAligned {
        op: &'static str,
        dtype: DType,
        n: usize,
        block_len: usize,
    },
    /// A buffer has the wrong length.
    #[error("{op}: {what} has {actual} {unit}, expected {expected} (dtype {dtype:?})")]
    LengthMismatch {
        op: &'static str,
        dtype: DType,
        what: &'static str,
        unit: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The operation is not implemented for this dtype.
    #[error("{op}: dtype {dtype:?} is not supported")]
    Unsupported { op: &'static str, dtype: DType },
    /// A size computation overflowed `usize`.
    #[error("{op}: size overflow ({what})")]
    Overflow {
        op: &'static str,
        what: &'static str,
    },
    /// The activation buffer's format does not match what the weight dtype needs.
    #[error("{op}: activations must be {expected:?} for {weight:?} weights, got {actual:?}")]
    WrongActivationType {
        op: &'static str,
        weight: DType,
        expected: DType,
        actual: DType,
    },
}

impl TensorError {
    /// Shorthand for the most common error: a byte or element count mismatch.
    pub(crate) fn len(
        op: &'static str,
        dtype: DType,
        what: &'static str,
        unit: &'static str,
        expected: usize,
        actual: usize,
    ) -> Self {
        TensorError::LengthMismatch {
            op,
            dtype,
            what,
            unit,
            expected,
            actual,
        }
    }
}
