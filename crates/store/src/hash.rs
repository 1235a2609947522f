//! sha256 of files, and the `.verified` note that spares re-hashing a large file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` looks like a sha256 digest in hex (64 hex digits, any case).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Feeds the first `len` bytes of `path` (all of it when `None`) into `h`; returns how
/// many bytes were read.
pub fn hash_prefix(path: &Path, len: Option<u64>, h: &mut Sha256) -> Result<u64> {
    let f = fs::File::open(path).map_err(StoreError::io("open", path))?;
    let mut r: Box<dyn Read> = match len {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(StoreError::io("read", path))?;
        if n == 0 {
            return Ok(total);
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// sha256 (hex) and size of the whole file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut h = Sha256::new();
    let n = hash_prefix(path, None, &mut h)?;
    Ok((hex(&h.finalize()), n))
}

/// The note beside a verified file: `<file>.verified`.
pub fn stamp_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    file.with_file_name(name)
}

/// The note's content: the hash with the size and modification time the file had, so a
/// multi-gigabyte model is hashed once, not at every start. Any change to the file (size
/// or mtime) makes the note stale and the file is hashed again.
fn stamp_of(file: &Path, sha256: &str) -> Option<String> {
    let m = fs::metadata(file).ok()?;
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

/// Writes the note for a file just verified. Best effort: without it the file is simply
/// hashed again next time.
pub fn write_stamp(file: &Path, sha256: &str) {
    if let Some(now) = stamp_of(file, sha256) {
        let _ = fs::write(stamp_path(file), now);
    }
}

/// Whether `file` has sha256 `want`, trusting a fresh note and hashing otherwise.
pub fn verified(file: &Path, want: &str) -> Result<bool> {
    if let (Ok(note), Some(now)) = (fs::read_to_string(stamp_path(file)), stamp_of(file, want))
        && note.trim() == now
    {
        return Ok(true);
    }
    let (got, _) = sha256_file(file)?;
    if !got.eq_ignore_ascii_case(want) {
        return Ok(false);
    }
    write_stamp(file, want);
    Ok(true)
}
