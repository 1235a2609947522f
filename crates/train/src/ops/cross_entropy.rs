//! Cross-entropy of the next-token distribution, averaged over the tokens that count
//! (chat data: the assistant's tokens only).

use crate::Float;

/// `Σ_t w[t] · -log softmax(logits[t])[targets[t]]` and the number of counted tokens; `w`
/// is 1 for a counted token, 0 otherwise. The caller divides by the count it averages over.
pub fn forward<F: Float>(logits: &[F], targets: &[u32], counted: &[bool], v: usize) -> F {
    let mut loss = F::ZERO;
    for ((row, &tgt), &c) in logits.chunks_exact(v).zip(targets).zip(counted) {
        if c {
            loss += log_sum_exp(row) - row[tgt as usize];
        }
    }
    loss
}

/// `dlogits[t] += scale · (softmax(logits[t]) - onehot(targets[t]))` for counted tokens,
/// where `scale` is `dloss / count`.
pub fn backward<F: Float>(
    dlogits: &mut [F],
    logits: &[F],
    targets: &[u32],
    counted: &[bool],
    v: usize,
    scale: F,
) {
    for (((d, row), &tgt), &c) in dlogits
        .chunks_exact_mut(v)
        .zip(logits.chunks_exact(v))
        .zip(targets)
        .zip(counted)
    {
        if !c {
            continue;
        }
        let lse = log_sum_exp(row);
        for (i, (d, &x)) in d.iter_mut().zip(row).enumerate() {
            let p = (x - lse).exp();
            let y = if i == tgt as usize { F::ONE } else { F::ZERO };
            *d += scale * (p - y);
        }
    }
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
