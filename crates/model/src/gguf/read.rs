//! GGUF v2/v3 reader.
//!
//! A GGUF file is a header (magic, version, counts), metadata key/value pairs, tensor
//! descriptors (name, dims in ggml order, type, offset), then the tensor data, aligned to
//! `general.alignment` (default 32). The file is memory-mapped; tensors are views into it.
//!
//! Every count, length and offset is checked against the bytes that remain before it is
//! used, so a crafted file yields an error, never a panic or a huge allocation: a claimed
//! count of 2^60 strings fails on the first string that runs past the end.

use std::path::Path;
use std::sync::Arc;

use ferrollama_tensor::DType;

use super::value::{MetadataExt, Value, ty};
use crate::error::{ModelError, Result};

/// Bytes of a GGUF file: a memory map, or owned bytes (tests, fuzzing).
#[derive(Debug)]
pub enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// One tensor's descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// Absolute byte range of the data in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// (rows, cols) viewing the tensor as a matrix of `dims[0]`-long rows.
    pub fn matrix_shape(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1);
        (self.n_elements() / cols.max(1), cols)
    }
}

/// A parsed GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    bytes: Arc<Bytes>,
}

impl MetadataExt for GgufFile {
    fn get_value(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only. Another process truncating the file while we run
        // would fault, which every mmap-based loader (llama.cpp included) accepts; we never
        // hand out the map as mutable.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::parse(Bytes::Mmap(map))
    }

    /// Parses bytes already in memory.
    pub fn parse(bytes: Bytes) -> Result<GgufFile> {
        let bytes = Arc::new(bytes);
        let mut r = Reader { b: &bytes, pos: 0 };
        let magic: [u8; 4] = r.take(4)?.try_into().map_err(|_| r.err("short magic"))?;
        if &magic != b"GGUF" {
            return Err(ModelError::NotGguf(magic));
        }
        let version = r.u32()?;
        if version != 2 && version != 3 {
            return Err(ModelError::GgufVersion(version));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each kv needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor at least 8+4+4+8.
        r.check_count(n_kv, 13, "metadata count")?;
        r.check_count(n_tensors, 24, "tensor count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string()?;
            let t = r.u32()?;
            let v = r.value(t, 0)?;
            metadata.push((key, v));
        }
        let mut file = GgufFile {
            version,
            metadata,
            tensors: Vec::new(),
            alignment: 32,
            bytes: bytes.clone(),
        };
        if let Some(a) = file.get_u64("general.alignment")? {
            if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                return Err(ModelError::Metadata {
                    key: "general.alignment".into(),
                    what: format!("{a} is not a power of two up to 1 MiB"),
                });
            }
            file.alignment = a as usize;
        }

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = r.pos;
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.err_at(at, &format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64()?;
                let d = usize::try_from(d)
                    .ok()
                    .filter(|&d| d > 0 && d <= 1 << 40)
                    .ok_or_else(|| r.err_at(at, &format!("tensor {name:?} dimension {d}")))?;
                dims.push(d);
            }
            let t = r.u32()?;
            let dtype = DType::from_ggml(t).ok_or_else(|| ModelError::Tensor {
                name: name.clone(),
                what: format!("ggml type {t} is not supported"),
            })?;
            let offset = r.u64()?;
            raw.push((at, name, dims, dtype, offset));
        }
        let data_start =
            align_up(r.pos, file.alignment).ok_or_else(|| r.err("data offset overflows"))?;
        if data_start > bytes.len() && !raw.is_empty() {
            return Err(r.err("file ends before the tensor data"));
        }
        for (at, name, dims, dtype, offset) in raw {
            let tensor_err = |what: String| ModelError::Tensor {
                name: name.clone(),
                what,
            };
            let n: usize = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| tensor_err("element count overflows".into()))?;
            let row = dtype.row_bytes(dims[0]).ok_or_else(|| {
                tensor_err(format!(
                    "row length {} does not fit {} blocks",
                    dims[0],
                    dtype.name()
                ))
            })?;
            let len = row
                .checked_mul(n / dims[0])
                .ok_or_else(|| tensor_err("byte size overflows".into()))?;
            let offset =
                usize::try_from(offset).map_err(|_| tensor_err("offset overflows".into()))?;
            if offset % file.alignment != 0 {
                return Err(r.err_at(
                    at,
                    &format!("tensor {name:?} offset {offset} is not aligned"),
                ));
            }
            let start = data_start
                .checked_add(offset)
                .ok_or_else(|| tensor_err("offset overflows".into()))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| tensor_err("offset overflows".into()))?;
            if end > bytes.len() {
                return Err(tensor_err(format!(
                    "data [{start}, {end}) runs past the end of the file ({} bytes); the file is truncated",
                    bytes.len()
                )));
            }
            file.tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                start,
                len,
            });
        }
        let mut names: Vec<&str> = file.tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ModelError::Tensor {
                name: w[0].to_string(),
                what: "appears twice".into(),
            });
        }
        Ok(file)
    }

    /// The descriptor of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        // In range: checked at parse time.
        &self.bytes[t.start..t.start + t.len]
    }

    /// Shared handle on the underlying bytes (tensors borrow from it).
    pub fn bytes(&self) -> &Arc<Bytes> {
        &self.bytes
    }
}

fn align_up(x: usize, a: usize) -> Option<usize> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

const MAX_DEPTH: usize = 2;

impl Reader<'_> {
    fn err(&self, what: &str) -> ModelError {
        self.err_at(self.pos, what)
    }

    fn err_at(&self, offset: usize, what: &str) -> ModelError {
        ModelError::Corrupt {
            offset,
            what: what.to_string(),
        }
    }

    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(self.err(&format!("needs {n} bytes, {} left", self.remaining())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Rejects counts that could not fit in the remaining bytes at `min_bytes` each.
    fn check_count(&self, n: u64, min_bytes: u64, what: &str) -> Result<()> {
        if n.saturating_mul(min_bytes) > self.remaining() as u64 {
            return Err(self.err(&format!("{what} {n} is larger than the file allows")));
        }
        Ok(())
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }

    fn string(&mut self) -> Result<String> {
        let at = self.pos;
        let n = self.u64()?;
        if n > self.remaining() as u64 {
            return Err(self.err_at(at, &format!("string of {n} bytes runs past the end")));
        }
        let s = self.take(n as usize)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err_at(at, "string is not valid UTF-8"))
    }

    fn value(&mut self, t: u32, depth: usize) -> Result<Value> {
        Ok(match t {
            ty::U8 => Value::U8(self.arr::<1>()?[0]),
            ty::I8 => Value::I8(i8::from_le_bytes(self.arr()?)),
            ty::U16 => Value::U16(u16::from_le_bytes(self.arr()?)),
            ty::I16 => Value::I16(i16::from_le_bytes(self.arr()?)),
            ty::U32 => Value::U32(self.u32()?),
            ty::I32 => Value::I32(i32::from_le_bytes(self.arr()?)),
            ty::F32 => Value::F32(f32::from_le_bytes(self.arr()?)),
            ty::BOOL => match self.arr::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(&format!("bool byte {b}"))),
            },
            ty::STRING => Value::String(self.string()?),
            ty::U64 => Value::U64(self.u64()?),
            ty::I64 => Value::I64(i64::from_le_bytes(self.arr()?)),
            ty::F64 => Value::F64(f64::from_le_bytes(self.arr()?)),
            ty::ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("arrays nested too deeply"));
                }
                let et = self.u32()?;
                let n = self.u64()?;
                let min = match et {
                    ty::U8 | ty::I8 | ty::BOOL => 1,
                    ty::U16 | ty::I16 => 2,
                    ty::U32 | ty::I32 | ty::F32 => 4,
                    ty::U64 | ty::I64 | ty::F64 | ty::STRING => 8,
                    ty::ARRAY => 12,
                    other => return Err(self.err(&format!("array of unknown type {other}"))),
                };
                self.check_count(n, min, "array length")?;
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(et, depth + 1)?);
                }
                Value::Array(et, v)
            }
            other => return Err(self.err(&format!("unknown value type {other}"))),
        })
    }
}
