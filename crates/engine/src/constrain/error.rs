//! Why a schema cannot be used for constrained decoding.

/// A schema we refuse to compile. Pointers are JSON pointers into the schema document,
/// written as URI fragments (`#/properties/name/pattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// A keyword that restricts which values are valid but that we cannot enforce while
    /// generating.
    #[error("unsupported JSON Schema keyword `{keyword}` at {pointer}: {reason}")]
    Unsupported {
        keyword: String,
        pointer: String,
        reason: String,
    },
    /// Malformed schema (wrong type for a keyword, unresolvable `$ref`, ...).
    #[error("invalid JSON Schema at {pointer}: {message}")]
    Invalid { pointer: String, message: String },
    #[error("JSON Schema too large: more than {limit} subschemas, properties and enum values")]
    TooLarge { limit: usize },
    #[error("JSON Schema nested more than {limit} levels deep at {pointer}")]
    TooDeep { limit: usize, pointer: String },
    /// No JSON value (within the nesting limit) satisfies the schema, so generation could
    /// never finish.
    #[error("no JSON value nested at most {limit} levels deep satisfies the schema at {pointer}")]
    Unsatisfiable { limit: u32, pointer: String },
}
