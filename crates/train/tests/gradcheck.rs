//! Every backward against central finite differences in f64: each op on its own, then
//! the whole tiny model (GQA, Llama 3.1 RoPE scaling, tied and separate output, a loss
//! mask), with and without activation recomputation; then DPO's weighted pass (full and
//! LoRA) and distillation's soft-target loss.

#![allow(clippy::unwrap_used)]

use ferrollama_model::{LlamaConfig, RopeScaling};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::data::PreferencePair;
use ferrollama_train::distill::SoftTargets;
use ferrollama_train::dpo::{self, PairLogps};
use ferrollama_train::ops::attention::Heads;
use ferrollama_train::ops::rope::RopeTables;
use ferrollama_train::ops::{
    attention, cross_entropy, embedding, matmul, rmsnorm, rope, soft_target, swiglu,
};
use ferrollama_train::{
    Grads, Item, Lora, LoraConfig, Objective, ParamSet, Params, PassOptions, Sequence, Shape,
    Target, forward_backward, forward_backward_lora, loss, loss_lora, pass,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

const EPS: f64 = 1e-6;

/// Checks `grad` (the analytic gradient of `f` at `x`) against central differences of
/// `f` for every element; errors relative to max(|fd|, 1e-3) stay below 3e-6 (the model checks reach ~5e-7;
/// a backward off by 1e-4 fails).
fn check(name: &str, x: &mut [f64], grad: &[f64], f: &mut dyn FnMut(&[f64]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{name}");
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + EPS;
        let up = f(x);
        x[i] = orig - EPS;
        let down = f(x);
        x[i] = orig;
        let fd = (up - down) / (2.0 * EPS);
        let err = (fd - grad[i]).abs() / fd.abs().max(1e-3);
        worst = worst.max(err);
        assert!(
            err < 3e-6,
            "{name}[{i}]: analytic {} vs finite difference {fd} (rel err {err:e})",
            grad[i]
        );
    }
    // A gradient that is all zero would pass trivially where f is flat; none of ours is.
    assert!(
        grad.iter().any(|g| g.abs() > 1e-4),
        "{name}: gradient vanished"
    );
    eprintln!("{name}: {} elements, worst rel err {worst:.2e}", x.len());
}

/// `L = Σ r ⊙ y` for a fixed random `r`, so `dL/dy = r`.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = Rng(1);
    let (v, c) = (5, 3);
    let tokens = [1u32, 3, 1, 0];
    let mut wte = rng.vec(v * c, 1.0);
    let r = rng.vec(tokens.len() * c, 1.0);
    let mut g = vec![0.0; v * c];
    embedding::backward(&ThreadPool::new(2), &mut g, &r, &tokens, c);
    check("embedding dwte", &mut wte, &g, &mut |w| {
        let mut y = vec![0.0; tokens.len() * c];
        embedding::forward(&mut y, &tokens, w, c);
        dot(&y, &r)
    });
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let mut rng = Rng(2);
    let (t, c) = (3, 8);
    let mut x = rng.vec(t * c, 2.0);
    let mut w = rng.vec(c, 1.0);
    let r = rng.vec(t * c, 1.0);
    let eps = 1e-5;
    let pool = ThreadPool::new(2);
    let run = |x: &[f64], w: &[f64]| {
        let mut y = vec![0.0; t * c];
        let mut rstd = vec![0.0; t];
        rmsnorm::forward(&pool, &mut y, &mut rstd, x, w, eps);
        (y, rstd)
    };
    let (_, rstd) = run(&x, &w);
    let (mut dx, mut dw) = (vec![0.0; t * c], vec![0.0; c]);
    rmsnorm::backward(&pool, &mut dx, Some(&mut dw), &r, &x, &w, &rstd);
    let w0 = w.clone();
    check("rmsnorm dx", &mut x, &dx, &mut |x| dot(&run(x, &w0).0, &r));
    let x0 = x.clone();
    check("rmsnorm dweight", &mut w, &dw, &mut |w| {
        dot(&run(&x0, w).0, &r)
    });
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(3);
    let (t, c, oc) = (4, 5, 3);
    let mut x = rng.vec(t * c, 1.0);
    let mut w = rng.vec(oc * c, 1.0);
    let r = rng.vec(t * oc, 1.0);
    let run = |x: &[f64], w: &[f64]| {
        let mut y = vec![0.0; t * oc];
        matmul::forward(&pool, &mut y, x, w, c, oc);
        dot(&y, &r)
    };
    let (mut dx, mut dw) = (vec![0.0; t * c], vec![0.0; oc * c]);
    matmul::backward(&pool, Some(&mut dx), Some(&mut dw), &r, &x, &w, c, oc);
    let w0 = w.clone();
    check("matmul dinp", &mut x, &dx, &mut |x| run(x, &w0));
    let x0 = x.clone();
    check("matmul dweight", &mut w, &dw, &mut |w| run(&x0, w));
}

fn scaling() -> RopeScaling {
    // Tiny-model version of Llama 3.1's: one frequency of an 8-dim head in each regime.
    RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64.0,
    }
}

#[test]
fn rope_backward_matches_finite_differences() {
    let mut rng = Rng(4);
    let (t, heads, hd) = (5, 2, 8);
    let tab = RopeTables::<f64>::new(t, hd, 500_000.0, &scaling().freq_divisors(hd, 500_000.0));
    // The scaling must change something for the test to mean anything.
    let plain = RopeTables::<f64>::new(t, hd, 500_000.0, &[]);
    assert_ne!(tab.cos, plain.cos);
    let mut x = rng.vec(t * heads * hd, 1.0);
    let r = rng.vec(t * heads * hd, 1.0);
    let mut dx = vec![0.0; x.len()];
    let pool = ThreadPool::new(2);
    rope::backward(&pool, &mut dx, &r, heads * hd, hd, &tab);
    check("rope dx", &mut x, &dx, &mut |x| {
        let mut y = vec![0.0; x.len()];
        rope::forward(&pool, &mut y, x, heads * hd, hd, &tab);
        dot(&y, &r)
    });
}

#[test]
fn attention_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(5);
    let hs = Heads {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 3,
    };
    let t = 5;
    let mut q = rng.vec(t * 12, 1.0);
    let mut k = rng.vec(t * 6, 1.0);
    let mut v = rng.vec(t * 6, 1.0);
    let r = rng.vec(t * 12, 1.0);
    let run = |q: &[f64], k: &[f64], v: &[f64]| {
        let mut out = vec![0.0; t * 12];
        let mut probs = vec![0.0; attention::probs_len(t, hs)];
        attention::forward(&pool, &mut out, &mut probs, q, k, v, hs);
        (dot(&out, &r), probs)
    };
    let (_, probs) = run(&q, &k, &v);
    let (mut dq, mut dk, mut dv) = (vec![0.0; t * 12], vec![0.0; t * 6], vec![0.0; t * 6]);
    attention::backward(&pool, &mut dq, &mut dk, &mut dv, &r, &q, &k, &v, &probs, hs);
    let (k0, v0) = (k.clone(), v.clone());
    check("attention dq", &mut q, &dq, &mut |q| run(q, &k0, &v0).0);
    let q0 = q.clone();
    check("attention dk", &mut k, &dk, &mut |k| run(&q0, k, &v0).0);
    check("attention dv", &mut v, &dv, &mut |v| run(&q0, &k0, v).0);
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let mut rng = Rng(6);
    let n = 12;
    let mut a = rng.vec(n, 3.0);
    let mut b = rng.vec(n, 1.0);
    let r = rng.vec(n, 1.0);
    let pool = ThreadPool::new(2);
    let run = |a: &[f64], b: &[f64]| {
        let mut y = vec![0.0; n];
        swiglu::forward(&pool, &mut y, a, b);
        dot(&y, &r)
    };
    let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
    swiglu::backward(&pool, &mut da, &mut db, &r, &a, &b);
    let b0 = b.clone();
    check("swiglu da", &mut a, &da, &mut |a| run(a, &b0));
    let a0 = a.clone();
    check("swiglu db", &mut b, &db, &mut |b| run(&a0, b));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let mut rng = Rng(7);
    let (t, v) = (4, 6);
    let mut logits = rng.vec(t * v, 3.0);
    let targets = [2u32, 0, 5, 5];
    let counted = [true, false, true, true];
    let pool = ThreadPool::new(2);
    let mut d = vec![0.0; t * v];
    cross_entropy::backward(&pool, &mut d, &logits, &targets, &counted, v, 1.0);
    // The uncounted token gets no gradient at all.
    assert!(d[v..2 * v].iter().all(|&x| x == 0.0));
    check("cross_entropy dlogits", &mut logits, &d, &mut |l| {
        cross_entropy::forward(&pool, l, &targets, &counted, v)
    });
    // The fused pass (what the model runs) overwrites the logits with the same gradient.
    let mut fused = logits.clone();
    let loss = cross_entropy::forward_backward(&pool, &mut fused, &targets, &counted, v, 1.0);
    check(
        "cross_entropy fused dlogits",
        &mut logits,
        &fused,
        &mut |l| cross_entropy::forward(&pool, l, &targets, &counted, v),
    );
    let want = cross_entropy::forward(&pool, &logits, &targets, &counted, v);
    assert!((loss - want).abs() < 1e-12, "fused loss {loss} vs {want}");
}

fn tiny_config(vocab: usize) -> LlamaConfig {
    LlamaConfig {
        dim: 16,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
        rope_dims: 4,
        ffn_dim: 24,
        vocab_size: vocab,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_seq_len: 64,
        rope_scaling: Some(RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32.0,
        }),
    }
}

fn random_params(cfg: &LlamaConfig, tied: bool, seed: u64) -> Params<f64> {
    let mut rng = Rng(seed);
    let mut p = Params::<f64>::zeros(cfg, tied);
    for (name, t) in p.tensors_mut() {
        let norm = name.ends_with("norm.weight");
        for x in t.iter_mut() {
            *x = if norm {
                1.0 + 0.2 * rng.next()
            } else {
                0.4 * rng.next()
            };
        }
    }
    p
}

fn tiny_batch() -> Vec<Sequence> {
    let mut a = Sequence::causal(&[3, 7, 1, 7, 9, 2, 0, 5]);
    a.counted[..2].fill(false); // a prompt
    let b = Sequence::causal(&[4, 4, 11, 6, 1]);
    vec![a, b]
}

fn model_check(tied: bool, recompute: bool) {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let mut p = random_params(&cfg, tied, 11);
    let batch = tiny_batch();
    let count: usize = batch.iter().map(Sequence::n_counted).sum();
    let scale = 1.0 / count as f64;
    let mut g = p.zeros_like();
    let l = forward_backward(
        &pool,
        &sh,
        &p,
        &mut g,
        &batch,
        scale,
        PassOptions {
            recompute,
            ..Default::default()
        },
    )
    .unwrap();
    let l2 = loss(&pool, &sh, &p, &batch).unwrap();
    assert_eq!(
        l, l2,
        "the training pass and the forward-only pass give one loss"
    );
    let names: Vec<String> = p.tensors().into_iter().map(|t| t.0).collect();
    let grads: Vec<Vec<f64>> = g.tensors().into_iter().map(|t| t.1.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let mut x = p.tensors()[i].1.clone();
        check(
            &format!("model (tied {tied}, recompute {recompute}) {name}"),
            &mut x,
            &grads[i],
            &mut |x| {
                let mut q = p.clone();
                q.tensors_mut()[i].1.copy_from_slice(x);
                loss(&pool, &sh, &q, &batch).unwrap() * scale
            },
        );
        p.tensors_mut()[i].1.copy_from_slice(&x);
    }
}

#[test]
fn model_backward_matches_finite_differences_separate_output() {
    model_check(false, false);
}

#[test]
fn model_backward_matches_finite_differences_tied_output_recomputed() {
    model_check(true, true);
}

#[test]
fn recomputation_and_accumulation_change_no_gradient() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, false, 12);
    let batch = tiny_batch();
    let mut whole = p.zeros_like();
    forward_backward(
        &pool,
        &sh,
        &p,
        &mut whole,
        &batch,
        0.5,
        PassOptions::default(),
    )
    .unwrap();
    let mut recomputed = p.zeros_like();
    forward_backward(
        &pool,
        &sh,
        &p,
        &mut recomputed,
        &batch,
        0.5,
        PassOptions {
            recompute: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        whole, recomputed,
        "recomputed activations are the same numbers"
    );
    // Two micro-batches accumulated into one gradient: the same as one batch, up to the
    // order of additions.
    let mut acc = p.zeros_like();
    for s in &batch {
        forward_backward(
            &pool,
            &sh,
            &p,
            &mut acc,
            std::slice::from_ref(s),
            0.5,
            PassOptions::default(),
        )
        .unwrap();
    }
    for ((name, a), (_, w)) in acc.tensors().into_iter().zip(whole.tensors()) {
        for (x, y) in a.iter().zip(w.iter()) {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn bad_sequences_are_errors() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, true, 13);
    let mut g = p.zeros_like();
    let out_of_vocab = Sequence::causal(&[1, 12, 3]);
    let e = forward_backward(
        &pool,
        &sh,
        &p,
        &mut g,
        &[out_of_vocab],
        1.0,
        PassOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("token id 12"), "{e}");
    let empty = Sequence::causal(&[5]);
    assert!(loss(&pool, &sh, &p, &[empty]).is_err());
    assert!(
        g.tensors().iter().all(|t| t.1.iter().all(|&x| x == 0.0)),
        "nothing was touched"
    );
    // A bad sequence after a good one: the whole batch is refused before any gradient.
    let good = Sequence::causal(&[1, 2, 3]);
    let bad = Sequence::causal(&[1, 99]);
    assert!(
        forward_backward(
            &pool,
            &sh,
            &p,
            &mut g,
            &[good, bad],
            1.0,
            PassOptions::default()
        )
        .is_err()
    );
    assert!(
        g.tensors().iter().all(|t| t.1.iter().all(|&x| x == 0.0)),
        "a refused batch adds no gradient"
    );
}

fn random_lora(cfg: &LlamaConfig, targets: Vec<Target>, seed: u64) -> Lora<f64> {
    let mut l = Lora::<f64>::new(
        cfg,
        LoraConfig {
            dropout: 0.0,
            rank: 3,
            alpha: 6.0,
            targets,
        },
        seed,
    )
    .unwrap();
    // B starts at zero; a random B makes the gradient of A non-zero too.
    let mut rng = Rng(seed + 1);
    for (name, t) in l.tensors_mut() {
        if name.ends_with("lora_b") {
            t.iter_mut().for_each(|x| *x = 0.3 * rng.next());
        }
    }
    l
}

#[test]
fn lora_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, true, 21);
    let batch = tiny_batch();
    let count: usize = batch.iter().map(Sequence::n_counted).sum();
    let scale = 1.0 / count as f64;
    for recompute in [false, true] {
        let mut lora = random_lora(&cfg, Target::ALL.to_vec(), 22);
        let mut g = lora.zeros_like();
        let opts = PassOptions {
            recompute,
            ..Default::default()
        };
        forward_backward_lora(&pool, &sh, &p, &lora, &mut g, &batch, scale, opts).unwrap();
        let names: Vec<String> = lora.tensors().into_iter().map(|t| t.0).collect();
        assert_eq!(names.len(), 2 * 7 * cfg.n_layers);
        let grads: Vec<Vec<f64>> = g.tensors().into_iter().map(|t| t.1.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            let mut x = lora.tensors()[i].1.clone();
            check(
                &format!("lora (recompute {recompute}) {name}"),
                &mut x,
                &grads[i],
                &mut |x| {
                    let mut l = lora.clone();
                    l.tensors_mut()[i].1.copy_from_slice(x);
                    loss_lora(&pool, &sh, &p, &l, &batch).unwrap() * scale
                },
            );
            lora.tensors_mut()[i].1.copy_from_slice(&x);
        }
    }
}

/// The summed loss of `batch` under `lora` with `opts`' dropout key (forward only).
fn dropout_loss(
    pool: &ThreadPool,
    sh: &Shape,
    p: &Params<f64>,
    lora: &Lora<f64>,
    batch: &[Sequence],
    opts: PassOptions,
) -> f64 {
    let items: Vec<Item<'_, f64>> = batch.iter().map(|s| Item::cross_entropy(s, 1.0)).collect();
    pass(pool, sh, p, Some(lora), Grads::none(), &items, opts)
        .unwrap()
        .iter()
        .sum()
}

#[test]
fn lora_dropout_backward_matches_finite_differences() {
    // With the key fixed the masks are fixed, so the loss is a smooth function of A and B
    // and its gradient (masks drawn again in the backward, and in the recomputed
    // forward) must match finite differences.
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, true, 31);
    let batch = tiny_batch();
    let count: usize = batch.iter().map(Sequence::n_counted).sum();
    let scale = 1.0 / count as f64;
    for recompute in [false, true] {
        let mut lora = random_lora(&cfg, Target::ALL.to_vec(), 32);
        lora.config.dropout = 0.4;
        let opts = PassOptions {
            recompute,
            dropout_key: Some(0xd0d0),
        };
        let mut g = lora.zeros_like();
        forward_backward_lora(&pool, &sh, &p, &lora, &mut g, &batch, scale, opts).unwrap();
        let grads: Vec<Vec<f64>> = g.tensors().into_iter().map(|t| t.1.clone()).collect();
        let names: Vec<String> = lora.tensors().into_iter().map(|t| t.0).collect();
        for (i, name) in names.iter().enumerate() {
            let mut x = lora.tensors()[i].1.clone();
            check(
                &format!("lora dropout (recompute {recompute}) {name}"),
                &mut x,
                &grads[i],
                &mut |x| {
                    let mut l = lora.clone();
                    l.tensors_mut()[i].1.copy_from_slice(x);
                    dropout_loss(&pool, &sh, &p, &l, &batch, opts) * scale
                },
            );
            lora.tensors_mut()[i].1.copy_from_slice(&x);
        }
    }
}

#[test]
fn lora_dropout_zero_or_without_a_key_is_the_pass_without_dropout() {
    let pool = ThreadPool::new(1);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, false, 33);
    let batch = tiny_batch();
    let plain = random_lora(&cfg, Target::ALL.to_vec(), 34);
    let mut dropped = plain.clone();
    dropped.config.dropout = 0.5;
    let keyed = PassOptions {
        recompute: false,
        dropout_key: Some(5),
    };
    let grads_of = |l: &Lora<f64>, opts: PassOptions| {
        let mut g = l.zeros_like();
        forward_backward_lora(&pool, &sh, &p, l, &mut g, &batch, 1.0, opts).unwrap();
        g
    };
    let none = PassOptions::default();
    // p = 0 with a key: bit for bit the pass without dropout, loss and gradients.
    let base_loss = dropout_loss(&pool, &sh, &p, &plain, &batch, none);
    assert_eq!(
        dropout_loss(&pool, &sh, &p, &plain, &batch, keyed),
        base_loss
    );
    assert!(grads_of(&plain, keyed) == grads_of(&plain, none));
    // p > 0 without a key (evaluation): no dropout either.
    assert_eq!(
        dropout_loss(&pool, &sh, &p, &dropped, &batch, none),
        base_loss
    );
    assert_eq!(
        loss_lora(&pool, &sh, &p, &dropped, &batch).unwrap(),
        base_loss
    );
    // p > 0 with a key drops: another loss, the same for the same key, another for another.
    let a = dropout_loss(&pool, &sh, &p, &dropped, &batch, keyed);
    assert_ne!(a, base_loss);
    assert_eq!(dropout_loss(&pool, &sh, &p, &dropped, &batch, keyed), a);
    let other = PassOptions {
        dropout_key: Some(6),
        ..keyed
    };
    assert_ne!(dropout_loss(&pool, &sh, &p, &dropped, &batch, other), a);
    // A probability outside [0, 1) is refused.
    for bad in [1.0, -0.1, f64::NAN] {
        let mut c = plain.config.clone();
        c.dropout = bad;
        assert!(Lora::<f64>::new(&cfg, c, 1).is_err(), "dropout {bad}");
    }
}

#[test]
fn a_fresh_adapter_is_the_base_model() {
    let pool = ThreadPool::new(1);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, false, 23);
    let batch = tiny_batch();
    let lora = Lora::<f64>::new(
        &cfg,
        LoraConfig {
            dropout: 0.0,
            rank: 4,
            alpha: 8.0,
            targets: Target::parse_list("q,v,down").unwrap(),
        },
        24,
    )
    .unwrap();
    assert_eq!(lora.tensors().len(), 2 * 3 * cfg.n_layers);
    // B = 0: the same loss as without the adapter, yet A's gradient is zero and B's is not.
    let base = loss(&pool, &sh, &p, &batch).unwrap();
    assert_eq!(loss_lora(&pool, &sh, &p, &lora, &batch).unwrap(), base);
    let mut g = lora.zeros_like();
    forward_backward_lora(
        &pool,
        &sh,
        &p,
        &lora,
        &mut g,
        &batch,
        1.0,
        PassOptions::default(),
    )
    .unwrap();
    for (name, t) in g.tensors() {
        let nonzero = t.iter().any(|&x| x != 0.0);
        assert_eq!(nonzero, name.ends_with("lora_b"), "{name}");
    }
    // A's initialization is PEFT's: uniform within ±1/sqrt(in features).
    let a = &lora.get(0, Target::Down).unwrap().a;
    let bound = 1.0 / (cfg.ffn_dim as f64).sqrt();
    assert!(a.iter().all(|x| x.abs() <= bound) && a.iter().any(|x| x.abs() > bound / 2.0));
    assert!(Target::parse_list("q,x").is_err());
    assert!(
        Lora::<f64>::new(
            &cfg,
            LoraConfig {
                dropout: 0.0,
                rank: 0,
                alpha: 1.0,
                targets: vec![Target::Q]
            },
            1
        )
        .is_err()
    );
}

#[test]
fn soft_target_backward_matches_finite_differences() {
    let mut rng = Rng(31);
    let (t, v, k) = (4, 7, 3);
    let mut logits = rng.vec(t * v, 3.0);
    let ids: Vec<u32> = vec![2, 0, 5, 6, 1, 3, 4, 4, 0, 1, 2, 3];
    // Probabilities that do not sum to 1 (one row repeats an id, one has a zero): the
    // backward must be exact for whatever teacher targets are stored.
    let probs: Vec<f32> = vec![0.5, 0.3, 0.1, 0.6, 0.3, 0.1, 0.7, 0.2, 0.0, 0.25, 0.25, 0.5];
    let counted = [true, false, true, true];
    let temperature = 2.0;
    let mut d = vec![0.0; t * v];
    soft_target::backward(
        &mut d,
        &logits,
        &ids,
        &probs,
        &[],
        k,
        &counted,
        v,
        temperature,
        1.0,
    );
    assert!(d[v..2 * v].iter().all(|&x| x == 0.0));
    check("soft_target dlogits", &mut logits, &d, &mut |l| {
        soft_target::forward(l, &ids, &probs, &[], k, &counted, v, temperature)
    });
    // The loss is τ² KL: zero where the student's tempered softmax is the teacher's.
    let row: Vec<f64> = vec![1.0, 2.0, 0.5];
    let p = SoftTargets::from_logits(
        &row.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        3,
        3,
        temperature,
    );
    let zero = soft_target::forward(&row, &p.ids, &p.probs, &[], 3, &[true], 3, temperature);
    assert!(zero.abs() < 1e-6, "{zero}");
}

/// `scale · Σ DPO loss` of `pairs` (`refs` fixed) for the finite differences.
fn dpo_loss(
    pool: &ThreadPool,
    sh: &Shape,
    p: &Params<f64>,
    lora: Option<&Lora<f64>>,
    pairs: &[PreferencePair],
    refs: &[PairLogps],
    scale: f64,
) -> f64 {
    let m = dpo::evaluate(pool, sh, p, lora, pairs, refs, 0.7).unwrap();
    m.loss_sum * scale
}

fn tiny_pairs() -> Vec<PreferencePair> {
    let mk = |toks: &[u32]| {
        let mut s = Sequence::causal(toks);
        s.counted[..2].fill(false); // a prompt of 3 tokens
        s
    };
    vec![
        PreferencePair {
            chosen: mk(&[3, 7, 1, 7, 9, 2]),
            rejected: mk(&[3, 7, 1, 0, 0]),
        },
        PreferencePair {
            chosen: mk(&[4, 4, 11, 6, 1]),
            rejected: mk(&[4, 4, 11, 2, 8, 10, 5]),
        },
    ]
}

#[test]
fn dpo_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let mut p = random_params(&cfg, false, 41);
    let pairs = tiny_pairs();
    // A reference other than the policy, so z is not 0 and the two weights differ.
    let refs = dpo::logps(&pool, &sh, &random_params(&cfg, false, 42), None, &pairs).unwrap();
    let scale = 0.5;
    let mut g = p.zeros_like();
    let m = dpo::forward_backward(
        &pool,
        &sh,
        &p,
        None,
        Grads::full(&mut g),
        &pairs,
        &refs,
        0.7,
        scale,
        PassOptions::default(),
    )
    .unwrap();
    assert!(m.margin().abs() > 0.1, "the check needs z away from 0");
    // Every tensor kind once (the weights are the cross-entropy's, checked above).
    for name in [
        "tok_embeddings.weight",
        "layers.0.attention.wk.weight",
        "layers.1.feed_forward.w2.weight",
        "layers.1.ffn_norm.weight",
        "output.weight",
    ] {
        let i = p.tensors().iter().position(|t| t.0 == name).unwrap();
        let mut x = p.tensors()[i].1.clone();
        let grad = g.tensors()[i].1.clone();
        check(&format!("dpo {name}"), &mut x, &grad, &mut |x| {
            let mut q = p.clone();
            q.tensors_mut()[i].1.copy_from_slice(x);
            dpo_loss(&pool, &sh, &q, None, &pairs, &refs, scale)
        });
        p.tensors_mut()[i].1.copy_from_slice(&x);
    }
}

#[test]
fn dpo_lora_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let p = random_params(&cfg, true, 43);
    let pairs = tiny_pairs();
    // The reference is the base without the adapter.
    let refs = dpo::logps(&pool, &sh, &p, None, &pairs).unwrap();
    let mut lora = random_lora(&cfg, vec![Target::Q, Target::V, Target::Down], 44);
    let mut g = lora.zeros_like();
    dpo::forward_backward(
        &pool,
        &sh,
        &p,
        Some(&lora),
        Grads::lora(&mut g),
        &pairs,
        &refs,
        0.7,
        1.0,
        PassOptions {
            recompute: true,
            ..Default::default()
        },
    )
    .unwrap();
    let n = lora.tensors().len();
    for i in 0..n {
        let name = lora.tensors()[i].0.clone();
        let mut x = lora.tensors()[i].1.clone();
        let grad = g.tensors()[i].1.clone();
        check(&format!("dpo lora {name}"), &mut x, &grad, &mut |x| {
            let mut l = lora.clone();
            l.tensors_mut()[i].1.copy_from_slice(x);
            dpo_loss(&pool, &sh, &p, Some(&l), &pairs, &refs, 1.0)
        });
        lora.tensors_mut()[i].1.copy_from_slice(&x);
    }
}

#[test]
fn distillation_backward_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let cfg = tiny_config(12);
    let sh = Shape::of(&cfg);
    let mut p = random_params(&cfg, true, 51);
    let batch = tiny_batch();
    // Teacher targets from another model's logits: its top 4 of 12 at τ = 2.
    let teacher = random_params(&cfg, true, 52);
    let temperature = 2.0;
    let targets: Vec<SoftTargets> = batch
        .iter()
        .map(|s| {
            let logits = logits_of(&pool, &sh, &teacher, s);
            SoftTargets::from_logits(&logits, 12, 4, temperature)
        })
        .collect();
    let items = |p: &Params<f64>| -> Vec<f64> {
        let it: Vec<Item<'_, f64>> = batch
            .iter()
            .zip(&targets)
            .map(|(s, t)| Item {
                seq: s,
                objective: Objective::Distill {
                    teacher: t,
                    temperature,
                },
                scale: 0.1,
            })
            .collect();
        pass(
            &pool,
            &sh,
            p,
            None,
            Grads::none(),
            &it,
            PassOptions::default(),
        )
        .unwrap()
    };
    let mut g = p.zeros_like();
    let it: Vec<Item<'_, f64>> = batch
        .iter()
        .zip(&targets)
        .map(|(s, t)| Item {
            seq: s,
            objective: Objective::Distill {
                teacher: t,
                temperature,
            },
            scale: 0.1,
        })
        .collect();
    let with_grad = pass(
        &pool,
        &sh,
        &p,
        None,
        Grads::full(&mut g),
        &it,
        PassOptions {
            recompute: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(with_grad, items(&p));
    for name in [
        "tok_embeddings.weight",
        "layers.0.attention.wq.weight",
        "layers.1.feed_forward.w1.weight",
        "norm.weight",
    ] {
        let i = p.tensors().iter().position(|t| t.0 == name).unwrap();
        let mut x = p.tensors()[i].1.clone();
        let grad = g.tensors()[i].1.clone();
        check(&format!("distill {name}"), &mut x, &grad, &mut |x| {
            let mut q = p.clone();
            q.tensors_mut()[i].1.copy_from_slice(x);
            items(&q).iter().sum::<f64>() * 0.1
        });
        p.tensors_mut()[i].1.copy_from_slice(&x);
    }
}

/// The model's logits `(T, vocab)` over `s.inputs`, as f32 (what a teacher hands over):
/// read back through the cross-entropy of every possible target.
fn logits_of(pool: &ThreadPool, sh: &Shape, p: &Params<f64>, s: &Sequence) -> Vec<f32> {
    // log softmax is all a teacher's top-k needs (softmax is shift invariant), and the
    // forward pass gives -log softmax[target] per position: one pass per vocabulary id.
    let (t, v) = (s.inputs.len(), sh.vocab);
    let mut out = vec![0.0f32; t * v];
    for id in 0..v {
        for pos in 0..t {
            let one = Sequence {
                inputs: s.inputs.clone(),
                targets: vec![id as u32; t],
                counted: (0..t).map(|i| i == pos).collect(),
            };
            out[pos * v + id] = -loss(pool, sh, p, &[one]).unwrap() as f32;
        }
    }
    out
}

#[test]
fn soft_target_with_a_tail_backward_matches_finite_differences() {
    let mut rng = Rng(32);
    let (t, v, k) = (3, 9, 3);
    let mut logits = rng.vec(t * v, 3.0);
    let ids: Vec<u32> = vec![2, 0, 5, 6, 1, 3, 8, 4, 7];
    // The teacher's own probabilities on its top 3, and the mass on the other 6.
    let probs: Vec<f32> = vec![0.5, 0.2, 0.1, 0.3, 0.25, 0.05, 0.7, 0.1, 0.1];
    let rest: Vec<f32> = vec![0.2, 0.4, 0.1];
    let counted = [true, true, true];
    let temperature = 1.5;
    let mut d = vec![0.0; t * v];
    soft_target::backward(
        &mut d,
        &logits,
        &ids,
        &probs,
        &rest,
        k,
        &counted,
        v,
        temperature,
        1.0,
    );
    check("soft_target tail dlogits", &mut logits, &d, &mut |l| {
        soft_target::forward(l, &ids, &probs, &rest, k, &counted, v, temperature)
    });
    // With the tail the minimum is the teacher itself: 0 there, and no gradient.
    let row: Vec<f64> = vec![1.0, 2.0, 0.5, -1.0, 0.3];
    let row32: Vec<f32> = row.iter().map(|&x| x as f32).collect();
    let p = SoftTargets::from_logits_with(&row32, 5, 2, temperature, true);
    assert_eq!(p.rest.len(), 1);
    let zero = soft_target::forward(&row, &p.ids, &p.probs, &p.rest, 2, &[true], 5, temperature);
    assert!(zero.abs() < 1e-6, "{zero}");
    let mut g = vec![0.0; 5];
    soft_target::backward(
        &mut g,
        &row,
        &p.ids,
        &p.probs,
        &p.rest,
        2,
        &[true],
        5,
        temperature,
        1.0,
    );
    assert!(g.iter().all(|x| x.abs() < 1e-6), "{g:?}");
    // Renormalized over the top 2, the teacher is not the minimum.
    let q = SoftTargets::from_logits(&row32, 5, 2, temperature);
    let off = soft_target::forward(&row, &q.ids, &q.probs, &q.rest, 2, &[true], 5, temperature);
    assert!(off > 0.1, "{off}");
}
