//! `ferrollama sdg` on the real SmolLM2-135M-Instruct (teacher, and stand-in Llama Guard: its
//! answer is constrained to the verdict grammar): the dataset is what `finetune --data`
//! reads, every record carries its provenance, a crash (a torn journal and dataset, as a
//! kill leaves them) resumes to the same files as an uninterrupted run, and bad input is
//! refused with the line or setting at fault while nothing written is lost.

#![allow(clippy::unwrap_used)]

mod common;

use common::smollm2;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-sdg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SEEDS: &str = r#"{"prompt": "Name a fruit."}
{"messages": [{"role": "user", "content": "What color is the sky?"}]}
{"topic": "the moon"}
"#;

/// `ferrollama sdg` with the test's settings; (status ok, stdout, stderr).
fn sdg(model: &Path, seeds: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let o = common::run(
        common::bin()
            .arg("sdg")
            .arg("-m")
            .arg(model)
            .arg("--prompts")
            .arg(seeds)
            .arg("--out")
            .arg(out)
            .arg("--shield")
            .arg(model)
            .args(if extra.contains(&"--filter") {
                &[][..]
            } else {
                &["--filter", "top_k", "--k", "2"][..]
            })
            .args([
                "-n",
                "3",
                "--max-tokens",
                "12",
                "--seed",
                "7",
                "-t",
                "2",
                "-c",
                "2048",
            ])
            .args(extra)
            .env("FERROLLAMA_MODELS", out.parent().unwrap().join("store")),
        b"",
    );
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        common::stderr(&o),
    )
}

/// `a` and `b` hold the same JSON lines, except that `score` and `reward` (anywhere in a
/// line) may differ by float rounding: a reply's mean log-prob is computed in engine
/// steps shared with other sequences, and which ones share a step (which changes after
/// a resume) moves its last bits. Regression: `sdg_killed_mid_run_...` saw
/// -1.2511272033055625 against -1.2511272033055623 for the same reply.
fn assert_same_records(a: &str, b: &str) {
    fn strip(v: &mut Value, scores: &mut Vec<f64>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if (k == "score" || k == "reward") && x.is_f64() {
                        scores.push(x.as_f64().unwrap());
                        *x = Value::Null;
                    } else {
                        strip(x, scores);
                    }
                }
            }
            Value::Array(xs) => xs.iter_mut().for_each(|x| strip(x, scores)),
            _ => {}
        }
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(la.len(), lb.len(), "line counts");
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        let (mut vx, mut vy): (Value, Value) = (
            serde_json::from_str(x).unwrap(),
            serde_json::from_str(y).unwrap(),
        );
        let (mut sx, mut sy) = (Vec::new(), Vec::new());
        strip(&mut vx, &mut sx);
        strip(&mut vy, &mut sy);
        assert_eq!(vx, vy, "line {}", i + 1);
        assert_eq!(sx.len(), sy.len(), "line {}", i + 1);
        for (p, q) in sx.iter().zip(&sy) {
            assert!((p - q).abs() <= 1e-6, "line {}: score {p} vs {q}", i + 1);
        }
    }
}

fn journal(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.journal", out.display()))
}

/// The first `lines` whole lines of `text`, then half of the next (a torn write).
fn torn(text: &str, lines: usize) -> String {
    let ls: Vec<&str> = text.split_inclusive('\n').collect();
    let mut s: String = ls[..lines].concat();
    let next = ls[lines];
    s.push_str(&next[..next.len() / 2]);
    s
}

#[test]
fn sdg_writes_training_records_with_provenance_and_resumes_after_a_crash() {
    let model = smollm2();
    let dir = tmp("resume");
    let seeds = dir.join("seeds.jsonl");
    std::fs::write(&seeds, SEEDS).unwrap();

    // One uninterrupted run.
    let out_a = dir.join("a.jsonl");
    let (ok, stdout, err) = sdg(&model, &seeds, &out_a, &[]);
    assert!(ok, "sdg failed: {err}");
    let stats: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(stats["prompts"], 3);
    assert_eq!(stats["generations"], 9);
    assert_eq!(stats["generated"], 9);
    let kept = stats["kept"].as_u64().unwrap();
    let dropped = ["unsafe_dropped", "empty_dropped", "filtered_out"]
        .iter()
        .map(|k| stats[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(kept + dropped, 9, "{stats}");
    // top_k with k = 2 keeps at most 2 of 3 per prompt.
    assert!(
        kept <= 6 && stats["filtered_out"].as_u64().unwrap() >= 3,
        "{stats}"
    );

    let data = std::fs::read_to_string(&out_a).unwrap();
    let records: Vec<Value> = data
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len() as u64, kept);
    assert!(kept >= 1, "nothing kept: {stats}");
    for r in &records {
        let ms = r["messages"].as_array().unwrap();
        assert_eq!(ms.last().unwrap()["role"], "assistant");
        assert!(!ms.last().unwrap()["content"].as_str().unwrap().is_empty());
        let p = &r["provenance"];
        assert!(p["model"].as_str().unwrap().contains("SmolLM2"), "{p}");
        assert!(p["seed"].is_u64() && p["score"].is_f64(), "{p}");
        assert!(p["score"].as_f64().unwrap() <= 0.0, "a mean log-prob: {p}");
        assert_eq!(p["shield"]["shield_id"], "llama-guard");
        assert_eq!(p["shield"]["flagged"], false);
        assert_eq!(p["filtering_function"], "top_k");
    }
    // The topic became a user message by the default template.
    assert!(data.contains("Ask a question about the moon, then answer it."));

    // A crash: the journal cut after 4 generations with the 5th half written, the dataset
    // after its first record with the second half written.
    let out_b = dir.join("b.jsonl");
    let ja = std::fs::read_to_string(journal(&out_a)).unwrap();
    std::fs::write(journal(&out_b), torn(&ja, 5)).unwrap();
    std::fs::write(&out_b, torn(&data, 1)).unwrap();
    let (ok, stdout, err) = sdg(&model, &seeds, &out_b, &["--concurrency", "2"]);
    assert!(ok, "resume failed: {err}");
    assert!(err.contains("resuming") && err.contains("torn"), "{err}");
    let stats_b: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(stats_b["resumed"], 4, "{stats_b}");
    assert_eq!(stats_b["generated"], 5, "{stats_b}");
    assert_eq!(stats_b["kept"], stats["kept"]);
    assert_same_records(&std::fs::read_to_string(&out_b).unwrap(), &data);
    assert_same_records(&std::fs::read_to_string(journal(&out_b)).unwrap(), &ja);

    // A finished run rerun does nothing and changes nothing.
    let (ok, stdout, _) = sdg(&model, &seeds, &out_a, &[]);
    assert!(ok);
    assert!(
        stdout.contains("\"generated\":0") && stdout.contains("\"written\":0"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&out_a).unwrap(), data);

    // Other settings on the same output: refused, naming them; the files are untouched.
    let (ok, _, err) = sdg(&model, &seeds, &out_a, &["--temperature", "0.5"]);
    assert!(!ok);
    assert!(
        err.contains("other settings") && err.contains("temperature"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out_a).unwrap(), data);
    assert_eq!(std::fs::read_to_string(journal(&out_a)).unwrap(), ja);

    // The dataset is what finetune reads (provenance and all): a 1-step LoRA run accepts it.
    let o = common::run(
        common::bin()
            .arg("finetune")
            .arg("-m")
            .arg(&model)
            .arg("--data")
            .arg(&out_a)
            .args([
                "--method",
                "lora",
                "--rank",
                "2",
                "--steps",
                "1",
                "--batch-size",
                "1",
                "--seq-len",
                "64",
                "--json",
                "-t",
                "2",
            ])
            .arg("--out")
            .arg(dir.join("ft"))
            .env("FERROLLAMA_MODELS", dir.join("store")),
        b"",
    );
    assert!(
        o.status.success(),
        "finetune refused the dataset: {}",
        common::stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sdg_refuses_bad_input_and_loses_nothing() {
    let model = smollm2();
    let dir = tmp("bad");
    let seeds = dir.join("seeds.jsonl");
    std::fs::write(
        &seeds,
        "{\"prompt\": \"ok\"}\nnot json\n{\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}\n",
    )
    .unwrap();
    let out = dir.join("o.jsonl");
    let (ok, _, err) = sdg(&model, &seeds, &out, &[]);
    assert!(!ok);
    assert!(err.contains("line 2: not JSON"), "{err}");
    assert!(
        err.contains("line 3: messages[0].content is empty"),
        "{err}"
    );
    assert!(!out.exists() && !journal(&out).exists());

    // An existing file that sdg did not write is never appended to or overwritten.
    std::fs::write(&seeds, "{\"prompt\": \"ok\"}\n").unwrap();
    std::fs::write(&out, "precious\n").unwrap();
    let (ok, _, err) = sdg(&model, &seeds, &out, &[]);
    assert!(!ok);
    assert!(err.contains("has no journal"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");

    // Filter parameters out of range, and an unknown filter.
    let (ok, _, err) = sdg(
        &model,
        &seeds,
        &dir.join("p.jsonl"),
        &["--filter", "top_p", "--p", "0"],
    );
    assert!(!ok && err.contains("p = 0"), "{err}");
    let (ok, _, err) = sdg(&model, &seeds, &dir.join("p.jsonl"), &["--filter", "best"]);
    assert!(!ok && err.contains("top_k_top_p"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sdg_with_a_judge_scores_each_reply_by_its_template() {
    let model = smollm2();
    let dir = tmp("judge");
    let seeds = dir.join("seeds.jsonl");
    std::fs::write(&seeds, "{\"prompt\": \"Name a fruit.\"}\n").unwrap();
    let template = dir.join("judge.j2");
    std::fs::write(
        &template,
        "Rate this answer to \"{{ prompt }}\" from 1 to 10: {{ response }}\nScore:",
    )
    .unwrap();
    let out = dir.join("j.jsonl");
    let (ok, stdout, err) = sdg(
        &model,
        &seeds,
        &out,
        &[
            "--filter",
            "none",
            "--judge",
            model.to_str().unwrap(),
            "--judge-template",
            template.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    let journal_lines: Vec<Value> = std::fs::read_to_string(journal(&out))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(journal_lines.len(), 3);
    for g in &journal_lines {
        if g["reply"].as_str().unwrap().is_empty() {
            continue;
        }
        // The judge's verdict is in the journal; its score (when the reply holds a number)
        // is what the records rank by.
        assert!(
            g["judge"]["model"].as_str().unwrap().contains("SmolLM2"),
            "{g}"
        );
        assert!(g["judge"]["reply"].is_string(), "{g}");
    }
    let unscored = journal_lines
        .iter()
        .filter(|g| g["judge"]["score"].is_null() && !g["reply"].as_str().unwrap().is_empty())
        .count();
    assert_eq!(stats["unscored"], unscored as u64, "{stats}");
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(
            r["provenance"]["score"], r["provenance"]["judge"]["score"],
            "{r}"
        );
    }

    // A template that does not parse is refused before anything is generated.
    std::fs::write(&template, "{{ prompt ").unwrap();
    let out2 = dir.join("k.jsonl");
    let (ok, _, err) = sdg(
        &model,
        &seeds,
        &out2,
        &[
            "--judge",
            model.to_str().unwrap(),
            "--judge-template",
            template.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("judge template"), "{err}");
    assert!(!out2.exists() && !journal(&out2).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real SIGKILL in the middle of a run (beside the torn-write case above, which cuts the
/// files by hand): the rerun generates only what the journal lacks and ends with the
/// files of a run that never stopped (scores to float rounding, see
/// [`assert_same_records`]).
#[test]
fn sdg_killed_mid_run_resumes_to_the_uninterrupted_result() {
    let model = smollm2();
    let dir = tmp("kill");
    let seeds = dir.join("seeds.jsonl");
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("{{\"prompt\": \"Name {} animals.\"}}", i + 2))
        .collect();
    std::fs::write(&seeds, prompts.join("\n")).unwrap();
    let cmd = |out: &Path| {
        let mut c = common::bin();
        c.arg("sdg")
            .arg("-m")
            .arg(&model)
            .arg("--prompts")
            .arg(&seeds)
            .arg("--out")
            .arg(out)
            .args([
                "-n",
                "3",
                "--max-tokens",
                "24",
                "--seed",
                "11",
                "--filter",
                "none",
            ])
            .args(["--concurrency", "2", "-t", "2", "-c", "2048"])
            .env("FERROLLAMA_MODELS", dir.join("store"));
        c
    };
    let total = 8 * 3;

    let out_a = dir.join("a.jsonl");
    let o = common::run(&mut cmd(&out_a), b"");
    assert!(o.status.success(), "{}", common::stderr(&o));

    let out_b = dir.join("b.jsonl");
    let mut child = cmd(&out_b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.matches('\n').count())
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    // The settings line, then at least three generations.
    while lines(&journal(&out_b)) < 4 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = lines(&journal(&out_b)) - 1;
    assert!(
        done < total,
        "the run ended before the kill; make it longer"
    );

    let o = common::run(&mut cmd(&out_b), b"");
    assert!(o.status.success(), "resume failed: {}", common::stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stats: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(stats["resumed"], done, "{stats}");
    assert_eq!(stats["generated"], total - done, "{stats}");
    assert_same_records(
        &std::fs::read_to_string(&out_b).unwrap(),
        &std::fs::read_to_string(&out_a).unwrap(),
    );
    assert_same_records(
        &std::fs::read_to_string(journal(&out_b)).unwrap(),
        &std::fs::read_to_string(journal(&out_a)).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
