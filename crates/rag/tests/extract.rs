//! Ingestion text extraction on the fixtures in `testdata/extract/` (regenerate them with
//! `python3 testdata/extract/make_fixtures.py`): each format's text, and each bad file's
//! error variant, quickly and in bounded memory.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrollama_rag::extract::{ExtractError, Format, Limits, detect, extract};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/extract")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(name: &str) -> Result<ferrollama_rag::Extracted, ExtractError> {
    let bytes = fixture(name);
    let format = detect(name, None, &bytes)?;
    extract(&bytes, format, &Limits::default())
}

/// Peak resident memory of this test process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn pdf_two_pages_text_in_order() {
    let out = run("two_pages.pdf").unwrap();
    assert_eq!(out.format, Format::Pdf);
    assert_eq!(out.pages, Some(2));
    let one = out
        .text
        .find("Ferrollama page one: café")
        .unwrap_or_else(|| panic!("{:?}", out.text));
    let two = out.text.find("The second page says goodbye").unwrap();
    assert!(one < two, "{:?}", out.text);
}

#[test]
fn pdf_encrypted_is_unsupported() {
    let err = run("encrypted.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(m) if m.contains("encrypted")),
        "{err:?}"
    );
}

#[test]
fn pdf_without_text_layer_is_unsupported() {
    let err = run("no_text.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(m) if m.contains("no text layer") && m.contains("OCR")),
        "{err:?}"
    );
}

#[test]
fn pdf_flate_bomb_is_refused_fast_in_bounded_memory() {
    let bytes = fixture("bomb.pdf");
    assert!(bytes.len() < 2 << 20);
    let started = Instant::now();
    let err = extract(&bytes, Format::Pdf, &Limits::default()).unwrap_err();
    let took = started.elapsed();
    eprintln!("bomb refused in {took:?}, peak RSS {:?} bytes", peak_rss());
    assert!(
        matches!(&err, ExtractError::TooLarge(m) if m.contains("decompression bomb")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    if let Some(rss) = peak_rss() {
        assert!(rss < 300 << 20, "peak RSS {rss}");
    }
}

#[test]
fn pdf_bomb_limit_is_the_callers() {
    // A lower budget refuses the same file sooner: the limit is honoured, not hard-coded.
    let bytes = fixture("bomb.pdf");
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let started = Instant::now();
    let err = extract(&bytes, Format::Pdf, &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn zip_renamed_pdf_is_refused_by_magic() {
    let bytes = fixture("zip_renamed.pdf");
    let err = detect("report.pdf", Some("application/pdf"), &bytes).unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(m) if m.contains("ZIP")),
        "{err:?}"
    );
    // Also when the caller skips detection and insists it is a PDF.
    let err = extract(&bytes, Format::Pdf, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(m) if m.contains("ZIP")),
        "{err:?}"
    );
}

#[test]
fn truncated_pdf_is_corrupt() {
    let err = run("truncated.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Corrupt(m) if m.contains("truncated")),
        "{err:?}"
    );
}

#[test]
fn pdf_page_limit() {
    let bytes = fixture("two_pages.pdf");
    let limits = Limits {
        max_pdf_pages: 1,
        ..Limits::default()
    };
    let err = extract(&bytes, Format::Pdf, &limits).unwrap_err();
    assert!(
        matches!(&err, ExtractError::TooLarge(m) if m.contains("2 pages")),
        "{err:?}"
    );
}

#[test]
fn garbage_after_pdf_magic_is_corrupt_not_a_panic() {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // With the end marker the file passes the truncation check and reaches the parser.
    bytes.extend_from_slice(b"\n%%EOF\n");
    let err = extract(&bytes, Format::Pdf, &Limits::default()).unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt(_)), "{err:?}");
}

#[test]
fn html_visible_text_only() {
    let out = run("page.html").unwrap();
    assert_eq!(out.format, Format::Html);
    let text = out.text;
    for hidden in [
        "Head title",
        "STYLE TEXT",
        "SCRIPT TEXT",
        "nope",
        "NOSCRIPT",
        "TEMPLATE",
        "comment",
        "JSON",
    ] {
        assert!(!text.contains(hidden), "{hidden:?} leaked into {text:?}");
    }
    assert_eq!(
        text,
        "Fish & Chips\nPrice: £5 — <cheap> today\nfirst\nsecond\ninline bold and link\nafter break\n"
    );
}

#[test]
fn html_head_closes_implicitly() {
    let html = b"<title>T</title><p>body text</p>";
    let out = extract(html, Format::Html, &Limits::default()).unwrap();
    assert_eq!(out.text, "body text\n");
}

#[test]
fn json_paths_in_document_order() {
    let out = run("nested.json").unwrap();
    assert_eq!(out.format, Format::Json);
    assert_eq!(
        out.text,
        "title: Retrieval\nversion: 3\ndraft: false\nauthors[0].name: Ada\n\
         authors[0].roles[0]: author\nauthors[0].roles[1]: editor\nauthors[1].name: Grace\n\
         authors[1].roles: []\nmeta.license: null\nmeta.tags.topic: rag\nmeta.tags.lang: en\n\
         meta.empty: {}\n"
    );
}

#[test]
fn invalid_json_is_corrupt_with_position() {
    let err = extract(b"{\"a\": [1, 2,}", Format::Json, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ExtractError::Corrupt(m) if m.contains("line 1 column")),
        "{err:?}"
    );
}

#[test]
fn markdown_drops_comments_keeps_code() {
    let out = run("notes.md").unwrap();
    assert_eq!(out.format, Format::Markdown);
    assert!(!out.text.contains("TODO"), "{:?}", out.text);
    assert!(out.text.contains("# Retrieval notes"));
    assert!(
        out.text
            .contains("// <!-- kept inside code -->\nfn main() {}")
    );
}

#[test]
fn utf16_with_bom_is_decoded() {
    let out = run("utf16le.txt").unwrap();
    assert_eq!(out.format, Format::Text);
    assert_eq!(out.text, "Hello UTF-16: naïve ☃ 𝄞\n");
    let be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain("hi".encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    assert_eq!(
        extract(&be, Format::Text, &Limits::default()).unwrap().text,
        "hi"
    );
}

#[test]
fn utf8_bom_is_stripped() {
    let out = extract(b"\xEF\xBB\xBFhello", Format::Text, &Limits::default()).unwrap();
    assert_eq!(out.text, "hello");
}

#[test]
fn invalid_utf8_names_the_offset() {
    let err = run("invalid_utf8.txt").unwrap_err();
    // "valid start\n" is 12 bytes, "caf" 3 more: the Latin-1 é is byte 15.
    assert!(
        matches!(&err, ExtractError::Encoding(m) if m.contains("byte offset 15")),
        "{err:?}"
    );
    let err = extract(b"\xFF\xFEa", Format::Text, &Limits::default()).unwrap_err();
    assert!(matches!(err, ExtractError::Encoding(_)), "{err:?}");
    // An unpaired high surrogate (D800) followed by 'a', after the BOM: bad unit at byte 2.
    let err = extract(b"\xFF\xFE\x00\xD8a\x00", Format::Text, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ExtractError::Encoding(m) if m.contains("byte offset 2")),
        "{err:?}"
    );
}

#[test]
fn output_limit() {
    let limits = Limits {
        max_output_bytes: 4,
        ..Limits::default()
    };
    let err = extract(b"hello", Format::Text, &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge(_)), "{err:?}");
}

#[test]
fn detect_by_extension_mime_and_content() {
    let d = |name, mime, bytes: &[u8]| detect(name, mime, bytes);
    assert_eq!(d("a.md", None, b"# x").unwrap(), Format::Markdown);
    assert_eq!(d("a.HTM", None, b"hi").unwrap(), Format::Html);
    assert_eq!(d("a.txt", None, b"{\"a\":1}").unwrap(), Format::Text);
    assert_eq!(d("a.json", None, b"{}").unwrap(), Format::Json);
    assert_eq!(
        d("upload", Some("text/markdown; charset=utf-8"), b"x").unwrap(),
        Format::Markdown
    );
    assert_eq!(
        d("upload", Some("application/json"), b"[1]").unwrap(),
        Format::Json
    );
    assert_eq!(
        d("upload", None, b"  <!DOCTYPE html><p>x").unwrap(),
        Format::Html
    );
    assert_eq!(d("upload", None, b"<HTML><body>x").unwrap(), Format::Html);
    assert_eq!(d("upload", None, b"{\"a\": [1, 2]}").unwrap(), Format::Json);
    assert_eq!(d("upload", None, b"{not json").unwrap(), Format::Text);
    assert_eq!(
        d("upload", Some("application/octet-stream"), b"plain words").unwrap(),
        Format::Text
    );
    assert_eq!(
        d("upload", None, &fixture("utf16le.txt")).unwrap(),
        Format::Text
    );
    // PDF magic wins over a misleading name.
    assert_eq!(
        d("scan.txt", None, &fixture("two_pages.pdf")).unwrap(),
        Format::Pdf
    );
    // Binary without a known format, and known binary formats under text names, are refused.
    assert!(matches!(
        d("blob", None, b"\x00\x01\x02\xFF\xFE\x80"),
        Err(ExtractError::Unsupported(_))
    ));
    assert!(matches!(
        d("x.png.txt", None, b"\x89PNG\r\n\x1A\n...."),
        Err(ExtractError::Unsupported(_))
    ));
    assert!(matches!(
        d("fake.pdf", None, b"just text"),
        Err(ExtractError::Unsupported(_))
    ));
}
