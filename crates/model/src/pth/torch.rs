//! The torch side of a `torch.save` pickle: which globals may appear, and what the few
//! "calls" that rebuild tensors mean, interpreted structurally.
//!
//! `torch.save` pickles a tensor as `torch._utils._rebuild_tensor_v2(storage,
//! storage_offset, size, stride, requires_grad, backward_hooks[, metadata])` (see
//! `Tensor._reduce_ex_internal`), a `Parameter` as `_rebuild_parameter(tensor, ...)`, a
//! `state_dict` as `collections.OrderedDict()`, and each storage as the persistent id
//! `('storage', torch.<Type>Storage, key, location, numel)` whose bytes are the archive
//! record `data/<key>` (torch/serialization.py `_save`). Those are the only globals
//! [`find_class`] resolves; [`reduce`] and [`persistent_load`] turn them into records, and
//! nothing else is accepted.

use super::pickle::Value;

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDtype::F64 | TorchDtype::I64 => 8,
            TorchDtype::F32 | TorchDtype::I32 => 4,
            TorchDtype::F16 | TorchDtype::BF16 | TorchDtype::I16 => 2,
            TorchDtype::I8 | TorchDtype::U8 | TorchDtype::Bool => 1,
        }
    }

    /// torch's name (`torch.bfloat16`).
    pub fn name(self) -> &'static str {
        match self {
            TorchDtype::F64 => "float64",
            TorchDtype::F32 => "float32",
            TorchDtype::F16 => "float16",
            TorchDtype::BF16 => "bfloat16",
            TorchDtype::I64 => "int64",
            TorchDtype::I32 => "int32",
            TorchDtype::I16 => "int16",
            TorchDtype::I8 => "int8",
            TorchDtype::U8 => "uint8",
            TorchDtype::Bool => "bool",
        }
    }

    /// The dtype our kernels read, for the float types models are stored in.
    pub fn to_dtype(self) -> Option<ferrollama_tensor::DType> {
        use ferrollama_tensor::DType;
        match self {
            TorchDtype::F32 => Some(DType::F32),
            TorchDtype::F16 => Some(DType::F16),
            TorchDtype::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
}

/// An allowlisted global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`
    RebuildParameter,
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch.<Type>Storage`, named in storage persistent ids.
    Storage(TorchDtype),
    /// `torch.<dtype>`, which newer pickles may carry as plain values.
    Dtype(TorchDtype),
}

/// Resolves `module.name` if it is on the allowlist; `None` (an error naming the global)
/// for everything else.
pub fn find_class(module: &str, name: &str) -> Option<Global> {
    use TorchDtype::*;
    let storage = |n: &str| {
        Some(match n {
            "DoubleStorage" => F64,
            "FloatStorage" => F32,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => Bool,
            _ => return None,
        })
    };
    let dtype = |n: &str| {
        Some(match n {
            "float64" | "double" => F64,
            "float32" | "float" => F32,
            "float16" | "half" => F16,
            "bfloat16" => BF16,
            "int64" | "long" => I64,
            "int32" | "int" => I32,
            "int16" | "short" => I16,
            "int8" => I8,
            "uint8" => U8,
            "bool" => Bool,
            _ => return None,
        })
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch", n) => storage(n)
            .map(Global::Storage)
            .or_else(|| dtype(n).map(Global::Dtype)),
        _ => None,
    }
}

/// A storage named by a persistent id: its element type, archive key and element count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub dtype: TorchDtype,
    pub key: String,
    pub numel: u64,
}

/// A tensor record: a strided view (in elements) of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// Most dimensions a tensor record may have.
const MAX_DIMS: usize = 16;

/// `BINPERSID`: `('storage', torch.<Type>Storage, key, location, numel)`.
pub fn persistent_load(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    match items.as_slice() {
        [
            Value::Str(tag),
            Value::Global(Global::Storage(dtype)),
            Value::Str(key),
            Value::Str(_location),
            Value::Int(numel),
        ] if tag == "storage" => Ok(StorageRef {
            dtype: *dtype,
            key: key.clone(),
            numel: u64::try_from(*numel).map_err(|_| format!("storage numel {numel}"))?,
        }),
        _ => Err(format!(
            "persistent id ({}) is not ('storage', torch.<Type>Storage, key, location, numel)",
            items.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn dims(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    let (Value::Tuple(items) | Value::List(items)) = v else {
        return Err(format!("tensor {what} is a {}, not a tuple", v.kind()));
    };
    if items.len() > MAX_DIMS {
        return Err(format!(
            "tensor {what} has {} dimensions (at most {MAX_DIMS})",
            items.len()
        ));
    }
    items
        .iter()
        .map(|d| match d {
            Value::Int(n) => u64::try_from(*n).map_err(|_| format!("tensor {what} holds {n}")),
            other => Err(format!("tensor {what} holds a {}", other.kind())),
        })
        .collect()
}

/// `REDUCE`: "calls" an allowlisted global by building the record it describes.
pub fn reduce(f: Global, args: Vec<Value>) -> Result<Value, String> {
    match f {
        Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Global::OrderedDict => Err("OrderedDict called with arguments".into()),
        Global::RebuildTensorV2 => {
            if !(6..=7).contains(&args.len()) {
                return Err(format!(
                    "_rebuild_tensor_v2 with {} arguments (expects 6 or 7)",
                    args.len()
                ));
            }
            let mut it = args.into_iter();
            let (storage, offset, size, stride) = (it.next(), it.next(), it.next(), it.next());
            let Some(Value::Storage(storage)) = storage else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let offset = match offset {
                Some(Value::Int(o)) => {
                    u64::try_from(o).map_err(|_| format!("storage offset {o}"))?
                }
                _ => return Err("_rebuild_tensor_v2 storage offset is not an int".into()),
            };
            let shape = dims(&size.unwrap_or(Value::None), "size")?;
            let stride = dims(&stride.unwrap_or(Value::None), "stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "tensor size {shape:?} and stride {stride:?} differ in length"
                ));
            }
            // requires_grad, backward_hooks and metadata do not change the data.
            Ok(Value::Tensor(TensorRef {
                storage,
                offset,
                shape,
                stride,
            }))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::Storage(d) => Err(format!("torch storage type {} called", d.name())),
        Global::Dtype(d) => Err(format!("torch.{} called", d.name())),
    }
}

/// Where a contiguous tensor's bytes lie in its storage: `(byte offset, byte length)`.
///
/// Only row-major contiguous tensors are accepted, with torch's own definition
/// (`is_contiguous`): strides of size-1 dimensions do not matter, and an empty tensor is
/// contiguous. The element range must lie inside the storage; all arithmetic is checked.
pub fn byte_span(t: &TensorRef) -> Result<(usize, usize), String> {
    let overflow = || format!("tensor size {:?} overflows", t.shape);
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    if numel > 0 {
        let mut expected = 1u64;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expected {
                return Err(format!(
                    "tensor size {:?} stride {:?} is not contiguous row-major (a transposed or \
                     sliced view); save it with .contiguous()",
                    t.shape, t.stride
                ));
            }
            expected = expected.checked_mul(d).ok_or_else(overflow)?;
        }
    }
    let end = t.offset.checked_add(numel).ok_or_else(overflow)?;
    if end > t.storage.numel {
        return Err(format!(
            "tensor size {:?} at offset {} needs elements up to {end}, but its storage {} has {}",
            t.shape, t.offset, t.storage.key, t.storage.numel
        ));
    }
    let size = t.storage.dtype.size() as u64;
    let start = t.offset.checked_mul(size).ok_or_else(overflow)?;
    let len = numel.checked_mul(size).ok_or_else(overflow)?;
    match (usize::try_from(start), usize::try_from(len)) {
        (Ok(s), Ok(l)) => Ok((s, l)),
        _ => Err(overflow()),
    }
}
