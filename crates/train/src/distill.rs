//! Distillation from a teacher's logits: the teacher (another model with the same
//! vocabulary, e.g. the full-precision model a quantized student came from) runs the
//! inference forward pass of `ferrollama_model::Llama` over each training sequence, and
//! its top `k` probabilities at temperature `τ` per position become the student's soft
//! targets ([`crate::ops::soft_target`], through [`crate::model::Objective::Distill`]).
//!
//! The targets are computed on the fly, per micro-batch, not cached for the run: a cache
//! holds `T · k · 8` bytes per sequence for the whole dataset (16 · 2048 · 8 = 256 KiB a
//! sequence at k = 16, gigabytes for a real dataset), while recomputing costs one
//! inference forward per sequence and epoch, a third of the student's training pass or
//! less; and a run that resumes gets the same targets again because the teacher's forward
//! is deterministic.

use ferrollama_model::{KvCache, KvType, Llama, State};
use ferrollama_tensor::ThreadPool;

use crate::Float;
use crate::base::Base;
use crate::error::{Result, TrainError};
use crate::lora::Lora;
use crate::model::{Grads, Item, Objective, PassOptions, Sequence, Shape, pass};

/// A teacher's distribution over each of `T` positions, cut to its top `k` ids: `ids` and
/// `probs` are `(T, k)`, best first. Without a tail (`rest` empty) the probabilities are
/// renormalized over the k; with one, `probs` are the teacher's own and `rest` `(T)` is
/// its mass outside the k, trained as one more class (see [`crate::ops::soft_target`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTargets {
    pub k: usize,
    pub ids: Vec<u32>,
    pub probs: Vec<f32>,
    pub rest: Vec<f32>,
}

impl SoftTargets {
    /// Top `k` of each row of `logits (T, vocab)` at `temperature`: `p_i ∝ exp(z_i / τ)`
    /// over the k largest logits (ties to the lower id).
    pub fn from_logits(logits: &[f32], vocab: usize, k: usize, temperature: f64) -> SoftTargets {
        SoftTargets::from_logits_with(logits, vocab, k, temperature, false)
    }

    /// [`SoftTargets::from_logits`], or with `tail` the teacher's own probabilities on the
    /// top `k` (`softmax(z / τ)` over the whole vocabulary) and the mass outside them.
    pub fn from_logits_with(
        logits: &[f32],
        vocab: usize,
        k: usize,
        temperature: f64,
        tail: bool,
    ) -> SoftTargets {
        let k = k.min(vocab).max(1);
        let rows = logits.len() / vocab.max(1);
        let mut ids = Vec::with_capacity(rows * k);
        let mut probs = Vec::with_capacity(rows * k);
        let mut rest = Vec::with_capacity(if tail { rows } else { 0 });
        let mut order: Vec<u32> = Vec::with_capacity(vocab);
        for row in logits.chunks_exact(vocab) {
            order.clear();
            order.extend(0..vocab as u32);
            let by_logit =
                |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
            if k < vocab {
                order.select_nth_unstable_by(k - 1, by_logit);
            }
            let top = &mut order[..k];
            top.sort_unstable_by(by_logit);
            let max = f64::from(row[top[0] as usize]);
            let e: Vec<f64> = top
                .iter()
                .map(|&i| ((f64::from(row[i as usize]) - max) / temperature).exp())
                .collect();
            let top_sum: f64 = e.iter().sum();
            // With a tail: normalize by the whole vocabulary's sum (in f64) and keep the
            // mass outside the top k apart.
            let sum = if tail {
                row.iter()
                    .map(|&x| ((f64::from(x) - max) / temperature).exp())
                    .sum::<f64>()
            } else {
                top_sum
            };
            ids.extend_from_slice(top);
            probs.extend(e.iter().map(|&x| (x / sum) as f32));
            if tail {
                rest.push(((sum - top_sum).max(0.0) / sum) as f32);
            }
        }
        SoftTargets {
            k,
            ids,
            probs,
            rest,
        }
    }

    /// Checks the targets fit a sequence of `positions` and a student of `vocab` ids.
    pub fn check(&self, positions: usize, vocab: usize) -> Result<()> {
        if self.k == 0 || self.ids.len() != positions * self.k || self.probs.len() != self.ids.len()
        {
            return Err(TrainError::Data(format!(
                "the teacher's targets cover {} ids at k = {} for a sequence of {positions} \
                 positions",
                self.ids.len(),
                self.k
            )));
        }
        if !(self.rest.is_empty() || self.rest.len() == positions) {
            return Err(TrainError::Data(format!(
                "the teacher's tail covers {} of {positions} positions",
                self.rest.len()
            )));
        }
        if let Some(&bad) = self.ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(TrainError::Config(format!(
                "the teacher predicts token id {bad}, outside the student's vocabulary of \
                 {vocab}: distillation needs a teacher with the student's tokenizer"
            )));
        }
        if let Some(bad) = self
            .probs
            .iter()
            .chain(&self.rest)
            .find(|p| !(p.is_finite() && **p >= 0.0))
        {
            return Err(TrainError::Data(format!(
                "the teacher gave a probability of {bad}"
            )));
        }
        Ok(())
    }
}

/// A teacher model with its inference buffers, giving [`SoftTargets`] for sequences.
#[derive(Debug)]
pub struct Teacher {
    llama: Llama,
    state: State,
    kv: KvCache,
    /// Tokens per forward call (bounds the `(chunk, vocab)` logits buffer).
    chunk: usize,
    pub k: usize,
    pub temperature: f64,
    /// Keep the mass outside the top k as one more class instead of renormalizing.
    pub tail: bool,
}

impl Teacher {
    /// A teacher for sequences of up to `max_len` positions, run on `threads` threads.
    pub fn new(
        llama: Llama,
        max_len: usize,
        threads: usize,
        k: usize,
        temperature: f64,
    ) -> Result<Teacher> {
        if k == 0 {
            return Err(TrainError::Config(
                "--distill-top-k must be at least 1".into(),
            ));
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(TrainError::Config(format!(
                "the distillation temperature must be a positive number, not {temperature}"
            )));
        }
        let chunk = max_len.clamp(1, 128);
        let state = llama.new_state(chunk, max_len.max(1), threads.max(1));
        let kv = KvCache::new(&llama.config, max_len.max(1), KvType::F16).map_err(model_err)?;
        Ok(Teacher {
            llama,
            state,
            kv,
            chunk,
            k,
            temperature,
            tail: false,
        })
    }

    /// The teacher's vocabulary size.
    pub fn vocab(&self) -> usize {
        self.llama.config.vocab_size
    }

    /// Refuses a student whose vocabulary differs from the teacher's.
    pub fn check_student(&self, student_vocab: usize) -> Result<()> {
        if self.vocab() != student_vocab {
            return Err(TrainError::Config(format!(
                "the teacher has a vocabulary of {} tokens and the student {student_vocab}: \
                 distillation from logits needs the same tokenizer; use \
                 --distill-mode sequences to distill through generated text instead",
                self.vocab()
            )));
        }
        Ok(())
    }

    /// The teacher's top-k targets for every position of `inputs`, teacher-forced.
    pub fn targets(&mut self, pool: &ThreadPool, inputs: &[u32]) -> Result<SoftTargets> {
        if inputs.len() > self.kv.ctx() {
            return Err(TrainError::Data(format!(
                "a sequence of {} positions is longer than the teacher was set up for ({})",
                inputs.len(),
                self.kv.ctx()
            )));
        }
        let vocab = self.vocab();
        self.kv.len = 0;
        let mut out = SoftTargets {
            k: self.k.min(vocab),
            ids: Vec::with_capacity(inputs.len() * self.k),
            probs: Vec::with_capacity(inputs.len() * self.k),
            rest: Vec::new(),
        };
        for piece in inputs.chunks(self.chunk) {
            let logits = self
                .llama
                .forward(pool, piece, &mut self.kv, &mut self.state, true)
                .map_err(model_err)?;
            let t =
                SoftTargets::from_logits_with(logits, vocab, self.k, self.temperature, self.tail);
            out.ids.extend_from_slice(&t.ids);
            out.probs.extend_from_slice(&t.probs);
            out.rest.extend_from_slice(&t.rest);
        }
        Ok(out)
    }
}

/// One distillation micro-batch: the teacher's targets for `batch`, computed now, then
/// the student's pass adding `scale · ∂(Σ loss)/∂θ` into `grads`. Returns the summed
/// `τ² · KL` over the counted positions.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    grads: Grads<'_, F>,
    teacher: &mut Teacher,
    batch: &[Sequence],
    scale: F,
    opts: PassOptions,
) -> Result<F> {
    teacher.check_student(sh.vocab)?;
    let targets = batch
        .iter()
        .map(|s| teacher.targets(pool, &s.inputs))
        .collect::<Result<Vec<_>>>()?;
    let temperature = teacher.temperature;
    let items: Vec<Item<'_, F>> = batch
        .iter()
        .zip(&targets)
        .map(|(seq, t)| Item {
            seq,
            objective: Objective::Distill {
                teacher: t,
                temperature,
            },
            scale,
        })
        .collect();
    let mut total = F::ZERO;
    for l in pass(pool, sh, p, lora, grads, &items, opts)? {
        total += l;
    }
    Ok(total)
}

fn model_err(e: ferrollama_model::ModelError) -> TrainError {
    TrainError::Config(format!("teacher model: {e}"))
}
