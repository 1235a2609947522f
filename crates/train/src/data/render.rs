//! The seam between training data and a model's prompt format: [`ChatRenderer`] turns a
//! dialog into the exact tokens inference would see, each marked as counted in the loss
//! or not: the Llama 3.1 format ([`crate::data::llama31`]) for Llama 3 vocabularies, a
//! model's own Jinja template ([`crate::data::template`]) for the others; the rest of the
//! data pipeline does not depend on which.

use crate::data::openai::Check;
use crate::data::record::Chat;
use crate::model::Sequence;

/// A model's prompt format and tokenizer, as training data needs them.
pub trait ChatRenderer {
    /// The dialog, as the model sees it at inference, from its first token to the end of
    /// its last message (no trailing assistant header: the dialog is complete). Counted are
    /// exactly the tokens a trained assistant message produces: its body and its end token
    /// (`<|eot_id|>`, or `<|eom_id|>` after tool calls), not its header, which the prompt
    /// builder writes, and nothing of the other roles. `Err` says why the dialog cannot be
    /// written (a built-in tool call without its argument...).
    fn render_chat(&self, chat: &Chat) -> Check<Masked>;

    /// Plain text to ids; special-token text stays text.
    fn encode_text(&self, text: &str) -> Vec<u32>;

    /// The id that starts a document (`<|begin_of_text|>`).
    fn begin_of_text(&self) -> u32;

    /// The id that ends raw text (`<|end_of_text|>`), one of the model's stop tokens.
    fn end_of_text(&self) -> u32;
}

/// Tokens, each with whether it is a target in the loss: `counted[i]` says whether the
/// model is trained to produce `tokens[i]` from the tokens before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masked {
    pub tokens: Vec<u32>,
    pub counted: Vec<bool>,
}

impl Masked {
    pub fn push(&mut self, ids: &[u32], counted: bool) {
        self.tokens.extend_from_slice(ids);
        self.counted.resize(self.tokens.len(), counted);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Keeps the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.counted.truncate(n);
    }

    /// Next-token prediction: position `t` reads `tokens[t]` and predicts `tokens[t + 1]`,
    /// counted when `counted[t + 1]` is (the first token is never a target).
    pub fn to_sequence(&self) -> Sequence {
        let n = self.tokens.len().saturating_sub(1);
        Sequence {
            inputs: self.tokens[..n].to_vec(),
            targets: self.tokens.get(1..).unwrap_or_default().to_vec(),
            counted: self.counted.get(1..).unwrap_or_default().to_vec(),
        }
    }
}
