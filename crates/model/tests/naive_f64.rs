//! The engine's forward pass against a naive f64 Llama written from Meta's `model.py`, on a
//! tiny seeded model with GQA and Llama 3.1 RoPE scaling, in F32 weights.
//!
//! The reference is deliberately plain: dense f64 matrices, explicit loops, interleaved
//! RoPE from the formula, full causal attention recomputed from scratch for every prefix.

use ferrollama_model::gguf::{Bytes, GgufFile, GgufWriter, Value};
use ferrollama_model::{KvCache, KvType, Llama, RopeScaling};
use ferrollama_tensor::{DType, ThreadPool};

struct Spec {
    dim: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    vocab: usize,
    theta: f64,
    eps: f64,
}

const SPEC: Spec = Spec {
    dim: 128,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    ffn: 96,
    vocab: 80,
    theta: 500_000.0,
    eps: 1e-5,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    fn mat(&mut self, rows: usize, cols: usize, scale: f64) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|_| (0..cols).map(|_| self.next() * scale).collect())
            .collect()
    }
}

struct NaiveLayer {
    attention_norm: Vec<f64>,
    wq: Vec<Vec<f64>>,
    wk: Vec<Vec<f64>>,
    wv: Vec<Vec<f64>>,
    wo: Vec<Vec<f64>>,
    ffn_norm: Vec<f64>,
    w1: Vec<Vec<f64>>,
    w2: Vec<Vec<f64>>,
    w3: Vec<Vec<f64>>,
}

struct Naive {
    emb: Vec<Vec<f64>>,
    layers: Vec<NaiveLayer>,
    norm: Vec<f64>,
    output: Vec<Vec<f64>>,
    divisors: Vec<f64>,
}

fn f32_round(m: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    m.into_iter()
        .map(|r| r.into_iter().map(|x| x as f32 as f64).collect())
        .collect()
}

fn build() -> (Naive, Vec<u8>) {
    let s = SPEC;
    let hd = s.dim / s.heads;
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let norm_vec = |rng: &mut Rng| -> Vec<f64> {
        (0..s.dim)
            .map(|_| (1.0 + 0.1 * rng.next()) as f32 as f64)
            .collect()
    };
    let scaling = RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16.0,
    };
    let divisors: Vec<f64> = scaling
        .freq_divisors(hd, s.theta as f32)
        .into_iter()
        .map(f64::from)
        .collect();
    let layers: Vec<NaiveLayer> = (0..s.layers)
        .map(|_| NaiveLayer {
            attention_norm: norm_vec(&mut rng),
            wq: f32_round(rng.mat(s.heads * hd, s.dim, 0.3)),
            wk: f32_round(rng.mat(s.kv_heads * hd, s.dim, 0.3)),
            wv: f32_round(rng.mat(s.kv_heads * hd, s.dim, 0.3)),
            wo: f32_round(rng.mat(s.dim, s.heads * hd, 0.2)),
            ffn_norm: norm_vec(&mut rng),
            w1: f32_round(rng.mat(s.ffn, s.dim, 0.2)),
            w2: f32_round(rng.mat(s.dim, s.ffn, 0.2)),
            w3: f32_round(rng.mat(s.ffn, s.dim, 0.2)),
        })
        .collect();
    let naive = Naive {
        emb: f32_round(rng.mat(s.vocab, s.dim, 1.0)),
        layers,
        norm: norm_vec(&mut rng),
        output: f32_round(rng.mat(s.vocab, s.dim, 0.3)),
        divisors,
    };

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.embedding_length", Value::U32(s.dim as u32));
    w.set("llama.block_count", Value::U32(s.layers as u32));
    w.set("llama.attention.head_count", Value::U32(s.heads as u32));
    w.set(
        "llama.attention.head_count_kv",
        Value::U32(s.kv_heads as u32),
    );
    w.set("llama.feed_forward_length", Value::U32(s.ffn as u32));
    w.set("llama.vocab_size", Value::U32(s.vocab as u32));
    w.set("llama.rope.freq_base", Value::F32(s.theta as f32));
    w.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(s.eps as f32),
    );
    w.set("llama.context_length", Value::U32(131_072));
    let bytes = |m: &[Vec<f64>]| -> Vec<u8> {
        m.iter()
            .flatten()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect()
    };
    let vbytes =
        |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect() };
    let mut add = |name: &str, m: &[Vec<f64>]| {
        w.add_tensor(name, &[m[0].len(), m.len()], DType::F32, bytes(m))
            .expect("tensor");
    };
    add("token_embd.weight", &naive.emb);
    add("output.weight", &naive.output);
    for (l, ly) in naive.layers.iter().enumerate() {
        add(&format!("blk.{l}.attn_q.weight"), &ly.wq);
        add(&format!("blk.{l}.attn_k.weight"), &ly.wk);
        add(&format!("blk.{l}.attn_v.weight"), &ly.wv);
        add(&format!("blk.{l}.attn_output.weight"), &ly.wo);
        add(&format!("blk.{l}.ffn_gate.weight"), &ly.w1);
        add(&format!("blk.{l}.ffn_down.weight"), &ly.w2);
        add(&format!("blk.{l}.ffn_up.weight"), &ly.w3);
    }
    for (l, ly) in naive.layers.iter().enumerate() {
        w.add_tensor(
            &format!("blk.{l}.attn_norm.weight"),
            &[s.dim],
            DType::F32,
            vbytes(&ly.attention_norm),
        )
        .expect("norm");
        w.add_tensor(
            &format!("blk.{l}.ffn_norm.weight"),
            &[s.dim],
            DType::F32,
            vbytes(&ly.ffn_norm),
        )
        .expect("norm");
    }
    w.add_tensor(
        "output_norm.weight",
        &[s.dim],
        DType::F32,
        vbytes(&naive.norm),
    )
    .expect("norm");
    let div: Vec<u8> = naive
        .divisors
        .iter()
        .flat_map(|&x| (x as f32).to_le_bytes())
        .collect();
    w.add_tensor("rope_freqs.weight", &[hd / 2], DType::F32, div)
        .expect("rope");
    (naive, w.to_bytes())
}

fn matvec(m: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    m.iter()
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

/// Meta's interleaved RoPE: pair (2i, 2i+1) rotated by pos * theta^(-2i/d) / divisor_i.
fn rope(v: &mut [f64], pos: usize, divisors: &[f64]) {
    let d = v.len();
    for i in 0..d / 2 {
        let freq = SPEC.theta.powf(-((2 * i) as f64) / d as f64) / divisors[i];
        let (c, s) = ((pos as f64 * freq).cos(), (pos as f64 * freq).sin());
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/// Logits after each token of `tokens`, recomputing everything for every prefix.
fn naive_forward(m: &Naive, tokens: &[u32]) -> Vec<Vec<f64>> {
    let s = SPEC;
    let hd = s.dim / s.heads;
    let n_rep = s.heads / s.kv_heads;
    let mut x: Vec<Vec<f64>> = tokens.iter().map(|&t| m.emb[t as usize].clone()).collect();
    for ly in &m.layers {
        let xn: Vec<Vec<f64>> = x
            .iter()
            .map(|r| rmsnorm(r, &ly.attention_norm, s.eps))
            .collect();
        let mut q: Vec<Vec<f64>> = xn.iter().map(|r| matvec(&ly.wq, r)).collect();
        let mut k: Vec<Vec<f64>> = xn.iter().map(|r| matvec(&ly.wk, r)).collect();
        let v: Vec<Vec<f64>> = xn.iter().map(|r| matvec(&ly.wv, r)).collect();
        for (p, (qr, kr)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
            qr.chunks_mut(hd).for_each(|h| rope(h, p, &m.divisors));
            kr.chunks_mut(hd).for_each(|h| rope(h, p, &m.divisors));
        }
        for i in 0..tokens.len() {
            let mut att = vec![0.0; s.heads * hd];
            for h in 0..s.heads {
                let kh = h / n_rep; // GQA: query head h reads KV head h / n_rep
                let qh = &q[i][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|t| {
                        qh.iter()
                            .zip(&k[t][kh * hd..(kh + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (t, w) in e.iter().enumerate() {
                    for d in 0..hd {
                        att[h * hd + d] += w / z * v[t][kh * hd + d];
                    }
                }
            }
            let o = matvec(&ly.wo, &att);
            x[i].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let hn = rmsnorm(&x[i], &ly.ffn_norm, s.eps);
            let g = matvec(&ly.w1, &hn);
            let u = matvec(&ly.w3, &hn);
            let hmid: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec(&ly.w2, &hmid);
            x[i].iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
    }
    x.iter()
        .map(|r| matvec(&m.output, &rmsnorm(r, &m.norm, s.eps)))
        .collect()
}

fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
    let range = want.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - want.iter().cloned().fold(f64::INFINITY, f64::min);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / range
}

#[test]
fn forward_matches_naive_f64_reference() {
    let (naive, bytes) = build();
    let file = GgufFile::parse(Bytes::Owned(bytes)).expect("gguf");
    let model = Llama::from_gguf(&file).expect("model");
    let tokens: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % SPEC.vocab as u32).collect();
    let want = naive_forward(&naive, &tokens);

    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        // All positions in one batch.
        let mut kv = KvCache::new(&model.config, 64, KvType::F16).expect("kv");
        let mut st = model.new_state(16, 64, pool.n_threads());
        let all = model
            .forward(&pool, &tokens, &mut kv, &mut st, true)
            .expect("forward")
            .to_vec();
        for (i, w) in want.iter().enumerate() {
            let e = max_rel_err(&all[i * SPEC.vocab..(i + 1) * SPEC.vocab], w);
            assert!(
                e < 2e-3,
                "batched, token {i}, threads {threads}: relative error {e}"
            );
        }
        // One token at a time through the cache gives the same logits.
        let mut kv = KvCache::new(&model.config, 64, KvType::F16).expect("kv");
        for (i, &t) in tokens.iter().enumerate() {
            let l = model
                .forward(&pool, &[t], &mut kv, &mut st, false)
                .expect("forward");
            let e = max_rel_err(l, &want[i]);
            assert!(e < 2e-3, "incremental, token {i}: relative error {e}");
        }
    }
}

#[test]
fn q8_kv_cache_stays_close() {
    let (naive, bytes) = build();
    let file = GgufFile::parse(Bytes::Owned(bytes)).expect("gguf");
    let model = Llama::from_gguf(&file).expect("model");
    let tokens: Vec<u32> = (0..10).map(|i| (i * 5 + 1) % SPEC.vocab as u32).collect();
    let want = naive_forward(&naive, &tokens);
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(&model.config, 32, KvType::Q8_0).expect("kv");
    let mut st = model.new_state(16, 32, pool.n_threads());
    let l = model
        .forward(&pool, &tokens, &mut kv, &mut st, false)
        .expect("forward");
    let e = max_rel_err(l, &want[tokens.len() - 1]);
    assert!(e < 2e-2, "relative error {e}");
}

#[test]
fn bad_inputs_are_errors() {
    let (_, bytes) = build();
    let file = GgufFile::parse(Bytes::Owned(bytes)).expect("gguf");
    let model = Llama::from_gguf(&file).expect("model");
    let pool = ThreadPool::new(1);
    let mut kv = KvCache::new(&model.config, 4, KvType::F16).expect("kv");
    let mut st = model.new_state(8, 4, 1);
    assert!(
        model
            .forward(&pool, &[SPEC.vocab as u32], &mut kv, &mut st, false)
            .is_err(),
        "token out of range"
    );
    assert!(
        model
            .forward(&pool, &[1, 2, 3, 4, 5], &mut kv, &mut st, false)
            .is_err(),
        "past the context"
    );
    assert!(
        model.forward(&pool, &[], &mut kv, &mut st, false).is_err(),
        "empty"
    );
    assert_eq!(kv.len, 0, "failed calls leave the cache as it was");
}

/// Three sequences of different lengths decoded in one batched call per step, each in
/// scattered cache blocks (as the server's paged cache hands them out), and a prefill chunk
/// of a fourth riding along: every row must equal the naive reference of its own sequence.
#[test]
fn batched_sequences_in_scattered_blocks_match_naive_reference() {
    use ferrollama_model::{KV_BLOCK, Logits, SeqChunk};
    let (naive, bytes) = build();
    let file = GgufFile::parse(Bytes::Owned(bytes)).expect("gguf");
    let model = Llama::from_gguf(&file).expect("model");
    let v = SPEC.vocab as u32;
    let prompts: Vec<Vec<u32>> = [5usize, 19, 33, 40]
        .iter()
        .enumerate()
        .map(|(s, &len)| {
            (0..len as u32)
                .map(|i| (i * 11 + 7 * s as u32 + 1) % v)
                .collect()
        })
        .collect();
    // Blocks interleaved between sequences: sequence s owns blocks s, s + 4, s + 8, ...
    let tables: Vec<Vec<u32>> = (0..4u32)
        .map(|s| (0..4).map(|k| s + 4 * k).collect())
        .collect();
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::with_blocks(&model.config, 16, KvType::F16).expect("kv");
    let mut st = model.new_state(64, 4 * KV_BLOCK, pool.n_threads());
    // Sequences 0..3: prompt minus its last 3 tokens as a prefill (no logits), then the
    // last 3 tokens one per step in a batch with each other; sequence 3 is prefilled in
    // chunks of 8 during those steps.
    let pre: Vec<SeqChunk> = (0..3)
        .map(|s| SeqChunk {
            tokens: &prompts[s][..prompts[s].len() - 3],
            pos0: 0,
            blocks: &tables[s],
            logits: Logits::None,
        })
        .collect();
    let out = model
        .forward_batch(&pool, &pre, &mut kv, &mut st)
        .expect("prefill");
    assert!(out.is_empty());
    let mut pos3 = 0;
    for step in 0..3 {
        let mut seqs: Vec<SeqChunk> = (0..3)
            .map(|s| {
                let p = prompts[s].len() - 3 + step;
                SeqChunk {
                    tokens: &prompts[s][p..p + 1],
                    pos0: p,
                    blocks: &tables[s],
                    logits: Logits::Last,
                }
            })
            .collect();
        seqs.insert(
            1,
            SeqChunk {
                tokens: &prompts[3][pos3..pos3 + 8],
                pos0: pos3,
                blocks: &tables[3],
                logits: Logits::All,
            },
        );
        let logits = model
            .forward_batch(&pool, &seqs, &mut kv, &mut st)
            .expect("step")
            .to_vec();
        assert_eq!(logits.len(), (3 + 8) * SPEC.vocab);
        let mut row = 0;
        for (k, s) in [0usize, 3, 1, 2].into_iter().enumerate() {
            let want = naive_forward(&naive, &prompts[s][..seqs[k].pos0 + seqs[k].tokens.len()]);
            let first = if s == 3 { pos3 } else { want.len() - 1 };
            for w in &want[first..] {
                let e = max_rel_err(&logits[row * SPEC.vocab..(row + 1) * SPEC.vocab], w);
                assert!(
                    e < 2e-3,
                    "step {step}, sequence {s}, row {row}: relative error {e}"
                );
                row += 1;
            }
        }
        pos3 += 8;
    }
    // A block outside the cache and a table too short for the positions are errors.
    let bad = [SeqChunk {
        tokens: &[1],
        pos0: 0,
        blocks: &[99],
        logits: Logits::Last,
    }];
    assert!(model.forward_batch(&pool, &bad, &mut kv, &mut st).is_err());
    let short = [SeqChunk {
        tokens: &[1],
        pos0: 16,
        blocks: &[0],
        logits: Logits::Last,
    }];
    assert!(
        model
            .forward_batch(&pool, &short, &mut kv, &mut st)
            .is_err()
    );
}
