#![allow(clippy::unwrap_used)]
//! The in-process backend scores the choices of a question from one evaluation of their
//! shared context (the cache cut back to the context for each choice); that must give what
//! scoring each context + continuation from an empty cache gives.

use std::path::PathBuf;

use ferrollama_engine::Model;
use ferrollama_eval::{Backend, Context, LocalBackend, LocalOptions};

fn tiny() -> Model {
    Model::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-f16.gguf"),
    )
    .unwrap()
}

#[test]
fn prefix_shared_scores_equal_scores_from_scratch() {
    let model = tiny();
    // A small batch so that the context and the longer choices span several calls.
    let mut b = LocalBackend::new(
        &model,
        LocalOptions {
            threads: 2,
            batch: 5,
            max_length: 128,
        },
    )
    .unwrap();
    let context = Context::Text("The quick brown fox jumps over the lazy dog. Then it ".into());
    let choices: Vec<String> = [
        "ran away.",
        "slept under a tree for the rest of the long afternoon",
        "x",
        "jumped again",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ctx, conts) = b.encode_pairs(&context, &choices).unwrap();
    // The context's trailing space moved into each continuation.
    assert!(conts.iter().all(|c| !c.is_empty()));
    let shared = b.score_shared(&ctx, &conts).unwrap();
    assert_eq!(b.loglikelihood(&context, &choices).unwrap(), shared);
    for (c, s) in conts.iter().zip(&shared) {
        let scratch = b.score_scratch(&ctx, c).unwrap();
        assert!(
            (scratch.ll - s.ll).abs() < 1e-4,
            "shared {} vs scratch {}",
            s.ll,
            scratch.ll
        );
        assert_eq!(scratch.is_greedy, s.is_greedy);
        assert!(s.ll < 0.0 && s.ll.is_finite());
    }
    // The choices really differ (a backend returning one number for all would fail here).
    assert!((shared[0].ll - shared[1].ll).abs() > 1e-3);
    // Scoring a context twice in a row gives the same numbers (no state leaks between
    // questions).
    assert_eq!(b.score_shared(&ctx, &conts).unwrap(), shared);
}

#[test]
fn too_long_requests_are_cut_from_the_left() {
    let model = tiny();
    let mut b = LocalBackend::new(
        &model,
        LocalOptions {
            threads: 2,
            batch: 16,
            max_length: 8,
        },
    )
    .unwrap();
    let ctx: Vec<u32> = (10..30).collect();
    let cont: Vec<u32> = vec![40, 41, 42];
    // 20 + 3 tokens > max_length + 1: lm-eval keeps the last 9 and runs the first 8 of them.
    let cut = b.score_shared(&ctx, std::slice::from_ref(&cont)).unwrap()[0];
    let same = b.score_scratch(&ctx[ctx.len() - 6..], &cont).unwrap();
    assert!((cut.ll - same.ll).abs() < 1e-5);
}

#[test]
fn rolling_is_the_text_after_the_prefix_token() {
    let model = tiny();
    let mut b = LocalBackend::new(
        &model,
        LocalOptions {
            threads: 2,
            batch: 64,
            max_length: 128,
        },
    )
    .unwrap();
    let text = "A stitch in time saves nine.";
    // One window: every token predicted after lm-eval's prefix token (BOS), which is what
    // log-likelihood after an empty context gives.
    let rolling = b.loglikelihood_rolling(text).unwrap();
    let empty = b
        .loglikelihood(&Context::Text(String::new()), &[text.to_string()])
        .unwrap()[0];
    assert!(
        (rolling - empty.ll).abs() < 1e-4,
        "{rolling} vs {}",
        empty.ll
    );
    // Windows of 4 tokens condition on less, so the text scores differently.
    let mut short = LocalBackend::new(
        &model,
        LocalOptions {
            threads: 2,
            batch: 64,
            max_length: 4,
        },
    )
    .unwrap();
    let windowed = short.loglikelihood_rolling(text).unwrap();
    assert!((windowed - rolling).abs() > 1e-3);
}
