//! Distillation from logits on the tiny Llama: the teacher's top-k from the inference
//! forward pass (`ferrollama_model::Llama`) agrees with the training pass's logits, a
//! student trained on a teacher's soft targets lowers its KL, and a teacher with another
//! vocabulary is refused.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrollama_model::{Llama, LlamaConfig, RopeScaling};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::distill::{self, SoftTargets, Teacher};
use ferrollama_train::export::to_weights;
use ferrollama_train::weights::load_params;
use ferrollama_train::{
    AdamW, AdamWConfig, Grads, Item, Objective, Params, PassOptions, Sequence, Shape,
    clip_grad_norm, pass,
};
use serde_json::Value;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/train")
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap()
}

/// The tiny model of `make_reference.py`, its weights, and its training sequences.
fn tiny() -> (LlamaConfig, Params<f32>, Vec<Sequence>) {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("tiny_reference.json")).unwrap(),
    )
    .unwrap();
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
    let p = load_params(&testdata().join("tiny_init.safetensors"), &cfg).unwrap();
    let seqs = r["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let toks: Vec<u32> = s
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            Sequence::causal(&toks)
        })
        .collect();
    (cfg, p, seqs)
}

fn engine_model(cfg: &LlamaConfig, p: &Params<f32>) -> Llama {
    // The engine takes Llama 3.1's RoPE scaling as frequency divisors, as a GGUF holds them.
    let divisors = cfg
        .rope_scaling
        .map(|s| s.freq_divisors(cfg.rope_dims, cfg.rope_theta));
    let mut weights = to_weights(p, cfg, divisors).unwrap();
    weights.pack().unwrap();
    Llama {
        config: cfg.clone(),
        weights,
    }
}

/// The training pass's logits, read back from its log-softmax (one pass per id).
fn train_logits(pool: &ThreadPool, sh: &Shape, p: &Params<f32>, s: &Sequence) -> Vec<f32> {
    let (t, v) = (s.inputs.len(), sh.vocab);
    let mut out = vec![0.0f32; t * v];
    for id in 0..v {
        let all = Sequence {
            inputs: s.inputs.clone(),
            targets: vec![id as u32; t],
            counted: vec![true; t],
        };
        for pos in 0..t {
            let mut one = all.clone();
            one.counted = (0..t).map(|i| i == pos).collect();
            out[pos * v + id] = -ferrollama_train::loss(pool, sh, p, &[one]).unwrap();
        }
    }
    out
}

#[test]
fn the_engine_teacher_gives_the_training_pass_distribution() {
    let pool = ThreadPool::new(2);
    let (cfg, p, seqs) = tiny();
    let sh = Shape::of(&cfg);
    let mut teacher = Teacher::new(engine_model(&cfg, &p), 32, 2, 5, 2.0).unwrap();
    teacher.check_student(cfg.vocab_size).unwrap();
    let s = &seqs[0];
    let got = teacher.targets(&pool, &s.inputs).unwrap();
    got.check(s.inputs.len(), cfg.vocab_size).unwrap();
    let want = SoftTargets::from_logits(&train_logits(&pool, &sh, &p, s), cfg.vocab_size, 5, 2.0);
    assert_eq!(got.k, 5);
    let worst = got
        .probs
        .iter()
        .zip(&want.probs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("teacher vs training pass: worst probability difference {worst:.1e}");
    assert!(worst < 1e-3, "{worst}");
    // Same ids wherever the teacher's probabilities are not near-ties.
    let mut same = 0;
    for (i, (a, b)) in got.ids.iter().zip(&want.ids).enumerate() {
        same += usize::from(a == b);
        let gap = if i % 5 + 1 < 5 {
            got.probs[i] - got.probs[i + 1]
        } else {
            1.0
        };
        assert!(a == b || gap < 2e-3, "position {}: id {a} vs {b}", i / 5);
    }
    assert!(
        same * 10 >= got.ids.len() * 9,
        "{same} of {}",
        got.ids.len()
    );
    // Each position's probabilities are a distribution over the top k, best first.
    for row in got.probs.chunks_exact(5) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(row.windows(2).all(|w| w[0] >= w[1]));
    }
}

#[test]
fn distillation_lowers_the_kl_to_the_teacher() {
    let pool = ThreadPool::new(2);
    let (cfg, teacher_p, seqs) = tiny();
    let sh = Shape::of(&cfg);
    let (k, temperature) = (8, 2.0);
    let mut teacher = Teacher::new(engine_model(&cfg, &teacher_p), 32, 2, k, temperature).unwrap();
    // The student: the teacher's weights shrunk and shifted, far from it to start with.
    let mut student = teacher_p.clone();
    for (i, (_, t)) in student.tensors_mut().into_iter().enumerate() {
        for (j, x) in t.iter_mut().enumerate() {
            *x = 0.5 * *x + 0.05 * (((i * 31 + j * 7) % 13) as f32 - 6.0) / 6.0;
        }
    }
    let data = &seqs[..8];
    let targets: Vec<SoftTargets> = data
        .iter()
        .map(|s| teacher.targets(&pool, &s.inputs).unwrap())
        .collect();
    let count: usize = data.iter().map(Sequence::n_counted).sum();
    let items = |scale| -> Vec<Item<'_, f32>> {
        data.iter()
            .zip(&targets)
            .map(|(s, t)| Item {
                seq: s,
                objective: Objective::Distill {
                    teacher: t,
                    temperature,
                },
                scale,
            })
            .collect()
    };
    let kl = |p: &Params<f32>| -> f64 {
        let l = pass(
            &pool,
            &sh,
            p,
            None,
            Grads::none(),
            &items(1.0),
            PassOptions::default(),
        );
        l.unwrap().iter().map(|&x| f64::from(x)).sum::<f64>() / count as f64
    };
    let first = kl(&student);
    let mut opt = AdamW::new(AdamWConfig::default(), &student);
    for _ in 0..30 {
        let mut g = student.zeros_like();
        // The teacher's targets on the fly, as a training run computes them.
        distill::forward_backward(
            &pool,
            &sh,
            &student,
            None,
            Grads::full(&mut g),
            &mut teacher,
            data,
            1.0 / count as f32,
            PassOptions::default(),
        )
        .unwrap();
        clip_grad_norm(&mut g, 1.0);
        opt.update(&mut student, &g, 3e-2);
    }
    let last = kl(&student);
    eprintln!("τ² KL per token: {first:.4} -> {last:.4}");
    assert!(
        first > 0.5,
        "the student starts away from the teacher ({first})"
    );
    assert!(last < first / 3.0, "{first} -> {last}");
    // Over the top k the loss's minimum is not the teacher itself (the renormalized
    // targets ask for all the mass on the k); over the whole vocabulary it is, at 0.
    let mut full = Teacher::new(
        engine_model(&cfg, &teacher_p),
        32,
        2,
        cfg.vocab_size,
        temperature,
    )
    .unwrap();
    let whole: Vec<SoftTargets> = data
        .iter()
        .map(|s| full.targets(&pool, &s.inputs).unwrap())
        .collect();
    let self_items: Vec<Item<'_, f32>> = data
        .iter()
        .zip(&whole)
        .map(|(s, t)| Item {
            seq: s,
            objective: Objective::Distill {
                teacher: t,
                temperature,
            },
            scale: 1.0,
        })
        .collect();
    let own = pass(
        &pool,
        &sh,
        &teacher_p,
        None,
        Grads::none(),
        &self_items,
        PassOptions::default(),
    )
    .unwrap();
    let own = own.iter().map(|&x| f64::from(x)).sum::<f64>() / count as f64;
    eprintln!("the teacher's τ² KL to itself over the whole vocabulary: {own:.2e}");
    assert!(own.abs() < 1e-3, "{own}");
    // With the mass outside the top k kept as a tail, the teacher is the minimum again.
    let mut tailed = Teacher::new(engine_model(&cfg, &teacher_p), 32, 2, k, temperature).unwrap();
    tailed.tail = true;
    let tails: Vec<SoftTargets> = data
        .iter()
        .map(|s| tailed.targets(&pool, &s.inputs).unwrap())
        .collect();
    let tail_items: Vec<Item<'_, f32>> = data
        .iter()
        .zip(&tails)
        .map(|(s, t)| Item {
            seq: s,
            objective: Objective::Distill {
                teacher: t,
                temperature,
            },
            scale: 1.0,
        })
        .collect();
    let own_k = pass(
        &pool,
        &sh,
        &teacher_p,
        None,
        Grads::none(),
        &tail_items,
        PassOptions::default(),
    )
    .unwrap();
    let own_k = own_k.iter().map(|&x| f64::from(x)).sum::<f64>() / count as f64;
    eprintln!("the teacher's τ² KL to itself over its top {k} and a tail: {own_k:.2e}");
    assert!(own_k.abs() < 1e-3, "{own_k}");
}

#[test]
fn a_teacher_with_another_vocabulary_is_refused() {
    let pool = ThreadPool::new(1);
    let (cfg, p, seqs) = tiny();
    let mut teacher = Teacher::new(engine_model(&cfg, &p), 32, 1, 4, 1.0).unwrap();
    let e = teacher
        .check_student(cfg.vocab_size + 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vocabulary") && e.contains("sequences"), "{e}");
    // Targets whose ids a smaller student does not have are refused by the pass too.
    let t = teacher.targets(&pool, &seqs[0].inputs).unwrap();
    assert!(
        t.check(seqs[0].inputs.len(), 8)
            .unwrap_err()
            .to_string()
            .contains("vocabulary")
    );
    assert!(t.check(seqs[0].inputs.len() + 1, cfg.vocab_size).is_err());
    assert!(Teacher::new(engine_model(&cfg, &p), 32, 1, 0, 1.0).is_err());
    assert!(Teacher::new(engine_model(&cfg, &p), 32, 1, 4, 0.0).is_err());
    let long = vec![1u32; 40];
    assert!(teacher.targets(&pool, &long).is_err());
}

#[test]
fn sequence_distillation_prompts_come_from_every_prompted_shape() {
    use ferrollama_train::data::{Prompt, parse_jsonl, prompts};
    let raw = parse_jsonl(
        "c.jsonl",
        "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n{\"prompt\": \"3+3=\", \"completion\": \"6\"}\n",
    )
    .unwrap();
    let got = prompts("c.jsonl", &raw.records).unwrap();
    assert_eq!(
        got,
        vec![
            (1, Prompt::Raw("2+2=".into())),
            (2, Prompt::Raw("3+3=".into()))
        ]
    );
    let pref = parse_jsonl(
        "p.jsonl",
        "{\"prompt\": \"Say hi\", \"chosen\": \"hi\", \"rejected\": \"no\"}\n",
    )
    .unwrap();
    assert_eq!(
        prompts("p.jsonl", &pref.records).unwrap(),
        vec![(1, Prompt::Raw("Say hi".into()))]
    );
    // A chat loses its final assistant reply: the teacher writes that one.
    let chat = parse_jsonl(
        "m.jsonl",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n",
    )
    .unwrap();
    let got = prompts("m.jsonl", &chat.records).unwrap();
    let Prompt::Chat(c) = &got[0].1 else {
        panic!("{got:?}")
    };
    assert_eq!(c.messages.len(), 2);
    let text = parse_jsonl("t.jsonl", "{\"text\": \"a document\"}\n").unwrap();
    let e = prompts("t.jsonl", &text.records).unwrap_err().to_string();
    assert!(
        e.contains("no prompt") && e.contains("--distill-mode logits"),
        "{e}"
    );
}
