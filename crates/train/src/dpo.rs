//! Direct Preference Optimization (Rafailov et al. 2023), the sigmoid loss as TRL's
//! `DPOTrainer` computes it. Per pair of completions of one prompt, chosen `c` and
//! rejected `r`, with `log π(y)` summed over the completion's (counted) tokens:
//!
//! ```text
//! z    = β · ((log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)))
//! loss = −log σ(z)
//! ```
//!
//! `log π(y) = −CE(y)`, the cross-entropy summed over the counted tokens, so the gradient
//! is the cross-entropy backward of each sequence with its own weight, no new backward:
//! `∂loss/∂CE(c) = β·σ(−z)` and `∂loss/∂CE(r) = −β·σ(−z)` ([`crate::model::Item`]).
//! Finding those weights needs the policy's log-probabilities first, so a step runs a
//! forward-only pass over both sequences, then the weighted forward and backward.
//!
//! The reference `π_ref` is fixed for the whole run, so its log-probabilities are computed
//! once, before training ([`logps`] on the starting weights): with LoRA that is the base
//! without the adapter (no second copy of the model is kept), with full fine-tuning the
//! weights the run started from. Both are deterministic, so a resumed run computes the
//! same numbers again from the base model.
//!
//! Metrics are TRL's: `rewards/chosen = β(log π(c) − log π_ref(c))`, `rewards/rejected`,
//! `rewards/accuracies` (chosen reward strictly above the rejected one), `rewards/margins`
//! (their difference), `logps/chosen`, `logps/rejected`, each a mean over pairs.

use ferrollama_tensor::ThreadPool;
use serde_json::{Value, json};

use crate::Float;
use crate::base::Base;
use crate::data::PreferencePair;
use crate::error::{Result, TrainError};
use crate::lora::Lora;
use crate::model::{Grads, Item, PassOptions, Shape, pass};

/// The log-probabilities of a pair's completions, summed over their counted tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLogps {
    pub chosen: f64,
    pub rejected: f64,
}

/// One pair's loss, rewards and gradient weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairTerms {
    pub loss: f64,
    pub reward_chosen: f64,
    pub reward_rejected: f64,
    /// `β·σ(−z)`: `∂loss/∂CE(chosen)`, and minus `∂loss/∂CE(rejected)`.
    pub weight: f64,
}

/// Checks `β`.
pub fn check_beta(beta: f64) -> Result<()> {
    if !(beta.is_finite() && beta > 0.0) {
        return Err(TrainError::Config(format!(
            "DPO's beta must be a positive number (0.1 is usual), not {beta}"
        )));
    }
    Ok(())
}

/// The DPO terms of one pair.
pub fn pair_terms(beta: f64, policy: PairLogps, reference: PairLogps) -> PairTerms {
    let reward_chosen = beta * (policy.chosen - reference.chosen);
    let reward_rejected = beta * (policy.rejected - reference.rejected);
    let z = reward_chosen - reward_rejected;
    // −log σ(z) = softplus(−z), and σ(−z), both without overflow for large |z|.
    let loss = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
    let sig_neg = if z >= 0.0 {
        let e = (-z).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + z.exp())
    };
    PairTerms {
        loss,
        reward_chosen,
        reward_rejected,
        weight: beta * sig_neg,
    }
}

/// TRL's DPO metrics, summed over pairs; the accessors give means.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DpoMetrics {
    pub pairs: usize,
    pub loss_sum: f64,
    pub reward_chosen_sum: f64,
    pub reward_rejected_sum: f64,
    /// Pairs whose chosen reward is strictly above the rejected one.
    pub correct: usize,
    pub logps_chosen_sum: f64,
    pub logps_rejected_sum: f64,
}

impl DpoMetrics {
    /// Adds one pair.
    pub fn add(&mut self, t: PairTerms, policy: PairLogps) {
        self.pairs += 1;
        self.loss_sum += t.loss;
        self.reward_chosen_sum += t.reward_chosen;
        self.reward_rejected_sum += t.reward_rejected;
        self.correct += usize::from(t.reward_chosen > t.reward_rejected);
        self.logps_chosen_sum += policy.chosen;
        self.logps_rejected_sum += policy.rejected;
    }

    /// Adds another batch's sums.
    pub fn merge(&mut self, o: &DpoMetrics) {
        self.pairs += o.pairs;
        self.loss_sum += o.loss_sum;
        self.reward_chosen_sum += o.reward_chosen_sum;
        self.reward_rejected_sum += o.reward_rejected_sum;
        self.correct += o.correct;
        self.logps_chosen_sum += o.logps_chosen_sum;
        self.logps_rejected_sum += o.logps_rejected_sum;
    }

    fn mean(&self, s: f64) -> f64 {
        s / self.pairs.max(1) as f64
    }
    pub fn loss(&self) -> f64 {
        self.mean(self.loss_sum)
    }
    pub fn rewards_chosen(&self) -> f64 {
        self.mean(self.reward_chosen_sum)
    }
    pub fn rewards_rejected(&self) -> f64 {
        self.mean(self.reward_rejected_sum)
    }
    pub fn accuracy(&self) -> f64 {
        self.mean(self.correct as f64)
    }
    pub fn margin(&self) -> f64 {
        self.mean(self.reward_chosen_sum - self.reward_rejected_sum)
    }
    pub fn logps_chosen(&self) -> f64 {
        self.mean(self.logps_chosen_sum)
    }
    pub fn logps_rejected(&self) -> f64 {
        self.mean(self.logps_rejected_sum)
    }

    /// The means under TRL's names.
    pub fn to_json(&self) -> Value {
        json!({
            "loss": self.loss(),
            "rewards/chosen": self.rewards_chosen(),
            "rewards/rejected": self.rewards_rejected(),
            "rewards/accuracies": self.accuracy(),
            "rewards/margins": self.margin(),
            "logps/chosen": self.logps_chosen(),
            "logps/rejected": self.logps_rejected(),
        })
    }
}

/// `log π` of each pair's completions under `p` (with `lora` when given), forward only.
/// On the starting weights (the base without its adapter, for LoRA) these are the
/// reference log-probabilities of the run.
pub fn logps<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    pairs: &[PreferencePair],
) -> Result<Vec<PairLogps>> {
    let mut out = Vec::with_capacity(pairs.len());
    for pr in pairs {
        out.push(pair_logps(pool, sh, p, lora, pr)?);
    }
    Ok(out)
}

fn pair_logps<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    pr: &PreferencePair,
) -> Result<PairLogps> {
    let items = [
        Item::cross_entropy(&pr.chosen, F::ONE),
        Item::cross_entropy(&pr.rejected, F::ONE),
    ];
    let ce = pass(
        pool,
        sh,
        p,
        lora,
        Grads::none(),
        &items,
        PassOptions::default(),
    )?;
    Ok(PairLogps {
        chosen: -ce[0].to_f64(),
        rejected: -ce[1].to_f64(),
    })
}

/// Checks that every pair has a reference and a counted token on each side.
fn check_pairs(pairs: &[PreferencePair], refs: &[PairLogps]) -> Result<()> {
    if pairs.len() != refs.len() {
        return Err(TrainError::Data(format!(
            "{} preference pairs but {} reference log-probabilities",
            pairs.len(),
            refs.len()
        )));
    }
    if pairs
        .iter()
        .any(|p| p.chosen.n_counted() == 0 || p.rejected.n_counted() == 0)
    {
        return Err(TrainError::Data(
            "a preference pair has an empty chosen or rejected completion".into(),
        ));
    }
    Ok(())
}

/// One DPO micro-batch: adds `scale · ∂(Σ_pairs loss)/∂θ` into `grads` (`scale` = 1 /
/// (pairs averaged over)) and returns the batch's metrics. `refs[i]` is pair `i`'s
/// reference log-probabilities ([`logps`] at the start of the run).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    grads: Grads<'_, F>,
    pairs: &[PreferencePair],
    refs: &[PairLogps],
    beta: f64,
    scale: F,
    opts: PassOptions,
) -> Result<DpoMetrics> {
    check_beta(beta)?;
    check_pairs(pairs, refs)?;
    let mut m = DpoMetrics::default();
    let mut items = Vec::with_capacity(2 * pairs.len());
    for (pr, &r) in pairs.iter().zip(refs) {
        let policy = pair_logps(pool, sh, p, lora, pr)?;
        let t = pair_terms(beta, policy, r);
        m.add(t, policy);
        let w = F::from_f64(t.weight) * scale;
        items.push(Item::cross_entropy(&pr.chosen, w));
        items.push(Item::cross_entropy(&pr.rejected, -w));
    }
    pass(pool, sh, p, lora, grads, &items, opts)?;
    Ok(m)
}

/// The DPO metrics of `pairs` under `p` (and `lora`), forward only: evaluation.
pub fn evaluate<F: Float, B: Base<F> + ?Sized>(
    pool: &ThreadPool,
    sh: &Shape,
    p: &B,
    lora: Option<&Lora<F>>,
    pairs: &[PreferencePair],
    refs: &[PairLogps],
    beta: f64,
) -> Result<DpoMetrics> {
    check_beta(beta)?;
    check_pairs(pairs, refs)?;
    let mut m = DpoMetrics::default();
    for (pr, &r) in pairs.iter().zip(refs) {
        let policy = pair_logps(pool, sh, p, lora, pr)?;
        m.add(pair_terms(beta, policy, r), policy);
    }
    Ok(m)
}

/// A DPO run's data: the pairs, each pair's reference log-probabilities, and `β`.
#[derive(Debug, Clone, PartialEq)]
pub struct DpoData {
    pub pairs: Vec<PreferencePair>,
    pub refs: Vec<PairLogps>,
    pub beta: f64,
}

impl DpoData {
    /// `pairs` with their reference log-probabilities under `reference` (the starting
    /// weights; for LoRA, the base without the adapter), computed here, once.
    pub fn new<B: Base<f32> + ?Sized>(
        pool: &ThreadPool,
        sh: &Shape,
        reference: &B,
        pairs: Vec<PreferencePair>,
        beta: f64,
    ) -> Result<DpoData> {
        check_beta(beta)?;
        if pairs.is_empty() {
            return Err(TrainError::Data("there are no preference pairs".into()));
        }
        let refs = logps(pool, sh, reference, None, &pairs)?;
        check_pairs(&pairs, &refs)?;
        Ok(DpoData { pairs, refs, beta })
    }
}
