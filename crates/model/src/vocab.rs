//! A model's own tokenizer, from GGUF metadata (`tokenizer.ggml.*`) or a Hugging Face
//! `tokenizer.json`, with its special ids and chat template. The BPE itself is the tokenizer
//! crate's (one implementation for all).

use ferrollama_tokenizer::{ByteLevelBpe, PreTokenizer, TokenKind};

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetadataExt, Value};

/// Texts llama.cpp treats as end-of-generation when they are control tokens.
const EOG_TEXTS: [&str; 9] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "<|return|>",
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

    /// Reads a Hugging Face folder's `tokenizer.json` (byte-level BPE) and, if present,
    /// `tokenizer_config.json` (chat template, BOS/EOS, add_bos_token).
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<ModelTokenizer> {
        let read = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(|source| ModelError::Io {
                path: p.clone(),
                source,
            })?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ModelError::Vocab(format!("{}: {e}", p.display())))
        };
        let tj = read("tokenizer.json")?
            .ok_or_else(|| ModelError::Vocab(format!("{} has no tokenizer.json", dir.display())))?;
        let model = &tj["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(ModelError::Unsupported(format!(
                "tokenizer.json model type {}",
                model["type"]
            )));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| ModelError::Vocab("tokenizer.json has no model.vocab".into()))?;
        let mut entries: Vec<(u32, String, i64)> = vocab
            .iter()
            .filter_map(|(t, id)| id.as_u64().map(|i| (i as u32, t.clone(), 1)))
            .collect();
        for a in tj["added_tokens"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) {
                let kind = if a["special"].as_bool().unwrap_or(false) {
                    3
                } else {
                    4
                };
                entries.retain(|e| e.0 != id as u32);
                entries.push((id as u32, content.to_string(), kind));
            }
        }
        let n = entries.iter().map(|e| e.0 as usize + 1).max().unwrap_or(0);
        if n > 1 << 22 {
            return Err(ModelError::Vocab(format!("token id {n} is absurdly large")));
        }
        let mut texts = vec![String::new(); n];
        let mut types = vec![5i64; n]; // unused unless defined
        for (id, t, k) in entries {
            texts[id as usize] = t;
            types[id as usize] = k;
        }
        let merges: Vec<String> = model["merges"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|m| match m {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(p) => {
                    Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                }
                _ => None,
            })
            .collect();
        let pre_desc = tj["pre_tokenizer"].to_string();
        let pre = if pre_desc.contains("{1,3}") {
            PreTokenizer::Llama3
        } else if pre_desc.contains("\"Digits\"") {
            PreTokenizer::Smollm
        } else {
            PreTokenizer::Gpt2
        };
        let bpe = ByteLevelBpe::new(&texts, &types, &merges, pre)
            .map_err(|e| ModelError::Vocab(e.to_string()))?;
        let cfg = read("tokenizer_config.json")?.unwrap_or_default();
        let token_of = |key: &str| -> Option<u32> {
            let v = &cfg[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            bpe.token_id(text)
        };
        let bos = token_of("bos_token");
        let eos = token_of("eos_token");
        Ok(ModelTokenizer {
            stop_ids: eog_ids(&bpe, eos.into_iter().collect()),
            bos,
            eos,
            add_bos: cfg["add_bos_token"]
                .as_bool()
                .unwrap_or(pre == PreTokenizer::Llama3),
            chat_template: cfg["chat_template"].as_str().map(str::to_string),
            bpe,
        })
    }
}
