//! Prompt Guard's tokenizer: mDeBERTa's SentencePiece Unigram model, run by Hugging Face's
//! `tokenizers` crate.
//!
//! Two sources give the same tokenizer:
//! - `tokenizer.json` (what the HF repository ships), loaded as is;
//! - `spm.model` alone: we parse the SentencePiece `ModelProto` by hand (a few protobuf
//!   fields) and build the pipeline transformers' `DebertaV2Converter` builds from it:
//!   normalizer `Strip(both) → Precompiled(charsmap) → Replace(" {2,}", " ")`,
//!   pre-tokenizer `Metaspace("▁", prepend always, split)`, a Unigram model over the
//!   pieces and scores, control and user-defined pieces as added tokens, `[MASK]` added
//!   after the pieces.

use std::path::Path;

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Result, SafetyError};

/// Text → ids for Prompt Guard. `cls` / `sep` wrap each window.
#[derive(Clone)]
pub struct SpmTokenizer {
    /// `[CLS]`, the first token of every window.
    pub cls: u32,
    /// `[SEP]`, the last token of every window.
    pub sep: u32,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for SpmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmTokenizer")
            .field("cls", &self.cls)
            .field("sep", &self.sep)
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> SafetyError {
    SafetyError::Invalid(format!("{}: {what}", path.display()))
}

impl SpmTokenizer {
    /// The folder's `tokenizer.json`, else its `spm.model`.
    pub fn load(dir: &Path) -> Result<SpmTokenizer> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return SpmTokenizer::from_tokenizer_json(&json);
        }
        let spm = dir.join("spm.model");
        if spm.is_file() {
            return SpmTokenizer::from_spm_model(&spm);
        }
        Err(SafetyError::NotFound(format!(
            "{}: no tokenizer.json or spm.model (Prompt Guard's tokenizer)",
            dir.display()
        )))
    }

    /// A Hugging Face `tokenizer.json` with `[CLS]` and `[SEP]` tokens.
    pub fn from_tokenizer_json(path: &Path) -> Result<SpmTokenizer> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| invalid(path, e))?;
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| invalid(path, format!("no {t} token")))
        };
        Ok(SpmTokenizer {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            tokenizer,
        })
    }

    /// A SentencePiece `spm.model` (Unigram), converted as transformers does.
    pub fn from_spm_model(path: &Path) -> Result<SpmTokenizer> {
        let bytes = std::fs::read(path).map_err(|e| invalid(path, e))?;
        let proto = ModelProto::parse(&bytes).map_err(|e| invalid(path, e))?;
        build(&proto).map_err(|e| invalid(path, e))
    }

    /// Ids of `text` without special tokens (added tokens written in the text, such as
    /// `[SEP]`, are still recognized, as in transformers).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| SafetyError::Invalid(format!("Prompt Guard tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Pieces plus added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// SentencePiece piece types (`sentencepiece_model.proto`).
const NORMAL: u64 = 1;
const UNKNOWN: u64 = 2;
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// The fields of `ModelProto` the conversion reads.
#[derive(Debug, Default)]
struct ModelProto {
    pieces: Vec<Piece>,
    /// `trainer_spec.model_type`: 1 Unigram, 2 BPE, 3 word, 4 char.
    model_type: u64,
    unk_id: Option<u64>,
    charsmap: Vec<u8>,
}

#[derive(Debug)]
struct Piece {
    piece: String,
    score: f32,
    kind: u64,
}

/// One protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("truncated varint in spm.model")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes in spm.model".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated field in spm.model")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> std::result::Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Varint(0)
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "field too long")?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("protobuf wire type {w} in spm.model")),
        };
        Ok(Some((num, f)))
    }
}

impl ModelProto {
    fn parse(buf: &[u8]) -> std::result::Result<ModelProto, String> {
        let mut m = ModelProto::default();
        let mut r = Reader::new(buf);
        while let Some((num, f)) = r.field()? {
            match (num, f) {
                (1, Field::Bytes(b)) => m.pieces.push(Piece::parse(b)?),
                (2, Field::Bytes(b)) => {
                    let mut t = Reader::new(b);
                    while let Some((num, f)) = t.field()? {
                        match (num, f) {
                            (3, Field::Varint(v)) => m.model_type = v,
                            (40, Field::Varint(v)) => m.unk_id = Some(v),
                            _ => {}
                        }
                    }
                }
                (3, Field::Bytes(b)) => {
                    let mut t = Reader::new(b);
                    while let Some((num, f)) = t.field()? {
                        if let (2, Field::Bytes(c)) = (num, f) {
                            m.charsmap = c.to_vec();
                        }
                    }
                }
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err("no pieces: not a SentencePiece model".into());
        }
        Ok(m)
    }
}

impl Piece {
    fn parse(buf: &[u8]) -> std::result::Result<Piece, String> {
        let mut p = Piece {
            piece: String::new(),
            score: 0.0,
            kind: NORMAL,
        };
        let mut r = Reader::new(buf);
        while let Some((num, f)) = r.field()? {
            match (num, f) {
                (1, Field::Bytes(b)) => {
                    p.piece = String::from_utf8(b.to_vec()).map_err(|_| "piece is not UTF-8")?;
                }
                (2, Field::Fixed32(bits)) => p.score = f32::from_bits(bits),
                (3, Field::Varint(v)) => p.kind = v,
                _ => {}
            }
        }
        Ok(p)
    }
}

/// transformers' `DebertaV2Converter` (do_lower_case false, split_by_punct false).
fn build(m: &ModelProto) -> std::result::Result<SpmTokenizer, String> {
    if m.model_type != 1 && m.model_type != 0 {
        return Err(format!(
            "SentencePiece model type {} is not Unigram",
            m.model_type
        ));
    }
    let vocab: Vec<(String, f64)> = m
        .pieces
        .iter()
        .map(|p| (p.piece.clone(), f64::from(p.score)))
        .collect();
    let unk = m
        .unk_id
        .map(|u| u as usize)
        .or_else(|| m.pieces.iter().position(|p| p.kind == UNKNOWN))
        .unwrap_or(0);
    let model = Unigram::from(vocab, Some(unk), false).map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(model);
    let mut norms: Vec<NormalizerWrapper> = vec![Strip::new(true, true).into()];
    if !m.charsmap.is_empty() {
        let p = Precompiled::from(&m.charsmap).map_err(|e| format!("charsmap: {e:?}"))?;
        norms.push(p.into());
    }
    let spaces =
        Replace::new(ReplacePattern::Regex(" {2,}".into()), " ").map_err(|e| e.to_string())?;
    norms.push(spaces.into());
    tokenizer.with_normalizer(Some(Sequence::new(norms)));
    let meta: PreTokenizerWrapper = Metaspace::new('▁', PrependScheme::Always, true).into();
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![meta])));
    // Control pieces are special added tokens, user-defined ones plain added tokens.
    let added: Vec<AddedToken> = m
        .pieces
        .iter()
        .filter(|p| p.kind == CONTROL || p.kind == USER_DEFINED)
        .map(|p| AddedToken::from(p.piece.clone(), p.kind == CONTROL).normalized(false))
        .collect();
    tokenizer.add_tokens(&added);
    if tokenizer.token_to_id("[MASK]").is_none() {
        tokenizer.add_special_tokens(&[AddedToken::from("[MASK]", true)]);
    }
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| format!("no {t} piece"))
    };
    Ok(SpmTokenizer {
        cls: id("[CLS]")?,
        sep: id("[SEP]")?,
        tokenizer,
    })
}
