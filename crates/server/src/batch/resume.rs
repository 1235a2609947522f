//! What an earlier run of a batch already finished, read back from its output and error
//! files, so a rerun (`ferrollama batch` again, or `serve` restarted) skips it. Each answered line was written whole and flushed
//! as it finished; a kill can leave at most one partial last line, which is cut off here.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// An output file that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a batch output line; give another output file")]
    NotOutput { path: String, line: usize },
}

/// What is done: custom_ids answered, and input lines refused without a custom_id.
#[derive(Debug, Default)]
pub struct Done {
    pub ids: HashSet<String>,
    pub lines: HashSet<usize>,
}

impl Done {
    /// Reads `path` (absent: nothing done), cutting off a partial last line.
    pub fn read_into(&mut self, path: &Path) -> Result<(), ResumeError> {
        let io = |source| ResumeError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        // Everything after the last newline is a line a kill cut short.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            let f = OpenOptions::new().write(true).open(path).map_err(io)?;
            f.set_len(whole as u64).map_err(io)?;
        }
        for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(line).map_err(|_| ResumeError::NotOutput {
                path: path.display().to_string(),
                line: i + 1,
            })?;
            match v.get("custom_id").and_then(Value::as_str) {
                Some(id) => {
                    self.ids.insert(id.to_string());
                }
                None => {
                    if let Some(n) = v.pointer("/error/line").and_then(Value::as_u64) {
                        self.lines.insert(n as usize);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Appends one JSON line and flushes it, so a kill never loses a finished line.
pub fn append(f: &mut std::fs::File, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_partial_last_line_is_cut_and_finished_ones_are_kept() {
        let dir = std::env::temp_dir().join(format!("fl-batch-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("out.jsonl");
        std::fs::write(
            &p,
            "{\"custom_id\": \"a\"}\n{\"custom_id\": null, \"error\": {\"line\": 4}}\n{\"custom_id\": \"b\", \"resp",
        )
        .unwrap();
        let mut d = Done::default();
        d.read_into(&p).unwrap();
        assert!(d.ids.contains("a") && !d.ids.contains("b"));
        assert!(d.lines.contains(&4));
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("4}}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
