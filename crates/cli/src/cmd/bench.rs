//! `ferrollama bench`: prefill and decode speed.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use ferrollama_engine::Session;
use indicatif::ProgressStyle;

use super::model_args::ModelArgs;

/// Measure prefill and decode speed (tokens per second), like llama-bench: a prompt of P
/// tokens in batches, then G tokens one at a time. Prints {"prefill_tok_s", "decode_tok_s"}
/// with --json.
///
/// Decoding starts from an empty cache, so a run needs max(P, G) positions: at most the
/// model's training context, and at most --ctx-size when that is given.
#[derive(Debug, clap::Args)]
#[command(mut_arg("ctx_size", |a| a.help(
    "Context size in tokens; the KV cache is allocated for this many (default: the larger \
     of --prompt-tokens and --gen-tokens, plus 8, at most the model's training context)"
)))]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Generated tokens.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Runs of each measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn bench(a: BenchArgs) -> Result<ExitCode> {
    if a.prompt_tokens == 0 || a.gen_tokens == 0 || a.repeats == 0 {
        bail!("--prompt-tokens, --gen-tokens and --repeats must be at least 1");
    }
    let model = a.model.load()?;
    let ctx = bench_ctx(&a, model.llama.config.max_seq_len)?;
    let model_args = ModelArgs {
        ctx_size: Some(ctx),
        ..a.model
    };
    let mut s: Session = model_args.session(&model)?;
    let vocab = model.llama.config.vocab_size as u64;
    // Deterministic pseudo-random prompt tokens (llama-bench uses random tokens too).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab) as u32
        })
        .collect();

    let bar = super::progress_bar(a.json);
    bar.set_length((a.repeats * (a.prompt_tokens + a.gen_tokens)) as u64);
    bar.set_style(
        ProgressStyle::with_template("bench [{bar:30}] {pos}/{len} tokens (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut prefill = f64::INFINITY;
    let mut decode = f64::INFINITY;
    for _ in 0..a.repeats {
        s.reset();
        let t = Instant::now();
        s.prefill(&model, &prompt)?;
        prefill = prefill.min(t.elapsed().as_secs_f64());
        bar.inc(a.prompt_tokens as u64);

        s.reset();
        let t = Instant::now();
        let mut tok = prompt[0];
        for _ in 0..a.gen_tokens {
            let logits = model
                .llama
                .forward(&s.pool, &[tok], &mut s.kv, &mut s.state, false)?;
            // Greedy next token, so the work matches real decoding.
            tok = logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                    if v > b.1 { (i, v) } else { b }
                })
                .0 as u32;
            bar.inc(1);
        }
        decode = decode.min(t.elapsed().as_secs_f64());
    }
    bar.finish_and_clear();
    let prefill_tok_s = a.prompt_tokens as f64 / prefill;
    let decode_tok_s = a.gen_tokens as f64 / decode;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model.name,
                "threads": s.pool.n_threads(),
                "prompt_tokens": a.prompt_tokens,
                "gen_tokens": a.gen_tokens,
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "kernels": ferrollama_tensor::cpu_features(),
            })
        );
    } else {
        println!(
            "{}: prefill {} tokens: {prefill_tok_s:.1} tok/s; decode {} tokens: {decode_tok_s:.1} tok/s ({} threads, {})",
            model.name,
            a.prompt_tokens,
            a.gen_tokens,
            s.pool.n_threads(),
            ferrollama_tensor::cpu_features()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The context to allocate: every position the run touches must fit both the model's
/// training context and `--ctx-size` when given. A run that does not fit is refused,
/// naming the limit and the flag, rather than silently clamped.
fn bench_ctx(a: &BenchArgs, trained: usize) -> Result<usize> {
    let need = a.prompt_tokens.max(a.gen_tokens);
    if need > trained {
        bail!(
            "--prompt-tokens {} and --gen-tokens {} need {need} positions, more than the \
             model's training context of {trained} tokens; lower them to {trained} or less",
            a.prompt_tokens,
            a.gen_tokens
        );
    }
    match a.model.ctx_size {
        Some(c) if c > trained => bail!(
            "--ctx-size {c} is more than the model's training context of {trained} tokens; \
             pass -c {trained} or less"
        ),
        Some(c) if c < need => bail!(
            "--ctx-size {c} is smaller than the {need} positions this run needs \
             (max of --prompt-tokens {} and --gen-tokens {}); raise -c to {need} or lower \
             the token counts",
            a.prompt_tokens,
            a.gen_tokens
        ),
        Some(c) => Ok(c),
        None => Ok((need + 8).min(trained)),
    }
}
