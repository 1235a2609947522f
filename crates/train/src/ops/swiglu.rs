//! SwiGLU's gate (Meta's `FeedForward`): `h = silu(a) * b` with `a = w1 · x` (gate) and
//! `b = w3 · x` (up); `silu(a) = a · σ(a)`.

use crate::Float;

fn sigmoid<F: Float>(a: F) -> F {
    F::ONE / (F::ONE + (-a).exp())
}

/// `out (T, FF) = silu(a (T, FF)) * b (T, FF)`.
pub fn forward<F: Float>(out: &mut [F], a: &[F], b: &[F]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * sigmoid(a) * b;
    }
}

/// `db += dh · silu(a)`, `da += dh · b · σ(a) (1 + a (1 - σ(a)))`.
pub fn backward<F: Float>(da: &mut [F], db: &mut [F], dout: &[F], a: &[F], b: &[F]) {
    for i in 0..dout.len() {
        let s = sigmoid(a[i]);
        db[i] += dout[i] * a[i] * s;
        da[i] += dout[i] * b[i] * s * (F::ONE + a[i] * (F::ONE - s));
    }
}
