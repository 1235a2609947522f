//! `ferrollama finetune` end to end on the tiny GGUF model (`testdata/tiny`, a 512-token
//! byte-level vocabulary that is not Llama 3's, so text records): JSON lines per step,
//! checkpoints, an output GGUF that loads and holds the trained weights; and the errors a
//! user meets first (a bad line, an empty file, a missing model, an unimplemented method,
//! chat data for a non-Llama-3 vocabulary).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{bin, run, stderr};
use ferrollama_model::gguf::GgufFile;
use ferrollama_model::{LlamaConfig, Weights};
use ferrollama_train::AdamWConfig;
use ferrollama_train::weights::params_from_weights;
use serde_json::Value;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-f16.gguf")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrollama-finetune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_text_jsonl(path: &Path, n: usize, salt: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let text = format!(
                "Record {} of the training file: the cat sat on the mat, {} times over.",
                i + salt,
                (i * 7 + salt) % 13
            );
            serde_json::json!({ "text": text }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn params(path: &Path) -> ferrollama_train::Params<f32> {
    let f = GgufFile::open(path).unwrap();
    let cfg = LlamaConfig::from_gguf(&f).unwrap();
    let w = Weights::from_gguf(&f, &cfg).unwrap();
    params_from_weights(&w, &cfg).unwrap().0
}

fn finetune(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = bin();
    cmd.arg("finetune")
        .arg("-m")
        .arg(tiny())
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--seq-len", "16", "-t", "2"])
        .args(extra)
        .env("FERROLLAMA_MODELS", dir.join("store"));
    run(&mut cmd, b"")
}

#[test]
fn finetune_full_writes_steps_checkpoints_and_a_loadable_gguf() {
    let dir = tmpdir("full");
    let (data, eval) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    write_text_jsonl(&data, 12, 0);
    write_text_jsonl(&eval, 2, 100);
    let out = finetune(
        &dir,
        &[
            "--data",
            data.to_str().unwrap(),
            "--eval",
            eval.to_str().unwrap(),
            "--steps",
            "5",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--warmup",
            "1",
            "--checkpoint-every",
            "2",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> { lines.iter().filter(|v| v["event"] == kind).collect() };
    let steps = of("step");
    assert_eq!(steps.len(), 5, "{lines:?}");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64 + 1));
        assert_eq!(s["total_steps"].as_u64(), Some(5));
        let loss = s["loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{s}");
        assert!(s["grad_norm"].as_f64().unwrap().is_finite());
        assert!(s["tokens"].as_u64().unwrap() == 32, "{s}");
    }
    // Warmup: the first step runs at learning rate 0.
    assert_eq!(steps[0]["lr"].as_f64(), Some(0.0));
    let ck: Vec<u64> = of("checkpoint")
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(ck, [2, 4, 5]);
    let eval_loss = of("eval")[0]["eval_loss"].as_f64().unwrap();
    assert!(eval_loss.is_finite());
    assert_eq!(of("done").len(), 1);

    let o = dir.join("out");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(o.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["progress"]["step"].as_u64(), Some(5));
    assert_eq!(meta["config"]["steps"].as_u64(), Some(5));
    // The GGUF holds exactly the checkpoint's weights, which training moved off the base.
    let base = params(&tiny());
    let trained = params(&o.join("model.gguf"));
    let ck = ferrollama_train::checkpoint::load(&o, &base, AdamWConfig::default()).unwrap();
    assert!(
        trained == ck.params,
        "model.gguf differs from the checkpoint"
    );
    assert!(trained != base, "training changed nothing");
    // And the engine loads it, tokenizer included.
    let m = ferrollama_engine::Model::load(&o.join("model.gguf")).unwrap();
    assert_eq!(m.tokenizer.bpe.n_tokens(), 512);

    // A second run into the same folder without --resume is refused; --resume of a
    // finished run only writes the model again.
    let again = finetune(&dir, &["--data", data.to_str().unwrap(), "--steps", "5"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--resume"), "{}", stderr(&again));
    let resumed = finetune(
        &dir,
        &["--data", data.to_str().unwrap(), "--resume", "--json"],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_reports_bad_input_clearly() {
    let dir = tmpdir("bad");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": oops\n",
    )
    .unwrap();
    let o = finetune(&dir, &["--data", bad.to_str().unwrap(), "--steps", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));

    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = finetune(&dir, &["--data", empty.to_str().unwrap(), "--steps", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no records"), "{}", stderr(&o));

    let chat = dir.join("chat.jsonl");
    std::fs::write(
        &chat,
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
    )
    .unwrap();
    let o = finetune(&dir, &["--data", chat.to_str().unwrap(), "--steps", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not Llama 3"), "{}", stderr(&o));

    let good = dir.join("good.jsonl");
    write_text_jsonl(&good, 4, 0);
    let o = finetune(
        &dir,
        &[
            "--data",
            good.to_str().unwrap(),
            "--method",
            "lora",
            "--steps",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not implemented yet"), "{}", stderr(&o));

    let mut cmd = bin();
    cmd.args(["finetune", "-m"])
        .arg(dir.join("no-such-model.gguf"))
        .arg("--data")
        .arg(&good)
        .arg("--out")
        .arg(dir.join("out"))
        .env("FERROLLAMA_MODELS", dir.join("store"));
    let o = run(&mut cmd, b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no-such-model"), "{}", stderr(&o));
    assert!(
        !dir.join("out").exists(),
        "nothing is written for a failed start"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
