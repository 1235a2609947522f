//! A fine-tuning job survives its server: `serve` is killed with SIGKILL while a job trains
//! (after it wrote a checkpoint), restarted on the same data directory, and the job resumes
//! from its last checkpoint, finishes, and is served under its name. Its losses after the
//! restart are the ones an uninterrupted job of the same settings gives, bit for bit, and
//! its trained-token count is the uninterrupted one's (lost steps are not counted twice).

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::{Value, json};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-f16.gguf")
}

fn start(data: &Path) -> Server {
    let args: Vec<OsString> = vec![
        "-m".into(),
        tiny().into(),
        "--data-dir".into(),
        data.into(),
        "-t".into(),
        "2".into(),
    ];
    Server::start(&args)
}

fn train_file() -> Vec<u8> {
    (0..12)
        .map(|i| {
            json!({"text": format!("Record {i}: the cat sat on the mat {} times, then slept.", i * 7 % 13)})
                .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn create(s: &Server, file: &str) -> String {
    let job = s.post(
        "/v1/fine_tuning/jobs",
        &json!({
            "model": "tiny-f16",
            "training_file": file,
            "suffix": "restart",
            "seed": 11,
            "hyperparameters": {"n_epochs": 30, "batch_size": 1, "seq_len": 16,
                                "lora_rank": 4, "checkpoint_every": 10,
                                "learning_rate_multiplier": 5.0},
        }),
    );
    job["id"].as_str().unwrap().to_string()
}

fn wait_done(s: &Server, id: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let j = s.get(&format!("/v1/fine_tuning/jobs/{id}"));
        if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
            return j;
        }
        assert!(
            Instant::now() < end,
            "job still {} after 600 s",
            j["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// All the job's events, newest first, page by page (`after`, `has_more`).
fn events(s: &Server, id: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out
            .last()
            .map(|e| format!("&after={}", e["id"].as_str().unwrap()))
            .unwrap_or_default();
        let page = s.get(&format!(
            "/v1/fine_tuning/jobs/{id}/events?limit=100{after}"
        ));
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["has_more"] != true {
            return out;
        }
    }
}

/// step → train_loss from the job's metrics events.
fn losses(s: &Server, id: &str) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = events(s, id)
        .iter()
        .filter(|e| e["type"] == "metrics")
        .filter_map(|e| {
            Some((
                e["data"]["step"].as_u64()?,
                e["data"]["train_loss"].as_f64()?,
            ))
        })
        .collect();
    out.sort_by_key(|&(step, _)| step);
    out
}

fn messages(s: &Server, id: &str) -> Vec<String> {
    events(s, id)
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_job_killed_with_its_server_resumes_after_the_restart() {
    let root = std::env::temp_dir().join(format!("ferrollama-ft-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    // The uninterrupted job, on its own server and data directory.
    let (whole, whole_tokens) = {
        let s = start(&root.join("whole"));
        let id = create(&s, &s.upload("train.jsonl", "fine-tune", &train_file()));
        let j = wait_done(&s, &id);
        assert_eq!(j["status"], "succeeded", "{j}");
        (losses(&s, &id), j["trained_tokens"].as_u64().unwrap())
    };
    let total = whole.len() as u64;
    assert!(total > 40, "{total} steps: too short to kill in the middle");

    // The same job, killed once it has checkpointed and before it finishes.
    let data = root.join("killed");
    let s = start(&data);
    let id = create(&s, &s.upload("train.jsonl", "fine-tune", &train_file()));
    let end = Instant::now() + Duration::from_secs(300);
    let killed_at = loop {
        let cks = s.get(&format!("/v1/fine_tuning/jobs/{id}/checkpoints"));
        let n = cks["data"].as_array().unwrap().len();
        let j = s.get(&format!("/v1/fine_tuning/jobs/{id}"));
        assert_ne!(
            j["status"], "succeeded",
            "the job finished before it could be killed"
        );
        if n > 0 {
            break cks["data"][0]["step_number"].as_u64().unwrap();
        }
        assert!(Instant::now() < end, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(s); // SIGKILL

    let s = start(&data);
    let j = wait_done(&s, &id);
    assert_eq!(j["status"], "succeeded", "{j}");
    assert_eq!(j["trained_tokens"].as_u64(), Some(whole_tokens));
    let msgs = messages(&s, &id);
    let resumed: Vec<&String> = msgs
        .iter()
        .filter(|m| m.contains("resumed at step"))
        .collect();
    assert_eq!(resumed.len(), 1, "{msgs:?}");
    let from: u64 = resumed[0]
        .split("resumed at step ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        from >= killed_at && from < total,
        "resumed at {from}, killed after {killed_at}"
    );

    // One metrics event a step (the steps lost with the process are not counted twice), and
    // every step after the checkpoint it resumed from gives the uninterrupted job's loss.
    let all = losses(&s, &id);
    let steps: Vec<u64> = all.iter().map(|&(step, _)| step).collect();
    assert_eq!(steps, (1..=total).collect::<Vec<u64>>());
    let after: Vec<(u64, f64)> = all.into_iter().filter(|&(step, _)| step > from).collect();
    for (step, loss) in &after {
        let want = whole[*step as usize - 1];
        assert_eq!(want.0, *step);
        assert_eq!(
            loss.to_bits(),
            want.1.to_bits(),
            "step {step}: {loss} after the restart, {} uninterrupted",
            want.1
        );
    }

    // Served under its name at once.
    let name = j["fine_tuned_model"].as_str().unwrap();
    let models = s.get("/v1/models");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == name),
        "{name} not in {models}"
    );
    let r = s.post(
        "/v1/completions",
        &json!({"model": name, "prompt": "Record 3: the cat", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r["model"], name);
    drop(s);
    let _ = std::fs::remove_dir_all(&root);
}
