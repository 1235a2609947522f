//! Perplexity exactly as llama.cpp's `llama-perplexity` computes it, and KL divergence
//! from a base model over the same tokens.
//!
//! llama.cpp's definition (`tools/perplexity/perplexity.cpp`, `perplexity()`): the whole
//! text is tokenized once, with BOS first when the model adds one; it is cut into
//! `n_chunk = n_tokens / n_ctx` chunks of `n_ctx` tokens; each chunk is evaluated from an
//! empty cache with its first token replaced by BOS; only the second half is scored: the
//! logits at positions `first = n_ctx / 2 ..= n_ctx - 2` predict the next token, so each
//! chunk contributes `n_ctx - first - 1` negative log-likelihoods. PPL = exp(mean NLL),
//! and its uncertainty is llama.cpp's `exp(mean) * sqrt(var / (count - 1))`.
//!
//! KL divergence (llama.cpp's `--kl-divergence`): at every scored position,
//! `KL(p_base ‖ p_model) = Σ_v p_base(v) (log p_base(v) − log p_model(v))`, with the mean,
//! its standard error, median, 99th percentile and maximum, the share of positions whose
//! top token is the same, and the RMS of the change in the correct token's probability.
//! Both models run in one pass over the same chunks, so no logits file is needed.

use ferrollama_engine::Model;
use ferrollama_model::{KvCache, KvType, State};
use ferrollama_tensor::ThreadPool;

use crate::error::{EvalError, Result};

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct PplOptions {
    /// Tokens per chunk (llama.cpp's `-c`, 512 in its published tables).
    pub n_ctx: usize,
    /// Tokens per forward call.
    pub batch: usize,
    /// Evaluate at most this many chunks (llama.cpp's `--chunks`).
    pub max_chunks: Option<usize>,
    pub threads: usize,
}

/// KL divergence of a model from its base over the scored positions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KlStats {
    pub base_ppl: f64,
    pub base_ppl_unc: f64,
    /// mean(NLL_model − NLL_base) = ln(PPL_model / PPL_base).
    pub ln_ppl_ratio: f64,
    pub mean: f64,
    pub mean_unc: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    /// Share of positions where both models' most likely token is the same.
    pub top1_same: f64,
    /// RMS of p_model(correct) − p_base(correct).
    pub rms_dp: f64,
}

/// The result of a perplexity run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PplResult {
    pub ppl: f64,
    pub ppl_unc: f64,
    pub nll_mean: f64,
    /// Tokens in the whole text (after tokenization, BOS included).
    pub text_tokens: usize,
    pub chunks: usize,
    pub n_ctx: usize,
    /// Positions scored.
    pub count: usize,
    /// Running PPL after each chunk (llama.cpp prints these as `[i]ppl`).
    pub running: Vec<f64>,
    pub kl: Option<KlStats>,
}

/// One model with its cache and buffers.
struct Runner<'m> {
    model: &'m Model,
    kv: KvCache,
    st: State,
}

impl<'m> Runner<'m> {
    fn new(model: &'m Model, opts: &PplOptions) -> Result<Runner<'m>> {
        let kv = KvCache::new(&model.llama.config, opts.n_ctx, KvType::F16)?;
        let st = model.llama.new_state(opts.batch, opts.n_ctx, opts.threads);
        Ok(Runner { model, kv, st })
    }

    /// Log-probabilities at positions `first..n_ctx - 1` of `chunk` into `out`
    /// (`(n_ctx - 1 - first, vocab)`).
    fn chunk_logprobs(
        &mut self,
        pool: &ThreadPool,
        chunk: &[u32],
        first: usize,
        batch: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let vocab = self.model.llama.config.vocab_size;
        let rows = chunk.len() - 1 - first;
        out.clear();
        out.reserve(rows * vocab);
        self.kv.len = 0;
        // The unscored first half only fills the cache (one logits row per call).
        for piece in chunk[..first].chunks(batch) {
            self.model
                .llama
                .forward(pool, piece, &mut self.kv, &mut self.st, false)?;
        }
        // Position n_ctx - 1 predicts nothing inside the chunk: not evaluated.
        for piece in chunk[first..chunk.len() - 1].chunks(batch) {
            let logits = self
                .model
                .llama
                .forward(pool, piece, &mut self.kv, &mut self.st, true)?;
            out.extend_from_slice(logits);
        }
        for row in out.chunks_exact_mut(vocab) {
            log_softmax(row);
        }
        Ok(())
    }
}

/// In place: `x ← x − log Σ exp(x)`, the sum in f64.
fn log_softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| f64::from(v - max).exp()).sum();
    let lse = max as f64 + sum.ln();
    for v in x {
        *v = (f64::from(*v) - lse) as f32;
    }
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Mean and llama.cpp's uncertainty of the mean, `sqrt((E[x²] − E[x]²) / (n − 1))`.
fn mean_unc(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let n = n as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let unc = if var > 0.0 && n > 1.0 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, unc)
}

/// Perplexity of `model` on `text`; with `base`, also the KL divergence of `model` from
/// `base` (same tokenizer required). `progress(done, total)` is called after each chunk.
pub fn perplexity(
    model: &Model,
    base: Option<&Model>,
    text: &str,
    opts: &PplOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplResult> {
    if opts.n_ctx < 4 || opts.batch == 0 {
        return Err(EvalError::Invalid(format!(
            "context {} and batch {} must be at least 4 and 1",
            opts.n_ctx, opts.batch
        )));
    }
    if opts.max_chunks == Some(0) {
        return Err(EvalError::Invalid(
            "the number of chunks must be at least 1 (--chunks 1 or more, or leave it out for \
             the whole text)"
                .into(),
        ));
    }
    let trained = base.map_or(model.llama.config.max_seq_len, |b| {
        b.llama
            .config
            .max_seq_len
            .min(model.llama.config.max_seq_len)
    });
    if opts.n_ctx > trained {
        return Err(EvalError::Invalid(format!(
            "a context of {} tokens is more than the model's training context of {trained} \
             tokens; use a context (-c) of {trained} or less",
            opts.n_ctx
        )));
    }
    let tokens = model.encode(text, true, false);
    if let Some(b) = base
        && (b.llama.config.vocab_size != model.llama.config.vocab_size
            || b.encode(text, true, false) != tokens)
    {
        return Err(EvalError::Invalid(
            "the base model tokenizes the text differently; KL divergence needs the same \
             vocabulary"
                .into(),
        ));
    }
    let n_ctx = opts.n_ctx;
    if tokens.len() < 2 * n_ctx {
        return Err(EvalError::Invalid(format!(
            "the text has {} tokens, too few for one chunk: a context of {n_ctx} needs at least \
             {} (2 × context); give a longer text or a smaller context (-c)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_chunk = (tokens.len() / n_ctx).min(opts.max_chunks.unwrap_or(usize::MAX));
    let first = n_ctx / 2;
    let vocab = model.llama.config.vocab_size;
    let bos = model.tokenizer.bos.filter(|_| model.tokenizer.add_bos);

    let pool = ThreadPool::new(opts.threads.max(1));
    let mut run = Runner::new(model, opts)?;
    let mut base_run = base.map(|b| Runner::new(b, opts)).transpose()?;
    let (mut lp, mut lp_base) = (Vec::new(), Vec::new());
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let (mut bnll, mut bnll2) = (0f64, 0f64);
    let (mut kl_sum, mut kl_sum2, mut same, mut dp2) = (0f64, 0f64, 0usize, 0f64);
    let mut kls: Vec<f32> = Vec::new();
    let mut running = Vec::with_capacity(n_chunk);
    let mut chunk = vec![0u32; n_ctx];
    progress(0, n_chunk);
    for i in 0..n_chunk {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        run.chunk_logprobs(&pool, &chunk, first, opts.batch, &mut lp)?;
        if let Some(br) = base_run.as_mut() {
            br.chunk_logprobs(&pool, &chunk, first, opts.batch, &mut lp_base)?;
        }
        for (j, row) in lp.chunks_exact(vocab).enumerate() {
            let target = chunk[first + j + 1] as usize;
            let v = -f64::from(row[target]);
            nll += v;
            nll2 += v * v;
            if base_run.is_some() {
                let brow = &lp_base[j * vocab..(j + 1) * vocab];
                let bv = -f64::from(brow[target]);
                bnll += bv;
                bnll2 += bv * bv;
                let kl: f64 = brow
                    .iter()
                    .zip(row)
                    .map(|(&b, &m)| {
                        let b = f64::from(b);
                        b.exp() * (b - f64::from(m))
                    })
                    .sum();
                kl_sum += kl;
                kl_sum2 += kl * kl;
                kls.push(kl as f32);
                same += usize::from(argmax(brow) == argmax(row));
                let dp = (-v).exp() - (-bv).exp();
                dp2 += dp * dp;
            }
        }
        count += lp.len() / vocab;
        running.push((nll / count as f64).exp());
        progress(i + 1, n_chunk);
    }
    let (nll_mean, nll_unc) = mean_unc(nll, nll2, count);
    let ppl = nll_mean.exp();
    let kl = base_run.map(|_| {
        let (bmean, bunc) = mean_unc(bnll, bnll2, count);
        let (mean, unc) = mean_unc(kl_sum, kl_sum2, count);
        kls.sort_by(f32::total_cmp);
        let pick = |q: f64| {
            let i = ((kls.len() - 1) as f64 * q).round() as usize;
            f64::from(kls[i.min(kls.len() - 1)])
        };
        KlStats {
            base_ppl: bmean.exp(),
            base_ppl_unc: bmean.exp() * bunc,
            ln_ppl_ratio: nll_mean - bmean,
            mean,
            mean_unc: unc,
            median: pick(0.5),
            p99: pick(0.99),
            max: pick(1.0),
            top1_same: same as f64 / count as f64,
            rms_dp: (dp2 / count as f64).sqrt(),
        }
    });
    Ok(PplResult {
        ppl,
        ppl_unc: ppl * nll_unc,
        nll_mean,
        text_tokens: tokens.len(),
        chunks: n_chunk,
        n_ctx,
        count,
        running,
        kl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_hand_values() {
        // log softmax of [0, ln 3] = [ln 1/4, ln 3/4].
        let mut x = [0.0f32, 3f32.ln()];
        log_softmax(&mut x);
        assert!((x[0] - 0.25f32.ln()).abs() < 1e-6);
        assert!((x[1] - 0.75f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn uncertainty_is_llama_cpp_formula() {
        // Values 1, 2, 3: mean 2, E[x²] = 14/3, var = 2/3, unc = sqrt((2/3) / 2).
        let (m, u) = mean_unc(6.0, 14.0, 3);
        assert!((m - 2.0).abs() < 1e-12);
        assert!((u - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
