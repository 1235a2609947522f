//! Per-sequence output of a step: sampling the next token (with constrained decoding and
//! its forced closing), stop rules, log-probabilities, and the events sent to the client.
//! The actor (`super`) decides which sequences run; this module decides what each one says.

use super::*;

pub(super) fn finish_early(s: &Seq, finish: Finish) {
    if !s.events.is_closed() {
        let _ = s.events.send(Event::Done(Done {
            finish,
            text: String::new(),
            prompt_tokens: s.req.prompt.len(),
            cached_tokens: s.cached_tokens,
            completion_tokens: s.generated,
            prompt_logprobs: Vec::new(),
            stop_token: None,
        }));
    }
}

/// Samples the next token of `s` from its logits row, streams it, and says whether the
/// sequence is done.
pub(super) fn sample_and_emit(
    model: &Model,
    trie: &mut Option<TokenTrie>,
    s: &mut Seq,
    logits: &[f32],
    stats: &EngineStats,
    now: Instant,
) -> Option<Done> {
    let eos_ok = |m: &Option<Progress>| m.as_ref().is_none_or(|m| m.is_complete());
    let next = match &s.matcher {
        Some(m) => {
            if m.is_complete() && !m.can_continue() {
                // The output is whole: nothing more may follow.
                return Some(done(FinishReason::Stop, s));
            }
            // Sample freely first; only when the pick breaks the constraint compute the
            // full mask (most picks of a model asked for JSON are already valid).
            let t = s.sampler.sample(logits, &s.tokens);
            let bytes = model.token_bytes(t);
            let eos_now = model.is_stop(t) && m.is_complete();
            if eos_now || (!bytes.is_empty() && m.accepts(bytes)) {
                t
            } else {
                let trie = trie.get_or_insert_with(|| build_trie(model));
                s.mask.clear();
                s.mask.resize(logits.len(), false);
                m.allowed_tokens(trie, &mut s.mask);
                if m.is_complete() {
                    for &e in model.stop_tokens() {
                        if let Some(x) = s.mask.get_mut(e as usize) {
                            *x = true;
                        }
                    }
                }
                s.row.clear();
                s.row.extend(
                    logits
                        .iter()
                        .zip(&s.mask)
                        .map(|(&x, &ok)| if ok { x } else { f32::NEG_INFINITY }),
                );
                if !s.mask.iter().any(|&b| b) {
                    // No token continues the output (cannot happen for a sound constraint).
                    return Some(done(FinishReason::Stop, s));
                }
                s.sampler.sample(&s.row, &s.tokens)
            }
        }
        _ => s.sampler.sample(logits, &s.tokens),
    };
    let logprob = (s.req.logprobs.is_some() || !s.req.watch.is_empty())
        .then(|| logprob_of(logits, next, s.req.logprobs.unwrap_or(0), &s.req.watch));
    if model.is_stop(next) && !s.req.ignore_eos && eos_ok(&s.matcher) {
        let mut d = done(FinishReason::Stop, s);
        d.stop_token = logprob.map(|lp| (next, lp));
        return Some(d);
    }
    // Timing: first token or inter-token gap.
    match s.last_token {
        None => stats
            .ttft
            .observe(now.duration_since(s.submitted).as_secs_f64()),
        Some(t) => stats.itl.observe(now.duration_since(t).as_secs_f64()),
    }
    s.last_token = Some(now);
    if push_token(model, s, next, logprob, stats) {
        return Some(Done {
            finish: Finish::Generation(FinishReason::StopString),
            text: String::new(),
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            prompt_logprobs: Vec::new(),
            stop_token: None,
        });
    }
    if s.matcher
        .as_ref()
        .is_some_and(|m| m.is_complete() && !m.can_continue())
    {
        return Some(done(FinishReason::Stop, s));
    }
    let room = s
        .req
        .max_tokens
        .min(s.ctx.saturating_sub(s.req.prompt.len()))
        .saturating_sub(s.generated);
    if let Some(m) = &s.matcher
        && room <= CLOSE_WINDOW
        && let Some(tail) = m.completion()
        // After a token that split a character the ending starts mid-character and cannot
        // be written as text; that case is left to run to max_tokens.
        && let Ok(tail) = std::str::from_utf8(&tail)
    {
        // The budget is nearly spent: if finishing the document takes all that is left,
        // finish it now with the shortest valid ending, so constrained output always parses
        // and validates even when max_tokens cuts it.
        let ids = model.encode(tail, false, false);
        if ids.len() + 1 >= room {
            for id in ids {
                // The ending is written whole even if a stop string matches inside it.
                push_token(model, s, id, None, stats);
            }
            return Some(done(FinishReason::Length, s));
        }
    }
    if s.generated >= s.req.max_tokens {
        return Some(done(FinishReason::Length, s));
    }
    if s.tokens.len() >= s.ctx {
        return Some(done(FinishReason::ContextFull, s));
    }
    None
}

/// Appends generated token `id` to `s`: history, counters, the JSON matcher, text decoding
/// and stop strings, then streams the text that became final. Returns whether a stop string
/// matched.
fn push_token(
    model: &Model,
    s: &mut Seq,
    id: u32,
    logprob: Option<TokenLogprob>,
    stats: &EngineStats,
) -> bool {
    stats.generated_tokens.fetch_add(1, Relaxed);
    s.generated += 1;
    s.tokens.push(id);
    let bytes = model.token_bytes(id);
    if let Some(m) = s.matcher.as_mut() {
        m.advance(bytes);
    }
    let piece = s.decoder.push_bytes(bytes);
    let (text, stopped) = match s.stops.push(&piece) {
        StopOutcome::Emit(t) => (t, false),
        StopOutcome::Stop(t) => (t, true),
    };
    let _ = s.events.send(Event::Token { id, text, logprob });
    stopped
}

/// Tokens left at which constrained sequences start checking whether they must close.
const CLOSE_WINDOW: usize = 48;

/// Ends a sequence normally: flushes text held back for UTF-8 or a stop string.
fn done(reason: FinishReason, s: &mut Seq) -> Done {
    let tail = s.decoder.finish();
    let rest = match s.stops.push(&tail) {
        StopOutcome::Emit(t) | StopOutcome::Stop(t) => t,
    };
    Done {
        finish: Finish::Generation(reason),
        text: rest + &s.stops.finish(),
        prompt_tokens: 0,
        cached_tokens: 0,
        completion_tokens: 0,
        prompt_logprobs: Vec::new(),
        stop_token: None,
    }
}

/// Records the log-probabilities of the prompt tokens that the rows of a chunk starting
/// at `pos0` predict (row `j` is the distribution after position `pos0 + j`). Only
/// positions not yet recorded are added, so a recomputed prompt adds nothing twice.
pub(super) fn score_prompt(s: &mut Seq, pos0: usize, rows: &[f32], vocab: usize) {
    let top = s.req.prompt_logprobs.unwrap_or(0);
    let prompt = &s.req.prompt;
    for (j, l) in rows.chunks_exact(vocab).enumerate() {
        let target = pos0 + j + 1;
        if target >= prompt.len() {
            break;
        }
        if target == s.prompt_lps.len() + 1 {
            s.prompt_lps.push(logprob_of(l, prompt[target], top, &[]));
        }
    }
}

/// Ends a scoring sequence (`max_tokens` 0) once its prompt is computed.
pub(super) fn score_only_done(s: &mut Seq) -> Done {
    done(FinishReason::Length, s)
}

fn build_trie(model: &Model) -> TokenTrie {
    let n = model.llama.config.vocab_size as u32;
    TokenTrie::new((0..n).map(|t| (t, model.token_bytes(t))))
}

/// log-softmax of `logits` at `token`, and the `n` most likely tokens with theirs.
fn logprob_of(logits: &[f32], token: u32, n: usize, watch: &[u32]) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    let lse = max + sum.ln() as f32;
    let lp = |x: f32| x - lse;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if top.len() < n || x > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, y)| y >= x);
                top.insert(at, (i as u32, x));
                top.truncate(n);
            }
        }
    }
    TokenLogprob {
        logprob: lp(logits
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY)),
        top: top.into_iter().map(|(t, x)| (t, lp(x))).collect(),
        watched: watch
            .iter()
            .map(|&t| lp(logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY)))
            .collect(),
    }
}
