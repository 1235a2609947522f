//! DPO pinned to PyTorch: the tiny Llama 3.1 of `pytorch_pin.rs` (same weights), 10
//! steps of TRL's sigmoid DPO loss with AdamW, clipping, accumulation and the cosine
//! schedule (`testdata/train/make_dpo_reference.py`): reference log-probabilities, per-step
//! loss, TRL's reward metrics and gradient norm, and two tensors' full gradients. Then DPO
//! lowering its loss with full fine-tuning and with LoRA (reference = the base without the
//! adapter), and its bad inputs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::{LlamaConfig, RopeScaling};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::checkpoint;
use ferrollama_train::data::PreferencePair;
use ferrollama_train::dpo::{self, DpoData, PairLogps};
use ferrollama_train::weights::load_params;
use ferrollama_train::{
    AdamW, AdamWConfig, Grads, Length, Lora, LoraConfig, ParamSet, Params, PassOptions, Sequence,
    Shape, StepRecord, Target, TrainConfig, Trainer, clip_grad_norm, cosine_lr,
};
use serde_json::Value;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/train")
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} missing"))
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata().join(name)).unwrap()).unwrap()
}

/// The tiny model of `make_reference.py` with its initial weights.
fn tiny() -> (LlamaConfig, Shape, Params<f32>) {
    let r = read_json("tiny_reference.json");
    let c = &r["config"];
    let dim = num(c, "dim") as usize;
    let n_heads = num(c, "n_heads") as usize;
    let rs = &c["rope_scaling"];
    let cfg = LlamaConfig {
        dim,
        n_layers: num(c, "n_layers") as usize,
        n_heads,
        n_kv_heads: num(c, "n_kv_heads") as usize,
        head_dim: dim / n_heads,
        rope_dims: dim / n_heads,
        ffn_dim: num(c, "ffn_dim") as usize,
        vocab_size: num(c, "vocab_size") as usize,
        norm_eps: num(c, "norm_eps") as f32,
        rope_theta: num(c, "rope_theta") as f32,
        max_seq_len: 64,
        rope_scaling: Some(RopeScaling {
            factor: num(rs, "factor") as f32,
            low_freq_factor: num(rs, "low_freq_factor") as f32,
            high_freq_factor: num(rs, "high_freq_factor") as f32,
            original_max_position_embeddings: num(rs, "original_max_position_embeddings") as f32,
        }),
    };
    let sh = Shape::of(&cfg);
    let p = load_params(&testdata().join("tiny_init.safetensors"), &cfg).unwrap();
    (cfg, sh, p)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// prompt + completion, only the completion counted (as `data::preference_pairs` builds).
fn completion(prompt: &[u32], completion: &[u32]) -> Sequence {
    let toks: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let mut s = Sequence::causal(&toks);
    s.counted[..prompt.len() - 1].fill(false);
    s
}

fn reference_pairs(r: &Value) -> Vec<PreferencePair> {
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let prompt = ids(&d["prompt"]);
            PreferencePair {
                chosen: completion(&prompt, &ids(&d["chosen"])),
                rejected: completion(&prompt, &ids(&d["rejected"])),
            }
        })
        .collect()
}

fn close(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    assert!(
        (got - want).abs() <= abs + rel * want.abs(),
        "{what}: {got} vs PyTorch {want}"
    );
}

#[test]
fn dpo_matches_pytorch() {
    let pool = ThreadPool::new(2);
    let (_, sh, mut p) = tiny();
    let r = read_json("tiny_dpo_reference.json");
    let h = &r["hyper"];
    let pairs = reference_pairs(&r);
    let beta = num(h, "beta");
    let refs = dpo::logps(&pool, &sh, &p, None, &pairs).unwrap();
    for (i, (got, want)) in refs
        .iter()
        .zip(r["reference_logps"].as_array().unwrap())
        .enumerate()
    {
        close(
            &format!("pair {i} ref chosen"),
            got.chosen,
            want[0].as_f64().unwrap(),
            1e-5,
            1e-5,
        );
        close(
            &format!("pair {i} ref rejected"),
            got.rejected,
            want[1].as_f64().unwrap(),
            1e-5,
            1e-5,
        );
    }
    let steps = num(h, "steps") as u64;
    let (accum, micro) = (
        num(h, "grad_accum") as usize,
        num(h, "micro_batch") as usize,
    );
    let mut opt = AdamW::new(
        AdamWConfig {
            beta1: num(h, "beta1"),
            beta2: num(h, "beta2"),
            eps: num(h, "eps"),
            weight_decay: num(h, "weight_decay"),
        },
        &p,
    );
    let mut at = 0;
    for (step, want) in r["steps"].as_array().unwrap().iter().enumerate() {
        let lr = cosine_lr(num(h, "lr"), step as u64, num(h, "warmup") as u64, steps);
        let mut g = p.zeros_like();
        let mut m = dpo::DpoMetrics::default();
        let mut loss = 0.0;
        for _ in 0..accum {
            let (mb, mr) = (&pairs[at..at + micro], &refs[at..at + micro]);
            at += micro;
            let scale = 1.0 / (micro * accum) as f32;
            let b = dpo::forward_backward(
                &pool,
                &sh,
                &p,
                None,
                Grads::full(&mut g),
                mb,
                mr,
                beta,
                scale,
                PassOptions::default(),
            )
            .unwrap();
            loss += b.loss() / accum as f64;
            m.merge(&b);
        }
        if let Some(gs) = want.get("grads") {
            for (name, t) in g.tensors() {
                let Some(w) = gs.get(&name) else { continue };
                let w: Vec<f64> = w
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                let max = w.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
                assert!(max > 1e-3, "{name}: the reference gradient vanished");
                let worst = t
                    .iter()
                    .zip(&w)
                    .map(|(&a, &b)| (f64::from(a) - b).abs() / max)
                    .fold(0.0, f64::max);
                eprintln!(
                    "step {step} {name}: worst gradient difference {worst:.1e} of max {max:.3}"
                );
                assert!(
                    worst < 1e-4,
                    "step {step} {name}: gradient off by {worst:e} of its max"
                );
            }
        }
        let norm = clip_grad_norm(&mut g, num(h, "max_grad_norm"));
        opt.update(&mut p, &g, lr);
        eprintln!(
            "step {step}: loss {loss:.6} ({:.6}), acc {} ({}), margin {:.5} ({:.5}), grad norm {norm:.6} ({:.6})",
            num(want, "loss"),
            m.accuracy(),
            num(want, "accuracy"),
            m.margin(),
            num(want, "margin"),
            num(want, "grad_norm")
        );
        close("loss", loss, num(want, "loss"), 1e-4, 0.0);
        close("grad norm", norm, num(want, "grad_norm"), 1e-4, 0.0);
        close(
            "rewards/chosen",
            m.rewards_chosen(),
            num(want, "rewards_chosen"),
            1e-3,
            1e-4,
        );
        close(
            "rewards/rejected",
            m.rewards_rejected(),
            num(want, "rewards_rejected"),
            1e-3,
            1e-4,
        );
        close(
            "rewards/margins",
            m.margin(),
            num(want, "margin"),
            1e-3,
            1e-4,
        );
        close(
            "logps/chosen",
            m.logps_chosen(),
            num(want, "logps_chosen"),
            1e-5,
            1e-4,
        );
        close(
            "logps/rejected",
            m.logps_rejected(),
            num(want, "logps_rejected"),
            1e-5,
            1e-4,
        );
        assert_eq!(m.accuracy(), num(want, "accuracy"), "step {step}: accuracy");
        assert!((lr - num(want, "lr")).abs() <= 1e-12);
    }
}

/// A few pairs of the reference, trained on repeatedly.
fn small_set() -> Vec<PreferencePair> {
    let r = read_json("tiny_dpo_reference.json");
    reference_pairs(&r).into_iter().take(4).collect()
}

#[test]
fn dpo_lowers_its_loss_full_and_lora() {
    let pool = ThreadPool::new(2);
    let (cfg, sh, p0) = tiny();
    let pairs = small_set();
    let beta = 0.1;
    // Full fine-tuning: the reference is the starting weights.
    let refs = dpo::logps(&pool, &sh, &p0, None, &pairs).unwrap();
    let mut p = p0.clone();
    let mut opt = AdamW::new(AdamWConfig::default(), &p);
    let first = dpo::evaluate(&pool, &sh, &p, None, &pairs, &refs, beta).unwrap();
    assert!(
        (first.loss() - std::f64::consts::LN_2).abs() < 1e-6,
        "{}",
        first.loss()
    );
    for _ in 0..15 {
        let mut g = p.zeros_like();
        dpo::forward_backward(
            &pool,
            &sh,
            &p,
            None,
            Grads::full(&mut g),
            &pairs,
            &refs,
            beta,
            1.0 / pairs.len() as f32,
            PassOptions::default(),
        )
        .unwrap();
        clip_grad_norm(&mut g, 1.0);
        opt.update(&mut p, &g, 3e-3);
    }
    let last = dpo::evaluate(&pool, &sh, &p, None, &pairs, &refs, beta).unwrap();
    eprintln!(
        "full: loss {:.4} -> {:.4}, {}",
        first.loss(),
        last.loss(),
        last.to_json()
    );
    assert!(
        last.loss() < 0.45,
        "full fine-tuning DPO loss {}",
        last.loss()
    );
    assert_eq!(last.accuracy(), 1.0);
    assert!(last.margin() > 0.5);

    // LoRA: the reference is the base without the adapter, the same numbers as above.
    let mut lora = Lora::<f32>::new(
        &cfg,
        LoraConfig {
            dropout: 0.0,
            rank: 4,
            alpha: 8.0,
            targets: Target::ALL.to_vec(),
        },
        5,
    )
    .unwrap();
    let fresh = dpo::evaluate(&pool, &sh, &p0, Some(&lora), &pairs, &refs, beta).unwrap();
    assert_eq!(
        fresh.loss(),
        first.loss(),
        "a fresh adapter is the reference"
    );
    let mut opt = AdamW::new(AdamWConfig::default(), &lora);
    for _ in 0..15 {
        let mut g = lora.zeros_like();
        dpo::forward_backward(
            &pool,
            &sh,
            &p0,
            Some(&lora),
            Grads::lora(&mut g),
            &pairs,
            &refs,
            beta,
            1.0 / pairs.len() as f32,
            PassOptions {
                recompute: true,
                ..Default::default()
            },
        )
        .unwrap();
        clip_grad_norm(&mut g, 1.0);
        opt.update(&mut lora, &g, 1e-2);
    }
    let last = dpo::evaluate(&pool, &sh, &p0, Some(&lora), &pairs, &refs, beta).unwrap();
    eprintln!(
        "lora: loss {:.4} -> {:.4}, {}",
        first.loss(),
        last.loss(),
        last.to_json()
    );
    assert!(last.loss() < 0.5, "LoRA DPO loss {}", last.loss());
    assert_eq!(last.accuracy(), 1.0);
}

#[test]
fn dpo_bad_inputs_are_errors() {
    let pool = ThreadPool::new(1);
    let (_, sh, p) = tiny();
    let pairs = small_set();
    let refs = dpo::logps(&pool, &sh, &p, None, &pairs).unwrap();
    let mut g = p.zeros_like();
    let run = |g: &mut Params<f32>, pairs: &[PreferencePair], refs: &[PairLogps], beta: f64| {
        dpo::forward_backward(
            &pool,
            &sh,
            &p,
            None,
            Grads::full(g),
            pairs,
            refs,
            beta,
            1.0,
            PassOptions::default(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(run(&mut g, &pairs, &refs, 0.0).contains("beta"));
    assert!(run(&mut g, &pairs, &refs, f64::NAN).contains("beta"));
    assert!(run(&mut g, &pairs, &refs[..2], 0.1).contains("reference"));
    let mut empty = pairs.clone();
    empty[1].rejected.counted.fill(false);
    assert!(run(&mut g, &empty, &refs, 0.1).contains("empty"));
    let mut outside = pairs.clone();
    outside[3].chosen.targets[2] = 999;
    assert!(run(&mut g, &outside, &refs, 0.1).contains("vocabulary"));
    assert!(
        g.tensors().iter().all(|t| t.1.iter().all(|&x| x == 0.0)),
        "a refused batch adds no gradient"
    );
}

fn trainer_config(steps: u64) -> TrainConfig {
    TrainConfig {
        length: Length::Steps(steps),
        lr: 1e-2,
        warmup: 1,
        batch_size: 2,
        grad_accum: 2,
        max_grad_norm: 1.0,
        adamw: AdamWConfig::default(),
        seed: 7,
        eval_every: 0,
        checkpoint_every: 0,
        recompute: false,
    }
}

/// A DPO run through the [`Trainer`], full fine-tuning and LoRA, stopped after 3 steps
/// and resumed from its checkpoint: the reference log-probabilities are computed again
/// from the base, and the loss curve and TRL metrics repeat the uninterrupted run's.
#[test]
fn a_resumed_dpo_run_repeats_the_uninterrupted_one() {
    let pool = ThreadPool::new(2);
    let (cfg, sh, p) = tiny();
    // 6 pairs, 4 a step: the order crosses epochs.
    let pairs: Vec<PreferencePair> = small_set()
        .into_iter()
        .chain(small_set().into_iter().take(2))
        .collect();
    let data = || DpoData::new(&pool, &sh, &p, pairs.clone(), 0.1).unwrap();
    let lora = || {
        Lora::<f32>::new(
            &cfg,
            LoraConfig {
                dropout: 0.0,
                rank: 4,
                alpha: 8.0,
                targets: Target::ALL.to_vec(),
            },
            3,
        )
        .unwrap()
    };
    for use_lora in [false, true] {
        let make = || {
            if use_lora {
                Trainer::new_lora(trainer_config(6), sh.clone(), p.clone(), lora(), data()).unwrap()
            } else {
                Trainer::new(trainer_config(6), sh.clone(), p.clone(), data()).unwrap()
            }
        };
        let mut straight = make();
        let want: Vec<StepRecord> = (0..6).map(|_| straight.step(&pool).unwrap()).collect();
        let m = want[5].dpo.unwrap();
        eprintln!(
            "lora {use_lora}: loss {:.4} -> {:.4}, {}",
            want[0].loss,
            want[5].loss,
            m.to_json()
        );
        assert!((want[0].loss - std::f64::consts::LN_2).abs() < 1e-6);
        assert!(want[5].loss < want[0].loss, "the DPO loss did not fall");
        let dir = std::env::temp_dir().join(format!(
            "ferrollama-dpo-resume-{}-{use_lora}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut first = make();
        let mut got: Vec<StepRecord> = (0..3).map(|_| first.step(&pool).unwrap()).collect();
        first.save(&dir).unwrap();
        drop(first);
        let ck = checkpoint::load(&dir, &sh, p.clone(), AdamWConfig::default()).unwrap();
        let mut resumed = Trainer::resume(ck, sh.clone(), data()).unwrap();
        got.extend((0..3).map(|_| resumed.step(&pool).unwrap()));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.loss.to_bits(), w.loss.to_bits(), "step {}", w.step);
            assert_eq!(g.dpo, w.dpo, "step {}", w.step);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// QLoRA-style DPO: over a Q8_0 base kept as stored (`FrozenBase`), the reference
/// log-probabilities, the loss and the adapter's gradients are those of the same base
/// widened to f32 `Params`. Both run the same decoded weights in f32 and differ only in the
/// order of long sums; the tiny model's longest reduction is 512 (the vocabulary), so a
/// reordered sum is within 2 · 512 · 2⁻²⁴ ≈ 6e-5 relative. A misread block moves the
/// numbers by percents.
#[test]
fn dpo_over_a_stored_quantized_base_matches_the_f32_base() {
    use ferrollama_model::Weights;
    use ferrollama_model::gguf::GgufFile;
    use ferrollama_train::FrozenBase;
    use ferrollama_train::weights::params_from_weights;

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    let f = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&f).unwrap();
    let w = Weights::from_gguf(&f, &cfg).unwrap();
    let (base, divisors) = FrozenBase::from_weights(&w, &cfg).unwrap();
    let (p, _) = params_from_weights(&w, &cfg).unwrap();
    let mut sh = Shape::of(&cfg);
    sh.rope_divisors = divisors;
    let pool = ThreadPool::new(2);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut tok = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 500) as u32
            })
            .collect()
    };
    let pairs: Vec<PreferencePair> = (0..3)
        .map(|_| {
            let prompt = tok(9);
            PreferencePair {
                chosen: completion(&prompt, &tok(7)),
                rejected: completion(&prompt, &tok(6)),
            }
        })
        .collect();
    let refs_q = dpo::logps(&pool, &sh, &base, None, &pairs).unwrap();
    let refs_f = dpo::logps(&pool, &sh, &p, None, &pairs).unwrap();
    let rel = 2.0 * 512.0 * f64::from(f32::EPSILON) / 2.0;
    for (a, b) in refs_q.iter().zip(&refs_f) {
        close("reference chosen", a.chosen, b.chosen, rel, 0.0);
        close("reference rejected", a.rejected, b.rejected, rel, 0.0);
    }
    // An adapter with B ≠ 0, so the policy differs from the reference and dA ≠ 0.
    let mut lora = Lora::<f32>::new(
        &cfg,
        LoraConfig {
            dropout: 0.0,
            rank: 4,
            alpha: 8.0,
            targets: Target::ALL.to_vec(),
        },
        5,
    )
    .unwrap();
    let mut x = 1u64;
    for (_, t) in lora.tensors_mut() {
        for v in t.iter_mut().filter(|v| **v == 0.0) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
        }
    }
    let run = |frozen: bool| {
        let mut g = lora.zeros_like();
        let m = if frozen {
            dpo::forward_backward(
                &pool,
                &sh,
                &base,
                Some(&lora),
                Grads::lora(&mut g),
                &pairs,
                &refs_f,
                0.1,
                1.0 / 3.0,
                PassOptions::default(),
            )
        } else {
            dpo::forward_backward(
                &pool,
                &sh,
                &p,
                Some(&lora),
                Grads::lora(&mut g),
                &pairs,
                &refs_f,
                0.1,
                1.0 / 3.0,
                PassOptions::default(),
            )
        }
        .unwrap();
        (m, g)
    };
    let (mq, gq) = run(true);
    let (mf, gf) = run(false);
    assert!(
        (mf.loss() - std::f64::consts::LN_2).abs() > 1e-4,
        "the adapter changes nothing"
    );
    close("loss", mq.loss(), mf.loss(), rel, 0.0);
    for ((name, a), (_, b)) in gq.tensors().into_iter().zip(gf.tensors()) {
        let d: f64 = a
            .iter()
            .zip(b.iter())
            .map(|(&u, &v)| f64::from(u - v).powi(2))
            .sum::<f64>()
            .sqrt();
        let n: f64 = b.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        assert!(n > 0.0, "{name} has no gradient");
        assert!(d <= 1e-4 * n, "{name}: |Δ| {d:e} against |g| {n:e}");
    }
}
