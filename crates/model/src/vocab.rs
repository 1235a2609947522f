//! A model's own tokenizer, from GGUF metadata (`tokenizer.ggml.*`) or a Hugging Face
//! `tokenizer.json`, with its special ids and chat template. The BPE itself is the tokenizer
//! crate's (one implementation for all).

use ferrollama_tokenizer::{ByteLevelBpe, PreTokenizer, TokenKind};

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetadataExt, Value};

/// Texts llama.cpp treats as end-of-generation when they are control tokens. The last
/// three are Qwen's fill-in-the-middle pad, repository and file separators, which llama.cpp
/// also ends generation on (its FIM_PAD / FIM_REP / FIM_SEP tokens).
const EOG_TEXTS: [&str; 12] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "<|return|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// A GGUF model's tokenizer and the ids that matter for generation.
#[derive(Debug, Clone)]
pub struct ModelTokenizer {
    pub bpe: ByteLevelBpe,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Ids that end generation (eos, eot, eom and known end-of-turn control tokens).
    pub stop_ids: Vec<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

fn eog_ids(bpe: &ByteLevelBpe, mut ids: Vec<u32>) -> Vec<u32> {
    for t in EOG_TEXTS {
        if let Some(i) = bpe.token_id(t)
            && bpe.kind(i) == Some(TokenKind::Control)
            && !ids.contains(&i)
        {
            ids.push(i);
        }
    }
    ids
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    match f.get_array(key)? {
        None => Ok(Vec::new()),
        Some(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::Metadata {
                        key: key.into(),
                        what: "expected an array of strings".into(),
                    })
            })
            .collect(),
    }
}

impl ModelTokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelTokenizer> {
        let model = f.get_str("tokenizer.ggml.model")?.unwrap_or("");
        if model != "gpt2" {
            return Err(ModelError::Unsupported(format!(
                "tokenizer.ggml.model {model:?}; byte-level BPE (\"gpt2\") vocabularies are supported"
            )));
        }
        let tokens = strings(f, "tokenizer.ggml.tokens")?;
        let merges = strings(f, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match f.get_array("tokenizer.ggml.token_type")? {
            None => Vec::new(),
            Some(items) => items.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        };
        let pre = PreTokenizer::from_gguf(f.get_str("tokenizer.ggml.pre")?);
        let bpe = ByteLevelBpe::new(&tokens, &types, &merges, pre)
            .map_err(|e| ModelError::Vocab(e.to_string()))?;
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get_u64(key)? {
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => Err(ModelError::Metadata {
                    key: key.into(),
                    what: format!("token id {v} is outside the vocabulary"),
                }),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let stop_ids = eog_ids(
            &bpe,
            [
                eos,
                id("tokenizer.ggml.eot_token_id")?,
                id("tokenizer.ggml.eom_token_id")?,
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        Ok(ModelTokenizer {
            bpe,
            bos,
            eos,
            stop_ids,
            add_bos: f.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true),
            chat_template: f
                .get_value("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

impl ModelTokenizer {
    /// The text of a special token (empty when there is none): what a chat template's
    /// `bos_token` / `eos_token` are.
    fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.bpe.token_bytes(i, true).ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// How this model's chat prompts are written: its Jinja chat template with its BOS and
    /// EOS texts, or Meta's Llama 3.1 format when the template is Meta's (or absent).
    pub fn chat_format(&self) -> crate::template::ChatTemplate {
        crate::template::ChatTemplate::detect(
            self.chat_template.as_deref(),
            &self.special_text(self.bos),
            &self.special_text(self.eos),
        )
    }

    /// Builds the tokenizer from GGUF `tokenizer.*` key/values (what importers produce), by
    /// the same code path as a GGUF file's.
    pub fn from_keys(keys: &[(String, Value)]) -> Result<ModelTokenizer> {
        let mut w = crate::gguf::GgufWriter::new();
        for (k, v) in keys {
            w.set(k, v.clone());
        }
        let f = GgufFile::parse(crate::gguf::Bytes::Owned(w.to_bytes()))?;
        ModelTokenizer::from_gguf(&f)
    }

    /// Reads a Hugging Face folder's `tokenizer.json` (byte-level BPE) or `tokenizer.model`,
    /// and `tokenizer_config.json` if present (chat template, BOS/EOS, add_bos_token), through
    /// the importer's GGUF keys, so a folder and the GGUF made from it load alike.
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<ModelTokenizer> {
        ModelTokenizer::from_keys(&crate::vocab_keys::from_hf_dir(dir)?)
    }
}
