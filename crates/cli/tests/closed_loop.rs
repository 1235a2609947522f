//! The closed loop of docs/closed-loop.md at tiny scale, with the real binary on
//! SmolLM2-135M-Instruct: distilling a system prompt.
//!
//! 1. `sdg`: the teacher is SmolLM2 with a teacher prompt (a system message and four
//!    example turns) that makes it answer `Answer: WORD (N letters)`; it answers 40 seed
//!    prompts, two replies each, the likelier kept (top_k by mean log-prob); the records
//!    leave the teacher prompt out.
//! 2. `finetune`: a LoRA (rank 8, 10 steps of 4 chats at lr 2e-3) on those records.
//! 3. `eval`: a generation task on 19 held-out words (exact match on the format, extracted
//!    by a regex), the base model and then the base with `--lora`: the format rate rises.
//! 4. `serve` the base, hot-load the adapter with `POST /v1/load_lora_adapter`, and the
//!    adapter, asked by name, answers a held-out prompt in the format.
//!
//! The words and questions are crates/cli/tests/lora_format.rs's (where hand-written data
//! took the format from 0% to 95%); here the data is the teacher's.

#![allow(clippy::unwrap_used)]

mod common;

use common::format_data::{WORDS, question, shuffled};
use common::smollm2;

use std::path::Path;

use serde_json::{Value, json};

/// The teacher's prompt: the rule as a system message, then four examples as turns (none of
/// them a word of the data). SmolLM2-135M ignores the rule alone (0 of 40 replies in the
/// format when this test was written) but follows the examples (18 of 20 in a trial run).
fn teacher_prompt() -> Value {
    let mut ms = vec![json!({"role": "system", "content":
        "Answer every message with one line in exactly this format: Answer: WORD (N letters)."})];
    for (q, a) in [
        ("Repeat bottle.", "Answer: BOTTLE (6 letters)"),
        ("What word is this: cat?", "Answer: CAT (3 letters)"),
        (
            "Tell me about the word 'pillow'.",
            "Answer: PILLOW (6 letters)",
        ),
        (
            "Spell out the word house for me.",
            "Answer: HOUSE (5 letters)",
        ),
    ] {
        ms.push(json!({"role": "user", "content": q}));
        ms.push(json!({"role": "assistant", "content": a}));
    }
    Value::Array(ms)
}

/// The format, as the eval task's regex checks it.
const FORMAT: &str = r"^\s*(Answer): [A-Z]+ \(\d+ letters\)";

fn run_ok(cmd: &mut std::process::Command, what: &str) -> String {
    let o = common::run(cmd, b"");
    assert!(o.status.success(), "{what} failed: {}", common::stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// `ferrollama eval` of the format task; the exact-match rate.
fn eval(model: &Path, task: &Path, lora: Option<&Path>, json_out: &Path) -> f64 {
    let mut cmd = common::bin();
    cmd.arg("eval")
        .arg("-m")
        .arg(model)
        .arg("--task")
        .arg(task)
        .args(["--apply-chat-template", "-t", "2", "-c", "512"])
        .arg("--json")
        .arg(json_out);
    if let Some(l) = lora {
        cmd.arg("--lora").arg(l);
    }
    run_ok(&mut cmd, "eval");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json_out).unwrap()).unwrap();
    let row = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "exact_match")
        .unwrap_or_else(|| panic!("no exact_match in {v}"));
    row["value"].as_f64().unwrap()
}

#[test]
fn sdg_then_finetune_then_eval_then_hot_load_distils_a_teacher_prompt() {
    let model = smollm2();
    let m = model.to_string_lossy().into_owned();
    let words = shuffled(WORDS.split_whitespace().fold(Vec::new(), |mut v, w| {
        if !v.contains(&w) {
            v.push(w);
        }
        v
    }));
    let (train, held) = words.split_at(40);
    let dir = std::env::temp_dir().join(format!("ferrollama-closed-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store");

    // 1. The teacher's dataset.
    let seeds: String = train
        .iter()
        .enumerate()
        .map(|(i, w)| json!({ "prompt": question(i, w) }).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("seeds.jsonl"), seeds).unwrap();
    std::fs::write(dir.join("teacher.json"), teacher_prompt().to_string()).unwrap();
    let data = dir.join("data.jsonl");
    let stats = run_ok(
        common::bin()
            .arg("sdg")
            .arg("-m")
            .arg(&model)
            .arg("--prompts")
            .arg(dir.join("seeds.jsonl"))
            .arg("--out")
            .arg(&data)
            .arg("--teacher-prompt")
            .arg(dir.join("teacher.json"))
            .args([
                "-n",
                "2",
                "--temperature",
                "0.3",
                "--max-tokens",
                "16",
                "--filter",
                "top_k",
                "--k",
                "1",
                "--concurrency",
                "16",
                "-t",
                "2",
                "-c",
                "1024",
            ])
            .env("FERROLLAMA_MODELS", &store),
        "sdg",
    );
    let records: Vec<Value> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let re = regex::Regex::new(FORMAT).unwrap();
    let in_format = records
        .iter()
        .filter(|r| re.is_match(r["messages"][1]["content"].as_str().unwrap()))
        .count();
    eprintln!(
        "sdg: {stats}\n{} records, {in_format} in the format; e.g. {}",
        records.len(),
        records[0]["messages"]
    );
    assert_eq!(records.len(), 40);
    for r in &records {
        // The teacher's system prompt is not in the training data.
        assert_eq!(r["messages"].as_array().unwrap().len(), 2, "{r}");
        assert_eq!(r["messages"][0]["role"], "user");
    }
    assert!(
        in_format >= 20,
        "the teacher kept the format in only {in_format} of 40"
    );

    // 2. The student's LoRA.
    run_ok(
        common::bin()
            .arg("finetune")
            .arg("-m")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args([
                "--method",
                "lora",
                "--rank",
                "8",
                "--alpha",
                "16",
                "--steps",
                "10",
                "--batch-size",
                "4",
                "--lr",
                "2e-3",
                "--seq-len",
                "128",
                "--json",
                "-t",
                "2",
            ])
            .arg("--out")
            .arg(dir.join("student"))
            .env("FERROLLAMA_MODELS", &store),
        "finetune",
    );
    let adapter = dir.join("student/adapter.gguf");
    assert!(adapter.exists());

    // 3. Before and after, on held-out words.
    let held_rows: String = held
        .iter()
        .enumerate()
        .map(|(i, w)| json!({ "question": question(i, w) }).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("held.jsonl"), held_rows).unwrap();
    let task = dir.join("format.yaml");
    std::fs::write(
        &task,
        format!(
            "task: answer_format\ndataset_path: held.jsonl\noutput_type: generate_until\n\
             doc_to_text: \"{{{{question}}}}\"\ndoc_to_target: \"Answer\"\n\
             generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 16\n\
             filter_list:\n  - name: format\n    filter:\n      - function: regex\n        \
             regex_pattern: '{FORMAT}'\n      - function: take_first\n\
             metric_list:\n  - metric: exact_match\n"
        ),
    )
    .unwrap();
    let before = eval(&model, &task, None, &dir.join("before.json"));
    let after = eval(&model, &task, Some(&adapter), &dir.join("after.json"));
    eprintln!(
        "held-out format rate: base {:.0}%, student {:.0}%",
        before * 100.0,
        after * 100.0
    );
    assert!(before <= 0.1, "the base already answers in the format");
    assert!(after >= 0.5 && after > before, "{before} -> {after}");

    // 4. Hot-load the adapter into a running server and ask it by name.
    let srv = common::server::Server::start(&["-m", &m, "--threads", "2", "-c", "512"]);
    let (status, _) = srv.post_status(
        "/v1/load_lora_adapter",
        &json!({"lora_name": "student", "lora_path": adapter}),
    );
    assert_eq!(status, 200);
    let mut replies = Vec::new();
    for (i, w) in held.iter().enumerate().take(3) {
        let r = srv.post(
            "/v1/chat/completions",
            &json!({
                "model": "student",
                "messages": [{"role": "user", "content": question(i, w)}],
                "temperature": 0,
                "max_tokens": 16,
            }),
        );
        replies.push(
            r["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    eprintln!("served student: {replies:?}");
    assert!(
        replies.iter().any(|r| re.is_match(r)),
        "no served reply in the format: {replies:?}"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
