//! One test per supported keyword (what it admits and what it rejects), then the refusals.

use serde_json::json;

use super::super::{ConstraintError, MAX_SCHEMA_DEPTH, Schema};
use super::{Fed, check, feed, schema};

#[test]
fn type_each() {
    check(
        &schema(json!({"type": "string"})),
        &[r#""a""#, r#""""#],
        &["1", "null", "\"a"],
    );
    check(
        &schema(json!({"type": "number"})),
        &["1", "-2.5e3", "0.0", "-0"],
        &[r#""1""#, "01", "1."],
    );
    let int = schema(json!({"type": "integer"}));
    check(&int, &["0", "-17", "123456"], &["1.5", "01"]);
    // Integer-valued for the validator (as JSON Schema says), but never generated.
    for t in ["1e3", "-0", "1.0"] {
        assert_ne!(feed(&int, t), Fed::Complete, "{t}");
    }
    check(
        &schema(json!({"type": "boolean"})),
        &["true", "false"],
        &["null", "1", "tru"],
    );
    check(
        &schema(json!({"type": "null"})),
        &["null"],
        &["false", "nul"],
    );
    check(
        &schema(json!({"type": "object"})),
        &["{}", r#"{"a":[1,{"b":null}]}"#],
        &["[]", "1"],
    );
    check(
        &schema(json!({"type": "array"})),
        &["[]", r#"[1,"a",[],{}]"#],
        &["{}", "[1,]", "[,1]"],
    );
}

#[test]
fn type_list() {
    let s = schema(json!({"type": ["string", "null"], "minLength": 2}));
    check(&s, &[r#""ab""#, "null"], &[r#""a""#, "1", "true"]);
    // integer and number together: number wins.
    check(
        &schema(json!({"type": ["integer", "number"]})),
        &["1.5", "2"],
        &["null"],
    );
}

#[test]
fn properties_required_and_default_additional() {
    let s = schema(json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"]
    }));
    check(
        &s,
        &[r#"{"a":1}"#, r#"{"b":"x","a":2}"#, r#"{ "a": 1, "b": "" }"#],
        // Missing required, unknown key (default: only listed keys), duplicate, wrong type.
        &["{}", r#"{"b":"x"}"#, r#"{"a":1,"c":2}"#, r#"{"a":"1"}"#],
    );
    assert_eq!(feed(&s, r#"{"a":1,"a":2}"#), Fed::Rejected(8));
}

#[test]
fn additional_properties() {
    let open = schema(json!({"properties": {"a": {"type": "null"}}, "additionalProperties": true}));
    check(
        &open,
        &[r#"{"a":null,"zz":[1]}"#, r#"{"b":1,"c":2}"#],
        &[r#"{"a":1}"#],
    );
    assert_eq!(feed(&open, r#"{"b":1,"b":2}"#), Fed::Rejected(9));
    let typed = schema(json!({"type": "object", "additionalProperties": {"type": "integer"}}));
    check(&typed, &[r#"{"x":1,"y":-2}"#, "{}"], &[r#"{"x":"1"}"#]);
    assert_eq!(feed(&typed, r#"{"x":1,"x":2}"#), Fed::Rejected(9));
    let closed = schema(json!({"type": "object", "additionalProperties": false}));
    check(&closed, &["{}"], &[r#"{"a":1}"#]);
    // Without `properties`, any key.
    check(
        &schema(json!({"type": "object"})),
        &[r#"{"anything":true}"#],
        &[],
    );
    // A required key that is not listed follows `additionalProperties`.
    let req = schema(
        json!({"required": ["k"], "additionalProperties": {"type": "string"}, "type": "object"}),
    );
    check(
        &req,
        &[r#"{"k":"v"}"#, r#"{"k":"v","j":"w"}"#],
        &["{}", r#"{"k":1}"#],
    );
    // Left out, it allows just the required key (with any value), not other keys.
    let sloppy = schema(json!({"properties": {"a": {"type": "null"}}, "required": ["a", "b"]}));
    check(
        &sloppy,
        &[r#"{"a":null,"b":[1]}"#],
        &[r#"{"a":null}"#, r#"{"a":null,"b":1,"c":1}"#],
    );
    let never = json!({"type": "object", "properties": {}, "required": ["b"], "additionalProperties": false});
    assert!(matches!(
        Schema::compile(&never),
        Err(ConstraintError::Unsatisfiable { .. })
    ));
}

#[test]
fn items_and_bounds() {
    let s = schema(
        json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}),
    );
    check(
        &s,
        &["[1]", "[1,2,3]", "[ 1, 2 ]"],
        &["[]", "[1,2,3,4]", r#"["a"]"#, "[1.5]"],
    );
    let exact = schema(json!({"type": "array", "minItems": 2, "maxItems": 2}));
    check(&exact, &[r#"[null,"x"]"#], &["[1]", "[1,2,3]"]);
}

#[test]
fn string_length_counts_characters() {
    let s = schema(json!({"type": "string", "minLength": 2, "maxLength": 3}));
    check(
        &s,
        &[
            r#""ab""#,
            r#""é😀""#,
            r#""\u00e9\ud83d\ude00x""#,
            r#""\n\t""#,
        ],
        &[r#""a""#, r#""abcd""#, r#""😀😀😀😀""#],
    );
    check(
        &schema(json!({"type": "string", "maxLength": 0})),
        &[r#""""#],
        &[r#""a""#],
    );
}

#[test]
fn enum_and_const() {
    let s = schema(json!({"enum": ["red", "green", 1, null, [1, 2], {"a": true}]}));
    check(
        &s,
        &[
            r#""red""#,
            r#""green""#,
            "1",
            "null",
            "[1,2]",
            r#"{"a":true}"#,
        ],
        &[r#""blue""#, r#""gree""#, "12", "2", "[1]"],
    );
    check(
        &schema(json!({"const": "x"})),
        &[r#""x""#],
        &[r#""y""#, r#""xx""#],
    );
    // Keywords next to `enum` filter it.
    check(
        &schema(json!({"type": "string", "enum": ["a", 1, "b"]})),
        &[r#""a""#],
        &["1"],
    );
    check(
        &schema(json!({"enum": ["a", "b"], "const": "b"})),
        &[r#""b""#],
        &[r#""a""#],
    );
    // A prefix literal and its extension.
    check(
        &schema(json!({"enum": [1, 12, 123]})),
        &["1", "12", "123"],
        &["1234", "2"],
    );
    let e = Schema::compile(&json!({"type": "integer", "enum": ["a"]})).unwrap_err();
    assert!(matches!(e, ConstraintError::Unsatisfiable { .. }), "{e}");
}

#[test]
fn any_of_and_one_of() {
    for kw in ["anyOf", "oneOf"] {
        let s = schema(json!({kw: [
            {"type": "integer"},
            {"type": "string", "maxLength": 2},
            {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}
        ]}));
        check(
            &s,
            &["5", r#""ab""#, r#"{"x":true}"#],
            &["1.5", r#""abc""#, "{}", "null"],
        );
    }
    // Overlapping branches: both stay alive, then merge.
    let s = schema(json!({"anyOf": [{"type": "string"}, {"type": "string", "maxLength": 1}]}));
    check(&s, &[r#""a""#, r#""abc""#], &[]);
}

#[test]
fn refs_defs_definitions_and_recursion() {
    let s = schema(json!({
        "$defs": {"node": {
            "type": "object",
            "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["v"]
        }},
        "$ref": "#/$defs/node"
    }));
    check(
        &s,
        &[r#"{"v":1,"kids":[{"v":2,"kids":[{"v":3}]}]}"#],
        &[r#"{"v":1,"kids":[{}]}"#],
    );
    let d = schema(
        json!({"definitions": {"n": {"type": "null"}}, "type": "array", "items": {"$ref": "#/definitions/n"}}),
    );
    check(&d, &["[null,null]"], &["[1]"]);
    // The whole document, and escaped pointer tokens.
    let r =
        schema(json!({"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#"}}]}));
    check(&r, &["[[1,[]],2]"], &["[[1.5]]"]);
    let esc = schema(json!({"$defs": {"a/b c": {"const": 1}}, "$ref": "#/$defs/a~1b%20c"}));
    check(&esc, &["1"], &["2"]);
    // Pydantic v1 style: a lone `allOf` around a `$ref`, with a description.
    let v1 = schema(json!({
        "definitions": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
        "type": "object",
        "properties": {"p": {"description": "a point", "allOf": [{"$ref": "#/definitions/P"}]}},
        "required": ["p"]
    }));
    check(&v1, &[r#"{"p":{"x":1}}"#], &[r#"{"p":{}}"#]);
}

#[test]
fn annotations_are_ignored() {
    let s = schema(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "T", "description": "d", "default": 3, "examples": [1], "format": "date-time",
        "$comment": "c", "x-vendor": {"anything": 1},
        "type": "string"
    }));
    check(&s, &[r#""not a date""#], &["3"]);
}

#[test]
fn empty_and_boolean_schemas() {
    for v in [json!({}), json!(true)] {
        check(
            &schema(v),
            &["1", r#""s""#, "null", r#"{"a":[true]}"#],
            &["", "nul"],
        );
    }
    let e = Schema::compile(&json!(false)).unwrap_err();
    assert!(matches!(e, ConstraintError::Unsatisfiable { .. }), "{e}");
    // An optional property whose schema is `false` is simply never offered.
    let s = schema(json!({"properties": {"a": false, "b": {"type": "null"}}}));
    check(&s, &[r#"{"b":null}"#, "{}"], &[r#"{"a":1}"#]);
}

#[test]
fn unsupported_keywords_name_keyword_and_pointer() {
    let cases = [
        (
            json!({"type": "string", "pattern": "^a"}),
            "pattern",
            "#/pattern",
        ),
        (
            json!({"properties": {"n": {"type": "number", "minimum": 0}}}),
            "minimum",
            "#/properties/n/minimum",
        ),
        (json!({"maximum": 1}), "maximum", "#/maximum"),
        (json!({"multipleOf": 2}), "multipleOf", "#/multipleOf"),
        (json!({"not": {}}), "not", "#/not"),
        (json!({"allOf": [{}, {}]}), "allOf", "#/allOf"),
        (json!({"if": {}}), "if", "#/if"),
        (
            json!({"patternProperties": {}}),
            "patternProperties",
            "#/patternProperties",
        ),
        (
            json!({"items": {"uniqueItems": true}}),
            "uniqueItems",
            "#/items/uniqueItems",
        ),
        (
            json!({"anyOf": [{"minProperties": 1}]}),
            "minProperties",
            "#/anyOf/0/minProperties",
        ),
        (json!({"items": [{}]}), "items", "#/items"),
        (json!({"type": "object", "anyOf": [{}]}), "type", "#/type"),
        (
            json!({"$ref": "#/$defs/a", "maxLength": 3, "$defs": {"a": {}}}),
            "maxLength",
            "#/maxLength",
        ),
        (json!({"$ref": "http://x/y.json"}), "$ref", "#/$ref"),
    ];
    for (v, kw, ptr) in cases {
        match Schema::compile(&v) {
            Err(ConstraintError::Unsupported {
                keyword, pointer, ..
            }) => {
                assert_eq!((keyword.as_str(), pointer.as_str()), (kw, ptr), "{v}");
            }
            other => panic!("{v}: expected Unsupported, got {other:?}"),
        }
    }
    let msg = Schema::compile(&json!({"pattern": "x"}))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`pattern`") && msg.contains("#/pattern"),
        "{msg}"
    );
}

#[test]
fn malformed_schemas() {
    for v in [
        json!({"type": "text"}),
        json!({"type": []}),
        json!({"properties": []}),
        json!({"required": [1]}),
        json!({"minLength": -1}),
        json!({"enum": 1}),
        json!({"anyOf": []}),
        json!({"$ref": "#/$defs/missing"}),
        json!(1),
        json!({"items": 3}),
    ] {
        assert!(
            matches!(Schema::compile(&v), Err(ConstraintError::Invalid { .. })),
            "{v} should be invalid"
        );
    }
}

#[test]
fn hostile_schemas_are_bounded() {
    // Deep nesting.
    let mut v = json!({"type": "integer"});
    for _ in 0..MAX_SCHEMA_DEPTH + 5 {
        v = json!({"type": "array", "items": v});
    }
    assert!(matches!(
        Schema::compile(&v),
        Err(ConstraintError::TooDeep { .. })
    ));
    // Too many nodes.
    let props: serde_json::Map<String, serde_json::Value> =
        (0..20_000).map(|i| (format!("p{i}"), json!({}))).collect();
    assert!(matches!(
        Schema::compile(&json!({"properties": props})),
        Err(ConstraintError::TooLarge { .. })
    ));
    // Reference cycles with no base case.
    for v in [
        json!({"$ref": "#"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}),
        json!({"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]}),
        json!({"type": "array", "minItems": 1, "items": {"$ref": "#"}}),
    ] {
        assert!(
            matches!(
                Schema::compile(&v),
                Err(ConstraintError::Unsatisfiable { .. })
            ),
            "{v}"
        );
    }
    // A long chain of unions compiles quickly.
    let mut defs = serde_json::Map::new();
    for i in 0..1500 {
        defs.insert(
            format!("d{i}"),
            json!({"anyOf": [{"$ref": format!("#/$defs/d{}", i + 1)}, {"const": i}]}),
        );
    }
    defs.insert("d1500".into(), json!({"type": "null"}));
    let t = std::time::Instant::now();
    let r = Schema::compile(&json!({"$defs": defs, "$ref": "#/$defs/d0"}));
    assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    if let Ok(s) = r {
        assert_eq!(feed(&s, "null"), Fed::Complete);
    }
}

#[test]
fn any_object_and_any_value() {
    let o = Schema::any_object();
    check(
        &o,
        &["{}", r#"{"a":{"b":[1,2,{"c":"d"}]},"e":null}"#],
        &["[]", "1", r#""s""#],
    );
    let v = Schema::any_value();
    check(&v, &["[]", "1", r#""s""#, "true"], &[]);
}
