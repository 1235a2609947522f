#!/usr/bin/env python3
"""The code interpreter's sandbox latency, next to a plain Python start (stdlib only).

    python3 bench/sandbox.py [--n 50] [--bin PATH]

Runs `ferrollama tool code_interpreter --bench N` (the binary from --bin, else
$FERROLLAMA_BIN, else target/release/ferrollama), which times N cold calls (a fresh
sandboxed interpreter each: bwrap + namespaces + Python start + the driver) and N warm
calls (one interpreter, the statement `x = 1`), inside the binary. As the reference, the
same run times N plain, unsandboxed `/usr/bin/python3 -c pass` subprocesses. Prints a
table and writes bench/results/sandbox-YYYY-MM-DD.{txt,json}.

Goals: a warm call adds under 50 ms, a cold one under 200 ms (over the plain start).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oaiclient import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    rank = max(1, min(len(v), math.ceil(p * len(v))))
    return v[rank - 1]


def plain_python(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-c", "pass"], check=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--bin", default=os.environ.get("FERROLLAMA_BIN", str(ROOT / "target" / "release" / "ferrollama")))
    a = ap.parse_args()
    if not Path(a.bin).is_file():
        print(f"error: {a.bin} not found (cargo build --release -p ferrollama, or --bin / FERROLLAMA_BIN)", file=sys.stderr)
        return 1
    r = subprocess.run([a.bin, "tool", "code_interpreter", "--bench", str(a.n)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"error: {a.bin} tool code_interpreter --bench failed: {r.stderr.strip()}", file=sys.stderr)
        return 1
    sb = json.loads(r.stdout)
    plain = plain_python(a.n)
    res = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "binary": a.bin,
        "n": a.n,
        "cold_ms": sb["cold_ms"],
        "warm_ms": sb["warm_ms"],
        "plain_python_ms": {"p50": pct(plain, 0.5), "p99": pct(plain, 0.99)},
    }
    res["cold_adds_p50_ms"] = res["cold_ms"]["p50"] - res["plain_python_ms"]["p50"]
    res["warm_p50_ms"] = res["warm_ms"]["p50"]
    lines = [
        f"sandbox latency, {res['date']}, {res['cpu']}, n={a.n}, binary {a.bin}",
        f"{'':28}{'p50 ms':>10}{'p99 ms':>10}",
        f"{'cold call (fresh sandbox)':28}{res['cold_ms']['p50']:>10.1f}{res['cold_ms']['p99']:>10.1f}",
        f"{'warm call (same session)':28}{res['warm_ms']['p50']:>10.1f}{res['warm_ms']['p99']:>10.1f}",
        f"{'plain python3 -c pass':28}{res['plain_python_ms']['p50']:>10.1f}{res['plain_python_ms']['p99']:>10.1f}",
        f"cold adds over a plain Python start: {res['cold_adds_p50_ms']:.1f} ms at p50 (goal < 200)",
        f"warm call (all of it is sandbox overhead): {res['warm_p50_ms']:.1f} ms at p50 (goal < 50)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = ROOT / "bench" / "results" / f"sandbox-{res['date']}"
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
