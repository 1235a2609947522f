//! Meta checkpoint folders, as `llama model download` leaves them: `params.json` plus
//! `consolidated.00.pth … consolidated.NN.pth`, one `torch.save` file per model-parallel
//! rank, tensors under the reference names, BF16.
//!
//! The shards are merged the way llama-models 0.3.0 `models/checkpoint.py` reshards (spec
//! §3.5): the outputs of column-parallel layers (`wq wk wv w1 w3 output`, and
//! `tok_embeddings`, a `VocabParallelEmbedding` in Llama 3) are split on dim 0, so shards
//! are stacked by rows; row-parallel layers (`wo w2`) are split on their input, the last
//! dim, so shards are joined column by column; norms are replicated (checked identical).
//! Meta's `wq`/`wk` are already in the adjacent-pair RoPE order our forward pass uses, so
//! nothing is permuted. With one shard the weights stay views into the mapped file.

use std::path::{Path, PathBuf};

use ferrollama_tensor::DType;
use serde::Deserialize;

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::names::{Format, file_name};
use crate::pth::{PthFile, PthTensor};
use crate::weights::{Tensor, Weights};

/// Llama 3.1's RoPE scaling, hard-coded in Meta's `apply_scaling` and switched on by
/// `use_scaled_rope` (spec §3.4). (Llama 3.2 1B/3B were trained with factor 32, which their
/// HF configs carry; a Meta-format params.json cannot say so.)
pub const LLAMA31_ROPE_SCALING: RopeScaling = RopeScaling {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192.0,
};

/// Keys of params.json that describe models our forward pass does not run.
const UNSUPPORTED_KEYS: [&str; 5] = [
    "vision_chunk_size",
    "vision_max_num_chunks",
    "vision_num_cross_attention_layers",
    "moe_args",
    "quantization_args",
];

/// `ModelArgs` fields of llama-models 0.3.0 (`models/llama3/args.py`) with its defaults.
#[derive(Debug, Deserialize)]
struct Params {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: Option<usize>,
    #[serde(default = "minus_one")]
    vocab_size: i64,
    #[serde(default = "default_multiple_of")]
    multiple_of: usize,
    ffn_dim_multiplier: Option<f64>,
    #[serde(default = "default_norm_eps")]
    norm_eps: f32,
    #[serde(default = "default_rope_theta")]
    rope_theta: f32,
    #[serde(default)]
    use_scaled_rope: bool,
}

fn minus_one() -> i64 {
    -1
}
fn default_multiple_of() -> usize {
    256
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_rope_theta() -> f32 {
    500_000.0
}

/// The feed-forward width Meta's `FeedForward` derives (spec §3.2): `4 * dim`, two thirds
/// of it (Python `int()` truncation), times `ffn_dim_multiplier` (truncated again), rounded
/// up to `multiple_of`. `None` when the numbers make no sense.
pub fn ffn_hidden(dim: usize, multiple_of: usize, multiplier: Option<f64>) -> Option<usize> {
    let mut hidden = dim.checked_mul(8)? / 3; // int(2 * (4 * dim) / 3)
    if let Some(m) = multiplier {
        let h = m * hidden as f64;
        if !(h.is_finite() && h >= 0.0 && h < (1u64 << 40) as f64) {
            return None;
        }
        hidden = h as usize; // truncation, as Python's int()
    }
    if multiple_of == 0 {
        return None;
    }
    hidden.div_ceil(multiple_of).checked_mul(multiple_of)
}

/// Reads `params.json` into a configuration. Context length is not in the file: 131,072
/// with `use_scaled_rope` (Llama 3.1 and later), else 8,192 (Llama 3.0).
pub fn config_from_params(text: &str) -> Result<LlamaConfig> {
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ModelError::Invalid(format!("params.json: {e}")))?;
    if let Some(k) = UNSUPPORTED_KEYS.iter().find(|k| raw.get(**k).is_some()) {
        return Err(ModelError::Unsupported(format!(
            "params.json has {k:?}: vision, mixture-of-experts and quantized checkpoints are \
             not supported"
        )));
    }
    let p: Params = serde_json::from_value(raw)
        .map_err(|e| ModelError::Invalid(format!("params.json: {e}")))?;
    let vocab_size = usize::try_from(p.vocab_size)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            ModelError::Unsupported(format!(
                "params.json vocab_size {} (Llama 2 style); Llama 3 checkpoints give it",
                p.vocab_size
            ))
        })?;
    let ffn_dim = ffn_hidden(p.dim, p.multiple_of, p.ffn_dim_multiplier).ok_or_else(|| {
        ModelError::Invalid(format!(
            "params.json: no FFN size from dim {}, multiple_of {}, ffn_dim_multiplier {:?}",
            p.dim, p.multiple_of, p.ffn_dim_multiplier
        ))
    })?;
    let head_dim = p.dim.checked_div(p.n_heads).unwrap_or(0);
    if head_dim * p.n_heads != p.dim {
        return Err(ModelError::Invalid(format!(
            "params.json: dim {} is not a multiple of n_heads {}",
            p.dim, p.n_heads
        )));
    }
    let rope_scaling = p.use_scaled_rope.then_some(LLAMA31_ROPE_SCALING);
    let cfg = LlamaConfig {
        dim: p.dim,
        n_layers: p.n_layers,
        n_heads: p.n_heads,
        n_kv_heads: p.n_kv_heads.unwrap_or(p.n_heads),
        head_dim,
        rope_dims: head_dim,
        ffn_dim,
        vocab_size,
        norm_eps: p.norm_eps,
        rope_theta: p.rope_theta,
        max_seq_len: if p.use_scaled_rope { 131_072 } else { 8192 },
        rope_scaling,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// How model parallelism split a tensor (llama-models `checkpoint.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Column-parallel output rows (and the vocab-parallel embedding): stack shards.
    Rows,
    /// Row-parallel input columns: join each row across shards.
    Cols,
    /// The same on every shard.
    Replicated,
}

/// The split of a reference tensor name (`"attention.wo"`).
pub fn split_of(reference: &str) -> Split {
    match reference {
        "attention.wq" | "attention.wk" | "attention.wv" | "feed_forward.w1"
        | "feed_forward.w3" | "output" | "tok_embeddings" => Split::Rows,
        "attention.wo" | "feed_forward.w2" => Split::Cols,
        _ => Split::Replicated,
    }
}

/// An opened Meta checkpoint folder.
#[derive(Debug)]
pub struct MetaCheckpoint {
    pub config: LlamaConfig,
    shards: Vec<PthFile>,
    paths: Vec<PathBuf>,
}

/// True if `dir` looks like a Meta checkpoint (params.json and consolidated.00.pth).
pub fn is_meta_dir(dir: &Path) -> bool {
    dir.join("params.json").is_file() && dir.join("consolidated.00.pth").is_file()
}

/// `consolidated.NN.pth` files of `dir`, in rank order, which must be 00..N-1.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut ranks = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let name = e.map_err(io)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("consolidated.")
            .and_then(|r| r.strip_suffix(".pth"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let rank: usize = n.parse().map_err(|_| {
                ModelError::Invalid(format!("shard {name}: rank {n} is not a number"))
            })?;
            ranks.push((rank, dir.join(name)));
        }
    }
    ranks.sort();
    if ranks.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{} has no consolidated.NN.pth files",
            dir.display()
        )));
    }
    for (i, (rank, p)) in ranks.iter().enumerate() {
        if *rank != i {
            return Err(ModelError::Invalid(format!(
                "model-parallel shards must be consolidated.00 … {:02}; found {} where rank {i} \
                 belongs",
                ranks.len() - 1,
                p.display()
            )));
        }
    }
    Ok(ranks.into_iter().map(|(_, p)| p).collect())
}

fn tensor_err(name: &str, what: String) -> ModelError {
    ModelError::Tensor {
        name: name.to_string(),
        what,
    }
}

/// (rows, cols) of a 1-D or 2-D part.
fn matrix_shape(t: &PthTensor) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        [n] => Ok((1, *n)),
        [r, c] => Ok((*r, *c)),
        other => Err(tensor_err(
            &t.name,
            format!("shape {other:?} is not 1-D or 2-D"),
        )),
    }
}

impl MetaCheckpoint {
    /// Reads `params.json` and maps every shard.
    pub fn open(dir: &Path) -> Result<MetaCheckpoint> {
        let params = dir.join("params.json");
        let text = std::fs::read_to_string(&params).map_err(|source| ModelError::Io {
            path: params.clone(),
            source,
        })?;
        let config = config_from_params(&text).map_err(|e| e.in_file(&params))?;
        let paths = shard_paths(dir)?;
        let shards = paths
            .iter()
            .map(|p| PthFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let ck = MetaCheckpoint {
            config,
            shards,
            paths,
        };
        ck.check_ffn_dim()?;
        Ok(ck)
    }

    /// Model-parallel shard count.
    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Shard `rank`'s tensors.
    pub fn shard(&self, rank: usize) -> Option<&PthFile> {
        self.shards.get(rank)
    }

    /// The FFN width params.json implies must be the width the weights have.
    fn check_ffn_dim(&self) -> Result<()> {
        let name = file_name(Format::Meta, Some(0), "feed_forward.w1").unwrap_or_default();
        let parts = self.parts(&name)?;
        let rows = parts
            .iter()
            .map(|p| matrix_shape(p).map(|s| s.0))
            .sum::<Result<usize>>()?;
        if rows != self.config.ffn_dim {
            return Err(ModelError::Invalid(format!(
                "params.json gives an FFN hidden size of {} (4·dim → ⅔ → ×ffn_dim_multiplier → \
                 up to multiple_of), but {name} has {rows} rows",
                self.config.ffn_dim
            )));
        }
        Ok(())
    }

    /// `name` in every shard.
    fn parts(&self, name: &str) -> Result<Vec<&PthTensor>> {
        self.shards
            .iter()
            .zip(&self.paths)
            .map(|(s, p)| {
                s.get(name)
                    .ok_or_else(|| tensor_err(name, format!("missing from {}", p.display())))
            })
            .collect()
    }

    /// Reference tensor `name` merged across shards, checked to be `[rows, cols]`.
    fn merged(&self, name: &str, split: Split, rows: usize, cols: usize) -> Result<Tensor> {
        let parts = self.parts(name)?;
        let first = *parts
            .first()
            .ok_or_else(|| tensor_err(name, "no shards".into()))?;
        let shapes = parts
            .iter()
            .map(|p| matrix_shape(p))
            .collect::<Result<Vec<_>>>()?;
        if parts.iter().any(|p| p.dtype != first.dtype) {
            return Err(tensor_err(name, "shards disagree on the dtype".into()));
        }
        let expect = |got: (usize, usize)| -> Result<()> {
            if got != (rows, cols) {
                return Err(tensor_err(
                    name,
                    format!(
                        "merged shape [{}, {}] from {} shard(s) {shapes:?}, expected [{rows}, \
                         {cols}]",
                        got.0,
                        got.1,
                        parts.len()
                    ),
                ));
            }
            Ok(())
        };
        if parts.len() == 1 || split == Split::Replicated {
            for (i, p) in parts.iter().enumerate().skip(1) {
                if p.shape != first.shape || p.data() != first.data() {
                    return Err(tensor_err(
                        name,
                        format!("a replicated tensor differs between shard 0 and shard {i}"),
                    ));
                }
            }
            let t = first.to_tensor()?;
            expect((t.rows, t.cols))?;
            return Ok(t);
        }
        let dtype: DType = first.to_tensor()?.dtype;
        let row_bytes = |c: usize| {
            dtype
                .row_bytes(c)
                .ok_or_else(|| tensor_err(name, format!("row of {c} in {}", dtype.name())))
        };
        let mut out = Vec::new();
        match split {
            Split::Rows => {
                let r = shapes.iter().map(|s| s.0).sum();
                if shapes.iter().any(|s| s.1 != cols) {
                    expect((r, shapes.first().map_or(0, |s| s.1)))?;
                }
                expect((r, cols))?;
                out.reserve_exact(first.data().len().saturating_mul(parts.len()));
                for p in &parts {
                    out.extend_from_slice(p.data());
                }
            }
            Split::Cols => {
                let c = shapes.iter().map(|s| s.1).sum();
                if shapes.iter().any(|s| s.0 != rows) {
                    expect((shapes.first().map_or(0, |s| s.0), c))?;
                }
                expect((rows, c))?;
                let widths = shapes
                    .iter()
                    .map(|s| row_bytes(s.1))
                    .collect::<Result<Vec<_>>>()?;
                out.reserve_exact(row_bytes(cols)?.saturating_mul(rows));
                for r in 0..rows {
                    for (p, &w) in parts.iter().zip(&widths) {
                        let row = p.data().get(r * w..(r + 1) * w).ok_or_else(|| {
                            tensor_err(name, format!("shard row {r} out of range"))
                        })?;
                        out.extend_from_slice(row);
                    }
                }
            }
            Split::Replicated => {}
        }
        Tensor::owned(dtype, rows, cols, out)
    }

    /// All weights under reference names, shards merged.
    pub fn weights(&self) -> Result<Weights> {
        Weights::assemble(&self.config, false, |layer, n, rows, cols, required| {
            // Meta checkpoints have no rope_freqs (the scaling is `use_scaled_rope`).
            let Some(name) = file_name(Format::Meta, layer, n) else {
                return Ok(None);
            };
            // Meta's Transformer always owns `output`; tolerate its absence as tied, like
            // the other loaders.
            if !required && !self.shards.iter().all(|s| s.get(&name).is_some()) {
                return Ok(None);
            }
            self.merged(&name, split_of(n), rows, cols).map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pth::fixture::state_dict;

    /// A synthetic 1-layer model: (reference name, rows, cols) of every tensor.
    fn synthetic() -> (String, Vec<(String, usize, usize)>) {
        // dim 64, 2 heads of 32, 1 KV head, vocab 16; ffn = 32·ceil(int(8·64/3)/32) = 192
        let params = r#"{"dim": 64, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
            "vocab_size": 16, "multiple_of": 32, "norm_eps": 1e-5, "rope_theta": 500000.0,
            "use_scaled_rope": true}"#;
        let mut t = vec![
            ("tok_embeddings".to_string(), 16, 64),
            ("norm".to_string(), 1, 64),
            ("output".to_string(), 16, 64),
        ];
        for (n, r, c) in [
            ("attention_norm", 1, 64),
            ("attention.wq", 64, 64),
            ("attention.wk", 32, 64),
            ("attention.wv", 32, 64),
            ("attention.wo", 64, 64),
            ("ffn_norm", 1, 64),
            ("feed_forward.w1", 192, 64),
            ("feed_forward.w2", 64, 192),
            ("feed_forward.w3", 192, 64),
        ] {
            t.push((format!("layers.0.{n}"), r, c));
        }
        (params.to_string(), t)
    }

    /// BF16 values from a seeded generator, as rows of u16.
    fn values(seed: u64, rows: usize, cols: usize) -> Vec<Vec<u16>> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..rows)
            .map(|_| {
                (0..cols)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let f = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                        (f.to_bits() >> 16) as u16
                    })
                    .collect()
            })
            .collect()
    }

    fn bytes(rows: &[Vec<u16>]) -> Vec<u8> {
        rows.iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// Writes the synthetic model as `n` shards split the way `split` says, into a fresh
    /// folder; `tamper` may change a shard's tensors first.
    fn write(
        tag: &str,
        n: usize,
        split: impl Fn(&str) -> Split,
        tamper: impl Fn(usize, &str, &mut Vec<Vec<u16>>),
    ) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferrollama-meta-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (params, tensors) = synthetic();
        std::fs::write(dir.join("params.json"), params).unwrap();
        for rank in 0..n {
            let mut parts = Vec::new();
            for (i, (name, rows, cols)) in tensors.iter().enumerate() {
                let full = values(i as u64, *rows, *cols);
                let reference = name.strip_prefix("layers.0.").unwrap_or(name);
                let mut part: Vec<Vec<u16>> = match split(reference) {
                    Split::Replicated => full,
                    Split::Rows => {
                        let k = rows / n;
                        full[rank * k..(rank + 1) * k].to_vec()
                    }
                    Split::Cols => {
                        let k = cols / n;
                        full.iter()
                            .map(|r| r[rank * k..(rank + 1) * k].to_vec())
                            .collect()
                    }
                };
                tamper(rank, name, &mut part);
                let shape: Vec<i64> = if *rows == 1 {
                    vec![part[0].len() as i64]
                } else {
                    vec![part.len() as i64, part[0].len() as i64]
                };
                parts.push((format!("{name}.weight"), shape, bytes(&part)));
            }
            let entries: Vec<(&str, &str, &[i64], Vec<u8>)> = parts
                .iter()
                .map(|(n, s, b)| (n.as_str(), "BFloat16Storage", s.as_slice(), b.clone()))
                .collect();
            std::fs::write(
                dir.join(format!("consolidated.{rank:02}.pth")),
                state_dict(&entries),
            )
            .unwrap();
        }
        dir
    }

    fn f32s(w: &Weights) -> Vec<Vec<f32>> {
        let mut v = vec![
            w.tok_embeddings.to_f32().unwrap(),
            w.output.to_f32().unwrap(),
            w.norm.clone(),
        ];
        for l in &w.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3] {
                v.push(t.to_f32().unwrap());
            }
            v.push(l.attention_norm.clone());
            v.push(l.ffn_norm.clone());
        }
        v
    }

    /// One shard and the same model split 2 and 4 ways give identical weights; with one
    /// shard they are views of the mapped file, not copies.
    #[test]
    fn shards_merge_to_the_single_shard_model() {
        let one = write("one", 1, split_of, |_, _, _| {});
        let ck1 = MetaCheckpoint::open(&one).unwrap();
        assert_eq!(ck1.config.ffn_dim, 192);
        let w1 = ck1.weights().unwrap();
        let wq = ck1
            .shard(0)
            .unwrap()
            .get("layers.0.attention.wq.weight")
            .unwrap();
        assert_eq!(
            w1.layers[0].wq.data().as_ptr(),
            wq.data().as_ptr(),
            "a view, no copy"
        );
        let expect = f32s(&w1);
        assert_eq!(expect[3 + 3][1], {
            let v = values(7, 64, 64)[0][1]; // wo = tensor 7 of synthetic()
            f32::from_bits(u32::from(v) << 16)
        });
        for n in [2, 4] {
            let dir = write(&format!("mp{n}"), n, split_of, |_, _, _| {});
            let ck = MetaCheckpoint::open(&dir).unwrap();
            assert_eq!(ck.n_shards(), n);
            assert!(f32s(&ck.weights().unwrap()) == expect, "{n} shards");
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir_all(one);
    }

    #[test]
    fn inconsistent_shards_are_errors() {
        // A replicated norm that differs between ranks.
        let dir = write("norm", 2, split_of, |rank, name, part| {
            if rank == 1 && name.ends_with("ffn_norm") {
                part[0][3] ^= 1;
            }
        });
        let e = MetaCheckpoint::open(&dir)
            .unwrap()
            .weights()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ffn_norm") && e.contains("differs between shard 0 and shard 1"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
        // wo split on rows instead of columns.
        let dir = write(
            "wo",
            2,
            |n| {
                if n == "attention.wo" {
                    Split::Rows
                } else {
                    split_of(n)
                }
            },
            |_, _, _| {},
        );
        let e = MetaCheckpoint::open(&dir)
            .unwrap()
            .weights()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("attention.wo") && e.contains("merged shape [32, 128]"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The FFN sizes of spec §3.2/§3.3, computed from each model's params.json numbers.
    #[test]
    fn ffn_hidden_matches_metas_models() {
        assert_eq!(ffn_hidden(4096, 1024, Some(1.3)), Some(14336)); // 3.1 8B
        assert_eq!(ffn_hidden(8192, 4096, Some(1.3)), Some(28672)); // 3.1 70B
        assert_eq!(ffn_hidden(16384, 4096, Some(1.2)), Some(53248)); // 3.1 405B
        assert_eq!(ffn_hidden(2048, 256, Some(1.5)), Some(8192)); // 3.2 1B
        assert_eq!(ffn_hidden(3072, 256, Some(1.0)), Some(8192)); // 3.2 3B
        assert_eq!(ffn_hidden(4096, 256, None), Some(11008)); // Llama 2 7B
        assert_eq!(ffn_hidden(4096, 0, None), None);
        assert_eq!(ffn_hidden(4096, 256, Some(f64::NAN)), None);
        assert_eq!(ffn_hidden(usize::MAX, 256, None), None);
    }

    /// Llama 3.1 8B's params.json (llama-models sku_list) gives the 8B shapes and Meta's
    /// hard-coded scaling (spec §3.3, §3.4).
    #[test]
    fn llama31_8b_params() {
        let c = config_from_params(
            r#"{"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32,
                "n_kv_heads": 8, "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0,
                "use_scaled_rope": true, "vocab_size": 128256}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.dim, c.n_layers, c.n_heads, c.n_kv_heads),
            (4096, 32, 32, 8)
        );
        assert_eq!((c.head_dim, c.ffn_dim, c.vocab_size), (128, 14336, 128256));
        assert_eq!(c.max_seq_len, 131_072);
        assert_eq!(c.rope_scaling, Some(LLAMA31_ROPE_SCALING));
        let c30 = config_from_params(
            r#"{"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32,
                "n_kv_heads": 8, "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0,
                "vocab_size": 128256}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c30.rope_scaling, c30.max_seq_len), (None, 8192));
    }

    #[test]
    fn bad_params_are_errors() {
        for (text, want) in [
            ("{", "params.json"),
            (
                r#"{"dim": 4096, "n_layers": 2, "n_heads": 32}"#,
                "vocab_size -1",
            ),
            (
                r#"{"dim": 4096, "n_layers": 2, "n_heads": 32, "vocab_size": 10,
                    "vision_chunk_size": 560}"#,
                "vision_chunk_size",
            ),
            (
                r#"{"dim": 4095, "n_layers": 2, "n_heads": 32, "vocab_size": 10}"#,
                "not a multiple",
            ),
            (
                r#"{"dim": 4096, "n_layers": 2, "n_heads": 32, "n_kv_heads": 5, "vocab_size": 10}"#,
                "KV heads",
            ),
            (
                r#"{"dim": 64, "n_layers": 2, "n_heads": 1, "vocab_size": 10, "multiple_of": 0}"#,
                "no FFN size",
            ),
        ] {
            let e = config_from_params(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn split_dims_follow_checkpoint_py() {
        for n in [
            "attention.wq",
            "attention.wk",
            "attention.wv",
            "feed_forward.w1",
        ] {
            assert_eq!(split_of(n), Split::Rows, "{n}");
        }
        assert_eq!(split_of("feed_forward.w3"), Split::Rows);
        assert_eq!(split_of("output"), Split::Rows);
        assert_eq!(split_of("tok_embeddings"), Split::Rows);
        assert_eq!(split_of("attention.wo"), Split::Cols);
        assert_eq!(split_of("feed_forward.w2"), Split::Cols);
        assert_eq!(split_of("attention_norm"), Split::Replicated);
        assert_eq!(split_of("ffn_norm"), Split::Replicated);
        assert_eq!(split_of("norm"), Split::Replicated);
    }
}
