//! Test-only writers of torch.save-style pickles and zips, for hostile inputs and small
//! synthetic checkpoints (the committed fixtures come from `testdata/meta/make_meta.py`).
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A pickle writer for tests: opcodes as torch.save's pickler emits them.
#[derive(Debug, Default)]
pub struct Pkl(pub Vec<u8>);

impl Pkl {
    pub fn new() -> Pkl {
        Pkl(vec![0x80, 2])
    }
    pub fn op(mut self, b: &[u8]) -> Pkl {
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(self, s: &str) -> Pkl {
        let mut p = self.op(b"X");
        p.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.op(s.as_bytes())
    }
    pub fn int(self, v: i64) -> Pkl {
        let mut p = self.op(&[0x8a, 8]);
        p.0.extend_from_slice(&v.to_le_bytes());
        p
    }
    pub fn global(self, module: &str, name: &str) -> Pkl {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    pub fn ints(self, v: &[i64]) -> Pkl {
        let mut p = self.op(b"(");
        for &x in v {
            p = p.int(x);
        }
        p.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`.
    pub fn tensor(
        self,
        kind: &str,
        key: &str,
        numel: i64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> Pkl {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", kind)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")Rt")
            .op(b"R")
    }
    pub fn done(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// A torch-style zip: `archive/data.pkl`, the given records under `archive/`.
pub fn torch_zip(pkl: &[u8], records: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    let opts = SimpleFileOptions::default().compression_method(method);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    for (name, data) in records {
        z.start_file(format!("archive/{name}"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A whole checkpoint: a dict of contiguous tensors `(name, torch storage class, shape,
/// little-endian bytes)`, each in its own storage.
pub fn state_dict(tensors: &[(&str, &str, &[i64], Vec<u8>)]) -> Vec<u8> {
    let mut p = Pkl::new().op(b"}");
    let mut records = Vec::new();
    for (i, (name, kind, shape, data)) in tensors.iter().enumerate() {
        let mut stride = vec![1i64; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        let numel: i64 = shape.iter().product();
        p = p
            .str(name)
            .tensor(kind, &i.to_string(), numel, 0, shape, &stride)
            .op(b"s");
        records.push((format!("data/{i}"), data.clone()));
    }
    let refs: Vec<(&str, &[u8])> = records
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    torch_zip(&p.done(), &refs, false)
}
