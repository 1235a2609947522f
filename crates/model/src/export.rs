//! Writing a Llama model as GGUF, converted or quantized: the one place that decides which
//! tensor is stored in which type.
//!
//! Type policies (`Target`):
//! - `f32`, `f16`, `bf16`: every matrix in that type.
//! - `q8_0`: every matrix Q8_0 (llama.cpp's `LLAMA_FTYPE_MOSTLY_Q8_0`).
//! - `q6_k`: every matrix Q6_K (llama.cpp's `LLAMA_FTYPE_MOSTLY_Q6_K`).
//! - `q5_0`, `q5_1`: every matrix in that type except the output matrix (or the embedding
//!   when it is tied to the output), which llama.cpp's `llama_tensor_get_type` gives Q6_K
//!   (`LLAMA_FTYPE_MOSTLY_Q5_0` / `_Q5_1` without an importance matrix).
//! - `q4_k`: llama.cpp's Q4_K_M mixture (`llama-quant.cpp`): Q4_K, except the output matrix
//!   (or the embedding when it is tied to the output) in Q6_K, and `wv` and `w2` in Q6_K in
//!   the layers `use_more_bits` picks (the first and last eighth, and every third between).
//!   Writing the same mixture as llama.cpp lets both quantizers be compared tensor by tensor.
//! - `fp8`: Meta's FP8 recipe for Llama 3.1 405B (spec §6.2): `w1`, `w3`, `w2` of layers
//!   `1 ..= n_layers - 2` as E4M3 with one scale per output row (`DType::F8E4M3`, stored
//!   under ferrollama's private GGUF type id); everything else, first and last layers
//!   included, in BF16. The engine quantizes the feed-forward activations per row with the
//!   1200 cap at run time (`DType::F8Act`).
//!
//! Norms and `rope_freqs` always stay F32. A matrix whose row length is not a multiple of
//! the block size falls back as llama.cpp does (Q4_K → Q5_0, Q6_K → Q8_0, then F16 if the
//! row is not a multiple of 32 either; see [`fallback`]), and each fallback is reported.
//! A source matrix already in the target type is copied byte for byte; any other is
//! dequantized to f32 row by row and quantized with the ggml reference quantizers
//! (`ferrollama_tensor::quantize_row`), in parallel over rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrollama_tensor::{DType, quantize_row};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{PlannedTensor, Value, ty, write_streamed};
use crate::names::{Format, file_name};
use crate::weights::{Tensor, Weights};

/// What `ferrollama quantize --type` produces.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    F32,
    F16,
    BF16,
    Q8_0,
    Q5_0,
    Q5_1,
    Q4_K,
    Q6_K,
    Fp8,
}

impl Target {
    pub const ALL: [Target; 9] = [
        Target::F32,
        Target::F16,
        Target::BF16,
        Target::Q8_0,
        Target::Q5_0,
        Target::Q5_1,
        Target::Q4_K,
        Target::Q6_K,
        Target::Fp8,
    ];

    /// Lower-case name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::F32 => "f32",
            Target::F16 => "f16",
            Target::BF16 => "bf16",
            Target::Q8_0 => "q8_0",
            Target::Q5_0 => "q5_0",
            Target::Q5_1 => "q5_1",
            Target::Q4_K => "q4_k",
            Target::Q6_K => "q6_k",
            Target::Fp8 => "fp8",
        }
    }

    /// Parses a name (`q4_k_m` is accepted for `q4_k`, whose mixture it is).
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.to_ascii_lowercase();
        if s == "q4_k_m" {
            return Some(Target::Q4_K);
        }
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`) for this mixture.
    fn ftype(self) -> Option<u32> {
        match self {
            Target::F32 => Some(0),
            Target::F16 => Some(1),
            Target::Q8_0 => Some(7),
            Target::Q5_0 => Some(8),
            Target::Q5_1 => Some(9),
            Target::Q4_K => Some(15),
            Target::Q6_K => Some(18),
            Target::BF16 => Some(32),
            Target::Fp8 => None,
        }
    }
}

impl Target {
    /// F32, F16 or BF16: writing an already quantized model in these widens it (loses
    /// almost nothing) instead of quantizing it again.
    pub fn is_float(self) -> bool {
        matches!(self, Target::F32 | Target::F16 | Target::BF16)
    }
}

/// The quantized types among `w`'s matrices that writing as `target` would quantize again,
/// compounding the error (none for a float target); sorted, each once.
pub fn requantized_types(w: &Weights, target: Target) -> Vec<&'static str> {
    if target.is_float() {
        return Vec::new();
    }
    let mut names: Vec<&'static str> = std::iter::once(&w.tok_embeddings)
        .chain(std::iter::once(&w.output))
        .chain(
            w.layers
                .iter()
                .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3]),
        )
        .map(|t| t.dtype)
        .filter(|d| !matches!(d, DType::F32 | DType::F16 | DType::BF16))
        .map(DType::name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The model to write: configuration, weights under reference names, and the GGUF
/// `tokenizer.*` key/values to carry over.
#[derive(Debug, Clone, Copy)]
pub struct ModelParts<'a> {
    pub config: &'a LlamaConfig,
    pub weights: &'a Weights,
    pub tokenizer: &'a [(String, Value)],
    pub name: Option<&'a str>,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub tensors: usize,
    pub bytes: u64,
    /// Matrices per stored type name.
    pub types: BTreeMap<&'static str, usize>,
    /// Matrices stored in another type than the policy's, and why.
    pub fallbacks: Vec<String>,
    /// Matrices that were already quantized in the source and were quantized again.
    pub requantized: Vec<String>,
}

/// A matrix's role, which decides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding,
    Output,
    Wq,
    Wk,
    Wv,
    Wo,
    W1,
    W2,
    W3,
}

/// llama.cpp's `use_more_bits`: the layers Q4_K_M gives more bits.
fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let (i, n) = (layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The policy's type for one matrix (before the block-size fallback).
fn policy(target: Target, role: Role, layer: Option<usize>, n_layers: usize, tied: bool) -> DType {
    let output_like = role == Role::Output || (tied && role == Role::Embedding);
    match target {
        Target::F32 => DType::F32,
        Target::F16 => DType::F16,
        Target::BF16 => DType::BF16,
        Target::Q8_0 => DType::Q8_0,
        Target::Q6_K => DType::Q6_K,
        // llama.cpp: the output matrix goes to Q6_K for every ftype but Q8_0 (and the
        // k-quant mixtures, handled below); the block-size fallback then applies.
        Target::Q5_0 | Target::Q5_1 if output_like => DType::Q6_K,
        Target::Q5_0 => DType::Q5_0,
        Target::Q5_1 => DType::Q5_1,
        Target::Q4_K => {
            let more = layer.is_some_and(|l| use_more_bits(l, n_layers));
            if output_like || (matches!(role, Role::Wv | Role::W2) && more) {
                DType::Q6_K
            } else {
                DType::Q4_K
            }
        }
        Target::Fp8 => {
            let inner = layer.is_some_and(|l| l >= 1 && l + 1 < n_layers);
            if inner && matches!(role, Role::W1 | Role::W2 | Role::W3) {
                DType::F8E4M3
            } else {
                DType::BF16
            }
        }
    }
}

/// The type llama.cpp's `llama_tensor_get_type` substitutes when a row of `cols` elements
/// is not a whole number of `want`'s blocks: Q4_K → Q5_0, Q6_K → Q8_0 (its
/// fallback table in `llama-quant.cpp`), then F16 if that type's 32-element blocks do not
/// fit either. A 32-element type (Q8_0, Q5_0, ...) only misses when 32 does not divide
/// the row, so it ends in F16 too, as in llama.cpp.
pub fn fallback(want: DType, cols: usize) -> DType {
    let fb = match want {
        DType::Q4_K => DType::Q5_0,
        _ => DType::Q8_0,
    };
    if fb.row_bytes(cols).is_some() {
        fb
    } else {
        DType::F16
    }
}

/// Where a planned tensor's data comes from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Matrix(&'a Tensor),
    Vector(&'a [f32]),
}

fn gguf_name(layer: Option<usize>, reference: &str) -> Result<String> {
    file_name(Format::Gguf, layer, reference)
        .ok_or_else(|| ModelError::Invalid(format!("no GGUF name for {reference}")))
}

/// The tensors to write, in file order, with their sources.
fn plan<'a>(
    cfg: &LlamaConfig,
    w: &'a Weights,
    target: Target,
    report: &mut ExportReport,
) -> Result<Vec<(PlannedTensor, Source<'a>)>> {
    let tied = w.output.same_data(&w.tok_embeddings);
    let n_layers = cfg.n_layers;
    let mut out = Vec::new();
    let mut matrix = |out: &mut Vec<(PlannedTensor, Source<'a>)>,
                      layer: Option<usize>,
                      reference: &str,
                      role: Role,
                      t: &'a Tensor|
     -> Result<()> {
        let name = gguf_name(layer, reference)?;
        let want = policy(target, role, layer, n_layers, tied);
        let dtype = match want.row_bytes(t.cols) {
            Some(_) => want,
            None => {
                let fb = fallback(want, t.cols);
                report.fallbacks.push(format!(
                    "{name}: rows of {} are not a multiple of {} for {}; stored as {}",
                    t.cols,
                    want.block_len(),
                    want.name(),
                    fb.name()
                ));
                fb
            }
        };
        let src_quantized = !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16);
        if src_quantized && t.dtype != dtype {
            report
                .requantized
                .push(format!("{name} ({} → {})", t.dtype, dtype));
        }
        *report.types.entry(dtype.name()).or_default() += 1;
        out.push((
            PlannedTensor::matrix(&name, dtype, t.rows, t.cols, false)?,
            Source::Matrix(t),
        ));
        Ok(())
    };
    let vector = |out: &mut Vec<(PlannedTensor, Source<'a>)>,
                  layer: Option<usize>,
                  reference: &str,
                  v: &'a [f32]|
     -> Result<()> {
        let name = gguf_name(layer, reference)?;
        out.push((
            PlannedTensor::matrix(&name, DType::F32, 1, v.len(), true)?,
            Source::Vector(v),
        ));
        Ok(())
    };

    matrix(
        &mut out,
        None,
        "tok_embeddings",
        Role::Embedding,
        &w.tok_embeddings,
    )?;
    if let Some(f) = &w.rope_freqs {
        vector(&mut out, None, "rope_freqs", f)?;
    }
    for (i, l) in w.layers.iter().enumerate() {
        let li = Some(i);
        vector(&mut out, li, "attention_norm", &l.attention_norm)?;
        matrix(&mut out, li, "attention.wq", Role::Wq, &l.wq)?;
        matrix(&mut out, li, "attention.wk", Role::Wk, &l.wk)?;
        matrix(&mut out, li, "attention.wv", Role::Wv, &l.wv)?;
        // Qwen2's biases, already in the adjacent-pair order of `wq`/`wk` written here;
        // llama.cpp's `llama` architecture reads them as optional tensors too.
        let biases = [
            ("attention.bq", l.bq.as_deref()),
            ("attention.bk", l.bk.as_deref()),
            ("attention.bv", l.bv.as_deref()),
        ];
        for (name, b) in biases.into_iter().filter_map(|(n, b)| Some((n, b?))) {
            vector(&mut out, li, name, b)?;
        }
        matrix(&mut out, li, "attention.wo", Role::Wo, &l.wo)?;
        vector(&mut out, li, "ffn_norm", &l.ffn_norm)?;
        matrix(&mut out, li, "feed_forward.w1", Role::W1, &l.w1)?;
        matrix(&mut out, li, "feed_forward.w2", Role::W2, &l.w2)?;
        matrix(&mut out, li, "feed_forward.w3", Role::W3, &l.w3)?;
    }
    vector(&mut out, None, "norm", &w.norm)?;
    if !tied {
        matrix(&mut out, None, "output", Role::Output, &w.output)?;
    }
    Ok(out)
}

/// `llama.*` and `general.*` metadata for `cfg`, then the tokenizer's keys.
fn metadata(parts: &ModelParts<'_>, target: Target) -> Vec<(String, Value)> {
    let c = parts.config;
    let u32v = |v: usize| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "general.name".into(),
            Value::String(parts.name.unwrap_or("model").to_string()),
        ),
        ("llama.context_length".into(), u32v(c.max_seq_len)),
        ("llama.embedding_length".into(), u32v(c.dim)),
        ("llama.block_count".into(), u32v(c.n_layers)),
        ("llama.feed_forward_length".into(), u32v(c.ffn_dim)),
        ("llama.attention.head_count".into(), u32v(c.n_heads)),
        ("llama.attention.head_count_kv".into(), u32v(c.n_kv_heads)),
        ("llama.rope.dimension_count".into(), u32v(c.rope_dims)),
        ("llama.rope.freq_base".into(), Value::F32(c.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.norm_eps),
        ),
        ("llama.vocab_size".into(), u32v(c.vocab_size)),
    ];
    // Written always, as llama.cpp's converter does (the reader infers dim / heads).
    m.push(("llama.attention.key_length".into(), u32v(c.head_dim)));
    m.push(("llama.attention.value_length".into(), u32v(c.head_dim)));
    if let Some(ft) = target.ftype() {
        m.push(("general.file_type".into(), Value::U32(ft)));
    }
    // llama.cpp's converter writes this to every file, quantized or not.
    m.push(("general.quantization_version".into(), Value::U32(2)));
    if target == Target::Fp8 {
        m.push((
            "ferrollama.fp8.scheme".into(),
            Value::String("meta-rowwise-e4m3".into()),
        ));
        m.push((
            "ferrollama.fp8.activation_scale_ub".into(),
            Value::F32(ferrollama_tensor::F8_ACT_SCALE_UB),
        ));
    }
    for (k, v) in parts.tokenizer {
        if k.starts_with("tokenizer.") {
            m.push((k.clone(), v.clone()));
        }
    }
    m
}

/// Encodes `t` (any dtype) as `dtype` into `buf`, rows split across `threads` threads.
fn encode_matrix(t: &Tensor, dtype: DType, threads: usize, buf: &mut Vec<u8>) -> Result<()> {
    if t.dtype == dtype {
        buf.extend_from_slice(t.data());
        return Ok(());
    }
    let rb = dtype
        .row_bytes(t.cols)
        .ok_or_else(|| ModelError::Invalid(format!("{} rows of {}", dtype.name(), t.cols)))?;
    buf.resize(rb * t.rows, 0);
    let threads = threads.clamp(1, t.rows.max(1));
    let per = t.rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks_mut(per * rb)
            .enumerate()
            .map(|(ci, chunk)| {
                s.spawn(move || -> Result<()> {
                    let mut row = vec![0f32; t.cols];
                    for (j, dst) in chunk.chunks_exact_mut(rb).enumerate() {
                        t.row_f32(ci * per + j, &mut row)?;
                        quantize_row(dtype, &row, dst)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(ModelError::Invalid("a quantizer thread panicked".into())))
        })
    })
}

/// Writes `parts` as a GGUF file at `path` with `target`'s types. `progress(done, total)`
/// is called with bytes written after each tensor. The file appears only when complete.
pub fn write_gguf(
    parts: &ModelParts<'_>,
    target: Target,
    path: &Path,
    threads: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let planned = plan(parts.config, parts.weights, target, &mut report)?;
    let meta = metadata(parts, target);
    if !meta.iter().any(|(k, _)| k == "tokenizer.ggml.model") {
        return Err(ModelError::Vocab(
            "the source has no tokenizer to carry into the GGUF file".into(),
        ));
    }
    let n_tokens = meta
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .and_then(|(_, v)| v.as_array())
        .map_or(0, <[Value]>::len);
    if n_tokens != parts.config.vocab_size {
        return Err(ModelError::Vocab(format!(
            "the tokenizer has {n_tokens} tokens but the model {} embedding rows; a file \
             written like that could not be loaded",
            parts.config.vocab_size
        )));
    }
    let total: u64 = planned.iter().map(|(p, _)| p.bytes as u64).sum();
    let done = AtomicU64::new(0);
    let (tensors, sources): (Vec<PlannedTensor>, Vec<Source<'_>>) = planned.into_iter().unzip();
    write_streamed(path, &meta, &tensors, |i, buf| {
        let p = &tensors[i];
        match sources[i] {
            Source::Matrix(t) => encode_matrix(t, p.dtype, threads, buf)?,
            Source::Vector(v) => {
                for x in v {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        let d = done.fetch_add(p.bytes as u64, Ordering::Relaxed) + p.bytes as u64;
        progress(d, total);
        Ok(())
    })?;
    report.tensors = tensors.len();
    report.bytes = total;
    Ok(report)
}

/// GGUF array of strings, for tokenizer keys built by importers.
pub fn string_array(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(ty::STRING, items.into_iter().map(Value::String).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_for_16_layers() {
        // Hand-evaluated from llama.cpp's lambda for n = 16: i < 2, i >= 14, (i - 2) % 3 == 2.
        let picked: Vec<usize> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
        assert_eq!(picked, vec![0, 1, 4, 7, 10, 13, 14, 15]);
    }

    #[test]
    fn fp8_policy_keeps_first_and_last_layers_and_attention_in_bf16() {
        let n = 6;
        let t = |role, l| policy(Target::Fp8, role, Some(l), n, false);
        assert_eq!(t(Role::W1, 0), DType::BF16);
        assert_eq!(t(Role::W2, 5), DType::BF16);
        for l in 1..5 {
            for r in [Role::W1, Role::W2, Role::W3] {
                assert_eq!(t(r, l), DType::F8E4M3);
            }
            for r in [Role::Wq, Role::Wk, Role::Wv, Role::Wo] {
                assert_eq!(t(r, l), DType::BF16);
            }
        }
        assert_eq!(
            policy(Target::Fp8, Role::Output, None, n, false),
            DType::BF16
        );
    }

    #[test]
    fn block_size_fallbacks_follow_llama_cpp() {
        // llama-quant.cpp: Q4_K → Q5_0, Q6_K → Q8_0; F16 when 32 does not divide the row.
        assert_eq!(fallback(DType::Q4_K, 576), DType::Q5_0);
        assert_eq!(fallback(DType::Q6_K, 576), DType::Q8_0);
        assert_eq!(fallback(DType::Q4_K, 100), DType::F16);
        assert_eq!(fallback(DType::Q6_K, 100), DType::F16);
        assert_eq!(fallback(DType::Q5_0, 100), DType::F16);
    }

    #[test]
    fn q5_targets_keep_the_output_in_q6_k() {
        for (t, d) in [(Target::Q5_0, DType::Q5_0), (Target::Q5_1, DType::Q5_1)] {
            assert_eq!(policy(t, Role::Output, None, 16, false), DType::Q6_K);
            assert_eq!(policy(t, Role::Embedding, None, 16, true), DType::Q6_K);
            assert_eq!(policy(t, Role::Embedding, None, 16, false), d);
            assert_eq!(policy(t, Role::W2, Some(0), 16, false), d);
            assert_eq!(policy(t, Role::Wv, Some(4), 16, false), d);
        }
        assert_eq!(Target::parse("Q5_1"), Some(Target::Q5_1));
        assert_eq!(Target::Q5_0.ftype(), Some(8));
    }

    #[test]
    fn q4_k_output_and_tied_embedding_get_q6_k() {
        assert_eq!(
            policy(Target::Q4_K, Role::Output, None, 16, false),
            DType::Q6_K
        );
        assert_eq!(
            policy(Target::Q4_K, Role::Embedding, None, 16, true),
            DType::Q6_K
        );
        assert_eq!(
            policy(Target::Q4_K, Role::Embedding, None, 16, false),
            DType::Q4_K
        );
        assert_eq!(
            policy(Target::Q4_K, Role::Wv, Some(4), 16, false),
            DType::Q6_K
        );
        assert_eq!(
            policy(Target::Q4_K, Role::Wv, Some(5), 16, false),
            DType::Q4_K
        );
    }
}
