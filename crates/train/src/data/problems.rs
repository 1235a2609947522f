//! Bad records, collected. A training file is usually made by a script, and a script that
//! is wrong once is wrong on many lines: reporting only the first bad line would make the
//! user run the trainer once per mistake. So every line is checked, every problem is kept
//! with its line number, and the report shows the first [`SHOWN`] with a count of the rest.

use std::fmt;

use thiserror::Error;

/// How many problems a report lists; the rest are counted.
pub const SHOWN: usize = 20;

/// One unusable record: its 1-based line number in the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub line: usize,
    pub what: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// Every bad record of one file: the first [`SHOWN`] in line order, and how many in all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct BadRecords {
    /// The file's name as the user gave it.
    pub source_name: String,
    /// The first [`SHOWN`] problems, by line.
    pub shown: Vec<RecordError>,
    /// All problems, shown or not.
    pub total: usize,
}

impl fmt::Display for BadRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.total == 1 { "" } else { "s" };
        write!(f, "{}: {} bad record{plural}", self.source_name, self.total)?;
        for e in &self.shown {
            write!(f, "\n  {e}")?;
        }
        if self.total > self.shown.len() {
            write!(f, "\n  ... and {} more", self.total - self.shown.len())?;
        }
        Ok(())
    }
}

/// Collects problems while a file is read; [`Problems::finish`] turns them into the error.
#[derive(Debug, Default)]
pub struct Problems {
    shown: Vec<RecordError>,
    total: usize,
}

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Records that `line` is unusable. Lines must be reported in increasing order for the
    /// shown ones to be the first ones.
    pub fn add(&mut self, line: usize, what: impl Into<String>) {
        self.total += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(RecordError {
                line,
                what: what.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// `Ok(())` when nothing was wrong, else every problem as one error.
    pub fn finish(self, source_name: &str) -> std::result::Result<(), BadRecords> {
        if self.total == 0 {
            return Ok(());
        }
        Err(BadRecords {
            source_name: source_name.to_string(),
            shown: self.shown,
            total: self.total,
        })
    }
}
