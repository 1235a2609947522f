//! LoRA adapters at inference on the real SmolLM2-135M-Instruct:
//! - the engine's logits with an adapter (per-row low-rank update on the side) equal the
//!   logits of the model with the adapter merged into its weights (`Adapter::merge`);
//! - a batch mixing the base and two adapters gives each row what it gets alone, in the
//!   forward pass and through the batching engine (greedy tokens).
//!
//! The adapter is seeded random with `B` nonzero (a fresh adapter's `B = 0` would make
//! every comparison trivially pass), scaled so it visibly changes the logits.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ferrollama_engine::scheduler::{Engine, EngineConfig, Event, SeqRequest};
use ferrollama_engine::{GenerateParams, Lora, Model, SamplerConfig, Session, generate};
use ferrollama_model::{Adapter, KvCache, KvType, Llama, LlamaConfig, LoraPair, Proj, Tensor};
use ferrollama_tensor::{DType, ThreadPool};

fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_SMOLLM2") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("FERROLLAMA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("ferrollama")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/ferrollama")))
        .unwrap_or_default();
    cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        let p = model_path();
        Arc::new(Model::load(&p).unwrap_or_else(|e| {
            panic!("{e}: SmolLM2 is needed at {}; run ./scripts/test (it fetches it) or `cargo run -- fetch smollm2`", p.display())
        }))
    })
    .clone()
}

/// A seeded random adapter on `targets`: A and B uniform in ±1/√fan-in (splitmix64), so
/// `(x Aᵀ) Bᵀ` has about the size of `x`; `alpha` sets how strongly it moves the logits.
pub fn random_adapter(
    cfg: &LlamaConfig,
    rank: usize,
    alpha: f64,
    targets: &[Proj],
    seed: u64,
) -> Adapter {
    let mut s = seed;
    let mut uniform = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let layers = (0..cfg.n_layers)
        .map(|_| {
            std::array::from_fn(|i| {
                let p = Proj::ALL[i];
                targets.contains(&p).then(|| {
                    let (inp, out) = p.dims(cfg);
                    let a = (0..rank * inp)
                        .map(|_| (uniform() / (inp as f64).sqrt()) as f32)
                        .collect();
                    let b = (0..out * rank)
                        .map(|_| (uniform() / (rank as f64).sqrt()) as f32)
                        .collect();
                    LoraPair::new(a, b, rank, inp, out).expect("pair")
                })
            })
        })
        .collect();
    Adapter {
        rank,
        alpha,
        scale: (alpha / rank as f64) as f32,
        layers,
    }
}

/// The model with every matrix dequantized to F32, so the adapter path and the merged path
/// both multiply in f32 (a quantized base would add activation-quantization error to one
/// side only: the merged weights are F32, the base's dot products run on 8-bit activations).
fn f32_base(m: &Model) -> Llama {
    let mut w = m.llama.weights.clone();
    let f32t = |t: &Tensor| {
        let v = t.to_f32().expect("dequantize");
        Tensor::owned(
            DType::F32,
            t.rows,
            t.cols,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .expect("tensor")
    };
    for l in &mut w.layers {
        for t in [
            &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w1, &mut l.w2, &mut l.w3,
        ] {
            *t = f32t(t);
        }
    }
    w.output = f32t(&w.output);
    w.pack().expect("pack");
    Llama {
        config: m.llama.config.clone(),
        weights: w,
    }
}

/// Every position's logits of `tokens` (one call).
fn logits(llama: &Llama, tokens: &[u32], adapter: Option<&Adapter>) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&llama.config, 256, KvType::F16).expect("kv");
    let mut st = llama.new_state(tokens.len(), 256, 2);
    llama
        .forward_lora(&pool, tokens, &mut kv, &mut st, true, adapter)
        .expect("forward")
        .to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax_rows(l: &[f32], vocab: usize) -> Vec<usize> {
    l.chunks(vocab)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0
        })
        .collect()
}

/// `base` with `adapter` merged in plain f32 arithmetic (the rank sum accumulated in f32),
/// unlike `Adapter::merge` (f64, one rounding): the two differ by f32 rounding of the
/// merged weights only.
fn merge_f32(cfg: &LlamaConfig, base: &Llama, adapter: &Adapter) -> Llama {
    let mut w = base.weights.clone();
    let r = adapter.rank;
    for (l, layer) in w.layers.iter_mut().enumerate() {
        for p in Proj::ALL {
            let Some(pair) = adapter.pair(l, p) else {
                continue;
            };
            let (inp, out) = p.dims(cfg);
            let t = match p {
                Proj::Q => &mut layer.wq,
                Proj::K => &mut layer.wk,
                Proj::V => &mut layer.wv,
                Proj::O => &mut layer.wo,
                Proj::Gate => &mut layer.w1,
                Proj::Up => &mut layer.w3,
                Proj::Down => &mut layer.w2,
            };
            let mut m = t.to_f32().unwrap();
            for o in 0..out {
                for i in 0..inp {
                    let mut d = 0f32;
                    for j in 0..r {
                        d += pair.b[o * r + j] * pair.a[j * inp + i];
                    }
                    m[o * inp + i] += adapter.scale * d;
                }
            }
            *t = Tensor::owned(
                DType::F32,
                out,
                inp,
                m.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
            .unwrap();
        }
    }
    w.pack().unwrap();
    Llama {
        config: cfg.clone(),
        weights: w,
    }
}

/// Adapter applied on the side == adapter merged into the weights.
///
/// Tolerance: both sides compute the same real numbers in f32, in a different order:
/// `x·W + s·(x·Aᵀ)·Bᵀ` against `x·(W + s·B·A)` with the merged weight rounded to f32. That
/// is, up to rounding, the model evaluated with weights perturbed by about one f32 ulp —
/// which this network (30 layers, with a strong random adapter) amplifies into the logits
/// by some factor we do not know a priori. So the factor is measured: the same merged model
/// with its weights rounded differently (merge accumulated in f32 instead of f64: a few
/// ulps apart) gives the noise floor `floor`; the adapter path must agree with the merged
/// model within 4 × floor + 1e-4. The adapter itself moves the logits by far more
/// (checked, so the test can fail).
#[test]
fn adapter_on_the_side_equals_merged_weights() {
    let m = model();
    let cfg = m.llama.config.clone();
    let base = f32_base(&m);
    let adapter = random_adapter(&cfg, 8, 16.0, &Proj::ALL, 42);
    let merged = Llama {
        config: cfg.clone(),
        weights: {
            let mut w = adapter.merge(&cfg, &base.weights).expect("merge");
            w.pack().expect("pack");
            w
        },
    };
    let merged32 = merge_f32(&cfg, &base, &adapter);
    let tokens = m.encode(
        "The capital of France is Paris, and the capital of",
        true,
        false,
    );
    let vocab = cfg.vocab_size;
    let side = logits(&base, &tokens, Some(&adapter));
    let folded = logits(&merged, &tokens, None);
    let folded32 = logits(&merged32, &tokens, None);
    let plain = logits(&base, &tokens, None);

    let floor = max_abs_diff(&folded, &folded32);
    let diff = max_abs_diff(&side, &folded);
    let effect = max_abs_diff(&side, &plain);
    let size = folded.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let tol = 4.0 * floor + 1e-4;
    eprintln!(
        "lora vs merged: max |Δlogit| = {diff:e} (tolerance {tol:e}; rounding floor {floor:e}; largest |logit| {size}); adapter effect {effect}"
    );
    assert!(
        effect > 1.0,
        "the adapter must change the logits (moved {effect})"
    );
    assert!(floor > 0.0, "the two merges must differ in rounding");
    assert!(
        diff <= tol,
        "adapter vs merged logits differ by {diff} > {tol}"
    );
    assert_eq!(argmax_rows(&side, vocab), argmax_rows(&folded, vocab));
}

/// Base, adapter 1 and adapter 2 in one batched call: each sequence's logits are exactly
/// its logits alone (each row's update depends on its row only).
#[test]
fn mixed_batch_rows_equal_their_runs_alone() {
    let m = model();
    let cfg = m.llama.config.clone();
    let a1 = random_adapter(&cfg, 8, 16.0, &[Proj::Q, Proj::V, Proj::O], 1);
    let a2 = random_adapter(&cfg, 4, 8.0, &Proj::ALL, 2);
    let prompts = [
        m.encode("Once upon a time", true, false),
        m.encode("The quick brown fox jumps", true, false),
        m.encode("def fibonacci(n):", true, false),
    ];
    let adapters = [None, Some(&a1), Some(&a2)];
    let llama = &m.llama;
    let vocab = cfg.vocab_size;
    // Alone: last-token logits.
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .zip(adapters)
        .map(|(p, a)| {
            let all = logits(llama, p, a);
            all[all.len() - vocab..].to_vec()
        })
        .collect();
    // Together: one call, disjoint cache blocks per sequence.
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::with_blocks(&cfg, 12, KvType::F16).expect("kv");
    let mut st = llama.new_state(64, 256, 2);
    let blocks: Vec<Vec<u32>> = (0..3u32)
        .map(|i| vec![4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3])
        .collect();
    let seqs: Vec<ferrollama_model::SeqChunk<'_>> = prompts
        .iter()
        .zip(&blocks)
        .map(|(p, b)| ferrollama_model::SeqChunk {
            tokens: p,
            pos0: 0,
            blocks: b,
            logits: ferrollama_model::Logits::Last,
        })
        .collect();
    let together = llama
        .forward_batch_lora(&pool, &seqs, &adapters, &mut kv, &mut st)
        .expect("batch")
        .to_vec();
    for (i, want) in alone.iter().enumerate() {
        let got = &together[i * vocab..(i + 1) * vocab];
        let d = max_abs_diff(got, want);
        eprintln!("sequence {i}: batched vs alone max |Δlogit| = {d:e}");
        assert!(
            d <= 1e-4,
            "sequence {i}: batched logits differ from alone by {d}"
        );
        assert_eq!(argmax_rows(got, vocab), argmax_rows(want, vocab));
    }
    // The adapter really changes this row (else the comparison above proves little).
    let with_a1 = logits(llama, &prompts[0], Some(&a1));
    let moved = max_abs_diff(&alone[0], &with_a1[with_a1.len() - vocab..]);
    assert!(
        moved > 0.5,
        "adapter one moved the base's logits by only {moved}"
    );
}

/// Through the batching engine: base and two adapters running at once produce each the
/// greedy tokens the one-sequence path gives with the same adapter; an adapter is shared
/// by two requests; prefix-cache blocks are never shared across adapters (the same prompt
/// runs under all three).
#[test]
fn engine_batches_base_and_adapters_like_alone() {
    let m = model();
    let cfg = m.llama.config.clone();
    let l1 = Arc::new(Lora::new(
        "one",
        "mem",
        random_adapter(&cfg, 8, 16.0, &Proj::ALL, 7),
    ));
    let l2 = Arc::new(Lora::new(
        "two",
        "mem",
        random_adapter(&cfg, 4, 8.0, &[Proj::Q, Proj::K, Proj::Down], 8),
    ));
    // 40 tokens: two full 16-token blocks that the prefix cache would name.
    let shared = m.encode(
        "In a small village by the sea there lived an old fisherman who every morning, long \
         before the sun rose over the hills, went out in his little wooden boat to cast his \
         nets, and",
        true,
        false,
    );
    assert!(shared.len() >= 33, "{}", shared.len());
    let cases: Vec<(Vec<u32>, Option<Arc<Lora>>)> = vec![
        (shared.clone(), None),
        (shared.clone(), Some(l1.clone())),
        (shared.clone(), Some(l2.clone())),
        (
            m.encode("My favourite colour is", true, false),
            Some(l1.clone()),
        ),
    ];
    let n_gen = 12;
    let want: Vec<Vec<u32>> = cases
        .iter()
        .map(|(p, l)| {
            let mut s = Session::new(&m, 256, 2, 64, KvType::F16).expect("session");
            s.set_adapter(l.as_ref().map(|l| Arc::new(l.adapter.clone())));
            let params = GenerateParams {
                max_tokens: n_gen,
                sampler: SamplerConfig::greedy(),
                stop: Vec::new(),
            };
            generate(&m, &mut s, p, &params, &mut |_| {})
                .expect("generate")
                .tokens
        })
        .collect();
    assert_ne!(want[0], want[1], "adapter one changes the continuation");
    assert_ne!(want[0], want[2], "adapter two changes the continuation");
    let engine = Engine::start(
        vec![m.clone()],
        EngineConfig {
            threads: 2,
            step_tokens: 64,
            max_running: 8,
            max_queue: 16,
            kv_positions: 2048,
            ctx: 256,
            kv_type: KvType::F16,
        },
    )
    .expect("engine");
    // Once alone first (fills the prefix cache with the base's blocks), then all at once.
    for round in 0..2 {
        let rxs: Vec<_> = cases
            .iter()
            .map(|(p, l)| {
                engine
                    .submit(SeqRequest {
                        model: 0,
                        prompt: p.clone(),
                        max_tokens: n_gen,
                        sampler: SamplerConfig::greedy(),
                        stop: Vec::new(),
                        ignore_eos: false,
                        logprobs: None,
                        prompt_logprobs: None,
                        constraint: None,
                        watch: Vec::new(),
                        deadline: None,
                        lora: l.clone(),
                    })
                    .expect("submit")
            })
            .collect();
        for (i, mut rx) in rxs.into_iter().enumerate() {
            let mut toks = Vec::new();
            loop {
                match rx.blocking_recv() {
                    Some(Event::Token { id, .. }) => toks.push(id),
                    Some(Event::Done(_)) => break,
                    Some(Event::Error(e)) => panic!("engine error: {e}"),
                    None => panic!("engine dropped the sequence"),
                }
            }
            assert_eq!(toks, want[i], "round {round}, case {i}");
        }
    }
    engine.shutdown();
}
