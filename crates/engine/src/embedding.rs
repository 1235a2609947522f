//! Sentence embeddings: texts → tokens (the model's `tokenizer.json`) → the BERT encoder →
//! pooled, normalized vectors. Texts are sorted by length and run in batches, so a batch
//! wastes no work on padding (the encoder takes unpadded sequences) and its GEMMs are tall.

use std::path::Path;
use std::sync::Mutex;

use ferrollama_model::bert::SentenceEncoder;
use ferrollama_model::encoder::WeightFormat;
use ferrollama_tensor::ThreadPool;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{EngineError, Result};

/// Sequences per encoder call.
pub const BATCH: usize = 32;
/// Tokens per encoder call at most (long texts make smaller batches).
const BATCH_TOKENS: usize = 8192;

/// An embedding model ready to run.
#[derive(Debug)]
pub struct Embedder {
    encoder: SentenceEncoder,
    /// Truncating to `max_seq_length`, special tokens added: what the encoder gets.
    tokenizer: Tokenizer,
    /// No truncation, no special tokens: for counting and chunking.
    plain: Tokenizer,
    /// The special tokens around a sequence (`[CLS]` .. `[SEP]`), for token-id input.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// One batch at a time gets all the threads.
    pool: Mutex<ThreadPool>,
}

/// Vectors of one call, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// (inputs, dimension), row per input.
    pub data: Vec<f32>,
    pub dimension: usize,
    /// Tokens the encoder read (special tokens included), for usage reports.
    pub tokens: usize,
}

impl Embeddings {
    /// The vector of input `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dimension..(i + 1) * self.dimension]
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dimension.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn tok_err(dir: &Path) -> impl Fn(tokenizers::Error) -> EngineError + '_ {
    move |e| EngineError::Invalid(format!("{}: {e}", dir.join("tokenizer.json").display()))
}

impl Embedder {
    /// Loads a sentence-transformers (or plain BERT) folder with `threads` threads.
    pub fn load(dir: &Path, threads: usize, format: WeightFormat) -> Result<Embedder> {
        let encoder = SentenceEncoder::load(dir, format)?;
        let tdir = encoder.transformer_dir.clone();
        let mut plain =
            Tokenizer::from_file(tdir.join("tokenizer.json")).map_err(tok_err(&tdir))?;
        plain.with_padding(None);
        plain.with_truncation(None).map_err(tok_err(&tdir))?;
        let mut tokenizer = plain.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: encoder.max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(tok_err(&tdir))?;
        // The special tokens the post-processor puts around a text: those of "" (BERT:
        // [CLS] [SEP]), split where the empty text's own tokens would go.
        let empty = tokenizer.encode("", true).map_err(tok_err(&tdir))?;
        let (prefix, suffix) = match empty.get_ids() {
            [] => (Vec::new(), Vec::new()),
            [first, rest @ ..] => (vec![*first], rest.to_vec()),
        };
        Ok(Embedder {
            encoder,
            tokenizer,
            plain,
            prefix,
            suffix,
            pool: Mutex::new(ThreadPool::new(threads.max(1))),
        })
    }

    /// Length of every vector.
    pub fn dimension(&self) -> usize {
        self.encoder.dimension()
    }

    /// Tokens per text (special tokens included); longer texts are truncated.
    pub fn max_tokens(&self) -> usize {
        self.encoder.max_seq_length
    }

    /// Whether vectors come out with unit length.
    pub fn normalized(&self) -> bool {
        self.encoder.normalize
    }

    /// Size of the vocabulary token-id inputs are checked against.
    pub fn vocab_size(&self) -> usize {
        self.encoder.bert.config.vocab_size
    }

    /// The encoder's ids for `text`: special tokens added, truncated to
    /// [`Embedder::max_tokens`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EngineError::Invalid(format!("tokenizing: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// Like [`Embedder::tokenize`], but a long text keeps its last tokens (truncation from
    /// the start).
    pub fn tokenize_keep_end(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .plain
            .encode(text, false)
            .map_err(|e| EngineError::Invalid(format!("tokenizing: {e}")))?;
        let ids = e.get_ids();
        let keep = self
            .max_tokens()
            .saturating_sub(self.prefix.len() + self.suffix.len());
        let mut s = self.prefix.clone();
        s.extend_from_slice(&ids[ids.len().saturating_sub(keep)..]);
        s.extend_from_slice(&self.suffix);
        Ok(s)
    }

    /// The tokens of `text` as byte ranges, without special tokens or truncation (for
    /// counting and for cutting text into chunks of so many tokens).
    pub fn token_offsets(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let e = self
            .plain
            .encode(text, false)
            .map_err(|e| EngineError::Invalid(format!("tokenizing: {e}")))?;
        Ok(e.get_offsets().to_vec())
    }

    /// One vector per text.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Embeddings> {
        let seqs = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        self.embed_seqs(&seqs)
    }

    /// One vector per token-id sequence (the model's ids, without special tokens: they are
    /// added here, and a sequence is truncated as a text would be).
    pub fn embed_token_ids(&self, inputs: &[Vec<u32>]) -> Result<Embeddings> {
        let vocab = self.vocab_size();
        let keep = self
            .max_tokens()
            .saturating_sub(self.prefix.len() + self.suffix.len());
        let mut seqs = Vec::with_capacity(inputs.len());
        for (i, ids) in inputs.iter().enumerate() {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(EngineError::Invalid(format!(
                    "input {i}: token id {bad} is outside the model's vocabulary of {vocab}"
                )));
            }
            let mut s = self.prefix.clone();
            s.extend_from_slice(&ids[..ids.len().min(keep)]);
            s.extend_from_slice(&self.suffix);
            seqs.push(s);
        }
        self.embed_seqs(&seqs)
    }

    /// Runs the encoder over `seqs` (each with its special tokens) in length-sorted
    /// batches and returns the vectors in input order.
    pub fn embed_seqs(&self, seqs: &[Vec<u32>]) -> Result<Embeddings> {
        let dim = self.dimension();
        let mut data = vec![0.0f32; seqs.len() * dim];
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let pool = self
            .pool
            .lock()
            .map_err(|_| EngineError::Invalid("the embedding thread pool is poisoned".into()))?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len() && end - start < BATCH {
                let len = seqs[order[end]].len();
                if end > start && tokens + len > BATCH_TOKENS {
                    break;
                }
                tokens += len;
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| &seqs[i][..]).collect();
            self.encoder.embed(&batch, &pool, &mut out)?;
            for (k, &i) in order[start..end].iter().enumerate() {
                data[i * dim..(i + 1) * dim].copy_from_slice(&out[k * dim..(k + 1) * dim]);
            }
            start = end;
        }
        Ok(Embeddings {
            data,
            dimension: dim,
            tokens: seqs.iter().map(Vec::len).sum(),
        })
    }
}
