//! The training loop: full fine-tuning around [`forward_backward`] (which
//! `tests/pytorch_pin.rs` pins to PyTorch) or LoRA around [`forward_backward_lora`] (pinned
//! to PEFT by `tests/peft_pin.rs`), with data order, checkpoints and evaluation. The loss
//! is the cross-entropy of the counted tokens, or DPO's over preference pairs
//! ([`Examples::Preference`], [`crate::dpo`]), or distillation's from a teacher's logits
//! ([`Trainer::with_teacher`], [`crate::distill`]).
//!
//! [`forward_backward`]: crate::model::forward_backward
//! [`forward_backward_lora`]: crate::model::forward_backward_lora
//!
//! One optimizer step reads `grad_accum` micro-batches of `batch_size` sequences. Each
//! micro-batch's gradient is scaled by `1 / (counted tokens · grad_accum)`, so the step's
//! loss is the mean over each micro-batch's counted tokens, averaged over micro-batches,
//! exactly as the pinned test (and PyTorch recipes that normalize per micro-batch). Then
//! global-norm clipping, AdamW, and the cosine schedule with linear warmup.
//!
//! The data is one stream of epochs, each a fresh seeded permutation of the sequences;
//! micro-batches run across epoch boundaries, so every step is full. Everything a step
//! depends on (parameters, moments, step, epoch, position, RNG state) is in the checkpoint,
//! which is why a resumed run repeats an uninterrupted one bit for bit.

use std::path::Path;
use std::time::Instant;

use ferrollama_tensor::ThreadPool;
use serde_json::{Value, json};

use crate::checkpoint::{self, Checkpoint, Progress, Tuned};
use crate::data::PreferencePair;
use crate::distill::{self, Teacher};
use crate::dpo::{self, DpoData, DpoMetrics, PairLogps};
use crate::error::{Result, TrainError};
use crate::frozen_base::FrozenBase;
use crate::lora::Lora;
use crate::model::{Grads, Item, PassOptions, Sequence, Shape, loss, loss_lora, pass};
use crate::ops::dropout::mix;
use crate::optim::{AdamW, AdamWConfig, clip_coefficient, cosine_lr, grad_norm_on, zero_on};
use crate::params::{ParamSet, Params};
use crate::rng::SplitMix64;

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Optimizer steps.
    Steps(u64),
    /// Passes over the training sequences, rounded up to whole steps.
    Epochs(u64),
}

/// Hyperparameters of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub length: Length,
    /// Peak learning rate, reached after `warmup` steps.
    pub lr: f64,
    pub warmup: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient norm limit (PyTorch's `clip_grad_norm_`).
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    /// Seed of the data order.
    pub seed: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Activation recomputation: less memory, about a third more compute.
    pub recompute: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            length: Length::Epochs(1),
            lr: 1e-5,
            warmup: 0,
            batch_size: 1,
            grad_accum: 1,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            seed: 0,
            eval_every: 0,
            checkpoint_every: 0,
            recompute: false,
        }
    }
}

impl TrainConfig {
    /// The configuration as checkpoints store it.
    pub fn to_json(&self) -> Value {
        let (steps, epochs) = match self.length {
            Length::Steps(n) => (Some(n), None),
            Length::Epochs(n) => (None, Some(n)),
        };
        let a = self.adamw;
        json!({
            "steps": steps, "epochs": epochs, "lr": self.lr, "warmup": self.warmup,
            "batch_size": self.batch_size, "grad_accum": self.grad_accum,
            "max_grad_norm": self.max_grad_norm, "seed": self.seed,
            "eval_every": self.eval_every, "checkpoint_every": self.checkpoint_every,
            "recompute": self.recompute,
            "adamw": {"beta1": a.beta1, "beta2": a.beta2, "eps": a.eps,
                      "weight_decay": a.weight_decay},
        })
    }

    /// Reads [`TrainConfig::to_json`] back; `None` when a field is missing.
    pub fn from_json(v: &Value) -> Option<TrainConfig> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let a = v.get("adamw")?;
        let af = |k: &str| a.get(k).and_then(Value::as_f64);
        let length = match (u("steps"), u("epochs")) {
            (Some(n), _) => Length::Steps(n),
            (None, Some(n)) => Length::Epochs(n),
            (None, None) => return None,
        };
        Some(TrainConfig {
            length,
            lr: f("lr")?,
            warmup: u("warmup")?,
            batch_size: usize::try_from(u("batch_size")?).ok()?,
            grad_accum: usize::try_from(u("grad_accum")?).ok()?,
            max_grad_norm: f("max_grad_norm")?,
            adamw: AdamWConfig {
                beta1: af("beta1")?,
                beta2: af("beta2")?,
                eps: af("eps")?,
                weight_decay: af("weight_decay")?,
            },
            seed: u("seed")?,
            eval_every: u("eval_every")?,
            checkpoint_every: u("checkpoint_every")?,
            recompute: v.get("recompute")?.as_bool()?,
        })
    }
}

/// One optimizer step, as the progress bar and `--json` show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    /// Steps completed, counting this one (1-based).
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    /// Mean loss over counted tokens (per micro-batch, averaged over micro-batches).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Positions the step ran through the model.
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// DPO's metrics over the step's pairs (TRL's rewards, accuracy, margins).
    pub dpo: Option<DpoMetrics>,
}

/// What [`Trainer::run`] reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Step(StepRecord),
    /// Mean loss per counted token on the evaluation sequences after `step` steps.
    Eval {
        step: u64,
        loss: f64,
    },
    Checkpoint {
        step: u64,
    },
    /// DPO's metrics on the evaluation pairs after `step` steps.
    EvalDpo {
        step: u64,
        metrics: DpoMetrics,
    },
}

/// What a run trains on.
#[derive(Debug, Clone, PartialEq)]
pub enum Examples {
    /// Sequences with loss masks: supervised fine-tuning, continued pretraining, and
    /// distillation (with [`Trainer::with_teacher`]).
    Sequences(Vec<Sequence>),
    /// Preference pairs: DPO.
    Preference(DpoData),
}

impl Examples {
    /// Sequences or pairs: what an epoch counts.
    pub fn len(&self) -> usize {
        match self {
            Examples::Sequences(s) => s.len(),
            Examples::Preference(d) => d.pairs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<Sequence>> for Examples {
    fn from(s: Vec<Sequence>) -> Examples {
        Examples::Sequences(s)
    }
}

impl From<DpoData> for Examples {
    fn from(d: DpoData) -> Examples {
        Examples::Preference(d)
    }
}

/// Gradient buffers of what is trained.
#[derive(Debug)]
enum GradBuf {
    Full(Params<f32>),
    Lora(Lora<f32>),
}

/// A training run: what is trained (every f32 master weight, or a LoRA adapter over the
/// frozen weights) with its AdamW state, and the data order.
#[derive(Debug)]
pub struct Trainer {
    pub config: TrainConfig,
    pub shape: Shape,
    /// The model: trained (full fine-tuning) or frozen (LoRA over f32 parameters); an
    /// empty [`Params::shell`] when LoRA runs over `stored`.
    pub params: Params<f32>,
    /// The frozen base in its stored type (F16, Q8_0, Q4_K...), for LoRA.
    pub stored: Option<FrozenBase>,
    pub tuned: Tuned,
    /// A description of the base model, saved in checkpoints (a resumed LoRA run is
    /// checked against it).
    pub base: Option<String>,
    /// What the run minimizes and with which settings (DPO's β, the teacher and its top-k...),
    /// saved in checkpoints under `config.objective`: a resumed run is checked against it.
    pub objective: Option<serde_json::Value>,
    pub progress: Progress,
    data: Examples,
    /// Distillation from logits: the teacher whose top-k the student learns.
    teacher: Option<Teacher>,
    /// DPO: held-out pairs and their reference log-probabilities.
    eval_pairs: Option<(Vec<PreferencePair>, Vec<PairLogps>)>,
    /// The current epoch's permutation of `data`.
    order: Vec<usize>,
    /// The RNG after shuffling the current epoch.
    rng: SplitMix64,
    grads: GradBuf,
}

impl Trainer {
    /// A fresh full fine-tuning run from `params` over `data`.
    pub fn new(
        config: TrainConfig,
        shape: Shape,
        params: Params<f32>,
        data: impl Into<Examples>,
    ) -> Result<Trainer> {
        let data = data.into();
        let progress = Progress::start(config.seed, data.len());
        let tuned = Tuned::Full(AdamW::new(config.adamw, &params));
        Trainer::assemble(config, shape, params, tuned, progress, data)
    }

    /// A fresh LoRA run: `lora` (see [`Lora::new`]) is trained over the frozen `base`.
    pub fn new_lora(
        config: TrainConfig,
        shape: Shape,
        base: Params<f32>,
        lora: Lora<f32>,
        data: impl Into<Examples>,
    ) -> Result<Trainer> {
        let data = data.into();
        if lora.layers.len() != base.layers.len() {
            return Err(TrainError::Config(format!(
                "the adapter has {} layers, the model {}",
                lora.layers.len(),
                base.layers.len()
            )));
        }
        let progress = Progress::start(config.seed, data.len());
        let opt = AdamW::new(config.adamw, &lora);
        let tuned = Tuned::Lora { lora, opt };
        Trainer::assemble(config, shape, base, tuned, progress, data)
    }

    /// A fresh LoRA run over a base kept in its stored type: no f32 copy of the model.
    pub fn new_lora_stored(
        config: TrainConfig,
        shape: Shape,
        base: FrozenBase,
        lora: Lora<f32>,
        data: impl Into<Examples>,
    ) -> Result<Trainer> {
        let shell = Params::shell(base.layers.len());
        let mut t = Trainer::new_lora(config, shape, shell, lora, data)?;
        t.stored = Some(base);
        Ok(t)
    }

    /// Runs the (LoRA) passes over `base` in its stored type, e.g. after
    /// [`Trainer::resume`] from a checkpoint loaded with a [`Params::shell`].
    pub fn with_stored_base(mut self, base: FrozenBase) -> Result<Trainer> {
        if !matches!(self.tuned, Tuned::Lora { .. }) {
            return Err(TrainError::Config(
                "only a LoRA run trains over a base in its stored type".into(),
            ));
        }
        self.stored = Some(base);
        Ok(self)
    }

    /// Continues the run saved in `ck` over the same `data`.
    pub fn resume(ck: Checkpoint, shape: Shape, data: impl Into<Examples>) -> Result<Trainer> {
        let data = data.into();
        let config = TrainConfig::from_json(&ck.config).ok_or_else(|| {
            TrainError::Data("the checkpoint's training configuration is unreadable".into())
        })?;
        if ck.progress.n_sequences != data.len() {
            return Err(TrainError::Data(format!(
                "the checkpoint was trained on {} sequences, this data has {}: resume needs \
                 the same data and --seq-len",
                ck.progress.n_sequences,
                data.len()
            )));
        }
        let mut t = Trainer::assemble(config, shape, ck.params, ck.tuned, ck.progress, data)?;
        t.base = ck.base;
        t.objective = ck.config.get("objective").cloned();
        Ok(t)
    }

    fn assemble(
        config: TrainConfig,
        shape: Shape,
        params: Params<f32>,
        tuned: Tuned,
        progress: Progress,
        data: Examples,
    ) -> Result<Trainer> {
        match &data {
            Examples::Sequences(seqs) => {
                if seqs.is_empty() {
                    return Err(TrainError::Data("there are no training sequences".into()));
                }
                if seqs.iter().all(|s| s.n_counted() == 0) {
                    return Err(TrainError::Data(
                        "no training sequence has a token counted in the loss".into(),
                    ));
                }
            }
            Examples::Preference(d) => {
                if d.pairs.is_empty() || d.pairs.len() != d.refs.len() {
                    return Err(TrainError::Data(format!(
                        "{} preference pairs with {} reference log-probabilities",
                        d.pairs.len(),
                        d.refs.len()
                    )));
                }
            }
        }
        if config.batch_size == 0 || config.grad_accum == 0 {
            return Err(TrainError::Data(
                "the batch size and gradient accumulation must be at least 1".into(),
            ));
        }
        let mut rng = SplitMix64::new(progress.rng_state);
        let mut order: Vec<usize> = (0..data.len()).collect();
        rng.shuffle(&mut order);
        let grads = match &tuned {
            Tuned::Full(_) => GradBuf::Full(params.zeros_like()),
            Tuned::Lora { lora, .. } => GradBuf::Lora(lora.zeros_like()),
        };
        Ok(Trainer {
            config,
            shape,
            params,
            stored: None,
            tuned,
            base: None,
            objective: None,
            progress,
            data,
            teacher: None,
            eval_pairs: None,
            order,
            rng,
            grads,
        })
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        match self.config.length {
            Length::Steps(n) => n,
            Length::Epochs(e) => {
                let per_step = (self.config.batch_size * self.config.grad_accum) as u64;
                (e * self.data.len() as u64).div_ceil(per_step)
            }
        }
    }

    /// Makes the run distillation from `teacher`'s logits: each micro-batch's sequences get
    /// the teacher's top-k targets, computed then, and the loss is `τ² · KL` per counted
    /// token. Evaluation stays the cross-entropy of the held-out data.
    pub fn with_teacher(mut self, teacher: Teacher) -> Result<Trainer> {
        if matches!(self.data, Examples::Preference(_)) {
            return Err(TrainError::Config(
                "preference pairs train with DPO, not distillation".into(),
            ));
        }
        teacher.check_student(self.shape.vocab)?;
        self.teacher = Some(teacher);
        Ok(self)
    }

    /// Held-out pairs of a DPO run, with their reference log-probabilities
    /// ([`DpoData::new`]): evaluation reports DPO's metrics on them.
    pub fn with_dpo_eval(mut self, eval: DpoData) -> Result<Trainer> {
        if !matches!(self.data, Examples::Preference(_)) {
            return Err(TrainError::Config(
                "evaluation pairs are for a DPO run".into(),
            ));
        }
        self.eval_pairs = Some((eval.pairs, eval.refs));
        Ok(self)
    }

    /// The adapter being trained, for a LoRA run.
    pub fn lora(&self) -> Option<&Lora<f32>> {
        match &self.tuned {
            Tuned::Lora { lora, .. } => Some(lora),
            Tuned::Full(_) => None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.progress.step >= self.total_steps()
    }

    /// The next sequence of the stream, starting a new shuffled epoch when one ends.
    fn next_index(&mut self) -> usize {
        if self.progress.position == self.order.len() {
            self.progress.epoch += 1;
            self.progress.position = 0;
            self.progress.rng_state = self.rng.state;
            self.order = (0..self.data.len()).collect();
            self.rng.shuffle(&mut self.order);
        }
        let i = self.order[self.progress.position];
        self.progress.position += 1;
        i
    }

    /// One optimizer step. A loss or gradient norm that is not finite stops with
    /// [`TrainError::NotFinite`] before the update; the trainer must then be dropped (its
    /// data position has moved) and the run resumed from its last checkpoint.
    pub fn step(&mut self, pool: &ThreadPool) -> Result<StepRecord> {
        let started = Instant::now();
        let total = self.total_steps();
        let c = &self.config;
        let lr = cosine_lr(c.lr, self.progress.step, c.warmup, total);
        let (accum, batch_size, recompute) = (c.grad_accum, c.batch_size, c.recompute);
        // LoRA dropout's masks: one key per (seed, step, micro-batch), so a resumed run
        // draws the masks the uninterrupted one drew.
        let step_key = mix(c.seed, self.progress.step);
        let opts = |micro: usize| PassOptions {
            recompute,
            dropout_key: Some(mix(step_key, micro as u64)),
        };
        match &mut self.grads {
            GradBuf::Full(g) => zero_on(pool, g),
            GradBuf::Lora(g) => zero_on(pool, g),
        }
        let (mut loss, mut tokens) = (0.0f64, 0usize);
        let mut dpo_metrics: Option<DpoMetrics> = None;
        for micro in 0..accum {
            let opts = opts(micro);
            let idx: Vec<usize> = (0..batch_size).map(|_| self.next_index()).collect();
            let (lora, grads) = match (&self.tuned, &mut self.grads) {
                (Tuned::Lora { lora, .. }, GradBuf::Lora(g)) => (Some(lora), Grads::lora(g)),
                (Tuned::Full(_), GradBuf::Full(g)) => (None, Grads::full(g)),
                _ => return Err(TrainError::Config("gradients of the wrong method".into())),
            };
            let (sh, p) = (&self.shape, &self.params);
            let seqs = match &self.data {
                Examples::Preference(d) => {
                    let pairs: Vec<PreferencePair> =
                        idx.iter().map(|&i| d.pairs[i].clone()).collect();
                    let refs: Vec<PairLogps> = idx.iter().map(|&i| d.refs[i]).collect();
                    tokens += pairs
                        .iter()
                        .map(|q| q.chosen.inputs.len() + q.rejected.inputs.len())
                        .sum::<usize>();
                    // The loss is the mean over each micro-batch's pairs.
                    let scale = 1.0 / (pairs.len() * accum) as f32;
                    let m = match &self.stored {
                        Some(b) => dpo::forward_backward(
                            pool, sh, b, lora, grads, &pairs, &refs, d.beta, scale, opts,
                        )?,
                        None => dpo::forward_backward(
                            pool, sh, p, lora, grads, &pairs, &refs, d.beta, scale, opts,
                        )?,
                    };
                    loss += m.loss() / accum as f64;
                    dpo_metrics.get_or_insert_default().merge(&m);
                    continue;
                }
                Examples::Sequences(seqs) => seqs,
            };
            let batch: Vec<Sequence> = idx.iter().map(|&i| seqs[i].clone()).collect();
            let count: usize = batch.iter().map(Sequence::n_counted).sum();
            tokens += batch.iter().map(|s| s.inputs.len()).sum::<usize>();
            if count == 0 {
                // Nothing to learn in this micro-batch; it adds nothing to the gradient.
                continue;
            }
            let scale = 1.0 / (count * accum) as f32;
            let sum = match self.teacher.as_mut() {
                Some(t) => match &self.stored {
                    Some(b) => {
                        distill::forward_backward(pool, sh, b, lora, grads, t, &batch, scale, opts)?
                    }
                    None => {
                        distill::forward_backward(pool, sh, p, lora, grads, t, &batch, scale, opts)?
                    }
                },
                None => {
                    let items: Vec<Item<'_, f32>> = batch
                        .iter()
                        .map(|s| Item::cross_entropy(s, scale))
                        .collect();
                    let losses = match &self.stored {
                        Some(b) => pass(pool, sh, b, lora, grads, &items, opts)?,
                        None => pass(pool, sh, p, lora, grads, &items, opts)?,
                    };
                    losses.iter().sum::<f32>()
                }
            };
            loss += f64::from(sum) / count as f64 / accum as f64;
        }
        let max_norm = self.config.max_grad_norm;
        let grad_norm = {
            let _s = crate::profile::span(pool, crate::profile::Phase::ClipNorm);
            match &self.grads {
                GradBuf::Full(g) => grad_norm_on(pool, g),
                GradBuf::Lora(g) => grad_norm_on(pool, g),
            }
        };
        // Clipping is AdamW's gradient scale: no pass of its own over the gradients.
        let clip = clip_coefficient::<f32>(grad_norm, max_norm);
        let step = self.progress.step + 1;
        if !loss.is_finite() || !grad_norm.is_finite() {
            let bad = if loss.is_finite() { grad_norm } else { loss };
            return Err(TrainError::NotFinite { step, loss: bad });
        }
        match (&mut self.tuned, &self.grads) {
            (Tuned::Full(opt), GradBuf::Full(g)) => {
                opt.update_scaled_on(pool, &mut self.params, g, lr, clip)
            }
            (Tuned::Lora { lora, opt }, GradBuf::Lora(g)) => {
                opt.update_scaled_on(pool, lora, g, lr, clip)
            }
            _ => return Err(TrainError::Config("gradients of the wrong method".into())),
        }
        self.progress.step = step;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepRecord {
            step,
            total_steps: total,
            epoch: self.progress.epoch,
            loss,
            grad_norm,
            lr,
            tokens,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            seconds,
            dpo: dpo_metrics,
        })
    }

    /// Mean loss per counted token over `seqs` with the current parameters.
    pub fn evaluate(&self, pool: &ThreadPool, seqs: &[Sequence]) -> Result<f64> {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for s in seqs {
            let one = std::slice::from_ref(s);
            let l = match &self.tuned {
                Tuned::Full(_) => loss(pool, &self.shape, &self.params, one)?,
                Tuned::Lora { lora, .. } => match &self.stored {
                    Some(b) => loss_lora(pool, &self.shape, b, lora, one)?,
                    None => loss_lora(pool, &self.shape, &self.params, lora, one)?,
                },
            };
            sum += f64::from(l);
            count += s.n_counted();
        }
        Ok(sum / count.max(1) as f64)
    }

    /// DPO's metrics on the evaluation pairs ([`Trainer::with_dpo_eval`]) with the current
    /// weights; `None` without them.
    pub fn evaluate_dpo(&self, pool: &ThreadPool) -> Result<Option<DpoMetrics>> {
        let (Some((pairs, refs)), Examples::Preference(d)) = (&self.eval_pairs, &self.data) else {
            return Ok(None);
        };
        let (sh, lora) = (&self.shape, self.lora());
        let m = match &self.stored {
            Some(b) => dpo::evaluate(pool, sh, b, lora, pairs, refs, d.beta)?,
            None => dpo::evaluate(pool, sh, &self.params, lora, pairs, refs, d.beta)?,
        };
        Ok(Some(m))
    }

    /// The evaluation event after `step`: DPO's metrics on the evaluation pairs, or the
    /// loss of the evaluation sequences; `None` when there is nothing to evaluate on.
    fn eval_event(&self, pool: &ThreadPool, eval: &[Sequence], step: u64) -> Result<Option<Event>> {
        if let Some(metrics) = self.evaluate_dpo(pool)? {
            return Ok(Some(Event::EvalDpo { step, metrics }));
        }
        if eval.is_empty() || matches!(self.data, Examples::Preference(_)) {
            return Ok(None);
        }
        let loss = self.evaluate(pool, eval)?;
        Ok(Some(Event::Eval { step, loss }))
    }

    /// The configuration a checkpoint records: the training settings and the objective.
    fn saved_config(&self) -> serde_json::Value {
        let mut c = self.config.to_json();
        if let (Some(o), Some(m)) = (&self.objective, c.as_object_mut()) {
            m.insert("objective".into(), o.clone());
        }
        c
    }

    /// Writes the checkpoint into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(
            dir,
            &self.shape,
            &self.params,
            &self.tuned,
            self.progress,
            &self.saved_config(),
            self.base.as_deref(),
        )
    }

    /// Steps to the end of the run, evaluating on `eval` (when not empty) and writing
    /// checkpoints into `out` (when given) as configured, and both at the end. A step that
    /// is not finite returns its error with the last checkpoint left as it was.
    pub fn run(
        &mut self,
        pool: &ThreadPool,
        eval: &[Sequence],
        out: Option<&Path>,
        on: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        self.run_controlled(pool, eval, out, &crate::job::NoControl, on)
    }

    /// [`Trainer::run`], asking `control` before every step; when it says stop, the run
    /// checkpoints (into `out`) and returns [`TrainError::Cancelled`].
    pub fn run_controlled(
        &mut self,
        pool: &ThreadPool,
        eval: &[Sequence],
        out: Option<&Path>,
        control: &dyn crate::job::Control,
        on: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let total = self.total_steps();
        let every = |k: u64, s: u64| k > 0 && s.is_multiple_of(k) && s < total;
        while !self.is_done() {
            if !control.proceed() {
                if let Some(dir) = out {
                    self.save(dir)?;
                    on(&Event::Checkpoint {
                        step: self.progress.step,
                    });
                }
                return Err(TrainError::Cancelled {
                    step: self.progress.step,
                });
            }
            let r = self.step(pool)?;
            on(&Event::Step(r));
            if every(self.config.eval_every, r.step)
                && let Some(e) = self.eval_event(pool, eval, r.step)?
            {
                on(&e);
            }
            if let Some(dir) = out
                && every(self.config.checkpoint_every, r.step)
            {
                self.save(dir)?;
                on(&Event::Checkpoint { step: r.step });
            }
        }
        if let Some(e) = self.eval_event(pool, eval, self.progress.step)? {
            on(&e);
        }
        if let Some(dir) = out {
            self.save(dir)?;
            on(&Event::Checkpoint {
                step: self.progress.step,
            });
        }
        Ok(())
    }
}
