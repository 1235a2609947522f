//! Prompt Guard on the tiny seeded DeBERTa-v3 of `testdata/deberta` (probabilities from
//! the numpy port of transformers), windowing, scoring rules and bad folders.

use std::path::{Path, PathBuf};

use ferrollama_safety::SafetyError;
use ferrollama_safety::prompt_guard::{
    CONTEXT, DEFAULT_THRESHOLD, LABELS, Mode, PromptGuard, PromptGuardScores, SpmTokenizer, WINDOW,
    WeightFormat, flagged,
};
use ferrollama_tensor::ThreadPool;
use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/deberta")
}

fn model_dir() -> PathBuf {
    testdata().join("model")
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(testdata().join("expected.json")).expect("expected.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["model"].as_array().expect("cases").clone()
}

fn ids_of(c: &Value) -> Vec<u32> {
    c["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn probs_of(c: &Value) -> [f32; 3] {
    let p: Vec<f32> = c["probs"]
        .as_array()
        .expect("probs")
        .iter()
        .map(|x| x.as_f64().expect("p") as f32)
        .collect();
    [p[0], p[1], p[2]]
}

/// Probabilities within 1e-4 relative, 1e-5 absolute for tiny ones.
fn close(got: [f32; 3], want: [f32; 3]) -> bool {
    got.iter()
        .zip(want)
        .all(|(g, w)| (g - w).abs() <= 1e-4 * w.abs() + 1e-5)
}

#[test]
fn texts_match_the_reference_probabilities() {
    let pg = PromptGuard::load(&model_dir()).expect("load");
    let pool = ThreadPool::new(2);
    let mut n_texts = 0;
    for c in expected() {
        let ids = ids_of(&c);
        let want = probs_of(&c);
        if let Some(text) = c["text"].as_str() {
            n_texts += 1;
            let s = pg.classify(text, &pool).expect("classify");
            // The tokenizer gives transformers' ids; the window is [CLS] ids [SEP].
            assert_eq!(
                pg.tokenizer().encode(text).expect("encode"),
                ids[1..ids.len() - 1]
            );
            assert_eq!(s.tokens, ids.len() - 2);
            assert_eq!(s.n_windows(), 1);
            let got = [s.benign, s.injection, s.jailbreak];
            assert!(close(got, want), "{text:?}: got {got:?}, want {want:?}");
        }
        let got = pg.window_probabilities(&ids, &pool).expect("window");
        assert!(
            close(got, want),
            "{}: got {got:?}, want {want:?}",
            c["name"]
        );
    }
    assert!(n_texts >= 5);
}

#[test]
fn spm_model_tokenizes_like_tokenizer_json() {
    let dir = model_dir();
    let a = SpmTokenizer::from_tokenizer_json(&dir.join("tokenizer.json")).expect("json");
    let b = SpmTokenizer::from_spm_model(&dir.join("spm.model")).expect("spm");
    assert_eq!((a.cls, a.sep), (1, 2));
    assert_eq!((b.cls, b.sep), (a.cls, a.sep));
    assert_eq!(a.vocab_size(), b.vocab_size());
    let mut texts: Vec<String> = expected()
        .iter()
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect();
    texts.extend(
        [
            "Tabs\tand\nnewlines\r\n here",
            "[CLS] literal [SEP] tokens [MASK]",
            "ＡＢＣ①②③ ﬁ ligature",
            "   ",
            "x",
        ]
        .map(String::from),
    );
    for t in &texts {
        assert_eq!(a.encode(t).expect("a"), b.encode(t).expect("b"), "{t:?}");
    }
}

#[test]
fn long_texts_are_scored_in_windows_and_the_worst_counts() {
    let pg = PromptGuard::load(&model_dir()).expect("load");
    let pool = ThreadPool::new(2);
    let texts: Vec<String> = expected()
        .iter()
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
        .collect();
    let long = texts.join(" ").repeat(12);
    let ids = pg.tokenizer().encode(&long).expect("encode");
    assert!(ids.len() > 2 * WINDOW, "{} tokens", ids.len());
    let s = pg.classify(&long, &pool).expect("classify");
    assert_eq!(s.tokens, ids.len());
    assert_eq!(s.n_windows(), ids.len().div_ceil(WINDOW));
    // Each window is [CLS] chunk [SEP], at most CONTEXT tokens.
    for (k, chunk) in ids.chunks(WINDOW).enumerate() {
        let mut w = vec![pg.tokenizer().cls];
        w.extend_from_slice(chunk);
        w.push(pg.tokenizer().sep);
        assert!(w.len() <= CONTEXT);
        assert_eq!(pg.window_probabilities(&w, &pool).expect("w"), s.windows[k]);
    }
    let inj = |p: &[f32; 3]| p[1] + p[2];
    let worst = s.windows.iter().map(inj).fold(f32::MIN, f32::max);
    assert_eq!(s.injection + s.jailbreak, worst);
    assert_eq!(Mode::Injection.score(&s), worst);
    let jb = s.windows.iter().map(|p| p[2]).fold(f32::MIN, f32::max);
    assert_eq!(Mode::Jailbreak.score(&s), jb);
    // The windows differ (the last is shorter), so the max is a real choice.
    assert!(s.windows.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn empty_text_is_one_cls_sep_window() {
    let pg = PromptGuard::load(&model_dir()).expect("load");
    let pool = ThreadPool::new(1);
    let s = pg.classify("", &pool).expect("classify");
    assert_eq!((s.tokens, s.n_windows()), (0, 1));
    let (cls, sep) = (pg.tokenizer().cls, pg.tokenizer().sep);
    assert_eq!(
        s.windows[0],
        pg.window_probabilities(&[cls, sep], &pool).expect("w")
    );
}

#[test]
fn scores_pick_the_worst_window_and_modes_take_maxima() {
    let s = PromptGuardScores::from_windows(
        vec![[0.2, 0.1, 0.7], [0.05, 0.9, 0.05], [0.5, 0.2, 0.3]],
        1200,
    );
    // Injection scores 0.8, 0.95, 0.5: the second window is reported.
    assert_eq!((s.benign, s.injection, s.jailbreak), (0.05, 0.9, 0.05));
    assert_eq!(Mode::Injection.score(&s), 0.95);
    // Jailbreak takes its own maximum (first window), not the reported one.
    assert_eq!(Mode::Jailbreak.score(&s), 0.7);
    assert_eq!((s.n_windows(), s.tokens), (3, 1200));
    let none = PromptGuardScores::from_windows(Vec::new(), 0);
    assert_eq!(Mode::Injection.score(&none), 0.0);
}

#[test]
fn threshold_is_strict_and_modes_parse() {
    assert_eq!(DEFAULT_THRESHOLD, 0.9);
    assert!(!flagged(0.9, DEFAULT_THRESHOLD));
    assert!(!Mode::flagged(0.9, 0.9));
    assert!(flagged(0.900_001, DEFAULT_THRESHOLD));
    assert!(!flagged(0.2, DEFAULT_THRESHOLD));
    assert_eq!("jailbreak".parse::<Mode>().expect("j"), Mode::Jailbreak);
    assert_eq!("injection".parse::<Mode>().expect("i"), Mode::Injection);
    assert_eq!(
        "prompt_injection".parse::<Mode>().expect("p"),
        Mode::Injection
    );
    assert!("both".parse::<Mode>().is_err());
    assert_eq!(Mode::Jailbreak.name(), "jailbreak");
    assert_eq!(Mode::Injection.name(), "injection");
    assert_eq!(LABELS, ["BENIGN", "INJECTION", "JAILBREAK"]);
}

#[test]
fn q8_0_weights_classify_close_to_f32() {
    let pg = PromptGuard::load_with(&model_dir(), WeightFormat::Q8_0).expect("load");
    let pool = ThreadPool::new(2);
    for c in expected() {
        let got = pg.window_probabilities(&ids_of(&c), &pool).expect("w");
        let want = probs_of(&c);
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.08),
            "{}: {got:?} vs {want:?}",
            c["name"]
        );
    }
}

#[test]
fn bad_windows_and_folders_are_errors() {
    let pg = PromptGuard::load(&model_dir()).expect("load");
    let pool = ThreadPool::new(1);
    assert!(pg.window_probabilities(&[], &pool).is_err());
    assert!(
        pg.window_probabilities(&vec![5; CONTEXT + 1], &pool)
            .is_err()
    );
    assert!(pg.window_probabilities(&[1, 1_000_000, 2], &pool).is_err());

    let e = PromptGuard::load(Path::new("/nonexistent/prompt-guard")).expect_err("missing");
    assert!(matches!(e, SafetyError::NotFound(_)), "{e:?}");

    let dir = std::env::temp_dir().join(format!("ferrollama-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // No tokenizer.
    let e = PromptGuard::load(&dir).expect_err("no tokenizer");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    // Tokenizer but an invalid config.
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .expect("cp");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": \"big\"}").expect("w");
    let e = PromptGuard::load(&dir).expect_err("config");
    assert!(e.to_string().contains("config.json"), "{e}");
    // Valid config, no weights.
    std::fs::copy(model_dir().join("config.json"), dir.join("config.json")).expect("cp");
    let e = PromptGuard::load(&dir).expect_err("weights");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    // Truncated weights.
    let st = std::fs::read(model_dir().join("model.safetensors")).expect("read");
    std::fs::write(dir.join("model.safetensors"), &st[..st.len() / 2]).expect("w");
    assert!(PromptGuard::load(&dir).is_err());
    // Garbage tokenizer.
    std::fs::write(dir.join("tokenizer.json"), "[]").expect("w");
    assert!(PromptGuard::load(&dir).is_err());
    std::fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    std::fs::write(dir.join("spm.model"), [0x0a, 0xff, 0xff]).expect("w");
    assert!(PromptGuard::load(&dir).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompt_guard_is_shareable() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}
    assert_send_sync::<PromptGuard>();
}
