//! Resuming a run: the dataset file and its journal, both JSONL, both appended and flushed
//! one line at a time.
//!
//! `OUT` holds the kept records (what `finetune --data` reads); `OUT.journal` holds every
//! generation (kept or not: dropped ones must not be generated again), after a first line
//! with the run's settings. A line is written whole with its newline, then flushed, so a
//! crash leaves at worst one torn last line, without its newline: it is detected and cut
//! off, and that piece of work is done again. A rerun with the same settings skips every
//! (prompt, generation) key in the journal and every record already in `OUT`, and since
//! seeds are per key and filters deterministic, ends with the same records as a run that
//! never stopped (scores to float rounding: see docs/sdg.md). A bad line anywhere else, or different settings, is an error that names
//! the file and line: nothing is overwritten.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::pipeline::{Generation, Key, Sink};
use crate::error::{EvalError, Result};

/// The journal's path for dataset `out`: `OUT.journal`.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// The complete lines of `path` (the text up to its last newline) and whether a torn last
/// line followed them; the file is cut back to its complete lines.
fn complete_lines(path: &Path) -> Result<(Vec<String>, bool)> {
    let io = |e: std::io::Error| EvalError::Invalid(format!("{}: {e}", path.display()));
    let text = std::fs::read(path).map_err(io)?;
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn = end < text.len();
    if torn {
        let f = OpenOptions::new().write(true).open(path).map_err(io)?;
        f.set_len(end as u64).map_err(io)?;
    }
    let good = std::str::from_utf8(&text[..end])
        .map_err(|e| EvalError::Invalid(format!("{}: not UTF-8 text ({e})", path.display())))?;
    Ok((good.lines().map(str::to_string).collect(), torn))
}

/// What an earlier run left.
#[derive(Debug, Default)]
pub struct Resumed {
    pub generations: HashMap<Key, Generation>,
    pub written: HashSet<Key>,
    /// Torn last lines cut off (0, 1 or 2).
    pub torn: usize,
}

/// The open dataset and journal, appending.
#[derive(Debug)]
pub struct Journal {
    out: File,
    journal: File,
    out_path: PathBuf,
    journal_path: PathBuf,
}

impl Journal {
    /// Opens (or creates) `out` and its journal for a run with `settings`, reading what an
    /// earlier run with the same settings left.
    pub fn open(out: &Path, settings: &Value) -> Result<(Journal, Resumed)> {
        let jpath = journal_path(out);
        let mut resumed = Resumed::default();
        let header = json!({ "sdg_journal": 1, "settings": settings });
        match (out.exists(), jpath.exists()) {
            (true, false) => {
                return Err(EvalError::Invalid(format!(
                    "{} exists but has no journal {} (it was not written by `ferrollama sdg`, \
                     or the journal was deleted): give another --out, or delete the file to \
                     start over",
                    out.display(),
                    jpath.display()
                )));
            }
            (_, true) => {
                let (lines, torn) = complete_lines(&jpath)?;
                resumed.torn += usize::from(torn);
                let at = |n: usize, what: String| {
                    EvalError::Invalid(format!("{} line {n}: {what}", jpath.display()))
                };
                match lines.first() {
                    None => {} // a crash before the header was whole: start afresh
                    Some(first) => {
                        let h: Value = serde_json::from_str(first)
                            .map_err(|e| at(1, format!("not the journal's header: {e}")))?;
                        // Settings changed before any generation was written: nothing
                        // to keep, start over with the new ones.
                        let unused = lines.len() == 1
                            && std::fs::metadata(out).map_or(true, |m| m.len() == 0);
                        if h["settings"] != header["settings"] && unused {
                            std::fs::write(&jpath, format!("{header}\n")).map_err(|e| {
                                EvalError::Invalid(format!("{}: {e}", jpath.display()))
                            })?;
                        } else if h["settings"] != header["settings"] {
                            return Err(EvalError::Invalid(format!(
                                "{} was made with other settings ({}) than this run's ({}): \
                                 rerun with the same settings to resume, or give another --out",
                                jpath.display(),
                                differences(&h["settings"], settings),
                                differences(settings, &h["settings"]),
                            )));
                        }
                    }
                }
                for (i, l) in lines.iter().enumerate().skip(1) {
                    let g: Generation = serde_json::from_str(l)
                        .map_err(|e| at(i + 1, format!("not a generation record: {e}")))?;
                    resumed.generations.insert((g.prompt, g.index), g);
                }
                if out.exists() {
                    let (lines, torn) = complete_lines(out)?;
                    resumed.torn += usize::from(torn);
                    for (i, l) in lines.iter().enumerate() {
                        let v: Value = serde_json::from_str(l).map_err(|e| {
                            EvalError::Invalid(format!("{} line {}: {e}", out.display(), i + 1))
                        })?;
                        let p = &v["provenance"];
                        match (p["prompt_index"].as_u64(), p["generation_index"].as_u64()) {
                            (Some(a), Some(b)) => {
                                resumed.written.insert((a as usize, b as usize));
                            }
                            _ => {
                                return Err(EvalError::Invalid(format!(
                                    "{} line {}: a record without provenance.prompt_index and \
                                     generation_index; was the file edited?",
                                    out.display(),
                                    i + 1
                                )));
                            }
                        }
                    }
                }
                if lines.is_empty() {
                    std::fs::write(&jpath, format!("{header}\n"))
                        .map_err(|e| EvalError::Invalid(format!("{}: {e}", jpath.display())))?;
                }
            }
            (false, false) => {
                if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| EvalError::Invalid(format!("{}: {e}", dir.display())))?;
                }
                std::fs::write(&jpath, format!("{header}\n"))
                    .map_err(|e| EvalError::Invalid(format!("{}: {e}", jpath.display())))?;
            }
        }
        let append = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| EvalError::Invalid(format!("cannot open {}: {e}", p.display())))
        };
        Ok((
            Journal {
                out: append(out)?,
                journal: append(&jpath)?,
                out_path: out.to_path_buf(),
                journal_path: jpath,
            },
            resumed,
        ))
    }
}

/// The settings in `a` that `b` lacks or has otherwise, as `key=value` pairs.
fn differences(a: &Value, b: &Value) -> String {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => x
            .iter()
            .filter(|(k, v)| y.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => a.to_string(),
    }
}

fn append_line(f: &mut File, path: &Path, v: &Value) -> Result<()> {
    let line = format!("{v}\n");
    f.write_all(line.as_bytes())
        .and_then(|()| f.flush())
        .map_err(|e| EvalError::Invalid(format!("cannot write {}: {e}", path.display())))
}

impl Sink for Journal {
    fn generation(&mut self, g: &Generation) -> Result<()> {
        let v = serde_json::to_value(g).map_err(|e| EvalError::Invalid(e.to_string()))?;
        append_line(&mut self.journal, &self.journal_path, &v)
    }

    fn record(&mut self, record: &Value) -> Result<()> {
        append_line(&mut self.out, &self.out_path, record)
    }
}
