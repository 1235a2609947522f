//! `ferrollama finetune --method dpo|distill` end to end on the tiny GGUF models
//! (`testdata/tiny`: F16, and Q4_K_M as a quantized student): DPO's JSON lines with TRL's
//! metrics and its loss falling, distillation from logits (the F16 model teaching the Q4_K_M
//! one's adapter: recovering quantization loss) and from generated answers, and the errors for data of the wrong shape,
//! a missing teacher, and a teacher with another vocabulary.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{bin, run, stderr};
use serde_json::Value;

fn tiny(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../testdata/tiny/tiny-{kind}.gguf"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-dpo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn finetune(dir: &Path, model: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("finetune")
        .arg("-m")
        .arg(model)
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--seq-len", "48", "-t", "2"])
        .args(extra)
        .env("FERROLLAMA_MODELS", dir.join("store"));
    run(&mut cmd, b"")
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn steps(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["event"] == "step").collect()
}

fn write(path: &Path, lines: &[Value]) {
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

fn pairs_file(path: &Path) {
    write(
        path,
        &[
            serde_json::json!({"prompt": "The cat", "chosen": " sat on the mat.", "rejected": " zq xv!"}),
            serde_json::json!({"prompt": "A dog", "chosen": " ran in the park.", "rejected": " pk jw?"}),
        ],
    );
}

#[test]
fn finetune_dpo_reports_trl_metrics_and_lowers_its_loss() {
    let dir = tmpdir("dpo");
    let (data, eval) = (dir.join("pairs.jsonl"), dir.join("eval.jsonl"));
    pairs_file(&data);
    pairs_file(&eval);
    let args = [
        "--data",
        data.to_str().unwrap(),
        "--eval",
        eval.to_str().unwrap(),
        "--method",
        "dpo",
        "--beta",
        "0.5",
        "--steps",
        "8",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--json",
    ];
    let out = finetune(&dir, &tiny("f16"), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    let st = steps(&lines);
    assert_eq!(st.len(), 8, "{lines:?}");
    // Step 1 is the reference itself: loss ln 2, rewards 0.
    let first = st[0]["loss"].as_f64().unwrap();
    assert!((first - std::f64::consts::LN_2).abs() < 1e-5, "{first}");
    for k in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
    ] {
        assert!(st[0][k].is_number(), "{k} missing: {}", st[0]);
    }
    let last = st[7]["loss"].as_f64().unwrap();
    assert!(last < first - 0.1, "DPO loss {first} -> {last}");
    assert_eq!(st[7]["rewards/accuracies"].as_f64(), Some(1.0), "{}", st[7]);
    let ev: Vec<&Value> = lines.iter().filter(|v| v["event"] == "eval").collect();
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]["eval_rewards/margins"].as_f64().unwrap() > 0.0,
        "{}",
        ev[0]
    );
    let done = lines.iter().find(|v| v["event"] == "done").unwrap();
    assert_eq!(done["method"], "dpo");
    assert_eq!(done["tune"], "lora");
    assert!(dir.join("out/adapter.gguf").exists());

    // Regression (checkpoints did not record DPO's beta): resuming with another beta, or as
    // supervised training, would have continued a different run silently.
    let mut other = args.to_vec();
    other[7] = "0.2";
    other.push("--resume");
    let out = finetune(&dir, &tiny("f16"), &other);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"{"loss":"dpo","beta":0.5}"#)
            && err.contains(r#"{"loss":"dpo","beta":0.2}"#),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn text_file(path: &Path) {
    write(
        path,
        &[
            serde_json::json!({"text": "the cat sat on the mat and looked at the dog."}),
            serde_json::json!({"text": "a dog ran in the park after the ball again."}),
        ],
    );
}

#[test]
fn finetune_distill_from_logits_teaches_a_quantized_student() {
    let dir = tmpdir("distill");
    let data = dir.join("text.jsonl");
    text_file(&data);
    let out = finetune(
        &dir,
        &tiny("q4_k_m"),
        &[
            "--data",
            data.to_str().unwrap(),
            "--method",
            "distill",
            "--teacher",
            tiny("f16").to_str().unwrap(),
            "--distill-top-k",
            "8",
            "--distill-temperature",
            "2",
            "--distill-tail",
            "--steps",
            "6",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    let losses: Vec<f64> = steps(&lines)
        .iter()
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    eprintln!("distillation τ² KL per step: {losses:?}");
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|l| l.is_finite() && *l >= 0.0));
    // The Q4_K_M model starts close to the F16 one (τ² KL ≈ 3e-4 a token); its adapter
    // takes most of the rest away (seen: 2.8e-4 -> 2.1e-5).
    assert!(losses[0] > 1e-5, "{losses:?}");
    assert!(losses[5] < losses[0] / 5.0, "{losses:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_distill_sequences_trains_on_the_teachers_answers() {
    let dir = tmpdir("seqdistill");
    let data = dir.join("prompts.jsonl");
    write(
        &data,
        &[
            serde_json::json!({"prompt": "The cat", "completion": " (ignored)"}),
            serde_json::json!({"prompt": "A dog", "completion": " (ignored)"}),
        ],
    );
    let out = finetune(
        &dir,
        &tiny("q8_0"),
        &[
            "--data",
            data.to_str().unwrap(),
            "--method",
            "distill",
            "--distill-mode",
            "sequences",
            "--teacher",
            tiny("f16").to_str().unwrap(),
            "--distill-max-tokens",
            "12",
            "--steps",
            "2",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    let td = lines.iter().find(|v| v["event"] == "teacher_data").unwrap();
    assert_eq!(td["records"].as_u64(), Some(2));
    let written = std::fs::read_to_string(dir.join("out/teacher_data.jsonl")).unwrap();
    let recs: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["prompt"], "The cat");
    let answer = recs[0]["completion"].as_str().unwrap();
    assert!(!answer.is_empty() && answer != " (ignored)", "{answer:?}");
    assert_eq!(steps(&lines).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_dpo_and_distill_refuse_bad_input_clearly() {
    let dir = tmpdir("bad");
    let (pairs, text) = (dir.join("pairs.jsonl"), dir.join("text.jsonl"));
    pairs_file(&pairs);
    text_file(&text);
    let m = tiny("f16");
    let p = pairs.to_str().unwrap();
    let t = text.to_str().unwrap();
    let expect = |args: &[&str], want: &str| {
        let o = finetune(&dir, &m, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    };
    // Preference pairs to a method that is not DPO, and other data to DPO.
    expect(&["--data", p, "--steps", "1"], "--method dpo");
    expect(
        &["--data", p, "--method", "lora", "--steps", "1"],
        "--method dpo",
    );
    expect(
        &["--data", t, "--method", "dpo", "--steps", "1"],
        "preference pairs",
    );
    expect(
        &[
            "--data", p, "--method", "dpo", "--beta", "0", "--steps", "1",
        ],
        "beta",
    );
    // Distillation needs a teacher; a teacher is only for distillation.
    expect(
        &["--data", t, "--method", "distill", "--steps", "1"],
        "--teacher",
    );
    expect(
        &[
            "--data",
            t,
            "--teacher",
            m.to_str().unwrap(),
            "--steps",
            "1",
        ],
        "--method distill",
    );
    expect(
        &[
            "--data",
            p,
            "--method",
            "distill",
            "--teacher",
            m.to_str().unwrap(),
            "--steps",
            "1",
        ],
        "--method dpo",
    );
    // A teacher with another vocabulary (SmolLM2's 49152 tokens against the tiny 512).
    if let Ok(smol) = std::env::var("FERROLLAMA_SMOLLM2") {
        expect(
            &[
                "--data",
                t,
                "--method",
                "distill",
                "--teacher",
                &smol,
                "--steps",
                "1",
            ],
            "vocabulary",
        );
    } else {
        eprintln!("FERROLLAMA_SMOLLM2 not set: the other-vocabulary teacher is not tried");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
