//! Llama weights under reference names, as views into the model file.

use std::sync::Arc;

use ferrollama_tensor::{DType, PackedMatrix, dequantize_row};

use crate::config::{Arch, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::gguf::{Bytes, GgufFile};
use crate::names::{Format, file_name};

/// A 2-D weight matrix `[rows, cols]` (row-major, `cols` contiguous), in any dtype.
/// Usually a view into a memory-mapped file; owned when converted at load. Matrices the
/// kernels can run faster in an interleaved layout also carry a repacked copy, which the
/// forward pass then uses instead.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    bytes: Arc<Bytes>,
    start: usize,
    len: usize,
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Tensor {
    /// Wraps owned bytes, checking the size.
    pub fn owned(dtype: DType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Tensor> {
        let want = dtype.row_bytes(cols).and_then(|r| r.checked_mul(rows));
        if want != Some(data.len()) {
            return Err(ModelError::Invalid(format!(
                "{} bytes for a [{rows}, {cols}] {} tensor",
                data.len(),
                dtype.name()
            )));
        }
        let len = data.len();
        Ok(Tensor {
            dtype,
            rows,
            cols,
            bytes: Arc::new(Bytes::Owned(data)),
            start: 0,
            len,
            packed: None,
        })
    }

    /// A view of `len` bytes at `start` in `bytes`, checking size and bounds.
    pub fn view(
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: Arc<Bytes>,
        start: usize,
        len: usize,
    ) -> Result<Tensor> {
        let want = dtype.row_bytes(cols).and_then(|r| r.checked_mul(rows));
        if want != Some(len) || start.checked_add(len).is_none_or(|end| end > bytes.len()) {
            return Err(ModelError::Invalid(format!(
                "{len} bytes at {start} for a [{rows}, {cols}] {} tensor",
                dtype.name()
            )));
        }
        Ok(Tensor {
            dtype,
            rows,
            cols,
            bytes,
            start,
            len,
            packed: None,
        })
    }

    /// Adds the repacked copy when the kernels have one for this dtype and CPU. Once
    /// packed, the file pages of the original are dropped from memory right away, so
    /// loading never holds two copies of the weights.
    pub fn pack(&mut self) -> Result<()> {
        if self.packed.is_none() {
            self.packed =
                PackedMatrix::pack(self.dtype, self.data(), self.rows, self.cols)?.map(Arc::new);
            if self.packed.is_some() {
                self.release_pages();
            }
        }
        Ok(())
    }

    /// Tells the kernel it may drop this tensor's resident file pages.
    fn release_pages(&self) {
        if let Bytes::Mmap(m) = &*self.bytes {
            const PAGE: usize = 4096;
            let start = self.start / PAGE * PAGE;
            let end = ((self.start + self.len).div_ceil(PAGE) * PAGE).min(m.len());
            // SAFETY: the mapping is a read-only file mapping and we hold no mutable view of
            // it; MADV_DONTNEED only drops resident pages, and any later read (embedding
            // rows, neighbouring tensors) faults the unchanged file back in.
            let r = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
            if let Err(e) = r {
                tracing::debug!("madvise(DONTNEED) failed: {e}");
            }
        }
    }

    /// All the bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// Bytes of row `r`.
    pub fn row(&self, r: usize) -> Result<&[u8]> {
        let rb = self.len / self.rows.max(1);
        if r >= self.rows {
            return Err(ModelError::Invalid(format!(
                "row {r} of {} rows",
                self.rows
            )));
        }
        Ok(&self.data()[r * rb..(r + 1) * rb])
    }

    /// Row `r` as f32 into `out` (`cols` long).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        dequantize_row(self.dtype, self.row(r)?, out)?;
        Ok(())
    }

    /// Whether `other` views the same bytes (tied embeddings share one matrix).
    pub fn same_data(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.bytes, &other.bytes) && self.start == other.start && self.len == other.len
    }

    /// The whole tensor as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, chunk) in out.chunks_mut(self.cols.max(1)).enumerate() {
            self.row_f32(r, chunk)?;
        }
        Ok(out)
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attention_norm: Vec<f32>, // (dim)
    pub wq: Tensor,               // (n_heads * head_dim, dim)
    pub wk: Tensor,               // (n_kv_heads * head_dim, dim)
    pub wv: Tensor,               // (n_kv_heads * head_dim, dim)
    pub wo: Tensor,               // (dim, n_heads * head_dim)
    pub ffn_norm: Vec<f32>,       // (dim)
    pub w1: Tensor,               // (ffn_dim, dim)  gate
    pub w2: Tensor,               // (dim, ffn_dim)  down
    pub w3: Tensor,               // (ffn_dim, dim)  up
    /// Biases of the q/k/v projections (Qwen2); `None` for Llama.
    pub bq: Option<Vec<f32>>, // (n_heads * head_dim)
    pub bk: Option<Vec<f32>>,     // (n_kv_heads * head_dim)
    pub bv: Option<Vec<f32>>,     // (n_kv_heads * head_dim)
}

/// All weights of a Llama model.
#[derive(Debug, Clone)]
pub struct Weights {
    pub tok_embeddings: Tensor, // (vocab, dim)
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,               // (dim)
    pub output: Tensor,               // (vocab, dim); the embedding matrix when tied
    pub rope_freqs: Option<Vec<f32>>, // (rope_dims / 2) frequency divisors, Llama 3.1 scaling
}

impl Weights {
    /// Repacks every matrix the kernels can run faster interleaved (projections, feed
    /// forward and output; the embedding table stays as it is, for row lookups), dropping
    /// the file pages each packed copy replaces, so resident memory stays about one copy of
    /// the weights. `FERROLLAMA_NO_PACK=1` turns this off.
    pub fn pack(&mut self) -> Result<()> {
        if std::env::var_os("FERROLLAMA_NO_PACK").is_some_and(|v| v != "0") {
            return Ok(());
        }
        // The largest matrix first: while a matrix is packed its source pages and its copy
        // are both resident, so the peak stays near one copy of the weights plus one matrix.
        self.output.pack()?;
        for l in &mut self.layers {
            for t in [
                &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w1, &mut l.w2, &mut l.w3,
            ] {
                t.pack()?;
            }
        }
        Ok(())
    }

    /// The one place the Llama weight layout is spelled out: every loader supplies tensors
    /// through `get(layer, reference name, rows, cols, required)`, with the shape checked.
    /// A tensor the file lacks is the loader's own error when `required`, and `Ok(None)`
    /// otherwise: a missing `output` means tied embeddings, a missing `rope_freqs` means
    /// the divisors come from the configuration, missing biases mean none.
    ///
    /// Rows come in Meta's order (RoPE on adjacent pairs) unless `rotate_half`: then the
    /// file holds `wq`, `wk` and their biases in the rotate-half order of Hugging Face
    /// checkpoints and of llama.cpp's NEOX-RoPE architectures (Qwen2), and they are
    /// permuted here, once, into Meta's order, so the one forward pass serves both.
    pub(crate) fn assemble(
        cfg: &LlamaConfig,
        rotate_half: bool,
        mut get: impl FnMut(Option<usize>, &str, usize, usize, bool) -> Result<Option<Tensor>>,
    ) -> Result<Weights> {
        let mut required = |l: Option<usize>, n: &str, rows: usize, cols: usize| {
            get(l, n, rows, cols, true)?.ok_or_else(|| ModelError::Tensor {
                name: n.to_string(),
                what: "missing".into(),
            })
        };
        let vector = |t: Tensor| -> Result<Vec<f32>> {
            let mut v = vec![0.0; t.cols];
            t.row_f32(0, &mut v)?;
            Ok(v)
        };
        let (dim, q, kv, ffn) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let hd = cfg.head_dim;
        // wq / wk (heads of hd rows) into adjacent-pair order when the file has rotate-half.
        let rope_rows = |t: Tensor, heads: usize| -> Result<Tensor> {
            if rotate_half {
                crate::safetensors::unpermute(&t, heads, hd)
            } else {
                Ok(t)
            }
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in (0..cfg.n_layers).map(Some) {
            layers.push(Layer {
                attention_norm: vector(required(l, "attention_norm", 1, dim)?)?,
                wq: rope_rows(required(l, "attention.wq", q, dim)?, cfg.n_heads)?,
                wk: rope_rows(required(l, "attention.wk", kv, dim)?, cfg.n_kv_heads)?,
                wv: required(l, "attention.wv", kv, dim)?,
                wo: required(l, "attention.wo", dim, q)?,
                ffn_norm: vector(required(l, "ffn_norm", 1, dim)?)?,
                w1: required(l, "feed_forward.w1", ffn, dim)?,
                w2: required(l, "feed_forward.w2", dim, ffn)?,
                w3: required(l, "feed_forward.w3", ffn, dim)?,
                bq: None,
                bk: None,
                bv: None,
            });
        }
        let tok_embeddings = required(None, "tok_embeddings", cfg.vocab_size, dim)?;
        let norm = vector(required(None, "norm", 1, dim)?)?;
        // The optional tensors. Biases permute like their projection's rows; v has no RoPE.
        for (i, layer) in layers.iter_mut().enumerate() {
            let mut bias = |name: &str, len: usize, rope_heads: Option<usize>| {
                let Some(t) = get(Some(i), name, 1, len, false)? else {
                    return Ok::<_, ModelError>(None);
                };
                let v = vector(t)?;
                Ok(Some(match rope_heads {
                    Some(heads) if rotate_half => unpermute_vec(&v, heads, hd),
                    _ => v,
                }))
            };
            layer.bq = bias("attention.bq", q, Some(cfg.n_heads))?;
            layer.bk = bias("attention.bk", kv, Some(cfg.n_kv_heads))?;
            layer.bv = bias("attention.bv", kv, None)?;
        }
        let output = get(None, "output", cfg.vocab_size, dim, false)?
            .unwrap_or_else(|| tok_embeddings.clone());
        let rope_freqs = match get(None, "rope_freqs", 1, cfg.rope_dims / 2, false)? {
            Some(t) => Some(vector(t)?),
            None => cfg
                .rope_scaling
                .map(|s| s.freq_divisors(cfg.rope_dims, cfg.rope_theta)),
        };
        Ok(Weights {
            tok_embeddings,
            layers,
            norm,
            output,
            rope_freqs,
        })
    }

    /// Maps the tensors of a GGUF file onto reference names, checking every shape.
    pub fn from_gguf(f: &GgufFile, cfg: &LlamaConfig) -> Result<Weights> {
        let rotate_half = Arch::of_gguf(f)?.gguf_rotate_half();
        Weights::assemble(cfg, rotate_half, |layer, name, rows, cols, required| {
            let fname = file_name(Format::Gguf, layer, name).unwrap_or_default();
            let Some(t) = f.tensor(&fname) else {
                if !required {
                    return Ok(None);
                }
                return Err(ModelError::Tensor {
                    name: fname,
                    what: "missing from the file".into(),
                });
            };
            let (r, c) = t.matrix_shape();
            if (r, c) != (rows, cols) {
                return Err(ModelError::Tensor {
                    name: fname,
                    what: format!("shape [{r}, {c}], expected [{rows}, {cols}]"),
                });
            }
            Ok(Some(Tensor {
                dtype: t.dtype,
                rows,
                cols,
                bytes: f.bytes().clone(),
                start: t.start,
                len: t.len,
                packed: None,
            }))
        })
    }
}

/// A per-head vector (a q or k bias) from rotate-half to adjacent-pair order: within each
/// head of `hd`, element `2j` = rotate-half element `j` and `2j + 1` = element `hd/2 + j`,
/// the same move [`crate::safetensors::unpermute`] makes on rows.
pub fn unpermute_vec(v: &[f32], n_heads: usize, hd: usize) -> Vec<f32> {
    let mut out = v.to_vec();
    for h in 0..n_heads {
        for j in 0..hd / 2 {
            out[h * hd + 2 * j] = v[h * hd + j];
            out[h * hd + 2 * j + 1] = v[h * hd + hd / 2 + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::unpermute;

    /// A bias must move exactly as its rows do, quantized rows included (whole blocks move).
    #[test]
    fn bias_permutes_like_its_rows() {
        let (heads, hd, cols) = (2, 4, 32);
        let bias: Vec<f32> = (0..heads * hd).map(|i| i as f32).collect();
        // Row r of a Q8_0 matrix holds the value r everywhere, so each row is identifiable.
        let mut data = Vec::new();
        for r in 0..heads * hd {
            let row = vec![r as f32; cols];
            let mut q = vec![0u8; DType::Q8_0.row_bytes(cols).expect("row bytes")];
            ferrollama_tensor::quantize_row(DType::Q8_0, &row, &mut q).expect("quantize");
            data.extend_from_slice(&q);
        }
        let t = Tensor::owned(DType::Q8_0, heads * hd, cols, data).expect("tensor");
        let u = unpermute(&t, heads, hd).expect("unpermute");
        let b = unpermute_vec(&bias, heads, hd);
        assert_eq!(b, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        let mut row = vec![0.0; cols];
        for (r, &want) in b.iter().enumerate() {
            u.row_f32(r, &mut row).expect("row");
            assert!(
                (row[0] - want).abs() < 0.05,
                "row {r}: {} vs {want}",
                row[0]
            );
        }
    }
}
