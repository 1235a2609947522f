//! Crash safety of vector store ingestion: `serve` is killed with SIGKILL at random moments
//! while it ingests 30 multi-chunk files, 20 times over, and restarted on the same data
//! directory. After every restart, every file the API reports `completed` is fully there
//! (its chunk count is final, its last chunk is found by keyword search), no file that is
//! not `completed` holds any chunk, and at the end every interrupted file has resumed to
//! `completed`. Runs on both stores: SQLite in the data directory, and a fresh database on
//! the PostgreSQL server at `$FERROLLAMA_PG_URL` (`serve --store postgres://...`; skipped
//! with a note when unset). Needs all-MiniLM-L6-v2 (FERROLLAMA_MINILM, set by
//! scripts/test).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::server::Server;

use serde_json::json;

const FILES: usize = 40;
const KILLS: usize = 20;

fn minilm() -> PathBuf {
    std::env::var_os("FERROLLAMA_MINILM").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ferrollama/models/all-MiniLM-L6-v2")
        },
        PathBuf::from,
    )
}

/// `serve` on the tiny model with MiniLM embeddings, data in `data`, `store` (a PostgreSQL
/// URL) or SQLite in `data`.
fn start(data: &Path, store: Option<&str>) -> Server {
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-q8_0.gguf");
    let mut args: Vec<OsString> = vec![
        "-m".into(),
        tiny.into(),
        "--embedding-model".into(),
        minilm().into(),
        "--data-dir".into(),
        data.into(),
    ];
    if let Some(url) = store {
        args.extend(["--store".into(), url.into()]);
    }
    Server::start(&args)
}

/// ~1,500 words of file `i`, ending with its marker word.
fn document(i: usize) -> String {
    let words = [
        "river", "stone", "lantern", "orchard", "copper", "meadow", "harbor", "violet", "thunder",
        "garden", "silver", "canyon",
    ];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut out = String::new();
    for w in 0..1500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.push_str(words[(seed % words.len() as u64) as usize]);
        out.push(if w % 17 == 16 { '.' } else { ' ' });
    }
    out.push_str(&format!(" zq{i}marker"));
    out
}

/// (status, chunk count) of every file, and checks the invariants.
fn check(s: &Server, vs: &str, ids: &[String]) -> HashMap<String, (String, usize)> {
    let mut out = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let f = s.get(&format!("/v1/vector_stores/{vs}/files/{id}"));
        let status = f["status"].as_str().unwrap().to_string();
        let chunks = s.get(&format!("/v1/vector_stores/{vs}/files/{id}/content"))["data"]
            .as_array()
            .unwrap()
            .len();
        match status.as_str() {
            "completed" => {
                assert!(chunks > 1, "file {i}: completed with {chunks} chunks");
                let r = s.post(
                    &format!("/v1/vector_stores/{vs}/search"),
                    &json!({"query": format!("zq{i}marker"), "search_mode": "keyword", "max_num_results": 1}),
                );
                assert_eq!(
                    r["data"][0]["file_id"],
                    id.as_str(),
                    "file {i}'s last chunk is not searchable: {r}"
                );
            }
            "in_progress" => {
                assert_eq!(chunks, 0, "file {i}: in_progress but holds {chunks} chunks")
            }
            other => panic!("file {i} is {other}: {f}"),
        }
        out.insert(id.clone(), (status, chunks));
    }
    out
}

#[test]
fn kill_9_during_ingestion_loses_nothing_and_keeps_no_half_files() {
    crash_test("sqlite", None);
}

#[test]
fn kill_9_during_ingestion_on_postgres_loses_nothing_and_keeps_no_half_files() {
    let Ok(url) = std::env::var("FERROLLAMA_PG_URL") else {
        eprintln!("note: FERROLLAMA_PG_URL is not set; skipping the PostgreSQL crash test");
        return;
    };
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
    let db = format!("crash_test_{}", std::process::id());
    // Separate statements: a multi-statement batch runs as one transaction, and
    // DROP/CREATE DATABASE refuse to run inside one.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .expect("drop old database");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create database");
    let base = url.rsplit_once('/').expect("database URL").0;
    crash_test("postgres", Some(&format!("{base}/{db}")));
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

fn crash_test(name: &str, store: Option<&str>) {
    let data = std::env::temp_dir().join(format!("ferrollama-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let s = start(&data, store);
    let ids: Vec<String> = (0..FILES)
        .map(|i| s.upload(&format!("doc{i}.txt"), "assistants", document(i).as_bytes()))
        .collect();
    let vs = s.post(
        "/v1/vector_stores",
        &json!({"name": "crash", "file_ids": ids}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut rng = 0x1234_5678u64;
    let mut server = Some(s);
    let mut seen: Vec<HashMap<String, (String, usize)>> = Vec::new();
    let (mut mid_ingestion, mut kills) = (0, 0);
    for _ in 0..KILLS {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(50 + (rng >> 33) % 700));
        let s = server.take().unwrap();
        let before = s.get(&format!("/v1/vector_stores/{vs}"));
        if before["file_counts"]["in_progress"].as_u64().unwrap() > 0 {
            mid_ingestion += 1;
        }
        drop(s); // SIGKILL
        kills += 1;
        let s = start(&data, store);
        seen.push(check(&s, &vs, &ids));
        server = Some(s);
    }
    let s = server.take().unwrap();
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let v = s.get(&format!("/v1/vector_stores/{vs}"));
        if v["file_counts"]["completed"].as_u64() == Some(FILES as u64) {
            break;
        }
        assert_eq!(v["file_counts"]["failed"], 0, "{v}");
        assert!(Instant::now() < end, "ingestion did not finish: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = check(&s, &vs, &ids);
    // A file completed after any restart had then exactly the chunks it has at the end.
    for snap in &seen {
        for (id, (status, n)) in snap {
            if status == "completed" {
                assert_eq!(
                    *n, last[id].1,
                    "{id}: {n} chunks after a restart, {} at the end",
                    last[id].1
                );
            }
        }
    }
    let total: usize = last.values().map(|(_, n)| n).sum();
    eprintln!(
        "crash test ({name}): {kills} SIGKILLs, {mid_ingestion} of them mid-ingestion; {FILES} files, {total} chunks, all completed and searchable"
    );
    assert!(
        mid_ingestion >= KILLS / 2,
        "only {mid_ingestion} of {kills} kills hit ingestion"
    );
    drop(s); // SIGKILL
    let _ = std::fs::remove_dir_all(&data);
}
