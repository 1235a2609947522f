//! LoRA over a frozen base on the integer path (`BaseCompute::Int8`) against the same
//! base widened to f32 `Params`: the loss, every A/B gradient and a short training run's
//! loss curve, on the tiny GGUF models (Q8_0, Q4_K_M) and on SmolLM2-135M (its stored
//! Q4_1, and converted to Q8_0 and F16). Also: the integer path has the same bits for
//! any thread count.
//!
//! The bounds, from the roundings the integer path adds (`src/frozen_int.rs`):
//!
//! - Forward. Over an integer-stored base (Q8_0, Q4_*, Q5_*) the weights are exact and
//!   only the activations are rounded, to 16-bit blocks: each value moves by at most
//!   `amax_b / 65534` (`amax_b` its block's largest magnitude), so a product
//!   `y = Σ w x` moves by at most `Σ_b (amax_b / 65534) Σ_{j ∈ b} |w_j|`: for blocks
//!   whose maxima are within 10× of their mean magnitude, `≤ 10 / 65534 ≈ 1.5e-4` of
//!   `Σ |w x|`. The roundings are independent with mean 0, so a layer's outputs move by
//!   about `1.5e-4 / √(in)` relative (`in` ≥ 256 here: ≤ 1e-5), and the loss, a smooth
//!   function of them through 2 × 7 (tiny) to 30 × 7 (SmolLM2) such products, by about
//!   `√(30 · 7) · 1e-5 ≈ 1.5e-4` at most: the bound is `2e-4`. An F16 base is also
//!   rounded, per call, to 12-bit blocks: each weight by at most `max|W_b| / 4094`, 16
//!   times the activations' rounding, so `2e-3` for the loss.
//! - Backward. `dx += dy · W` reads a copy of `Wᵀ` rounded to 12-bit blocks along W's
//!   output dimension: each weight moves by at most `max|Wᵀ_b| / 4094`, uniformly, so
//!   each `dx` by about `|dy| · max|w| / 4094 / √3` against `|dx| ≈ |dy| · rms(w)`:
//!   `(max/rms) / 7091 ≈ 5 / 7091 ≈ 0.07 %` per product (4-bit weights, a few scales per
//!   block of Wᵀ: max/rms up to about 5). These errors are independent across the
//!   `≈ 4 · layers` products a gradient passes through (`√120 ≈ 11` for SmolLM2), and
//!   attention's softmax and SwiGLU multiply them by their slopes (a few): about 2 %
//!   for the worst tensor of SmolLM2, 0.5 % for the tiny models. An F16 base's forward
//!   rounding moves the activations the gradients are taken at, which adds as much
//!   again. The bounds are 3 % (SmolLM2) and 1 % (tiny); a decoding or transposition
//!   mistake moves gradients by 100 %.
//! - Training. Adam's steps are about `lr · sign(g)`: gradients 0.1 % off change few
//!   signs, and the parameters drift apart by at most 0.1 % of their change per step;
//!   over 10 steps whose loss falls by up to half per step, the losses stay within
//!   `10 · 0.1 % · 0.5 = 5e-3` relative of the f32 run's.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::{DType, ThreadPool};
use ferrollama_train::weights::{convert_weights, params_from_weights};
use ferrollama_train::{
    AdamW, AdamWConfig, BaseCompute, FrozenBase, Lora, LoraConfig, ParamSet, PassOptions, Sequence,
    Shape, Target, forward_backward_lora,
};

use common::{adapter, load, smollm2_path};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny")
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// Relative difference of two gradient sets, by tensor norm: the largest over tensors.
fn worst_relative(a: &Lora<f32>, b: &Lora<f32>) -> f64 {
    let mut worst = 0f64;
    for ((name, x), (_, y)) in a.tensors().into_iter().zip(b.tensors()) {
        let diff: f64 = x
            .iter()
            .zip(y.iter())
            .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = y.iter().map(|&q| f64::from(q).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 0.0 && diff.is_finite(), "{name} has no gradient");
        if std::env::var_os("FROZEN_INT_VERBOSE").is_some() {
            eprintln!("  {name}: {:.2e}", diff / norm);
        }
        worst = worst.max(diff / norm);
    }
    worst
}

/// The integer path's loss and gradients against the f32-widened base: returns the
/// relative loss and worst gradient differences.
fn compare(cfg: &LlamaConfig, w: &Weights, n_tokens: usize, pool: &ThreadPool) -> (f64, f64) {
    let (mut base, divisors) = FrozenBase::from_weights(w, cfg).unwrap();
    let stored = base.bytes();
    base.set_compute(BaseCompute::Int8, pool).unwrap();
    assert!(
        base.bytes() > stored,
        "the integer path's copies are counted"
    );
    let (p, _) = params_from_weights(w, cfg).unwrap();
    let mut sh = Shape::of(cfg);
    sh.rope_divisors = divisors;
    let toks = tokens(n_tokens + 1, cfg.vocab_size, 5);
    let batch = [Sequence::causal(&toks)];
    let lora = adapter(cfg);
    let opts = PassOptions {
        recompute: false,
        ..Default::default()
    };
    let scale = 1.0 / n_tokens as f32;
    let mut g_int = lora.zeros_like();
    let l_int =
        forward_backward_lora(pool, &sh, &base, &lora, &mut g_int, &batch, scale, opts).unwrap();
    let mut g_f32 = lora.zeros_like();
    let l_f32 =
        forward_backward_lora(pool, &sh, &p, &lora, &mut g_f32, &batch, scale, opts).unwrap();
    let dl = (f64::from(l_int) - f64::from(l_f32)).abs() / f64::from(l_f32).abs();
    (dl, worst_relative(&g_int, &g_f32))
}

#[allow(clippy::too_many_arguments)]
fn check(
    name: &str,
    cfg: &LlamaConfig,
    w: &Weights,
    n: usize,
    loss_tol: f64,
    grad_tol: f64,
    pool: &ThreadPool,
) {
    let (dl, dg) = compare(cfg, w, n, pool);
    eprintln!("{name}: loss differs by {dl:.2e} relative, gradients by {dg:.2e} (worst tensor)");
    assert!(dl <= loss_tol, "{name}: loss {dl:e} relative");
    assert!(dg <= grad_tol, "{name}: gradients {dg:e} relative");
}

#[test]
fn the_integer_path_follows_the_f32_base_on_the_tiny_models() {
    let pool = ThreadPool::new(2);
    for file in ["tiny-q8_0.gguf", "tiny-q4_k_m.gguf"] {
        let (cfg, w) = load(&testdata().join(file));
        check(file, &cfg, &w, 64, 2e-4, 0.01, &pool);
    }
}

#[test]
fn the_integer_path_follows_the_f32_base_on_smollm2() {
    let (cfg, w) = load(&smollm2_path());
    let pool = ThreadPool::new(2);
    check("SmolLM2 Q4_1", &cfg, &w, 32, 2e-4, 0.03, &pool);
    let wq = convert_weights(&w, DType::Q8_0, &pool).unwrap();
    check("SmolLM2 Q8_0", &cfg, &wq, 32, 2e-4, 0.03, &pool);
    let wf = convert_weights(&w, DType::F16, &pool).unwrap();
    check("SmolLM2 F16", &cfg, &wf, 32, 2e-3, 0.03, &pool);
}

/// Ten AdamW steps on the same sequence over the integer path and over the f32 base.
#[test]
fn a_short_lora_run_on_the_integer_path_keeps_the_f32_loss_curve() {
    let (cfg, w) = load(&testdata().join("tiny-q4_k_m.gguf"));
    let pool = ThreadPool::new(2);
    let (mut base, divisors) = FrozenBase::from_weights(&w, &cfg).unwrap();
    base.set_compute(BaseCompute::Int8, &pool).unwrap();
    let (p, _) = params_from_weights(&w, &cfg).unwrap();
    let mut sh = Shape::of(&cfg);
    sh.rope_divisors = divisors;
    let toks = tokens(65, cfg.vocab_size, 9);
    let batch = [Sequence::causal(&toks)];
    let lc = LoraConfig {
        dropout: 0.0,
        rank: 8,
        alpha: 16.0,
        targets: Target::ALL.to_vec(),
    };
    let opts = PassOptions {
        recompute: false,
        ..Default::default()
    };
    let run = |int: bool| -> Vec<f64> {
        let mut lora = Lora::<f32>::new(&cfg, lc.clone(), 7).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), &lora);
        let mut g = lora.zeros_like();
        (0..10)
            .map(|_| {
                for (_, t) in g.tensors_mut() {
                    t.fill(0.0);
                }
                let l = if int {
                    forward_backward_lora(
                        &pool,
                        &sh,
                        &base,
                        &lora,
                        &mut g,
                        &batch,
                        1.0 / 64.0,
                        opts,
                    )
                } else {
                    forward_backward_lora(&pool, &sh, &p, &lora, &mut g, &batch, 1.0 / 64.0, opts)
                }
                .unwrap();
                opt.update_on(&pool, &mut lora, &g, 1e-2);
                f64::from(l)
            })
            .collect()
    };
    let (a, b) = (run(true), run(false));
    eprintln!("integer path: {a:?}\nf32 base:     {b:?}");
    assert!(b[9] < b[0] - 0.1, "the run learns: {b:?}");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 5e-3 * y.abs(), "step {i}: {x} vs {y}");
    }
}

#[test]
fn the_integer_path_has_the_same_bits_for_any_thread_count() {
    let (cfg, w) = load(&testdata().join("tiny-q8_0.gguf"));
    let toks = tokens(97, cfg.vocab_size, 3);
    let batch = [Sequence::causal(&toks)];
    let lora = adapter(&cfg);
    let run = |threads: usize| {
        let pool = ThreadPool::new(threads);
        let (mut base, divisors) = FrozenBase::from_weights(&w, &cfg).unwrap();
        base.set_compute(BaseCompute::Int8, &pool).unwrap();
        let mut sh = Shape::of(&cfg);
        sh.rope_divisors = divisors;
        let mut g = lora.zeros_like();
        let opts = PassOptions {
            recompute: false,
            ..Default::default()
        };
        let l =
            forward_backward_lora(&pool, &sh, &base, &lora, &mut g, &batch, 0.01, opts).unwrap();
        let bits: Vec<Vec<u32>> = g
            .tensors()
            .into_iter()
            .map(|(_, t)| t.iter().map(|v| v.to_bits()).collect())
            .collect();
        (l.to_bits(), bits)
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads");
    }
}
