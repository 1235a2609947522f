//! Ingestion's first step: an uploaded file's bytes become the plain text that is chunked
//! and indexed (issue 14: plain text, Markdown, HTML, PDF and JSON).
//!
//! Two calls: [`detect`] names the [`Format`] from the filename, the MIME type the client
//! sent and the bytes themselves; [`extract`] turns the bytes into [`Extracted`] text. Every
//! refusal is a typed [`ExtractError`] whose message is written for the person who uploaded
//! the file (it becomes the vector-store file's `last_error`), so a bad file ends `failed`
//! with a reason instead of staying `in_progress`.
//!
//! Key design choice: uploads are untrusted, so every path is bounded by [`Limits`]. The
//! text formats are linear; PDF, the one format parsed by a third-party crate (`lopdf`), is
//! pre-scanned for decompression bombs, parsed on its own thread under `catch_unwind` and a
//! deadline, and refused when encrypted or without a text layer.

mod html;
mod json;
mod markdown;
mod pdf;

use std::time::Duration;

/// The formats ingestion understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Json,
}

impl Format {
    /// A short lowercase name, for logs and file metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Json => "json",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`extract`] produced: the text to chunk and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    pub format: Format,
    /// Page count, for PDFs only.
    pub pages: Option<usize>,
}

/// Bounds on the time and memory one extraction may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest extracted text, in bytes (UTF-8).
    pub max_output_bytes: usize,
    /// Most pages a PDF may have.
    pub max_pdf_pages: usize,
    /// Most bytes a PDF's Flate streams may inflate to, all streams together. Also passed to
    /// `lopdf` as its per-stream bound, which covers the filters the pre-scan does not decode.
    pub max_decompressed_bytes: u64,
    /// Wall-clock budget for one PDF. Best effort: the text formats are linear and need none;
    /// a PDF parse that overruns is abandoned (its thread is left to finish on its own, as a
    /// thread cannot be killed) and the call returns [`ExtractError::Timeout`].
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: 64 << 20,
            max_pdf_pages: 5000,
            max_decompressed_bytes: 256 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Why a file could not be turned into text. Messages say what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// A kind of file ingestion does not read (a ZIP, an image, an encrypted or scanned PDF).
    #[error("unsupported file: {0}")]
    Unsupported(String),
    /// The file claims a format but its content breaks it (truncated PDF, invalid JSON).
    #[error("corrupt file: {0}")]
    Corrupt(String),
    /// A limit in [`Limits`] was reached (text too long, too many pages, a decompression bomb).
    #[error("file too large: {0}")]
    TooLarge(String),
    /// Text that is neither UTF-8 nor UTF-16 with a byte-order mark.
    #[error("bad text encoding: {0}")]
    Encoding(String),
    /// A PDF took longer than [`Limits::timeout`].
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Names the format of an uploaded file.
///
/// Order of evidence, strongest first: magic bytes of a PDF (`%PDF-`) or of a known binary
/// format (which is refused whatever the name says: a ZIP renamed `.pdf` is still a ZIP), then
/// the filename extension, then the MIME type (clients often send a generic one), then the
/// content: `<!doctype html` / `<html`, a leading `{` or `[` that parses as JSON, else text
/// if it decodes, else [`ExtractError::Unsupported`].
pub fn detect(filename: &str, mime: Option<&str>, bytes: &[u8]) -> Result<Format, ExtractError> {
    if pdf::has_magic(bytes) {
        return Ok(Format::Pdf);
    }
    if let Some(kind) = binary_kind(bytes) {
        return Err(ExtractError::Unsupported(format!(
            "{filename} is {kind}, which cannot be indexed; upload text, Markdown, HTML, PDF or JSON"
        )));
    }
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let by_ext = match ext.as_deref() {
        Some("pdf") => {
            return Err(ExtractError::Unsupported(format!(
                "{filename} is named .pdf but does not start with the PDF signature %PDF-; \
                 upload the real PDF"
            )));
        }
        Some("txt" | "text" | "log" | "csv" | "tsv" | "jsonl" | "ndjson" | "rst") => {
            Some(Format::Text)
        }
        Some("md" | "markdown" | "mdown" | "mkd") => Some(Format::Markdown),
        Some("html" | "htm" | "xhtml") => Some(Format::Html),
        Some("json") => Some(Format::Json),
        _ => None,
    };
    if let Some(format) = by_ext {
        return Ok(format);
    }
    // Parameters such as `; charset=utf-8` do not change the format.
    let essence = mime
        .and_then(|m| m.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let by_mime = match essence.as_deref() {
        Some("application/pdf") => Some(Format::Pdf),
        Some("text/html" | "application/xhtml+xml") => Some(Format::Html),
        Some("text/markdown" | "text/x-markdown") => Some(Format::Markdown),
        Some("application/json") => Some(Format::Json),
        Some(m) if m.starts_with("text/") => Some(Format::Text),
        _ => None,
    };
    if let Some(format) = by_mime {
        return Ok(format);
    }
    sniff(filename, bytes)
}

/// Turns a file's bytes into the text to chunk and index.
pub fn extract(bytes: &[u8], format: Format, limits: &Limits) -> Result<Extracted, ExtractError> {
    let (text, pages) = match format {
        Format::Text => (decode_text(bytes, limits)?.into_owned(), None),
        Format::Markdown => (markdown::visible(&decode_text(bytes, limits)?), None),
        Format::Html => (
            html::visible_text(&decode_text(bytes, limits)?, limits)?,
            None,
        ),
        Format::Json => (json::to_text(&decode_text(bytes, limits)?, limits)?, None),
        Format::Pdf => {
            let (text, pages) = pdf::text_layer(bytes, limits)?;
            (text, Some(pages))
        }
    };
    check_output(text.len(), limits)?;
    Ok(Extracted {
        text,
        format,
        pages,
    })
}

/// Refuses output past [`Limits::max_output_bytes`].
fn check_output(len: usize, limits: &Limits) -> Result<(), ExtractError> {
    if len > limits.max_output_bytes {
        return Err(ExtractError::TooLarge(format!(
            "the extracted text is over {} bytes; split the file into smaller ones",
            limits.max_output_bytes
        )));
    }
    Ok(())
}

/// Decodes text: UTF-8 (a byte-order mark is dropped), or UTF-16 when it starts with a
/// byte-order mark (the only reliable sign of UTF-16). Anything else is refused rather than
/// guessed at, since a wrong guess indexes mojibake that no query will ever match.
fn decode_text<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<std::borrow::Cow<'a, str>, ExtractError> {
    use std::borrow::Cow;
    let text = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => Cow::Borrowed(utf8(rest, 3)?),
        [0xFF, 0xFE, rest @ ..] => Cow::Owned(utf16(rest, u16::from_le_bytes)?),
        [0xFE, 0xFF, rest @ ..] => Cow::Owned(utf16(rest, u16::from_be_bytes)?),
        _ => Cow::Borrowed(utf8(bytes, 0)?),
    };
    check_output(text.len(), limits)?;
    Ok(text)
}

/// `bytes` as UTF-8; `base` is its offset in the file, so the error names the file's offset.
fn utf8(bytes: &[u8], base: usize) -> Result<&str, ExtractError> {
    std::str::from_utf8(bytes).map_err(|e| {
        ExtractError::Encoding(format!(
            "invalid UTF-8 at byte offset {}; save the file as UTF-8 and upload it again",
            base + e.valid_up_to()
        ))
    })
}

/// UTF-16 code units after a 2-byte BOM; errors name the file's byte offset.
fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ExtractError::Encoding(format!(
            "UTF-16 text has an odd number of bytes ({}); the file is truncated",
            bytes.len() + 2
        )));
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let mut out = String::with_capacity(bytes.len() / 2);
    // Code units consumed so far, to name the byte offset of a bad one.
    let mut units_done = 0usize;
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                units_done += c.len_utf16();
                out.push(c);
            }
            Err(_) => {
                return Err(ExtractError::Encoding(format!(
                    "invalid UTF-16 (unpaired surrogate) at byte offset {}; save the file as \
                     UTF-8 and upload it again",
                    2 + 2 * units_done
                )));
            }
        }
    }
    Ok(out)
}

/// Names well-known binary formats by their magic bytes, so they are refused by what they
/// are, whatever their filename says.
fn binary_kind(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "a ZIP archive (also DOCX, XLSX, EPUB)"),
        (b"PK\x05\x06", "an empty ZIP archive"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\xFD7zXZ\x00", "an xz archive"),
        (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
        (b"Rar!\x1A\x07", "a RAR archive"),
        (b"\x28\xB5\x2F\xFD", "a zstd archive"),
        (b"\x89PNG\r\n\x1A\n", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"\x7FELF", "an ELF executable"),
        (b"MZ", "a Windows executable"),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "an old Microsoft Office file (DOC, XLS)",
        ),
        (b"SQLite format 3\x00", "a SQLite database"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|&(_, kind)| kind)
}

/// Content sniffing for files whose name and MIME type said nothing.
fn sniff(filename: &str, bytes: &[u8]) -> Result<Format, ExtractError> {
    // Look at a bounded prefix: sniffing must not cost a full decode of a large upload.
    let head = &bytes[..bytes.len().min(8192)];
    let text = match head {
        // Lossy: the prefix may end inside a surrogate pair, and sniffing needs no exactness.
        [0xFF, 0xFE, rest @ ..] | [0xFE, 0xFF, rest @ ..] => {
            let le = head[0] == 0xFF;
            let units = rest.chunks_exact(2).map(|c| {
                let pair = [c[0], c[1]];
                if le {
                    u16::from_le_bytes(pair)
                } else {
                    u16::from_be_bytes(pair)
                }
            });
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
        }
        _ => match std::str::from_utf8(head) {
            Ok(t) => t.to_owned(),
            // The prefix may end inside a multi-byte character; what decodes up to there counts.
            Err(e) if e.error_len().is_none() => {
                String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned()
            }
            Err(_) => {
                return Err(ExtractError::Unsupported(format!(
                    "{filename} is binary data of an unknown kind; upload text, Markdown, HTML, \
                     PDF or JSON"
                )));
            }
        },
    };
    if text.contains('\0') {
        return Err(ExtractError::Unsupported(format!(
            "{filename} contains NUL bytes, so it is binary, not text; upload text, Markdown, \
             HTML, PDF or JSON"
        )));
    }
    let start = text
        .trim_start_matches('\u{FEFF}')
        .trim_start()
        .to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        return Ok(Format::Html);
    }
    if (start.starts_with('{') || start.starts_with('['))
        && decode_text(bytes, &Limits::default())
            .ok()
            .is_some_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(&t).is_ok())
    {
        return Ok(Format::Json);
    }
    Ok(Format::Text)
}
