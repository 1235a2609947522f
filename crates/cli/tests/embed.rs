//! `ferrollama embed`: one vector for a text argument, and `--jsonl` line by line (a bad
//! line answered with an error in place, exit status 1), vectors equal to
//! sentence-transformers' (testdata/minilm/expected.json). Needs all-MiniLM-L6-v2
//! (FERROLLAMA_MINILM, set by scripts/test).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use serde_json::Value;

fn minilm() -> String {
    std::env::var("FERROLLAMA_MINILM").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrollama/models/all-MiniLM-L6-v2",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

fn expected() -> Vec<(String, Vec<f64>)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/minilm/expected.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
        * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn one_text_prints_one_vector() {
    let cases = expected();
    let out = common::run(
        common::bin().args(["embed", "-m", &minilm(), &cases[0].0]),
        b"",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cosine(&floats(&v), &cases[0].1) >= 0.9999);
}

#[test]
fn jsonl_answers_every_line_in_order() {
    let cases = expected();
    let input = format!(
        "{}\nnot json\n{}\n{{\"text\": \"\"}}\n",
        serde_json::json!({"text": cases[5].0}),
        serde_json::json!({"text": cases[13].0}),
    );
    let out = common::run(
        common::bin().args(["embed", "--jsonl", "-m", &minilm()]),
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(cosine(&floats(&lines[0]["embedding"]), &cases[5].1) >= 0.9999);
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("line 2: not JSON"),
        "{}",
        lines[1]
    );
    assert!(cosine(&floats(&lines[2]["embedding"]), &cases[13].1) >= 0.9999);
    assert!(
        lines[3]["error"].as_str().unwrap().contains("empty"),
        "{}",
        lines[3]
    );
    assert!(
        common::stderr(&out).contains("embed: 2 texts"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let out = common::run(
        common::bin().args(["embed", "-m", "/nonexistent/model", "x"]),
        b"",
    );
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("not a folder"),
        "{}",
        common::stderr(&out)
    );
}
