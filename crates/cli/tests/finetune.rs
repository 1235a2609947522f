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

fn shape(path: &Path) -> ferrollama_train::Shape {
    let f = GgufFile::open(path).unwrap();
    ferrollama_train::Shape::of(&LlamaConfig::from_gguf(&f).unwrap())
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
    let sh = shape(&tiny());
    let ck =
        ferrollama_train::checkpoint::load(&o, &sh, base.clone(), AdamWConfig::default()).unwrap();
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
    assert!(stderr(&o).contains("chat template"), "{}", stderr(&o));

    let good = dir.join("good.jsonl");
    write_text_jsonl(&good, 4, 0);
    let o = finetune(
        &dir,
        &[
            "--data",
            good.to_str().unwrap(),
            "--method",
            "lora",
            "--targets",
            "q,attn",
            "--steps",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown LoRA target"), "{}", stderr(&o));

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

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_losses(lines: &[Value]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .filter(|v| v["event"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn finetune_lora_writes_peft_and_gguf_adapters_and_only_the_adapter_is_checkpointed() {
    let dir = tmpdir("lora");
    let data = dir.join("train.jsonl");
    write_text_jsonl(&data, 12, 0);
    let args = [
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--targets",
        "q,v,down",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--json",
    ];
    let out = finetune(&dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out.stdout);
    let losses = step_losses(&lines);
    assert_eq!(losses.len(), 4, "{lines:?}");
    assert!(losses.iter().all(|(_, l)| l.is_finite() && *l > 0.0));
    let done = lines.iter().find(|v| v["event"] == "done").unwrap();
    assert_eq!(done["method"], "lora");

    let o = dir.join("out");
    // PEFT's files, with its names and settings.
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(o.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"].as_u64(), Some(4));
    assert_eq!(cfg["lora_alpha"].as_f64(), Some(8.0));
    let mut targets: Vec<&str> = cfg["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["down_proj", "q_proj", "v_proj"]);
    let st = std::fs::read(o.join("adapter/adapter_model.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&st).unwrap();
    assert!(
        header
            .tensors()
            .keys()
            .any(|k| k == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
        "{:?}",
        header.tensors().keys()
    );
    // llama.cpp's adapter GGUF.
    let g = GgufFile::open(o.join("adapter.gguf")).unwrap();
    let general_type = g.metadata.iter().find(|(k, _)| k == "general.type");
    assert!(
        matches!(general_type, Some((_, ferrollama_model::gguf::Value::String(s))) if s == "adapter"),
        "{general_type:?}"
    );
    // The checkpoint holds the adapter and its moments, not the frozen model.
    let ck = std::fs::read(o.join("checkpoint.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&ck).unwrap();
    assert!(header.tensors().keys().all(|k| k.contains(".lora_")));
    // The adapter in the checkpoint and in PEFT's file are the same numbers.
    let sh = shape(&tiny());
    let base = params(&tiny());
    let ck = ferrollama_train::checkpoint::load(&o, &sh, base, AdamWConfig::default()).unwrap();
    let ferrollama_train::checkpoint::Tuned::Lora { lora, .. } = &ck.tuned else {
        panic!("not a LoRA checkpoint");
    };
    let f = GgufFile::open(tiny()).unwrap();
    let lcfg = LlamaConfig::from_gguf(&f).unwrap();
    let peft = ferrollama_train::adapter::load_peft(&o.join("adapter"), &lcfg).unwrap();
    assert!(
        peft.layers == lora.layers,
        "PEFT file differs from the checkpoint"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The trainer killed (SIGKILL) mid-run, then `--resume`: the steps after the last
/// checkpoint give exactly the losses of an uninterrupted run.
#[test]
fn finetune_killed_mid_run_resumes_onto_the_uninterrupted_loss_curve() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tmpdir("kill");
    let data = dir.join("train.jsonl");
    write_text_jsonl(&data, 10, 0);
    let args = |steps: &str| -> Vec<String> {
        [
            "--data",
            data.to_str().unwrap(),
            "--method",
            "lora",
            "--rank",
            "4",
            "--steps",
            steps,
            "--batch-size",
            "2",
            "--lr",
            "1e-2",
            "--checkpoint-every",
            "1",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight_dir = dir.join("straight");
    std::fs::create_dir_all(&straight_dir).unwrap();
    let a = args("60");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let straight = finetune(&straight_dir, &a);
    assert!(straight.status.success(), "{}", stderr(&straight));
    let want = step_losses(&json_lines(&straight.stdout));
    assert_eq!(want.len(), 60);

    let mut cmd = bin();
    cmd.arg("finetune")
        .arg("-m")
        .arg(tiny())
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--seq-len", "16", "-t", "2"])
        .args(&a)
        .env("FERROLLAMA_MODELS", dir.join("store"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "checkpoint" && v["step"].as_u64() >= Some(5) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/checkpoint.json")).unwrap())
            .unwrap();
    let at = meta["progress"]["step"].as_u64().unwrap();
    assert!(
        (5..60).contains(&at),
        "killed at step {at}: too late to test a resume"
    );

    let resumed = finetune(&dir, &[&["--resume"][..], &a].concat());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let got = step_losses(&json_lines(&resumed.stdout));
    assert_eq!(got.first().map(|g| g.0), Some(at + 1));
    let bits = |v: &[(u64, f64)]| v.iter().map(|(s, l)| (*s, l.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want[at as usize..]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--base-compute int8` trains LoRA over the integer path (the tiny F16 model: its
/// blocks rounded to 12 bits on the fly, a 12-bit transposed copy for the backward) with
/// the f32 base's loss curve, within the bound of `crates/train/tests/frozen_int.rs`
/// (5e-3 relative over a short run); a value it does not know is a usage error.
#[test]
fn finetune_lora_on_the_integer_base_keeps_the_f32_loss_curve() {
    let dir = tmpdir("lora-int8");
    let data = dir.join("train.jsonl");
    write_text_jsonl(&data, 8, 0);
    let run_with = |compute: &str| {
        let d = dir.join(compute);
        std::fs::create_dir_all(&d).unwrap();
        let args = [
            "--data",
            data.to_str().unwrap(),
            "--method",
            "lora",
            "--rank",
            "4",
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--lr",
            "1e-2",
            "--json",
            "--base-compute",
            compute,
        ];
        let out = finetune(&d, &args);
        assert!(out.status.success(), "{compute}: {}", stderr(&out));
        step_losses(&json_lines(&out.stdout))
    };
    let (int8, f32) = (run_with("int8"), run_with("f32"));
    assert_eq!(int8.len(), 4);
    for ((s, a), (_, b)) in int8.iter().zip(&f32) {
        assert!(
            (a - b).abs() <= 5e-3 * b.abs(),
            "step {s}: {a} (int8) vs {b} (f32)"
        );
    }
    let bad = finetune(
        &dir,
        &[
            "--data",
            data.to_str().unwrap(),
            "--method",
            "lora",
            "--base-compute",
            "int4",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("int8"), "{}", stderr(&bad));
}

#[test]
fn finetune_lora_dropout_is_recorded_and_a_bad_rate_refused() {
    let dir = tmpdir("dropout");
    let data = dir.join("train.jsonl");
    write_text_jsonl(&data, 8, 0);
    let base = [
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--rank",
        "4",
        "--steps",
        "3",
        "--lr",
        "1e-2",
        "--json",
    ];
    let with = |p: &'static str| [&base[..], &["--lora-dropout", p]].concat();
    let out = finetune(&dir, &with("1.5"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("probability in [0, 1)"),
        "{}",
        stderr(&out)
    );

    let out = finetune(&dir, &with("0.2"));
    assert!(out.status.success(), "{}", stderr(&out));
    let dropped = step_losses(&json_lines(&out.stdout));
    assert_eq!(dropped.len(), 3);
    let o = dir.join("out");
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(o.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["lora_dropout"].as_f64(), Some(0.2));
    let ck: Value =
        serde_json::from_str(&std::fs::read_to_string(o.join("checkpoint.json")).unwrap()).unwrap();
    assert!(ck.to_string().contains("\"dropout\":0.2"), "{ck}");

    // The same seed without dropout: step 0 is the same (B = 0), later steps are not.
    std::fs::remove_dir_all(&o).unwrap();
    let out = finetune(&dir, &base);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = step_losses(&json_lines(&out.stdout));
    assert_eq!(plain[0], dropped[0]);
    assert_ne!(plain[1..], dropped[1..]);
    let _ = std::fs::remove_dir_all(&dir);
}
