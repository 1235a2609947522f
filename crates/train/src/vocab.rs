//! Which prompt format a model's own vocabulary can be trained in. A model whose
//! vocabulary is Llama 3's (the 128,000 BPE ranks, then Meta's 256 special tokens at their
//! ids) gets the Llama 3.1 chat format through [`crate::data::Llama31Renderer`], built on a
//! tiktoken [`Tokenizer`] made from the model's own token bytes. Any other vocabulary can
//! train on text only ([`TextOnlyRenderer`]) until the engine's Jinja templates plug into
//! [`ChatRenderer`]: rendering chats in a format the model was not built for would teach it
//! tokens it never sees at inference.

use ferrollama_model::ModelTokenizer;
use ferrollama_tokenizer::{Tokenizer, Vocab};

use crate::data::openai::Check;
use crate::data::record::Chat;
use crate::data::render::{ChatRenderer, Masked};

/// BPE ranks of Llama 3's vocabulary, before its special tokens.
const LLAMA3_RANKS: u32 = 128_000;
/// Llama 3 special tokens that must sit at their ids.
const LLAMA3_SPECIALS: [(&str, u32); 4] = [
    ("<|begin_of_text|>", 128_000),
    ("<|end_of_text|>", 128_001),
    ("<|start_header_id|>", 128_006),
    ("<|eot_id|>", 128_009),
];

/// The model's vocabulary as Meta's tokenizer, when it is Llama 3's; `None` otherwise.
pub fn llama3_tokenizer(t: &ModelTokenizer) -> Option<Tokenizer> {
    if t.bpe.n_tokens() != (LLAMA3_RANKS + 256) as usize {
        return None;
    }
    if LLAMA3_SPECIALS
        .iter()
        .any(|&(text, id)| t.bpe.token_id(text) != Some(id))
    {
        return None;
    }
    let tokens = (0..LLAMA3_RANKS)
        .map(|i| t.bpe.token_bytes(i, true).map(<[u8]>::to_vec).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Tokenizer::from_vocab(Vocab::from_tokens(tokens).ok()?))
}

/// Text records through the model's own tokenizer; chats are refused.
#[derive(Debug, Clone, Copy)]
pub struct TextOnlyRenderer<'a> {
    tok: &'a ModelTokenizer,
    bos: u32,
    eos: u32,
}

impl<'a> TextOnlyRenderer<'a> {
    /// `None` when the vocabulary has no end-of-text token (documents need a boundary);
    /// without a begin-of-text token, documents start after the previous one's end token.
    pub fn new(tok: &'a ModelTokenizer) -> Option<TextOnlyRenderer<'a>> {
        let eos = tok.eos?;
        Some(TextOnlyRenderer {
            tok,
            bos: tok.bos.unwrap_or(eos),
            eos,
        })
    }
}

impl ChatRenderer for TextOnlyRenderer<'_> {
    fn render_chat(&self, _chat: &Chat) -> Check<Masked> {
        Err(
            "this model's vocabulary is not Llama 3's, and only the Llama 3.1 chat format \
             can be trained for now; use {\"text\": ...} records"
                .into(),
        )
    }

    fn encode_text(&self, text: &str) -> Vec<u32> {
        self.tok.bpe.encode(text, false)
    }

    fn begin_of_text(&self) -> u32 {
        self.bos
    }

    fn end_of_text(&self) -> u32 {
        self.eos
    }
}
