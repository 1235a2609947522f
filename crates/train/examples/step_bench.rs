//! Time of one training step (forward + backward, f32, full fine-tuning gradients) of a
//! GGUF model on random tokens.
//!
//!     cargo run --release -p ferrollama-train --example step_bench -- MODEL.gguf [SEQ_LEN] [THREADS] [--recompute] [--lora RANK]
//!
//! `--lora RANK`: LoRA on all seven projections (alpha = 2 · rank), frozen base.

use std::time::Instant;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::weights::params_from_weights;
use ferrollama_train::{
    Lora, LoraConfig, ParamSet, PassOptions, Sequence, Shape, Target, forward_backward,
    forward_backward_lora,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: step_bench MODEL.gguf [SEQ_LEN] [THREADS] [--recompute]")?;
    let seq: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let threads: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let recompute = args.iter().any(|a| a == "--recompute");
    let rank: Option<usize> = args
        .iter()
        .position(|a| a == "--lora")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok());
    let f = GgufFile::open(std::path::Path::new(path))?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let w = Weights::from_gguf(&f, &cfg)?;
    let t0 = Instant::now();
    let (p, divisors) = params_from_weights(&w, &cfg)?;
    println!(
        "widened {} parameters to f32 in {:.2} s",
        p.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut sh = Shape::of(&cfg);
    sh.rope_divisors = divisors;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let tokens: Vec<u32> = (0..=seq)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % cfg.vocab_size as u64) as u32
        })
        .collect();
    let batch = [Sequence::causal(&tokens)];
    let pool = ThreadPool::new(threads);
    let opts = PassOptions { recompute };
    let scale = 1.0 / seq as f32;
    let lora = match rank {
        Some(r) => Some(Lora::<f32>::new(
            &cfg,
            LoraConfig {
                rank: r,
                alpha: 2.0 * r as f64,
                targets: Target::ALL.to_vec(),
            },
            7,
        )?),
        None => None,
    };
    let mut g = p.zeros_like();
    let mut lg = lora.as_ref().map(|l| l.zeros_like());
    for rep in 0..2 {
        let t = Instant::now();
        let loss = match (&lora, &mut lg) {
            (Some(l), Some(lg)) => {
                forward_backward_lora(&pool, &sh, &p, l, lg, &batch, scale, opts)?
            }
            _ => forward_backward(&pool, &sh, &p, &mut g, &batch, scale, opts)?,
        };
        let secs = t.elapsed().as_secs_f64();
        println!(
            "step {rep}: loss {:.4}, {:.2} s, {:.1} tokens/s ({threads} threads, seq {seq}, recompute {recompute}, {})",
            loss / seq as f32,
            secs,
            seq as f64 / secs,
            rank.map_or("full".to_string(), |r| format!("LoRA rank {r}"))
        );
    }
    Ok(())
}
