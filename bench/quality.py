#!/usr/bin/env python3
"""What each quantization costs: perplexity and KL divergence, ours and llama.cpp's, one run.

    python3 bench/quality.py [--chunks 4] [--ctx 512] [--types q8_0,q4_k,q6_k,fp8] [--no-llama]

1. Models: the generated Llama-3.2-1B-shaped F16 model (bench/make_1b.py, seeded random
   weights; generated on first use) is quantized by `ferrollama quantize` to each type,
   into <cache>/bench-models/quality/ (reused on later runs).
2. Corpus: the Python 3 reference topics shipped with the interpreter
   (`pydoc_data.topics`, joined in key order) - English technical prose, ~110k Llama 3
   tokens, the same bytes wherever the same Python runs (its sha256 is printed).
3. Ours: `ferrollama perplexity -m TYPE.gguf CORPUS --kl-divergence F16.gguf` (both
   models over the same chunks). llama.cpp: `llama-perplexity` (scripts/
   setup-llama-perplexity) on the same GGUF files with --kl-divergence-base from the F16
   model, flash attention off (its exact attention path; FA's f16 accumulation moves PPL
   by a few tenths of a percent on this model).
4. Check: our PPL equals llama.cpp's within 0.5% for every type llama.cpp loads (F16 and
   the ggml types); FP8 is ferrollama's own and runs on our side only.
5. Greedy output: each ggml type, made by our quantizer from SmolLM2-135M-Instruct
   (converted to F16 first), must give the same greedy continuation in llama.cpp
   (llama-cpp-python) as in ferrollama. On the random 1B model near-tied logits make
   greedy text meaningless, so the real model is used for this check.

Prints the table and exits non-zero if a check fails. --json FILE saves the numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FERRO = ROOT / "target" / "release" / "ferrollama"
sys.path.insert(0, str(ROOT / "bench"))
from engine import cache_dir, ensure_models, setup_llamacpp as llama_python  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]


def log(msg: str) -> None:
    print(f"quality: {msg}", file=sys.stderr, flush=True)


def corpus() -> tuple[Path, str]:
    import pydoc_data.topics as t

    text = "\n\n".join(t.topics[k] for k in sorted(t.topics))
    p = cache_dir() / "bench" / "ppl-corpus.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists() or p.read_text(encoding="utf-8") != text:
        p.write_text(text, encoding="utf-8")
    return p, hashlib.sha256(text.encode()).hexdigest()


def run(cmd: list, **kw) -> str:
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return r.stdout


def quantize(src: Path, dst: Path, t: str, extra: list[str] | None = None) -> float:
    if dst.exists():
        return 0.0
    dst.parent.mkdir(parents=True, exist_ok=True)
    log(f"quantizing {src.name} -> {dst.name}")
    t0 = time.time()
    run([FERRO, "quantize", src, dst, "--type", t, "--json"] + (extra or []))
    return time.time() - t0


def ours_ppl(model: Path, base: Path | None, text: Path, ctx: int, chunks: int) -> dict:
    cmd = [FERRO, "perplexity", "-m", model, text, "-c", ctx, "--batch-size", ctx, "--chunks", chunks, "--json"]
    if base is not None:
        cmd += ["--kl-divergence", base]
    return json.loads(run(cmd).strip().splitlines()[-1])


def llama_ppl(binary: str, model: Path, text: Path, ctx: int, chunks: int, kld: Path, mode: str) -> dict:
    cmd = [binary, "-m", model, "-f", text, "-c", ctx, "-b", ctx, "--chunks", chunks, "-t", "2", "-fa", "off"]
    if mode == "base":
        cmd += ["--kl-divergence-base", kld]
    elif mode == "kl":
        cmd += ["--kl-divergence-base", kld, "--kl-divergence"]
    out = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        sys.exit(f"llama-perplexity failed on {model}:\n{out.stdout[-3000:]}")
    s = out.stdout
    res = {}
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", s)
    if m:
        res["ppl"] = float(m.group(1))
    for key, pat in [("ppl", r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), ("kld", r"Mean\s+KLD:\s*([-0-9.]+)"),
                     ("same_top", r"Same top p:\s*([0-9.]+)")]:
        m = re.search(pat, s)
        if m:
            res[key] = float(m.group(1))
    return res


GREEDY = r"""
import json, sys
import numpy as np
import llama_cpp
from llama_cpp import Llama
n = int(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    llm = Llama(path, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=2, verbose=False, flash_attn=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    rows = []
    for p in PROMPTS:
        ids = llm.tokenize(p.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        pieces, margins = [], []
        for _ in range(n):
            ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            lg = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32).copy()
            order = np.argsort(-lg, kind="stable")
            t = int(order[0])
            margins.append(float(lg[order[0]] - lg[order[1]]))
            pieces.append(llm.detokenize([t], special=False).decode("utf-8", errors="replace"))
            if llama_cpp.llama_vocab_is_eog(vocab, t):
                break
            llm.eval([t])
        rows.append({"pieces": pieces, "margins": margins})
    out[path] = rows
print(json.dumps(out))
"""

# A divergence at a step where llama.cpp's top two logits are this close is a near-tie:
# the engines sum in different orders, and either pick is the argmax within rounding.
NEAR_TIE = 0.05


def compare(ours: str, theirs: dict) -> dict:
    """Walks llama.cpp's greedy steps along our text: how many steps agree, and the
    top1 - top2 margin where they first disagree."""
    pos = 0
    for i, (piece, margin) in enumerate(zip(theirs["pieces"], theirs["margins"])):
        if ours.startswith(piece, pos) or (piece == "" and i == len(theirs["pieces"]) - 1):
            pos += len(piece)
            continue
        return {"agree": i, "of": len(theirs["pieces"]), "margin": margin}
    return {"agree": len(theirs["pieces"]), "of": len(theirs["pieces"]), "margin": None}


def greedy_check(py: str, types: list[str], n: int) -> list[dict]:
    smol = ensure_models(["smollm2"], py)["smollm2"]
    qdir = cache_dir() / "bench-models" / "quality"
    f16 = qdir / "smollm2-f16.gguf"
    quantize(smol, f16, "f16")
    files = {"f16": f16}
    for t in types:
        if t == "fp8":
            continue
        files[t] = qdir / f"smollm2-{t}.gguf"
        quantize(f16, files[t], t)
    code = "PROMPTS = " + json.dumps(PROMPTS) + "\n" + GREEDY
    theirs = json.loads(run([py, "-c", code, n] + [files[t] for t in files]).strip().splitlines()[-1])
    rows = []
    for t, f in files.items():
        res = []
        for p, th in zip(PROMPTS, theirs[str(f)]):
            # `run` ends its output with one newline of its own.
            ours = run([FERRO, "run", "-m", f, "--temperature", "0", "-n", n, p])
            ours = ours[:-1] if ours.endswith("\n") else ours
            c = compare(ours, th)
            c.update({"prompt": p, "ours": ours, "llama_cpp": "".join(th["pieces"])})
            res.append(c)
        rows.append({"type": t, "prompts": res})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--types", default="q8_0,q4_k,q6_k,fp8")
    ap.add_argument("--no-llama", action="store_true", help="ours only")
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--greedy-only", action="store_true", help="only the greedy-output check")
    ap.add_argument("--json", help="save the numbers here")
    args = ap.parse_args()
    types = [t for t in args.types.split(",") if t]

    log("cargo build --release")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferrollama"], check=True, cwd=ROOT)
    py = llama_python()
    base = ensure_models(["1b-f16"], py)["1b-f16"]
    text, sha = corpus()
    llama_bin = None
    if not args.no_llama:
        llama_bin = run([ROOT / "scripts" / "setup-llama-perplexity"]).strip().splitlines()[-1]

    qdir = cache_dir() / "bench-models" / "quality"
    files = {} if args.greedy_only else {"f16": base}
    qtime = {}
    for t in types if files else []:
        files[t] = qdir / f"llama-1b-{t}.gguf"
        qtime[t] = quantize(base, files[t], t)

    rows = []
    kld = qdir / "llama-1b-f16.kld"
    lbase = None
    if llama_bin and files:
        log("llama.cpp: F16 base (saving logits for KL)")
        lbase = llama_ppl(llama_bin, base, text, args.ctx, args.chunks, kld, "base")
    for t, f in files.items():
        log(f"ours: {t}")
        o = ours_ppl(f, None if t == "f16" else base, text, args.ctx, args.chunks)
        row = {"type": t, "mib": f.stat().st_size / 2**20, "ours_ppl": o["ppl"], "ours_ppl_unc": o["ppl_unc"],
               "ours_kld": (o.get("kl") or {}).get("mean", 0.0),
               "ours_same_top": 100 * (o.get("kl") or {}).get("top1_same", 1.0),
               "ours_seconds": o["seconds"], "quantize_seconds": qtime.get(t)}
        if llama_bin and t != "fp8":
            log(f"llama.cpp: {t}")
            l = lbase if t == "f16" else llama_ppl(llama_bin, f, text, args.ctx, args.chunks, kld, "kl")
            row.update({"llama_ppl": l.get("ppl"), "llama_kld": l.get("kld", 0.0), "llama_same_top": l.get("same_top", 100.0)})
            row["ppl_diff_pct"] = 100 * (row["ours_ppl"] / row["llama_ppl"] - 1)
        rows.append(row)

    greedy = [] if args.no_llama else greedy_check(py, types, args.greedy_tokens)

    fails = []
    if files:
        print(f"\ncorpus: pydoc_data.topics (Python {sys.version.split()[0]}), sha256 {sha[:16]}…, "
              f"{args.chunks} chunks of {args.ctx} tokens, {args.chunks * (args.ctx - args.ctx // 2 - 1)} positions scored")
        print("model: generated Llama-3.2-1B shape (seeded random weights), base F16\n")
        print("| type | file MiB | ours PPL | llama.cpp PPL | Δ PPL | ours KL | llama.cpp KL | same top (ours / llama.cpp) |")
        print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lp = r.get("llama_ppl")
        diff = r.get("ppl_diff_pct")
        if diff is not None and abs(diff) >= 0.5:
            fails.append(f"{r['type']}: PPL differs by {diff:.3f}%")
        print(f"| {r['type']} | {r['mib']:.0f} | {r['ours_ppl']:.1f} ± {r['ours_ppl_unc']:.1f} | "
              f"{f'{lp:.1f}' if lp else 'n/a'} | {f'{diff:+.3f}%' if diff is not None else 'n/a'} | "
              f"{r['ours_kld']:.6f} | {r.get('llama_kld', float('nan')) if lp else 'n/a'} | "
              f"{r['ours_same_top']:.2f}% / {r.get('llama_same_top', 'n/a') if lp else 'n/a'} |")
    if greedy:
        print(f"\ngreedy continuations ({args.greedy_tokens} tokens, SmolLM2-135M-Instruct quantized by ferrollama;"
              f" llama.cpp: argmax of its logits, flash attention off):")
        for g in greedy:
            cells = []
            for r in g["prompts"]:
                if r["agree"] == r["of"]:
                    cells.append(f"{r['of']}/{r['of']} identical")
                else:
                    tie = r["margin"] < NEAR_TIE
                    cells.append(f"{r['agree']}/{r['of']} then a {'near-tie' if tie else 'DIVERGENCE'} "
                                 f"(llama.cpp top1-top2 = {r['margin']:.3f})")
                    if not tie:
                        fails.append(f"greedy {g['type']} {r['prompt']!r}")
                        print(f"    ours:      {r['ours']!r}\n    llama.cpp: {r['llama_cpp']!r}")
            print(f"  {g['type']}: " + "; ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "greedy": greedy, "corpus_sha256": sha,
                                               "chunks": args.chunks, "ctx": args.ctx}, indent=1))
    print(f"\ncheck: {'PASS' if not fails else 'FAIL: ' + '; '.join(fails)}")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
