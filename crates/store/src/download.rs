//! One file from the hub onto disk: resumable, size- and sha256-checked, renamed into place
//! only when verified.
//!
//! The bytes go to `<file>.partial`. When a partial exists the request asks for the rest
//! (`Range: bytes=N-`): a 206 whose `Content-Range` starts at N is appended; a 200 means the
//! server ignored the range and the file starts over; a 416 means the partial already
//! holds everything (it is then verified) or is unusable (it is then discarded). The hash
//! covers the whole file, the resumed prefix read back from disk included. A file that
//! ends short keeps its partial for the next attempt; a file that is too long or hashes
//! wrong loses it, since resuming it could never succeed.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::hash::{hash_prefix, hex, sha256_file};
use crate::hub::{HubClient, HubConfig};
use crate::manifest::{FileRecord, Verified, sync_dir};
use crate::progress::Progress;

/// A file to fetch and what the listing announced about it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Repository path (already checked).
    pub path: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// `<file>.partial`.
pub(crate) fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// Fetches `t` into `dir` (at its repository path), retrying transient failures as
/// `cfg.retries` allows, each retry resuming.
pub(crate) fn fetch_file(
    client: &HubClient,
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    t: &Target,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<FileRecord> {
    let dest = dir.join(&t.path);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
    }
    if let Some(rec) = reuse_existing(&dest, t)? {
        return Ok(rec);
    }
    let mut attempt = 0;
    loop {
        let r = attempt_fetch(client, repo, revision, t, &dest, progress);
        progress.finish_file();
        match r {
            Err(e) if attempt < cfg.retries && transient(&e) => {
                attempt += 1;
                tracing::warn!(file = %t.path, attempt, "{e}; retrying");
                std::thread::sleep(cfg.retry_delay * attempt);
            }
            r => return r,
        }
    }
}

/// Failures worth another attempt: the network, and the server's own errors.
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Interrupted { .. } | StoreError::Network { .. } => true,
        StoreError::HttpStatus { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// A file already under its real name (from an interrupted pull of several files) is kept
/// when the hub's sha256 confirms it; otherwise it is fetched again.
fn reuse_existing(dest: &Path, t: &Target) -> Result<Option<FileRecord>> {
    if !dest.is_file() {
        return Ok(None);
    }
    if let Some(want) = &t.sha256 {
        let (got, size) = sha256_file(dest)?;
        if &got == want && t.size.is_none_or(|s| s == size) {
            tracing::info!(file = %t.path, "already downloaded and verified");
            return Ok(Some(FileRecord {
                path: t.path.clone(),
                size,
                sha256: got,
                verified: Verified::Hub,
            }));
        }
    }
    fs::remove_file(dest).map_err(StoreError::io("remove", dest))?;
    Ok(None)
}

/// `bytes START-END/TOTAL` → (START, TOTAL); `bytes */TOTAL` → (None, TOTAL).
fn parse_content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (start, _) = range.split_once('-')?;
    Some((Some(start.trim().parse().ok()?), total))
}

fn remove_partial(partial: &Path) {
    if let Err(e) = fs::remove_file(partial)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %partial.display(), "cannot remove: {e}");
    }
}

fn attempt_fetch(
    client: &HubClient,
    repo: &str,
    revision: &str,
    t: &Target,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<FileRecord> {
    let partial = partial_path(dest);
    let file = t.path.as_str();
    let mut offset = fs::metadata(&partial).map_or(0, |m| m.len());
    if t.size.is_some_and(|s| offset > s) {
        remove_partial(&partial);
        offset = 0;
    }
    let mut sha_want = t.sha256.clone();
    // A partial that already has every announced byte only needs verifying.
    let complete = offset > 0 && t.size == Some(offset);
    if !complete {
        // At most two requests: the resume, and a fresh start if the resume is refused.
        let mut fresh_start = false;
        loop {
            let opened = client.open_file(repo, revision, file, offset)?;
            let host = opened.host.clone();
            let bad = |why: String| StoreError::BadResponse {
                host: host.clone(),
                what: file.to_string(),
                why,
            };
            match (&sha_want, &opened.linked.sha256) {
                (Some(a), Some(b)) if a != b => {
                    return Err(bad(format!(
                        "the listing says sha256 {a} but the file's ETag says {b}"
                    )));
                }
                (None, Some(b)) => sha_want = Some(b.clone()),
                _ => {}
            }
            let size_want = t.size.or(opened.linked.size);
            let range = opened
                .content_range
                .as_deref()
                .and_then(parse_content_range);
            let append = match opened.status {
                416 if offset > 0 => {
                    if range.and_then(|r| r.1) == Some(offset)
                        && size_want.is_none_or(|s| s == offset)
                    {
                        break; // the partial is whole; verify it
                    }
                    if fresh_start {
                        return Err(bad("416 for a fresh download".into()));
                    }
                    tracing::info!(file, "the server refused to resume; starting over");
                    remove_partial(&partial);
                    offset = 0;
                    fresh_start = true;
                    continue;
                }
                206 if offset > 0 => {
                    let (start, total) =
                        range.ok_or_else(|| bad("206 without a usable Content-Range".into()))?;
                    if start != Some(offset) {
                        return Err(bad(format!(
                            "asked for bytes from {offset}, got Content-Range {:?}",
                            opened.content_range.as_deref().unwrap_or_default()
                        )));
                    }
                    if let (Some(total), Some(want)) = (total, size_want)
                        && total != want
                    {
                        remove_partial(&partial);
                        return Err(StoreError::SizeMismatch {
                            file: file.to_string(),
                            why: format!("the server has {total} bytes, the hub announced {want}"),
                        });
                    }
                    true
                }
                200 => {
                    if offset > 0 {
                        tracing::info!(file, "the server ignored the range; starting over");
                        offset = 0;
                    }
                    if let (Some(len), Some(want)) = (opened.content_length, size_want)
                        && len != want
                    {
                        remove_partial(&partial);
                        return Err(StoreError::SizeMismatch {
                            file: file.to_string(),
                            why: format!("the server sends {len} bytes, the hub announced {want}"),
                        });
                    }
                    false
                }
                s => return Err(bad(format!("unexpected HTTP {s}"))),
            };
            stream(opened, &partial, file, append, offset, size_want, progress)?;
            break;
        }
    }
    verify_and_install(&partial, dest, file, t.size, sha_want)
}

/// Writes the body to the partial (appending from `offset`, or from zero), never past
/// `size_want`.
fn stream(
    opened: crate::hub::Opened,
    partial: &Path,
    file: &str,
    append: bool,
    offset: u64,
    size_want: Option<u64>,
    progress: &mut dyn Progress,
) -> Result<()> {
    let host = opened.host.clone();
    let out = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .map_err(StoreError::io("write", partial))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut done = if append { offset } else { 0 };
    progress.start_file(file, size_want, done);
    let mut body = opened.body.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                // Keep what arrived: it is a correct prefix to resume from.
                out.flush().map_err(StoreError::io("write", partial))?;
                return Err(StoreError::Interrupted {
                    file: file.to_string(),
                    done,
                    detail: format!("reading from {host}: {e}"),
                });
            }
        };
        if n == 0 {
            break;
        }
        if let Some(want) = size_want
            && done + n as u64 > want
        {
            drop(out);
            remove_partial(partial);
            return Err(StoreError::SizeMismatch {
                file: file.to_string(),
                why: format!("{host} sent more than the {want} bytes announced"),
            });
        }
        out.write_all(&buf[..n])
            .map_err(StoreError::io("write", partial))?;
        done += n as u64;
        progress.advance(n as u64);
    }
    let f = out
        .into_inner()
        .map_err(|e| StoreError::io("write", partial)(e.into_error()))?;
    f.sync_all().map_err(StoreError::io("write", partial))?;
    if let Some(want) = size_want
        && done < want
    {
        return Err(StoreError::Interrupted {
            file: file.to_string(),
            done,
            detail: format!("{host} closed the connection before the {want} bytes announced"),
        });
    }
    Ok(())
}

/// Hashes the whole partial, checks size and sha256, and renames it to `dest`.
fn verify_and_install(
    partial: &Path,
    dest: &Path,
    file: &str,
    size_want: Option<u64>,
    sha_want: Option<String>,
) -> Result<FileRecord> {
    let mut h = Sha256::new();
    let size = hash_prefix(partial, None, &mut h)?;
    let got = hex(&h.finalize());
    if let Some(want) = size_want
        && size != want
    {
        remove_partial(partial);
        return Err(StoreError::SizeMismatch {
            file: file.to_string(),
            why: format!("{size} bytes on disk, {want} announced"),
        });
    }
    let verified = match sha_want {
        Some(want) if got != want => {
            remove_partial(partial);
            return Err(StoreError::ShaMismatch {
                file: file.to_string(),
                got,
                want,
                expected_by: "the hub",
            });
        }
        Some(_) => Verified::Hub,
        None => Verified::Computed,
    };
    fs::rename(partial, dest).map_err(StoreError::io("rename into", dest))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent);
    }
    tracing::info!(file, size, "verified");
    Ok(FileRecord {
        path: file.to_string(),
        size,
        sha256: got,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(parse_content_range("bytes */200"), Some((None, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((Some(5), None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }
}
