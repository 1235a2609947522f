//! Vector stores' domain: stores, their files (with ingestion status), chunks, attribute
//! filters and search requests, in the shapes of OpenAI's vector store API. No storage and
//! no HTTP here: backends implement [`crate::store::Store`]'s vector-store half, the server
//! maps these to JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A fresh vector store id: `vs_` and 24 hex digits.
pub fn new_vector_store_id() -> String {
    let f = crate::files::new_file_id();
    format!("vs_{}", f.trim_start_matches("file-"))
}

/// Whether `id` has the shape [`new_vector_store_id`] makes.
pub fn is_vector_store_id(id: &str) -> bool {
    id.strip_prefix("vs_").is_some_and(|hex| {
        hex.len() == 24 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `expires_after`: the store expires `days` after it was last active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiresAfter {
    /// Always `last_active_at`.
    pub anchor: Anchor,
    pub days: u32,
}

/// The one anchor OpenAI defines, as a type so a bad one fails to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anchor {
    #[serde(rename = "last_active_at")]
    LastActiveAt,
}

/// One vector store's row.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorStore {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_active_at: i64,
    pub metadata: Map<String, Value>,
    pub expires_after: Option<ExpiresAfter>,
    /// The embedding model every chunk of the store was embedded with.
    pub embedding_model: String,
    pub embedding_dimension: usize,
    pub file_counts: FileCounts,
    /// Bytes of chunk text stored.
    pub usage_bytes: u64,
}

impl VectorStore {
    /// Unix seconds after which the store is expired, if it expires.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_after
            .map(|e| self.last_active_at + i64::from(e.days) * 86_400)
    }

    /// `completed` when no file is being ingested, else `in_progress`; `expired` past
    /// [`VectorStore::expires_at`].
    pub fn status(&self, now: i64) -> &'static str {
        match self.expires_at() {
            Some(t) if t <= now => "expired",
            _ if self.file_counts.in_progress > 0 => "in_progress",
            _ => "completed",
        }
    }
}

/// Files of a store by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FileCounts {
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub total: u64,
}

/// A file's ingestion state in one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::InProgress => "in_progress",
            FileStatus::Completed => "completed",
            FileStatus::Failed => "failed",
            FileStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<FileStatus> {
        Some(match s {
            "in_progress" => FileStatus::InProgress,
            "completed" => FileStatus::Completed,
            "failed" => FileStatus::Failed,
            "cancelled" => FileStatus::Cancelled,
            _ => return None,
        })
    }
}

/// How a file is cut into chunks, in the embedding model's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    pub max_chunk_size_tokens: usize,
    pub chunk_overlap_tokens: usize,
    /// `auto` (OpenAI's defaults, 800/400) rather than `static`.
    pub auto: bool,
}

impl Chunking {
    /// OpenAI's `auto`: 800-token chunks overlapping by 400.
    pub const AUTO: Chunking = Chunking {
        max_chunk_size_tokens: 800,
        chunk_overlap_tokens: 400,
        auto: true,
    };

    /// A `static` strategy, checked as OpenAI does: size 100..=4096, overlap at most half.
    pub fn fixed(max: usize, overlap: usize) -> Result<Chunking, String> {
        if !(100..=4096).contains(&max) {
            return Err(format!(
                "max_chunk_size_tokens must be between 100 and 4096, not {max}"
            ));
        }
        if overlap > max / 2 {
            return Err(format!(
                "chunk_overlap_tokens ({overlap}) must not exceed half of max_chunk_size_tokens ({max})"
            ));
        }
        Ok(Chunking {
            max_chunk_size_tokens: max,
            chunk_overlap_tokens: overlap,
            auto: false,
        })
    }
}

/// Why a file failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// `server_error`, `unsupported_file` or `invalid_file` (OpenAI's codes).
    pub code: String,
    pub message: String,
}

/// One file in one store.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorStoreFile {
    /// The file's id (`file-...`).
    pub id: String,
    pub vector_store_id: String,
    pub created_at: i64,
    pub status: FileStatus,
    pub last_error: Option<LastError>,
    pub attributes: Map<String, Value>,
    pub chunking: Chunking,
    /// Bytes of chunk text stored for it.
    pub usage_bytes: u64,
    /// Name of the file (kept so search results and citations can show it after the
    /// file itself is deleted).
    pub filename: String,
}

/// A chunk to store: its text, where it sits in the file, and its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub text: String,
    pub tokens: usize,
    pub embedding: Vec<f32>,
    /// Llama Stack's per-chunk metadata (`document_id`, `token_count`, ...); empty for
    /// chunks of OpenAI vector store files.
    pub metadata: Map<String, Value>,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: i64,
    pub file_id: String,
    pub filename: String,
    pub attributes: Map<String, Value>,
    pub text: String,
    /// The chunk's own metadata (see [`NewChunk::metadata`]).
    pub metadata: Map<String, Value>,
    /// Higher is better, in [0, 1] (cosine for vector search, normalized for the others).
    pub score: f32,
}

/// How a search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    #[default]
    Vector,
    Keyword,
    Hybrid,
}

impl SearchMode {
    pub fn parse(s: &str) -> Option<SearchMode> {
        Some(match s {
            "vector" => SearchMode::Vector,
            "keyword" => SearchMode::Keyword,
            "hybrid" => SearchMode::Hybrid,
            _ => return None,
        })
    }
}

/// OpenAI's attribute filters: a comparison or a compound of filters.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        op: CompareOp,
        key: String,
        value: Value,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Filters nest at most this deep (a request cannot make the evaluator recurse without
/// bound).
pub const MAX_FILTER_DEPTH: usize = 8;

impl Filter {
    /// Parses `{"type": "eq", "key", "value"}` / `{"type": "and"|"or", "filters": [...]}`.
    pub fn parse(v: &Value) -> Result<Filter, String> {
        Filter::parse_at(v, 0)
    }

    fn parse_at(v: &Value, depth: usize) -> Result<Filter, String> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(format!(
                "filters nest deeper than {MAX_FILTER_DEPTH} levels"
            ));
        }
        let obj = v
            .as_object()
            .ok_or("a filter must be an object with a \"type\"")?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or("a filter needs a \"type\" (eq, ne, gt, gte, lt, lte, and, or)")?;
        let op = match kind {
            "and" | "or" => {
                let list = obj
                    .get("filters")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("an \"{kind}\" filter needs a \"filters\" list"))?;
                if list.is_empty() {
                    return Err(format!("an \"{kind}\" filter needs at least one filter"));
                }
                let fs = list
                    .iter()
                    .map(|f| Filter::parse_at(f, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(if kind == "and" {
                    Filter::And(fs)
                } else {
                    Filter::Or(fs)
                });
            }
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "gt" => CompareOp::Gt,
            "gte" => CompareOp::Gte,
            "lt" => CompareOp::Lt,
            "lte" => CompareOp::Lte,
            other => {
                return Err(format!(
                    "unknown filter type {other:?} (eq, ne, gt, gte, lt, lte, and, or)"
                ));
            }
        };
        let key = obj
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("a \"{kind}\" filter needs a string \"key\""))?;
        let value = obj
            .get("value")
            .cloned()
            .ok_or_else(|| format!("a \"{kind}\" filter needs a \"value\""))?;
        if !(value.is_string() || value.is_number() || value.is_boolean()) {
            return Err(format!(
                "filter value for {key:?} must be a string, number or boolean"
            ));
        }
        if matches!(
            op,
            CompareOp::Gt | CompareOp::Gte | CompareOp::Lt | CompareOp::Lte
        ) && value.is_boolean()
        {
            return Err(format!("{kind} cannot compare booleans ({key:?})"));
        }
        Ok(Filter::Compare {
            op,
            key: key.to_string(),
            value,
        })
    }

    /// Every attribute key the filter names.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Filter::Compare { key, .. } => vec![key.as_str()],
            Filter::And(fs) | Filter::Or(fs) => fs.iter().flat_map(Filter::keys).collect(),
        }
    }

    /// Whether `attrs` pass. A missing key fails every comparison but `ne`.
    pub fn matches(&self, attrs: &Map<String, Value>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(attrs)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(attrs)),
            Filter::Compare { op, key, value } => {
                let Some(have) = attrs.get(key) else {
                    return *op == CompareOp::Ne;
                };
                let ord = match (have, value) {
                    (Value::Number(a), Value::Number(b)) => a
                        .as_f64()
                        .zip(b.as_f64())
                        .and_then(|(a, b)| a.partial_cmp(&b)),
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                use std::cmp::Ordering::*;
                match (op, ord) {
                    (CompareOp::Eq, o) => o == Some(Equal),
                    (CompareOp::Ne, o) => o != Some(Equal),
                    (_, None) => false,
                    (CompareOp::Gt, Some(o)) => o == Greater,
                    (CompareOp::Gte, Some(o)) => o != Less,
                    (CompareOp::Lt, Some(o)) => o == Less,
                    (CompareOp::Lte, Some(o)) => o != Greater,
                }
            }
        }
    }
}

/// Checks file attributes as OpenAI does: at most 16 keys of at most 64 characters, values
/// strings (at most 512 characters), numbers or booleans.
pub fn check_attributes(attrs: &Map<String, Value>) -> Result<(), String> {
    if attrs.len() > 16 {
        return Err(format!("at most 16 attributes, got {}", attrs.len()));
    }
    for (k, v) in attrs {
        if k.is_empty() || k.chars().count() > 64 {
            return Err(format!("attribute key {k:?} must be 1 to 64 characters"));
        }
        match v {
            Value::String(s) if s.chars().count() > 512 => {
                return Err(format!(
                    "attribute {k:?}: strings are at most 512 characters"
                ));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(format!(
                    "attribute {k:?} must be a string, number or boolean"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn filters_compare_and_combine() {
        let a = attrs(json!({"author": "ann", "year": 2021, "draft": false}));
        let f = |v: Value| Filter::parse(&v).map(|f| f.matches(&a));
        assert_eq!(
            f(json!({"type": "eq", "key": "author", "value": "ann"})),
            Ok(true)
        );
        assert_eq!(
            f(json!({"type": "gte", "key": "year", "value": 2021})),
            Ok(true)
        );
        assert_eq!(
            f(json!({"type": "gt", "key": "year", "value": 2021.5})),
            Ok(false)
        );
        assert_eq!(
            f(json!({"type": "ne", "key": "missing", "value": 1})),
            Ok(true)
        );
        assert_eq!(
            f(json!({"type": "eq", "key": "missing", "value": 1})),
            Ok(false)
        );
        assert_eq!(
            f(json!({"type": "eq", "key": "year", "value": "2021"})),
            Ok(false)
        );
        assert_eq!(
            f(json!({"type": "and", "filters": [
                {"type": "eq", "key": "draft", "value": false},
                {"type": "or", "filters": [
                    {"type": "lt", "key": "year", "value": 2000},
                    {"type": "eq", "key": "author", "value": "ann"}]}]})),
            Ok(true)
        );
        for bad in [
            json!({"type": "like", "key": "a", "value": 1}),
            json!({"type": "eq", "value": 1}),
            json!({"type": "eq", "key": "a", "value": [1]}),
            json!({"type": "gt", "key": "a", "value": true}),
            json!({"type": "and", "filters": []}),
            json!("eq"),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
        let mut deep = json!({"type": "eq", "key": "a", "value": 1});
        for _ in 0..10 {
            deep = json!({"type": "and", "filters": [deep]});
        }
        assert!(Filter::parse(&deep).unwrap_err().contains("nest"));
    }

    #[test]
    fn chunking_rules_are_openais() {
        assert!(Chunking::fixed(100, 50).is_ok());
        assert!(Chunking::fixed(99, 0).is_err());
        assert!(Chunking::fixed(4097, 0).is_err());
        assert!(Chunking::fixed(800, 401).is_err());
    }

    #[test]
    fn ids_round_trip() {
        let id = new_vector_store_id();
        assert!(is_vector_store_id(&id), "{id}");
        assert!(!is_vector_store_id("vs_../x"));
    }
}
