//! The Llama 3 tokenizer: `encode` and `decode` exactly as Meta's `Tokenizer`.

use std::path::Path;

use memchr::memmem;

use crate::bpe::{self, Scratch};
use crate::error::{Result, TokenizerError};
use crate::pretokenize::pieces;
use crate::special::{NUM_SPECIAL, Special, special_name};
use crate::split::for_each_slice;
use crate::vocab::Vocab;

/// Which special-token texts are recognised in input text (Meta's `allowed_special`).
///
/// Meta's default is `None`: text such as `"<|eot_id|>"` is encoded as ordinary text, so
/// user content can never inject structure. (Plain tiktoken raises instead; HF parses it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AllowedSpecial<'a> {
    #[default]
    None,
    All,
    /// Only these exact texts.
    Some(&'a [&'a str]),
}

/// Llama 3's tokenizer: a tiktoken BPE vocabulary plus 256 special tokens after it.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    /// Text of each special token, by index after the BPE ranks.
    special_names: Vec<String>,
    special_ids: rustc_hash::FxHashMap<String, u32>,
}

impl Tokenizer {
    /// Loads Meta's `tokenizer.model`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Tokenizer::from_tiktoken_text(&text)
    }

    /// Builds the tokenizer from the text of a tiktoken file.
    pub fn from_tiktoken_text(text: &str) -> Result<Tokenizer> {
        Ok(Tokenizer::from_vocab(Vocab::from_tiktoken(text)?))
    }

    /// Appends Meta's 256 special tokens after `vocab`.
    pub fn from_vocab(vocab: Vocab) -> Tokenizer {
        let base = vocab.len() as u32;
        let special_names: Vec<String> = (0..NUM_SPECIAL).map(special_name).collect();
        let special_ids = special_names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), base + i as u32))
            .collect();
        Tokenizer {
            vocab,
            special_names,
            special_ids,
        }
    }

    /// Total ids: BPE ranks + special tokens (128,256 for Llama 3).
    pub fn n_words(&self) -> u32 {
        (self.vocab.len() + NUM_SPECIAL) as u32
    }

    /// Id of a core special token.
    pub fn special(&self, s: Special) -> u32 {
        self.vocab.len() as u32 + s as u32
    }

    /// Id of a special token by its text (`"<|eot_id|>"`).
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.special_ids.get(text).copied()
    }

    /// True for ids of special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        id >= self.vocab.len() as u32 && id < self.n_words()
    }

    /// `[<|end_of_text|>, <|eom_id|>, <|eot_id|>]`, Meta's stop tokens.
    pub fn stop_tokens(&self) -> [u32; 3] {
        [
            self.special(Special::EndOfText),
            self.special(Special::EndOfMessage),
            self.special(Special::EndOfTurn),
        ]
    }

    /// The BPE vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Meta's `Tokenizer.encode(s, bos=, eos=, allowed_special=)`.
    pub fn encode(&self, text: &str, bos: bool, eos: bool, allowed: AllowedSpecial) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, bos, eos, allowed, &mut out);
        out
    }

    /// [`Tokenizer::encode`], appending to `out`.
    pub fn encode_into(
        &self,
        text: &str,
        bos: bool,
        eos: bool,
        allowed: AllowedSpecial,
        out: &mut Vec<u32>,
    ) {
        let mut scratch = Scratch::default();
        if bos {
            out.push(self.special(Special::BeginOfText));
        }
        for_each_slice(text, |slice| match allowed {
            AllowedSpecial::None => self.encode_ordinary(slice, out, &mut scratch),
            _ => self.encode_with_specials(slice, allowed, out, &mut scratch),
        });
        if eos {
            out.push(self.special(Special::EndOfText));
        }
    }

    /// Encodes many texts on `threads` threads (`encode` with Meta's defaults, no BOS/EOS).
    /// Texts are dealt out in contiguous runs of roughly equal byte size.
    pub fn encode_batch(&self, texts: &[&str], threads: usize) -> Vec<Vec<u32>> {
        let threads = threads.clamp(1, texts.len().max(1));
        if threads == 1 {
            return texts
                .iter()
                .map(|t| self.encode(t, false, false, AllowedSpecial::None))
                .collect();
        }
        let total: usize = texts.iter().map(|t| t.len()).sum();
        let per = total.div_ceil(threads).max(1);
        let mut groups: Vec<&[&str]> = Vec::with_capacity(threads);
        let (mut start, mut acc) = (0, 0);
        for (i, t) in texts.iter().enumerate() {
            acc += t.len();
            if acc >= per && groups.len() + 1 < threads {
                groups.push(&texts[start..=i]);
                start = i + 1;
                acc = 0;
            }
        }
        groups.push(&texts[start..]);
        std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        g.iter()
                            .map(|t| self.encode(t, false, false, AllowedSpecial::None))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(v) => v,
                    // Encoding has no panicking paths on any input; if one appears, surface it.
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        })
    }

    /// Regex + BPE over one slice, special-token text treated as text.
    fn encode_ordinary(&self, slice: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        for piece in pieces(slice) {
            let bytes = piece.as_bytes();
            if let Some(r) = self.vocab.rank(bytes) {
                out.push(r);
                continue;
            }
            let vocab = &self.vocab;
            bpe::merge(
                bytes,
                vocab.max_token_len(),
                scratch,
                |a, _mid, b| vocab.rank(&bytes[a..b]),
                |a, b| {
                    // Every part is a token: single bytes always are, merges only make tokens.
                    if let Some(r) = vocab.rank(&bytes[a..b]) {
                        out.push(r);
                    }
                },
            );
        }
    }

    /// Splits `slice` at allowed special-token texts, encoding the text between them.
    fn encode_with_specials(
        &self,
        slice: &str,
        allowed: AllowedSpecial,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) {
        let mut text_start = 0;
        let mut search = 0;
        let finder = memmem::Finder::new("<|");
        while let Some(off) = finder.find(&slice.as_bytes()[search..]) {
            let at = search + off;
            search = at + 1;
            // Special texts are `<|name|>` with no `|>` inside, so the first `|>` closes it.
            let Some(close) = memmem::find(&slice.as_bytes()[at + 2..], b"|>") else {
                break;
            };
            let end = at + 2 + close + 2;
            let candidate = &slice[at..end];
            let Some(id) = self.special_id(candidate) else {
                continue;
            };
            let ok = match allowed {
                AllowedSpecial::All => true,
                AllowedSpecial::Some(set) => set.contains(&candidate),
                AllowedSpecial::None => false,
            };
            if ok {
                self.encode_ordinary(&slice[text_start..at], out, scratch);
                out.push(id);
                text_start = end;
                search = end;
            }
        }
        self.encode_ordinary(&slice[text_start..], out, scratch);
    }

    /// The bytes of one id (special ids give their text).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        if let Some(b) = self.vocab.token(id) {
            return Ok(b);
        }
        let index = (id as usize).wrapping_sub(self.vocab.len());
        self.special_names
            .get(index)
            .map(|s| s.as_bytes())
            .ok_or(TokenizerError::UnknownId {
                id,
                n_words: self.n_words(),
            })
    }

    /// Concatenated bytes of `ids`.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// Meta's `decode`: bytes of all ids, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}
