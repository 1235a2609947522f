//! JSON Schema → a compiled graph of nodes.
//!
//! A node is a union (`anyOf`, `oneOf`, `$ref`), a typed node (per JSON type: allowed or
//! not, plus that type's constraints) or a literal set (`enum`/`const`). After building,
//! [`finish`] flattens unions to their non-union leaves and computes, for every node, the
//! least nesting any valid value needs (`md`, `INF` when none exists). The matcher only
//! takes choices whose `md` fits under [`MAX_NESTING`], which is what rules out dead ends:
//! an optional property whose schema is unsatisfiable is simply never offered.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::ConstraintError;
use super::matcher::Matcher;
use super::trie::TokenTrie;
use super::validate::{nesting, validate_node};
use super::{MAX_NESTING, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};

pub(crate) type NodeId = u32;
/// `{}` / `true`: any JSON value.
pub(crate) const ANY: NodeId = 0;
/// `false`: nothing.
pub(crate) const NEVER: NodeId = 1;
/// `md` of a node no value satisfies (within the nesting limit).
pub(crate) const INF: u8 = u8::MAX;
/// Literal sets of the keyword values: `false`/`true`, `null`, and all three.
const KW_BOOL: u32 = 0;
const KW_NULL: u32 = 1;
const KW_BOTH: u32 = 2;

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
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) nodes: Vec<Node>,
    pub(crate) objects: Vec<ObjSpec>,
    pub(crate) lits: Vec<LitSet>,
    /// Least nesting of a valid value per node; `INF` if none.
    pub(crate) md: Vec<u8>,
    /// Per node, a range of `leaf_pool`: the non-union nodes it stands for.
    leaves: Vec<(u32, u32)>,
    /// Per node, a range of `leaf_pool`: its satisfiable leaves (what the matcher tries).
    live: Vec<(u32, u32)>,
    leaf_pool: Vec<NodeId>,
    pub(crate) root: NodeId,
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
        let mut c = Compiler::new(schema);
        let root = c.reference("")?;
        while let Some((pointer, id)) = c.queue.pop() {
            let target = schema.pointer(&pointer).unwrap_or(&Value::Null);
            let n = c.schema(target, &pointer, 0)?;
            c.nodes[id as usize] = Node::Union(vec![n]);
        }
        let compiled = c.finish(root)?;
        if compiled.md[root as usize] == INF {
            return Err(ConstraintError::Unsatisfiable {
                limit: MAX_NESTING,
                pointer: "#".into(),
            });
        }
        Ok(Schema {
            c: Arc::new(compiled),
        })
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

/// Types a `type` keyword allows.
#[derive(Clone, Copy, Default)]
struct Types {
    null: bool,
    boolean: bool,
    integer: bool,
    number: bool,
    string: bool,
    array: bool,
    object: bool,
}

const ALL_TYPES: Types = Types {
    null: true,
    boolean: true,
    integer: true,
    number: true,
    string: true,
    array: true,
    object: true,
};

/// Keywords that only annotate: they never change what validates.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "format",
    "$comment",
    "$id",
    "$anchor",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// Keywords that constrain the value directly (not allowed next to `anyOf`/`$ref`, whose
/// intersection with them we do not compute).
const VALUE_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

fn pointer_join(base: &str, token: &str) -> String {
    format!("{base}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// `#` + JSON pointer, for messages.
pub(crate) fn fragment(pointer: &str) -> String {
    format!("#{pointer}")
}

fn invalid(pointer: &str, message: impl Into<String>) -> ConstraintError {
    ConstraintError::Invalid {
        pointer: fragment(pointer),
        message: message.into(),
    }
}

fn unsupported(pointer: &str, keyword: &str, reason: impl Into<String>) -> ConstraintError {
    ConstraintError::Unsupported {
        keyword: keyword.into(),
        pointer: fragment(&pointer_join(pointer, keyword)),
        reason: reason.into(),
    }
}

/// Decodes `%XX` in a `$ref` fragment (it is a URI fragment).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn count(v: &Value, pointer: &str, kw: &str) -> Result<u32, ConstraintError> {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    n.map(|n| n.min(u64::from(u32::MAX)) as u32).ok_or_else(|| {
        invalid(
            &pointer_join(pointer, kw),
            format!("`{kw}` must be a non-negative integer"),
        )
    })
}

fn parse_types(v: &Value, pointer: &str) -> Result<Types, ConstraintError> {
    let p = pointer_join(pointer, "type");
    let names: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) if !a.is_empty() => a.iter().collect(),
        _ => {
            return Err(invalid(
                &p,
                "`type` must be a type name or a non-empty array of them",
            ));
        }
    };
    let mut t = Types::default();
    for name in names {
        match name.as_str() {
            Some("null") => t.null = true,
            Some("boolean") => t.boolean = true,
            Some("integer") => t.integer = true,
            Some("number") => t.number = true,
            Some("string") => t.string = true,
            Some("array") => t.array = true,
            Some("object") => t.object = true,
            _ => return Err(invalid(&p, format!("unknown type {name}"))),
        }
    }
    Ok(t)
}

/// Builds the graph. Every `$ref` target is compiled once, from a queue (not recursively),
/// so recursive schemas terminate and a chain of references cannot deepen the stack.
struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    objects: Vec<ObjSpec>,
    lits: Vec<LitSet>,
    refs: HashMap<String, NodeId>,
    queue: Vec<(String, NodeId)>,
    /// Subschemas, properties and enum values so far.
    size: usize,
}

impl<'a> Compiler<'a> {
    fn new(root: &'a Value) -> Compiler<'a> {
        let kw = |vals: &[Value]| {
            let mut s = LitSet::default();
            for v in vals {
                s.texts.push(v.to_string().into_bytes().into_boxed_slice());
                s.nest.push(0);
                s.values.push(v.clone());
            }
            s
        };
        let any_obj = ObjSpec {
            keys: Vec::new(),
            props: Vec::new(),
            n_required: 0,
            additional: Some(ANY),
            md: INF,
        };
        Compiler {
            root,
            nodes: vec![
                Node::Typed(Typed {
                    null: true,
                    boolean: true,
                    number: Some(NumKind::Number),
                    string: Some((0, u32::MAX)),
                    array: Some(ArrSpec {
                        items: ANY,
                        min: 0,
                        max: u32::MAX,
                        md: INF,
                    }),
                    object: Some(0),
                }),
                Node::Union(Vec::new()),
            ],
            objects: vec![any_obj],
            // Sorted texts: "false" < "null" < "true".
            lits: vec![
                kw(&[Value::Bool(false), Value::Bool(true)]),
                kw(&[Value::Null]),
                kw(&[Value::Bool(false), Value::Null, Value::Bool(true)]),
            ],
            refs: HashMap::new(),
            queue: Vec::new(),
            size: 0,
        }
    }

    fn charge(&mut self, n: usize) -> Result<(), ConstraintError> {
        self.size += n;
        if self.size > MAX_SCHEMA_NODES {
            return Err(ConstraintError::TooLarge {
                limit: MAX_SCHEMA_NODES,
            });
        }
        Ok(())
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        (self.nodes.len() - 1) as NodeId
    }

    fn push_object(&mut self, o: ObjSpec) -> u32 {
        self.objects.push(o);
        (self.objects.len() - 1) as u32
    }

    /// The node of a JSON pointer into the root document (compiled later, from the queue).
    fn reference(&mut self, pointer: &str) -> Result<NodeId, ConstraintError> {
        if let Some(&id) = self.refs.get(pointer) {
            return Ok(id);
        }
        self.charge(1)?;
        let id = self.push(Node::Union(Vec::new()));
        self.refs.insert(pointer.to_string(), id);
        self.queue.push((pointer.to_string(), id));
        Ok(id)
    }

    fn schema(
        &mut self,
        v: &Value,
        pointer: &str,
        depth: usize,
    ) -> Result<NodeId, ConstraintError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(ConstraintError::TooDeep {
                limit: MAX_SCHEMA_DEPTH,
                pointer: fragment(pointer),
            });
        }
        self.charge(1)?;
        match v {
            Value::Bool(true) => Ok(ANY),
            Value::Bool(false) => Ok(NEVER),
            Value::Object(m) => self.object_schema(m, pointer, depth),
            _ => Err(invalid(pointer, "a schema must be an object or a boolean")),
        }
    }

    fn object_schema(
        &mut self,
        m: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Result<NodeId, ConstraintError> {
        for (k, v) in m {
            match k.as_str() {
                "$defs" | "definitions" if !v.is_object() => {
                    return Err(invalid(&pointer_join(pointer, k), "must be an object"));
                }
                // `$defs` are compiled when a `$ref` reaches them.
                "$defs" | "definitions" | "$ref" | "anyOf" | "oneOf" | "enum" | "const" => {}
                k if VALUE_KEYWORDS.contains(&k) => {}
                k if ANNOTATIONS.contains(&k) || k.starts_with("x-") => {}
                k => {
                    return Err(unsupported(
                        pointer,
                        k,
                        "it restricts which values are valid and constrained decoding cannot \
                         enforce it",
                    ));
                }
            }
        }
        let combinator = ["$ref", "anyOf", "oneOf"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect::<Vec<_>>();
        let base = match combinator.as_slice() {
            [] => self.typed(m, pointer, depth)?,
            [kw, other, ..] => {
                return Err(unsupported(
                    pointer,
                    other,
                    format!("`{other}` next to `{kw}` is not supported; nest one inside the other"),
                ));
            }
            [kw] => {
                if let Some(sib) = VALUE_KEYWORDS.iter().find(|k| m.contains_key(**k)) {
                    return Err(unsupported(
                        pointer,
                        sib,
                        format!(
                            "`{sib}` next to `{kw}` is not supported; move it into the {}",
                            if *kw == "$ref" {
                                "referenced schema"
                            } else {
                                "alternatives"
                            }
                        ),
                    ));
                }
                self.combinator(kw, &m[*kw], pointer, depth)?
            }
        };
        self.literals(m, base, pointer)
    }

    fn combinator(
        &mut self,
        kw: &str,
        v: &Value,
        pointer: &str,
        depth: usize,
    ) -> Result<NodeId, ConstraintError> {
        let p = pointer_join(pointer, kw);
        if kw == "$ref" {
            let r = v
                .as_str()
                .ok_or_else(|| invalid(&p, "`$ref` must be a string"))?;
            let Some(frag) = r.strip_prefix('#') else {
                return Err(unsupported(
                    pointer,
                    "$ref",
                    format!(
                        "only references inside the schema (`#/$defs/...`) are supported, not {r:?}"
                    ),
                ));
            };
            let target = percent_decode(frag)
                .filter(|t| self.root.pointer(t).is_some())
                .ok_or_else(|| invalid(&p, format!("`$ref` {r:?} does not resolve")))?;
            return self.reference(&target);
        }
        let alts = match v {
            Value::Array(a) if !a.is_empty() => a,
            _ => return Err(invalid(&p, format!("`{kw}` must be a non-empty array"))),
        };
        let mut ids = Vec::with_capacity(alts.len());
        for (i, alt) in alts.iter().enumerate() {
            ids.push(self.schema(alt, &pointer_join(&p, &i.to_string()), depth + 1)?);
        }
        Ok(self.push(Node::Union(ids)))
    }

    fn typed(
        &mut self,
        m: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Result<NodeId, ConstraintError> {
        let t = match m.get("type") {
            Some(v) => parse_types(v, pointer)?,
            None => ALL_TYPES,
        };
        let get_count = |kw: &str, default: u32| -> Result<u32, ConstraintError> {
            m.get(kw).map_or(Ok(default), |v| count(v, pointer, kw))
        };
        // An empty range leaves no value of that type: drop the type, so the matcher never
        // starts one it cannot finish.
        let string = t
            .string
            .then(|| {
                Ok::<_, ConstraintError>((
                    get_count("minLength", 0)?,
                    get_count("maxLength", u32::MAX)?,
                ))
            })
            .transpose()?
            .filter(|(lo, hi)| lo <= hi);
        // Subschemas are compiled even when their type is excluded, so unsupported keywords
        // anywhere in the document are reported.
        let items = match m.get("items") {
            None => ANY,
            Some(Value::Array(_)) => {
                return Err(unsupported(
                    pointer,
                    "items",
                    "`items` as an array (tuple validation) is not supported",
                ));
            }
            Some(v) => self.schema(v, &pointer_join(pointer, "items"), depth + 1)?,
        };
        let array = t
            .array
            .then(|| {
                Ok::<_, ConstraintError>(ArrSpec {
                    items,
                    min: get_count("minItems", 0)?,
                    max: get_count("maxItems", u32::MAX)?,
                    md: INF,
                })
            })
            .transpose()?
            .filter(|a| a.min <= a.max);
        let obj = self.object_spec(m, pointer, depth)?;
        let object = if t.object {
            Some(self.push_object(obj))
        } else {
            None
        };
        let number = if t.number {
            Some(NumKind::Number)
        } else if t.integer {
            Some(NumKind::Integer)
        } else {
            None
        };
        Ok(self.push(Node::Typed(Typed {
            null: t.null,
            boolean: t.boolean,
            number,
            string,
            array,
            object,
        })))
    }

    fn object_spec(
        &mut self,
        m: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Result<ObjSpec, ConstraintError> {
        let mut listed: Vec<(String, Prop)> = Vec::new();
        let props = m.get("properties");
        if let Some(props) = props {
            let p = pointer_join(pointer, "properties");
            let map = props
                .as_object()
                .ok_or_else(|| invalid(&p, "`properties` must be an object"))?;
            self.charge(map.len())?;
            for (k, s) in map {
                let node = self.schema(s, &pointer_join(&p, k), depth + 1)?;
                listed.push((
                    k.clone(),
                    Prop {
                        node,
                        required: false,
                        md: INF,
                    },
                ));
            }
        }
        let additional = match m.get("additionalProperties") {
            None if props.is_some() => None,
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(v) => {
                Some(self.schema(v, &pointer_join(pointer, "additionalProperties"), depth + 1)?)
            }
        };
        if let Some(req) = m.get("required") {
            let p = pointer_join(pointer, "required");
            let arr = req
                .as_array()
                .ok_or_else(|| invalid(&p, "`required` must be an array of strings"))?;
            self.charge(arr.len())?;
            for r in arr {
                let name = r
                    .as_str()
                    .ok_or_else(|| invalid(&p, "`required` must be an array of strings"))?;
                match listed.iter_mut().find(|(k, _)| k == name) {
                    Some((_, prop)) => prop.required = true,
                    // A required key that is not listed must match `additionalProperties`
                    // (or cannot exist at all: then the object is unsatisfiable).
                    None => listed.push((
                        name.to_string(),
                        Prop {
                            node: additional.unwrap_or(NEVER),
                            required: true,
                            md: INF,
                        },
                    )),
                }
            }
        }
        listed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let n_required = listed.iter().filter(|(_, p)| p.required).count() as u32;
        let (keys, props) = listed
            .into_iter()
            .map(|(k, p)| (k.into_boxed_str(), p))
            .unzip();
        Ok(ObjSpec {
            keys,
            props,
            n_required,
            additional,
            md: INF,
        })
    }

    /// Wraps `base` in a literal set when `enum`/`const` is present.
    fn literals(
        &mut self,
        m: &Map<String, Value>,
        base: NodeId,
        pointer: &str,
    ) -> Result<NodeId, ConstraintError> {
        let mut values: Vec<Value> = match m.get("enum") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(invalid(
                    &pointer_join(pointer, "enum"),
                    "`enum` must be an array",
                ));
            }
        };
        match (m.get("enum"), m.get("const")) {
            (None, None) => return Ok(base),
            (None, Some(c)) => values = vec![c.clone()],
            (Some(_), Some(c)) => values.retain(|v| super::validate::json_eq(v, c)),
            (Some(_), None) => {}
        }
        self.charge(values.len())?;
        let mut set: Vec<(Box<[u8]>, u8, Value)> = Vec::with_capacity(values.len());
        for v in values {
            let nest = nesting(&v, MAX_NESTING);
            // Deeper values can never be generated (nor validate).
            if nest <= MAX_NESTING {
                set.push((v.to_string().into_bytes().into_boxed_slice(), nest as u8, v));
            }
        }
        set.sort_by(|a, b| a.0.cmp(&b.0));
        set.dedup_by(|a, b| a.0 == b.0);
        let mut ls = LitSet::default();
        for (t, n, v) in set {
            ls.texts.push(t);
            ls.nest.push(n);
            ls.values.push(v);
        }
        self.lits.push(ls);
        let set = (self.lits.len() - 1) as u32;
        Ok(self.push(Node::Lit { set, base }))
    }

    fn finish(self, root: NodeId) -> Result<Compiled, ConstraintError> {
        let n = self.nodes.len();
        // Hostile unions (long chains of `anyOf`) make flattening quadratic: bound the work.
        let mut work = 0usize;
        let too_large = ConstraintError::TooLarge {
            limit: MAX_SCHEMA_NODES,
        };
        // Leaves: the non-union nodes reachable through union edges.
        let mut leaf_pool = Vec::new();
        let mut leaves = Vec::with_capacity(n);
        let mut stamp = vec![u32::MAX; n];
        let mut stack = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let start = leaf_pool.len() as u32;
            if !matches!(node, Node::Union(_)) {
                leaf_pool.push(id as NodeId);
            } else {
                stack.clear();
                stack.push(id as NodeId);
                stamp[id] = id as u32;
                while let Some(x) = stack.pop() {
                    work += 1;
                    if work > 100 * MAX_SCHEMA_NODES {
                        return Err(too_large);
                    }
                    match &self.nodes[x as usize] {
                        Node::Union(alts) => {
                            for &a in alts {
                                if stamp[a as usize] != id as u32 {
                                    stamp[a as usize] = id as u32;
                                    stack.push(a);
                                }
                            }
                        }
                        _ => leaf_pool.push(x),
                    }
                }
            }
            leaves.push((start, leaf_pool.len() as u32));
        }
        let mut c = Compiled {
            nodes: self.nodes,
            objects: self.objects,
            lits: self.lits,
            md: vec![INF; n],
            leaves,
            live: Vec::new(),
            leaf_pool,
            root,
        };
        filter_literals(&mut c);
        compute_md(&mut c);
        // Live leaves (appended to the pool): the ones some value satisfies.
        let mut live = Vec::with_capacity(n);
        for id in 0..n {
            let start = c.leaf_pool.len() as u32;
            let (a, b) = c.leaves[id];
            for i in a..b {
                let l = c.leaf_pool[i as usize];
                if c.md[l as usize] != INF {
                    c.leaf_pool.push(l);
                }
            }
            live.push((start, c.leaf_pool.len() as u32));
        }
        c.live = live;
        Ok(c)
    }
}

/// Drops `enum`/`const` values that fail the keywords next to them.
fn filter_literals(c: &mut Compiled) {
    let mut keep: Vec<(u32, Vec<bool>)> = Vec::new();
    for node in &c.nodes {
        if let Node::Lit { set, base } = node {
            let ls = &c.lits[*set as usize];
            let k = ls
                .values
                .iter()
                .map(|v| validate_node(c, v, *base, 0, 0).is_ok())
                .collect();
            keep.push((*set, k));
        }
    }
    for (set, k) in keep {
        let ls = &mut c.lits[set as usize];
        retain_mask(&mut ls.texts, &k);
        retain_mask(&mut ls.nest, &k);
        retain_mask(&mut ls.values, &k);
    }
    for ls in &mut c.lits {
        ls.max_nest = ls.nest.iter().copied().max().unwrap_or(0);
    }
}

fn retain_mask<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| k.next().copied().unwrap_or(false));
}

fn add1(md: u8) -> u8 {
    if u32::from(md) + 1 > MAX_NESTING {
        INF
    } else {
        md + 1
    }
}

/// Least fixpoint of "least nesting of a valid value". Each container adds one level, so
/// after round `k` every node whose answer is at most `k` is final: at most
/// `MAX_NESTING + 2` rounds.
fn compute_md(c: &mut Compiled) {
    for _round in 0..=MAX_NESTING + 2 {
        let mut changed = false;
        for id in 0..c.nodes.len() {
            let new = match &c.nodes[id] {
                Node::Union(_) => c
                    .leaves(id as NodeId)
                    .iter()
                    .map(|&l| c.md[l as usize])
                    .min()
                    .unwrap_or(INF),
                Node::Lit { set, .. } => c.lits[*set as usize]
                    .nest
                    .iter()
                    .copied()
                    .min()
                    .unwrap_or(INF),
                Node::Typed(t) => {
                    let scalar = t.null
                        || t.boolean
                        || t.number.is_some()
                        || t.string.is_some_and(|(lo, hi)| lo <= hi);
                    let arr = t.array.map_or(INF, |a| array_md(c, &a));
                    let obj = t
                        .object
                        .map_or(INF, |o| object_md(c, &c.objects[o as usize]));
                    if scalar { 0 } else { arr.min(obj) }
                }
            };
            if new < c.md[id] {
                c.md[id] = new;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Cache branch results for the matcher.
    for id in 0..c.nodes.len() {
        let arr_md = match &c.nodes[id] {
            Node::Typed(Typed { array: Some(a), .. }) => array_md(c, a),
            _ => continue,
        };
        if let Node::Typed(Typed { array: Some(a), .. }) = &mut c.nodes[id] {
            a.md = arr_md;
        }
    }
    for o in 0..c.objects.len() {
        let md = object_md(c, &c.objects[o]);
        let prop_md: Vec<u8> = c.objects[o]
            .props
            .iter()
            .map(|p| c.md[p.node as usize])
            .collect();
        let spec = &mut c.objects[o];
        spec.md = md;
        for (p, m) in spec.props.iter_mut().zip(prop_md) {
            p.md = m;
        }
    }
}

fn array_md(c: &Compiled, a: &ArrSpec) -> u8 {
    if a.min > a.max {
        INF
    } else if a.min == 0 {
        add1(0)
    } else {
        match c.md[a.items as usize] {
            INF => INF,
            m => add1(m),
        }
    }
}

fn object_md(c: &Compiled, o: &ObjSpec) -> u8 {
    let mut worst = 0;
    for p in o.props.iter().filter(|p| p.required) {
        worst = worst.max(c.md[p.node as usize]);
    }
    if worst == INF { INF } else { add1(worst) }
}
