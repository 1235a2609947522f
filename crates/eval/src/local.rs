//! The in-process backend: a loaded [`Model`] scores and generates directly.
//!
//! Tokenization follows lm-eval's `HFLM._encode_pair`: trailing whitespace of the context
//! moves to the front of the continuation; the context is encoded alone (with BOS when
//! the model adds one, as an OpenAI-compatible server does for a completion prompt), the
//! context + continuation together, and the continuation's tokens are the tail of the
//! latter past the context's length. An empty context is the BOS token (or EOS when the
//! model has none), lm-eval's `prefix_token_id`.
//!
//! Prefix sharing: every choice of a question has the same context tokens, so the context
//! is evaluated once (its last logits predict each choice's first token) and the choices
//! then run together in batched calls, each reading the context's cache blocks and writing
//! its own (a copy of the context's partial last block, then the choice). Scoring reads the log-softmax of the logits at the positions
//! before each continuation token, as lm-eval does; the last continuation token is never
//! run.
//!
//! A request longer than `max_length + 1` tokens is cut from the left (lm-eval's
//! `[-(max_length + 1):]`), scored from scratch; rolling log-likelihood uses lm-eval's
//! disjoint windows of `max_length` tokens, each conditioned on the token before it.

use ferrollama_engine::Model;
use ferrollama_model::{Adapter, KV_BLOCK, KvCache, KvType, Logits, SeqChunk, State};
use ferrollama_tensor::ThreadPool;

use crate::backend::{Backend, Context, LogLikelihood, cut_at_stops};
use crate::error::{EvalError, Result};
use crate::toolcall::{ToolReply, parse_calls, tool_dialog};

/// How the in-process backend runs.
#[derive(Debug, Clone, Copy)]
pub struct LocalOptions {
    pub threads: usize,
    /// Tokens per forward call.
    pub batch: usize,
    /// The longest sequence scored at once (lm-eval's `max_length`).
    pub max_length: usize,
    /// Evaluate a question's context once for all its choices. Off: each context + choice
    /// runs in one pass from an empty cache. The two agree to rounding on float weights, but
    /// on quantized weights the integer kernels' result for a row depends on how many tokens
    /// share its call, so the choices' scores can differ by a few hundredths of a nat (so
    /// does a server's, which splits a prompt its own way).
    pub prefix_sharing: bool,
}

/// A model evaluated in this process.
#[derive(Debug)]
pub struct LocalBackend<'m> {
    model: &'m Model,
    pool: ThreadPool,
    kv: KvCache,
    st: State,
    opts: LocalOptions,
    /// A LoRA adapter every sequence runs with (`eval --lora`); `None`: the base model.
    adapter: Option<std::sync::Arc<Adapter>>,
}

/// (log-probability of `tok` under `logits`, whether `tok` is the first maximum).
fn token_logprob(logits: &[f32], tok: u32) -> (f64, bool) {
    let mut best = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > max {
            max = v;
            best = i;
        }
    }
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let t = tok as usize;
    (f64::from(logits[t]) - lse, best == t)
}

impl<'m> LocalBackend<'m> {
    pub fn new(model: &'m Model, opts: LocalOptions) -> Result<LocalBackend<'m>> {
        if opts.max_length < 2 || opts.batch == 0 {
            return Err(EvalError::Invalid(format!(
                "max length {} and batch {} must be at least 2 and 1",
                opts.max_length, opts.batch
            )));
        }
        let kv = KvCache::new(&model.llama.config, opts.max_length, KvType::F16)?;
        let st = model
            .llama
            .new_state(opts.batch, opts.max_length, opts.threads);
        Ok(LocalBackend {
            model,
            pool: ThreadPool::new(opts.threads.max(1)),
            kv,
            st,
            opts,
            adapter: None,
        })
    }

    /// Runs every sequence with `adapter` (made for this model) from now on.
    pub fn with_adapter(mut self, adapter: Option<std::sync::Arc<Adapter>>) -> Self {
        self.adapter = adapter;
        self
    }

    /// The prefix token lm-eval puts before an empty context.
    fn prefix_token(&self) -> Result<u32> {
        self.model
            .tokenizer
            .bos
            .or(self.model.tokenizer.eos)
            .ok_or_else(|| EvalError::Invalid("the model has neither BOS nor EOS".into()))
    }

    /// The context's tokens and, for each continuation, its tokens.
    pub fn encode_pairs(
        &self,
        context: &Context,
        continuations: &[String],
    ) -> Result<(Vec<u32>, Vec<Vec<u32>>)> {
        match context {
            Context::Chat(msgs) => {
                let ctx = self.model.chat_prompt(msgs)?;
                let conts = continuations
                    .iter()
                    .map(|c| self.model.encode(c, false, false))
                    .collect();
                Ok((ctx, conts))
            }
            Context::Text(text) => {
                let kept = text.trim_end();
                let moved = &text[kept.len()..];
                if kept.is_empty() {
                    let p = self.prefix_token()?;
                    let conts = continuations
                        .iter()
                        .map(|c| self.model.encode(&format!("{moved}{c}"), false, false))
                        .collect();
                    return Ok((vec![p], conts));
                }
                let ctx = self.model.encode(kept, true, false);
                let conts = continuations
                    .iter()
                    .map(|c| {
                        let whole = self.model.encode(&format!("{kept}{moved}{c}"), true, false);
                        whole.get(ctx.len()..).unwrap_or_default().to_vec()
                    })
                    .collect();
                Ok((ctx, conts))
            }
        }
    }

    /// Runs `tokens` after what the cache holds, in calls of at most `batch` tokens;
    /// returns the last position's logits, or every position's with `all`.
    fn run(&mut self, tokens: &[u32], all: bool, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let n = tokens.len();
        let mut done = 0;
        for piece in tokens.chunks(self.opts.batch) {
            done += piece.len();
            let want = all || done == n;
            let logits = self.model.llama.forward_lora(
                &self.pool,
                piece,
                &mut self.kv,
                &mut self.st,
                all,
                self.adapter.as_deref(),
            )?;
            if want {
                out.extend_from_slice(logits);
            }
        }
        Ok(())
    }

    /// Scores each continuation after `ctx`, evaluating `ctx` once.
    ///
    /// The context runs once; its last position's logits predict every choice's first
    /// token. Then the choices run together in batched calls, each as its own sequence that
    /// reads the context's whole cache blocks and writes its own: a copy of the context's
    /// last, partial block (F16 copies are exact) followed by its tokens. Batched rows get
    /// the same logits as alone (the model's guarantee), so this is the arithmetic of
    /// scoring each choice after the context, with the weights read once per group of
    /// choices instead of once per choice.
    pub fn score_shared(&mut self, ctx: &[u32], conts: &[Vec<u32>]) -> Result<Vec<LogLikelihood>> {
        if ctx.is_empty() {
            return Err(EvalError::Invalid("empty context".into()));
        }
        if conts.iter().any(Vec::is_empty) {
            return Err(EvalError::Invalid(
                "a continuation has no tokens of its own (empty choice or target)".into(),
            ));
        }
        let vocab = self.model.llama.config.vocab_size;
        let max_length = self.opts.max_length;
        let l = ctx.len();
        let (full, partial) = (l / KV_BLOCK, l % KV_BLOCK);
        let ctx_blocks = l.div_ceil(KV_BLOCK);
        let n_blocks = self.kv.n_blocks();
        // Blocks a choice writes: from the context's partial block (copied) to its end.
        let own_blocks = |c: &Vec<u32>| (l + c.len() - 1).div_ceil(KV_BLOCK) - full;
        let shared: Vec<usize> = (0..conts.len())
            .filter(|&i| {
                let c = &conts[i];
                l + c.len() <= max_length + 1
                    && c.len() - 1 <= self.opts.batch
                    && ctx_blocks + own_blocks(c) <= n_blocks
            })
            .collect();
        let mut out: Vec<Option<LogLikelihood>> = vec![None; conts.len()];
        let mut first = Vec::new();
        if !shared.is_empty() {
            self.kv.len = 0;
            self.run(ctx, false, &mut first)?;
        }
        for &i in &shared {
            let (lp, g) = token_logprob(&first, conts[i][0]);
            out[i] = Some(LogLikelihood {
                ll: lp,
                is_greedy: g,
            });
        }
        // Choices of one token are done; the others run in groups.
        let rest: Vec<usize> = shared.into_iter().filter(|&i| conts[i].len() > 1).collect();
        let mut next = 0;
        while next < rest.len() {
            let (mut tokens, mut blocks) = (0, ctx_blocks);
            let mut group = Vec::new();
            while let Some(&i) = rest.get(next) {
                let (n, nb) = (conts[i].len() - 1, own_blocks(&conts[i]));
                if !group.is_empty() && (tokens + n > self.opts.batch || blocks + nb > n_blocks) {
                    break;
                }
                group.push((i, blocks, nb));
                tokens += n;
                blocks += nb;
                next += 1;
            }
            if partial > 0 {
                for &(_, own, _) in &group {
                    self.copy_slots(full * KV_BLOCK, own * KV_BLOCK, partial)?;
                }
            }
            let tables: Vec<Vec<u32>> = group
                .iter()
                .map(|&(_, own, nb)| {
                    (0..full as u32)
                        .chain(own as u32..(own + nb) as u32)
                        .collect()
                })
                .collect();
            let seqs: Vec<SeqChunk<'_>> = group
                .iter()
                .zip(&tables)
                .map(|(&(i, _, _), t)| SeqChunk {
                    tokens: &conts[i][..conts[i].len() - 1],
                    pos0: l,
                    blocks: t,
                    logits: Logits::All,
                })
                .collect();
            let adapters: Vec<Option<&Adapter>> = match &self.adapter {
                Some(a) => vec![Some(a.as_ref()); seqs.len()],
                None => Vec::new(),
            };
            let logits = self.model.llama.forward_batch_lora(
                &self.pool,
                &seqs,
                &adapters,
                &mut self.kv,
                &mut self.st,
            )?;
            let mut row = 0;
            for &(i, _, _) in &group {
                let c = &conts[i];
                let Some(Some(o)) = out.get_mut(i) else {
                    continue;
                };
                for &t in &c[1..] {
                    let (lp, g) = token_logprob(&logits[row * vocab..(row + 1) * vocab], t);
                    o.ll += lp;
                    o.is_greedy &= g;
                    row += 1;
                }
            }
        }
        // What did not fit is scored alone, after the shared work (it overwrites the cache).
        for (i, c) in conts.iter().enumerate() {
            if out[i].is_none() {
                out[i] = Some(self.score_scratch(ctx, c)?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Copies `n` cache slots from `src` to `dst` in every layer.
    fn copy_slots(&mut self, src: usize, dst: usize, n: usize) -> Result<()> {
        let cfg = &self.model.llama.config;
        let (kv_dim, hd) = (cfg.kv_dim(), cfg.head_dim);
        let mut k = vec![0f32; kv_dim];
        let mut v = vec![0f32; kv_dim];
        for layer in 0..cfg.n_layers {
            for p in 0..n {
                for h in 0..kv_dim / hd {
                    self.kv
                        .key_f32(layer, src + p, h, &mut k[h * hd..(h + 1) * hd]);
                    self.kv
                        .value_f32(layer, src + p, h, &mut v[h * hd..(h + 1) * hd]);
                }
                self.kv.store(layer, dst + p, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Scores `cont` after `ctx` from an empty cache, with lm-eval's left truncation to
    /// `max_length + 1` tokens.
    pub fn score_scratch(&mut self, ctx: &[u32], cont: &[u32]) -> Result<LogLikelihood> {
        let vocab = self.model.llama.config.vocab_size;
        if cont.is_empty() {
            return Err(EvalError::Invalid(
                "a continuation has no tokens of its own (empty choice or target)".into(),
            ));
        }
        if cont.len() > self.opts.max_length {
            return Err(EvalError::Invalid(format!(
                "a continuation of {} tokens is longer than the max length {}",
                cont.len(),
                self.opts.max_length
            )));
        }
        let whole: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let start = whole.len().saturating_sub(self.opts.max_length + 1);
        let input = &whole[start..whole.len() - 1];
        let mut rows = Vec::new();
        self.kv.len = 0;
        self.run(input, true, &mut rows)?;
        let first_row = input.len() - cont.len();
        let (mut ll, mut greedy) = (0.0, true);
        for (row, &t) in rows[first_row * vocab..].chunks_exact(vocab).zip(cont) {
            let (lp, g) = token_logprob(row, t);
            ll += lp;
            greedy &= g;
        }
        Ok(LogLikelihood {
            ll,
            is_greedy: greedy,
        })
    }
}

/// lm-eval's `get_rolling_token_windows(tokens, prefix, max_len, context_len=1)` followed
/// by `make_disjoint_window`: (context, predicted) pairs covering every token once.
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_len: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut out = Vec::new();
    if tokens.is_empty() || max_len == 0 {
        return out;
    }
    let first = max_len.min(tokens.len());
    out.push((vec![prefix], tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let n = (tokens.len() - predicted).min(max_len);
        let end = predicted + n;
        // The window's input is the max_len tokens before `end`; made disjoint, its context
        // is what precedes the predicted part.
        let input_start = end.saturating_sub(max_len + 1);
        let ctx = tokens[input_start..end - n].to_vec();
        out.push((ctx, tokens[end - n..end].to_vec()));
        predicted = end;
    }
    out
}

impl Backend for LocalBackend<'_> {
    fn loglikelihood(
        &mut self,
        context: &Context,
        continuations: &[String],
    ) -> Result<Vec<LogLikelihood>> {
        let (ctx, conts) = self.encode_pairs(context, continuations)?;
        if self.opts.prefix_sharing {
            self.score_shared(&ctx, &conts)
        } else {
            conts.iter().map(|c| self.score_scratch(&ctx, c)).collect()
        }
    }

    fn loglikelihood_rolling(&mut self, text: &str) -> Result<f64> {
        let tokens = self.model.encode(text, false, false);
        let prefix = self.prefix_token()?;
        let mut total = 0.0;
        for (ctx, pred) in rolling_windows(&tokens, prefix, self.opts.max_length) {
            total += self.score_scratch(&ctx, &pred)?.ll;
        }
        Ok(total)
    }

    fn generate(
        &mut self,
        context: &Context,
        until: &[String],
        max_gen_toks: usize,
    ) -> Result<String> {
        let ids = match context {
            Context::Text(t) => self.model.encode(t, true, false),
            Context::Chat(m) => self.model.chat_prompt(m)?,
        };
        self.generate_ids(ids, until, max_gen_toks)
    }

    fn tool_call(
        &mut self,
        question: &str,
        tools: &[serde_json::Value],
        max_gen_toks: usize,
    ) -> Result<ToolReply> {
        let dialog = tool_dialog(self.model, question, tools);
        let ids = self.model.chat_prompt(&dialog)?;
        let text = self.generate_ids(ids, &[], max_gen_toks)?;
        let calls = parse_calls(self.model, &text);
        Ok(ToolReply { text, calls })
    }
}

impl LocalBackend<'_> {
    /// Greedy generation after `ids`, cut at `until`.
    fn generate_ids(
        &mut self,
        mut ids: Vec<u32>,
        until: &[String],
        max_gen_toks: usize,
    ) -> Result<String> {
        // lm-eval keeps the last max_length − max_gen_toks tokens of the prompt.
        let room = self.opts.max_length.saturating_sub(max_gen_toks).max(1);
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        if ids.is_empty() {
            ids.push(self.prefix_token()?);
        }
        let mut logits = Vec::new();
        self.kv.len = 0;
        self.run(&ids, false, &mut logits)?;
        let mut bytes = Vec::new();
        for _ in 0..max_gen_toks {
            let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
            for (i, &v) in logits.iter().enumerate() {
                if v > max {
                    max = v;
                    best = i;
                }
            }
            let tok = best as u32;
            if self.model.is_stop(tok) {
                break;
            }
            bytes.extend_from_slice(self.model.token_bytes(tok));
            let text = String::from_utf8_lossy(&bytes);
            if until
                .iter()
                .any(|u| !u.is_empty() && text.contains(u.as_str()))
                || self.kv.len >= self.opts.max_length
            {
                break;
            }
            self.run(&[tok], false, &mut logits)?;
        }
        Ok(cut_at_stops(&String::from_utf8_lossy(&bytes), until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_windows_are_lm_evals() {
        // lm_eval.utils.get_rolling_token_windows(list(range(7)), prefix_token=-1 → 99,
        // max_seq_len=3, context_len=1) with make_disjoint_window:
        // ([99], [0,1,2]), ([2], [3,4,5]), ([3,4,5], [6]) — a short last window keeps more context.
        let t: Vec<u32> = (0..7).collect();
        let w = rolling_windows(&t, 99, 3);
        assert_eq!(
            w,
            vec![
                (vec![99], vec![0, 1, 2]),
                (vec![2], vec![3, 4, 5]),
                (vec![3, 4, 5], vec![6]),
            ]
        );
        assert_eq!(
            rolling_windows(&t[..2], 99, 3),
            vec![(vec![99], vec![0, 1])]
        );
    }
}
