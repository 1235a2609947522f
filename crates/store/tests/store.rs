//! The store on disk: listing (complete, incomplete, legacy), resolving, removing, and the
//! PyPI source through a stand-in for `python -m pip`.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::TempDir;
use common::gguf::tiny_gguf;
use common::hub::sha256_hex;
use ferrollama_store::pypi::WheelAsset;
use ferrollama_store::{
    EntryState, HubConfig, ModelRef, NoProgress, PullOptions, Store, StoreError, Verified,
};
use sha2::Digest as _;

fn inode(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

fn pypi_options(tmp: &Path, python: PathBuf, pins: Vec<WheelAsset>) -> PullOptions {
    PullOptions {
        name: None,
        hub: HubConfig::new("http://127.0.0.1:9"),
        python,
        cache_dir: tmp.join("cache"),
        pins,
        parted: vec![],
        force: false,
    }
}

#[test]
fn empty_and_missing_roots_list_nothing() {
    let tmp = TempDir::new("empty");
    assert!(
        Store::at(tmp.path().join("nope"))
            .list()
            .unwrap()
            .is_empty()
    );
    assert!(Store::at(tmp.path()).list().unwrap().is_empty());
}

#[test]
fn legacy_loose_files_are_listed_and_resolved() {
    let tmp = TempDir::new("legacy");
    let root = tmp.path();
    fs::write(root.join("SmolLM2-135M-Instruct.Q4_1.gguf"), tiny_gguf(3)).unwrap();
    // Leftovers of the asset cache that are not models.
    fs::write(root.join("SmolLM2-135M-Instruct.Q4_1.gguf.verified"), "x").unwrap();
    fs::write(root.join("SmolLM2-135M-Instruct.Q4_1.partial"), "x").unwrap();
    fs::create_dir(root.join(".download-123")).unwrap();
    fs::write(root.join(".hidden.gguf"), "x").unwrap();

    let store = Store::at(root);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let e = &list[0];
    assert_eq!(e.name, "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(e.state, EntryState::Legacy);
    assert_eq!(e.size, tiny_gguf(3).len() as u64);
    assert_eq!(
        store.resolve("SmolLM2-135M-Instruct.Q4_1").unwrap(),
        root.join("SmolLM2-135M-Instruct.Q4_1.gguf")
    );

    // rm removes the file and its note, nothing else.
    let removed = store.remove("SmolLM2-135M-Instruct.Q4_1").unwrap();
    assert_eq!(removed.path, root.join("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(!root.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists());
    assert!(
        !root
            .join("SmolLM2-135M-Instruct.Q4_1.gguf.verified")
            .exists()
    );
    assert!(root.join("SmolLM2-135M-Instruct.Q4_1.partial").exists());
    assert!(root.join(".hidden.gguf").exists());
}

#[test]
fn unknown_names_suggest_close_ones_and_never_escape() {
    let tmp = TempDir::new("unknown");
    let root = tmp.path().join("models");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("Llama-3.2-1B-Instruct-Q4_K_M.gguf"), b"GGUF").unwrap();
    // A file beside the root that a path escape would hit.
    fs::write(tmp.path().join("precious.gguf"), b"keep").unwrap();
    let store = Store::at(&root);

    let err = store.remove("llama-3.2-1b-instruct-q4_k_m").unwrap_err();
    assert!(matches!(err, StoreError::UnknownModel { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("did you mean Llama-3.2-1B-Instruct-Q4_K_M"),
        "{err}"
    );
    for evil in ["../precious", "..", ".", "/etc", "a/../../precious", ""] {
        let err = store.remove(evil).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownModel { .. }),
            "{evil}: {err}"
        );
        assert!(store.resolve(evil).is_err());
    }
    assert!(tmp.path().join("precious.gguf").exists());
    assert!(root.join("Llama-3.2-1B-Instruct-Q4_K_M.gguf").exists());
}

#[test]
fn a_tampered_manifest_cannot_point_outside_its_entry() {
    let tmp = TempDir::new("tamper");
    let root = tmp.path().join("models");
    let dir = root.join("evil");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("manifest.json"),
        r#"{"format_version":1,"name":"evil","source":"hf:o/r","source_id":"hf:o/r",
            "origin":"x","revision":"r","format":"gguf","model_path":"../../etc/passwd",
            "files":[],"pulled_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let store = Store::at(&root);
    let list = store.list().unwrap();
    assert_eq!(list[0].state, EntryState::Incomplete);
    assert!(matches!(
        store.resolve("evil"),
        Err(StoreError::Incomplete { .. })
    ));
}

/// A wheel with `members` and a RECORD of their hashes (optionally a wrong one).
fn write_wheel(path: &Path, dist: &str, members: &[(&str, &[u8])], wrong_record: bool) {
    use base64::Engine as _;
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    let mut record = String::new();
    for (name, data) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
        let digest = if wrong_record {
            sha2::Sha256::digest(b"something else")
        } else {
            sha2::Sha256::digest(data)
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        record.push_str(&format!("{name},sha256={b64},{}\n", data.len()));
    }
    record.push_str(&format!("{dist}.dist-info/RECORD,,\n"));
    z.start_file(format!("{dist}.dist-info/RECORD"), opts)
        .unwrap();
    z.write_all(record.as_bytes()).unwrap();
    z.finish().unwrap();
}

/// A stand-in for `python`: `python -m pip download ... -d DIR SPEC` copies `wheel` into
/// DIR and logs SPEC.
fn fake_python(dir: &Path, wheel: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("python");
    let log = dir.join("pip.log");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in -d) shift; d=\"$1\";; *) s=\"$1\";; esac; shift; done\n\
             echo \"$s\" >> '{}'\ncp '{}' \"$d/\"\n",
            log.display(),
            wheel.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn pypi_wheels_are_pulled_and_checked_against_record() {
    let tmp = TempDir::new("pypi");
    let gguf = tiny_gguf(5);
    let wheel = tmp.path().join("fake_model-0.3-py3-none-any.whl");
    write_wheel(
        &wheel,
        "fake_model-0.3",
        &[
            ("fake_model/Fake.Q8_0.gguf", &gguf),
            ("fake_model/__init__.py", b""),
        ],
        false,
    );
    let python = fake_python(tmp.path(), &wheel);
    let store = Store::at(tmp.path().join("models"));
    let opts = pypi_options(tmp.path(), python, vec![]);
    let r = ModelRef::parse("pypi:fake-model").unwrap();
    let out = store.pull(&r, &opts, &mut NoProgress).unwrap();
    assert_eq!(out.name, "Fake.Q8_0");
    assert_eq!(fs::read(&out.model_path).unwrap(), gguf);
    assert_eq!(out.manifest.source, "pypi:fake-model==0.3");
    assert_eq!(out.manifest.revision, "0.3");
    assert_eq!(out.manifest.files[0].verified, Verified::WheelRecord);
    assert_eq!(out.manifest.files[0].sha256, sha256_hex(&gguf));
    assert_eq!(
        fs::read_to_string(tmp.path().join("pip.log"))
            .unwrap()
            .trim(),
        "fake-model"
    );
    // pip's scratch directory is gone.
    let root_names: Vec<_> = fs::read_dir(tmp.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(root_names, vec!["Fake.Q8_0"]);

    // A member whose bytes do not match RECORD is refused and not installed.
    let bad = tmp.path().join("bad_model-0.1-py3-none-any.whl");
    write_wheel(
        &bad,
        "bad_model-0.1",
        &[("bad_model/Bad.gguf", &gguf)],
        true,
    );
    let opts = pypi_options(tmp.path(), fake_python(tmp.path(), &bad), vec![]);
    let err = store
        .pull(
            &ModelRef::parse("pypi:bad-model").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::ShaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("RECORD"), "{err}");
    assert!(!tmp.path().join("models/Bad/Bad.gguf").exists());
    assert!(!tmp.path().join("models/Bad/Bad.gguf.partial").exists());
}

#[test]
fn a_pinned_wheel_already_in_the_cache_is_registered_without_pip() {
    let tmp = TempDir::new("pinned");
    let gguf = tiny_gguf(6);
    let sha: &'static str = Box::leak(sha256_hex(&gguf).into_boxed_str());
    let pin = WheelAsset {
        package: "fake-smol",
        version: "0.1.2",
        member: "fake_smol/Smol.Q4_1.gguf",
        sha256: sha,
        cache_name: "models/Smol.Q4_1.gguf",
    };
    // The default-model layout: the loose file in <cache>/models, which is also the root.
    let cache = tmp.path().join("cache");
    fs::create_dir_all(cache.join("models")).unwrap();
    fs::write(cache.join("models/Smol.Q4_1.gguf"), &gguf).unwrap();
    let store = Store::at(cache.join("models"));
    assert_eq!(store.list().unwrap()[0].state, EntryState::Legacy);

    let opts = pypi_options(tmp.path(), "/nonexistent/python".into(), vec![pin]);
    let out = store
        .pull(
            &ModelRef::parse("pypi:fake-smol").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(out.name, "Smol.Q4_1");
    assert_eq!(out.manifest.source, "pypi:fake-smol==0.1.2");
    assert_eq!(out.manifest.files[0].verified, Verified::Pinned);
    assert_eq!(fs::read(&out.model_path).unwrap(), gguf);
    // Listed once, as the complete entry that shadows the loose file (which stays, since
    // the asset cache and other tools use that path).
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, EntryState::Complete);
    assert_eq!(list[0].source.as_deref(), Some("pypi:fake-smol==0.1.2"));
    assert!(cache.join("models/Smol.Q4_1.gguf").exists());
    assert_eq!(store.resolve("Smol.Q4_1").unwrap(), out.model_path);
    // One copy on disk: the entry's file is the cached file.
    assert_eq!(
        inode(&out.model_path),
        inode(&cache.join("models/Smol.Q4_1.gguf"))
    );

    // Pulling again does nothing; a mismatching cached copy is not adopted.
    let again = store
        .pull(
            &ModelRef::parse("pypi:fake-smol").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap();
    assert!(again.up_to_date);
    // Removing the entry frees the space: the linked cache file goes too, rather than
    // coming back as a legacy entry.
    store.remove("Smol.Q4_1").unwrap();
    assert!(!cache.join("models/Smol.Q4_1.gguf").exists());
    assert!(store.list().unwrap().is_empty());
    fs::write(cache.join("models/Smol.Q4_1.gguf"), b"corrupt").unwrap();
    let _ = fs::remove_file(cache.join("models/Smol.Q4_1.gguf.verified"));
    let err = store
        .pull(
            &ModelRef::parse("pypi:fake-smol").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Pip(_)), "{err}");
}

/// The default model pulled into the store before it was ever cached: `fetch smollm2`, and
/// every command that loads the default model, use the store's copy instead of
/// downloading a second one next to it.
#[test]
fn default_model_two_copies_pull_then_fetch_uses_the_store_copy() {
    let tmp = TempDir::new("onecopy");
    let gguf = tiny_gguf(8);
    let sha: &'static str = Box::leak(sha256_hex(&gguf).into_boxed_str());
    let pin = WheelAsset {
        package: "fake-smol",
        version: "0.1.2",
        member: "fake_smol/Smol.Q4_1.gguf",
        sha256: sha,
        cache_name: "models/Smol.Q4_1.gguf",
    };
    let wheel = tmp.path().join("fake_smol-0.1.2-py3-none-any.whl");
    write_wheel(
        &wheel,
        "fake_smol-0.1.2",
        &[("fake_smol/Smol.Q4_1.gguf", &gguf)],
        false,
    );
    let cache = tmp.path().join("cache");
    let store = Store::at(cache.join("models"));
    let opts = pypi_options(tmp.path(), fake_python(tmp.path(), &wheel), vec![pin]);
    let out = store
        .pull(
            &ModelRef::parse("pypi:fake-smol").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap();
    assert!(!cache.join("models/Smol.Q4_1.gguf").exists());
    // No pip this time: a download would fail.
    let got = ferrollama_store::pypi::ensure_asset_in_store(
        &pin,
        &cache,
        &store,
        Path::new("/nonexistent/python"),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(got, out.model_path);
    assert!(
        !cache.join("models/Smol.Q4_1.gguf").exists(),
        "no second copy"
    );
    assert_eq!(store.list().unwrap().len(), 1);
    // A copy whose bytes changed is not used.
    fs::write(&out.model_path, b"tampered").unwrap();
    let err = ferrollama_store::pypi::ensure_asset_in_store(
        &pin,
        &cache,
        &store,
        Path::new("/nonexistent/python"),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Pip(_)), "{err}");
}

/// pip's "No matching distribution" after failed connections is reported as a network
/// failure naming the index, not as a missing package.
#[test]
fn pypi_unreachable_index_says_could_not_reach() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("pipoffline");
    let script = tmp.path().join("python");
    fs::write(
        &script,
        "#!/bin/sh\ncat >&2 <<'EOF'\nWARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/fake-model/\nERROR: Could not find a version that satisfies the requirement fake-model (from versions: none)\nERROR: No matching distribution found for fake-model\nEOF\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::at(tmp.path().join("models"));
    let opts = pypi_options(tmp.path(), script, vec![]);
    let err = store
        .pull(
            &ModelRef::parse("pypi:fake-model").unwrap(),
            &opts,
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Network { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("could not reach "), "{text}");
    assert!(
        text.contains("Temporary failure in name resolution"),
        "{text}"
    );
    assert!(text.contains("check your network or proxy"), "{text}");
}
