//! Byte-level BPE vocabularies with explicit merge lists (GPT-2 style), as embedded in GGUF
//! files (`tokenizer.ggml.model = "gpt2"`) and Hugging Face `tokenizer.json`.
//!
//! Tokens are stored as text in GPT-2's byte-to-unicode mapping (`Ġ` is a space); we turn
//! them back into bytes once at load, so the rest works on bytes, and merge with the same
//! [`crate::bpe::merge`] as Meta's tokenizer, ranking *pairs* by their merge-list index.
//! Behaviour follows llama.cpp's `llm_tokenizer_bpe`: control tokens are only recognised in
//! text when asked (`parse_special`), user-defined tokens always; with the Llama 3
//! pre-tokenizer a piece that is itself a token is taken whole ("ignore_merges").

use rustc_hash::FxHashMap;

use crate::bpe::{self, Scratch};
use crate::error::{Result, TokenizerError};
use crate::pretokenize::{pieces as llama3_pieces, qwen2_pieces};
use crate::pretokenize_gpt2::{gpt2_pieces, smollm_pieces};

/// Which pre-tokenizer splits text before BPE (GGUF `tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `llama-bpe`: Meta's Llama 3 pattern.
    Llama3,
    /// `smollm`: digits isolated, then GPT-2.
    Smollm,
    /// `qwen2`: Meta's pattern with single-character numbers.
    Qwen2,
    /// `gpt2` and anything else we do not know: the GPT-2 pattern.
    Gpt2,
}

impl PreTokenizer {
    /// From GGUF's `tokenizer.ggml.pre`.
    pub fn from_gguf(pre: Option<&str>) -> PreTokenizer {
        match pre {
            Some("llama-bpe" | "llama3") => PreTokenizer::Llama3,
            Some("smollm") => PreTokenizer::Smollm,
            // llama.cpp maps these names to the same pattern (LLAMA_VOCAB_PRE_TYPE_QWEN2).
            Some("qwen2" | "deepseek-r1-qwen") => PreTokenizer::Qwen2,
            _ => PreTokenizer::Gpt2,
        }
    }
}

/// llama.cpp's token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    /// From GGUF's `tokenizer.ggml.token_type` codes.
    pub fn from_code(c: i64) -> TokenKind {
        match c {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct ByteLevelBpe {
    /// Bytes of each token (control/user-defined tokens: their literal text).
    tokens: Vec<Vec<u8>>,
    kinds: Vec<TokenKind>,
    ids: FxHashMap<Vec<u8>, u32>,
    merges: FxHashMap<(u32, u32), u32>,
    /// Special texts matched in input, longest first: (text, id, is_control).
    specials: Vec<(String, u32, bool)>,
    pre: PreTokenizer,
    max_token_len: usize,
}

/// GPT-2's byte <-> unicode table: printable Latin-1 bytes map to themselves, the other 68
/// bytes to U+0100.. in order. (GGUF vocabularies store token texts in this form.)
pub fn byte_to_char() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let cp = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        t[b as usize] = char::from_u32(cp).unwrap_or('\0');
    }
    t
}

fn unmap(text: &str, rev: &FxHashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match rev.get(&c) {
            Some(&b) => out.push(b),
            // Not a mapped character (rare in practice): keep its UTF-8 bytes.
            None => out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
        }
    }
    out
}

impl ByteLevelBpe {
    /// Builds the tokenizer from GGUF/HF token texts (mapped form), token types (llama.cpp
    /// codes; may be empty) and merges (`"Ġ t"`, in rank order).
    pub fn new(
        token_texts: &[String],
        token_types: &[i64],
        merges: &[String],
        pre: PreTokenizer,
    ) -> Result<ByteLevelBpe> {
        if token_texts.is_empty() {
            return Err(TokenizerError::BadVocab("no tokens".into()));
        }
        if !token_types.is_empty() && token_types.len() != token_texts.len() {
            return Err(TokenizerError::BadVocab(format!(
                "{} token types for {} tokens",
                token_types.len(),
                token_texts.len()
            )));
        }
        let map = byte_to_char();
        let rev: FxHashMap<char, u8> = map.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut tokens = Vec::with_capacity(token_texts.len());
        let mut kinds = Vec::with_capacity(token_texts.len());
        let mut ids = FxHashMap::default();
        let mut specials = Vec::new();
        let mut max_token_len = 1;
        for (i, text) in token_texts.iter().enumerate() {
            let kind = TokenKind::from_code(token_types.get(i).copied().unwrap_or(1));
            let bytes = match kind {
                TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown => {
                    if !text.is_empty() {
                        specials.push((text.clone(), i as u32, kind != TokenKind::UserDefined));
                    }
                    text.as_bytes().to_vec()
                }
                _ => unmap(text, &rev),
            };
            if matches!(kind, TokenKind::Normal | TokenKind::Byte) {
                max_token_len = max_token_len.max(bytes.len());
                // First id wins for duplicate texts, as llama.cpp's token_to_id map does.
                ids.entry(bytes.clone()).or_insert(i as u32);
            }
            tokens.push(bytes);
            kinds.push(kind);
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut merge_ranks = FxHashMap::default();
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                return Err(TokenizerError::BadVocab(format!(
                    "merge {rank} {m:?} has no space"
                )));
            };
            let (Some(&li), Some(&ri)) = (ids.get(&unmap(l, &rev)), ids.get(&unmap(r, &rev)))
            else {
                // llama.cpp keeps such merges but they can never apply; skip them.
                continue;
            };
            merge_ranks.entry((li, ri)).or_insert(rank as u32);
        }
        Ok(ByteLevelBpe {
            tokens,
            kinds,
            ids,
            merges: merge_ranks,
            specials,
            pre,
            max_token_len,
        })
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Id of a token's exact text (control tokens by their literal text).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(t, _, _)| t == text)
            .map(|s| s.1)
            .or_else(|| self.ids.get(text.as_bytes()).copied())
    }

    /// Bytes of a token. Control tokens give their text only when `special` is set (as
    /// llama.cpp's `token_to_piece`); otherwise nothing.
    pub fn token_bytes(&self, id: u32, special: bool) -> Result<&[u8]> {
        let t = self
            .tokens
            .get(id as usize)
            .ok_or(TokenizerError::UnknownId {
                id,
                n_words: self.tokens.len() as u32,
            })?;
        Ok(match self.kinds[id as usize] {
            TokenKind::Control | TokenKind::Unknown | TokenKind::Unused if !special => &[],
            _ => t,
        })
    }

    /// Text of `ids` (control tokens omitted unless `special`), invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id, special)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Encodes `text`; with `parse_special`, control-token texts become their ids.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        // Partition on special texts as llama.cpp does: each special (longest first) splits
        // the remaining raw fragments.
        enum Frag<'a> {
            Raw(&'a str),
            Tok(u32),
        }
        let mut frags = vec![Frag::Raw(text)];
        for (st, id, control) in &self.specials {
            if *control && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Raw(s) if s.contains(st.as_str()) => {
                        let mut rest = s;
                        while let Some(at) = rest.find(st.as_str()) {
                            if at > 0 {
                                next.push(Frag::Raw(&rest[..at]));
                            }
                            next.push(Frag::Tok(*id));
                            rest = &rest[at + st.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Frag::Raw(rest));
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        for f in frags {
            match f {
                Frag::Tok(id) => out.push(id),
                Frag::Raw(s) => {
                    let mut piece =
                        |p: &str| self.encode_piece(p.as_bytes(), &mut out, &mut scratch);
                    match self.pre {
                        PreTokenizer::Llama3 => llama3_pieces(s).for_each(piece),
                        PreTokenizer::Qwen2 => qwen2_pieces(s).for_each(piece),
                        PreTokenizer::Smollm => smollm_pieces(s, &mut piece),
                        PreTokenizer::Gpt2 => gpt2_pieces(s, &mut piece),
                    }
                }
            }
        }
        out
    }

    fn encode_piece(&self, bytes: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if bytes.is_empty() {
            return;
        }
        if (bytes.len() == 1 || self.pre == PreTokenizer::Llama3)
            && let Some(&id) = self.ids.get(bytes)
        {
            out.push(id);
            return;
        }
        if bytes.len() == 1 {
            return self.push_bytes(bytes, out);
        }
        let id = |b: &[u8]| self.ids.get(b).copied();
        bpe::merge(
            bytes,
            self.max_token_len,
            scratch,
            |a, m, b| {
                self.merges
                    .get(&(id(&bytes[a..m])?, id(&bytes[m..b])?))
                    .copied()
            },
            |a, b| match id(&bytes[a..b]) {
                Some(t) => out.push(t),
                None => self.push_bytes(&bytes[a..b], out),
            },
        );
    }

    /// Falls back to single-byte tokens (llama.cpp does the same), dropping bytes the
    /// vocabulary cannot express.
    fn push_bytes(&self, bytes: &[u8], out: &mut Vec<u32>) {
        for b in bytes {
            if let Some(&t) = self.ids.get(std::slice::from_ref(b)) {
                out.push(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_map_is_a_bijection() {
        let m = byte_to_char();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'!' as usize], '!');
        assert_eq!(m[0], 'Ā');
        assert_eq!(m[0xad], 'Ń');
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
    }

    fn tiny() -> ByteLevelBpe {
        let map = byte_to_char();
        let mut texts: Vec<String> = vec!["<|im_start|>".into()];
        texts.extend((0..=255u8).map(|b| map[b as usize].to_string()));
        texts.extend(["Ġt", "he", "Ġthe"].map(String::from));
        let mut types = vec![3i64];
        types.extend(std::iter::repeat_n(1, 256 + 3));
        let merges: Vec<String> = ["Ġ t", "h e", "Ġt he"].map(String::from).to_vec();
        ByteLevelBpe::new(&texts, &types, &merges, PreTokenizer::Gpt2).expect("vocab")
    }

    #[test]
    fn merges_by_pair_rank_and_parses_specials_on_request() {
        let v = tiny();
        let the = v.token_id(" the").expect("token");
        assert_eq!(v.encode(" the", false), [the]);
        let ids = v.encode("<|im_start|> the", true);
        assert_eq!(ids, [0, the]);
        let ids = v.encode("<|im_start|>", false);
        assert_eq!(
            ids.len(),
            "<|im_start|>".len(),
            "control text stays text unless asked"
        );
        assert_eq!(v.decode(&[0, the], false).expect("decode"), " the");
        assert_eq!(
            v.decode(&[0, the], true).expect("decode"),
            "<|im_start|> the"
        );
    }
}
