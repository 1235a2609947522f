//! LoRA adapters for inference: reading both formats people have them in, checked against
//! the base model they are meant for.
//!
//! - **PEFT** (`adapter_config.json` + `adapter_model.safetensors`), Hugging Face module
//!   names (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`, ...). Hugging
//!   Face's Llama stores `q_proj` / `k_proj` rows permuted to rotate halves (its conversion
//!   script's `permute`); the output rows of `B` of q and k are permuted back to Meta's
//!   adjacent pairs here, as the loader does for the base weights.
//! - **GGUF** as llama.cpp reads adapters (`general.type = adapter`, `adapter.type = lora`,
//!   `adapter.lora.alpha`, `blk.N.attn_q.weight.lora_a` `[in, r]` / `.lora_b` `[r, out]` in
//!   ggml order). GGUF is already in Meta's order.
//!
//! Either way an [`Adapter`] holds, per layer and projection, f32 `A (rank, in)` and
//! `B (out, rank)` in Meta's row order and the factor `scale` of the update
//! `y = x Wᵀ + scale · (x Aᵀ) Bᵀ`. It is separate from the base weights, so it works on any
//! base type (F32, F16, quantized); the forward pass applies it per row
//! ([`crate::Llama::forward_batch_lora`]), and [`Adapter::merge`] folds it in for export.

use std::path::{Path, PathBuf};

use ferrollama_tensor::DType;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetadataExt};
use crate::weights::{Tensor, Weights};

/// A projection of a transformer block that can carry an adapter (the order of
/// `ferrollama_train::Target`, which indexes the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// Index into a layer's `[Option<LoraPair>; 7]`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// PEFT's module path under `model.layers.N.`.
    pub fn hf_module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }

    /// PEFT's `target_modules` name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        let m = self.hf_module();
        m.rsplit('.').next().unwrap_or(m)
    }

    /// llama.cpp's tensor name of the weight, within `blk.N.`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// `(in, out)` features of the projection in a model shaped by `cfg`.
    pub fn dims(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (d, q, kv, ff) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        match self {
            Proj::Q => (d, q),
            Proj::K | Proj::V => (d, kv),
            Proj::O => (q, d),
            Proj::Gate | Proj::Up => (d, ff),
            Proj::Down => (ff, d),
        }
    }

    /// The base weight this projection adapts.
    pub fn weight(self, layer: &crate::weights::Layer) -> &Tensor {
        match self {
            Proj::Q => &layer.wq,
            Proj::K => &layer.wk,
            Proj::V => &layer.wv,
            Proj::O => &layer.wo,
            Proj::Gate => &layer.w1,
            Proj::Up => &layer.w3,
            Proj::Down => &layer.w2,
        }
    }

    fn weight_mut(self, layer: &mut crate::weights::Layer) -> &mut Tensor {
        match self {
            Proj::Q => &mut layer.wq,
            Proj::K => &mut layer.wk,
            Proj::V => &mut layer.wv,
            Proj::O => &mut layer.wo,
            Proj::Gate => &mut layer.w1,
            Proj::Up => &mut layer.w3,
            Proj::Down => &mut layer.w2,
        }
    }
}

/// One adapted projection: `A (rank, in)` and `B (out, rank)`, row-major, Meta's row order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// `Bᵀ (rank, out)`: the forward pass adds `Σ_j t_j · Bᵀ[j]` to an output row, a
    /// contiguous axpy per rank instead of a strided column walk.
    bt: Vec<f32>,
}

impl LoraPair {
    /// Checks `a` is `rank × inp` and `b` is `out × rank`.
    pub fn new(a: Vec<f32>, b: Vec<f32>, rank: usize, inp: usize, out: usize) -> Result<LoraPair> {
        if a.len() != rank * inp || b.len() != out * rank {
            return Err(ModelError::Invalid(format!(
                "LoRA matrices of {} and {} values, expected A {rank}×{inp} and B {out}×{rank}",
                a.len(),
                b.len()
            )));
        }
        let mut bt = vec![0.0; b.len()];
        for o in 0..out {
            for j in 0..rank {
                bt[j * out + o] = b[o * rank + j];
            }
        }
        Ok(LoraPair { a, b, bt })
    }

    /// `Bᵀ (rank, out)`.
    pub fn bt(&self) -> &[f32] {
        &self.bt
    }
}

/// A LoRA adapter for a model shaped like the one it was read for.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub rank: usize,
    /// `lora_alpha` / `adapter.lora.alpha` as the file gives it.
    pub alpha: f64,
    /// The factor on the low-rank update: `alpha / rank` (llama.cpp: 1 when alpha is 0).
    pub scale: f32,
    /// `layers[i][proj.index()]`, `None` where that projection is not adapted.
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

impl Adapter {
    /// Reads a PEFT folder (with `adapter_config.json`) or a llama.cpp `.gguf` adapter.
    pub fn load(path: &Path, cfg: &LlamaConfig) -> Result<Adapter> {
        if path.is_dir() {
            Adapter::read_peft(path, cfg)
        } else if path.is_file() {
            Adapter::read_gguf(path, cfg)
        } else {
            Err(bad(
                path,
                "no such file or folder: give a PEFT adapter folder (adapter_config.json + \
                 adapter_model.safetensors) or a GGUF LoRA adapter file",
            ))
        }
    }

    /// Whether the adapter fits a model shaped by `cfg` (layer count, every matrix's
    /// shape): an error saying what differs.
    pub fn check(&self, cfg: &LlamaConfig) -> Result<()> {
        if self.layers.len() != cfg.n_layers {
            return Err(ModelError::Invalid(format!(
                "the LoRA adapter has {} layers but the model {}: it was made for another base model",
                self.layers.len(),
                cfg.n_layers
            )));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            for p in Proj::ALL {
                let Some(pair) = &layer[p.index()] else {
                    continue;
                };
                let (inp, out) = p.dims(cfg);
                if pair.a.len() != self.rank * inp || pair.b.len() != out * self.rank {
                    return Err(ModelError::Invalid(format!(
                        "the LoRA adapter's layer {l} {} does not fit the model ({inp} in, \
                         {out} out at rank {}): it was made for another base model",
                        p.hf_name(),
                        self.rank
                    )));
                }
            }
        }
        Ok(())
    }

    /// The projections adapted in some layer, in [`Proj::ALL`] order.
    pub fn targets(&self) -> Vec<Proj> {
        Proj::ALL
            .into_iter()
            .filter(|p| self.layers.iter().any(|l| l[p.index()].is_some()))
            .collect()
    }

    /// Layer `l`'s pair for `p`.
    pub fn pair(&self, l: usize, p: Proj) -> Option<&LoraPair> {
        self.layers.get(l)?[p.index()].as_ref()
    }

    /// Reads a PEFT LoRA adapter folder for a model shaped by `cfg` (F32, F16 or BF16
    /// tensors). Anything PEFT can express that this model cannot run is an error: another
    /// PEFT type, DoRA, rsLoRA, biases, per-module ranks, modules other than the seven
    /// projections, wrong shapes, missing halves.
    pub fn read_peft(dir: &Path, cfg: &LlamaConfig) -> Result<Adapter> {
        let cpath = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cpath).map_err(|source| ModelError::Io {
            path: cpath.clone(),
            source,
        })?;
        let c: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(dir, format!("adapter_config.json is not valid JSON: {e}")))?;
        if c["peft_type"].as_str() != Some("LORA") {
            return Err(bad(
                dir,
                format!("peft_type {} is not LORA", c["peft_type"]),
            ));
        }
        for flag in ["use_dora", "use_rslora"] {
            if c[flag].as_bool() == Some(true) {
                return Err(bad(dir, format!("{flag} adapters are not supported")));
            }
        }
        if c["bias"].as_str().is_some_and(|b| b != "none") {
            return Err(bad(dir, "adapters with biases are not supported"));
        }
        if c["rank_pattern"].as_object().is_some_and(|m| !m.is_empty())
            || c["alpha_pattern"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(dir, "per-module ranks or alphas are not supported"));
        }
        if c["modules_to_save"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(
                dir,
                "modules_to_save (fully trained extra modules) are not supported",
            ));
        }
        let rank = c["r"]
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or_else(|| bad(dir, "adapter_config.json has no positive rank \"r\""))?
            as usize;
        let alpha = c["lora_alpha"]
            .as_f64()
            .ok_or_else(|| bad(dir, "adapter_config.json has no \"lora_alpha\""))?;
        // Listed target modules must be projections we run (a regex string is allowed:
        // then the tensors alone say what is adapted).
        let mut listed = Vec::new();
        if let Some(list) = c["target_modules"].as_array() {
            for m in list {
                let name = m.as_str().unwrap_or_default();
                let p = Proj::ALL
                    .into_iter()
                    .find(|p| p.hf_name() == name)
                    .ok_or_else(|| {
                        bad(
                            dir,
                            format!(
                                "target module {m} is not supported: only q_proj, k_proj, \
                                 v_proj, o_proj, gate_proj, up_proj and down_proj can be adapted"
                            ),
                        )
                    })?;
                listed.push(p);
            }
        }
        let wpath = dir.join("adapter_model.safetensors");
        if !wpath.is_file() {
            return Err(bad(
                dir,
                "adapter_model.safetensors is missing (adapter_model.bin pickles are not read: \
                 save the adapter with safe_serialization=True)",
            ));
        }
        let tensors = crate::safetensors::map_file(&wpath)?;
        let mut halves: Vec<[[Option<Tensor>; 2]; 7]> = vec![Default::default(); cfg.n_layers];
        for (name, t) in tensors {
            let (l, p, ab) = parse_peft_name(&name).ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "tensor {name} is not a LoRA matrix of a Llama projection (only \
                         q/k/v/o/gate/up/down_proj lora_A / lora_B are supported)"
                    ),
                )
            })?;
            let slot = halves.get_mut(l).ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "tensor {name} is for layer {l}, but the model has {} layers: the \
                         adapter was trained for another base model",
                        cfg.n_layers
                    ),
                )
            })?;
            slot[p.index()][ab] = Some(t);
        }
        let layers_listed = c["layers_to_transform"].is_null();
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for (l, layer) in halves.into_iter().enumerate() {
            let mut out: [Option<LoraPair>; 7] = Default::default();
            for (p, [a, b]) in Proj::ALL.into_iter().zip(layer) {
                let name = |ab: &str| {
                    format!(
                        "base_model.model.model.layers.{l}.{}.lora_{ab}.weight",
                        p.hf_module()
                    )
                };
                let (a, b) = match (a, b) {
                    (None, None) => {
                        if layers_listed && listed.contains(&p) {
                            return Err(bad(
                                dir,
                                format!(
                                    "tensors {} and {} are missing (target_modules lists {})",
                                    name("A"),
                                    name("B"),
                                    p.hf_name()
                                ),
                            ));
                        }
                        continue;
                    }
                    (Some(a), Some(b)) => (a, b),
                    (None, Some(_)) => {
                        return Err(bad(dir, format!("tensor {} is missing", name("A"))));
                    }
                    (Some(_), None) => {
                        return Err(bad(dir, format!("tensor {} is missing", name("B"))));
                    }
                };
                let (inp, outd) = p.dims(cfg);
                check_shape(dir, &name("A"), &a, rank, inp)?;
                check_shape(dir, &name("B"), &b, outd, rank)?;
                let bm = b.to_f32()?;
                let bm = match p {
                    Proj::Q => unpermute_rows(&bm, cfg.n_heads, rank),
                    Proj::K => unpermute_rows(&bm, cfg.n_kv_heads, rank),
                    _ => bm,
                };
                out[p.index()] = Some(LoraPair::new(a.to_f32()?, bm, rank, inp, outd)?);
            }
            layers.push(out);
        }
        let a = Adapter {
            rank,
            alpha,
            scale: (alpha / rank as f64) as f32,
            layers,
        };
        if a.targets().is_empty() {
            return Err(bad(dir, "the adapter has no LoRA matrices"));
        }
        Ok(a)
    }

    /// Reads a llama.cpp GGUF LoRA adapter for a model shaped by `cfg` (F32, F16, BF16 or
    /// quantized tensors, dequantized to f32).
    pub fn read_gguf(path: &Path, cfg: &LlamaConfig) -> Result<Adapter> {
        let f = GgufFile::open(path)?;
        let ty = f.get_str("general.type")?;
        if ty != Some("adapter") {
            return Err(bad(
                path,
                format!(
                    "general.type is {}, not \"adapter\": this is not a LoRA adapter file{}",
                    ty.map_or("missing".to_string(), |t| format!("{t:?}")),
                    if ty == Some("model") {
                        " (it is a model: give it with -m)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let aty = f.get_str("adapter.type")?;
        if aty != Some("lora") {
            return Err(bad(
                path,
                format!("adapter.type is {aty:?}, only \"lora\" adapters are supported"),
            ));
        }
        let alpha = f.get_f64("adapter.lora.alpha")?.unwrap_or(0.0);
        let mut halves: Vec<[[Option<&crate::gguf::TensorInfo>; 2]; 7]> =
            vec![Default::default(); cfg.n_layers];
        for t in &f.tensors {
            let (l, p, ab) = parse_gguf_name(&t.name).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "tensor {} is not a LoRA matrix of a Llama projection (only \
                         blk.N.attn_q/k/v/output and ffn_gate/up/down .weight.lora_a / \
                         .lora_b are supported)",
                        t.name
                    ),
                )
            })?;
            let slot = halves.get_mut(l).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "tensor {} is for layer {l}, but the model has {} layers: the \
                         adapter was made for another base model",
                        t.name, cfg.n_layers
                    ),
                )
            })?;
            slot[p.index()][ab] = Some(t);
        }
        let mut rank = 0;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for (l, layer) in halves.into_iter().enumerate() {
            let mut out: [Option<LoraPair>; 7] = Default::default();
            for (p, [a, b]) in Proj::ALL.into_iter().zip(layer) {
                let name = |ab: &str| format!("blk.{l}.{}.weight.lora_{ab}", p.gguf_name());
                let (a, b) = match (a, b) {
                    (None, None) => continue,
                    (Some(a), Some(b)) => (a, b),
                    (None, Some(_)) => {
                        return Err(bad(path, format!("tensor {} is missing", name("a"))));
                    }
                    (Some(_), None) => {
                        return Err(bad(path, format!("tensor {} is missing", name("b"))));
                    }
                };
                // ggml order: a is [in, r] (r rows of `in`), b is [r, out].
                let r = a.dims.get(1).copied().unwrap_or(1);
                if rank == 0 {
                    rank = r;
                }
                let (inp, outd) = p.dims(cfg);
                let as_tensor = |t: &crate::gguf::TensorInfo, rows: usize, cols: usize| {
                    if t.dims.len() > 2 || t.matrix_shape() != (rows, cols) {
                        return Err(bad(
                            path,
                            format!(
                                "tensor {} has shape {:?} (ggml order), this model needs \
                                 [{cols}, {rows}]: the adapter does not fit this base model",
                                t.name, t.dims
                            ),
                        ));
                    }
                    Tensor::view(t.dtype, rows, cols, f.bytes().clone(), t.start, t.len)
                };
                let at = as_tensor(a, rank, inp)?;
                let bt = as_tensor(b, outd, rank)?;
                out[p.index()] = Some(LoraPair::new(at.to_f32()?, bt.to_f32()?, rank, inp, outd)?);
            }
            layers.push(out);
        }
        if rank == 0 {
            return Err(bad(path, "the adapter has no LoRA matrices"));
        }
        // llama.cpp (llama-adapter.cpp): scale = alpha / rank, or 1 when alpha is 0.
        let scale = if alpha != 0.0 {
            (alpha / rank as f64) as f32
        } else {
            1.0
        };
        Ok(Adapter {
            rank,
            alpha,
            scale,
            layers,
        })
    }

    /// `weights` with the adapter folded in: every adapted matrix becomes F32
    /// `W + scale · B A` (a quantized base is dequantized first); the rest is shared
    /// unchanged. Write the result with [`crate::export::write_gguf`] in the type wanted.
    pub fn merge(&self, cfg: &LlamaConfig, weights: &Weights) -> Result<Weights> {
        if self.layers.len() != weights.layers.len() {
            return Err(ModelError::Invalid(format!(
                "the adapter has {} layers, the model {}",
                self.layers.len(),
                weights.layers.len()
            )));
        }
        let mut out = weights.clone();
        let r = self.rank;
        for (l, layer) in out.layers.iter_mut().enumerate() {
            for p in Proj::ALL {
                let Some(pair) = self.pair(l, p) else {
                    continue;
                };
                let (inp, outd) = p.dims(cfg);
                let w = p.weight_mut(layer);
                if (w.rows, w.cols) != (outd, inp) {
                    return Err(ModelError::Invalid(format!(
                        "layer {l} {}: the weight is [{}, {}], the adapter needs [{outd}, {inp}]",
                        p.hf_name(),
                        w.rows,
                        w.cols
                    )));
                }
                let mut m = w.to_f32()?;
                // The sum over the rank in f64 then one f32 rounding: the merged weight is the
                // exact W + s·BA to f32 precision.
                let mut row = vec![0f64; inp];
                for o in 0..outd {
                    row.fill(0.0);
                    for j in 0..r {
                        let c = f64::from(pair.b[o * r + j]);
                        for (acc, &x) in row.iter_mut().zip(&pair.a[j * inp..(j + 1) * inp]) {
                            *acc += c * f64::from(x);
                        }
                    }
                    for (wv, &d) in m[o * inp..(o + 1) * inp].iter_mut().zip(&row) {
                        *wv = (f64::from(*wv) + f64::from(self.scale) * d) as f32;
                    }
                }
                let bytes: Vec<u8> = m.iter().flat_map(|x| x.to_le_bytes()).collect();
                *w = Tensor::owned(DType::F32, outd, inp, bytes)?;
            }
        }
        Ok(out)
    }
}

fn bad(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Adapter {
        path: PathBuf::from(path),
        what: what.into(),
    }
}

fn check_shape(dir: &Path, name: &str, t: &Tensor, rows: usize, cols: usize) -> Result<()> {
    if (t.rows, t.cols) != (rows, cols) {
        return Err(bad(
            dir,
            format!(
                "tensor {name} has shape [{}, {}], this model needs [{rows}, {cols}]: the \
                 adapter does not fit this base model",
                t.rows, t.cols
            ),
        ));
    }
    Ok(())
}

/// `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` → (N, Q, 0).
fn parse_peft_name(name: &str) -> Option<(usize, Proj, usize)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (l, rest) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    let rest = rest.strip_suffix(".weight")?;
    let (module, ab) = rest.rsplit_once('.')?;
    let ab = match ab {
        "lora_A" => 0,
        "lora_B" => 1,
        _ => return None,
    };
    let p = Proj::ALL.into_iter().find(|p| p.hf_module() == module)?;
    Some((l, p, ab))
}

/// `blk.N.attn_q.weight.lora_a` → (N, Q, 0).
fn parse_gguf_name(name: &str) -> Option<(usize, Proj, usize)> {
    let rest = name.strip_prefix("blk.")?;
    let (l, rest) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    let (module, ab) = rest.split_once(".weight.")?;
    let ab = match ab {
        "lora_a" => 0,
        "lora_b" => 1,
        _ => return None,
    };
    let p = Proj::ALL.into_iter().find(|p| p.gguf_name() == module)?;
    Some((l, p, ab))
}

/// Rows of a `(heads · hd, cols)` matrix from Meta's adjacent-pair order to Hugging Face's
/// rotate-half order: HF row `h·hd + c·hd/2 + i` is Meta row `h·hd + 2i + c`.
pub fn permute_rows(m: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    move_rows(m, heads, cols, true)
}

/// The inverse of [`permute_rows`]: Hugging Face's rotate-half rows back to Meta's order.
pub fn unpermute_rows(m: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    move_rows(m, heads, cols, false)
}

fn move_rows(m: &[f32], heads: usize, cols: usize, to_hf: bool) -> Vec<f32> {
    let rows = m.len() / cols.max(1);
    let hd = rows / heads.max(1);
    let mut out = vec![0.0; m.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for c in 0..2 {
                let meta = h * hd + 2 * i + c;
                let hf = h * hd + c * (hd / 2) + i;
                let (src, dst) = if to_hf { (meta, hf) } else { (hf, meta) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_hf_conversion_by_hand() {
        // One head of 4 rows, 1 column: Meta rows (pair 0: r0 r1, pair 1: r2 r3) become
        // HF rows [r0 r2 r1 r3] (real parts, then imaginary parts).
        let m = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_rows(&m, 1, 1), [0.0, 2.0, 1.0, 3.0]);
        // Two heads of 4 rows, 2 columns; and back again.
        let m: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let hf = permute_rows(&m, 2, 2);
        assert_eq!(&hf[..8], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(unpermute_rows(&hf, 2, 2), m);
    }

    #[test]
    fn names_parse_in_both_formats() {
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"),
            Some((12, Proj::Down, 1))
        );
        assert_eq!(
            parse_peft_name("base_model.model.model.embed_tokens.lora_embedding_A"),
            None
        );
        assert_eq!(
            parse_peft_name(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"
            ),
            None
        );
        assert_eq!(
            parse_gguf_name("blk.3.attn_output.weight.lora_a"),
            Some((3, Proj::O, 0))
        );
        assert_eq!(parse_gguf_name("token_embd.weight.lora_a"), None);
    }

    #[test]
    fn bt_is_the_transpose() {
        let p =
            LoraPair::new(vec![0.0; 6], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, 3).expect("pair");
        // B (3, 2) = [[1,2],[3,4],[5,6]] → Bᵀ (2, 3) = [[1,3,5],[2,4,6]].
        assert_eq!(p.bt(), &[1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }
}
