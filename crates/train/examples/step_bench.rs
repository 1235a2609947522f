//! Training steps of a GGUF model on fixed tokens: forward + backward + AdamW, f32,
//! full fine-tuning or LoRA on all seven projections. `bench/train.py` runs it next to
//! PyTorch + PEFT; the last line of output is JSON.
//!
//!     cargo build --release -p ferrollama-train --example step_bench
//!     target/release/examples/step_bench MODEL.gguf [--seq 512] [--threads 2] [--steps 3]
//!         [--lora RANK] [--recompute] [--tokens FILE]
//!
//! `--tokens FILE`: whitespace-separated token ids (at least seq + 1), else seeded random
//! ones. `--lora RANK`: alpha = 2 · rank, frozen base.

use std::time::Instant;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::ThreadPool;
use ferrollama_train::weights::params_from_weights;
use ferrollama_train::{
    AdamW, AdamWConfig, Lora, LoraConfig, ParamSet, PassOptions, Sequence, Shape, Target,
    forward_backward, forward_backward_lora,
};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// Peak resident memory of this process (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn zero<P: ParamSet<f32>>(g: &mut P) {
    for (_, t) in g.tensors_mut() {
        t.fill(0.0);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: step_bench MODEL.gguf [--seq N] [--threads N] [--steps N] [--lora RANK] [--recompute] [--tokens FILE]")?;
    let seq: usize = arg(&args, "--seq").unwrap_or(512);
    let threads: usize = arg(&args, "--threads").unwrap_or(2);
    let steps: usize = arg(&args, "--steps").unwrap_or(3);
    let rank: Option<usize> = arg(&args, "--lora");
    let recompute = args.iter().any(|a| a == "--recompute");
    let f = GgufFile::open(std::path::Path::new(path))?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let w = Weights::from_gguf(&f, &cfg)?;
    let (mut p, divisors) = params_from_weights(&w, &cfg)?;
    drop(w);
    drop(f);
    let mut sh = Shape::of(&cfg);
    sh.rope_divisors = divisors;
    let tokens: Vec<u32> = match arg::<String>(&args, "--tokens") {
        Some(file) => std::fs::read_to_string(file)?
            .split_whitespace()
            .map(|t| t.parse::<u32>())
            .collect::<Result<_, _>>()?,
        None => {
            let mut s = 0x2545_f491_4f6c_dd1du64;
            (0..=seq)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % cfg.vocab_size as u64) as u32
                })
                .collect()
        }
    };
    if tokens.len() < seq + 1 {
        return Err(format!("{} tokens given, {} needed", tokens.len(), seq + 1).into());
    }
    let batch = [Sequence::causal(&tokens[..=seq])];
    let pool = ThreadPool::new(threads);
    let opts = PassOptions { recompute };
    let scale = 1.0 / seq as f32;
    let adamw = AdamWConfig::default();
    let lr = 1e-4;
    let mut times = Vec::new();
    let mut losses = Vec::new();
    match rank {
        Some(r) => {
            let lc = LoraConfig {
                rank: r,
                alpha: 2.0 * r as f64,
                targets: Target::ALL.to_vec(),
            };
            let mut lora = Lora::<f32>::new(&cfg, lc, 7)?;
            let mut opt = AdamW::new(adamw, &lora);
            // The gradients live across steps and are zeroed in place, as in `Trainer`.
            let mut g = lora.zeros_like();
            for _ in 0..steps {
                let t = Instant::now();
                zero(&mut g);
                let loss =
                    forward_backward_lora(&pool, &sh, &p, &lora, &mut g, &batch, scale, opts)?;
                opt.update_on(&pool, &mut lora, &g, lr);
                times.push(t.elapsed().as_secs_f64());
                losses.push(f64::from(loss) / seq as f64);
            }
        }
        None => {
            let mut opt = AdamW::new(adamw, &p);
            let mut g = p.zeros_like();
            for _ in 0..steps {
                let t = Instant::now();
                zero(&mut g);
                let loss = forward_backward(&pool, &sh, &p, &mut g, &batch, scale, opts)?;
                opt.update_on(&pool, &mut p, &g, lr);
                times.push(t.elapsed().as_secs_f64());
                losses.push(f64::from(loss) / seq as f64);
            }
        }
    }
    for (i, (t, l)) in times.iter().zip(&losses).enumerate() {
        eprintln!(
            "step {i}: loss {l:.4}, {t:.2} s, {:.1} tokens/s",
            seq as f64 / t
        );
    }
    // Steps after the first (which pays first-touch page faults), best of the rest.
    let best = times.iter().skip(1).copied().fold(f64::INFINITY, f64::min);
    let best = if best.is_finite() { best } else { times[0] };
    // Sections the pool ran on its caller alone because other processes took our cores
    // (see `ThreadPool`): a high share means the 2-thread number is really 1 thread's.
    let ps = pool.stats();
    println!(
        "{{\"method\": \"{}\", \"threads\": {threads}, \"seq\": {seq}, \"losses\": {losses:?}, \"step_s\": {times:?}, \"tokens_per_s\": {:.3}, \"peak_rss_mib\": {:.1}, \"pool_parallel_runs\": {}, \"pool_solo_runs\": {}, \"pool_backoffs\": {}}}",
        rank.map_or("full".to_string(), |r| format!("lora{r}")),
        seq as f64 / best,
        peak_rss_mib(),
        ps.parallel_runs,
        ps.solo_runs,
        ps.backoffs
    );
    Ok(())
}
