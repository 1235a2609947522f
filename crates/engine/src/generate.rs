//! One sequence from prompt to finish: chunked prefill, then sample, stop checks and
//! streaming, token by token.

use std::time::Instant;

use ferrollama_model::{Adapter, KvCache, KvType, State};
use ferrollama_tensor::ThreadPool;
use ferrollama_tokenizer::StreamDecoder;

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::{StopOutcome, StopStrings};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn / end-of-text token.
    Stop,
    /// A stop string matched.
    StopString,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    ContextFull,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// A context: thread pool, KV cache and scratch buffers for one sequence at a time.
#[derive(Debug)]
pub struct Session {
    pub pool: ThreadPool,
    pub kv: KvCache,
    pub state: State,
    /// Tokens per prefill call.
    pub n_batch: usize,
    /// The ids whose keys and values are in the cache, in order.
    pub tokens: Vec<u32>,
    /// A LoRA adapter applied on top of the model (`run`/`chat --lora`). Changing it
    /// invalidates the cache: call [`Session::set_adapter`], which resets it.
    adapter: Option<std::sync::Arc<Adapter>>,
}

impl Session {
    pub fn new(
        model: &Model,
        ctx: usize,
        threads: usize,
        n_batch: usize,
        kv_type: KvType,
    ) -> Result<Session> {
        let pool = ThreadPool::new(threads);
        let kv = KvCache::new(&model.llama.config, ctx, kv_type)?;
        let state = model.llama.new_state(n_batch, ctx, pool.n_threads());
        Ok(Session {
            pool,
            kv,
            state,
            n_batch,
            tokens: Vec::new(),
            adapter: None,
        })
    }

    /// Runs the model with `adapter` from now on (`None`: the base). The cache was computed
    /// with the previous weights, so it is forgotten.
    pub fn set_adapter(&mut self, adapter: Option<std::sync::Arc<Adapter>>) {
        self.adapter = adapter;
        self.reset();
    }

    /// The adapter in use.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_deref()
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.kv.len = 0;
        self.tokens.clear();
    }

    /// Makes the cache hold exactly `prompt` and returns the last token's logits. The part
    /// of `prompt` already in the cache (a shared prefix, e.g. the earlier turns of a chat)
    /// is kept; only the rest is computed, in chunks of `n_batch`.
    pub fn prefill(&mut self, model: &Model, prompt: &[u32]) -> Result<&[f32]> {
        if prompt.is_empty() {
            return Err(EngineError::Invalid("empty prompt".into()));
        }
        let shared = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // At least the last prompt token is recomputed, to get its logits.
        let keep = shared.min(prompt.len() - 1);
        self.kv.len = keep;
        self.tokens.truncate(keep);
        let tokens = &prompt[keep..];
        self.tokens.extend_from_slice(tokens);
        let chunks: Vec<&[u32]> = tokens.chunks(self.n_batch).collect();
        let last = chunks.len() - 1;
        let adapter = self.adapter.as_deref();
        for chunk in &chunks[..last] {
            model.llama.forward_lora(
                &self.pool,
                chunk,
                &mut self.kv,
                &mut self.state,
                false,
                adapter,
            )?;
        }
        Ok(model.llama.forward_lora(
            &self.pool,
            chunks[last],
            &mut self.kv,
            &mut self.state,
            false,
            adapter,
        )?)
    }
}

/// Generates a continuation of `prompt` (the whole context: earlier turns are reused from
/// the cache when they match), calling `on_text` with each piece of visible text as soon as
/// it is final.
pub fn generate(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    params.sampler.validate().map_err(EngineError::Invalid)?;
    let ctx = session.kv.ctx();
    if prompt.len() >= ctx {
        return Err(EngineError::Invalid(format!(
            "the prompt ({} tokens) does not fit the context ({ctx} tokens)",
            prompt.len()
        )));
    }
    let mut sampler = Sampler::new(params.sampler.clone());
    let mut stops = StopStrings::new(params.stop.clone());
    let mut decoder = StreamDecoder::new();
    let mut history: Vec<u32> = prompt.to_vec();
    let mut out_tokens = Vec::new();
    let mut text = String::new();

    let t0 = Instant::now();
    let mut next = sampler.sample(session.prefill(model, prompt)?, &history);
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut emit = |s: &str, text: &mut String| {
        if !s.is_empty() {
            text.push_str(s);
            on_text(s);
        }
    };
    let finish = loop {
        if model.is_stop(next) {
            break FinishReason::Stop;
        }
        out_tokens.push(next);
        history.push(next);
        let piece = decoder.push_bytes(model.token_bytes(next));
        match stops.push(&piece) {
            StopOutcome::Emit(s) => emit(&s, &mut text),
            StopOutcome::Stop(s) => {
                emit(&s, &mut text);
                break FinishReason::StopString;
            }
        }
        if out_tokens.len() >= params.max_tokens {
            break FinishReason::Length;
        }
        if session.kv.len + 1 >= ctx {
            break FinishReason::ContextFull;
        }
        session.tokens.push(next);
        let logits = model.llama.forward_lora(
            &session.pool,
            &[next],
            &mut session.kv,
            &mut session.state,
            false,
            session.adapter.as_deref(),
        )?;
        next = sampler.sample(logits, &history);
    };
    if finish != FinishReason::StopString {
        let tail = decoder.finish();
        let rest = match stops.push(&tail) {
            StopOutcome::Emit(s) | StopOutcome::Stop(s) => s,
        };
        emit(&(rest + &stops.finish()), &mut text);
    }
    Ok(Generation {
        tokens: out_tokens,
        text,
        finish,
        prompt_tokens: prompt.len(),
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    })
}
