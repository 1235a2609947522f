//! The compiled schema: a graph of nodes, and the public [`Schema`] around it.
//!
//! A node is a union (`anyOf`, `oneOf`, `$ref`), a typed node (per JSON type: allowed or
//! not, plus that type's constraints) or a literal set (`enum`/`const`). `compile.rs` builds
//! the graph from JSON, `analyze.rs` finishes it.

use std::sync::Arc;

use serde_json::Value;

use super::MAX_NESTING;
use super::compile::{compile_document, compile_tool_call};
use super::error::ConstraintError;
use super::matcher::Matcher;
use super::trie::TokenTrie;
use super::validate::validate_node;

pub(crate) type NodeId = u32;
/// `{}` / `true`: any JSON value.
pub(crate) const ANY: NodeId = 0;
/// `false`: nothing.
pub(crate) const NEVER: NodeId = 1;
/// `md` of a node no value satisfies (within the nesting limit).
pub(crate) const INF: u8 = u8::MAX;
/// No shortest value (none exists, or it is longer than `LEN_CAP`).
pub(crate) const NO_LEN: u32 = u32::MAX;
/// Longest shortest-value tracked (`minItems` of `minItems` can make them huge).
pub(crate) const LEN_CAP: u32 = 1 << 20;
/// Literal sets of the keyword values: `false`/`true`, `null`, and all three.
/// (The compiler creates them first, in this order.)
pub(crate) const KW_BOOL: u32 = 0;
pub(crate) const KW_NULL: u32 = 1;
pub(crate) const KW_BOTH: u32 = 2;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Valid iff valid against one of these.
    Union(Vec<NodeId>),
    Typed(Typed),
    /// Exactly one of the set's values, which must also satisfy `base` (the keywords next to
    /// `enum`/`const`, already used to filter the set).
    Lit {
        set: u32,
        base: NodeId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumKind {
    Integer,
    Number,
}

/// Which JSON types are allowed, each with its constraints.
#[derive(Debug, Clone)]
pub(crate) struct Typed {
    pub(crate) null: bool,
    pub(crate) boolean: bool,
    pub(crate) number: Option<NumKind>,
    /// `(minLength, maxLength)` in characters.
    pub(crate) string: Option<(u32, u32)>,
    pub(crate) array: Option<ArrSpec>,
    /// Index into `Compiled::objects`.
    pub(crate) object: Option<u32>,
}

impl Typed {
    /// The literal set of the keywords this node allows (`true`, `false`, `null`).
    pub(crate) fn kw_set(&self) -> Option<u32> {
        match (self.boolean, self.null) {
            (true, true) => Some(KW_BOTH),
            (true, false) => Some(KW_BOOL),
            (false, true) => Some(KW_NULL),
            (false, false) => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrSpec {
    pub(crate) items: NodeId,
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// Least nesting of a valid array (itself included).
    pub(crate) md: u8,
}

#[derive(Debug, Clone)]
pub(crate) struct Prop {
    pub(crate) node: NodeId,
    pub(crate) required: bool,
    pub(crate) md: u8,
}

#[derive(Debug, Clone)]
pub(crate) struct ObjSpec {
    /// Listed property names sorted by bytes, so the keys matching a prefix form a range.
    pub(crate) keys: Vec<Box<str>>,
    /// Parallel to `keys`.
    pub(crate) props: Vec<Prop>,
    pub(crate) n_required: u32,
    /// Schema of keys not listed; `None`: no other keys.
    pub(crate) additional: Option<NodeId>,
    /// Least nesting of a valid object (itself included).
    pub(crate) md: u8,
    /// Keys must come in `keys` order (all are required): the tool-call object, so `name`
    /// is written first and settles which tool's `parameters` schema applies.
    pub(crate) ordered: bool,
    /// When `ordered`: the listed key index to write `k`-th, for each `k` (every key is
    /// required).
    pub(crate) order: Vec<u32>,
    /// Length of each key as JSON text (quotes included), for the shortest-value tables.
    pub(crate) key_json_len: Vec<u32>,
}

impl ObjSpec {
    pub(crate) fn find(&self, key: &str) -> Option<usize> {
        self.keys
            .binary_search_by(|k| k.as_bytes().cmp(key.as_bytes()))
            .ok()
    }
}

/// An `enum`/`const` value set (or the keywords `true`/`false`/`null`).
#[derive(Debug, Clone, Default)]
pub(crate) struct LitSet {
    /// Compact serde_json text of each value, sorted and unique.
    pub(crate) texts: Vec<Box<[u8]>>,
    /// Nesting of each value (parallel to `texts`).
    pub(crate) nest: Vec<u8>,
    pub(crate) values: Vec<Value>,
    pub(crate) max_nest: u8,
}

/// The compiled graph, shared by a schema and its matchers.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) nodes: Vec<Node>,
    pub(crate) objects: Vec<ObjSpec>,
    pub(crate) lits: Vec<LitSet>,
    /// Least nesting of a valid value per node; `INF` if none.
    pub(crate) md: Vec<u8>,
    /// Per node, a range of `leaf_pool`: the non-union nodes it stands for.
    pub(crate) leaves: Vec<(u32, u32)>,
    /// Per node, a range of `leaf_pool`: its satisfiable leaves (what the matcher tries).
    pub(crate) live: Vec<(u32, u32)>,
    pub(crate) leaf_pool: Vec<NodeId>,
    /// `shortest[n * (MAX_NESTING + 1) + b]`: bytes of the shortest valid value of node `n`
    /// nested at most `b` deep (`NO_LEN` if none, or longer than `LEN_CAP`).
    pub(crate) shortest: Vec<u32>,
    pub(crate) root: NodeId,
    /// Literal bytes before the document ([`Schema::wrapped`]); usually empty.
    pub(crate) prefix: Box<[u8]>,
    /// Literal bytes after the document; usually empty.
    pub(crate) suffix: Box<[u8]>,
}

impl Compiled {
    pub(crate) fn leaves(&self, n: NodeId) -> &[NodeId] {
        let (a, b) = self.leaves[n as usize];
        &self.leaf_pool[a as usize..b as usize]
    }

    pub(crate) fn live(&self, n: NodeId) -> &[NodeId] {
        let (a, b) = self.live[n as usize];
        &self.leaf_pool[a as usize..b as usize]
    }

    /// Bytes of the shortest valid value of `n` nested at most `b` deep (`NO_LEN`: none).
    pub(crate) fn shortest(&self, n: NodeId, b: u32) -> u32 {
        self.shortest[n as usize * (MAX_NESTING as usize + 1) + b as usize]
    }

    /// Whether a value of `n` can still be completed inside `depth` open containers.
    #[inline]
    pub(crate) fn fits(&self, depth: u8, n: NodeId) -> bool {
        u32::from(depth) + u32::from(self.md[n as usize]) <= MAX_NESTING
    }
}

/// A compiled JSON Schema. Cheap to clone (shared).
#[derive(Clone)]
pub struct Schema {
    pub(crate) c: Arc<Compiled>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("nodes", &self.c.nodes.len())
            .field("objects", &self.c.objects.len())
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    pub fn any_object() -> Schema {
        Schema::compile(&serde_json::json!({"type": "object"}))
            .expect("the schema {\"type\": \"object\"} compiles")
    }

    /// Any JSON value (the schema `{}`).
    pub fn any_value() -> Schema {
        Schema::compile(&serde_json::json!({})).expect("the schema {} compiles")
    }

    /// Compiles a JSON Schema (the subset the module docs describe).
    pub fn compile(schema: &Value) -> Result<Schema, ConstraintError> {
        Ok(Schema {
            c: Arc::new(compile_document(schema)?),
        })
    }

    /// A forced call of one of `tools` (name, parameters schema): the object
    /// `{"name": <name>, "parameters": <arguments>}`, nothing else. Each parameters schema
    /// is compiled as its own document, so its `$ref`s resolve as they would alone (which
    /// wrapping them in one `anyOf` document would break). Errors name the tool.
    pub fn tool_call(tools: &[(&str, &Value)]) -> Result<Schema, ConstraintError> {
        Ok(Schema {
            c: Arc::new(compile_tool_call(tools, "parameters")?),
        })
    }

    /// A call in the tagged layout of Hermes-style templates (Qwen2.5's): the literal
    /// `prefix` (`<tool_call>\n`), then `{"name": <one of tools>, "arguments": {...}}` with
    /// `name` first, then the literal `suffix` (`\n</tool_call>`), then nothing.
    pub fn tagged_tool_call(
        tools: &[(&str, &Value)],
        prefix: &str,
        suffix: &str,
    ) -> Result<Schema, ConstraintError> {
        let c = compile_tool_call(tools, "arguments")?;
        Ok(Schema { c: Arc::new(c) }.wrapped(prefix.as_bytes(), suffix.as_bytes()))
    }

    /// This schema with literal bytes required before and after the document: output is
    /// exactly `prefix`, a valid document, `suffix`. A prefix can be produced by any tokens
    /// spelling it (a tokenizer's added token such as Qwen's `<tool_call>` included, as its
    /// bytes are in the vocabulary trie). The suffix starts once the document is complete;
    /// its first byte must be one the document cannot continue with (true of objects and
    /// arrays, after which nothing may follow).
    pub fn wrapped(self, prefix: &[u8], suffix: &[u8]) -> Schema {
        let mut c = Arc::unwrap_or_clone(self.c);
        c.prefix = prefix.into();
        c.suffix = suffix.into();
        Schema { c: Arc::new(c) }
    }

    /// A matcher at the start of a document.
    pub fn matcher(&self) -> Matcher {
        Matcher::new(self.c.clone())
    }

    /// Validates a whole value against the same subset the matcher enforces (so anything a
    /// matcher completes passes). Errors say where (`at /items/0: ...`).
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        validate_node(&self.c, value, self.c.root, 0, 0).map_err(|e| e.to_string())
    }

    /// Whether `bytes` (one token) may come next. `matcher` must come from this schema.
    pub fn accepts(&self, matcher: &Matcher, bytes: &[u8]) -> bool {
        debug_assert!(Arc::ptr_eq(&self.c, &matcher.c));
        matcher.accepts(bytes)
    }

    /// Fills `out[id]` with whether token `id` may come next (see
    /// [`Matcher::allowed_tokens`]). `matcher` must come from this schema.
    pub fn allowed_tokens(&self, matcher: &Matcher, vocab: &TokenTrie, out: &mut [bool]) {
        debug_assert!(Arc::ptr_eq(&self.c, &matcher.c));
        matcher.allowed_tokens(vocab, out);
    }
}
