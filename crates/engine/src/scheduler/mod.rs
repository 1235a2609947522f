//! The engine as a service: one actor thread owns the models, the KV memory and the thread
//! pool; requests arrive over a channel and results leave over one channel per request.
//!
//! Continuous batching: at every step the actor gathers one token from each decoding
//! sequence plus prompt chunks of sequences still prefilling (up to a token budget), and
//! runs them as one batched forward pass, so the weights are read once per step for all of
//! them. Sequences join and leave between any two steps. Prompts are cut in chunks so a long
//! prompt never stalls running streams for more than one step.
//!
//! KV memory is paged ([`crate::paged`]): a sequence takes blocks as it grows, shares the
//! blocks of a cached prefix, and gives them back as soon as it finishes or its client goes
//! away (a closed result channel). When memory runs out mid-run, the most recently admitted
//! sequence is preempted: its blocks are freed and it waits to be recomputed later (its own
//! finished blocks are usually still in the prefix cache then).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferrollama_model::{Adapter, KvCache, KvType, Logits, SeqChunk, State};
use ferrollama_tensor::ThreadPool;
use ferrollama_tokenizer::StreamDecoder;
use tokio::sync::mpsc as tmpsc;

use crate::constrain::{Constraint, Progress, TokenTrie};
use crate::generate::FinishReason;
use crate::lora::Lora;
use crate::metrics::EngineStats;
use crate::model::Model;
use crate::paged::{BlockPool, KV_BLOCK};
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::{StopOutcome, StopStrings};

mod emit;
use emit::{finish_early, sample_and_emit, score_only_done, score_prompt};

/// How the engine is sized.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub threads: usize,
    /// Tokens per step, all sequences together (decode rows plus prompt chunks).
    pub step_tokens: usize,
    /// Sequences running at once.
    pub max_running: usize,
    /// Requests waiting beyond which new ones are refused (the server answers 429).
    pub max_queue: usize,
    /// KV positions per model, all sequences together.
    pub kv_positions: usize,
    /// Longest context of one sequence.
    pub ctx: usize,
    pub kv_type: KvType,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 2,
            step_tokens: 256,
            max_running: 64,
            max_queue: 256,
            kv_positions: 32768,
            ctx: 4096,
            kv_type: KvType::F16,
        }
    }
}

/// One sequence to generate.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    /// Index into the engine's models.
    pub model: usize,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Keep going past end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
    /// Log-probabilities: `Some(n)` gives the chosen token's and the `n` most likely.
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt's own tokens (scoring, OpenAI's `echo` with
    /// `logprobs`): `Some(n)` reports, in [`Done::prompt_logprobs`], each prompt token's
    /// after the first with the `n` most likely alternatives. Such a sequence computes its
    /// whole prompt (no prefix-cache reuse: cached positions have no logits), and with
    /// `max_tokens` 0 it ends once the prompt is scored, generating nothing.
    pub prompt_logprobs: Option<usize>,
    /// Output must be a JSON document of this schema, or match this pattern.
    pub constraint: Option<Constraint>,
    /// Tokens whose log-probabilities (before any constraint) every token event reports in
    /// [`TokenLogprob::watched`], e.g. a classifier's `unsafe` token.
    pub watch: Vec<u32>,
    /// Give up (finish with `Timeout`) after this instant.
    pub deadline: Option<Instant>,
    /// A LoRA adapter of this model to run the sequence with (`None`: the base). The
    /// request holds it, so unloading the adapter meanwhile does not affect the sequence.
    pub lora: Option<Arc<Lora>>,
}

/// Log-probability of a generated token and its strongest alternatives.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// Log-probabilities of [`SeqRequest::watch`]'s tokens, in its order.
    pub watched: Vec<f32>,
}

/// What a sequence reports, in order: tokens, then exactly one `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Event {
    Token {
        id: u32,
        /// Text that became final with this token (may be empty: held back for a stop
        /// string or an incomplete UTF-8 character).
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done(Done),
    Error(String),
}

/// How a sequence ended.
#[derive(Debug, Clone)]
pub struct Done {
    pub finish: Finish,
    /// Text held back until the end (a partial stop-string match that never completed).
    pub text: String,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// With [`SeqRequest::prompt_logprobs`]: prompt tokens `1..` in order (the first token
    /// has no context, hence no log-probability). Empty otherwise.
    pub prompt_logprobs: Vec<TokenLogprob>,
    /// The stop token that ended the sequence ([`FinishReason::Stop`] on an end-of-text
    /// token) with its log-probability, when log-probabilities were asked for. It is not
    /// streamed (it has no text); the legacy completions API lists it as the generated
    /// token, which lm-evaluation-harness's `local-completions` counts on (`echo` with
    /// `max_tokens: 1`, dropping the last token's log-probability).
    pub stop_token: Option<(u32, TokenLogprob)>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Generation(FinishReason),
    /// The request's deadline passed.
    Timeout,
    /// The server shut down before the sequence ended (its drain grace period ran out).
    Shutdown,
    /// A shield flagged the conversation or the output (set by the server's moderation,
    /// which stops the sequence; the engine never ends one this way itself).
    ContentFilter,
}

/// Why a request was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is busy: {queued} requests are waiting; retry in a few seconds")]
    QueueFull { queued: usize, retry_after_s: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
}

enum Command {
    Submit(Box<Pending>),
    /// Stop taking requests; end what still runs at `deadline` (if any); report on
    /// `reply` (if any) once nothing runs.
    Shutdown {
        reply: Option<mpsc::Sender<()>>,
        deadline: Option<Instant>,
    },
    /// Add a model at runtime: the actor gives it KV memory and a slot, publishes it in
    /// the shared model list and replies with its index.
    Load {
        model: Arc<Model>,
        reply: mpsc::Sender<Result<usize, String>>,
    },
    /// Work for the engine's thread pool (an encoder such as Prompt Guard), run between
    /// two steps so it never competes with the forward passes for the cores.
    Run(PoolJob),
}

/// A closure run by the actor on its thread pool.
type PoolJob = Box<dyn FnOnce(&ThreadPool) + Send>;

struct Pending {
    req: SeqRequest,
    events: tmpsc::UnboundedSender<Event>,
    submitted: Instant,
}

/// A handle to the engine actor; clone it freely.
#[derive(Debug, Clone)]
pub struct Engine {
    tx: mpsc::Sender<Command>,
    /// Every model by index. Only the actor appends (after its slot exists, so a request
    /// for a visible index always finds its slot); models are never removed, so an index
    /// stays valid for the engine's life. Read locks are held only to clone an `Arc`.
    models: Arc<RwLock<Vec<Arc<Model>>>>,
    stats: Arc<EngineStats>,
    config: EngineConfig,
    /// Set by [`Engine::shutdown`]: new requests are refused from then on.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Submit(_) => "Submit",
            Command::Shutdown { .. } => "Shutdown",
            Command::Load { .. } => "Load",
            Command::Run(_) => "Run",
        })
    }
}

impl Engine {
    /// Starts the actor thread.
    pub fn start(models: Vec<Arc<Model>>, config: EngineConfig) -> crate::Result<Engine> {
        let stats = Arc::new(EngineStats::default());
        let mut slots = Vec::new();
        let blocks = kv_blocks(&config);
        for m in &models {
            slots.push(new_slot(m.clone(), &config)?);
        }
        stats
            .kv_blocks_total
            .store((blocks * models.len()) as u64, Relaxed);
        let models = Arc::new(RwLock::new(models));
        let (tx, rx) = mpsc::channel();
        let actor = Actor {
            rx,
            models: models.clone(),
            slots,
            pool: ThreadPool::new(config.threads.max(1)),
            stats: stats.clone(),
            config: config.clone(),
            shutting_down: false,
            drain_deadline: None,
            next_id: 0,
            scratch_seqs: Vec::new(),
            chunk_buf: Vec::new(),
            adapter_buf: Vec::new(),
            drained: Vec::new(),
        };
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || actor.run())
            .map_err(|e| crate::EngineError::Invalid(format!("cannot start the engine: {e}")))?;
        Ok(Engine {
            tx,
            models,
            stats,
            config,
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Every model, by index (a snapshot: a model loaded later is not in it).
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Model `i`.
    pub fn model(&self, i: usize) -> Option<Arc<Model>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
    }

    /// Adds `model` to the running engine and returns its index. Blocks until the actor
    /// has given it KV memory (between two steps; running requests go on), so call it
    /// off the async runtime.
    pub fn load(&self, model: Arc<Model>) -> crate::Result<usize> {
        if self.closed.load(Relaxed) {
            return Err(crate::EngineError::Invalid(
                "the server is shutting down".into(),
            ));
        }
        let (tx, rx) = mpsc::channel();
        let gone = || crate::EngineError::Invalid("the engine has stopped".into());
        self.tx
            .send(Command::Load { model, reply: tx })
            .map_err(|_| gone())?;
        rx.recv()
            .map_err(|_| gone())?
            .map_err(crate::EngineError::Invalid)
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Positions one sequence of model `model` may use (prompt and output together).
    pub fn context(&self, model: usize) -> Option<usize> {
        self.model(model).map(|m| context_of(&self.config, &m))
    }

    /// Queues a sequence; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the sequence and frees its memory at the next step.
    pub fn submit(&self, req: SeqRequest) -> Result<tmpsc::UnboundedReceiver<Event>, SubmitError> {
        if self.closed.load(Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let Some(model) = self.model(req.model) else {
            return Err(SubmitError::Invalid(format!("no model {}", req.model)));
        };
        if req.prompt.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        let vocab = model.llama.config.vocab_size;
        if let Some(t) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            // Checked here: in the step it would fail every sequence of the batch.
            return Err(SubmitError::Invalid(format!(
                "token id {t} is outside the vocabulary ({vocab} tokens)"
            )));
        }
        let ctx = context_of(&self.config, &model);
        if req.prompt.len() >= ctx {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {} tokens but the context holds {ctx}; shorten it",
                req.prompt.len()
            )));
        }
        req.sampler.validate().map_err(SubmitError::Invalid)?;
        if let Some(l) = &req.lora {
            // Checked here, not in the step: a misfit adapter there would fail the whole batch.
            l.adapter
                .check(&model.llama.config)
                .map_err(|e| SubmitError::Invalid(format!("adapter {}: {e}", l.name)))?;
        }
        let queued = self.stats.queue_depth.load(Relaxed) as usize;
        if queued >= self.config.max_queue {
            return Err(SubmitError::QueueFull {
                queued,
                retry_after_s: 2,
            });
        }
        let (etx, erx) = tmpsc::unbounded_channel();
        self.stats.queue_depth.fetch_add(1, Relaxed);
        let p = Pending {
            req,
            events: etx,
            submitted: Instant::now(),
        };
        if self.tx.send(Command::Submit(Box::new(p))).is_err() {
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(erx)
    }

    /// Runs `f` on the engine's thread pool between two steps and sends back its result.
    /// For work that is not a Llama forward pass (encoder classifiers, embeddings): it
    /// shares the cores with generation instead of oversubscribing them. Running streams
    /// pause while `f` runs, so keep each call short (one 512-token window, say).
    pub fn run_on_pool<R, F>(&self, f: F) -> Result<tokio::sync::oneshot::Receiver<R>, SubmitError>
    where
        R: Send + 'static,
        F: FnOnce(&ThreadPool) -> R + Send + 'static,
    {
        if self.closed.load(Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: PoolJob = Box::new(move |pool| {
            let _ = tx.send(f(pool));
        });
        self.tx
            .send(Command::Run(job))
            .map_err(|_| SubmitError::ShuttingDown)?;
        Ok(rx)
    }

    /// Stops taking requests, lets running and queued ones finish (or end at the deadline
    /// of [`Engine::begin_shutdown`]), then stops the actor. Blocks until it has stopped.
    pub fn shutdown(&self) {
        self.closed.store(true, Relaxed);
        let (tx, rx) = mpsc::channel();
        let c = Command::Shutdown {
            reply: Some(tx),
            deadline: None,
        };
        if self.tx.send(c).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Starts a shutdown without waiting: new requests are refused from now on, and
    /// sequences still running after `grace` end with [`Finish::Shutdown`] (a proper final
    /// event, with the text so far). Call [`Engine::shutdown`] afterwards to wait.
    pub fn begin_shutdown(&self, grace: Duration) {
        self.closed.store(true, Relaxed);
        let _ = self.tx.send(Command::Shutdown {
            reply: None,
            deadline: Some(Instant::now() + grace),
        });
    }

    /// Whether a shutdown has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }
}

/// KV blocks per model.
fn kv_blocks(config: &EngineConfig) -> usize {
    config.kv_positions.div_ceil(KV_BLOCK).max(1)
}

/// A model's slot: its own KV memory, forward-pass state and queues.
fn new_slot(model: Arc<Model>, config: &EngineConfig) -> crate::Result<Slot> {
    let blocks = kv_blocks(config);
    let kv = KvCache::with_blocks(&model.llama.config, blocks, config.kv_type)?;
    let state = model
        .llama
        .new_state(config.step_tokens.max(1), config.ctx, config.threads.max(1));
    Ok(Slot {
        model,
        kv,
        state,
        pool: BlockPool::new(blocks),
        trie: None,
        waiting: VecDeque::new(),
        running: Vec::new(),
    })
}

/// The engine's per-sequence context, capped by what the model was trained for.
fn context_of(config: &EngineConfig, model: &Model) -> usize {
    config.ctx.min(model.llama.config.max_seq_len.max(1))
}

/// One model with its own KV memory and queues.
struct Slot {
    model: Arc<Model>,
    kv: KvCache,
    state: State,
    pool: BlockPool,
    trie: Option<TokenTrie>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
}

struct Seq {
    id: u64,
    req: SeqRequest,
    events: tmpsc::UnboundedSender<Event>,
    /// Prompt, then every generated token (the last one possibly not yet computed).
    tokens: Vec<u32>,
    /// Positions whose keys and values are in the cache.
    computed: usize,
    blocks: Vec<u32>,
    /// Full blocks named in the prefix cache, and the last one's name.
    named: usize,
    chain: u64,
    cached_tokens: usize,
    generated: usize,
    sampler: Sampler,
    stops: StopStrings,
    decoder: StreamDecoder,
    matcher: Option<Progress>,
    submitted: Instant,
    last_token: Option<Instant>,
    /// Work scheduled for this step: tokens[computed..computed + chunk].
    chunk: usize,
    /// Positions this sequence may reach.
    ctx: usize,
    /// Scratch logits row (constrained or penalized sampling).
    row: Vec<f32>,
    mask: Vec<bool>,
    /// Prompt log-probabilities gathered so far (see [`SeqRequest::prompt_logprobs`]);
    /// kept across a preemption, the recomputation only appends what is missing.
    prompt_lps: Vec<TokenLogprob>,
}

impl Seq {
    /// Whether prompt positions still need their logits computed for scoring.
    fn scoring(&self) -> bool {
        self.req.prompt_logprobs.is_some() && self.prompt_lps.len() + 1 < self.req.prompt.len()
    }
}

struct Actor {
    rx: mpsc::Receiver<Command>,
    /// The list the handles read; the actor appends a loaded model here after its slot.
    models: Arc<RwLock<Vec<Arc<Model>>>>,
    slots: Vec<Slot>,
    pool: ThreadPool,
    stats: Arc<EngineStats>,
    config: EngineConfig,
    shutting_down: bool,
    /// When a draining shutdown ends what still runs.
    drain_deadline: Option<Instant>,
    next_id: u64,
    scratch_seqs: Vec<(usize, usize, usize, Logits)>,
    /// The batch's chunk list, kept between steps so stepping does not allocate.
    chunk_buf: Vec<SeqChunk<'static>>,
    /// The batch's adapters, one per chunk, kept likewise.
    adapter_buf: Vec<Option<&'static Adapter>>,
    drained: Vec<mpsc::Sender<()>>,
}

/// An emptied vector of chunks with another borrow lifetime, same allocation (in-place
/// collection reuses the buffer when the element layout is the same, as here).
fn recycle<'b>(mut v: Vec<SeqChunk<'_>>) -> Vec<SeqChunk<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

/// [`recycle`] for the adapter list.
fn recycle_adapters<'b>(mut v: Vec<Option<&'_ Adapter>>) -> Vec<Option<&'b Adapter>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

impl Actor {
    fn run(mut self) {
        loop {
            let busy = self
                .slots
                .iter()
                .any(|s| !s.running.is_empty() || !s.waiting.is_empty());
            if !busy && self.shutting_down {
                for d in self.drained.drain(..) {
                    let _ = d.send(());
                }
                return;
            }
            // Idle: sleep until a command comes. Busy: take what has arrived and go on.
            if !busy {
                match self.rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => return,
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.command(c);
            }
            for si in 0..self.slots.len() {
                self.reap(si);
                self.admit(si);
            }
            // Published before the step too: a client may see its first token before the
            // step ends, and then must find its sequence counted as running.
            self.publish();
            for si in 0..self.slots.len() {
                self.step(si);
            }
            self.publish();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Submit(p) => {
                let p = *p;
                let si = p.req.model;
                let model = &self.slots[si].model;
                let n_vocab = model.llama.config.vocab_size;
                let constrained = p.req.constraint.is_some();
                let seq = Seq {
                    id: self.next_id,
                    sampler: Sampler::new(p.req.sampler.clone()),
                    stops: StopStrings::new(p.req.stop.clone()),
                    decoder: StreamDecoder::new(),
                    matcher: p.req.constraint.as_ref().map(Constraint::start),
                    tokens: p.req.prompt.clone(),
                    computed: 0,
                    blocks: Vec::new(),
                    named: 0,
                    chain: 0,
                    cached_tokens: 0,
                    generated: 0,
                    submitted: p.submitted,
                    last_token: None,
                    ctx: context_of(&self.config, model),
                    chunk: 0,
                    row: Vec::with_capacity(if constrained { n_vocab } else { 0 }),
                    mask: Vec::with_capacity(if constrained { n_vocab } else { 0 }),
                    prompt_lps: Vec::new(),
                    events: p.events,
                    req: p.req,
                };
                self.next_id += 1;
                if self.shutting_down {
                    let _ = seq
                        .events
                        .send(Event::Error("the server is shutting down".into()));
                    self.stats.queue_depth.fetch_sub(1, Relaxed);
                    return;
                }
                self.slots[si].waiting.push_back(seq);
            }
            Command::Shutdown { reply, deadline } => {
                self.shutting_down = true;
                if let Some(d) = deadline {
                    self.drain_deadline = Some(self.drain_deadline.map_or(d, |e| e.min(d)));
                }
                self.drained.extend(reply);
            }
            Command::Load { model, reply } => {
                let r = if self.shutting_down {
                    Err("the server is shutting down".to_string())
                } else {
                    match new_slot(model.clone(), &self.config) {
                        Ok(slot) => {
                            self.slots.push(slot);
                            let mut list = self.models.write().unwrap_or_else(|e| e.into_inner());
                            list.push(model);
                            let i = list.len() - 1;
                            drop(list);
                            self.stats
                                .kv_blocks_total
                                .fetch_add(kv_blocks(&self.config) as u64, Relaxed);
                            Ok(i)
                        }
                        Err(e) => Err(format!("cannot allocate the model's KV memory: {e}")),
                    }
                };
                let _ = reply.send(r);
            }
            Command::Run(job) => job(&self.pool),
        }
    }

    /// Drops sequences whose client went away or whose deadline passed.
    fn reap(&mut self, si: usize) {
        let now = Instant::now();
        let slot = &mut self.slots[si];
        let drained = self.drain_deadline.is_some_and(|d| now >= d);
        let gone = |s: &Seq| {
            if drained {
                Some(Finish::Shutdown)
            } else if s.events.is_closed() || s.req.deadline.is_some_and(|d| now >= d) {
                Some(Finish::Timeout)
            } else {
                None
            }
        };
        let mut i = 0;
        while i < slot.running.len() {
            if let Some(f) = gone(&slot.running[i]) {
                let s = slot.running.swap_remove(i);
                finish_early(&s, f);
                slot.pool.release(&s.blocks);
            } else {
                i += 1;
            }
        }
        let before = slot.waiting.len();
        slot.waiting.retain(|s| match gone(s) {
            Some(f) => {
                finish_early(s, f);
                false
            }
            None => true,
        });
        let dropped = before - slot.waiting.len();
        self.stats.queue_depth.fetch_sub(dropped as u64, Relaxed);
    }

    /// Moves waiting sequences to running while memory and the running cap allow.
    fn admit(&mut self, si: usize) {
        let cap = self.config.max_running;
        let slot = &mut self.slots[si];
        while slot.running.len() < cap {
            let Some(seq) = slot.waiting.front() else {
                break;
            };
            // The whole prompt must fit now, plus one block per running sequence of slack so
            // that admission does not immediately force a preemption.
            let need = seq.tokens.len().div_ceil(KV_BLOCK) + 1;
            if need + slot.running.len() > slot.pool.available() && !slot.running.is_empty() {
                break;
            }
            let Some(mut seq) = slot.waiting.pop_front() else {
                break;
            };
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            // Reuse a cached prefix; the last token is always computed to get its logits.
            let max_blocks = if seq.scoring() {
                0
            } else {
                (seq.tokens.len() - 1) / KV_BLOCK
            };
            seq.blocks.clear();
            let seed = seq.req.lora.as_ref().map_or(0, |l| l.chain_seed());
            seq.chain = slot
                .pool
                .lookup_from(seed, &seq.tokens, max_blocks, &mut seq.blocks);
            seq.named = seq.blocks.len();
            seq.computed = seq.blocks.len() * KV_BLOCK;
            if seq.generated == 0 {
                seq.cached_tokens = seq.computed;
                self.stats
                    .prompt_tokens
                    .fetch_add(seq.tokens.len() as u64, Relaxed);
                self.stats
                    .cached_prompt_tokens
                    .fetch_add(seq.computed as u64, Relaxed);
            }
            slot.running.push(seq);
        }
    }

    /// One batched forward pass over this model's running sequences.
    fn step(&mut self, si: usize) {
        let budget = self.config.step_tokens.max(1);
        let slot = &mut self.slots[si];
        if slot.running.is_empty() {
            return;
        }
        // Decode rows first (one token each: streams keep their pace), then prompt chunks
        // in arrival order with what is left of the budget.
        let mut used = 0;
        for s in slot.running.iter_mut() {
            s.chunk = 0;
            if s.tokens.len() - s.computed == 1 {
                s.chunk = 1;
                used += 1;
            }
        }
        for s in slot.running.iter_mut() {
            let left = s.tokens.len() - s.computed;
            if left > 1 && used < budget {
                s.chunk = left.min(budget - used);
                used += s.chunk;
            }
        }
        // Blocks for the new positions; preempt the newest sequences when memory runs out.
        let mut i = 0;
        while i < slot.running.len() {
            let need = (slot.running[i].computed + slot.running[i].chunk).div_ceil(KV_BLOCK);
            let mut ok = true;
            while slot.running[i].blocks.len() < need {
                match slot.pool.alloc() {
                    Some(b) => slot.running[i].blocks.push(b),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                i += 1;
                continue;
            }
            // Preempt the most recently admitted other sequence, or this one if alone.
            let victim = (0..slot.running.len())
                .filter(|&j| j != i)
                .max_by_key(|&j| slot.running[j].id)
                .unwrap_or(i);
            let mut v = slot.running.remove(victim);
            slot.pool.release(&v.blocks);
            v.blocks.clear();
            v.computed = 0;
            v.named = 0;
            v.chain = v.req.lora.as_ref().map_or(0, |l| l.chain_seed());
            v.chunk = 0;
            self.stats.preemptions.fetch_add(1, Relaxed);
            if slot.running.is_empty() && victim == i {
                // Alone and still no room: the memory is smaller than this sequence needs.
                let _ = v.events.send(Event::Error(
                    "the KV cache is too small for this request; shorten the prompt or max_tokens, or start the server with a larger --kv-size".into(),
                ));
                continue;
            }
            slot.waiting.push_front(v);
            self.stats.queue_depth.fetch_add(1, Relaxed);
            if victim < i {
                i -= 1;
            }
        }
        if slot.running.iter().all(|s| s.chunk == 0) {
            return;
        }
        // The batch, in running order.
        self.scratch_seqs.clear();
        for (k, s) in slot.running.iter().enumerate() {
            if s.chunk > 0 {
                let logits = if s.scoring() && s.computed + 1 < s.req.prompt.len() {
                    Logits::All
                } else if s.computed + s.chunk == s.tokens.len() {
                    Logits::Last
                } else {
                    Logits::None
                };
                self.scratch_seqs.push((k, s.computed, s.chunk, logits));
            }
        }
        // Rows of one adapter next to each other (the base's first), so its matrices stay
        // in cache while its rows are updated; unstable sort: no allocation.
        let key = |s: &Seq| s.req.lora.as_ref().map_or(0, |l| Arc::as_ptr(l) as usize);
        self.scratch_seqs
            .sort_unstable_by_key(|&(k, ..)| (key(&slot.running[k]), k));
        let mut adapters = recycle_adapters(std::mem::take(&mut self.adapter_buf));
        adapters.extend(
            self.scratch_seqs
                .iter()
                .map(|&(k, ..)| slot.running[k].req.lora.as_deref().map(|l| &l.adapter)),
        );
        if adapters.iter().all(Option::is_none) {
            adapters.clear();
        }
        let mut chunks = recycle(std::mem::take(&mut self.chunk_buf));
        chunks.extend(self.scratch_seqs.iter().map(|&(k, pos0, n, logits)| {
            let s = &slot.running[k];
            SeqChunk {
                tokens: &s.tokens[pos0..pos0 + n],
                pos0,
                blocks: &s.blocks,
                logits,
            }
        }));
        let result = slot.model.llama.forward_batch_lora(
            &self.pool,
            &chunks,
            &adapters,
            &mut slot.kv,
            &mut slot.state,
        );
        self.chunk_buf = recycle(chunks);
        self.adapter_buf = recycle_adapters(adapters);
        self.stats.steps.fetch_add(1, Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // A fault of ours (inputs were checked at submission): fail this step's
                // sequences rather than the whole server.
                tracing::error!("forward pass failed: {e}");
                for &(k, ..) in &self.scratch_seqs {
                    let s = &slot.running[k];
                    let _ = s
                        .events
                        .send(Event::Error("internal error in the forward pass".into()));
                }
                let mut ks: Vec<usize> = self.scratch_seqs.iter().map(|x| x.0).collect();
                ks.sort_unstable();
                for &k in ks.iter().rev() {
                    let s = slot.running.remove(k);
                    slot.pool.release(&s.blocks);
                }
                return;
            }
        };
        let vocab = slot.model.llama.config.vocab_size;
        let now = Instant::now();
        let mut row = 0;
        let mut finished = Vec::new();
        for &(k, pos0, n, lg) in &self.scratch_seqs {
            let s = &mut slot.running[k];
            s.computed += n;
            // Name the blocks this step completed.
            while (s.named + 1) * KV_BLOCK <= s.computed {
                let b = s.blocks[s.named];
                let toks = &s.tokens[s.named * KV_BLOCK..(s.named + 1) * KV_BLOCK];
                s.chain = slot.pool.name(b, s.chain, toks);
                s.named += 1;
            }
            let l = match lg {
                Logits::None => continue,
                Logits::Last => {
                    row += 1;
                    &logits[(row - 1) * vocab..row * vocab]
                }
                Logits::All => {
                    let rows = &logits[row * vocab..(row + n) * vocab];
                    row += n;
                    score_prompt(s, pos0, rows, vocab);
                    if s.computed < s.tokens.len() {
                        continue;
                    }
                    // The chunk's last row is the next-token distribution.
                    &rows[(n - 1) * vocab..]
                }
            };
            let next = if s.req.max_tokens == 0 {
                Some(score_only_done(s))
            } else {
                sample_and_emit(&slot.model, &mut slot.trie, s, l, &self.stats, now)
            };
            if let Some(done) = next {
                finished.push((k, done));
            }
        }
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (k, done) in finished {
            let s = slot.running.remove(k);
            slot.pool.release(&s.blocks);
            let _ = s.events.send(Event::Done(Done {
                prompt_tokens: s.req.prompt.len(),
                cached_tokens: s.cached_tokens,
                completion_tokens: s.generated,
                prompt_logprobs: s.prompt_lps,
                ..done
            }));
        }
    }

    fn publish(&self) {
        let (mut used, mut cached, mut running) = (0, 0, 0);
        for s in &self.slots {
            used += s.pool.used();
            cached += s.pool.cached();
            running += s.running.len();
        }
        self.stats.kv_blocks_used.store(used as u64, Relaxed);
        self.stats.kv_blocks_cached.store(cached as u64, Relaxed);
        self.stats.running.store(running as u64, Relaxed);
    }
}

/// How long a request may wait before it is refused, for `Retry-After`.
pub fn retry_after(e: &SubmitError) -> Option<Duration> {
    match e {
        SubmitError::QueueFull { retry_after_s, .. } => Some(Duration::from_secs(*retry_after_s)),
        _ => None,
    }
}
