//! The KV cache: keys and values of every past position, per layer.
//!
//! Stored in F16 (llama.cpp's default, half the memory of f32 with no measurable loss) or
//! Q8_0 (half again). Sized once from `--ctx-size`, so a long context is a decision made at
//! start-up, not a surprise mid-generation.

use ferrollama_tensor::{DType, dequantize_row, quantize_row};
use half::f16;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

/// How keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    Q8_0,
}

#[derive(Debug)]
enum Store {
    F16(Vec<f16>),
    Q8(Vec<u8>),
}

/// Positions per cache block. Sequences own whole blocks (the server's paged cache hands
/// them out and shares full ones between prompts with a common prefix); attention reads a
/// block as one tile, so this equals the attention tile length.
pub const KV_BLOCK: usize = 16;

/// Keys and values in slots of `kv_dim`, per layer `[slots, kv_dim]`, the slots grouped in
/// blocks of [`KV_BLOCK`]. A sequence maps its position `p` to slot
/// `blocks[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK`; a cache used by one sequence at a time
/// maps positions to slots one to one.
#[derive(Debug)]
pub struct KvCache {
    ty: KvType,
    ctx: usize,
    kv_dim: usize,
    head_dim: usize,
    k: Vec<Store>,
    v: Vec<Store>,
    /// Positions filled so far (single-sequence use through [`crate::Llama::forward`]).
    pub len: usize,
}

impl KvCache {
    /// Allocates room for `ctx` positions.
    pub fn new(cfg: &LlamaConfig, ctx: usize, ty: KvType) -> Result<KvCache> {
        let kv_dim = cfg.kv_dim();
        if ctx == 0 || ctx > 1 << 20 {
            return Err(ModelError::Invalid(format!(
                "context size {ctx} must be in 1..=1048576"
            )));
        }
        if ty == KvType::Q8_0 && !cfg.head_dim.is_multiple_of(32) {
            return Err(ModelError::Invalid(format!(
                "a Q8_0 KV cache needs head_dim divisible by 32 (it is {})",
                cfg.head_dim
            )));
        }
        // Whole blocks, so that a block table can cover the last position.
        let n = ctx
            .div_ceil(KV_BLOCK)
            .checked_mul(KV_BLOCK * kv_dim)
            .ok_or_else(|| ModelError::Invalid("KV cache size overflows".into()))?;
        let make = || match ty {
            KvType::F16 => Store::F16(vec![f16::ZERO; n]),
            KvType::Q8_0 => Store::Q8(vec![0u8; n / 32 * 34]),
        };
        Ok(KvCache {
            ty,
            ctx,
            kv_dim,
            head_dim: cfg.head_dim,
            k: (0..cfg.n_layers).map(|_| make()).collect(),
            v: (0..cfg.n_layers).map(|_| make()).collect(),
            len: 0,
        })
    }

    /// Bytes the cache holds.
    pub fn bytes(ctx: usize, cfg: &LlamaConfig, ty: KvType) -> usize {
        let per = match ty {
            KvType::F16 => 2 * cfg.kv_dim(),
            KvType::Q8_0 => cfg.kv_dim() / 32 * 34,
        };
        2 * cfg.n_layers * ctx * per
    }

    /// A cache of `n_blocks` blocks shared by many sequences (see [`KV_BLOCK`]).
    pub fn with_blocks(cfg: &LlamaConfig, n_blocks: usize, ty: KvType) -> Result<KvCache> {
        let ctx = n_blocks
            .checked_mul(KV_BLOCK)
            .ok_or_else(|| ModelError::Invalid("KV cache size overflows".into()))?;
        KvCache::new(cfg, ctx, ty)
    }

    /// Positions one sequence may use (the size asked for).
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Blocks of [`KV_BLOCK`] slots.
    pub fn n_blocks(&self) -> usize {
        self.ctx.div_ceil(KV_BLOCK)
    }

    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Writes the key and value rows (`kv_dim` each) of slot `pos` in `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
        if pos >= self.n_blocks() * KV_BLOCK {
            return Err(ModelError::Invalid(format!(
                "slot {pos} is past the cache size {}",
                self.n_blocks() * KV_BLOCK
            )));
        }
        let d = self.kv_dim;
        for (store, src) in [(&mut self.k[layer], k), (&mut self.v[layer], v)] {
            match store {
                Store::F16(buf) => {
                    ferrollama_tensor::f32_to_f16_slice(&src[..d], &mut buf[pos * d..(pos + 1) * d])
                }
                Store::Q8(buf) => {
                    let rb = d / 32 * 34;
                    quantize_row(DType::Q8_0, &src[..d], &mut buf[pos * rb..(pos + 1) * rb])?;
                }
            }
        }
        Ok(())
    }

    /// Key of KV head `h` in slot `pos` in `layer`, as f32 into `out` (`head_dim` long).
    #[inline]
    pub fn key_f32(&self, layer: usize, pos: usize, h: usize, out: &mut [f32]) {
        self.row_f32(&self.k[layer], pos, h, out);
    }

    /// Value of KV head `h` in slot `pos` in `layer`, as f32 into `out` (`head_dim` long).
    #[inline]
    pub fn value_f32(&self, layer: usize, pos: usize, h: usize, out: &mut [f32]) {
        self.row_f32(&self.v[layer], pos, h, out);
    }

    /// Key of KV head `h` in slot `pos` as stored, when the cache is F16.
    #[inline]
    pub fn key_f16(&self, layer: usize, pos: usize, h: usize) -> Option<&[f16]> {
        self.row_f16(&self.k[layer], pos, h)
    }

    /// Value of KV head `h` in slot `pos` as stored, when the cache is F16.
    #[inline]
    pub fn value_f16(&self, layer: usize, pos: usize, h: usize) -> Option<&[f16]> {
        self.row_f16(&self.v[layer], pos, h)
    }

    /// Keys of KV head `h` for `n` consecutive slots from `slot` (rows `kv_dim` apart), when
    /// the cache is F16.
    #[inline]
    pub fn keys_f16(&self, layer: usize, slot: usize, h: usize, n: usize) -> Option<&[f16]> {
        self.rows_f16(&self.k[layer], slot, h, n)
    }

    /// Values, as [`KvCache::keys_f16`].
    #[inline]
    pub fn values_f16(&self, layer: usize, slot: usize, h: usize, n: usize) -> Option<&[f16]> {
        self.rows_f16(&self.v[layer], slot, h, n)
    }

    /// Elements between consecutive slots.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    #[inline]
    fn rows_f16<'a>(&self, store: &'a Store, slot: usize, h: usize, n: usize) -> Option<&'a [f16]> {
        let at = slot * self.kv_dim + h * self.head_dim;
        match store {
            Store::F16(buf) if n > 0 => buf.get(at..at + (n - 1) * self.kv_dim + self.head_dim),
            _ => None,
        }
    }

    #[inline]
    fn row_f16<'a>(&self, store: &'a Store, pos: usize, h: usize) -> Option<&'a [f16]> {
        let at = pos * self.kv_dim + h * self.head_dim;
        match store {
            Store::F16(buf) => buf.get(at..at + self.head_dim),
            Store::Q8(_) => None,
        }
    }

    #[inline]
    fn row_f32(&self, store: &Store, pos: usize, h: usize, out: &mut [f32]) {
        let hd = self.head_dim;
        let at = pos * self.kv_dim + h * hd;
        match store {
            Store::F16(buf) => {
                use half::slice::HalfFloatSliceExt;
                buf[at..at + hd].convert_to_f32_slice(&mut out[..hd]);
            }
            Store::Q8(buf) => {
                let (a, b) = (at / 32 * 34, (at + hd) / 32 * 34);
                if dequantize_row(DType::Q8_0, &buf[a..b], &mut out[..hd]).is_err() {
                    out[..hd].fill(0.0);
                }
            }
        }
    }
}
