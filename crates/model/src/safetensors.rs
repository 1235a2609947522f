//! Hugging Face model folders: `config.json` + `model.safetensors` (or sharded
//! `model-0000N-of-0000M.safetensors` with `model.safetensors.index.json`), F32/F16/BF16.
//!
//! Weights are mapped onto reference names through `names.rs`. Hugging Face's conversion
//! permuted the rows of `wq` and `wk` so that rotate-half RoPE works; our forward pass uses
//! Meta's adjacent-pair RoPE, so those two (and Qwen2's q/k biases) are permuted back at
//! load by [`Weights::assemble`] (spec §3): within each head, Meta row `2j` = HF row `j`,
//! Meta row `2j + 1` = HF row `hd/2 + j`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrollama_tensor::DType;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::Bytes;
use crate::names::{Format, file_name};
use crate::weights::{Tensor, Weights};

/// One tensor as a safetensors header describes it, with its byte range made absolute
/// (the safetensors crate has checked that the ranges are contiguous, inside the file, and
/// exactly dtype × shape long).
#[derive(Debug, Clone)]
struct Entry {
    dtype: StDtype,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// Reads and checks the header of one safetensors file: every tensor's name and entry,
/// sorted by name. The one header reader both [`SafetensorsFolder`] and
/// [`parse_file_bytes`] use.
fn read_header(bytes: &[u8]) -> Result<Vec<(String, Entry)>> {
    let (n, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelError::Invalid(e.to_string()))?;
    // 8 bytes of header length, then the JSON header, then the data.
    let data_start = n
        .checked_add(8)
        .ok_or_else(|| ModelError::Invalid("safetensors header length overflows".into()))?;
    let mut entries = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (s, e) = info.data_offsets;
            let start = data_start.checked_add(s);
            let len = e.checked_sub(s);
            match (start, len) {
                (Some(start), Some(len)) => Ok((
                    name,
                    Entry {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start,
                        len,
                    },
                )),
                _ => Err(ModelError::Tensor {
                    name,
                    what: format!("data offsets [{s}, {e}) are invalid"),
                }),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Our dtype for a safetensors dtype: the float types weights are stored in.
fn dtype_of(name: &str, dtype: StDtype) -> Result<DType> {
    match dtype {
        StDtype::F32 => Ok(DType::F32),
        StDtype::F16 => Ok(DType::F16),
        StDtype::BF16 => Ok(DType::BF16),
        other => Err(ModelError::Tensor {
            name: name.into(),
            what: format!("dtype {other:?} is not supported (F32, F16, BF16 are)"),
        }),
    }
}

/// `[rows, cols]` of a vector (one row) or matrix; `None` for any other rank.
fn matrix_shape(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [n] => Some((1, *n)),
        [r, c] => Some((*r, *c)),
        _ => None,
    }
}

/// Parses one safetensors file held in memory exactly as [`SafetensorsFolder`] reads each
/// shard (same header reader, dtype and shape rules, bounds checks), returning every tensor
/// as a `[rows, cols]` view, sorted by name. Any tensor that is not an F32/F16/BF16 vector
/// or matrix is an error. The fuzzing entry point: no files needed.
pub fn parse_file_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    tensors_of(Arc::new(Bytes::Owned(bytes.to_vec())))
}

/// Memory-maps one safetensors file and returns its tensors as views, as
/// [`parse_file_bytes`] does (sorted by name; vectors and matrices only).
pub fn map_file(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: read-only map; see GgufFile::open.
    let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
    tensors_of(Arc::new(Bytes::Mmap(m))).map_err(|e| e.in_file(path))
}

/// Like [`map_file`], but integer tensors are left out instead of refused: transformers
/// saves buffers such as BERT's `embeddings.position_ids` (I64) beside the weights.
pub fn map_file_floats(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: read-only map; see GgufFile::open.
    let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
    let file = Arc::new(Bytes::Mmap(m));
    let floats = read_header(&file)
        .map_err(|e| e.in_file(path))?
        .into_iter()
        .filter(|(_, e)| matches!(e.dtype, StDtype::F32 | StDtype::F16 | StDtype::BF16))
        .collect();
    views_of(file, floats).map_err(|e| e.in_file(path))
}

fn tensors_of(file: Arc<Bytes>) -> Result<Vec<(String, Tensor)>> {
    let entries = read_header(&file)?;
    views_of(file, entries)
}

fn views_of(file: Arc<Bytes>, entries: Vec<(String, Entry)>) -> Result<Vec<(String, Tensor)>> {
    entries
        .into_iter()
        .map(|(name, e)| {
            let dtype = dtype_of(&name, e.dtype)?;
            let (rows, cols) = matrix_shape(&e.shape).ok_or_else(|| ModelError::Tensor {
                name: name.clone(),
                what: format!("shape {:?} is not a vector or matrix", e.shape),
            })?;
            let t = Tensor::view(dtype, rows, cols, file.clone(), e.start, e.len)?;
            Ok((name, t))
        })
        .collect()
}

/// The safetensors files of a folder, memory-mapped, with their headers read.
#[derive(Debug)]
pub struct SafetensorsFolder {
    pub config: LlamaConfig,
    files: Vec<Arc<Bytes>>,
    /// Tensor name to shard index and entry; the first shard holding a name wins.
    index: HashMap<String, (usize, Entry)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SafetensorsFolder {
    /// Opens `dir`: reads `config.json`, maps every shard and reads its header.
    pub fn open(dir: &Path) -> Result<SafetensorsFolder> {
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let config = LlamaConfig::from_hf_json(&cfg_text)?;
        let index = dir.join("model.safetensors.index.json");
        let shards: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Invalid(format!("{}: {e}", index.display())))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    ModelError::Invalid(format!("{} has no weight_map", index.display()))
                })?;
            let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names
                .into_iter()
                .map(|n| {
                    // Shard names come from the file: refuse anything that leaves the folder.
                    if n.contains('/') || n.contains('\\') || n.starts_with('.') {
                        Err(ModelError::Invalid(format!(
                            "shard name {n:?} is not a plain file name"
                        )))
                    } else {
                        Ok(dir.join(n))
                    }
                })
                .collect::<Result<_>>()?
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::with_capacity(shards.len());
        let mut tensors: HashMap<String, (usize, Entry)> = HashMap::new();
        for (i, p) in shards.iter().enumerate() {
            let f = std::fs::File::open(p).map_err(io(p))?;
            // SAFETY: read-only map; see GgufFile::open.
            let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(p))?;
            // Read the header now, so later lookups cannot fail on format.
            let entries = read_header(&m)
                .map_err(|e| ModelError::Invalid(format!("{}: {e}", p.display())))?;
            for (name, e) in entries {
                tensors.entry(name).or_insert((i, e));
            }
            files.push(Arc::new(Bytes::Mmap(m)));
        }
        Ok(SafetensorsFolder {
            config,
            files,
            index: tensors,
        })
    }

    /// Finds `name` in the shards (shard index and entry), checking that its dtype is one
    /// we read.
    fn find(&self, name: &str) -> Result<Option<(usize, &Entry, DType)>> {
        let Some((file, entry)) = self.index.get(name) else {
            return Ok(None);
        };
        Ok(Some((*file, entry, dtype_of(name, entry.dtype)?)))
    }

    fn tensor(&self, name: &str, rows: usize, cols: usize) -> Result<Option<Tensor>> {
        let Some((file, entry, dtype)) = self.find(name)? else {
            return Ok(None);
        };
        if matrix_shape(&entry.shape) != Some((rows, cols)) {
            return Err(ModelError::Tensor {
                name: name.into(),
                what: format!("shape {:?}, expected [{rows}, {cols}]", entry.shape),
            });
        }
        let bytes = self.files.get(file).ok_or_else(|| ModelError::Tensor {
            name: name.into(),
            what: format!("shard {file} is missing"),
        })?;
        Ok(Some(Tensor::view(
            dtype,
            rows,
            cols,
            bytes.clone(),
            entry.start,
            entry.len,
        )?))
    }

    fn required(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        self.tensor(name, rows, cols)?
            .ok_or_else(|| ModelError::Tensor {
                name: name.into(),
                what: "missing from the safetensors files".into(),
            })
    }

    /// Maps the folder's tensors onto reference names (`wq`/`wk` and their biases are
    /// permuted back to Meta's layout by [`Weights::assemble`]).
    pub fn weights(&self) -> Result<Weights> {
        let c = &self.config;
        Weights::assemble(c, true, |layer, n, rows, cols, required| {
            // Hugging Face has no rope_freqs tensor: the scaling is in config.json.
            let Some(name) = file_name(Format::HuggingFace, layer, n) else {
                return Ok(None);
            };
            let t = if required {
                self.required(&name, rows, cols)?
            } else {
                match self.tensor(&name, rows, cols)? {
                    Some(t) => t,
                    None => return Ok(None),
                }
            };
            // A missing `lm_head` (`tie_word_embeddings`, as in Qwen2.5 0.5B) means tied.
            Ok(Some(t))
        })
    }
}

/// HF's rotate-half row order back to Meta's adjacent pairs, per head (whole rows move, so
/// any dtype works).
pub fn unpermute(t: &Tensor, n_heads: usize, hd: usize) -> Result<Tensor> {
    let rb = t.data().len() / t.rows.max(1);
    let mut out = vec![0u8; t.data().len()];
    for h in 0..n_heads {
        for j in 0..hd / 2 {
            for (meta, hf) in [(2 * j, j), (2 * j + 1, hd / 2 + j)] {
                let (dst, src) = ((h * hd + meta) * rb, (h * hd + hf) * rb);
                out[dst..dst + rb].copy_from_slice(&t.data()[src..src + rb]);
            }
        }
    }
    Tensor::owned(t.dtype, t.rows, t.cols, out)
}

/// Meta's adjacent pairs to HF's rotate-half order (the inverse of [`unpermute`]), for
/// writing HF folders and for tests.
pub fn permute(t: &Tensor, n_heads: usize, hd: usize) -> Result<Tensor> {
    let rb = t.data().len() / t.rows.max(1);
    let mut out = vec![0u8; t.data().len()];
    for h in 0..n_heads {
        for j in 0..hd / 2 {
            for (meta, hf) in [(2 * j, j), (2 * j + 1, hd / 2 + j)] {
                let (src, dst) = ((h * hd + meta) * rb, (h * hd + hf) * rb);
                out[dst..dst + rb].copy_from_slice(&t.data()[src..src + rb]);
            }
        }
    }
    Tensor::owned(t.dtype, t.rows, t.cols, out)
}
