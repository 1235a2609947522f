//! Prompt Guard as a shield: the text of the last message, classified on the engine's
//! thread pool.
//!
//! Each 512-token window is one job of the engine actor ([`Engine::run_on_pool`]), run
//! between two scheduler steps: a long text (a retrieved document, a big tool output)
//! delays the chat streams by one window's forward pass at a time, never by the whole
//! text, and the pool's threads are not oversubscribed by a second set of workers.
//! Tokenizing runs on a blocking thread, off the async workers.

use std::sync::Arc;

use ferrollama_engine::scheduler::Engine;
use serde_json::json;

use crate::error::{Result, SafetyError};
use crate::prompt_guard::{DEFAULT_THRESHOLD, Mode, PromptGuard, PromptGuardScores, WINDOW};
use crate::shield::Verdict;

/// Texts longer than this many bytes are refused with an error that says to split them:
/// about 128K tokens of English with mDeBERTa's vocabulary, the context of the Llama 3.1
/// models whose input it guards (~250 windows, minutes of a 2-core CPU).
pub const MAX_TEXT_BYTES: usize = 512 << 10;

/// A Prompt Guard model with the mode and threshold of one shield.
#[derive(Debug, Clone)]
pub struct PromptGuardShield {
    pub model: Arc<PromptGuard>,
    pub mode: Mode,
    /// Flagged when the mode's score is strictly above it.
    pub threshold: f32,
}

impl PromptGuardShield {
    /// A shield in `mode` with Meta's threshold 0.9.
    pub fn new(model: Arc<PromptGuard>, mode: Mode) -> PromptGuardShield {
        PromptGuardShield {
            model,
            mode,
            threshold: DEFAULT_THRESHOLD,
        }
    }

    /// Sets the threshold; it must lie in [0, 1].
    pub fn with_threshold(mut self, threshold: f32) -> Result<PromptGuardShield> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(SafetyError::Invalid(format!(
                "a Prompt Guard threshold is a probability in [0, 1], not {threshold}"
            )));
        }
        self.threshold = threshold;
        Ok(self)
    }

    /// The code a violation reports.
    pub fn code(&self) -> &'static str {
        match self.mode {
            Mode::Jailbreak => "jailbreak",
            Mode::Injection => "prompt_injection",
        }
    }

    /// Classifies `text` window by window on the engine's pool.
    pub async fn scores(&self, engine: &Engine, text: &str) -> Result<PromptGuardScores> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(SafetyError::Invalid(format!(
                "the text is {} bytes; Prompt Guard shields take at most {MAX_TEXT_BYTES} (split it)",
                text.len()
            )));
        }
        let model = self.model.clone();
        let owned = text.to_string();
        let ids = tokio::task::spawn_blocking(move || model.tokenizer().encode(&owned))
            .await
            .map_err(|e| {
                SafetyError::Engine(format!("the Prompt Guard tokenizer failed: {e}"))
            })??;
        let mut windows = Vec::with_capacity(ids.len().div_ceil(WINDOW).max(1));
        for seq in self.model.window_inputs(&ids) {
            let model = self.model.clone();
            let rx = engine
                .run_on_pool(move |pool| model.window_probabilities(&seq, pool))
                .map_err(|e| SafetyError::Engine(format!("Prompt Guard could not run: {e}")))?;
            let p = rx.await.map_err(|_| {
                SafetyError::Engine("the engine stopped during a Prompt Guard check".into())
            })??;
            windows.push(p);
        }
        Ok(PromptGuardScores::from_windows(windows, ids.len()))
    }

    /// The verdict on `text`.
    pub async fn check(&self, engine: &Engine, text: &str) -> Result<Verdict> {
        let s = self.scores(engine, text).await?;
        let score = self.mode.score(&s);
        let flagged = Mode::flagged(score, self.threshold);
        let code = self.code();
        let name = match self.mode {
            Mode::Jailbreak => "Jailbreak",
            Mode::Injection => "Prompt injection",
        };
        Ok(Verdict {
            flagged,
            codes: if flagged {
                vec![code.to_string()]
            } else {
                vec![]
            },
            categories: if flagged {
                vec![name.to_string()]
            } else {
                vec![]
            },
            scores: vec![(code.to_string(), score)],
            detail: json!({
                "mode": self.mode.name(),
                "threshold": self.threshold,
                "score": score,
                "benign": s.benign,
                "injection": s.injection,
                "jailbreak": s.jailbreak,
                "windows": s.n_windows(),
                "tokens": s.tokens,
            }),
        })
    }
}
