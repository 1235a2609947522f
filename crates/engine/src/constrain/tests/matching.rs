//! Matcher behaviour beyond single keywords: whitespace, keys, numbers, nesting, threads.

use serde_json::json;

use super::super::{MAX_FRAC_DIGITS, MAX_INT_DIGITS, MAX_INTEGER_DIGITS, MAX_NESTING, Schema};
use super::{Fed, allowed_bytes, byte_trie, check, feed, schema, tool_call_schema};

#[test]
fn whitespace_rules() {
    let s = Schema::any_value();
    // Nothing before or after the top-level value; spaces inside strings are content.
    assert_eq!(feed(&s, " 1"), Fed::Rejected(0));
    assert_eq!(feed(&s, "{} "), Fed::Rejected(2));
    assert_eq!(feed(&s, "1 "), Fed::Rejected(1));
    assert_eq!(feed(&s, &format!("\"{}\"", " ".repeat(40))), Fed::Complete);
    assert_eq!(feed(&s, "[\"a  b   c\", \"\\n\\n\\t\"]"), Fed::Complete);
    // Compact, one space after `{ [ , :` and before `} ]`, or a newline and indentation.
    check(
        &s,
        &[
            "{\"a\":[1,2],\"b\":{}}",
            "{ \"a\": [ 1, 2 ], \"b\": { } }",
            "[\n1,\n2\n]",
            "{\n    \"a\": 1\n}",
            "[[\n        1\n    ]\n]",
        ],
        &[],
    );
    // At most `INDENT_PER_LEVEL` (4) spaces per open container after a newline.
    assert_eq!(feed(&s, "[\n    1]"), Fed::Complete);
    assert_eq!(feed(&s, "[\n     1]"), Fed::Rejected(6));
    assert_eq!(
        feed(&s, &format!("[[\n{}1]]", " ".repeat(8))),
        Fed::Complete
    );
    assert_eq!(
        feed(&s, &format!("[[\n{}1]]", " ".repeat(9))),
        Fed::Rejected(11)
    );
    // Runs of spaces, blank lines, spaces before a newline, tabs and CRs.
    assert_eq!(feed(&s, "[  1]"), Fed::Rejected(2));
    assert_eq!(feed(&s, "[\n\n1]"), Fed::Rejected(2));
    assert_eq!(feed(&s, "[1, \n2]"), Fed::Rejected(4));
    assert_eq!(feed(&s, "[\t1]"), Fed::Rejected(1));
    assert_eq!(feed(&s, "[1,\r\n2]"), Fed::Rejected(3));
    assert_eq!(feed(&s, "{\n\t\"a\": 1\n}"), Fed::Rejected(2));
    // Nothing before `:` or `,`; after `:` a single space, no newline.
    assert_eq!(feed(&s, "{\"a\" : 1}"), Fed::Rejected(4));
    assert_eq!(feed(&s, "{\"a\"\n: 1}"), Fed::Rejected(4));
    assert_eq!(feed(&s, "{\"a\":  1}"), Fed::Rejected(6));
    assert_eq!(feed(&s, "{\"a\":\n  1}"), Fed::Rejected(5));
    assert_eq!(feed(&s, "[1 ,2]"), Fed::Rejected(3));
    assert_eq!(feed(&s, "[1\n,2]"), Fed::Rejected(3));
    assert_eq!(feed(&s, "{\"a\": true ,\"b\": 1}"), Fed::Rejected(11));
    assert_eq!(feed(&s, "{\"a\": \"x\"\n, \"b\": 1}"), Fed::Rejected(10));
}

/// The padding seen from a model: `'{\n  "name"            : "Randemi …"\n \n,\n"age" …'`.
#[test]
fn padded_whitespace_between_tokens_is_rejected() {
    let padded = "{\n  \"name\"            : \"Randemi\"\n \n,\n\"age\": 30\n}";
    let person = schema(json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]
    }));
    let key_end = padded.find("\"name\"").expect("the key") + "\"name\"".len();
    let tidy1 = padded.replace("\"            :", "\":");
    let tidy2 = tidy1.replace("\n \n,", "\n,");
    let tidy3 = tidy2.replace("\n,\n", ",\n  ");
    assert_eq!(tidy3, "{\n  \"name\": \"Randemi\",\n  \"age\": 30\n}");
    let run = tidy1.find("\n \n").expect("the blank line");
    let comma = tidy2.find("\n,").expect("the comma");
    // With `age` still required after `name`, no whitespace may follow `name`'s value (only
    // `}` could come after it); otherwise the second newline, and the `,`, are refused.
    let cases = [
        (&person, [key_end, run, comma]),
        (&Schema::any_object(), [key_end, run + 2, comma + 1]),
        (&Schema::any_value(), [key_end, run + 2, comma + 1]),
    ];
    for (s, at) in cases {
        assert_eq!(feed(s, padded), Fed::Rejected(at[0]));
        // Each kind of padding on its own.
        assert_eq!(feed(s, &tidy1), Fed::Rejected(at[1]));
        assert_eq!(feed(s, &tidy2), Fed::Rejected(at[2]));
        assert_eq!(feed(s, &tidy3), Fed::Complete);
    }
    // The mask offers no padding: after a key only `:`, after `:` a value or one space.
    let trie = byte_trie();
    let mut m = person.matcher();
    assert!(m.advance(b"{\n  \"name\""));
    assert_eq!(allowed_bytes(&m, &trie), b":");
    assert!(m.advance(b": "));
    assert!(
        !allowed_bytes(&m, &trie)
            .iter()
            .any(|b| b.is_ascii_whitespace())
    );
    // After a value with a required key still missing: only `,` (whitespace could only
    // lead to `}`).
    assert!(m.advance(b"\"Randemi\""));
    assert_eq!(allowed_bytes(&m, &trie), b",");
    // After a newline: indentation (up to 4 spaces at depth 1) or the closing `}`.
    let mut m = Schema::any_object().matcher();
    assert!(m.advance(b"{\"a\": 1\n"));
    assert_eq!(allowed_bytes(&m, &trie), b" }");
    assert!(m.advance(b"    "));
    assert_eq!(allowed_bytes(&m, &trie), b"}");
}

/// Real printers' output is accepted: `json.dumps` with and without `indent`, compact
/// separators, `JSON.stringify(v, null, 4)`, and pretty forced tool calls.
#[test]
fn pretty_printed_json_is_accepted() {
    let s = Schema::any_value();
    // json.dumps(obj, indent=2)
    let indent2 = r#"{
  "name": "Randemi",
  "age": 30,
  "tags": [
    "a b",
    "c"
  ],
  "address": {
    "city": "Paris",
    "zip": null,
    "geo": [
      [
        48.85,
        2.35
      ]
    ]
  },
  "empty": [],
  "none": {}
}"#;
    // json.dumps(obj)
    let dumps = r#"{"name": "Randemi", "age": 30, "tags": ["a b", "c"], "address": {"city": "Paris", "zip": null, "geo": [[48.85, 2.35]]}, "empty": [], "none": {}}"#;
    // json.dumps(obj, separators=(",", ":"))
    let compact = r#"{"name":"Randemi","age":30,"tags":["a b","c"],"address":{"city":"Paris","zip":null,"geo":[[48.85,2.35]]},"empty":[],"none":{}}"#;
    // JSON.stringify(obj, null, 4)
    let indent4 = {
        let v: serde_json::Value = serde_json::from_str(indent2).expect("valid");
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        serde::Serialize::serialize(&v, &mut ser).expect("serializes");
        String::from_utf8(out).expect("utf-8")
    };
    check(&s, &[indent2, dumps, compact, &indent4], &[]);
    let person = schema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"type": "object"}, "empty": {"type": "array"}, "none": {"type": "object"}
        },
        "required": ["name", "age"]
    }));
    check(&person, &[indent2, dumps, compact, &indent4], &[]);
    let call = Schema::tool_call(&[
        ("get_weather", &json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})),
        ("search", &json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]})),
    ])
    .expect("compiles");
    let pretty_call =
        "{\n  \"name\": \"search\",\n  \"parameters\": {\n    \"query\": \"rust  json\"\n  }\n}";
    check(
        &call,
        &[
            pretty_call,
            "{\"name\": \"search\", \"parameters\": {\"query\": \"rust  json\"}}",
        ],
        &[],
    );
    assert_eq!(
        feed(&call, "{\"name\": \"search\",  \"parameters\": {}}"),
        Fed::Rejected(19)
    );
}

/// `completion` from inside whitespace finishes the document.
#[test]
fn completion_after_whitespace() {
    let s = schema(json!({
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 2}, "b": {"type": "string"}},
        "required": ["a", "b"]
    }));
    for prefix in [
        "{\n  ",
        "{\"a\": ",
        "{\"a\": [\n    ",
        "{\"a\": [1, ",
        "{\"a\": [1,\n    2\n  ",
        "{\"a\": [1, 2],\n  \"b\": \"x y\"\n",
    ] {
        let mut m = s.matcher();
        assert!(m.advance(prefix.as_bytes()), "{prefix}");
        let tail = m.completion().expect("an ending");
        assert!(m.advance(&tail), "{prefix}");
        assert!(m.is_complete(), "{prefix}");
    }
}

#[test]
fn complete_and_continue() {
    let s = Schema::any_value();
    let mut m = s.matcher();
    assert!(!m.is_complete() && m.can_continue());
    assert!(m.advance(b"12"));
    assert!(m.is_complete() && m.can_continue(), "a number may go on");
    assert!(m.advance(b"e5"));
    assert!(m.is_complete());
    assert!(m.advance(b"0"));
    assert!(
        m.is_complete() && !m.can_continue(),
        "exponent digits are capped"
    );
    let mut m = s.matcher();
    assert!(m.advance(b"{\"a\":[]}"));
    assert!(m.is_complete() && !m.can_continue());
    let mut m = schema(json!({"enum": ["ab", "abc"]})).matcher();
    assert!(m.advance(b"\"ab"));
    assert!(!m.is_complete() && m.can_continue());
    let mut m = schema(json!({"enum": [1, 12]})).matcher();
    assert!(m.advance(b"1"));
    assert!(m.is_complete() && m.can_continue());
    assert!(m.advance(b"2"));
    assert!(m.is_complete() && !m.can_continue());
}

#[test]
fn advance_is_atomic() {
    let s = schema(json!({"type": "object", "properties": {"ab": {"type": "integer"}}}));
    let mut m = s.matcher();
    assert!(m.advance(b"{\"a"));
    assert!(!m.advance(b"b\":x"), "the last byte is wrong");
    assert!(m.advance(b"b\":1}"), "state unchanged by the failed call");
    assert!(m.is_complete());
}

#[test]
fn required_keys_gate_the_closing_brace() {
    let s = schema(json!({
        "type": "object",
        "properties": {"a": {"type": "null"}, "b": {"type": "null"}, "c": {"type": "null"}},
        "required": ["a", "c"]
    }));
    let t = byte_trie();
    let mut m = s.matcher();
    assert!(m.advance(b"{"));
    assert_eq!(
        allowed_bytes(&m, &t),
        b"\n \"".to_vec(),
        "no closing brace yet"
    );
    assert!(m.advance(b"\"c\":null"));
    // Whitespace only where `}` may follow it.
    assert_eq!(allowed_bytes(&m, &t), b",".to_vec());
    assert!(m.advance(b",\""));
    // Only unused keys may start: a or b.
    assert_eq!(allowed_bytes(&m, &t), b"\\ab".to_vec());
    assert!(m.advance(b"a\":null"));
    assert_eq!(allowed_bytes(&m, &t), b"\n ,}".to_vec());
    assert!(m.advance(b",\"b\":null"));
    assert_eq!(
        allowed_bytes(&m, &t),
        b"\n }".to_vec(),
        "no keys left: no comma"
    );
}

#[test]
fn escaped_and_unicode_keys() {
    let s = schema(json!({
        "type": "object",
        "properties": {"é": {"type": "null"}, "q\"k": {"type": "null"}, "😀": {"type": "null"}, "\n": {"type": "null"}}
    }));
    check(
        &s,
        &[
            r#"{"é":null}"#,
            r#"{"\u00e9":null}"#,
            r#"{"\u00E9":null}"#,
            r#"{"q\"k":null}"#,
            r#"{"q\u0022k":null}"#,
            r#"{"\ud83d\ude00":null}"#,
            r#"{"\n":null,"😀":null}"#,
        ],
        &[r#"{"\u00e8":null}"#, r#"{"q":null}"#],
    );
    // The escape dies as soon as no listed key can follow.
    assert_eq!(feed(&s, r#"{"\u01"#), Fed::Rejected(5));
    assert_eq!(feed(&s, r#"{"\ud83d\ude01"#), Fed::Rejected(13));
    // The same key spelled two ways is still a duplicate.
    assert_ne!(feed(&s, r#"{"é":null,"\u00e9":null}"#), Fed::Complete);
    let open = Schema::any_object();
    assert_ne!(feed(&open, r#"{"é":1,"\u00e9":2}"#), Fed::Complete);
    assert_eq!(feed(&open, r#"{"é":1,"\u00e8":2}"#), Fed::Complete);
}

#[test]
fn many_properties_use_the_log() {
    let mut props = serde_json::Map::new();
    for i in 0..100 {
        props.insert(format!("k{i:03}"), json!({"type": "integer"}));
    }
    let s = schema(
        json!({"type": "object", "properties": props, "required": ["k000", "k070", "k099"]}),
    );
    check(
        &s,
        &[
            r#"{"k099":1,"k070":2,"k000":3}"#,
            r#"{"k000":1,"k080":1,"k070":2,"k099":3}"#,
        ],
        &[r#"{"k000":1,"k099":2}"#],
    );
    assert_eq!(feed(&s, r#"{"k080":1,"k080":2"#), Fed::Rejected(14));
}

#[test]
fn numbers_limits() {
    let s = Schema::any_value();
    let int = "9".repeat(usize::from(MAX_INT_DIGITS));
    assert_eq!(feed(&s, &int), Fed::Complete);
    assert_eq!(feed(&s, &format!("{int}9")), Fed::Rejected(int.len()));
    let frac = format!("0.{}", "1".repeat(usize::from(MAX_FRAC_DIGITS)));
    assert_eq!(feed(&s, &frac), Fed::Complete);
    assert_eq!(feed(&s, &format!("{frac}1")), Fed::Rejected(frac.len()));
    assert_eq!(feed(&s, "1.5e99"), Fed::Complete);
    assert_eq!(feed(&s, "1e999"), Fed::Rejected(4));
    assert_eq!(feed(&s, "-"), Fed::Incomplete);
    assert_eq!(feed(&s, "[-0,0.5,1E+2,3e-1]"), Fed::Complete);
    assert_eq!(feed(&s, "[.5]"), Fed::Rejected(1));
}

/// CI failure: a random model filled `"age": {"type": "integer"}` with 24 digits, which
/// serde_json reads as the float `1.2005e+23`, so `as_i64()` failed on a valid reply.
#[test]
fn regression_integer_fields_overflowed_i64() {
    let s = schema(json!({"type": "integer"}));
    assert_eq!(usize::from(MAX_INTEGER_DIGITS), i64::MAX.to_string().len());
    for ok in [
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
        999_999_999_999_999_999,
        -1,
    ] {
        let text = ok.to_string();
        assert_eq!(feed(&s, &text), Fed::Complete, "{text}");
    }
    // One past each bound, and a 19-digit number above it at an early digit.
    assert_eq!(feed(&s, "9223372036854775808"), Fed::Rejected(18));
    assert_eq!(feed(&s, "-9223372036854775809"), Fed::Rejected(19));
    assert_eq!(feed(&s, "9300000000000000000"), Fed::Rejected(18));
    assert_eq!(feed(&s, "12005000000000000000000"), Fed::Rejected(19));
    // Plain numbers keep their wider range.
    let any = Schema::any_value();
    assert_eq!(feed(&any, "12005000000000000000000"), Fed::Complete);
}

#[test]
fn nesting_is_capped() {
    let s = Schema::any_value();
    let n = MAX_NESTING as usize;
    assert_eq!(
        feed(&s, &format!("{}{}", "[".repeat(n), "]".repeat(n))),
        Fed::Complete
    );
    assert_eq!(feed(&s, &"[".repeat(n + 1)), Fed::Rejected(n));
    // A recursive schema whose values need depth: the matcher stops offering recursion
    // early enough to close everything.
    let r = schema(json!({"type": "array", "items": {"$ref": "#"}, "maxItems": 1}));
    let mut m = r.matcher();
    for _ in 0..n {
        assert!(m.advance(b"["));
    }
    assert!(!m.advance(b"["));
    for _ in 0..n {
        assert!(m.advance(b"]"));
    }
    assert!(m.is_complete());
    // Required recursion that ends: depth 3 needed, so `[` is refused near the limit.
    let deep = schema(json!({
        "$defs": {"three": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "array"}}}},
        "anyOf": [{"$ref": "#/$defs/three"}, {"type": "array", "items": {"$ref": "#"}}]
    }));
    let mut m = deep.matcher();
    let mut opened = 0;
    while m.advance(b"[") {
        opened += 1;
    }
    assert_eq!(opened, n);
    for _ in 0..opened {
        assert!(m.advance(b"]"), "every open array can be closed");
    }
    assert!(m.is_complete());
}

#[test]
fn tool_calls() {
    let s = schema(tool_call_schema(&[
        (
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ),
        (
            "get_time",
            json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
        ),
        ("noop", json!({})),
    ]));
    check(
        &s,
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris"}}"#,
            r#"{"parameters":{},"name":"get_time"}"#,
            r#"{"name":"noop","parameters":[1]}"#,
        ],
        &[
            r#"{"name":"get_weather","parameters":{}}"#,
            r#"{"name":"get_time","parameters":{"city":"x"}}"#,
            r#"{"name":"other","parameters":{}}"#,
            r#"{"name":"noop"}"#,
        ],
    );
    let t = byte_trie();
    let mut m = s.matcher();
    assert!(m.advance(br#"{"name":"get_"#));
    assert_eq!(allowed_bytes(&m, &t), b"tw".to_vec());
}

#[test]
fn overlapping_branches_merge() {
    let s = schema(
        json!({"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"enum": [1, 2]}]}}),
    );
    let mut m = s.matcher();
    let doc: String = format!("[{}1]", "1,".repeat(200));
    assert!(m.advance(doc.as_bytes()));
    assert!(m.is_complete());
    assert!(format!("{m:?}").contains("threads: 1"), "{m:?}");
}

#[test]
fn tool_call_documents_keep_their_refs() {
    let weather = json!({
        "$defs": {"unit": {"enum": ["C", "F"]}},
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"}},
        "required": ["city"]
    });
    let time = json!({"type": "object", "properties": {"tz": {"$ref": "#/$defs/tz"}}, "$defs": {"tz": {"type": "string"}}});
    let s = Schema::tool_call(&[("get_weather", &weather), ("get_time", &time)]).unwrap();
    check(
        &s,
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris","unit":"C"}}"#,
            r#"{"name":"get_time","parameters":{"tz":"UTC"}}"#,
        ],
        &[
            r#"{"name":"get_weather","parameters":{"city":"Paris","unit":"K"}}"#,
            r#"{"name":"get_time","parameters":{"tz":1}}"#,
            r#"{"name":"get_time","parameters":{},"x":1}"#,
            r#"{"name":"get_time"}"#,
        ],
    );
    // `name` comes first, so one thread matches the arguments.
    assert_eq!(feed(&s, r#"{"parameters":{}"#), Fed::Rejected(2));
    let mut m = s.matcher();
    assert!(m.advance(br#"{"name":"get_weather","parameters":{"city":"Par"#));
    assert!(format!("{m:?}").contains("threads: 1"), "{m:?}");
    // Errors say which tool.
    let bad = json!({"type": "string", "pattern": "x"});
    let e = Schema::tool_call(&[("ok", &json!({})), ("grep", &bad)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported JSON Schema keyword `pattern` at tool \"grep\" parameters #/pattern: it \
         restricts which values are valid and constrained decoding cannot enforce it"
    );
    let e = Schema::tool_call(&[("never", &json!(false))]).unwrap_err();
    assert!(e.to_string().contains("tool \"never\""), "{e}");
    assert!(Schema::tool_call(&[]).is_err());
}

#[test]
fn types_are_shareable() {
    fn send_sync<T: Send + Sync>() {}
    fn send_clone_debug<T: Send + Clone + std::fmt::Debug>() {}
    send_sync::<Schema>();
    send_sync::<super::super::TokenTrie>();
    send_clone_debug::<super::super::Matcher>();
    send_clone_debug::<Schema>();
}

/// The ending `completion` gives after `prefix`, checked to finish the document.
fn ending_bytes(s: &Schema, prefix: &[u8]) -> Vec<u8> {
    let mut m = s.matcher();
    assert!(m.advance(prefix), "{prefix:?}");
    let tail = m.completion().expect("an ending");
    assert!(m.advance(&tail) && m.is_complete(), "{prefix:?} + {tail:?}");
    tail
}

fn ending(s: &Schema, prefix: &str) -> String {
    String::from_utf8(ending_bytes(s, prefix.as_bytes())).expect("UTF-8")
}

#[test]
fn completion_is_short_and_valid() {
    let person = schema(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "tags": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "kind": {"enum": ["human", "cat"]},
            "pet": {"type": "object", "properties": {"legs": {"type": "integer"}}, "required": ["legs"]}
        },
        "required": ["name", "tags", "pet"]
    }));
    assert_eq!(
        ending(&person, ""),
        r#"{"name":"aa","pet":{"legs":0},"tags":[0,0]}"#
    );
    assert_eq!(
        ending(&person, r#"{"tags": [1"#),
        r#",0],"name":"aa","pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "A"#),
        r#"a","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"ki"#),
        r#"nd":"cat","name":"aa","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"kind": "hu"#),
        r#"man","name":"aa","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "x\u00"#),
        r#"00","tags":[0,0],"pet":{"legs":0}}"#
    );
    assert_eq!(
        ending(&person, r#"{"name": "x\ud83d"#),
        r#"\uDC00","tags":[0,0],"pet":{"legs":0}}"#
    );
    // Mid-number, mid-escape in a key, a raw character split in two.
    let any = Schema::any_object();
    assert_eq!(ending(&any, r#"{"a": -"#), "0}");
    assert_eq!(ending(&any, r#"{"a": 1.5e"#), "0}");
    assert_eq!(ending(&any, r#"{"\u00"#), r#"00":0}"#);
    let split = "{\"é\": \"é".as_bytes();
    assert_eq!(ending_bytes(&any, &split[..split.len() - 1]), b"\x80\"}");
    assert_eq!(ending(&any, "{}"), "");
    // A listed key reached through a partial escape.
    let keys =
        schema(json!({"type": "object", "properties": {"é": {"type": "null"}}, "required": ["é"]}));
    assert_eq!(ending(&keys, r#"{"\u00"#), r#"E9":null}"#);
    // Recursion that must end: the shortest value, not the first alternative.
    let tree = schema(
        json!({"anyOf": [{"type": "array", "items": {"$ref": "#"}, "minItems": 2}, {"const": "leaf"}]}),
    );
    assert_eq!(ending(&tree, "[[["), r#""leaf","leaf"],"leaf"],"leaf"]"#);
    // A tool call: the name in progress, then its arguments.
    let weather =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let call = Schema::tool_call(&[("get_weather", &weather), ("noop", &json!({}))]).unwrap();
    assert_eq!(
        ending(&call, r#"{"name": "get"#),
        r#"_weather","parameters":{"city":""}}"#
    );
    assert_eq!(ending(&call, ""), r#"{"name":"noop","parameters":0}"#);
}
