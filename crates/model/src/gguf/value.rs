//! GGUF metadata values and typed access to them.

use crate::error::{ModelError, Result};

/// GGUF value type codes.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Element type code and the elements (all of that type).
    Array(u32, Vec<Value>),
}

impl Value {
    /// The type code of this value.
    pub fn type_code(&self) -> u32 {
        match self {
            Value::U8(_) => ty::U8,
            Value::I8(_) => ty::I8,
            Value::U16(_) => ty::U16,
            Value::I16(_) => ty::I16,
            Value::U32(_) => ty::U32,
            Value::I32(_) => ty::I32,
            Value::F32(_) => ty::F32,
            Value::Bool(_) => ty::BOOL,
            Value::String(_) => ty::STRING,
            Value::U64(_) => ty::U64,
            Value::I64(_) => ty::I64,
            Value::F64(_) => ty::F64,
            Value::Array(..) => ty::ARRAY,
        }
    }

    /// Any integer type as u64, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any float or integer as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }
}

/// Typed getters over a metadata list, with errors naming the key.
pub trait MetadataExt {
    fn get_value(&self, key: &str) -> Option<&Value>;

    fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get_value(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get_value(key)
            .map(|v| v.as_f64().ok_or_else(|| wrong(key, "a number", v)))
            .transpose()
    }

    fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.get_value(key)
            .map(|v| v.as_str().ok_or_else(|| wrong(key, "a string", v)))
            .transpose()
    }

    fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get_value(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong(key, "a bool", v)))
            .transpose()
    }

    fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        self.get_value(key)
            .map(|v| v.as_array().ok_or_else(|| wrong(key, "an array", v)))
            .transpose()
    }

    /// A required non-negative integer that fits in usize.
    fn require_usize(&self, key: &str) -> Result<usize> {
        let v = self.get_u64(key)?.ok_or_else(|| ModelError::Metadata {
            key: key.into(),
            what: "missing".into(),
        })?;
        usize::try_from(v).map_err(|_| ModelError::Metadata {
            key: key.into(),
            what: format!("{v} is too large"),
        })
    }
}

fn wrong(key: &str, want: &str, got: &Value) -> ModelError {
    ModelError::Metadata {
        key: key.into(),
        what: format!("expected {want}, found type {}", got.type_code()),
    }
}
