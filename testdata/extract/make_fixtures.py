#!/usr/bin/env python3
"""Regenerates the ingestion-extraction fixtures in this folder (standard library only).

    python3 testdata/extract/make_fixtures.py

The PDFs are written object by object, with a real cross-reference table and
Flate-compressed content streams, so each is exactly what its name says and nothing a
PDF library added. Used by crates/rag/tests/extract.rs.
"""
import io
import os
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def pdf(objects, trailer_extra=b""):
    """A PDF from object bodies (object 1 is the catalog), with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, trailer_extra))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def stream(data, compressed=None):
    """A Flate stream object body; `compressed` overrides the zlib of `data` (for the bomb)."""
    z = zlib.compress(data) if compressed is None else compressed
    return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(z) + z + b"\nendstream"


def text_page(text):
    return b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"


def document(contents, trailer_extra=b"", extra_objects=()):
    """Catalog (1), page tree (2), font (3), then one page + content stream per page."""
    n = len(contents)
    page_ids = [4 + 2 * i for i in range(n)]
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % p for p in page_ids), n),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, content in enumerate(contents):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(content if content.startswith(b"<<") else stream(content))
    objects.extend(extra_objects)
    return pdf(objects, trailer_extra)


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main():
    two = document([text_page(b"Ferrollama page one: caf\xe9"), text_page(b"The second page says goodbye")])
    write("two_pages.pdf", two)

    # /Encrypt names the standard handler with /O and /U values no password matches.
    enc_dict = b"<< /Filter /Standard /V 2 /R 3 /Length 128 /P -4 /O <%s> /U <%s> >>" % (
        b"11" * 32,
        b"22" * 32,
    )
    write(
        "encrypted.pdf",
        document([text_page(b"secret")], trailer_extra=b" /Encrypt 6 0 R /ID [<00> <00>]", extra_objects=[enc_dict]),
    )

    # A page whose only content draws a line: what a scan without OCR looks like to us.
    write("no_text.pdf", document([b"0 0 m 100 100 l S"]))

    # 1 GiB of zeros in one Flate content stream: about 1 MB on disk.
    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    bomb = b"".join(c.compress(chunk) for _ in range(1024)) + c.flush()
    write("bomb.pdf", document([stream(b"", compressed=bomb)]))

    # A zip bomb renamed .pdf: 64 MiB of zeros in a ZIP (~64 KB).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("zeros.bin", bytes(64 << 20))
    write("zip_renamed.pdf", buf.getvalue())

    # The two-page PDF cut off in the middle of its second page's content stream.
    write("truncated.pdf", two[: two.rindex(b">>\nstream\n") + 20])

    # Text fixtures whose bytes matter (encodings) are generated too.
    write("utf16le.txt", "\ufeffHello UTF-16: naïve ☃ 𝄞\n".encode("utf-16-le"))
    write("invalid_utf8.txt", b"valid start\n" + b"caf\xe9 latin-1\n")


if __name__ == "__main__":
    main()
