//! The zip container of `torch.save` (since torch 1.6): records `<archive>/data.pkl`,
//! `<archive>/byteorder`, `<archive>/version` and `<archive>/data/<key>`, one per storage.
//!
//! PyTorch writes every record uncompressed and aligned to 64 bytes precisely so that
//! loaders can map storages straight from the file; we do the same: a stored record is a
//! byte range of the (memory-mapped) file, found through the zip central directory and the
//! record's local header, with its bounds checked. Deflated records (hand-made zips, never
//! torch's) are inflated into memory, up to [`MAX_INFLATED`] bytes each.

use std::io::{Cursor, Read};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use zip::{CompressionMethod, ZipArchive};

use crate::error::{ModelError, Result};
use crate::gguf::Bytes;

/// Largest deflated record we inflate, and the most all deflated records of one archive may
/// inflate to together (torch never compresses; this is for odd zips, and keeps a small
/// file of many compressed records from claiming a thousand times its size in memory).
pub const MAX_INFLATED: u64 = 1 << 30;
/// Largest `data.pkl` we read (real ones are well under a megabyte).
const MAX_PICKLE: u64 = 64 << 20;

/// Bytes of one record: a range of a shared buffer.
#[derive(Debug, Clone)]
pub struct Record {
    pub bytes: Arc<Bytes>,
    pub start: usize,
    pub len: usize,
}

impl Record {
    pub fn data(&self) -> &[u8] {
        // In range: checked when the record was located.
        &self.bytes[self.start..self.start + self.len]
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    index: usize,
    deflated: bool,
    start: usize,
    size: u64,
}

/// An opened torch zip: the entries under its one archive folder.
pub struct Archive<'a> {
    file: &'a Arc<Bytes>,
    zip: ZipArchive<Cursor<&'a [u8]>>,
    /// `"<archive>/"`.
    prefix: Vec<u8>,
    entries: FxHashMap<Vec<u8>, Entry>,
    /// Bytes inflated from deflated records so far (capped at [`MAX_INFLATED`]).
    inflated: u64,
}

fn err(what: impl Into<String>) -> ModelError {
    ModelError::Archive(what.into())
}

impl<'a> Archive<'a> {
    /// Reads the central directory and finds the archive folder (the one holding
    /// `data.pkl`; torch names it after the file, or `archive`).
    pub fn open(file: &'a Arc<Bytes>) -> Result<Archive<'a>> {
        let mut zip = ZipArchive::new(Cursor::new(&file[..])).map_err(|e| {
            err(format!(
                "not a zip file ({e}); only the zip format of torch.save (PyTorch 1.6 and later) \
                 is read, not the legacy tar/pickle format"
            ))
        })?;
        let mut entries = FxHashMap::default();
        let mut prefixes = Vec::new();
        for index in 0..zip.len() {
            let f = zip
                .by_index_raw(index)
                .map_err(|e| err(format!("zip entry {index}: {e}")))?;
            let name = f.name_raw().to_vec();
            if f.encrypted() {
                return Err(err(format!(
                    "record {} is encrypted",
                    String::from_utf8_lossy(&name)
                )));
            }
            let deflated = match f.compression() {
                CompressionMethod::Stored => false,
                CompressionMethod::Deflated => true,
                other => {
                    return Err(err(format!(
                        "record {} uses compression {other}; only stored and deflated records \
                         are read",
                        String::from_utf8_lossy(&name)
                    )));
                }
            };
            let (start, compressed, size) = (f.data_start(), f.compressed_size(), f.size());
            if !deflated && compressed != size {
                return Err(err(format!(
                    "stored record {} claims {compressed} bytes stored for {size}",
                    String::from_utf8_lossy(&name)
                )));
            }
            let end = start.checked_add(compressed);
            let start = match (usize::try_from(start), end) {
                (Ok(s), Some(e)) if e <= file.len() as u64 => s,
                _ => {
                    return Err(err(format!(
                        "record {} at byte {start} ({compressed} bytes) runs past the end of \
                         the file ({} bytes); the file is truncated",
                        String::from_utf8_lossy(&name),
                        file.len()
                    )));
                }
            };
            if let Some(p) = name.strip_suffix(b"/data.pkl")
                && !p.is_empty()
                && !p.contains(&b'/')
            {
                prefixes.push(p.to_vec());
            }
            entries.insert(
                name,
                Entry {
                    index,
                    deflated,
                    start,
                    size,
                },
            );
        }
        let prefix = match prefixes.as_slice() {
            [p] => {
                let mut p = p.clone();
                p.push(b'/');
                p
            }
            [] => {
                return Err(err(
                    "no <archive>/data.pkl record: not a torch.save checkpoint",
                ));
            }
            _ => return Err(err("several <archive>/data.pkl records")),
        };
        Ok(Archive {
            file,
            zip,
            prefix,
            entries,
            inflated: 0,
        })
    }

    /// The record `<archive>/<name>`, if present (stored records of any size; deflated ones
    /// up to [`MAX_INFLATED`]).
    pub fn record(&mut self, name: &str) -> Result<Option<Record>> {
        self.record_up_to(name, u64::MAX)
    }

    /// [`Archive::record`], refusing records over `max` bytes before reading them.
    fn record_up_to(&mut self, name: &str, max: u64) -> Result<Option<Record>> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(name.as_bytes());
        let Some(e) = self.entries.get(&full).copied() else {
            return Ok(None);
        };
        let max = if e.deflated {
            max.min(MAX_INFLATED)
        } else {
            max
        };
        if e.size > max {
            return Err(err(format!(
                "record {name} claims {} bytes (at most {max} are read)",
                e.size
            )));
        }
        if e.deflated && self.inflated.saturating_add(e.size) > MAX_INFLATED {
            return Err(err(format!(
                "deflated records would inflate to more than {MAX_INFLATED} bytes in all \
                 (record {name} adds {})",
                e.size
            )));
        }
        if !e.deflated {
            return Ok(Some(Record {
                bytes: self.file.clone(),
                start: e.start,
                len: e.size as usize, // fits: checked against the file length at open
            }));
        }
        let f = self
            .zip
            .by_index(e.index)
            .map_err(|z| err(format!("record {name}: {z}")))?;
        let mut out = Vec::new();
        f.take(e.size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|z| err(format!("record {name} does not inflate: {z}")))?;
        if out.len() as u64 != e.size {
            return Err(err(format!(
                "deflated record {name} inflates to {} bytes, its header says {}",
                out.len(),
                e.size
            )));
        }
        let len = out.len();
        self.inflated += len as u64;
        Ok(Some(Record {
            bytes: Arc::new(Bytes::Owned(out)),
            start: 0,
            len,
        }))
    }

    /// `data.pkl`, size-checked.
    pub fn pickle(&mut self) -> Result<Record> {
        self.record_up_to("data.pkl", MAX_PICKLE)?
            .ok_or_else(|| err("data.pkl is missing"))
    }
}
