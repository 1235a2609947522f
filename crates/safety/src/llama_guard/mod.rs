//! Llama Guard 3 as a shield: Meta's prompt ([`prompt`]), greedy decoding constrained to
//! the verdict grammar ([`parse::grammar`]), and the unsafe score (spec §5.1).
//!
//! The guard is an ordinary model of the engine: its requests are scheduled by the same
//! actor, in the same batches, as the chat models', and its prompt's long fixed header
//! (task, categories) is served from the prefix cache after the first check.

pub mod parse;
pub mod prompt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrollama_engine::Model;
use ferrollama_engine::constrain::{Constraint, Pattern};
use ferrollama_engine::scheduler::{Engine, Event, Finish, SeqRequest};
use ferrollama_engine::{ChatMessage, SamplerConfig};

use crate::categories::by_code;
use crate::error::{Result, SafetyError};
pub use parse::{Answer, apply_excluded, grammar, parse};
pub use prompt::{GuardSize, Speaker, Turn, check_excluded, normalize, render};

/// Most tokens a verdict may take (`unsafe\nS1,S2,...,S14` is about 30 with Llama 3's
/// vocabulary).
const MAX_VERDICT_TOKENS: usize = 48;
/// How long one check may take before it is abandoned.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// A Llama Guard 3 shield on one of the engine's models.
#[derive(Debug, Clone)]
pub struct LlamaGuard {
    /// The guard model's index in the engine.
    pub model: usize,
    pub size: GuardSize,
    pub excluded: Vec<String>,
    constraint: Constraint,
    /// The first token of `unsafe` (Llama 3: 39257), whose probability at the first
    /// position is the unsafe score.
    unsafe_token: u32,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardVerdict {
    pub safe: bool,
    /// Violated codes (excluded ones removed).
    pub codes: Vec<String>,
    /// The codes' model-card names.
    pub categories: Vec<String>,
    /// Probability of `unsafe` as the first generated token (before the grammar).
    pub unsafe_score: f32,
    /// The guard's raw answer.
    pub output: String,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// `prompt` as the only user message of a Llama 3.1 dialog, ending with the assistant
/// header, built as Meta's `ChatFormat.encode_dialog_prompt` builds it: control tokens
/// looked up by `special`, every text piece (role names, `\n\n`, the prompt) encoded on
/// its own by `encode` with no special-token parsing. `None` when the vocabulary lacks
/// Llama 3's control tokens.
pub fn llama31_user_prompt(
    prompt: &str,
    special: impl Fn(&str) -> Option<u32>,
    encode: impl Fn(&str, &mut Vec<u32>),
) -> Option<Vec<u32>> {
    let bos = special("<|begin_of_text|>")?;
    let sh = special("<|start_header_id|>")?;
    let eh = special("<|end_header_id|>")?;
    let eot = special("<|eot_id|>")?;
    let mut ids = vec![bos, sh];
    encode("user", &mut ids);
    ids.push(eh);
    encode("\n\n", &mut ids);
    encode(prompt, &mut ids);
    ids.push(eot);
    ids.push(sh);
    encode("assistant", &mut ids);
    ids.push(eh);
    encode("\n\n", &mut ids);
    Some(ids)
}

/// Which Llama Guard 3 `model` is: by name (`1b`/`8b` in it), else by width (the 8B is
/// 4096 wide, the 1B 2048).
pub fn detect_size(model: &Model) -> GuardSize {
    let name = model.name.to_ascii_lowercase();
    if name.contains("1b") {
        GuardSize::OneB
    } else if name.contains("8b") || model.llama.config.dim >= 4096 {
        GuardSize::EightB
    } else {
        GuardSize::OneB
    }
}

impl LlamaGuard {
    /// A shield on `model` (the engine's model at index `index`). `size` defaults to
    /// [`detect_size`].
    pub fn new(
        model: &Model,
        index: usize,
        size: Option<GuardSize>,
        excluded: Vec<String>,
    ) -> Result<LlamaGuard> {
        let size = size.unwrap_or_else(|| detect_size(model));
        check_excluded(size, &excluded)?;
        let pattern = Pattern::new(&grammar(size.categories().len()))
            .map_err(|e| SafetyError::Invalid(format!("the verdict grammar: {e}")))?;
        let unsafe_token = model
            .encode("unsafe", false, false)
            .first()
            .copied()
            .ok_or_else(|| {
                SafetyError::Invalid("the guard's tokenizer cannot encode 'unsafe'".into())
            })?;
        Ok(LlamaGuard {
            model: index,
            size,
            excluded,
            constraint: Constraint::Pattern(Arc::new(pattern)),
            unsafe_token,
        })
    }

    /// The guard prompt as one user message in the Llama 3.1 chat format:
    /// `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>`
    /// then the assistant header and `\n\n`, each piece encoded as Meta's `ChatFormat`
    /// does (the prompt's text never becomes control tokens). A model without Llama 3's
    /// header tokens (a stand-in) gets its own chat template instead.
    pub fn prompt_ids(model: &Model, prompt: &str) -> Result<Vec<u32>> {
        let bpe = &model.tokenizer.bpe;
        if let Some(ids) = llama31_user_prompt(
            prompt,
            |t| bpe.token_id(t),
            |s, out| out.extend(model.encode(s, false, false)),
        ) {
            return Ok(ids);
        }
        model
            .chat_prompt(&[ChatMessage::new("user", prompt)])
            .map_err(|e| SafetyError::Invalid(format!("the guard's chat template: {e}")))
    }

    /// Classifies the last user or assistant message of `turns`.
    pub async fn check(&self, engine: &Engine, turns: &[Turn]) -> Result<GuardVerdict> {
        let model = engine.model(self.model).ok_or_else(|| {
            SafetyError::NotFound(format!("guard model {} is not loaded", self.model))
        })?;
        let text = render(turns, self.size, &self.excluded)?;
        let ids = Self::prompt_ids(&model, &text)?;
        let ctx = engine.context(self.model).unwrap_or(0);
        if ids.len() + MAX_VERDICT_TOKENS > ctx {
            return Err(SafetyError::Invalid(format!(
                "the conversation is too long for the guard: its prompt has {} tokens and \
                 the guard's context holds {ctx} (with {MAX_VERDICT_TOKENS} for the answer); \
                 check a shorter conversation or serve with a larger --ctx",
                ids.len()
            )));
        }
        let req = SeqRequest {
            model: self.model,
            prompt: ids,
            max_tokens: MAX_VERDICT_TOKENS,
            sampler: SamplerConfig::greedy(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            prompt_logprobs: None,
            constraint: Some(self.constraint.clone()),
            watch: vec![self.unsafe_token],
            deadline: Some(Instant::now() + CHECK_TIMEOUT),
            lora: None,
        };
        let mut rx = engine
            .submit(req)
            .map_err(|e| SafetyError::Engine(e.to_string()))?;
        let mut output = String::new();
        let mut score: Option<f32> = None;
        loop {
            match rx.recv().await {
                Some(Event::Token { text, logprob, .. }) => {
                    if score.is_none() {
                        score = logprob.and_then(|l| l.watched.first().map(|lp| lp.exp()));
                    }
                    output.push_str(&text);
                }
                Some(Event::Done(d)) => {
                    output.push_str(&d.text);
                    if matches!(d.finish, Finish::Timeout | Finish::Shutdown) {
                        return Err(SafetyError::Engine(
                            "the guard check did not finish (timeout or shutdown)".into(),
                        ));
                    }
                    let answer = apply_excluded(parse(&output)?, &self.excluded);
                    let categories = answer
                        .codes
                        .iter()
                        .filter_map(|c| by_code(c).map(|c| c.name.to_string()))
                        .collect();
                    return Ok(GuardVerdict {
                        safe: answer.safe,
                        codes: answer.codes,
                        categories,
                        unsafe_score: score.unwrap_or(0.0),
                        output,
                        prompt_tokens: d.prompt_tokens,
                        cached_tokens: d.cached_tokens,
                    });
                }
                Some(Event::Error(e)) => return Err(SafetyError::Engine(e)),
                None => {
                    return Err(SafetyError::Engine(
                        "the engine dropped the guard check".into(),
                    ));
                }
            }
        }
    }
}
