//! A PDF's text layer, read with `lopdf` (pure Rust, maintained, and it bounds stream
//! decompression itself), hardened for untrusted uploads:
//!
//! 1. the `%PDF-` signature must be there, so a ZIP (or a zip bomb) renamed `.pdf` is named
//!    for what it is before any parsing, and the `%%EOF` marker, so a cut-off upload is
//!    refused rather than half indexed;
//! 2. a pre-scan inflates every zlib stream in the file into a counter, with one budget for
//!    the whole file ([`Limits::max_decompressed_bytes`]): `lopdf`'s own bound is per stream
//!    (and per page), so thousands of streams each just under it would still pass;
//! 3. parsing runs on its own thread under `catch_unwind` and a deadline, so a panic or a
//!    pathological file in the crate ends as an error instead of a crashed or stuck ingestion;
//! 4. an encrypted file that opens only with a password is refused (one with only an owner
//!    password, i.e. permission flags, opens with the empty user password as in any viewer,
//!    and is read); a file with pages but no text is refused as scanned.

use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Instant;

use lopdf::{DecompressError, Document, LoadOptions};

use super::{ExtractError, Limits};

/// Acrobat accepts the signature anywhere in the first 1024 bytes (some generators put junk
/// before it), and so do we.
pub(super) fn has_magic(bytes: &[u8]) -> bool {
    memchr::memmem::find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some()
}

/// The text of every page, pages separated by a blank line, and the page count.
pub(super) fn text_layer(bytes: &[u8], limits: &Limits) -> Result<(String, usize), ExtractError> {
    if !has_magic(bytes) {
        let what = super::binary_kind(bytes).unwrap_or("not a PDF");
        return Err(ExtractError::Unsupported(format!(
            "the file does not start with the PDF signature %PDF- ({what}); upload the real PDF"
        )));
    }
    // lopdf's lenient loader rebuilds a missing cross-reference table and would index the
    // pages that survived; a cut-off upload (the usual way a PDF is damaged) is better refused
    // whole, so the user re-sends it instead of searching half a document. Writers end every
    // revision with %%EOF; some append a little junk after it, hence the 1024-byte window.
    if memchr::memmem::find(&bytes[bytes.len().saturating_sub(1024)..], b"%%EOF").is_none() {
        return Err(ExtractError::Corrupt(
            "the PDF is truncated (it does not end with %%EOF); re-download or re-export it".into(),
        ));
    }
    prescan_streams(bytes, limits.max_decompressed_bytes)?;

    // The thread needs its own copy: on timeout it is abandoned and may outlive the caller's
    // buffer.
    let owned = bytes.to_vec();
    let thread_limits = limits.clone();
    guarded(limits, move || parse(&owned, &thread_limits))
}

/// Runs `work` on its own thread, turning a panic into [`ExtractError::Corrupt`] and an
/// overrun of [`Limits::timeout`] into [`ExtractError::Timeout`] (the thread is then left
/// to finish on its own: threads cannot be killed). A generous stack, because a stack
/// overflow aborts the process and cannot be caught like a panic (lopdf bounds its
/// recursion; this is belt and braces).
fn guarded<T: Send + 'static>(
    limits: &Limits,
    work: impl FnOnce() -> Result<T, ExtractError> + Send + 'static,
) -> Result<T, ExtractError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("pdf-extract".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(work));
            // The receiver is gone only after a timeout; nobody wants the result then.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(ExtractError::TooLarge(format!(
            "could not start the PDF reader thread ({e}); try again later"
        )));
    }
    match rx.recv_timeout(limits.timeout) {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(ExtractError::Corrupt(format!(
                "the PDF reader failed on this file ({msg}); re-save it with a PDF printer or \
                 convert it to text"
            )))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(timeout(limits)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ExtractError::Corrupt(
            "the PDF reader stopped without a result; re-save the PDF and upload it again".into(),
        )),
    }
}

fn timeout(limits: &Limits) -> ExtractError {
    ExtractError::Timeout(format!(
        "reading the PDF took over {} s; split it into smaller files",
        limits.timeout.as_secs_f64()
    ))
}

/// Refuses a file whose zlib streams inflate past `budget` bytes in total.
///
/// Streams are found by their `stream` keyword rather than by parsing (parsing is what must
/// not happen before this check), and each is inflated into a fixed buffer that is thrown
/// away, so memory stays constant whatever the file holds. Data after `stream` that is not
/// zlib (images in DCT, other filters, or a false match inside text) is skipped; those
/// filters are bounded per stream by `lopdf`. A stream under several Flate filters is counted
/// by its outer layer here and bounded per layer by `lopdf`.
fn prescan_streams(bytes: &[u8], budget: u64) -> Result<(), ExtractError> {
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    for pos in memchr::memmem::find_iter(bytes, b"stream") {
        if pos >= 3 && bytes.get(pos - 3..pos) == Some(b"end") {
            continue;
        }
        // The keyword is followed by CRLF or LF (a lone CR is tolerated, as readers do).
        let mut start = pos + b"stream".len();
        if bytes.get(start) == Some(&b'\r') {
            start += 1;
        }
        if bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        let Some(data) = bytes.get(start..) else {
            continue;
        };
        if !zlib_header(data) {
            continue;
        }
        let mut inflater = flate2::read::ZlibDecoder::new(data);
        loop {
            match inflater.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > budget {
                        return Err(ExtractError::TooLarge(format!(
                            "the PDF's compressed streams expand to over {budget} bytes (a \
                             decompression bomb, or a file far too large to index); it was \
                             not opened"
                        )));
                    }
                }
                // A damaged stream counts for what it inflated; the parser judges the rest.
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// A zlib header (RFC 1950): deflate method, window ≤ 32K, header checksum divisible by 31.
fn zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The parse proper, on the reader thread.
fn parse(bytes: &[u8], limits: &Limits) -> Result<(String, usize), ExtractError> {
    let started = Instant::now();
    let per_stream = usize::try_from(limits.max_decompressed_bytes).unwrap_or(usize::MAX);
    let options = LoadOptions {
        max_decompressed_size: Some(per_stream),
        ..LoadOptions::default()
    };
    let declares_encryption = memchr::memmem::find(bytes, b"/Encrypt").is_some();
    let doc = match Document::load_mem_with_options(bytes, options) {
        Ok(doc) => doc,
        Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { limit })) => {
            return Err(bomb(limit));
        }
        // A broken or unknown security handler fails the load; the file is still encrypted.
        Err(_) if declares_encryption => return Err(encrypted()),
        Err(e) => {
            return Err(ExtractError::Corrupt(format!(
                "the PDF cannot be read ({e}); it may be truncated or damaged, re-save or \
                 re-download it"
            )));
        }
    };
    // lopdf tries the empty user password itself; no decryption state means it needs a real one.
    if doc.trailer.has(b"Encrypt") && doc.encryption_state.is_none() {
        return Err(encrypted());
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ExtractError::Corrupt(
            "the PDF has no pages that can be found; it may be truncated or damaged".into(),
        ));
    }
    if pages.len() > limits.max_pdf_pages {
        return Err(ExtractError::TooLarge(format!(
            "the PDF has {} pages, more than the {} allowed; split it into smaller files",
            pages.len(),
            limits.max_pdf_pages
        )));
    }
    let mut text = String::new();
    let mut first_error = None;
    let mut pages_read = 0usize;
    for &number in pages.keys() {
        if started.elapsed() > limits.timeout {
            return Err(timeout(limits));
        }
        match doc.extract_text_with_limit(&[number], per_stream) {
            Ok(page) => {
                pages_read += 1;
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(page.trim_end());
                if text.len() > limits.max_output_bytes {
                    return Err(ExtractError::TooLarge(format!(
                        "the PDF's text is over {} bytes; split it into smaller files",
                        limits.max_output_bytes
                    )));
                }
            }
            Err(lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { limit })) => {
                return Err(bomb(limit));
            }
            // One page with a broken font or stream should not lose the others' text.
            Err(e) => {
                tracing::warn!(page = number, error = %e, "pdf page text not extracted");
                first_error.get_or_insert((number, e));
            }
        }
    }
    if pages_read == 0
        && let Some((number, e)) = first_error
    {
        return Err(ExtractError::Corrupt(format!(
            "no page of the PDF could be read (page {number}: {e}); re-save it with a PDF \
             printer"
        )));
    }
    if text.trim().is_empty() {
        return Err(ExtractError::Unsupported(format!(
            "the PDF's {} page(s) have no text layer (a scanned document?); OCR is not \
             supported, so run it through OCR first",
            pages.len()
        )));
    }
    Ok((text, pages.len()))
}

fn bomb(limit: usize) -> ExtractError {
    ExtractError::TooLarge(format!(
        "a stream of the PDF expands to over {limit} bytes (a decompression bomb, or a file far \
         too large to index); it was not read"
    ))
}

fn encrypted() -> ExtractError {
    ExtractError::Unsupported(
        "the PDF is encrypted and needs a password; remove the password (e.g. print it to a \
         new PDF, or `qpdf --decrypt`) and upload it again"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_panic_in_the_reader_is_corrupt() {
        let err = guarded::<()>(&Limits::default(), || panic!("index out of bounds")).unwrap_err();
        assert!(
            matches!(&err, ExtractError::Corrupt(m) if m.contains("index out of bounds")),
            "{err:?}"
        );
    }

    #[test]
    fn a_slow_reader_times_out() {
        let limits = Limits {
            timeout: Duration::from_millis(50),
            ..Limits::default()
        };
        let started = Instant::now();
        let err = guarded(&limits, || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, ExtractError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn zlib_headers() {
        assert!(zlib_header(&[0x78, 0x9C]));
        assert!(zlib_header(&[0x78, 0xDA]));
        assert!(!zlib_header(b"BT"));
        assert!(!zlib_header(&[0x78]));
    }
}
