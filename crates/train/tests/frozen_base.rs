//! LoRA over a frozen base kept in its stored type, on the real SmolLM2-135M (Q4_1 GGUF,
//! from the cache: `ferrollama fetch smollm2`, which `scripts/test` runs), as stored and
//! converted to Q8_0, Q4_K and F16: the loss and every A/B gradient equal those of the
//! same base widened to f32 `Params`, and the base holds its stored bytes, not 4 per
//! weight.

#![allow(clippy::unwrap_used)]

mod common;

use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::{DType, ThreadPool};
use ferrollama_train::weights::{convert_weights, params_from_weights};
use ferrollama_train::{FrozenBase, ParamSet, PassOptions, Sequence, Shape, forward_backward_lora};

use common::{adapter, load, smollm2_path};

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Bytes per weight of `dtype`'s blocks.
fn bytes_per_weight(dtype: DType) -> f64 {
    dtype.block_bytes() as f64 / dtype.block_len() as f64
}

/// The same base as a `FrozenBase` and widened to f32 `Params` (through `Tensor::to_f32`,
/// the reference decoder) gives the same loss and the same A/B gradients. Both passes run
/// the same decoded weights through f32 arithmetic; they differ only in the order of the
/// sums of long reductions (the frozen GEMM splits a reduction over more than 1024 values
/// in chunks; only the output matrix's `dlogits · E` over the 49 152-token vocabulary is
/// that long). A reordered f32 sum of `k` terms is within `2 γ_k Σ|terms|` of the other,
/// `γ_k ≈ k · 2⁻²⁴`: at most 2 · 1536 · 2⁻²⁴ = 1.8e-4 relative in a forward reduction
/// (the loss), 2 · 49 152 · 2⁻²⁴ = 5.9e-3 in the backward (each gradient tensor, by norm).
/// A wrongly decoded block or a transposed panel moves them by far more (percent and up).
fn check_against_f32(cfg: &LlamaConfig, w: &Weights, dtype: DType, pool: &ThreadPool) {
    let (base, divisors) = FrozenBase::from_weights(w, cfg).unwrap();
    // Memory: the stored bytes, each matrix at its format's block size (SmolLM2's Q4_1
    // file keeps the embedding in Q8_0; Q4_K falls back to Q5_0 for rows of 576), the
    // norms in f32.
    let mut want = 4.0 * base.norm.len() as f64;
    for m in base
        .layers
        .iter()
        .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3])
    {
        let expect = if m.cols() % dtype.block_len() == 0 {
            dtype
        } else {
            DType::Q5_0
        };
        assert_eq!(m.dtype(), expect);
        want += (m.rows() * m.cols()) as f64 * bytes_per_weight(m.dtype());
    }
    for l in &base.layers {
        want += 4.0 * (l.attention_norm.len() + l.ffn_norm.len()) as f64;
    }
    let e = &base.tok_embeddings;
    want += (e.rows() * e.cols()) as f64 * bytes_per_weight(e.dtype());
    assert!(
        base.output.is_none(),
        "SmolLM2 ties its output to the embedding"
    );
    assert_eq!(base.bytes() as f64, want, "{dtype}");
    let per = base.bytes() as f64 / base.n_weights() as f64;
    let (p, _) = params_from_weights(w, cfg).unwrap();
    assert!(
        (base.bytes() as f64) < 0.6 * 4.0 * p.len() as f64,
        "{dtype}: {} bytes against f32's {}",
        base.bytes(),
        4 * p.len()
    );
    let mut sh = Shape::of(cfg);
    sh.rope_divisors = divisors;
    let toks = tokens(33, cfg.vocab_size);
    let batch = [Sequence::causal(&toks)];
    let lora = adapter(cfg);
    let opts = PassOptions {
        recompute: true,
        ..Default::default()
    };
    let scale = 1.0 / 32.0;
    let mut g_frozen = lora.zeros_like();
    let l_frozen =
        forward_backward_lora(pool, &sh, &base, &lora, &mut g_frozen, &batch, scale, opts).unwrap();
    let mut g_f32 = lora.zeros_like();
    let l_f32 =
        forward_backward_lora(pool, &sh, &p, &lora, &mut g_f32, &batch, scale, opts).unwrap();
    let u = f64::from(f32::EPSILON) / 2.0;
    let (lf, lr) = (f64::from(l_frozen), f64::from(l_f32));
    eprintln!("{dtype}: loss {lf} (frozen) vs {lr} (f32), {per:.4} bytes/weight");
    assert!(lf.is_finite() && lr > 0.0);
    assert!(
        (lf - lr).abs() <= 2.0 * 1536.0 * u * lr,
        "{dtype}: loss {lf} vs {lr}"
    );
    let tol = 2.0 * 49152.0 * u;
    let mut worst = 0f64;
    for ((name, a), (_, b)) in g_frozen.tensors().into_iter().zip(g_f32.tensors()) {
        let diff: f64 = a
            .iter()
            .zip(b.iter())
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 0.0, "{dtype}: {name} has no gradient");
        worst = worst.max(diff / norm);
        assert!(
            diff <= tol * norm,
            "{dtype}: {name}: |Δ| {diff:e} against |g| {norm:e}"
        );
    }
    eprintln!("{dtype}: largest relative gradient difference {worst:e}");
}

#[test]
fn lora_over_a_frozen_base_matches_the_f32_base_in_every_stored_type() {
    let (cfg, w) = load(&smollm2_path());
    let pool = ThreadPool::new(2);
    assert_eq!(
        w.layers[0].wq.dtype,
        DType::Q4_1,
        "the cached SmolLM2 is Q4_1"
    );
    check_against_f32(&cfg, &w, DType::Q4_1, &pool);
    for dtype in [DType::Q8_0, DType::Q4_K, DType::F16] {
        let wq = convert_weights(&w, dtype, &pool).unwrap();
        check_against_f32(&cfg, &wq, dtype, &pool);
    }
}

/// A Q4_K base is a different model from the Q4_1 one: the losses differ, which the
/// comparisons above would not notice if every path read the same f32 weights.
#[test]
fn converted_bases_are_really_in_their_type() {
    let (cfg, w) = load(&smollm2_path());
    let pool = ThreadPool::new(2);
    let wq = convert_weights(&w, DType::Q4_K, &pool).unwrap();
    let (a, _) = FrozenBase::from_weights(&w, &cfg).unwrap();
    let (b, _) = FrozenBase::from_weights(&wq, &cfg).unwrap();
    assert_eq!(a.layers[3].w2.dtype(), DType::Q4_1);
    assert_eq!(b.layers[3].w2.dtype(), DType::Q4_K);
    assert_eq!(b.layers[3].w1.dtype(), DType::Q5_0, "rows of 576 fall back");
    assert!(
        b.output.is_none(),
        "SmolLM2's output stays tied to the embedding"
    );
    let sh = Shape::of(&cfg);
    let batch = [Sequence::causal(&tokens(17, cfg.vocab_size))];
    let la = ferrollama_train::loss(&pool, &sh, &a, &batch).unwrap();
    let lb = ferrollama_train::loss(&pool, &sh, &b, &batch).unwrap();
    assert!((la - lb).abs() > 1e-3 * la.abs(), "{la} vs {lb}");
}
