//! Prompt Guard (spec §5.2): Meta's mDeBERTa-v3-base classifier of prompt injections and
//! jailbreaks, on the model crate's DeBERTa forward pass.
//!
//! A text is tokenized with the model's own SentencePiece tokenizer (no special tokens),
//! cut into windows of [`WINDOW`] tokens, each scored as `[CLS] window [SEP]` (at most
//! [`CONTEXT`] tokens, the model's 512 positions) and given `softmax(logits)` over
//! [`LABELS`] (temperature 1, llama-recipes). As the model card recommends for long
//! inputs, a text is as bad as its worst window: [`Mode::score`] takes the maximum over
//! windows, and the probabilities reported are those of the window with the highest
//! injection score `p[1] + p[2]`.

mod spm;

use std::path::Path;
use std::str::FromStr;

use ferrollama_model::deberta::Deberta;
pub use ferrollama_model::deberta::WeightFormat;
use ferrollama_tensor::ThreadPool;

pub use self::spm::SpmTokenizer;
use crate::error::{Result, SafetyError};

/// Positions of the model: one window with its `[CLS]` and `[SEP]`.
pub const CONTEXT: usize = 512;
/// Text tokens per window.
pub const WINDOW: usize = 510;
/// llama-stack's Prompt Guard shield threshold (strict `>`).
pub const DEFAULT_THRESHOLD: f32 = 0.9;
/// Class names in logit order.
pub const LABELS: [&str; 3] = ["BENIGN", "INJECTION", "JAILBREAK"];

/// A loaded Prompt Guard: model and tokenizer. Shared across threads (`&self` only).
#[derive(Debug)]
pub struct PromptGuard {
    model: Deberta,
    tokenizer: SpmTokenizer,
}

fn model_err(e: ferrollama_model::ModelError) -> SafetyError {
    match e {
        ferrollama_model::ModelError::Io { path, source } => {
            SafetyError::NotFound(format!("cannot open {}: {source}", path.display()))
        }
        e => SafetyError::Invalid(format!("Prompt Guard model: {e}")),
    }
}

impl PromptGuard {
    /// Loads an HF folder (`config.json`, `model.safetensors`, `tokenizer.json` or
    /// `spm.model`) with f32 weights.
    pub fn load(dir: &Path) -> Result<PromptGuard> {
        PromptGuard::load_with(dir, WeightFormat::F32)
    }

    /// Loads with the encoder's matrices in `format`.
    pub fn load_with(dir: &Path, format: WeightFormat) -> Result<PromptGuard> {
        if !dir.is_dir() {
            return Err(SafetyError::NotFound(format!(
                "Prompt Guard folder {} does not exist",
                dir.display()
            )));
        }
        let tokenizer = SpmTokenizer::load(dir)?;
        let model = Deberta::load(dir, format).map_err(model_err)?;
        if model.n_labels() != LABELS.len() {
            return Err(SafetyError::Invalid(format!(
                "{}: the classifier has {} labels, Prompt Guard has 3 ({})",
                dir.display(),
                model.n_labels(),
                LABELS.join(", ")
            )));
        }
        let labels = model.labels();
        if !labels.is_empty() && labels.iter().zip(LABELS).any(|(a, b)| a != b) {
            return Err(SafetyError::Invalid(format!(
                "{}: id2label is {labels:?}, expected {LABELS:?}",
                dir.display()
            )));
        }
        Ok(PromptGuard { model, tokenizer })
    }

    pub fn tokenizer(&self) -> &SpmTokenizer {
        &self.tokenizer
    }

    pub fn model(&self) -> &Deberta {
        &self.model
    }

    /// `softmax(logits)` of one window `ids` (already `[CLS] .. [SEP]`, at most
    /// [`CONTEXT`] tokens).
    pub fn window_probabilities(&self, ids: &[u32], pool: &ThreadPool) -> Result<[f32; 3]> {
        if ids.is_empty() || ids.len() > CONTEXT {
            return Err(SafetyError::Invalid(format!(
                "a Prompt Guard window holds 1 to {CONTEXT} tokens, got {}",
                ids.len()
            )));
        }
        let logits = self
            .model
            .forward(ids, pool)
            .map_err(|e| SafetyError::Invalid(format!("Prompt Guard: {e}")))?;
        let [a, b, c] = <[f32; 3]>::try_from(logits.as_slice()).map_err(|_| {
            SafetyError::Invalid(format!("Prompt Guard gave {} logits", logits.len()))
        })?;
        Ok(softmax([a, b, c]))
    }

    /// The model inputs for a text's `ids`: `[CLS] chunk [SEP]` for each chunk of
    /// [`WINDOW`] tokens, in text order; an empty text is one window `[CLS] [SEP]`.
    pub fn window_inputs<'a>(&self, ids: &'a [u32]) -> impl Iterator<Item = Vec<u32>> + 'a {
        let (cls, sep) = (self.tokenizer.cls, self.tokenizer.sep);
        let empty: &'a [u32] = &[];
        let chunks: Vec<&'a [u32]> = if ids.is_empty() {
            vec![empty]
        } else {
            ids.chunks(WINDOW).collect()
        };
        chunks.into_iter().map(move |chunk| {
            let mut window = Vec::with_capacity(chunk.len() + 2);
            window.push(cls);
            window.extend_from_slice(chunk);
            window.push(sep);
            window
        })
    }

    /// Scores `text`: every window of [`WINDOW`] tokens, the worst one reported.
    pub fn classify(&self, text: &str, pool: &ThreadPool) -> Result<PromptGuardScores> {
        let ids = self.tokenizer.encode(text)?;
        let windows = self
            .window_inputs(&ids)
            .map(|w| self.window_probabilities(&w, pool))
            .collect::<Result<Vec<_>>>()?;
        Ok(PromptGuardScores::from_windows(windows, ids.len()))
    }
}

/// `softmax` at temperature 1.
fn softmax(z: [f32; 3]) -> [f32; 3] {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = z.map(|v| (v - m).exp());
    let s: f32 = e.iter().sum();
    e.map(|v| v / s)
}

/// A text's Prompt Guard result.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptGuardScores {
    /// Probabilities of the worst window (highest `p[1] + p[2]`).
    pub benign: f32,
    pub injection: f32,
    pub jailbreak: f32,
    /// `[p_benign, p_injection, p_jailbreak]` of every window, in text order.
    pub windows: Vec<[f32; 3]>,
    /// Text tokens (without `[CLS]`/`[SEP]`).
    pub tokens: usize,
}

impl PromptGuardScores {
    /// Reports the window with the highest injection score (the first on ties); no
    /// windows reads as benign.
    pub fn from_windows(windows: Vec<[f32; 3]>, tokens: usize) -> PromptGuardScores {
        let worst = windows.iter().fold(None::<[f32; 3]>, |best, w| match best {
            Some(b) if b[1] + b[2] >= w[1] + w[2] => Some(b),
            _ => Some(*w),
        });
        let [benign, injection, jailbreak] = worst.unwrap_or([1.0, 0.0, 0.0]);
        PromptGuardScores {
            benign,
            injection,
            jailbreak,
            windows,
            tokens,
        }
    }

    pub fn n_windows(&self) -> usize {
        self.windows.len()
    }
}

/// What a Prompt Guard shield looks for (spec §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Direct user input: `p[2]`.
    Jailbreak,
    /// Third-party content (tool output, documents): `p[1] + p[2]`.
    Injection,
}

impl Mode {
    /// The mode's score, the maximum over windows (the reported probabilities when there
    /// are none).
    pub fn score(&self, s: &PromptGuardScores) -> f32 {
        let of = |p: &[f32; 3]| match self {
            Mode::Jailbreak => p[2],
            Mode::Injection => p[1] + p[2],
        };
        if s.windows.is_empty() {
            return of(&[s.benign, s.injection, s.jailbreak]);
        }
        s.windows.iter().map(of).fold(f32::NEG_INFINITY, f32::max)
    }

    /// llama-stack's rule: flagged when `score > threshold` (strictly).
    pub fn flagged(score: f32, threshold: f32) -> bool {
        flagged(score, threshold)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Jailbreak => "jailbreak",
            Mode::Injection => "injection",
        }
    }
}

/// Flagged when `score > threshold` (strictly; llama-stack's rule).
pub fn flagged(score: f32, threshold: f32) -> bool {
    score > threshold
}

impl FromStr for Mode {
    type Err = SafetyError;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "jailbreak" => Ok(Mode::Jailbreak),
            "injection" | "prompt_injection" => Ok(Mode::Injection),
            other => Err(SafetyError::Invalid(format!(
                "unknown Prompt Guard mode {other:?} (jailbreak, injection)"
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
