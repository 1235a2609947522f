//! Encoding throughput on a corpus, for `bench/tokenizer.py` (which runs tiktoken on the
//! same documents in the same run and prints the ratio).
//!
//! Usage: `encode_bench TOKENIZER CORPUS.jsonl THREADS REPEATS`, where each corpus line is
//! `{"text": ...}`. Prints one JSON object: bytes, best single-thread and batch seconds, and
//! an FNV-1a checksum of all ids so the caller can check both engines agree.

use std::time::Instant;

use ferrollama_tokenizer::{AllowedSpecial, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: encode_bench TOKENIZER CORPUS.jsonl THREADS REPEATS".into());
    }
    let tok = Tokenizer::from_file(&args[1])?;
    let docs: Vec<String> = std::fs::read_to_string(&args[2])?
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let threads: usize = args[3].parse()?;
    let repeats: usize = args[4].parse()?;
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();

    let mut single = f64::INFINITY;
    let mut ids_single = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        ids_single = refs
            .iter()
            .map(|d| tok.encode(d, false, false, AllowedSpecial::None))
            .collect::<Vec<_>>();
        single = single.min(t.elapsed().as_secs_f64());
    }
    let mut batch = f64::INFINITY;
    let mut ids_batch = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        ids_batch = tok.encode_batch(&refs, threads);
        batch = batch.min(t.elapsed().as_secs_f64());
    }
    if ids_single != ids_batch {
        return Err("batch encoding differs from single-thread encoding".into());
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut n_tokens = 0usize;
    for ids in &ids_single {
        n_tokens += ids.len();
        for id in ids {
            for b in id.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "bytes": bytes, "docs": docs.len(), "tokens": n_tokens, "threads": threads,
            "single_s": single, "batch_s": batch, "fnv1a": format!("{h:016x}"),
        })
    );
    Ok(())
}
