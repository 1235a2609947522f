//! `ferrollama run`: raw completion, streamed.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use ferrollama_engine::{GenerateParams, generate};

use super::model_args::{LoraArgs, ModelArgs, SamplingArgs};

/// Complete a prompt (no chat template), streaming the text to stdout.
///
/// With --temperature 0 the output is deterministic.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when the output contains this text (repeatable); the text itself is not
    /// printed.
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Tokens to generate at most; 0 only evaluates the prompt (it must fit the context)
    /// and prints nothing.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Parse special-token text (e.g. <|im_start|>) in the prompt.
    #[arg(long)]
    special: bool,
    /// Print timings to stderr at the end.
    #[arg(long)]
    verbose: bool,
    /// The prompt.
    prompt: String,
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let sampler = a.sampling.config()?;
    let model = a.model.load()?;
    let mut session = a.model.session(&model)?;
    a.lora.apply(&model, &mut session)?;
    let prompt = model.encode(&a.prompt, true, a.special);
    if a.n_predict == 0 {
        return prompt_only(&model, &mut session, &prompt, a.verbose);
    }
    let params = GenerateParams {
        max_tokens: a.n_predict,
        sampler,
        stop: a.stop.clone(),
    };
    let mut out = std::io::stdout().lock();
    let g = generate(&model, &mut session, &prompt, &params, &mut |s| {
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    if a.verbose {
        eprintln!(
            "prompt {} tokens in {:.3}s ({:.1} tok/s); generated {} tokens in {:.3}s ({:.1} tok/s); finish {:?}",
            g.prompt_tokens,
            g.prefill_seconds,
            g.prompt_tokens as f64 / g.prefill_seconds.max(1e-9),
            g.tokens.len(),
            g.decode_seconds,
            g.tokens.len() as f64 / g.decode_seconds.max(1e-9),
            g.finish
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `-n 0`: the prompt is evaluated and nothing is generated (`generate` always samples at
/// least one token, so it is not called).
fn prompt_only(
    model: &ferrollama_engine::Model,
    session: &mut ferrollama_engine::Session,
    prompt: &[u32],
    verbose: bool,
) -> Result<ExitCode> {
    let ctx = session.kv.ctx();
    if prompt.len() >= ctx {
        anyhow::bail!(
            "the prompt ({} tokens) does not fit the context ({ctx} tokens)",
            prompt.len()
        );
    }
    let t = std::time::Instant::now();
    session.prefill(model, prompt)?;
    let secs = t.elapsed().as_secs_f64();
    if verbose {
        eprintln!(
            "prompt {} tokens in {secs:.3}s ({:.1} tok/s); generated 0 tokens (-n 0)",
            prompt.len(),
            prompt.len() as f64 / secs.max(1e-9),
        );
    }
    Ok(ExitCode::SUCCESS)
}
