//! GGUF v3 writer, for fixtures, conversion and quantization.

use std::io::Write;
use std::path::Path;

use ferrollama_tensor::DType;

use super::value::Value;
use crate::error::{ModelError, Result};

/// A GGUF file under construction. Tensors are laid out in insertion order, each aligned.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)>,
}

const ALIGNMENT: usize = 32;

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets a metadata key (replacing an earlier value).
    pub fn set(&mut self, key: &str, v: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.metadata.push((key.to_string(), v)),
        }
    }

    /// Adds a tensor; `dims` in ggml order, `data` already in `dtype`'s layout.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        dtype: DType,
        data: Vec<u8>,
    ) -> Result<()> {
        let bad = |what: String| ModelError::Tensor {
            name: name.to_string(),
            what,
        };
        let first = *dims.first().ok_or_else(|| bad("no dimensions".into()))?;
        let rows: usize = dims[1..].iter().product();
        let want = dtype
            .row_bytes(first)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| bad(format!("row of {first} does not fit {}", dtype.name())))?;
        if data.len() != want {
            return Err(bad(format!("{} bytes given, {want} expected", data.len())));
        }
        if dtype.ggml_id().is_none() {
            return Err(bad(format!("{} cannot be stored in GGUF", dtype.name())));
        }
        self.tensors
            .push((name.to_string(), dims.to_vec(), dtype, data));
        Ok(())
    }

    /// Serializes to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let plan: Vec<PlannedTensor> = self
            .tensors
            .iter()
            .map(|(name, dims, dtype, data)| PlannedTensor {
                name: name.clone(),
                dims: dims.clone(),
                dtype: *dtype,
                bytes: data.len(),
            })
            .collect();
        let (mut out, offsets) = header(&self.metadata, &plan);
        let data_start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Writes to `path` atomically (temporary file, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("gguf.partial");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.to_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// A tensor whose bytes are produced later, by [`write_streamed`].
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order (innermost first).
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// Exact byte size of the data.
    pub bytes: usize,
}

impl PlannedTensor {
    /// A `[rows, cols]` matrix (or a vector when `rows` is 1 and `vector` is set) in
    /// `dtype`, with its size computed and checked.
    pub fn matrix(
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        vector: bool,
    ) -> Result<Self> {
        let bytes = dtype
            .row_bytes(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                what: format!("a row of {cols} does not fit {}", dtype.name()),
            })?;
        if dtype.ggml_id().is_none() {
            return Err(ModelError::Tensor {
                name: name.to_string(),
                what: format!("{} cannot be stored in GGUF", dtype.name()),
            });
        }
        Ok(PlannedTensor {
            name: name.to_string(),
            dims: if vector { vec![cols] } else { vec![cols, rows] },
            dtype,
            bytes,
        })
    }
}

/// Header bytes (padded to the data alignment) and each tensor's data offset.
fn header(metadata: &[(String, Value)], plan: &[PlannedTensor]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&v.type_code().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(plan.len());
    for t in plan {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&t.dtype.ggml_id().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.bytes).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    let data_start = out.len().div_ceil(ALIGNMENT) * ALIGNMENT;
    out.resize(data_start, 0);
    (out, offsets)
}

/// Writes a GGUF file whose tensor data is produced one tensor at a time by `fill(i, buf)`
/// (`buf` arrives empty and must end up exactly `plan[i].bytes` long), so a model larger
/// than memory can be converted. The file appears at `path` only when complete: it is
/// written to `path.partial`, synced, then renamed.
pub fn write_streamed(
    path: &Path,
    metadata: &[(String, Value)],
    plan: &[PlannedTensor],
    mut fill: impl FnMut(usize, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let (head, offsets) = header(metadata, plan);
        w.write_all(&head).map_err(io)?;
        let mut pos = 0usize;
        let mut buf = Vec::new();
        for (i, (t, off)) in plan.iter().zip(offsets).enumerate() {
            w.write_all(&vec![0u8; off - pos]).map_err(io)?;
            buf.clear();
            fill(i, &mut buf)?;
            if buf.len() != t.bytes {
                return Err(ModelError::Tensor {
                    name: t.name.clone(),
                    what: format!("{} bytes produced, {} planned", buf.len(), t.bytes),
                });
            }
            w.write_all(&buf).map_err(io)?;
            pos = off + t.bytes;
        }
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(t, items) => {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
    }
}
