//! PyTorch checkpoints (`torch.save` zip files, e.g. Meta's `consolidated.00.pth`), read
//! without Python and without ever running pickled code.
//!
//! A checkpoint is a zip ([`archive`]) holding a pickle (`data.pkl`) that describes a dict
//! of tensors, and one raw record per storage. The pickle is read by a restricted machine
//! ([`pickle`]) that knows only the opcodes `torch.save` writes and, as globals, only the
//! handful of torch names that rebuild tensors ([`torch`]), interpreted structurally. The
//! result is a list of named tensors whose bytes stay in the memory-mapped file (torch
//! stores records uncompressed and 64-byte aligned), so a 16 GB shard costs no copy.
//!
//! Only row-major contiguous tensors are accepted (what `state_dict()` holds); each one's
//! element range is checked against its storage, and each storage against its record.
//! Malformed input of any kind is an error, never a panic: [`parse_bytes`] is the entry
//! point for fuzzing.

mod archive;
mod pickle;
mod torch;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;

pub use torch::TorchDtype;

use crate::error::{ModelError, Result};
use crate::gguf::Bytes;
use crate::weights::Tensor;
use archive::{Archive, Record};
use pickle::Value;

/// One named tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct PthTensor {
    pub name: String,
    pub dtype: TorchDtype,
    /// Row-major dimensions (`[]` for a scalar).
    pub shape: Vec<usize>,
    bytes: Arc<Bytes>,
    start: usize,
    len: usize,
}

impl PthTensor {
    /// The tensor's bytes, little-endian, row-major.
    pub fn data(&self) -> &[u8] {
        // In range: checked against the record when the tensor was resolved.
        &self.bytes[self.start..self.start + self.len]
    }

    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor as a `[rows, cols]` matrix view without copying: 2-D as it is, 1-D as
    /// one row. Float types only (F32, F16, BF16).
    pub fn to_tensor(&self) -> Result<Tensor> {
        let bad = |what: String| ModelError::Tensor {
            name: self.name.clone(),
            what,
        };
        let dtype = self.dtype.to_dtype().ok_or_else(|| {
            bad(format!(
                "dtype {} is not a weight type (float32, float16 and bfloat16 are)",
                self.dtype.name()
            ))
        })?;
        let (rows, cols) = match self.shape.as_slice() {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            other => return Err(bad(format!("shape {other:?} is not a vector or matrix"))),
        };
        Tensor::view(dtype, rows, cols, self.bytes.clone(), self.start, self.len)
    }
}

/// A parsed checkpoint: its tensors in pickle order.
#[derive(Debug, Clone)]
pub struct PthFile {
    tensors: Vec<PthTensor>,
    index: FxHashMap<String, usize>,
}

/// Parses a whole checkpoint held in memory (the fuzzing entry point: no files needed).
pub fn parse_bytes(bytes: &[u8]) -> Result<PthFile> {
    PthFile::parse(Bytes::Owned(bytes.to_vec()))
}

impl PthFile {
    /// Memory-maps and parses `path`; errors name the file.
    pub fn open(path: &Path) -> Result<PthFile> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: read-only map; see GgufFile::open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        PthFile::parse(Bytes::Mmap(map)).map_err(|e| e.in_file(path))
    }

    /// Parses a checkpoint's bytes.
    pub fn parse(bytes: Bytes) -> Result<PthFile> {
        let file = Arc::new(bytes);
        let mut archive = Archive::open(&file)?;
        if let Some(order) = archive.record("byteorder")?
            && order.data() != b"little"
        {
            return Err(ModelError::Archive(format!(
                "byteorder {:?}: only little-endian checkpoints are read",
                String::from_utf8_lossy(order.data())
            )));
        }
        let pkl = archive.pickle()?;
        let root = pickle::load(pkl.data())?;
        let Value::Dict(items) = root else {
            return Err(ModelError::Archive(format!(
                "data.pkl holds a {}, not a dict of tensors (a state_dict)",
                root.kind()
            )));
        };
        let mut storages: FxHashMap<String, Record> = FxHashMap::default();
        let mut tensors = Vec::new();
        let mut index = FxHashMap::default();
        for (k, v) in items {
            let Value::Str(name) = k else {
                return Err(ModelError::Archive(format!(
                    "state_dict key is a {}, not a str",
                    k.kind()
                )));
            };
            // Non-tensor entries (e.g. a training step count) carry no weights.
            let Value::Tensor(t) = v else {
                continue;
            };
            let bad = |what: String| ModelError::Tensor {
                name: name.clone(),
                what,
            };
            let (offset, len) = torch::byte_span(&t).map_err(bad)?;
            let key = &t.storage.key;
            let record = match storages.get(key) {
                Some(r) => r.clone(),
                None => {
                    let r = archive
                        .record(&format!("data/{key}"))?
                        .ok_or_else(|| bad(format!("storage record data/{key} is missing")))?;
                    storages.insert(key.clone(), r.clone());
                    r
                }
            };
            // Checked for every tensor, not once per storage: two persistent ids may name
            // the same record with different types or counts.
            let claimed = t.storage.numel.checked_mul(t.storage.dtype.size() as u64);
            if claimed != Some(record.len as u64) {
                return Err(bad(format!(
                    "storage data/{key} holds {} bytes, but the pickle says {} {} elements",
                    record.len,
                    t.storage.numel,
                    t.storage.dtype.name()
                )));
            }
            if offset.checked_add(len).is_none_or(|end| end > record.len) {
                return Err(bad(format!(
                    "bytes [{offset}, +{len}) lie outside storage data/{key} ({} bytes)",
                    record.len
                )));
            }
            let shape = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d}"))))
                .collect::<Result<Vec<_>>>()?;
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad("appears twice".into()));
            }
            tensors.push(PthTensor {
                name,
                dtype: t.storage.dtype,
                shape,
                bytes: record.bytes,
                start: record.start + offset,
                len,
            });
        }
        Ok(PthFile { tensors, index })
    }

    /// All tensors, in the order the pickle lists them.
    pub fn tensors(&self) -> &[PthTensor] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&PthTensor> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }
}
