//! Distillation's loss: soft-target cross-entropy of the student against a teacher's
//! top-k distribution at temperature `τ` (Hinton et al. 2015), reported as the forward KL.
//!
//! Per counted position, with `z` the student's logits (V), `q = softmax(z / τ)` and `p` the
//! teacher's probabilities on its top `k` ids (zero elsewhere, renormalized over the k at
//! the same temperature):
//!
//! ```text
//! loss = τ² · Σ_{i ∈ top-k} p_i (ln p_i − ln q_i)        (τ² · KL(p ‖ q))
//! ∂loss/∂z_j = τ² · (1/τ) · (S·q_j − p_j) = τ · (S·q_j − p_j),   S = Σ_i p_i
//! ```
//!
//! `S` is 1 for a renormalized teacher; keeping it makes the gradient exact for whatever
//! `p` is stored (f32 probabilities sum to 1 only within rounding).
//!
//! Renormalizing over the top k moves the loss's minimum off the teacher: the targets ask
//! for all the mass on the k ids, so even the teacher itself scores `-τ² ln Σ_k q` and a
//! student is pushed to sharpen. With a tail (`rest[t]`, the teacher's mass outside its
//! top k, `p` then its true probabilities) the rest of the vocabulary is one more class,
//! `q_r = Σ_{j∉K} q_j`, and the minimum is the teacher exactly:
//!
//! ```text
//! loss += τ² · p_r (ln p_r − ln q_r)
//! ∂/∂z_j += τ · p_r · q_j · (1 − [j ∉ K] / q_r)
//! ``` The `τ²` keeps the
//! gradient's size independent of the temperature, as Hinton recommends. The entropy term
//! `Σ p ln p` does not depend on the student: the gradient is that of the soft-target
//! cross-entropy, and the loss reads 0 when the student matches the teacher on the top k.

use crate::Float;

/// `Σ_t counted · τ² · KL(p_t ‖ softmax(logits[t] / τ))` over rows `(T, V)`; `ids` and
/// `probs` are `(T, k)`: the teacher's top-k ids and probabilities of each position;
/// `rest` is `(T)`, the teacher's mass outside them, or empty for renormalized targets.
#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(
    logits: &[F],
    ids: &[u32],
    probs: &[f32],
    rest: &[f32],
    k: usize,
    counted: &[bool],
    v: usize,
    temperature: F,
) -> F {
    let mut loss = F::ZERO;
    let rows = logits
        .chunks_exact(v)
        .zip(ids.chunks_exact(k))
        .zip(probs.chunks_exact(k))
        .zip(counted);
    for (t, (((row, ids), ps), &c)) in rows.enumerate() {
        if !c {
            continue;
        }
        let lse = log_sum_exp_scaled(row, temperature);
        let mut kl = F::ZERO;
        if let Some(&pr) = rest.get(t)
            && pr > 0.0
        {
            let pr = F::from_f64(f64::from(pr));
            let qr = tail_mass(row, ids, temperature, lse);
            kl += pr * (pr.ln() - qr.ln());
        }
        for (&id, &p) in ids.iter().zip(ps) {
            if p > 0.0 {
                let p = F::from_f64(f64::from(p));
                let log_q = row[id as usize] / temperature - lse;
                kl += p * (p.ln() - log_q);
            }
        }
        loss += temperature * temperature * kl;
    }
    loss
}

/// `dlogits[t] += scale · τ · (S·softmax(logits[t] / τ) − p_t)` for counted rows, plus the
/// tail's term with `rest` (the gradient of [`forward`] times `scale`).
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    dlogits: &mut [F],
    logits: &[F],
    ids: &[u32],
    probs: &[f32],
    rest: &[f32],
    k: usize,
    counted: &[bool],
    v: usize,
    temperature: F,
    scale: F,
) {
    let rows = dlogits
        .chunks_exact_mut(v)
        .zip(logits.chunks_exact(v))
        .zip(ids.chunks_exact(k))
        .zip(probs.chunks_exact(k))
        .zip(counted);
    for (t, ((((d, row), ids), ps), &c)) in rows.enumerate() {
        if !c {
            continue;
        }
        let lse = log_sum_exp_scaled(row, temperature);
        let mut s = F::ZERO;
        for &p in ps {
            s += F::from_f64(f64::from(p));
        }
        let f = scale * temperature;
        let pr = rest.get(t).map_or(F::ZERO, |&r| F::from_f64(f64::from(r)));
        if pr > F::ZERO {
            // Every j gets p_r q_j; those outside the top k also −p_r q_j / q_r.
            let qr = tail_mass(row, ids, temperature, lse);
            let outside = pr / qr;
            for (d, &x) in d.iter_mut().zip(row) {
                let q = (x / temperature - lse).exp();
                *d += f * (s + pr - outside) * q;
            }
            for &id in ids {
                let q = (row[id as usize] / temperature - lse).exp();
                d[id as usize] += f * outside * q;
            }
        } else {
            for (d, &x) in d.iter_mut().zip(row) {
                *d += f * s * (x / temperature - lse).exp();
            }
        }
        for (&id, &p) in ids.iter().zip(ps) {
            d[id as usize] -= f * F::from_f64(f64::from(p));
        }
    }
}

/// `q_r = Σ_{j ∉ ids} softmax(row / τ)_j`, summed directly (not `1 − Σ_ids q`, which loses
/// every digit when the top k hold nearly all the mass). `ids` are distinct.
fn tail_mass<F: Float>(row: &[F], ids: &[u32], temperature: F, lse: F) -> F {
    let mut top = ids.to_vec();
    top.sort_unstable();
    let mut total = F::ZERO;
    for (j, &x) in row.iter().enumerate() {
        if top.binary_search(&(j as u32)).is_err() {
            total += (x / temperature - lse).exp();
        }
    }
    total
}

/// `log Σ exp(row / τ)`.
fn log_sum_exp_scaled<F: Float>(row: &[F], temperature: F) -> F {
    let mut max = F::from_f64(f64::NEG_INFINITY);
    for &x in row {
        max = max.max(x / temperature);
    }
    let mut s = F::ZERO;
    for &x in row {
        s += (x / temperature - max).exp();
    }
    max + s.ln()
}
