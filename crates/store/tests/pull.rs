//! `pull` against a mock hub on a local socket: selection, resume, verification, auth and
//! refusals. Nothing here touches the real cache or the network.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::gguf::{TINY_PARAMS, tiny_gguf};
use common::hub::{MockFile, MockHub, MockRepo, sha256_hex};
use common::{TempDir, files_under};
use ferrollama_store::{
    EntryState, Format, HubConfig, ModelRef, NoProgress, PullOptions, PullOutcome, Store,
    StoreError, Token, Verified,
};

fn options(hub: &MockHub, tmp: &Path) -> PullOptions {
    let mut cfg = HubConfig::new(hub.url.clone());
    cfg.retries = 0;
    cfg.retry_delay = Duration::ZERO;
    cfg.timeout = Duration::from_secs(10);
    PullOptions {
        name: None,
        hub: cfg,
        python: "/nonexistent/python".into(),
        cache_dir: tmp.join("cache"),
        pins: vec![],
        parted: vec![],
        force: false,
    }
}

fn pull(store: &Store, r: &str, opts: &PullOptions) -> Result<PullOutcome, StoreError> {
    store.pull(&ModelRef::parse(r).unwrap(), opts, &mut NoProgress)
}

/// Deterministic bytes that are not all alike, so a wrong offset would show.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn pulls_a_single_gguf_and_registers_it() {
    let hub = MockHub::start();
    let gguf = tiny_gguf(1);
    hub.add(
        "org/tiny-GGUF",
        MockRepo::new(vec![
            MockFile::small("README.md", b"# tiny"),
            MockFile::small(".gitattributes", b"*.gguf filter=lfs"),
            MockFile::lfs("tiny.Q8_0.gguf", gguf.clone()),
        ]),
    );
    let tmp = TempDir::new("single");
    let store = Store::at(tmp.path().join("models"));
    let out = pull(&store, "org/tiny-GGUF", &options(&hub, tmp.path())).unwrap();

    assert_eq!(out.name, "tiny.Q8_0");
    assert!(!out.up_to_date);
    let dir = tmp.path().join("models/tiny.Q8_0");
    assert_eq!(out.model_path, dir.join("tiny.Q8_0.gguf"));
    assert_eq!(fs::read(&out.model_path).unwrap(), gguf);
    // Only the model file and the manifest (plus the lock) are in the entry.
    assert_eq!(
        files_under(&dir),
        vec![".lock", "manifest.json", "tiny.Q8_0.gguf"]
    );
    let m = &out.manifest;
    assert_eq!(m.source, "hf:org/tiny-GGUF");
    assert_eq!(m.revision, "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(m.origin, hub.url);
    assert_eq!(m.format, Format::Gguf);
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].sha256, sha256_hex(&gguf));
    assert_eq!(m.files[0].size, gguf.len() as u64);
    assert_eq!(m.files[0].verified, Verified::Hub);
    // Files are fetched at the listed commit, not at the branch name.
    let reqs = hub.content_requests("tiny.Q8_0.gguf");
    assert_eq!(reqs.len(), 1);
    assert!(
        reqs[0]
            .target
            .contains(&format!("/resolve/{}/", m.revision))
    );

    // The entry is listed, resolvable and described.
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, EntryState::Complete);
    assert_eq!(list[0].size, gguf.len() as u64);
    assert_eq!(store.resolve("tiny.Q8_0").unwrap(), out.model_path);
    let info = ferrollama_store::info::gguf_summary(&out.model_path).unwrap();
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.parameters, TINY_PARAMS);
    assert_eq!(info.file_type.as_deref(), Some("F32"));
    assert_eq!(info.tensor_types.get("F32"), Some(&3));
    let shape = info.llama.unwrap();
    assert_eq!((shape.dim, shape.n_layers, shape.n_kv_heads), (8, 1, 1));

    // Pulling again is a no-op: one more listing, no more content requests.
    let again = pull(&store, "hf:org/tiny-GGUF", &options(&hub, tmp.path())).unwrap();
    assert!(again.up_to_date);
    assert_eq!(hub.content_requests("tiny.Q8_0.gguf").len(), 1);
}

#[test]
fn resumes_after_a_dropped_connection() {
    let hub = MockHub::start();
    let data = pattern(200_000);
    hub.add(
        "org/big",
        MockRepo::new(vec![MockFile {
            drop_after: Some(70_000),
            ..MockFile::lfs("big.gguf", data.clone())
        }]),
    );
    let tmp = TempDir::new("resume");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());

    let err = pull(&store, "org/big", &opts).unwrap_err();
    assert!(matches!(err, StoreError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("run the same pull again"), "{err}");
    let dir = tmp.path().join("models/big");
    // Nothing looks complete: no file under its real name, no manifest; the partial stays.
    assert!(!dir.join("big.gguf").exists());
    assert!(!dir.join("manifest.json").exists());
    let partial = fs::read(dir.join("big.gguf.partial")).unwrap();
    assert!(!partial.is_empty() && partial.len() <= 70_000);
    assert_eq!(partial[..], data[..partial.len()]);
    let listed = store.list().unwrap();
    assert_eq!(listed[0].state, EntryState::Incomplete);
    assert_eq!(listed[0].source.as_deref(), Some("hf:org/big"));
    assert!(matches!(
        store.resolve("big"),
        Err(StoreError::Incomplete { .. })
    ));

    let out = pull(&store, "org/big", &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), data);
    assert!(!dir.join("big.gguf.partial").exists());
    let reqs = hub.content_requests("big.gguf");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(
        reqs[1].header("range"),
        Some(format!("bytes={}-", partial.len()).as_str())
    );
    assert_eq!(store.list().unwrap()[0].state, EntryState::Complete);
}

#[test]
fn retries_resume_within_one_pull() {
    let hub = MockHub::start();
    let data = pattern(100_000);
    hub.add(
        "org/flaky",
        MockRepo::new(vec![MockFile {
            drop_after: Some(30_000),
            ..MockFile::lfs("flaky.gguf", data.clone())
        }]),
    );
    let tmp = TempDir::new("retry");
    let store = Store::at(tmp.path().join("models"));
    let mut opts = options(&hub, tmp.path());
    opts.hub.retries = 1;
    let out = pull(&store, "org/flaky", &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), data);
    let reqs = hub.content_requests("flaky.gguf");
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].header("range").is_some());
}

#[test]
fn a_wrong_sha256_leaves_nothing_that_looks_complete() {
    let hub = MockHub::start();
    hub.add(
        "org/bad",
        MockRepo::new(vec![MockFile {
            listed_sha256: Some("ab".repeat(32)),
            ..MockFile::lfs("bad.gguf", pattern(5000))
        }]),
    );
    let tmp = TempDir::new("sha");
    let store = Store::at(tmp.path().join("models"));
    let err = pull(&store, "org/bad", &options(&hub, tmp.path())).unwrap_err();
    assert!(matches!(err, StoreError::ShaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    let dir = tmp.path().join("models/bad");
    assert!(!dir.join("bad.gguf").exists());
    assert!(!dir.join("bad.gguf.partial").exists());
    assert!(!dir.join("manifest.json").exists());
    assert!(store.resolve("bad").is_err());
}

#[test]
fn more_bytes_than_announced_is_refused() {
    let hub = MockHub::start();
    hub.add(
        "org/long",
        MockRepo::new(vec![MockFile {
            extra_bytes: 100,
            ..MockFile::lfs("long.gguf", pattern(4000))
        }]),
    );
    let tmp = TempDir::new("long");
    let store = Store::at(tmp.path().join("models"));
    let err = pull(&store, "org/long", &options(&hub, tmp.path())).unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    let dir = tmp.path().join("models/long");
    assert!(!dir.join("long.gguf").exists());
    assert!(!dir.join("long.gguf.partial").exists());
}

#[test]
fn a_token_is_needed_and_goes_only_to_the_hub() {
    let hub = MockHub::start();
    let gguf = tiny_gguf(2);
    hub.add(
        "org/private",
        MockRepo {
            token: Some("hf_s3cret".into()),
            redirect: true,
            ..MockRepo::new(vec![MockFile::lfs("private.gguf", gguf.clone())])
        },
    );
    let tmp = TempDir::new("token");
    let store = Store::at(tmp.path().join("models"));
    let mut opts = options(&hub, tmp.path());

    let err = pull(&store, "org/private", &opts).unwrap_err();
    assert!(
        matches!(err, StoreError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");

    opts.hub.token = Token::new("hf_wrong");
    let err = pull(&store, "org/private", &opts).unwrap_err();
    assert!(
        err.to_string().contains("HF_TOKEN was sent and refused"),
        "{err}"
    );
    assert!(!err.to_string().contains("hf_wrong"), "{err}");
    assert!(!format!("{opts:?}").contains("hf_wrong"));

    opts.hub.token = Token::new("hf_s3cret");
    let out = pull(&store, "org/private", &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), gguf);
    // The hub got the token; the CDN it redirected to (another host) did not.
    let seen = hub.seen();
    let api = seen
        .iter()
        .rfind(|s| s.target.starts_with("/api/"))
        .unwrap();
    assert_eq!(api.header("authorization"), Some("Bearer hf_s3cret"));
    let resolve = seen
        .iter()
        .rfind(|s| s.target.contains("/resolve/"))
        .unwrap();
    assert_eq!(resolve.header("authorization"), Some("Bearer hf_s3cret"));
    let cdn = seen
        .iter()
        .rfind(|s| s.target.starts_with("/cdn/"))
        .unwrap();
    assert!(cdn.host.starts_with("localhost:"), "{}", cdn.host);
    assert_eq!(cdn.header("authorization"), None);
    // The sha256 came from the listing and the redirect's X-Linked-Etag alike.
    assert_eq!(out.manifest.files[0].verified, Verified::Hub);
}

#[test]
fn unknown_repos_and_files_are_404s() {
    let hub = MockHub::start();
    hub.add(
        "org/two",
        MockRepo::new(vec![
            MockFile::lfs("a.Q4_0.gguf", pattern(100)),
            MockFile::lfs("a.Q8_0.gguf", pattern(200)),
        ]),
    );
    let tmp = TempDir::new("404");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());

    let err = pull(&store, "org/missing", &opts).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("org/missing"), "{err}");

    let err = pull(&store, "org/two:a.Q5_0.gguf", &opts).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchFile { .. }), "{err}");
    assert!(err.to_string().contains("a.Q8_0.gguf"), "{err}");
    // Nothing was created for either.
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn several_ggufs_need_a_file() {
    let hub = MockHub::start();
    let (q4, q8) = (tiny_gguf(4), tiny_gguf(8));
    hub.add(
        "org/multi",
        MockRepo::new(vec![
            MockFile::lfs("m.Q4_0.gguf", q4),
            MockFile::lfs("sub/m.Q8_0.gguf", q8.clone()),
        ]),
    );
    let tmp = TempDir::new("multi");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());

    let err = pull(&store, "org/multi", &opts).unwrap_err();
    match &err {
        StoreError::AmbiguousGguf { choices, .. } => {
            assert_eq!(choices, &["m.Q4_0.gguf", "sub/m.Q8_0.gguf"]);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("org/multi:FILE"), "{err}");

    let out = pull(&store, "org/multi:sub/m.Q8_0.gguf", &opts).unwrap();
    assert_eq!(out.name, "m.Q8_0");
    assert_eq!(
        out.model_path,
        tmp.path().join("models/m.Q8_0/sub/m.Q8_0.gguf")
    );
    assert_eq!(fs::read(&out.model_path).unwrap(), q8);
    assert_eq!(out.manifest.source, "hf:org/multi:sub/m.Q8_0.gguf");
}

#[test]
fn unsafe_paths_from_the_hub_are_refused() {
    for evil in [
        "../../evil.gguf",
        "/tmp/ferrollama-evil.gguf",
        "a/../../evil.gguf",
    ] {
        let hub = MockHub::start();
        hub.add(
            "org/evil",
            MockRepo::new(vec![MockFile::lfs(evil, pattern(64))]),
        );
        let tmp = TempDir::new("evil");
        let root = tmp.path().join("a/b/models");
        let store = Store::at(&root);
        let err = pull(&store, "org/evil", &options(&hub, tmp.path())).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsafePath { .. }),
            "{evil}: {err}"
        );
        // Nothing was written anywhere, and the file was never requested.
        assert!(files_under(tmp.path()).is_empty(), "{evil}");
        assert!(!Path::new("/tmp/ferrollama-evil.gguf").exists());
        assert!(hub.content_requests("evil.gguf").is_empty());
    }
}

#[test]
fn pulls_a_safetensors_folder() {
    let hub = MockHub::start();
    let weights = pattern(10_000);
    hub.add(
        "org/Tiny-Llama",
        MockRepo::new(vec![
            MockFile::small("config.json", br#"{"hidden_size": 8}"#),
            MockFile::lfs("model.safetensors", weights.clone()),
            MockFile::small("tokenizer.json", b"{}"),
            MockFile::small("tokenizer_config.json", b"{}"),
            MockFile::small("README.md", b"readme"),
            MockFile::lfs("original/consolidated.00.pth", pattern(50)),
            MockFile::small("original/params.json", b"{}"),
        ]),
    );
    let tmp = TempDir::new("st");
    let store = Store::at(tmp.path().join("models"));
    let out = pull(&store, "org/Tiny-Llama", &options(&hub, tmp.path())).unwrap();
    assert_eq!(out.name, "Tiny-Llama");
    assert_eq!(out.manifest.format, Format::Safetensors);
    let dir = tmp.path().join("models/Tiny-Llama");
    assert_eq!(out.model_path, dir);
    assert_eq!(
        files_under(&dir),
        vec![
            ".lock",
            "config.json",
            "manifest.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), weights);
    let by_path = |p: &str| {
        out.manifest
            .files
            .iter()
            .find(|f| f.path == p)
            .unwrap()
            .clone()
    };
    // No sha256 is published for git-stored files: size checked, hash computed.
    assert_eq!(by_path("config.json").verified, Verified::Computed);
    assert_eq!(
        by_path("config.json").sha256,
        sha256_hex(br#"{"hidden_size": 8}"#)
    );
    assert_eq!(by_path("model.safetensors").verified, Verified::Hub);
    assert_eq!(store.resolve("Tiny-Llama").unwrap(), dir);
}

#[test]
fn pulls_a_meta_checkpoint_and_honours_name() {
    let hub = MockHub::start();
    hub.add(
        "meta/Llama-Tiny",
        MockRepo::new(vec![
            MockFile::small("README.md", b"readme"),
            MockFile::small("original/params.json", b"{\"dim\": 8}"),
            MockFile::lfs("original/consolidated.00.pth", pattern(300)),
            MockFile::lfs("original/tokenizer.model", pattern(40)),
        ]),
    );
    let tmp = TempDir::new("meta");
    let store = Store::at(tmp.path().join("models"));
    let mut opts = options(&hub, tmp.path());
    opts.name = Some("llama-tiny-meta".into());
    let out = pull(&store, "meta/Llama-Tiny", &opts).unwrap();
    assert_eq!(out.name, "llama-tiny-meta");
    assert_eq!(out.manifest.format, Format::Meta);
    assert_eq!(
        out.model_path,
        tmp.path().join("models/llama-tiny-meta/original")
    );
    assert_eq!(out.manifest.files.len(), 3);

    // The name now belongs to this source; another source may not take it.
    hub.add(
        "other/repo",
        MockRepo::new(vec![MockFile::lfs("x.gguf", pattern(10))]),
    );
    let err = pull(&store, "other/repo", &opts).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("--name"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    // --force replaces it: the old source's files go, the new one's come.
    opts.force = true;
    let out = pull(&store, "other/repo", &opts).unwrap();
    assert_eq!(out.manifest.source, "hf:other/repo");
    assert!(tmp.path().join("models/llama-tiny-meta/x.gguf").is_file());
    assert!(
        !tmp.path()
            .join("models/llama-tiny-meta/original")
            .join("params.json")
            .exists()
    );
    opts.force = false;

    opts.name = Some("../escape".into());
    let err = pull(&store, "other/repo", &opts).unwrap_err();
    assert!(matches!(err, StoreError::BadName { .. }), "{err}");
}

#[test]
fn pull_does_not_silently_replace_another_version_a_new_revision_needs_force() {
    let hub = MockHub::start();
    hub.add(
        "org/upd",
        MockRepo::new(vec![MockFile::lfs("upd.gguf", pattern(1000))]),
    );
    let tmp = TempDir::new("upd");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());
    pull(&store, "org/upd", &opts).unwrap();

    let newer: Vec<u8> = pattern(1200).into_iter().rev().collect();
    hub.add(
        "org/upd",
        MockRepo {
            commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
            ..MockRepo::new(vec![MockFile::lfs("upd.gguf", newer.clone())])
        },
    );
    // Another revision under the same name is refused, the entry untouched.
    let err = pull(&store, "org/upd", &opts).unwrap_err();
    assert!(matches!(err, StoreError::OtherVersion { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("--force"), "{text}");
    assert!(
        text.contains("fedcba9876543210fedcba9876543210fedcba98"),
        "{text}"
    );
    assert_eq!(
        fs::read(tmp.path().join("models/upd/upd.gguf")).unwrap(),
        pattern(1000)
    );
    let mut opts = opts;
    opts.force = true;
    let out = pull(&store, "org/upd", &opts).unwrap();
    assert!(!out.up_to_date);
    assert_eq!(
        out.manifest.revision,
        "fedcba9876543210fedcba9876543210fedcba98"
    );
    assert_eq!(fs::read(&out.model_path).unwrap(), newer);
}

#[test]
fn network_failures_name_the_host() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = TempDir::new("net");
    let store = Store::at(tmp.path().join("models"));
    let hub = MockHub::start();
    let mut opts = options(&hub, tmp.path());
    opts.hub.url = format!("http://127.0.0.1:{port}");
    opts.hub.token = Token::new("hf_never_printed");
    let err = pull(&store, "org/x", &opts).unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("could not reach http://127.0.0.1:{port} (")),
        "{text}"
    );
    assert!(text.contains("check your network or proxy"), "{text}");
    assert!(!text.contains("hf_never_printed"), "{text}");
}

#[test]
fn partials_are_finished_verified_or_discarded() {
    let hub = MockHub::start();
    let data = pattern(50_000);
    hub.add(
        "org/p",
        MockRepo::new(vec![MockFile {
            drop_after: Some(10_000),
            ..MockFile::lfs("p.gguf", data.clone())
        }]),
    );
    let tmp = TempDir::new("partials");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());
    pull(&store, "org/p", &opts).unwrap_err();
    let partial = tmp.path().join("models/p/p.gguf.partial");
    assert!(partial.exists());

    // A corrupt prefix is caught by the whole-file hash and thrown away.
    fs::write(&partial, vec![0u8; 20_000]).unwrap();
    let err = pull(&store, "org/p", &opts).unwrap_err();
    assert!(matches!(err, StoreError::ShaMismatch { .. }), "{err}");
    assert!(!partial.exists());
    let reqs = hub.content_requests("p.gguf");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("range"), Some("bytes=20000-"));

    // A partial with every byte (a crash before the rename) is verified without a request.
    fs::write(&partial, &data).unwrap();
    let out = pull(&store, "org/p", &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), data);
    assert!(!partial.exists());
    assert_eq!(hub.content_requests("p.gguf").len(), 2);
}

#[test]
fn a_server_that_ignores_range_restarts_the_file() {
    let hub = MockHub::start();
    let data = pattern(40_000);
    hub.add(
        "org/norange",
        MockRepo::new(vec![MockFile {
            drop_after: Some(15_000),
            ignore_range: true,
            ..MockFile::lfs("n.gguf", data.clone())
        }]),
    );
    let tmp = TempDir::new("norange");
    let store = Store::at(tmp.path().join("models"));
    let opts = options(&hub, tmp.path());
    pull(&store, "org/norange", &opts).unwrap_err();
    let out = pull(&store, "org/norange", &opts).unwrap();
    // The 200 answer replaced the partial instead of being appended to it.
    assert_eq!(fs::read(&out.model_path).unwrap(), data);
    let reqs = hub.content_requests("n.gguf");
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].header("range").is_some());
}
