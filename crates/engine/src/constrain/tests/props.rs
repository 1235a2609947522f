//! Property tests: random walks always end in valid documents; valid documents are always
//! accepted, however they are split; what the matcher completes always validates.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::super::{Matcher, Schema, TokenTrie};
use super::{Fed, allowed_bytes, byte_trie, feed, schema, tool_call_schema};

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 10},
            "age": {"type": "integer"},
            "score": {"type": ["number", "null"]},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
            "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
            "kind": {"oneOf": [{"const": "x"}, {"type": "integer"}]}
        },
        "required": ["name", "age"]
    })
}

fn tree() -> Value {
    json!({
        "$defs": {"node": {
            "type": "object",
            "properties": {
                "v": {"type": ["integer", "string"]},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}
            },
            "required": ["v"]
        }},
        "$ref": "#/$defs/node"
    })
}

fn many_props() -> Value {
    let props: Map<String, Value> = (0..80)
        .map(|i| (format!("p{i}"), json!({"type": "integer"})))
        .collect();
    json!({"type": "object", "properties": props, "required": ["p0", "p65", "p79"]})
}

/// Schemas the random walk runs on.
fn walk_schemas() -> Vec<Value> {
    vec![
        json!({}),
        json!({"type": "object"}),
        person(),
        tree(),
        many_props(),
        tool_call_schema(&[
            (
                "search",
                json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
            ),
            (
                "sum",
                json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4}),
            ),
        ]),
        json!({
            "type": "object",
            "properties": {"é": {"type": "null"}, "q\"k": {"type": "boolean"}, "😀": {"enum": [[1, {"a": null}], "s"]}},
            "additionalProperties": {"type": "string", "maxLength": 2}
        }),
        json!({"anyOf": [
            {"type": "string", "minLength": 3},
            {"type": "string", "maxLength": 1},
            {"type": "integer"},
            {"type": "array", "items": {"type": "array", "minItems": 1, "items": {"type": "null"}}}
        ]}),
    ]
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Random bytes (one per choice), then [`Matcher::completion`]. Checks on the way that the
/// mask, `accepts`, `is_complete`, `can_continue` and `completion` agree and that there is
/// no dead end.
fn walk(s: &Schema, trie: &TokenTrie, choices: &[u32]) -> Vec<u8> {
    let mut m = s.matcher();
    let mut out = Vec::new();
    for &c in choices {
        check_state(&m, trie, &out);
        if m.is_complete() && c % 5 == 0 {
            return out;
        }
        let allowed = allowed_bytes(&m, trie);
        if allowed.is_empty() {
            return out;
        }
        let non_ws: Vec<u8> = allowed.iter().copied().filter(|b| !is_ws(*b)).collect();
        let pool = if c % 11 == 0 || non_ws.is_empty() {
            &allowed[..]
        } else {
            &non_ws[..]
        };
        let b = pool[(c / 16) as usize % pool.len()];
        assert!(s.accepts(&m, &[b]));
        assert!(m.advance(&[b]));
        out.push(b);
        // A few other bytes: `accepts` must agree with the mask.
        let allowed = allowed_bytes(&m, trie);
        for probe in [c as u8, (c >> 8) as u8, b'"', b'}'] {
            assert_eq!(m.accepts(&[probe]), allowed.contains(&probe));
        }
    }
    check_state(&m, trie, &out);
    let tail = m.completion().expect("an ending");
    assert!(m.advance(&tail));
    assert!(m.is_complete());
    out.extend_from_slice(&tail);
    out
}

/// No dead end; `can_continue` matches the mask; the completion from here is accepted and
/// finishes the document.
fn check_state(m: &Matcher, trie: &TokenTrie, out: &[u8]) {
    let allowed = allowed_bytes(m, trie);
    let at = || String::from_utf8_lossy(out).into_owned();
    assert_eq!(m.can_continue(), !allowed.is_empty(), "after {:?}", at());
    assert!(
        !allowed.is_empty() || m.is_complete(),
        "dead end after {:?}",
        at()
    );
    let tail = m
        .completion()
        .unwrap_or_else(|| panic!("no completion after {:?}", at()));
    let mut done = m.clone();
    assert!(
        done.advance(&tail),
        "completion {:?} after {:?}",
        String::from_utf8_lossy(&tail),
        at()
    );
    assert!(
        done.is_complete(),
        "completion {:?} after {:?}",
        String::from_utf8_lossy(&tail),
        at()
    );
}

fn arb_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        (-1e15f64..1e15).prop_map(|f| json!(f)),
        (-1e-3f64..1e-3).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_person() -> impl Strategy<Value = Value> {
    let name =
        prop::collection::vec(any::<char>(), 1..=10).prop_map(|c| json!(String::from_iter(c)));
    let score = prop_oneof![
        Just(Value::Null),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        any::<i32>().prop_map(|i| json!(i))
    ];
    let tags = prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..=3)
        .prop_map(|t| json!(t));
    let meta =
        prop::collection::btree_map(any::<String>(), any::<i64>(), 0..4).prop_map(|m| json!(m));
    let kind = prop_oneof![Just(json!("x")), any::<i64>().prop_map(|i| json!(i))];
    (
        name,
        any::<i64>(),
        prop::option::of(score),
        prop::option::of(tags),
        prop::option::of(meta),
        prop::option::of(kind),
    )
        .prop_flat_map(|(name, age, score, tags, meta, kind)| {
            let mut kv = vec![("name", name), ("age", json!(age))];
            for (k, v) in [
                ("score", score),
                ("tags", tags),
                ("meta", meta),
                ("kind", kind),
            ] {
                if let Some(v) = v {
                    kv.push((k, v));
                }
            }
            Just(kv).prop_shuffle()
        })
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn arb_tree(depth: u32) -> BoxedStrategy<Value> {
    let v = prop_oneof![
        any::<i64>().prop_map(|i| json!(i)),
        any::<String>().prop_map(|s| json!(s))
    ];
    if depth == 0 {
        return v.prop_map(|v| json!({"v": v})).boxed();
    }
    (
        v,
        prop::option::of(prop::collection::vec(arb_tree(depth - 1), 0..=3)),
    )
        .prop_map(|(v, kids)| match kids {
            Some(k) => json!({"kids": k, "v": v}),
            None => json!({"v": v}),
        })
        .boxed()
}

fn arb_many_props() -> impl Strategy<Value = Value> {
    prop::collection::vec(any::<bool>(), 80).prop_map(|keep| {
        let m: Map<String, Value> = keep
            .iter()
            .enumerate()
            .filter(|&(i, k)| *k || [0, 65, 79].contains(&i))
            .map(|(i, _)| (format!("p{i}"), json!(i)))
            .collect();
        Value::Object(m)
    })
}

/// Serializations a model could produce: compact, and 2-, 3- and 4-space pretty (within
/// `INDENT_PER_LEVEL` at every depth).
fn spellings(v: &Value) -> Vec<String> {
    let mut out = vec![serde_json::to_string(v).unwrap()];
    for indent in [&b"  "[..], b"   ", b"    "] {
        let mut text = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
        let mut ser = serde_json::Serializer::with_formatter(&mut text, fmt);
        serde::Serialize::serialize(v, &mut ser).unwrap();
        out.push(String::from_utf8(text).unwrap());
    }
    out
}

/// Feeds `text` in chunks cut at `cuts` (any byte offsets, so characters get split).
fn feed_chunks(s: &Schema, text: &str, cuts: &[usize]) -> Fed {
    let bytes = text.as_bytes();
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    let mut m = s.matcher();
    for w in at.windows(2) {
        if !m.advance(&bytes[w[0]..w[1]]) {
            return Fed::Rejected(w[0]);
        }
    }
    if m.is_complete() {
        Fed::Complete
    } else {
        Fed::Incomplete
    }
}

fn assert_accepted(s: &Schema, v: &Value, cuts: &[usize]) {
    assert_eq!(s.validate(v), Ok(()), "generator made an invalid value {v}");
    for text in spellings(v) {
        assert_eq!(feed(s, &text), Fed::Complete, "{text}");
        assert_eq!(
            feed_chunks(s, &text, cuts),
            Fed::Complete,
            "{text} cut at {cuts:?}"
        );
    }
}

/// Only wholly accepted documents count; those must validate.
fn assert_sound(s: &Schema, v: &Value) {
    let text = serde_json::to_string(v).unwrap();
    if feed(s, &text) == Fed::Complete {
        assert_eq!(s.validate(v), Ok(()), "{text}");
    }
}

/// Every character as a `\u` escape (surrogate pairs above U+FFFF).
fn escape_all(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let mut buf = [0u16; 2];
        for u in c.encode_utf16(&mut buf) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_walks_end_valid(which in 0usize..8, choices in prop::collection::vec(any::<u32>(), 0..160)) {
        let sv = &walk_schemas()[which];
        let s = &schema(sv.clone());
        let out = walk(s, &byte_trie(), &choices);
        let text = String::from_utf8(out).expect("generated text is UTF-8");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        prop_assert_eq!(s.validate(&v), Ok(()), "{}", text);
    }

    #[test]
    fn tool_call_walks_end_valid(choices in prop::collection::vec(any::<u32>(), 0..160)) {
        let search = json!({"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}, "required": ["q"]});
        let sum = json!({"$defs": {"n": {"type": "number"}}, "type": "array", "items": {"$ref": "#/$defs/n"}, "minItems": 2});
        let s = Schema::tool_call(&[("search", &search), ("sum", &sum), ("noop", &json!({}))]).unwrap();
        let out = walk(&s, &byte_trie(), &choices);
        let v: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(s.validate(&v), Ok(()));
        prop_assert_eq!(v.as_object().map(|o| o.keys().next().cloned()), Some(Some("name".to_string())));
    }

    #[test]
    fn any_json_is_accepted(v in arb_json(4), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        assert_accepted(&Schema::any_value(), &v, &cuts);
        assert_accepted(&Schema::any_object(), &json!({"k": v}), &cuts);
    }

    #[test]
    fn schema_documents_are_accepted(
        p in arb_person(),
        t in arb_tree(3),
        m in arb_many_props(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        assert_accepted(&schema(person()), &p, &cuts);
        assert_accepted(&schema(tree()), &t, &cuts);
        assert_accepted(&schema(many_props()), &m, &cuts);
    }

    #[test]
    fn completed_documents_validate(v in arb_json(3), p in arb_person(), drop in any::<prop::sample::Index>()) {
        for sv in walk_schemas() {
            assert_sound(&schema(sv), &v);
        }
        // A valid person with one key removed, or with a key's value swapped for junk.
        let ps = schema(person());
        let obj = p.as_object().unwrap();
        let key = obj.keys().nth(drop.index(obj.len())).unwrap().clone();
        let mut fewer = obj.clone();
        fewer.remove(&key);
        assert_sound(&ps, &Value::Object(fewer));
        let mut junk = obj.clone();
        junk.insert(key, v);
        assert_sound(&ps, &Value::Object(junk));
    }

    #[test]
    fn split_utf8_and_escapes(
        chars in prop::collection::vec(any::<char>(), 0..12),
        max in 0u32..14,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let text: String = chars.iter().collect();
        let s = schema(json!({"type": "string", "maxLength": max}));
        let fits = chars.len() as u32 <= max;
        for doc in [serde_json::to_string(&text).unwrap(), escape_all(&text)] {
            let r = feed_chunks(&s, &doc, &cuts);
            prop_assert_eq!(r == Fed::Complete, fits, "{} max {}", doc, max);
        }
        // The same text as an object key, raw and escaped, in chunks.
        let obj = Schema::any_object();
        let raw = format!("{{{}:1}}", serde_json::to_string(&text).unwrap());
        let esc = format!("{{{}:1}}", escape_all(&text));
        prop_assert_eq!(feed_chunks(&obj, &raw, &cuts), Fed::Complete);
        prop_assert_eq!(feed_chunks(&obj, &esc, &cuts), Fed::Complete);
        // A listed key, spelled escaped.
        if !text.is_empty() {
            let listed = schema(json!({"type": "object", "properties": {text.clone(): {"type": "integer"}}, "required": [text]}));
            prop_assert_eq!(feed_chunks(&listed, &esc, &cuts), Fed::Complete);
            prop_assert_eq!(feed_chunks(&listed, &raw, &cuts), Fed::Complete);
        }
    }
}

/// Random schemas from the supported subset (some unsatisfiable, some recursive through
/// `#`).
fn arb_schema() -> impl Strategy<Value = Value> {
    let small = prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        (-3i64..30).prop_map(|i| json!(i)),
        Just(json!(1.5)),
        prop::sample::select(vec!["", "a", "ab", "é", "q\"", "a\\n"]).prop_map(|s| json!(s)),
        Just(json!([1, {"k": []}])),
        Just(json!({"k": "v"})),
    ];
    let types = prop::sample::subsequence(
        vec![
            "string", "integer", "number", "boolean", "null", "object", "array",
        ],
        1..3,
    );
    let leaf = prop_oneof![
        Just(json!({})),
        Just(json!({"$ref": "#"})),
        (types, 0u32..3, 0u32..4).prop_map(|(t, lo, span)| {
            json!({"type": t, "minLength": lo, "maxLength": lo + span})
        }),
        prop::collection::vec(small.clone(), 0..4).prop_map(|e| json!({"enum": e})),
        small.prop_map(|c| json!({"const": c})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "string", "maxLength": 1})),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        let keys = prop::sample::select(vec!["a", "ab", "b", "é", "q\"k", "\n"]);
        prop_oneof![
            (
                prop::collection::vec((keys, inner.clone(), any::<bool>()), 0..4),
                prop_oneof![
                    Just(None),
                    Just(Some(json!(true))),
                    Just(Some(json!(false))),
                    inner.clone().prop_map(Some),
                ],
            )
                .prop_map(|(props, additional)| {
                    let required: Vec<&str> = props.iter().filter(|p| p.2).map(|p| p.0).collect();
                    let props: Map<String, Value> = props
                        .iter()
                        .map(|(k, s, _)| (k.to_string(), s.clone()))
                        .collect();
                    let mut o =
                        json!({"type": "object", "properties": props, "required": required});
                    if let Some(a) = additional {
                        o["additionalProperties"] = a;
                    }
                    o
                }),
            (inner.clone(), 0u32..3, 0u32..4).prop_map(|(items, lo, span)| {
                json!({"type": "array", "items": items, "minItems": lo, "maxItems": lo + span})
            }),
            prop::collection::vec(inner, 1..4).prop_map(|alts| json!({"anyOf": alts})),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_schemas_walk_to_valid_documents(
        sv in arb_schema(),
        choices in prop::collection::vec(any::<u32>(), 0..120),
    ) {
        let s = match Schema::compile(&sv) {
            Ok(s) => s,
            Err(e) => {
                // Only unsatisfiable schemas may be refused here.
                let unsat = matches!(e, super::super::ConstraintError::Unsatisfiable { .. });
                prop_assert!(unsat, "{}: {}", sv, e);
                return Ok(());
            }
        };
        let out = walk(&s, &byte_trie(), &choices);
        let text = String::from_utf8(out).expect("generated text is UTF-8");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        prop_assert_eq!(s.validate(&v), Ok(()), "{} for {}", text, sv);
    }
}
