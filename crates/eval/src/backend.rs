//! What a task needs from a model, whichever runs it: the log-likelihood of
//! continuations after a context, the log-likelihood of a whole text, and greedy
//! generation. Implemented in process ([`crate::local`]) and over HTTP
//! ([`crate::openai`]).

use ferrollama_engine::ChatMessage;

use crate::error::Result;

/// A prompt: plain text, or a dialog to lay out with the model's chat template
/// (`--apply-chat-template`), ending where the assistant's reply begins.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Context {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// The log-likelihood of one continuation, and whether greedy decoding would have
/// produced exactly its tokens (lm-eval's `(ll, is_greedy)`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LogLikelihood {
    pub ll: f64,
    pub is_greedy: bool,
}

/// A model to evaluate.
pub trait Backend {
    /// Log-likelihoods of each continuation after `context` (the choices of one
    /// question share the context, which a backend may evaluate once).
    fn loglikelihood(
        &mut self,
        context: &Context,
        continuations: &[String],
    ) -> Result<Vec<LogLikelihood>>;

    /// Log-likelihood of a whole text (lm-eval's `loglikelihood_rolling`).
    fn loglikelihood_rolling(&mut self, text: &str) -> Result<f64>;

    /// Greedy continuation of `context`, cut before the first of `until`, at most
    /// `max_gen_toks` tokens.
    fn generate(
        &mut self,
        context: &Context,
        until: &[String],
        max_gen_toks: usize,
    ) -> Result<String>;
}

/// lm-eval's post-processing of a generation: cut at each stop string in turn
/// (`s.split(term)[0]` for every non-empty term).
pub fn cut_at_stops(text: &str, until: &[String]) -> String {
    let mut s = text;
    for term in until {
        if !term.is_empty()
            && let Some(i) = s.find(term.as_str())
        {
            s = &s[..i];
        }
    }
    s.to_string()
}
