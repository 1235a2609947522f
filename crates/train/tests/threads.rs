//! The training pass splits its work over the thread pool (GEMM panels, element-wise
//! rows, weight-gradient columns) so that every output is computed by one thread in a
//! fixed order: the loss and every gradient have the same bits for any thread count.
//! The model here is large enough that every op really runs on several threads.

#![allow(clippy::unwrap_used)]

use ferrollama_model::{LlamaConfig, RopeScaling};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::{
    Lora, LoraConfig, ParamSet, Params, PassOptions, Sequence, Shape, Target, forward_backward,
    forward_backward_lora,
};

fn config() -> LlamaConfig {
    LlamaConfig {
        dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        rope_dims: 16,
        ffn_dim: 160,
        vocab_size: 300,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_seq_len: 256,
        rope_scaling: Some(RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        }),
    }
}

fn params(cfg: &LlamaConfig) -> Params<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut p = Params::<f32>::zeros(cfg, false);
    for (name, t) in p.tensors_mut() {
        for x in t.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let r = (s >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
            *x = if name.ends_with("norm.weight") {
                1.0 + 0.2 * r
            } else {
                0.2 * r
            };
        }
    }
    p
}

fn batch() -> Vec<Sequence> {
    let toks: Vec<u32> = (0..181u32).map(|i| (i * 37 + 11) % 300).collect();
    let mut s = Sequence::causal(&toks);
    s.counted[..20].fill(false);
    // Token ids repeat, so the embedding gradient adds two rows into one.
    vec![s]
}

fn bits(p: &impl ParamSet<f32>) -> Vec<Vec<u32>> {
    p.tensors()
        .into_iter()
        .map(|(_, t)| t.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn full_gradients_have_the_same_bits_for_any_thread_count() {
    let cfg = config();
    let sh = Shape::of(&cfg);
    let p = params(&cfg);
    let b = batch();
    let mut want = None;
    for threads in [1, 2, 3] {
        for recompute in [false, true] {
            let pool = ThreadPool::new(threads);
            let mut g = p.zeros_like();
            let opts = PassOptions {
                recompute,
                ..Default::default()
            };
            let loss = forward_backward(&pool, &sh, &p, &mut g, &b, 1.0 / 161.0, opts).unwrap();
            let got = (loss.to_bits(), bits(&g));
            match &want {
                None => want = Some(got),
                Some(w) => assert!(
                    *w == got,
                    "{threads} threads, recompute {recompute}: other bits than 1 thread"
                ),
            }
        }
    }
}

#[test]
fn lora_gradients_have_the_same_bits_for_any_thread_count() {
    let cfg = config();
    let sh = Shape::of(&cfg);
    let p = params(&cfg);
    let b = batch();
    let lc = LoraConfig {
        dropout: 0.0,
        rank: 4,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
    };
    let mut lora = Lora::<f32>::new(&cfg, lc, 3).unwrap();
    // B starts at zero; make it non-zero so that every path carries a gradient.
    for (_, t) in lora.tensors_mut() {
        for (i, x) in t.iter_mut().enumerate() {
            if *x == 0.0 {
                *x = ((i % 7) as f32 - 3.0) * 0.01;
            }
        }
    }
    let mut want = None;
    for threads in [1, 2, 3] {
        let pool = ThreadPool::new(threads);
        let mut g = lora.zeros_like();
        let opts = PassOptions::default();
        let loss =
            forward_backward_lora(&pool, &sh, &p, &lora, &mut g, &b, 1.0 / 161.0, opts).unwrap();
        let got = (loss.to_bits(), bits(&g));
        match &want {
            None => want = Some(got),
            Some(w) => assert!(*w == got, "{threads} threads: other bits than 1 thread"),
        }
    }
}
