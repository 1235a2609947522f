//! `ferrollama prompt-guard` through the real binary on the tiny seeded model of
//! `testdata/deberta` (probabilities checked against the numpy port of transformers).

use std::path::PathBuf;

mod common;
use common::{bin, run, stderr};

use serde_json::Value;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/deberta/model")
}

/// Reference probabilities of the text named `name` in expected.json.
fn reference(name: &str) -> (String, Vec<f64>) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/deberta/expected.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json");
    let c = v["model"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .expect("case")
        .clone();
    let probs = c["probs"]
        .as_array()
        .expect("probs")
        .iter()
        .map(|x| x.as_f64().expect("p"))
        .collect();
    (c["text"].as_str().expect("text").to_string(), probs)
}

#[test]
fn json_reports_probabilities_score_and_verdict() {
    let (text, p) = reference("injection");
    let m = model();
    let out = run(
        bin()
            .args(["prompt-guard", "--json", "--mode", "injection", "-m"])
            .arg(&m)
            .arg(&text),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (k, want) in ["benign", "injection", "jailbreak"].iter().zip(&p) {
        let got = v[k].as_f64().expect("p");
        assert!(
            (got - want).abs() < 1e-4 * want + 1e-5,
            "{k}: {got} vs {want}"
        );
    }
    let score = v["score"].as_f64().expect("score");
    assert!((score - (p[1] + p[2])).abs() < 1e-4);
    assert_eq!(v["mode"], "injection");
    assert_eq!(v["threshold"], 0.9);
    assert_eq!(v["flagged"], score > 0.9);
    assert_eq!(
        (v["windows"].as_u64(), v["tokens"].as_u64()),
        (Some(1), Some(26))
    );
}

#[test]
fn jsonl_answers_every_line_and_fails_on_bad_ones() {
    let (text, _) = reference("hello");
    let input = format!(
        "{}\nnot json\n{{\"txt\": 1}}\n{}\n",
        serde_json::json!({ "text": text }),
        serde_json::json!({ "text": "" })
    );
    let out = run(
        bin().args(["prompt-guard", "--jsonl", "-m"]).arg(model()),
        input.as_bytes(),
    );
    assert!(!out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["mode"], "jailbreak");
    assert!(lines[1]["error"].is_string() && lines[2]["error"].is_string());
    assert_eq!(lines[3]["tokens"], 0);
    let err = stderr(&out);
    assert!(err.contains("2 texts") && err.contains("texts/s"), "{err}");
}

#[test]
fn human_output_and_missing_model() {
    let out = run(
        bin().args(["prompt-guard", "-m"]).arg(model()),
        b"Hello, how are you?",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("BENIGN") && s.contains("JAILBREAK") && s.contains("jailbreak score"),
        "{s}"
    );
    assert!(s.contains("not flagged") || s.contains("FLAGGED"), "{s}");
    let out = run(
        bin().args(["prompt-guard", "-m", "/nonexistent/pg", "x"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));
}
