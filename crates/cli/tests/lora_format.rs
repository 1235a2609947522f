//! A short LoRA run teaches the real SmolLM2-135M-Instruct an answer format it does not
//! have, and the format carries over to prompts about words it never trained on.
//!
//! Data (as in `bench/lora_format.py`, with its own fixed shuffle): 59 words, 40 train,
//! 19 are held out. Every assistant reply reads `Answer: WORD (N letters)`, in SmolLM2's own
//! ChatML template. `ferrollama finetune --method lora` (rank 8 on every projection, the
//! Q4_1 base kept as stored, 20 steps of 4 chats) writes the adapter; then the base and the
//! adapter answer every held-out prompt greedily through the engine.
//!
//! Measured when this test was written (this split, 2 threads): loss 4.018 -> 0.244; held-out
//! format 0% before, 95% after; exactly right (word and count) 0 -> 7 of 19. The bench
//! script's split gave 0% -> 95% and 0% -> 32%. The test asks for at most 10% before and at
//! least 70% after, and at least one held-out answer that is
//! exactly right after and none before.

#![allow(clippy::unwrap_used)]

mod common;

use common::format_data::{WORDS, question, shuffled};
use common::smollm2;

use std::sync::Arc;

use ferrollama_engine::ChatMessage;
use ferrollama_engine::{GenerateParams, Lora, Model, SamplerConfig, Session, generate};
use ferrollama_model::KvType;

fn answer(w: &str) -> String {
    format!("Answer: {} ({} letters)", w.to_uppercase(), w.len())
}

/// `Some((WORD, N))` when `text` is exactly in the trained format.
fn parse(text: &str) -> Option<(String, usize)> {
    let rest = text.trim().strip_prefix("Answer: ")?;
    let (word, count) = rest.split_once(" (")?;
    let n = count.strip_suffix(" letters)")?.parse().ok()?;
    (!word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()))
        .then(|| (word.to_string(), n))
}

/// (share in format, number exactly right, the replies) over the held-out prompts.
fn score(
    m: &Model,
    lora: Option<&Arc<Lora>>,
    held: &[(String, &str)],
) -> (f64, usize, Vec<String>) {
    let mut in_format = 0;
    let mut exact = 0;
    let mut replies = Vec::new();
    for (q, w) in held {
        let prompt = m.chat_prompt(&[ChatMessage::new("user", q)]).unwrap();
        let mut s = Session::new(m, 256, 2, 64, KvType::F16).unwrap();
        s.set_adapter(lora.map(|l| Arc::new(l.adapter.clone())));
        let params = GenerateParams {
            max_tokens: 24,
            sampler: SamplerConfig::greedy(),
            stop: Vec::new(),
        };
        let text = generate(m, &mut s, &prompt, &params, &mut |_| {})
            .unwrap()
            .text;
        if let Some((word, n)) = parse(&text) {
            in_format += 1;
            if word == w.to_uppercase() && n == w.len() {
                exact += 1;
            }
        }
        replies.push(text.trim().to_string());
    }
    (in_format as f64 / held.len() as f64, exact, replies)
}

#[test]
fn parse_accepts_only_the_trained_format() {
    assert_eq!(
        parse("Answer: SUNSET (6 letters)"),
        Some(("SUNSET".into(), 6))
    );
    assert_eq!(
        parse(" Answer: SUNSET (6 letters)\n"),
        Some(("SUNSET".into(), 6))
    );
    assert_eq!(parse("Answer: sunset (6 letters)"), None);
    assert_eq!(parse("Answer: SUNSET (6 letters). Also"), None);
    assert_eq!(parse("The word is SUNSET"), None);
}

#[test]
fn lora_teaches_smollm2_a_format_that_holds_on_unseen_words() {
    let model = smollm2();
    let words = shuffled(WORDS.split_whitespace().fold(Vec::new(), |mut v, w| {
        if !v.contains(&w) {
            v.push(w);
        }
        v
    }));
    let (train, held_words) = words.split_at(40);
    assert_eq!(held_words.len(), 19);
    let dir = std::env::temp_dir().join(format!("ferrollama-lora-format-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let record = |i: usize, w: &str| {
        serde_json::json!({"messages": [
            {"role": "user", "content": question(i, w)},
            {"role": "assistant", "content": answer(w)},
        ]})
        .to_string()
            + "\n"
    };
    let data = dir.join("train.jsonl");
    std::fs::write(
        &data,
        train
            .iter()
            .enumerate()
            .map(|(i, w)| record(i, w))
            .collect::<String>(),
    )
    .unwrap();

    let out = common::run(
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
                "20",
                "--batch-size",
                "4",
                "--lr",
                "1e-3",
                "--seq-len",
                "128",
                "--json",
                "-t",
                "2",
            ])
            .arg("--out")
            .arg(dir.join("out"))
            .env("FERROLLAMA_MODELS", dir.join("store")),
        b"",
    );
    assert!(
        out.status.success(),
        "finetune failed: {}",
        common::stderr(&out)
    );
    let losses: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 20);
    eprintln!("loss {:.3} -> {:.3}", losses[0], losses[19]);

    let m = Model::load(&model).unwrap();
    let lora = Arc::new(Lora::load("fmt", &dir.join("out/adapter.gguf"), &m).unwrap());
    let held: Vec<(String, &str)> = held_words
        .iter()
        .enumerate()
        .map(|(i, w)| (question(i, w), *w))
        .collect();
    let (before, exact_before, replies_before) = score(&m, None, &held);
    let (after, exact_after, replies_after) = score(&m, Some(&lora), &held);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "held-out format {:.0}% -> {:.0}%, exactly right {exact_before} -> {exact_after} of {}\n\
         before: {:?}\nafter: {:?}",
        before * 100.0,
        after * 100.0,
        held.len(),
        &replies_before[..3],
        &replies_after[..3]
    );
    assert!(losses[19] < 0.5 * losses[0], "loss {losses:?}");
    assert!(
        before <= 0.1,
        "the base already answers in the format: {replies_before:?}"
    );
    assert_eq!(exact_before, 0, "{replies_before:?}");
    assert!(
        after >= 0.7,
        "only {:.0}% in the format after training: {replies_after:?}",
        after * 100.0
    );
    assert!(exact_after >= 1, "{replies_after:?}");
}
