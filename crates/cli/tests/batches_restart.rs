#![allow(clippy::unwrap_used)]
//! A batch of the Batches API survives its server: `serve` is stopped with SIGTERM (lines
//! refused by the shutdown are not failures), then killed with SIGKILL, while the batch
//! runs; restarted on the same data directory each time, the batch resumes and completes
//! with every custom_id in its output file exactly once and none failed; its record (id,
//! creation time, counts) is still there after another restart.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::{Value, json};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf")
}

fn start(data: &Path) -> Server {
    let args: Vec<OsString> = vec![
        "-m".into(),
        tiny().into(),
        "--data-dir".into(),
        data.into(),
        "--embedding-model".into(),
        "none".into(),
        "-t".into(),
        "1".into(),
        // Few slots: the batch gets one, so it runs long enough to be killed midway.
        "--max-running".into(),
        "4".into(),
    ];
    Server::start(&args)
}

fn wait(s: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let b = s.get(&format!("/v1/batches/{id}"));
        if done(&b) {
            return b;
        }
        assert!(Instant::now() < end, "batch stuck: {b}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn content(s: &Server, file_id: &str) -> String {
    let mut r = ureq::get(&s.url(&format!("/v1/files/{file_id}/content")))
        .call()
        .unwrap();
    r.body_mut().read_to_string().unwrap()
}

#[test]
fn a_batch_killed_with_its_server_resumes_after_the_restart() {
    let data = std::env::temp_dir().join(format!("fl-batches-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let n = 200;
    let input: String = (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "tiny-q8_0", "messages": [{"role": "user", "content": format!("line {i}")}],
                            "max_tokens": 32, "temperature": 0, "ignore_eos": true}})
            .to_string()
                + "\n"
        })
        .collect();
    let s = start(&data);
    let file = s.upload("in.jsonl", "batch", input.as_bytes());
    let b = s.post(
        "/v1/batches",
        &json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    );
    let id = b["id"].as_str().unwrap().to_string();
    let created = b["created_at"].clone();
    let done = |b: &Value| b["request_counts"]["completed"].as_u64().unwrap();
    let mid = wait(&s, &id, |b| done(b) >= 3);
    assert_eq!(mid["status"], "in_progress", "{mid}");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Wait until it has exited (a zombie: not reaped yet) after the drain, so the next
    // server is alone with the data directory.
    let stat = format!("/proc/{}/stat", s.pid());
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&stat).is_ok_and(|t| !t.contains(") Z ")) {
        assert!(Instant::now() < end, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);

    let s = start(&data);
    let before = done(&mid);
    let mid = wait(&s, &id, |b| done(b) >= before + 3);
    assert_eq!(mid["status"], "in_progress", "{mid}");
    assert_eq!(mid["request_counts"]["failed"], 0, "{mid}");
    drop(s); // SIGKILL

    let s = start(&data);
    let b = wait(&s, &id, |b| b["status"] == "completed");
    assert_eq!(b["created_at"], created);
    assert_eq!(
        b["request_counts"],
        json!({"total": n, "completed": n, "failed": 0})
    );
    assert!(b["error_file_id"].is_null(), "{b}");
    let out = content(&s, b["output_file_id"].as_str().unwrap());
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["response"]["status_code"], 200);
            v["custom_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every custom_id exactly once");
    drop(s);

    // A finished batch is still listed after another restart.
    let s = start(&data);
    let list = s.get("/v1/batches?limit=5");
    assert_eq!(list["data"][0]["id"], json!(id));
    assert_eq!(list["data"][0]["status"], "completed");
    drop(s);
    std::fs::remove_dir_all(&data).unwrap();
}
