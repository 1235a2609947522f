//! Training steps of a GGUF model on fixed tokens: forward + backward + AdamW, f32,
//! full fine-tuning or LoRA on all seven projections. `bench/train.py` runs it next to
//! PyTorch + PEFT; the last line of output is JSON.
//!
//!     cargo build --release -p ferrollama-train --example step_bench
//!     target/release/examples/step_bench MODEL.gguf [--seq 512] [--threads 2] [--steps 3]
//!         [--lora RANK] [--base params|stored|f32|f16|bf16|q8_0|q4_k] [--compute f32|int8]
//!         [--recompute] [--tokens FILE]
//!
//! `--tokens FILE`: whitespace-separated token ids (at least seq + 1), else seeded random
//! ones. `--lora RANK`: alpha = 2 · rank, frozen base. `--base` (LoRA only) picks what the
//! frozen base is: `params` (default) widens it to f32 `Params`; `stored` keeps the file's
//! matrices as they are (a `FrozenBase`); a type converts every matrix to it first
//! (llama.cpp's fallback where rows are not whole blocks, e.g. Q4_K → Q5_0 for rows of
//! 576), then keeps it in that type. `--compute` (a frozen base only): `f32` multiplies
//! decoded f32 panels of the stored matrices, `int8` runs the integer GEMM
//! (`BaseCompute::Int8`). Peak RSS is reset after loading, so it is the training's (with
//! the base's resident pages), not the conversion's.

use std::time::Instant;

use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_tensor::{DType, ThreadPool};
use ferrollama_train::profile;
use ferrollama_train::weights::{convert_weights, params_from_weights};
use ferrollama_train::{
    AdamW, AdamWConfig, BaseCompute, FrozenBase, Lora, LoraConfig, ParamSet, Params, PassOptions,
    Sequence, Shape, Target, forward_backward, forward_backward_lora,
};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// The frozen base of a LoRA run.
enum BaseKind {
    Params(Params<f32>),
    Frozen(FrozenBase),
}

/// Starts the peak-RSS count afresh (`clear_refs` 5, Linux 4.0+), so loading and
/// converting the model do not count.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
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

/// After step `n` (1-based): adds the step's phase totals to `acc` unless it was the
/// first, then starts the counts afresh.
fn take_phases(acc: &mut Vec<profile::PhaseTotals>, n: usize) {
    let now = profile::totals();
    if n > 1 {
        if acc.is_empty() {
            *acc = now;
        } else {
            for (a, b) in acc.iter_mut().zip(now) {
                a.seconds += b.seconds;
                a.cpu_seconds += b.cpu_seconds;
                a.calls += b.calls;
                a.parallel_runs += b.parallel_runs;
                a.solo_runs += b.solo_runs;
                a.backoffs += b.backoffs;
                a.page_faults += b.page_faults;
            }
        }
    }
    profile::reset();
}

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: `ru` is plain data for the call to fill.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    }
}

/// The mean per step of each phase over the steps after the first, on stderr.
fn print_phases(phases: &[profile::PhaseTotals], times: &[f64]) {
    let n = times.len().saturating_sub(1).max(1) as f64;
    let step: f64 = times.iter().skip(1).sum::<f64>() / n;
    let mut covered = 0.0;
    eprintln!(
        "phase                    s/step   share  cpu s/step  calls  parallel  solo  backoffs  faults"
    );
    for p in phases {
        covered += p.seconds / n;
        eprintln!(
            "{:<22} {:>8.3} {:>6.1}% {:>10.3} {:>6} {:>9} {:>5} {:>9} {:>7}",
            p.phase.name(),
            p.seconds / n,
            100.0 * p.seconds / n / step,
            p.cpu_seconds / n,
            p.calls as f64 / n,
            p.parallel_runs as f64 / n,
            p.solo_runs as f64 / n,
            p.backoffs as f64 / n,
            p.page_faults as f64 / n
        );
    }
    eprintln!(
        "{:<22} {:>8.3} {:>6.1}%",
        "(not in a phase)",
        step - covered,
        100.0 * (step - covered) / step
    );
    eprintln!("{:<22} {:>8.3}", "step", step);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: step_bench MODEL.gguf [--seq N] [--threads N] [--steps N] [--lora RANK] [--base params|stored|f32|f16|bf16|q8_0|q4_k] [--compute f32|int8] [--recompute] [--tokens FILE]")?;
    let seq: usize = arg(&args, "--seq").unwrap_or(512);
    let threads: usize = arg(&args, "--threads").unwrap_or(2);
    let steps: usize = arg(&args, "--steps").unwrap_or(3);
    let rank: Option<usize> = arg(&args, "--lora");
    let recompute = args.iter().any(|a| a == "--recompute");
    let prof = args.iter().any(|a| a == "--profile");
    let base_name: String = arg(&args, "--base").unwrap_or_else(|| "params".to_string());
    let compute = BaseCompute::parse(
        &arg::<String>(&args, "--compute").unwrap_or_else(|| "f32".to_string()),
    )?;
    let pool = ThreadPool::new(threads);
    let f = GgufFile::open(std::path::Path::new(path))?;
    let cfg = LlamaConfig::from_gguf(&f)?;
    let w = Weights::from_gguf(&f, &cfg)?;
    let (base, divisors, base_type) = match base_name.as_str() {
        "params" => {
            let (p, d) = params_from_weights(&w, &cfg)?;
            (BaseKind::Params(p), d, "f32 params".to_string())
        }
        "stored" => {
            let (mut b, d) = FrozenBase::from_weights(&w, &cfg)?;
            b.set_compute(compute, &pool)?;
            let t = format!("stored {} ({})", b.layers[0].w2.dtype(), compute.name());
            (BaseKind::Frozen(b), d, t)
        }
        name => {
            let dtype = DType::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| format!("unknown --base {name}"))?;
            let wq = convert_weights(&w, dtype, &pool)?;
            let (mut b, d) = FrozenBase::from_weights(&wq, &cfg)?;
            b.set_compute(compute, &pool)?;
            (
                BaseKind::Frozen(b),
                d,
                format!("{} ({})", dtype.name(), compute.name()),
            )
        }
    };
    // Nothing but the base is kept: the stored base still maps the file, whose pages
    // count as resident once the pass reads them.
    drop(w);
    drop(f);
    let base_bytes = match &base {
        BaseKind::Params(p) => 4 * p.len(),
        BaseKind::Frozen(b) => b.bytes(),
    };
    reset_peak_rss();
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
    let opts = PassOptions {
        recompute,
        ..Default::default()
    };
    let scale = 1.0 / seq as f32;
    let adamw = AdamWConfig::default();
    let lr = 1e-4;
    let mut times = Vec::new();
    let mut losses = Vec::new();
    profile::enable(prof);
    // Phase times of the steps after the first (which pays first-touch page faults).
    let mut phases: Vec<profile::PhaseTotals> = Vec::new();
    let mut faults = minor_faults();
    match rank {
        Some(r) => {
            let lc = LoraConfig {
                dropout: 0.0,
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
                ferrollama_train::optim::zero_on(&pool, &mut g);
                let loss = match &base {
                    BaseKind::Params(p) => {
                        forward_backward_lora(&pool, &sh, p, &lora, &mut g, &batch, scale, opts)?
                    }
                    BaseKind::Frozen(b) => {
                        forward_backward_lora(&pool, &sh, b, &lora, &mut g, &batch, scale, opts)?
                    }
                };
                opt.update_on(&pool, &mut lora, &g, lr);
                times.push(t.elapsed().as_secs_f64());
                losses.push(f64::from(loss) / seq as f64);
                take_phases(&mut phases, times.len());
                if prof {
                    eprintln!(
                        "step {}: {} minor page faults",
                        times.len() - 1,
                        minor_faults() - faults
                    );
                    faults = minor_faults();
                }
            }
        }
        None => {
            let BaseKind::Params(mut p) = base else {
                return Err("full fine-tuning needs --base params".into());
            };
            let mut opt = AdamW::new(adamw, &p);
            let mut g = p.zeros_like();
            for _ in 0..steps {
                let t = Instant::now();
                ferrollama_train::optim::zero_on(&pool, &mut g);
                let loss = forward_backward(&pool, &sh, &p, &mut g, &batch, scale, opts)?;
                opt.update_on(&pool, &mut p, &g, lr);
                times.push(t.elapsed().as_secs_f64());
                losses.push(f64::from(loss) / seq as f64);
                take_phases(&mut phases, times.len());
                if prof {
                    eprintln!(
                        "step {}: {} minor page faults",
                        times.len() - 1,
                        minor_faults() - faults
                    );
                    faults = minor_faults();
                }
            }
        }
    }
    for (i, (t, l)) in times.iter().zip(&losses).enumerate() {
        eprintln!(
            "step {i}: loss {l:.4}, {t:.2} s, {:.1} tokens/s",
            seq as f64 / t
        );
    }
    if prof {
        print_phases(&phases, &times);
    }
    // Steps after the first (which pays first-touch page faults), best of the rest.
    let best = times.iter().skip(1).copied().fold(f64::INFINITY, f64::min);
    let best = if best.is_finite() { best } else { times[0] };
    // Sections the pool ran on its caller alone because other processes took our cores
    // (see `ThreadPool`): a high share means the 2-thread number is really 1 thread's.
    let ps = pool.stats();
    println!(
        "{{\"method\": \"{}\", \"base\": \"{base_type}\", \"base_mib\": {:.1}, \"threads\": {threads}, \"seq\": {seq}, \"losses\": {losses:?}, \"step_s\": {times:?}, \"tokens_per_s\": {:.3}, \"peak_rss_mib\": {:.1}, \"pool_parallel_runs\": {}, \"pool_solo_runs\": {}, \"pool_backoffs\": {}}}",
        rank.map_or("full".to_string(), |r| format!("lora{r}")),
        base_bytes as f64 / (1024.0 * 1024.0),
        seq as f64 / best,
        peak_rss_mib(),
        ps.parallel_runs,
        ps.solo_runs,
        ps.backoffs
    );
    Ok(())
}
