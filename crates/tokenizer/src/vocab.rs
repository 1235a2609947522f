//! The BPE vocabulary: token bytes <-> rank, where rank == id.
//!
//! Meta's `tokenizer.model` is tiktoken's text format: one `<base64 bytes> <rank>` per line.
//! Token bytes are not always valid UTF-8 (1,352 Llama 3 tokens are partial characters), so
//! everything here is bytes. All token bytes live in one buffer, indexed by `offsets`, which
//! keeps decode to one slice copy per id.

use base64::Engine as _;
use rustc_hash::FxHashMap;

use crate::error::{Result, TokenizerError};

/// Byte strings and their ranks.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// rank -> byte range in `bytes`.
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    /// byte string -> rank.
    ranks: FxHashMap<Box<[u8]>, u32>,
    /// rank of each single byte (every byte must be a token, so any text can be encoded).
    byte_rank: [u32; 256],
    max_token_len: usize,
}

impl Vocab {
    /// Parses tiktoken's text format. Blank lines are skipped; anything else malformed is an
    /// error naming the line (Meta's loader logs and skips such lines, which hides a corrupt
    /// file until it mis-encodes text). Ranks must be exactly `0..n`.
    pub fn from_tiktoken(text: &str) -> Result<Vocab> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut entries: Vec<Option<Vec<u8>>> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let mut fields = line.split_ascii_whitespace();
            let (Some(b64), Some(rank)) = (fields.next(), fields.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(bad(line_no, "expected '<base64> <rank>'"));
            };
            if fields.next().is_some() {
                return Err(bad(line_no, "more than two fields"));
            }
            let bytes = engine
                .decode(b64)
                .map_err(|e| bad(line_no, &format!("bad base64: {e}")))?;
            if bytes.is_empty() {
                return Err(bad(line_no, "empty token"));
            }
            let rank: usize = rank
                .parse()
                .map_err(|_| bad(line_no, &format!("rank {rank:?} is not a number")))?;
            if rank >= 10_000_000 {
                return Err(bad(line_no, &format!("rank {rank} is absurdly large")));
            }
            if entries.len() <= rank {
                entries.resize(rank + 1, None);
            }
            if entries[rank].is_some() {
                return Err(bad(line_no, &format!("rank {rank} appears twice")));
            }
            entries[rank] = Some(bytes);
        }
        let tokens = entries
            .into_iter()
            .enumerate()
            .map(|(rank, t)| {
                t.ok_or_else(|| TokenizerError::BadVocab(format!("rank {rank} is missing")))
            })
            .collect::<Result<Vec<_>>>()?;
        Vocab::from_tokens(tokens)
    }

    /// Builds a vocabulary where `tokens[rank]` are the bytes of each rank.
    pub fn from_tokens(tokens: Vec<Vec<u8>>) -> Result<Vocab> {
        if tokens.is_empty() {
            return Err(TokenizerError::BadVocab("no tokens".into()));
        }
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        let mut bytes = Vec::new();
        let mut ranks = FxHashMap::default();
        ranks.reserve(tokens.len());
        let mut max_token_len = 0;
        for (rank, t) in tokens.into_iter().enumerate() {
            offsets.push(bytes.len() as u32);
            bytes.extend_from_slice(&t);
            max_token_len = max_token_len.max(t.len());
            if ranks.insert(t.into_boxed_slice(), rank as u32).is_some() {
                return Err(TokenizerError::BadVocab(format!(
                    "rank {rank} repeats the bytes of an earlier token"
                )));
            }
        }
        offsets.push(bytes.len() as u32);
        let mut byte_rank = [0u32; 256];
        for (b, slot) in byte_rank.iter_mut().enumerate() {
            *slot = *ranks.get(&[b as u8][..]).ok_or_else(|| {
                TokenizerError::BadVocab(format!("byte 0x{b:02x} is not a token"))
            })?;
        }
        Ok(Vocab {
            offsets,
            bytes,
            ranks,
            byte_rank,
            max_token_len,
        })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of `rank`, if it exists.
    #[inline]
    pub fn token(&self, rank: u32) -> Option<&[u8]> {
        let r = rank as usize;
        let (a, b) = (*self.offsets.get(r)?, *self.offsets.get(r + 1)?);
        self.bytes.get(a as usize..b as usize)
    }

    /// Rank of `bytes`, if it is a token.
    #[inline]
    pub fn rank(&self, bytes: &[u8]) -> Option<u32> {
        if bytes.len() == 1 {
            return Some(self.byte_rank[bytes[0] as usize]);
        }
        self.ranks.get(bytes).copied()
    }

    /// Length of the longest token in bytes.
    pub fn max_token_len(&self) -> usize {
        self.max_token_len
    }
}

fn bad(line: usize, what: &str) -> TokenizerError {
    TokenizerError::BadLine {
        line,
        what: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_bytes_plus(extra: &[&str]) -> String {
        let e = base64::engine::general_purpose::STANDARD;
        let mut s = String::new();
        for b in 0..=255u8 {
            s += &format!("{} {}\n", e.encode([b]), b);
        }
        for (i, t) in extra.iter().enumerate() {
            s += &format!("{} {}\n", e.encode(t), 256 + i);
        }
        s
    }

    #[test]
    fn parses_and_looks_up() {
        let v = Vocab::from_tiktoken(&all_bytes_plus(&["ab"])).expect("valid");
        assert_eq!(v.len(), 257);
        assert_eq!(v.rank(b"ab"), Some(256));
        assert_eq!(v.token(256), Some(&b"ab"[..]));
        assert_eq!(v.token(257), None);
    }

    #[test]
    fn malformed_files_are_errors_naming_the_line() {
        let mut s = all_bytes_plus(&[]);
        s += "!!notbase64 256\n";
        let e = Vocab::from_tiktoken(&s).expect_err("bad base64");
        assert!(e.to_string().contains("line 257"), "{e}");
        assert!(
            Vocab::from_tiktoken("YQ== 0\nYQ== 1\n").is_err(),
            "duplicate bytes"
        );
        assert!(Vocab::from_tiktoken("YQ== 1\n").is_err(), "gap at rank 0");
        assert!(
            Vocab::from_tiktoken("YQ== 99999999999\n").is_err(),
            "absurd rank"
        );
        assert!(Vocab::from_tiktoken("YQ== 0\n").is_err(), "missing bytes");
        assert!(Vocab::from_tiktoken("").is_err());
    }
}
