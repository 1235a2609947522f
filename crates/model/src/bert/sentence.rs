//! A sentence-transformers folder around a BERT encoder: which modules run
//! (`modules.json`), how token states become one vector (`1_Pooling/config.json`), whether
//! it is L2-normalized (a `Normalize` module), and how many tokens a text may have
//! (`sentence_bert_config.json`'s `max_seq_length`).

use std::path::{Path, PathBuf};

use ferrollama_tensor::ThreadPool;
use serde::Deserialize;

use super::model::Bert;
use crate::encoder::WeightFormat;
use crate::error::{ModelError, Result};

/// sentence-transformers' `Pooling` modes; several true ones are concatenated in this
/// order (cls, max, mean, mean_sqrt_len, weighted mean, last token), as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Pooling {
    #[serde(default, rename = "pooling_mode_cls_token")]
    pub cls: bool,
    #[serde(default, rename = "pooling_mode_max_tokens")]
    pub max: bool,
    #[serde(default, rename = "pooling_mode_mean_tokens")]
    pub mean: bool,
    #[serde(default, rename = "pooling_mode_mean_sqrt_len_tokens")]
    pub mean_sqrt_len: bool,
    #[serde(default, rename = "pooling_mode_weightedmean_tokens")]
    pub weighted_mean: bool,
    #[serde(default, rename = "pooling_mode_lasttoken")]
    pub last_token: bool,
}

impl Pooling {
    /// Mean pooling: what sentence-transformers adds to a plain Hugging Face model.
    pub const MEAN: Pooling = Pooling {
        cls: false,
        max: false,
        mean: true,
        mean_sqrt_len: false,
        weighted_mean: false,
        last_token: false,
    };

    fn modes(&self) -> usize {
        [
            self.cls,
            self.max,
            self.mean,
            self.mean_sqrt_len,
            self.weighted_mean,
            self.last_token,
        ]
        .iter()
        .filter(|&&m| m)
        .count()
    }

    /// Pools the token states `x` (n, hidden) of one sequence into `out` (modes × hidden).
    pub fn pool(&self, x: &[f32], hidden: usize, out: &mut Vec<f32>) {
        let n = x.len() / hidden.max(1);
        let rows = || x.chunks_exact(hidden);
        let mut part = vec![0.0f64; hidden];
        let emit = |part: &[f64], out: &mut Vec<f32>| out.extend(part.iter().map(|&v| v as f32));
        if self.cls {
            out.extend_from_slice(&x[..hidden]);
        }
        if self.max {
            let mut m = vec![f32::NEG_INFINITY; hidden];
            for r in rows() {
                for (a, &b) in m.iter_mut().zip(r) {
                    *a = a.max(b);
                }
            }
            out.extend_from_slice(&m);
        }
        let sum = |weight: &dyn Fn(usize) -> f64, part: &mut [f64]| {
            part.fill(0.0);
            for (i, r) in rows().enumerate() {
                for (a, &b) in part.iter_mut().zip(r) {
                    *a += weight(i) * f64::from(b);
                }
            }
        };
        if self.mean {
            sum(&|_| 1.0, &mut part);
            part.iter_mut().for_each(|v| *v /= n as f64);
            emit(&part, out);
        }
        if self.mean_sqrt_len {
            sum(&|_| 1.0, &mut part);
            part.iter_mut().for_each(|v| *v /= (n as f64).sqrt());
            emit(&part, out);
        }
        if self.weighted_mean {
            // Weights 1..n by position; sentence-transformers divides by their sum.
            sum(&|i| (i + 1) as f64, &mut part);
            let total = (n * (n + 1) / 2) as f64;
            part.iter_mut().for_each(|v| *v /= total);
            emit(&part, out);
        }
        if self.last_token {
            out.extend_from_slice(&x[(n - 1) * hidden..n * hidden]);
        }
    }
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SbertConfig {
    max_seq_length: Option<usize>,
}

/// A BERT encoder with sentence-transformers' pooling and normalization.
#[derive(Debug)]
pub struct SentenceEncoder {
    pub bert: Bert,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Tokens per text, special tokens included; longer texts are truncated to it.
    pub max_seq_length: usize,
    /// The folder holding the transformer (and its `tokenizer.json`).
    pub transformer_dir: PathBuf,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `dir/rel` when `rel` stays inside `dir` (no absolute path, no `..`).
fn sub_dir(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    rel.components()
        .all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
        .then(|| dir.join(rel))
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder. Without `modules.json` it is a plain Hugging
    /// Face BERT folder, pooled by mean as sentence-transformers does for one, unnormalized.
    pub fn load(dir: &Path, format: WeightFormat) -> Result<SentenceEncoder> {
        let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
        let (mut transformer_dir, mut pooling, mut normalize) = (dir.to_path_buf(), None, false);
        match modules {
            None => pooling = Some(Pooling::MEAN),
            Some(mods) => {
                for m in mods {
                    let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
                    let sub = sub_dir(dir, &m.path).ok_or_else(|| {
                        ModelError::Invalid(format!(
                            "modules.json: module path {:?} leaves the model folder",
                            m.path
                        ))
                    })?;
                    match kind {
                        "Transformer" => transformer_dir = sub,
                        "Pooling" => {
                            let p = sub.join("config.json");
                            pooling = Some(read_json(&p)?.ok_or_else(|| {
                                ModelError::Invalid(format!("{} is missing", p.display()))
                            })?);
                        }
                        "Normalize" => normalize = true,
                        other => {
                            return Err(ModelError::Unsupported(format!(
                                "sentence-transformers module {other} (in {}): only Transformer, Pooling and Normalize are run",
                                dir.join("modules.json").display()
                            )));
                        }
                    }
                }
            }
        }
        let pooling = pooling.ok_or_else(|| {
            ModelError::Invalid(format!(
                "{}: no Pooling module",
                dir.join("modules.json").display()
            ))
        })?;
        if pooling.modes() == 0 {
            return Err(ModelError::Invalid(
                "1_Pooling/config.json: no pooling mode is enabled".into(),
            ));
        }
        let bert = Bert::load(&transformer_dir, format)?;
        let sbert: Option<SbertConfig> =
            read_json(&transformer_dir.join("sentence_bert_config.json"))?;
        let max_seq_length = sbert
            .and_then(|s| s.max_seq_length)
            .unwrap_or(512)
            .clamp(2, bert.config.max_tokens());
        Ok(SentenceEncoder {
            bert,
            pooling,
            normalize,
            max_seq_length,
            transformer_dir,
        })
    }

    /// Length of the vectors [`SentenceEncoder::embed`] returns.
    pub fn dimension(&self) -> usize {
        self.pooling.modes() * self.bert.config.hidden_size
    }

    /// One vector per sequence of token ids (each with its `[CLS]` .. `[SEP]`, at most
    /// `max_seq_length` long), written end to end into `out` (sequences × dimension).
    pub fn embed(&self, seqs: &[&[u32]], pool: &ThreadPool, out: &mut Vec<f32>) -> Result<()> {
        if let Some(long) = seqs.iter().find(|s| s.len() > self.max_seq_length) {
            return Err(ModelError::Invalid(format!(
                "{} tokens exceed max_seq_length {}",
                long.len(),
                self.max_seq_length
            )));
        }
        let h = self.bert.config.hidden_size;
        let mut hidden = Vec::new();
        self.bert.forward(seqs, pool, &mut hidden)?;
        out.clear();
        let mut start = 0;
        for s in seqs {
            let first = out.len();
            self.pooling
                .pool(&hidden[start * h..(start + s.len()) * h], h, out);
            start += s.len();
            if self.normalize {
                // sentence-transformers: x / max(‖x‖₂, 1e-12).
                let v = &mut out[first..];
                let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                let inv = (1.0 / norm.max(1e-12)) as f32;
                v.iter_mut().for_each(|x| *x *= inv);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_match_hand_values() {
        // Two tokens, hidden 2: [1, 4] and [3, -2].
        let x = [1.0, 4.0, 3.0, -2.0];
        let all = Pooling {
            cls: true,
            max: true,
            mean: true,
            mean_sqrt_len: true,
            weighted_mean: true,
            last_token: true,
        };
        let mut out = Vec::new();
        all.pool(&x, 2, &mut out);
        let s2 = 2f32.sqrt();
        let want = [
            1.0,
            4.0, // cls
            3.0,
            4.0, // max
            2.0,
            1.0, // mean
            4.0 / s2,
            2.0 / s2, // sum / sqrt(2)
            (1.0 + 6.0) / 3.0,
            (4.0 - 4.0) / 3.0, // weights 1, 2
            3.0,
            -2.0, // last
        ];
        assert_eq!(out.len(), want.len());
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{out:?}");
        }
    }
}
