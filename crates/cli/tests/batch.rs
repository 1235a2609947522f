#![allow(clippy::unwrap_used)]
//! `ferrollama batch` on the tiny model: every line answered once, bad lines in the error
//! file, duplicates refused up front, shards partitioning the input, and a run killed with
//! SIGKILL resumed by a rerun without losing or repeating a line.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn tiny() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tiny/tiny-q8_0.gguf")
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fl-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn line(id: &str, url: &str, body: Value) -> String {
    json!({"custom_id": id, "method": "POST", "url": url, "body": body}).to_string()
}

fn chat(id: &str, max_tokens: usize) -> String {
    line(
        id,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": format!("say {id}")}],
               "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true}),
    )
}

fn completion(id: &str) -> String {
    line(
        id,
        "/v1/completions",
        json!({"model": "tiny-q8_0", "prompt": format!("text {id}"), "max_tokens": 3}),
    )
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    common::bin()
        .current_dir(dir)
        .args([
            "batch",
            "in.jsonl",
            "out.jsonl",
            "-m",
            &tiny(),
            "-t",
            "1",
            "--json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn summary(o: &Output) -> Value {
    assert!(o.status.success(), "{}", common::stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(p: &Path) -> Vec<String> {
    lines(p)
        .iter()
        .filter_map(|v| v["custom_id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_line_is_answered_once_and_bad_lines_go_to_the_error_file() {
    let dir = scratch("run");
    let input = [
        chat("a", 4),
        completion("b"),
        "{not json".to_string(),
        String::new(),
        line("d", "/v1/nope", json!({})),
        line("e", "/v1/chat/completions", json!({"messages": "bad"})),
        completion("f"),
    ];
    std::fs::write(dir.join("in.jsonl"), input.join("\n")).unwrap();
    let s = summary(&run(&dir, &["--errors", "err.jsonl"]));
    assert_eq!(
        (&s["total"], &s["completed"], &s["failed"], &s["skipped"]),
        (&json!(6), &json!(3), &json!(3), &json!(0))
    );
    let out = lines(&dir.join("out.jsonl"));
    let got: BTreeSet<&str> = out
        .iter()
        .map(|v| v["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, BTreeSet::from(["a", "b", "f"]));
    for v in &out {
        assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(v["response"]["status_code"], 200);
        assert!(v["response"]["request_id"].as_str().is_some());
        assert!(v["error"].is_null());
    }
    let a = out.iter().find(|v| v["custom_id"] == "a").unwrap();
    assert_eq!(a["response"]["body"]["object"], "chat.completion");
    assert_eq!(a["response"]["body"]["usage"]["completion_tokens"], 4);
    let errs: HashMap<String, Value> = lines(&dir.join("err.jsonl"))
        .into_iter()
        .map(|v| {
            let key = v["custom_id"]
                .as_str()
                .map_or_else(|| format!("line {}", v["error"]["line"]), str::to_string);
            (key, v)
        })
        .collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs["line 3"]["error"]["code"], "invalid_json");
    assert_eq!(errs["d"]["error"]["code"], "invalid_url");
    assert_eq!(errs["d"]["error"]["line"], 5);
    assert_eq!(errs["e"]["response"]["status_code"], 400);
    // A rerun finds everything done.
    let s = summary(&run(&dir, &["--errors", "err.jsonl"]));
    assert_eq!((&s["skipped"], &s["completed"]), (&json!(6), &json!(0)));
    assert_eq!(lines(&dir.join("out.jsonl")).len(), 3);
    assert_eq!(lines(&dir.join("err.jsonl")).len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicate_custom_ids_are_refused_with_their_lines() {
    let dir = scratch("dups");
    let input = [completion("x"), completion("y"), completion("x")];
    std::fs::write(dir.join("in.jsonl"), input.join("\n")).unwrap();
    let o = run(&dir, &[]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(err.contains("\"x\" on lines 1, 3"), "{err}");
    assert!(!dir.join("out.jsonl").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_partition_the_input() {
    let dir = scratch("shards");
    let all: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
    let input: Vec<String> = all.iter().map(|id| completion(id)).collect();
    std::fs::write(dir.join("in.jsonl"), input.join("\n")).unwrap();
    let mut seen = Vec::new();
    for k in 0..3 {
        let out = format!("out{k}.jsonl");
        let o = common::bin()
            .current_dir(&dir)
            .args([
                "batch",
                "in.jsonl",
                &out,
                "-m",
                &tiny(),
                "-t",
                "1",
                "--json",
            ])
            .args(["--shard", &format!("{k}/3")])
            .output()
            .unwrap();
        summary(&o);
        let got = ids(&dir.join(&out));
        // Line L (1-based) belongs to shard (L - 1) mod N.
        let want: Vec<String> = (0..7)
            .filter(|i| i % 3 == k)
            .map(|i| format!("c{i}"))
            .collect();
        assert_eq!(got.iter().collect::<BTreeSet<_>>(), want.iter().collect());
        seen.extend(got);
    }
    seen.sort();
    assert_eq!(seen, all, "the shards together answer every line once");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_run_resumes_and_answers_every_line_exactly_once() {
    let dir = scratch("kill");
    let n = 300;
    let input: Vec<String> = (0..n).map(|i| chat(&format!("k{i}"), 48)).collect();
    std::fs::write(dir.join("in.jsonl"), input.join("\n")).unwrap();
    let out = dir.join("out.jsonl");
    let mut child = common::bin()
        .current_dir(&dir)
        .args(["batch", "in.jsonl", "out.jsonl", "-m", &tiny(), "-t", "1"])
        .args(["--concurrency", "2", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while ids(&out).len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = ids(&out).len();
    assert!(before < n, "the run ended before the kill; make it longer");
    // What a kill in the middle of a write leaves: a partial last line.
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.push_str("{\"id\": \"batch_req_x\", \"custom_id\": \"k");
    std::fs::write(&out, text).unwrap();
    let s = summary(&run(&dir, &["--concurrency", "8"]));
    assert_eq!(s["skipped"], json!(before));
    assert_eq!(s["completed"], json!(n - before));
    let mut got = ids(&out);
    got.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every custom_id exactly once");
    std::fs::remove_dir_all(&dir).unwrap();
}
