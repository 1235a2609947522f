#!/usr/bin/env python3
"""Ingestion throughput end to end through `ferrollama serve`: pages/s, chunks/s, tokens/s.

    python3 bench/ingest.py [--bin target/ci/ferrollama] [--pdfs 6] [--pages 8] [--texts 8]
                            [--threads N] [--store postgres://...] [--json OUT] [--keep]

Standard library only (urllib, sqlite3). Generates, from a fixed seed, multi-page PDFs (a
plain text layer: Helvetica, uncompressed content streams, ~600 words a page) and
text/Markdown files (~600 words each) in a temporary folder, starts `serve` with
all-MiniLM-L6-v2 (`--embedding-model`, default `<cache>/models/all-MiniLM-L6-v2`, i.e.
`ferrollama fetch minilm`; the chat model is the repo's tiny test model, which ingestion
does not use) on a fresh `--data-dir` (or `--store postgres://...`), and for each set:

  1. uploads every file (`POST /v1/files`, purpose assistants; timed apart),
  2. creates a vector store with all of them (`POST /v1/vector_stores {"file_ids"}`;
     default `auto` chunking: 254-token chunks for MiniLM, as the server resolves it),
  3. polls `GET /v1/vector_stores/{id}` every 0.1 s until nothing is `in_progress`.

Ingestion time = from the create request to the poll that sees every file `completed`
(a failed file fails the run). Chunks are counted through `GET .../files/{id}/content`;
tokens (each chunk's embedding-model tokens, as the ingestion counted them; chunks
overlap, so this is what was embedded) come from the SQLite database read-only (with
`--store` from `psql` when `--psql` is given, else not reported). pages/s counts PDF
pages (the PDF set); the text set reports files/s. Ingestion is dominated by the
embedding model (one ingestion worker; `--threads` is `serve -t`, default all cores).
The load average before and after is recorded: run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402 (standard library only)

ROOT = Path(__file__).resolve().parent.parent

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when "
         "river stone lantern orchard copper meadow harbor violet thunder garden silver canyon "
         "market engine signal history library teacher winter summer machine number country "
         "village station morning evening mountain forest window letter bridge doctor island "
         "question answer system network storage vector search index memory paper report "
         "measure balance weather kitchen mirror pocket ladder circle pattern theory method").split()


def words(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if i == 0 or out[-1].endswith(".") else w)
        if rng.random() < 0.07:
            out[-1] += "."
    return out


def lines_of(ws: list[str], width: int = 80) -> list[str]:
    lines, cur = [], ""
    for w in ws:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return lines


def pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF 1.4: one Helvetica font, one uncompressed text stream per page."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objs: list[bytes] = []  # object i+1
    n = len(pages)
    # 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, lines in enumerate(pages):
        body = "BT /F1 10 Tf 13 TL 56 760 Td\n" + "".join(f"({esc(l)}) Tj T*\n" for l in lines) + "ET\n"
        data = body.encode("latin-1")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(f"<< /Length {len(data)} >>\nstream\n".encode() + data + b"endstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, o in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_files(folder: Path, pdfs: int, pages: int, texts: int, words_per_page: int):
    rng = random.Random(14)
    pdf_files, text_files = [], []
    for i in range(pdfs):
        pg = [lines_of(words(rng, words_per_page)) for _ in range(pages)]
        p = folder / f"report-{i:02d}.pdf"
        p.write_bytes(pdf(pg))
        pdf_files.append(p)
    for i in range(texts):
        ws = words(rng, words_per_page)
        if i % 2:
            p = folder / f"notes-{i:02d}.md"
            p.write_text(f"# Notes {i}\n\n" + "\n".join(lines_of(ws)) + "\n")
        else:
            p = folder / f"notes-{i:02d}.txt"
            p.write_text("\n".join(lines_of(ws)) + "\n")
        text_files.append(p)
    return pdf_files, text_files


# ---------------------------------------------------------------------------- HTTP
def call(base: str, method: str, path: str, body: dict | None = None, timeout: float = 120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read()[:500]!r}")


def upload(base: str, path: Path) -> str:
    boundary = "ingest-bench-7f3a9c"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "/v1/files", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["id"]


def ingest(base: str, files: list[Path], name: str) -> dict:
    t0 = time.monotonic()
    ids = [upload(base, p) for p in files]
    upload_s = time.monotonic() - t0
    t1 = time.monotonic()
    vs = call(base, "POST", "/v1/vector_stores", {"name": name, "file_ids": ids})["id"]
    while True:
        v = call(base, "GET", f"/v1/vector_stores/{vs}")
        c = v["file_counts"]
        if c["in_progress"] == 0:
            break
        time.sleep(0.1)
    ingest_s = time.monotonic() - t1
    if c["completed"] != len(ids):
        bad = call(base, "GET", f"/v1/vector_stores/{vs}/files?filter=failed&limit=100")
        raise SystemExit(f"{name}: {c}; failed: {json.dumps(bad)[:2000]}")
    chunks = 0
    for fid in ids:
        chunks += len(call(base, "GET", f"/v1/vector_stores/{vs}/files/{fid}/content")["data"])
    return {"vector_store_id": vs, "files": len(ids), "bytes": sum(p.stat().st_size for p in files),
            "upload_s": upload_s, "ingest_s": ingest_s, "chunks": chunks}


def tokens_sqlite(data_dir: Path, vs: str) -> int | None:
    db = sqlite3.connect(f"file:{data_dir / 'rag.sqlite'}?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT COALESCE(SUM(tokens), 0) FROM chunks WHERE vector_store_id = ?",
                          (vs,)).fetchone()
        return int(n)
    finally:
        db.close()


def tokens_psql(psql: str, url: str, vs: str) -> int | None:
    q = f"SELECT COALESCE(SUM(tokens), 0) FROM chunks WHERE vector_store_id = '{vs}'"
    r = subprocess.run([psql, "-X", "-A", "-t", "-d", url, "-c", q], capture_output=True, text=True)
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().isdigit() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "ci" / "ferrollama"))
    ap.add_argument("--embedding-model", default=str(oc.cache_dir() / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--chat-model", default=str(ROOT / "testdata" / "tiny" / "tiny-q8_0.gguf"))
    ap.add_argument("--pdfs", type=int, default=6)
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--words-per-page", type=int, default=600)
    ap.add_argument("--threads", type=int, default=None, help="serve -t (default: all cores)")
    ap.add_argument("--store", default=None, help="postgres://... (default: SQLite in a temp --data-dir)")
    ap.add_argument("--psql", default=None, help="psql binary, to count tokens with --store")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    oc.exit_on_sigterm()

    binary = Path(a.bin).resolve()
    if not binary.exists():
        raise SystemExit(f"{binary} missing: cargo build --profile ci -p ferrollama (or pass --bin)")
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    docs, data = work / "docs", work / "data"
    docs.mkdir()
    pdf_files, text_files = make_files(docs, a.pdfs, a.pages, a.texts, a.words_per_page)

    port = oc.free_port()
    cmd = [str(binary), "serve", "--port", str(port), "-m", a.chat_model,
           "--embedding-model", a.embedding_model]
    cmd += ["--store", a.store] if a.store else ["--data-dir", str(data)]
    if a.threads:
        cmd += ["-t", str(a.threads)]
    srv = oc.Server(cmd, port, work / "serve.log")
    load_before = os.getloadavg()
    srv.start()
    import asyncio
    asyncio.run(srv.wait_ready(300))
    base = f"http://127.0.0.1:{port}"
    results = {}
    try:
        for name, files in (("pdf", pdf_files), ("text", text_files)):
            if not files:
                continue
            r = ingest(base, files, f"ingest-bench-{name}")
            r["tokens"] = (tokens_sqlite(data, r["vector_store_id"]) if not a.store else
                           tokens_psql(a.psql, a.store, r["vector_store_id"]) if a.psql else None)
            if name == "pdf":
                r["pages"] = len(files) * a.pages
            results[name] = r
    finally:
        srv.stop()
    load_after = os.getloadavg()

    sha = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"# python3 bench/ingest.py (date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"binary {binary} (sha256 {sha}, repo at {rev}); backend "
          f"{'postgres' if a.store else 'sqlite'}; serve -t {a.threads or 'default (all cores)'}; "
          f"{oc.cpu_name()}, {os.cpu_count()} cores")
    print(f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (shared machine)")
    print()
    print("| set | files | pages | KiB | upload s | ingest s | chunks | tokens | pages/s | files/s | chunks/s | tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s = r["ingest_s"]
        pages = r.get("pages")
        tok = r["tokens"]
        print(f"| {name} | {r['files']} | {pages if pages else '-'} | {r['bytes'] >> 10} | {r['upload_s']:.2f} | "
              f"{s:.1f} | {r['chunks']} | {tok if tok is not None else '-'} | "
              f"{f'{pages / s:.2f}' if pages else '-'} | {r['files'] / s:.2f} | {r['chunks'] / s:.1f} | "
              f"{f'{tok / s:.0f}' if tok is not None else '-'} |")
    out = {"binary": str(binary), "sha256": sha, "rev": rev, "backend": "postgres" if a.store else "sqlite",
           "threads": a.threads, "load_before": load_before, "load_after": load_after, "sets": results}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    if a.keep:
        print(f"(kept {work})")
    else:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
