//! JSON Schema documents → the node graph of [`super::schema`].
//!
//! Only keywords whose effect the matcher enforces exactly are accepted; annotations are
//! skipped; anything else is an error naming the keyword and its JSON pointer. Every
//! `$ref` target is compiled once, from a queue rather than recursively, so recursive
//! schemas terminate and a chain of references cannot deepen the stack.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::analyze::analyze;
use super::error::ConstraintError;
use super::schema::{
    ANY, ArrSpec, Compiled, INF, LitSet, NEVER, Node, NodeId, NumKind, ObjSpec, Prop, Typed,
};
use super::validate::{json_eq, nesting};
use super::{MAX_NESTING, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};

/// Compiles one schema document.
pub(crate) fn compile_document(schema: &Value) -> Result<Compiled, ConstraintError> {
    let mut c = Compiler::new(vec![(schema, String::new())]);
    let root = c.reference(0, "")?;
    c.drain()?;
    let compiled = analyze(c.nodes, c.objects, c.lits, root)?;
    if compiled.md[root as usize] == INF {
        return Err(ConstraintError::Unsatisfiable {
            limit: MAX_NESTING,
            pointer: "#".into(),
        });
    }
    Ok(compiled)
}

/// Compiles a forced tool call: `{"name": <name>, "parameters": <its schema>}` for one of
/// the tools, `name` first (so the alternatives for the other tools die before the
/// arguments, and the arguments are matched by one thread). Each parameters schema is its own document, so its `$ref`s (`#/$defs/...`)
/// resolve inside it, as they would if it were compiled alone.
/// `{"name": <tool name>, <args_key>: <its parameters>}` for one of `tools`, `name` first.
pub(crate) fn compile_tool_call(
    tools: &[(&str, &Value)],
    args_key: &str,
) -> Result<Compiled, ConstraintError> {
    if tools.is_empty() {
        return Err(invalid("", "a tool call needs at least one tool"));
    }
    let mut c = Compiler::new(
        tools
            .iter()
            .map(|(name, params)| (*params, format!("tool {name:?} parameters ")))
            .collect(),
    );
    let mut alts = Vec::with_capacity(tools.len());
    for (i, (name, _)) in tools.iter().enumerate() {
        let p = c.reference(i, "")?;
        let name_node = c.lit_node(vec![json!(name)], ANY)?;
        let prop = |node| Prop {
            node,
            required: true,
            md: INF,
        };
        // Keys sorted by bytes ("arguments" < "name" < "parameters"); `order` lists them
        // as they must be written: `name` first, so the other tools' branches die before
        // the arguments.
        let (keys, props, order) = if "name" < args_key {
            (
                vec!["name".into(), args_key.into()],
                vec![prop(name_node), prop(p)],
                vec![0, 1],
            )
        } else {
            (
                vec![args_key.into(), "name".into()],
                vec![prop(p), prop(name_node)],
                vec![1, 0],
            )
        };
        let obj = c.push_object(ObjSpec {
            keys,
            props,
            n_required: 2,
            additional: None,
            md: INF,
            ordered: true,
            order,
            key_json_len: Vec::new(),
        });
        alts.push(c.push(Node::Typed(Typed {
            null: false,
            boolean: false,
            number: None,
            string: None,
            array: None,
            object: Some(obj),
        })));
    }
    let root = c.push(Node::Union(alts.clone()));
    c.drain()?;
    let compiled = analyze(c.nodes, c.objects, c.lits, root)?;
    // Every tool must be callable (its parameters nest inside the call object).
    for ((name, _), alt) in tools.iter().zip(alts) {
        if compiled.md[alt as usize] == INF {
            return Err(ConstraintError::Unsatisfiable {
                limit: MAX_NESTING - 1,
                pointer: format!("tool {name:?} parameters #"),
            });
        }
    }
    Ok(compiled)
}

/// Prefixes the pointer of an error with the document's label.
fn relabel(e: ConstraintError, label: &str) -> ConstraintError {
    if label.is_empty() {
        return e;
    }
    let l = |p: String| format!("{label}{p}");
    match e {
        ConstraintError::Unsupported {
            keyword,
            pointer,
            reason,
        } => ConstraintError::Unsupported {
            keyword,
            pointer: l(pointer),
            reason,
        },
        ConstraintError::Invalid { pointer, message } => ConstraintError::Invalid {
            pointer: l(pointer),
            message,
        },
        ConstraintError::TooDeep { limit, pointer } => ConstraintError::TooDeep {
            limit,
            pointer: l(pointer),
        },
        ConstraintError::Unsatisfiable { limit, pointer } => ConstraintError::Unsatisfiable {
            limit,
            pointer: l(pointer),
        },
        e @ ConstraintError::TooLarge { .. } => e,
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

/// Builds the graph.
struct Compiler<'a> {
    /// Schema documents and the label their error pointers get.
    docs: Vec<(&'a Value, String)>,
    /// The document being compiled (where `#` of a `$ref` points).
    doc: usize,
    nodes: Vec<Node>,
    objects: Vec<ObjSpec>,
    lits: Vec<LitSet>,
    refs: HashMap<(usize, String), NodeId>,
    queue: Vec<(usize, String, NodeId)>,
    /// Subschemas, properties and enum values so far.
    size: usize,
}

impl<'a> Compiler<'a> {
    fn new(docs: Vec<(&'a Value, String)>) -> Compiler<'a> {
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
            ordered: false,
            order: Vec::new(),
            key_json_len: Vec::new(),
        };
        Compiler {
            docs,
            doc: 0,
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

    /// The node of a JSON pointer into a document (compiled later, from the queue).
    fn reference(&mut self, doc: usize, pointer: &str) -> Result<NodeId, ConstraintError> {
        let key = (doc, pointer.to_string());
        if let Some(&id) = self.refs.get(&key) {
            return Ok(id);
        }
        self.charge(1)?;
        let id = self.push(Node::Union(Vec::new()));
        self.refs.insert(key, id);
        self.queue.push((doc, pointer.to_string(), id));
        Ok(id)
    }

    /// Compiles queued references until none is left.
    fn drain(&mut self) -> Result<(), ConstraintError> {
        while let Some((doc, pointer, id)) = self.queue.pop() {
            self.doc = doc;
            let (root, label) = &self.docs[doc];
            let target = root.pointer(&pointer).unwrap_or(&Value::Null);
            let label = label.clone();
            let n = self
                .schema(target, &pointer, 0)
                .map_err(|e| relabel(e, &label))?;
            self.nodes[id as usize] = Node::Union(vec![n]);
        }
        Ok(())
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
                "$defs" | "definitions" | "$ref" | "anyOf" | "oneOf" | "allOf" | "enum"
                | "const" => {}
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
        let combinator = ["$ref", "anyOf", "oneOf", "allOf"]
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
                .filter(|t| self.docs[self.doc].0.pointer(t).is_some())
                .ok_or_else(|| invalid(&p, format!("`$ref` {r:?} does not resolve")))?;
            return self.reference(self.doc, &target);
        }
        let alts = match v {
            Value::Array(a) if !a.is_empty() => a,
            _ => return Err(invalid(&p, format!("`{kw}` must be a non-empty array"))),
        };
        // A one-schema `allOf` is just that schema (Pydantic v1 wraps `$ref`s in one to
        // attach a description); an intersection of several is not something we compute.
        if kw == "allOf" && alts.len() > 1 {
            return Err(unsupported(
                pointer,
                kw,
                "`allOf` of more than one schema is not supported",
            ));
        }
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
        let explicit = m.get("additionalProperties");
        let additional = match explicit {
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
            let mut index: HashMap<String, usize> = listed
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            for r in arr {
                let name = r
                    .as_str()
                    .ok_or_else(|| invalid(&p, "`required` must be an array of strings"))?;
                match index.get(name) {
                    Some(&i) => listed[i].1.required = true,
                    None => {
                        // A required key that is not listed follows `additionalProperties`
                        // when that is given (`false`: the object cannot exist). Left out,
                        // that key alone is allowed, with any value: our closed default is
                        // for keys the schema never mentions.
                        let node = match explicit {
                            None => ANY,
                            Some(_) => additional.unwrap_or(NEVER),
                        };
                        index.insert(name.to_string(), listed.len());
                        listed.push((
                            name.to_string(),
                            Prop {
                                node,
                                required: true,
                                md: INF,
                            },
                        ));
                    }
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
            ordered: false,
            order: Vec::new(),
            key_json_len: Vec::new(),
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
            (Some(_), Some(c)) => values.retain(|v| json_eq(v, c)),
            (Some(_), None) => {}
        }
        self.lit_node(values, base)
    }

    /// A literal-set node of `values` that also satisfy `base`.
    fn lit_node(&mut self, values: Vec<Value>, base: NodeId) -> Result<NodeId, ConstraintError> {
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
}
