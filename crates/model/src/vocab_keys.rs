//! A model's tokenizer as GGUF `tokenizer.*` key/values, ready for [`crate::gguf::GgufWriter`]:
//! from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`), or from a tiktoken
//! `tokenizer.model` such as Meta's Llama 3 one.
//!
//! A tiktoken file has ranks but no merge list, so it becomes a GPT-2-style vocabulary the
//! way Hugging Face's `TikTokenConverter` made Llama 3's `tokenizer.json` (from which
//! llama.cpp's GGUFs come): token texts in GPT-2's byte-to-unicode form, and for each
//! multi-byte token, in rank order, every split into two tokens, ordered by the ranks of
//! the left and then the right part. Merge index order is then the rank order of the
//! merged token, so merging by pair index reproduces tiktoken's merging by rank. (Keeping
//! only the last merge of a lower-rank BPE, as llama.cpp's Qwen converter does, fails on
//! Meta's file: 4-byte tokens such as rank 100421 have no such two-part path, and are
//! reachable only as whole pieces.) For Meta's `tokenizer.model` this gives llama.cpp's
//! `ggml-vocab-llama-bpe.gguf` token for token and merge for merge (280,147 merges); a test
//! pins that. Meta's 256 special tokens follow as CONTROL tokens with their llama-models
//! names.
//!
//! This is the one reader of `tokenizer.json` (ids, added-token types, the pre-tokenizer
//! choice, BOS/EOS/add_bos and the chat template): [`crate::vocab::ModelTokenizer::from_hf_dir`]
//! loads these keys, so a folder and the GGUF imported from it give the same tokenizer.

use std::path::{Path, PathBuf};

use ferrollama_tokenizer::bytelevel::byte_to_char;
use ferrollama_tokenizer::special::{NUM_SPECIAL, special_name};
use ferrollama_tokenizer::{ByteLevelBpe, PreTokenizer, Special, Tokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::{Value, ty};

/// GGUF `tokenizer.*` key/values.
pub type TokenizerKeys = Vec<(String, Value)>;

/// llama.cpp's token type codes.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn strings(v: Vec<String>) -> Value {
    Value::Array(ty::STRING, v.into_iter().map(Value::String).collect())
}

fn key(k: &str, v: Value) -> (String, Value) {
    (k.to_string(), v)
}

/// Keys for a tiktoken tokenizer with Meta's 256 special tokens (Llama 3).
///
/// BOS is `<|begin_of_text|>` and EOS `<|eot_id|>`: Meta ships instruct checkpoints in this
/// format, and a chat turn ends with `<|eot_id|>` (llama.cpp and HF's Llama 3.1 Instruct
/// `tokenizer_config.json` choose the same). `<|end_of_text|>` and `<|eom_id|>` still stop
/// generation: the loader adds every end-of-generation control token to its stop set. No
/// chat template is written; the engine then falls back to the Llama 3.1 format.
pub fn from_tiktoken(tok: &Tokenizer) -> Result<TokenizerKeys> {
    let vocab = tok.vocab();
    let map = byte_to_char();
    let text = |b: &[u8]| b.iter().map(|&x| map[usize::from(x)]).collect::<String>();
    let n = vocab.len();
    let mut tokens = Vec::with_capacity(n + NUM_SPECIAL);
    let mut types = Vec::with_capacity(n + NUM_SPECIAL);
    let mut merges = Vec::with_capacity(n.saturating_mul(2));
    for rank in 0..n as u32 {
        let bytes = vocab
            .token(rank)
            .ok_or_else(|| ModelError::Vocab(format!("rank {rank} is missing")))?;
        tokens.push(text(bytes));
        types.push(Value::I32(NORMAL));
        // Every split into two tokens, by (left rank, right rank); none for tokens that
        // are only ever matched whole.
        let mut splits: Vec<(u32, u32, usize)> = (1..bytes.len())
            .filter_map(|i| {
                let (l, r) = bytes.split_at(i);
                Some((vocab.rank(l)?, vocab.rank(r)?, i))
            })
            .collect();
        splits.sort_unstable();
        for (_, _, i) in splits {
            merges.push(format!("{} {}", text(&bytes[..i]), text(&bytes[i..])));
        }
    }
    for i in 0..NUM_SPECIAL {
        tokens.push(special_name(i));
        types.push(Value::I32(CONTROL));
    }
    let id = |s: Special| Value::U32(tok.special(s));
    Ok(vec![
        key("tokenizer.ggml.model", Value::String("gpt2".into())),
        key("tokenizer.ggml.pre", Value::String("llama-bpe".into())),
        key("tokenizer.ggml.tokens", strings(tokens)),
        key("tokenizer.ggml.token_type", Value::Array(ty::I32, types)),
        key("tokenizer.ggml.merges", strings(merges)),
        key("tokenizer.ggml.bos_token_id", id(Special::BeginOfText)),
        key("tokenizer.ggml.eos_token_id", id(Special::EndOfTurn)),
        key("tokenizer.ggml.eot_token_id", id(Special::EndOfTurn)),
        key("tokenizer.ggml.eom_token_id", id(Special::EndOfMessage)),
        key("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ])
}

/// [`from_tiktoken`] for a `tokenizer.model` file.
pub fn from_tiktoken_file(path: &Path) -> Result<TokenizerKeys> {
    let tok =
        Tokenizer::from_file(path).map_err(|e| ModelError::Vocab(e.to_string()).in_file(path))?;
    from_tiktoken(&tok)
}

/// Where a folder's tiktoken file is: `tokenizer.model`, or HF's `original/tokenizer.model`.
pub fn tiktoken_path(dir: &Path) -> Option<PathBuf> {
    [
        dir.join("tokenizer.model"),
        dir.join("original/tokenizer.model"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Vocab(format!("{}: {e}", path.display())))
}

/// Keys for a Hugging Face folder: from `tokenizer.json` when there is one, else from a
/// tiktoken `tokenizer.model`.
pub fn from_hf_dir(dir: &Path) -> Result<TokenizerKeys> {
    let Some(tj) = read_json(&dir.join("tokenizer.json"))? else {
        return match tiktoken_path(dir) {
            Some(p) => from_tiktoken_file(&p),
            None => Err(ModelError::Vocab(format!(
                "{} has no tokenizer.json or tokenizer.model",
                dir.display()
            ))),
        };
    };
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
    let too_big = |id: u64| ModelError::Vocab(format!("token id {id} is absurdly large"));
    let mut entries: Vec<(usize, String, i32)> = Vec::with_capacity(vocab.len());
    for (t, id) in vocab {
        if let Some(i) = id.as_u64() {
            let i = usize::try_from(i)
                .ok()
                .filter(|&i| i < 1 << 22)
                .ok_or(too_big(i))?;
            entries.push((i, t.clone(), NORMAL));
        }
    }
    for a in tj["added_tokens"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) {
            let id = usize::try_from(id)
                .ok()
                .filter(|&i| i < 1 << 22)
                .ok_or(too_big(id))?;
            let kind = if a["special"].as_bool().unwrap_or(false) {
                CONTROL
            } else {
                USER_DEFINED
            };
            entries.retain(|e| e.0 != id);
            entries.push((id, content.to_string(), kind));
        }
    }
    let n = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
    let mut texts = vec![String::new(); n];
    let mut types = vec![UNUSED; n]; // ids no entry defines
    for (id, t, k) in entries {
        texts[id] = t;
        types[id] = k;
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
    // Recognised by the pattern's number rule, as llama.cpp's converter tells them apart by
    // their tokenization: `\p{N}{1,3}` is Meta's, a lone `\p{N}` after the letter rule
    // Qwen2's, a `Digits` pre-tokenizer SmolLM's. (In the JSON text the regex's backslashes
    // are themselves escaped.)
    let (pre, pre_name) = if pre_desc.contains("{1,3}") {
        (PreTokenizer::Llama3, "llama-bpe")
    } else if pre_desc.contains(r"\\p{L}+|\\p{N}|") {
        (PreTokenizer::Qwen2, "qwen2")
    } else if pre_desc.contains("\"Digits\"") {
        (PreTokenizer::Smollm, "smollm")
    } else {
        (PreTokenizer::Gpt2, "gpt2")
    };
    // Built only to resolve BOS/EOS texts to ids exactly as the loader would.
    let types64: Vec<i64> = types.iter().map(|&t| t.into()).collect();
    let bpe = ByteLevelBpe::new(&texts, &types64, &merges, pre)
        .map_err(|e| ModelError::Vocab(e.to_string()))?;
    let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
    let token_of = |k: &str| -> Option<u32> {
        let v = &cfg[k];
        bpe.token_id(v.as_str().or_else(|| v["content"].as_str())?)
    };
    let mut keys = vec![
        key("tokenizer.ggml.model", Value::String("gpt2".into())),
        key("tokenizer.ggml.pre", Value::String(pre_name.into())),
        key("tokenizer.ggml.tokens", strings(texts)),
        key(
            "tokenizer.ggml.token_type",
            Value::Array(ty::I32, types.into_iter().map(Value::I32).collect()),
        ),
        key("tokenizer.ggml.merges", strings(merges)),
    ];
    if let Some(id) = token_of("bos_token") {
        keys.push(key("tokenizer.ggml.bos_token_id", Value::U32(id)));
    }
    if let Some(id) = token_of("eos_token") {
        keys.push(key("tokenizer.ggml.eos_token_id", Value::U32(id)));
    }
    let add_bos = cfg["add_bos_token"]
        .as_bool()
        .unwrap_or(pre == PreTokenizer::Llama3);
    keys.push(key("tokenizer.ggml.add_bos_token", Value::Bool(add_bos)));
    if let Some(t) = cfg["chat_template"].as_str() {
        keys.push(key("tokenizer.chat_template", Value::String(t.into())));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrollama_tokenizer::Vocab;

    /// A toy tiktoken vocabulary: merges come out in the rank order of the merged token,
    /// each token's splits by (left rank, right rank), as HF's TikTokenConverter.
    #[test]
    fn merges_from_ranks() {
        let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        toks.push(b"ab".to_vec()); // 256
        toks.push(b"bc".to_vec()); // 257
        toks.push(b"abc".to_vec()); // 258 = a|bc or ab|c
        toks.push(b"xyz".to_vec()); // 259: no split into two tokens, only matched whole
        toks.push(b"abcbc".to_vec()); // 260 = abc|bc
        let tok = Tokenizer::from_vocab(Vocab::from_tokens(toks).unwrap_or_else(|e| panic!("{e}")));
        let keys = from_tiktoken(&tok).unwrap_or_else(|e| panic!("{e}"));
        let merges = keys
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.merges")
            .and_then(|(_, v)| v.as_array())
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>());
        assert_eq!(merges, Some(vec!["a b", "b c", "a bc", "ab c", "abc bc"]));
        let n = keys
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .and_then(|(_, v)| v.as_array())
            .map(<[Value]>::len);
        assert_eq!(n, Some(261 + NUM_SPECIAL));
    }
}
