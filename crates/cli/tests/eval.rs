#![allow(clippy::unwrap_used)]
//! `ferrollama eval` end to end on the tiny model with the task files of testdata/eval:
//! the table, the per-sample JSON and its consistency with lm-eval's definitions, few-shot
//! prompts drawn as lm-eval draws them, and bad task files and rows named by field / line.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    root().join("testdata/tiny/tiny-f16.gguf")
}

/// Runs `eval` on the tiny model; (success, stdout, stderr, JSON written).
fn eval(task: &Path, extra: &[&str]) -> (bool, String, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let o = common::run(
        common::bin()
            .arg("eval")
            .arg("-m")
            .arg(tiny())
            .arg("--task")
            .arg(task)
            .arg("--json")
            .arg(&out)
            .args(["-t", "2"])
            .args(extra),
        b"",
    );
    let v = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        common::stderr(&o),
        v,
    )
}

fn argmax(xs: &[f64]) -> usize {
    let mut b = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[b] {
            b = i;
        }
    }
    b
}

#[test]
fn multiple_choice_task_end_to_end() {
    let (ok, stdout, stderr, v) = eval(&root().join("testdata/eval/mc.yaml"), &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("tiny_mc") && stdout.contains("acc_norm"),
        "{stdout}"
    );
    assert_eq!(v["n"], 5);
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5);
    let gold = [0usize, 1, 2, 0, 1];
    let (mut acc, mut acc_norm) = (Vec::new(), Vec::new());
    for (s, &g) in samples.iter().zip(&gold) {
        let choices: Vec<String> = serde_json::from_value(s["choices"].clone()).unwrap();
        let lls: Vec<f64> = serde_json::from_value(s["loglikelihoods"].clone()).unwrap();
        assert_eq!(lls.len(), choices.len());
        assert!(lls.iter().all(|l| *l < 0.0));
        // The continuation is the choice after the target delimiter.
        assert_eq!(s["continuations"][0], format!(" {}", choices[0]));
        let pred = argmax(&lls);
        let normed: Vec<f64> = lls
            .iter()
            .zip(&choices)
            .map(|(l, c)| l / c.chars().count() as f64)
            .collect();
        let pred_norm = argmax(&normed);
        assert_eq!(s["prediction"]["acc"], pred);
        assert_eq!(s["prediction"]["acc_norm"], pred_norm);
        let a = f64::from(u8::from(pred == g));
        let an = f64::from(u8::from(pred_norm == g));
        assert_eq!(s["metrics"]["acc,none"], a);
        assert_eq!(s["metrics"]["acc_norm,none"], an);
        acc.push(a);
        acc_norm.push(an);
    }
    // Aggregates: the mean and sample-stddev / sqrt(n), by hand.
    for (row, xs) in v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&acc, &acc_norm])
    {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((row["value"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert!((row["stderr"].as_f64().unwrap() - (var / n).sqrt()).abs() < 1e-12);
        assert_eq!(row["n"], 5);
    }

    // One pass per choice (--no-prefix-sharing) scores the same on this F16 model.
    let (ok, _, stderr, v2) = eval(
        &root().join("testdata/eval/mc.yaml"),
        &["--no-prefix-sharing"],
    );
    assert!(ok, "{stderr}");
    for (a, b) in samples.iter().zip(v2["samples"].as_array().unwrap()) {
        for (x, y) in a["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["loglikelihoods"].as_array().unwrap())
        {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-4);
        }
    }

    // --limit and few-shot: lm-eval's random.Random(1234).sample(docs, 3) per document in
    // order, the document itself dropped: doc 0 gets docs 3 and 4 as its examples.
    let (ok, _, stderr, v) = eval(
        &root().join("testdata/eval/mc.yaml"),
        &["--limit", "2", "--num-fewshot", "2"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(v["n"], 2);
    assert_eq!(v["num_fewshot"], 2);
    assert_eq!(
        v["samples"][0]["prompt"],
        "Question: What is frozen water called?\nAnswer: ice\n\nQuestion: Which is the \
         largest?\nAnswer: elephant\n\nQuestion: What color is the sky on a clear day?\nAnswer:"
    );
    // Doc 1 draws [0, 4, 2]: examples docs 0 and 4.
    let p1 = v["samples"][1]["prompt"].as_str().unwrap();
    assert!(
        p1.starts_with("Question: What color is the sky on a clear day?\nAnswer: blue\n\nQuestion: Which is the largest?"),
        "{p1}"
    );
}

#[test]
fn chat_template_prompts() {
    // One user turn holding the few-shot prompt; the choice is the reply (no delimiter).
    let mc = root().join("testdata/eval/mc.yaml");
    let (ok, _, stderr, v) = eval(
        &mc,
        &[
            "--limit",
            "1",
            "--num-fewshot",
            "1",
            "--apply-chat-template",
        ],
    );
    assert!(ok, "{stderr}");
    let s = &v["samples"][0];
    let msgs = s["prompt"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["role"], "user");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .ends_with("Answer: ice\n\nQuestion: What color is the sky on a clear day?\nAnswer:")
    );
    assert_eq!(s["continuations"][0], "blue");
    // As multiturn: the example is a user turn answered by an assistant turn.
    let (ok, _, stderr, v) = eval(
        &mc,
        &[
            "--limit",
            "1",
            "--num-fewshot",
            "1",
            "--apply-chat-template",
            "--fewshot-as-multiturn",
        ],
    );
    assert!(ok, "{stderr}");
    let roles: Vec<&str> = v["samples"][0]["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(v["samples"][0]["prompt"][1]["content"], "ice");
}

#[test]
fn generation_and_rolling_tasks_run() {
    let (ok, stdout, stderr, v) = eval(&root().join("testdata/eval/gen.yaml"), &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("strict-match") && stdout.contains("flexible-extract"));
    for s in v["samples"].as_array().unwrap() {
        let resp = s["response"].as_str().unwrap();
        assert!(!resp.contains("Question:") && !resp.contains("\n\n"));
        // The strict filter finds no "#### N" in the tiny model's babble.
        assert_eq!(s["filtered"]["strict-match"], "[invalid]");
        assert_eq!(s["metrics"]["exact_match,strict-match"], 0.0);
    }

    let (ok, _, stderr, v) = eval(&root().join("testdata/eval/rolling.yaml"), &[]);
    assert!(ok, "{stderr}");
    let samples = v["samples"].as_array().unwrap();
    let ll: f64 = samples
        .iter()
        .map(|s| s["loglikelihoods"][0].as_f64().unwrap())
        .sum();
    // 44 + 48 bytes, 9 + 10 words (re.split on whitespace).
    let rows = v["metrics"].as_array().unwrap();
    let get = |m: &str| {
        rows.iter()
            .find(|r| r["metric"] == m)
            .unwrap_or_else(|| panic!("{m} missing"))
    };
    assert!((get("bits_per_byte")["value"].as_f64().unwrap() + ll / 92.0 / 2f64.ln()).abs() < 1e-9);
    assert!((get("byte_perplexity")["value"].as_f64().unwrap() - (-ll / 92.0).exp()).abs() < 1e-6);
    assert!(
        (get("word_perplexity")["value"].as_f64().unwrap() / (-ll / 19.0).exp() - 1.0).abs() < 1e-9
    );
    assert_eq!(get("bits_per_byte")["stderr"], Value::Null);
}

/// Writes a task file (and rows) into a fresh folder and runs eval on it.
fn eval_files(yaml: &str, rows: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.jsonl"), rows).unwrap();
    let task = dir.path().join("t.yaml");
    std::fs::write(&task, yaml).unwrap();
    let (ok, _, stderr, _) = eval(&task, &[]);
    (ok, stderr)
}

const GOOD_ROWS: &str = "{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"l\": 0}\n";

#[test]
fn bad_task_files_and_rows_are_named() {
    let task = |extra: &str| {
        format!(
            "dataset_path: rows.jsonl\noutput_type: multiple_choice\ndoc_to_text: \"{{{{q}}}}\"\n\
             doc_to_target: l\ndoc_to_choice: c\n{extra}"
        )
    };
    // The good task runs, so the failures below are about what each one changes.
    let (ok, e) = eval_files(&task(""), GOOD_ROWS);
    assert!(ok, "{e}");
    // A misspelt field: named, with its line.
    let (ok, e) = eval_files(&task("num_fewshots: 2\n"), GOOD_ROWS);
    assert!(!ok);
    assert!(e.contains("num_fewshots") && e.contains("line 6"), "{e}");
    // An unknown output type.
    let (ok, e) = eval_files(
        &task("").replace("multiple_choice", "multi_choice"),
        GOOD_ROWS,
    );
    assert!(!ok);
    assert!(
        e.contains("output_type") || e.contains("multi_choice"),
        "{e}"
    );
    // A bad Jinja template names its field.
    let (ok, e) = eval_files(&task("").replace("{{q}}", "{{q"), GOOD_ROWS);
    assert!(!ok);
    assert!(e.contains("doc_to_text"), "{e}");
    // A bad regex in a filter names where it is.
    let (ok, e) = eval_files(
        &task(
            "filter_list:\n  - name: f\n    filter:\n      - {function: regex, regex_pattern: \"(\"}\n",
        ),
        GOOD_ROWS,
    );
    assert!(!ok);
    assert!(e.contains("filter_list[0].filter[0].regex_pattern"), "{e}");
    // A row that is not JSON, and a row whose gold index is out of range: file and line.
    let (ok, e) = eval_files(&task(""), &format!("{GOOD_ROWS}\n{{oops\n"));
    assert!(!ok);
    assert!(e.contains("rows.jsonl:3"), "{e}");
    let (ok, e) = eval_files(
        &task(""),
        &format!("{GOOD_ROWS}{{\"q\": \"b\", \"c\": [\"x\", \"y\"], \"l\": 7}}\n"),
    );
    assert!(!ok);
    assert!(e.contains("rows.jsonl:2") && e.contains("7"), "{e}");
    // A row missing a field the template uses.
    let (ok, e) = eval_files(
        &task(""),
        &format!("{GOOD_ROWS}{{\"c\": [\"x\", \"y\"], \"l\": 0}}\n"),
    );
    assert!(!ok);
    assert!(
        e.contains("rows.jsonl:2") && e.contains("doc_to_text"),
        "{e}"
    );
    // Parquet is refused with a clear reason.
    let (ok, e) = eval_files(&task("").replace("rows.jsonl", "rows.parquet"), GOOD_ROWS);
    assert!(!ok);
    assert!(e.contains("Parquet is not supported"), "{e}");
}

/// Generation and scoring through `--base-url` against `ferrollama serve` give what the
/// model gives in process.
#[test]
fn base_url_generation_matches_in_process() {
    let srv = common::server::Server::start(&["-m", &tiny().to_string_lossy(), "--threads", "1"]);
    let url = format!("http://127.0.0.1:{}", srv.port);
    let gen_task = root().join("testdata/eval/gen.yaml");
    let (ok, _, stderr, local) = eval(&gen_task, &[]);
    assert!(ok, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("http.json");
    // `ferrollama eval --base-url` on `task` against the server: its --json report.
    let over_http = |task: &std::path::Path| -> Value {
        let o = common::run(
            common::bin()
                .args(["eval", "-m", "tiny-f16", "--base-url", &url, "--task"])
                .arg(task)
                .arg("--json")
                .arg(&out),
            b"",
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
    };
    let http = over_http(&gen_task);
    let responses = |v: &Value| -> Vec<Value> {
        v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["response"].clone())
            .collect()
    };
    assert_eq!(responses(&http), responses(&local));
    assert!(
        responses(&local)
            .iter()
            .all(|r| !r.as_str().unwrap().is_empty())
    );

    // Multiple choice scored by echoed log-probabilities (lm-eval's local-completions
    // requests) equals in-process scoring on this F16 model.
    let mc = root().join("testdata/eval/mc.yaml");
    let (ok, _, stderr, local) = eval(&mc, &[]);
    assert!(ok, "{stderr}");
    let http = over_http(&mc);
    let lls = |v: &Value| -> Vec<f64> {
        v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["loglikelihoods"].as_array().unwrap().clone())
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (lls(&http), lls(&local));
    assert_eq!(a.len(), 14);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "server {x} vs in process {y}");
    }
    assert_eq!(http["metrics"][0]["value"], local["metrics"][0]["value"]);
}
