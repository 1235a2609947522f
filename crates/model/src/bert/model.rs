//! The BERT encoder forward pass (transformers' `BertModel`, inference: dropout off), over
//! a batch of sequences laid end to end with no padding.

use std::path::Path;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrollama_tensor::{SyncSlice, ThreadPool};

use super::attention::attention;
use super::config::BertConfig;
use super::weights::BertWeights;
use crate::encoder::{WeightFormat, add, add_norm, layer_norm, linear, linear_act};
use crate::error::{ModelError, Result};

/// A loaded BERT-family encoder.
#[derive(Debug)]
pub struct Bert {
    pub config: BertConfig,
    pub weights: BertWeights,
    pub format: WeightFormat,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` of an HF folder.
    pub fn load(dir: &Path, format: WeightFormat) -> Result<Bert> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let config = BertConfig::from_json(&text)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", cfg_path.display())))?;
        let weights = BertWeights::load(&dir.join("model.safetensors"), &config, format)?;
        Ok(Bert {
            config,
            weights,
            format,
        })
    }

    /// The last hidden states of every token of every sequence, sequences end to end:
    /// `hidden` becomes (Σ len, hidden_size). Each sequence carries its own special tokens
    /// (`[CLS]` .. `[SEP]`); sequences do not see each other.
    ///
    /// Sequences are run in groups of about [`GROUP_TOKENS`] tokens. A group's activations
    /// (its widest, the intermediate layer, is 512 × 1536 floats = 3 MiB for MiniLM) stay in
    /// cache through the seven matrix products of a layer, where a batch of 256 long texts
    /// made them 300 MiB and every product streamed them from memory. With several groups
    /// and threads, each thread runs whole groups by itself (nested pool sections run
    /// inline): no per-product fork and join, and no two cores sharing one product's
    /// memory traffic. A single group (one short query) is split inside each product
    /// instead, for latency.
    pub fn forward(&self, seqs: &[&[u32]], pool: &ThreadPool, hidden: &mut Vec<f32>) -> Result<()> {
        let cfg = &self.config;
        let mut total = 0;
        for ids in seqs {
            if ids.is_empty() {
                return Err(ModelError::Invalid("BERT: empty input sequence".into()));
            }
            if ids.len() > cfg.max_tokens() {
                return Err(ModelError::Invalid(format!(
                    "BERT: {} tokens exceed the model's {} positions",
                    ids.len(),
                    cfg.max_tokens()
                )));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(ModelError::Invalid(format!(
                    "BERT: token id {bad} is outside the vocabulary of {}",
                    cfg.vocab_size
                )));
            }
            total += ids.len();
        }
        let h = cfg.hidden_size;
        hidden.clear();
        hidden.resize(total * h, 0.0);
        let groups = groups(seqs, GROUP_TOKENS, pool.n_threads());
        if groups.len() < 2 || pool.n_threads() < 2 {
            for g in &groups {
                let rows = &mut hidden[g.row * h..(g.row + g.tokens) * h];
                self.forward_group(&seqs[g.seqs.clone()], pool, rows)?;
            }
            return Ok(());
        }
        let out = SyncSlice::new(hidden.as_mut_slice());
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(None);
        pool.run(&|_, _| {
            // Groups are taken in order by whichever thread is free (they differ in cost:
            // attention grows with the square of a sequence's length).
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(g) = groups.get(i) else { break };
                // SAFETY: groups cover disjoint row ranges of `hidden`, and each group is
                // taken by exactly one thread.
                let rows = unsafe { out.slice_mut(g.row * h, g.tokens * h) };
                if let Err(e) = self.forward_group(&seqs[g.seqs.clone()], pool, rows) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    break;
                }
            }
        });
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The forward pass of one group of checked sequences into `x` (Σ len, hidden).
    fn forward_group(&self, seqs: &[&[u32]], pool: &ThreadPool, x: &mut [f32]) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights;
        let (h, inter, heads, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.head_dim(),
        );
        let mut spans = Vec::with_capacity(seqs.len());
        let mut n = 0;
        for ids in seqs {
            spans.push((n, ids.len()));
            n += ids.len();
        }
        let eps = cfg.layer_norm_eps;

        // Embeddings: word + absolute position + token type 0, LayerNorm.
        let mut tmp = vec![0.0f32; n * h.max(inter)];
        let mut pos = vec![0.0f32; h];
        for (ids, &(start, _)) in seqs.iter().zip(&spans) {
            for (i, &id) in ids.iter().enumerate() {
                let row = &mut tmp[(start + i) * h..(start + i + 1) * h];
                w.word_embeddings.row_f32(id as usize, row)?;
                w.position_embeddings
                    .row_f32(cfg.position_offset + i, &mut pos)?;
                add(row, &pos);
                add(row, &w.token_type);
            }
        }
        layer_norm(x, &tmp[..n * h], &w.embeddings_norm, eps);

        let mut qkv = vec![0.0f32; n * 3 * h]; // (n, 3 hidden)
        let mut ctx = vec![0.0f32; n * h]; // (n, hidden)
        let mut a = vec![0.0f32; n * h]; // (n, hidden)
        let mut ff = vec![0.0f32; n * inter]; // (n, intermediate)
        let mut acts = Vec::new();
        for layer in &w.layers {
            linear(pool, &layer.qkv, x, n, &mut qkv, &mut acts)?; // (n, 3 hidden)
            attention(pool, &spans, heads, hd, &qkv, &mut ctx); // (n, hidden)
            linear(pool, &layer.attention_output, &ctx, n, &mut tmp, &mut acts)?; // (n, hidden)
            add_norm(pool, &mut a, &tmp, x, n, &layer.attention_norm, eps); // (n, hidden)
            linear_act(pool, &layer.intermediate, &a, n, &mut ff, &mut acts, true)?; // gelu (n, intermediate)
            linear(pool, &layer.output, &ff, n, &mut tmp, &mut acts)?; // (n, hidden)
            add_norm(pool, x, &tmp, &a, n, &layer.output_norm, eps); // (n, hidden)
        }
        Ok(())
    }
}

/// Tokens per group of [`Bert::forward`]: large enough that a matrix product reuses each
/// packed weight panel over many token blocks, small enough that the activations stay in
/// a core's share of the cache.
pub const GROUP_TOKENS: usize = 512;

/// Consecutive sequences of a batch run together, starting at hidden row `row`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    seqs: std::ops::Range<usize>,
    row: usize,
    tokens: usize,
}

/// Cuts the batch into runs of consecutive sequences of about equal token counts, at
/// most about `limit` tokens each (a longer sequence is a group by itself). The number of
/// groups is a multiple of `threads`, so that the last round of groups keeps every thread
/// busy (32 short texts are 2 groups of ~340 tokens on 2 threads, not 512 + 160).
fn groups(seqs: &[&[u32]], limit: usize, threads: usize) -> Vec<Group> {
    let total: usize = seqs.iter().map(|s| s.len()).sum();
    let threads = threads.max(1);
    let k = total.div_ceil(limit.max(1)).div_ceil(threads) * threads;
    let target = total.div_ceil(k.max(1));
    let mut out: Vec<Group> = Vec::new();
    let mut row = 0;
    for (i, s) in seqs.iter().enumerate() {
        match out.last_mut() {
            Some(g) if g.tokens < target && g.tokens + s.len() <= limit => {
                g.seqs.end = i + 1;
                g.tokens += s.len();
            }
            _ => out.push(Group {
                seqs: i..i + 1,
                row,
                tokens: s.len(),
            }),
        }
        row += s.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_the_batch_in_order_within_the_limit() {
        let a = [1u32; 300];
        let b = [1u32; 200];
        let c = [1u32; 700];
        let d = [1u32; 12];
        let seqs: Vec<&[u32]> = vec![&a, &b, &d, &c, &d, &d];
        // 1236 tokens: 3 groups of at most 512 on one thread (target 412).
        let g = groups(&seqs, 512, 1);
        let want = [
            (0..2, 0, 500),
            (2..3, 500, 12),
            (3..4, 512, 700),
            (4..6, 1212, 24),
        ];
        let got: Vec<_> = g
            .iter()
            .map(|g| (g.seqs.clone(), g.row, g.tokens))
            .collect();
        assert_eq!(got, want);
        // 32 texts of 21 tokens on 2 threads: two equal groups, not 504 + 168.
        let t = [1u32; 21];
        let short: Vec<&[u32]> = vec![&t; 32];
        let got: Vec<_> = groups(&short, 512, 2)
            .iter()
            .map(|g| (g.seqs.clone(), g.row, g.tokens))
            .collect();
        assert_eq!(got, [(0..16, 0, 336), (16..32, 336, 336)]);
        assert!(groups(&[], 512, 2).is_empty());
    }
}
