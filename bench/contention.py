#!/usr/bin/env python3
"""Decode speed on a busy machine: ferrollama vs llama.cpp with 0, 1, ... cores of competing load.

    python3 bench/contention.py [--model smollm2] [--threads 2] [--loads 0,1]
                                [--streams 1,8] [--gen-tokens 128] [--runs 3]
                                [--before-bin PATH] [--no-llama] [--json OUT]

The competing load is L busy loops (`python3 -c 'while True: pass'`), each pinned with
taskset to one core (cores 0 .. L-1), started before and stopped after the rows of load L.
Both engines get --threads T (default 2) and are not pinned. Rows, for every load:

  bench         decode tok/s from an empty cache, G tokens one at a time (prompt 16):
                  ours   ferrollama bench -m M --prompt-tokens 16 --gen-tokens G -t T
                         --repeats 1 --json                (decode_tok_s)
                  llama  llama-bench -m M -p 0 -n G -t T -r 1 -o json   (avg_ts)
                --runs separate processes each; the MEDIAN is reported (under load the
                best of several runs would hide the collapse this benchmark is about).
  serve C       aggregate generated tok/s of `ferrollama serve` vs `llama-server` with C
                concurrent streaming clients (bench/serve.py's client and servers: burst
                arrivals, prompts of 16 random words, G tokens each with ignore_eos,
                temperature 0; requests per client from the first server's warm-up, about
                --target-seconds per run, the same for both).

The two engines alternate which goes first. --before-bin runs the ours rows again with
another ferrollama binary (e.g. a build from before a change) as a third column.
Ratios printed: ours/llama at each load, and each engine's loaded/unloaded rate.
Exits non-zero when a run fails. Standard library only; llama-server and llama-bench come
from scripts/setup-llama-server (built from the same llama.cpp source).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402
import serve as sv  # noqa: E402

ROOT = oc.ROOT


def log(msg: str):
    print(f"contention: {msg}", file=sys.stderr, flush=True)


class Load:
    """`n` busy loops, one pinned to each of cores 0 .. n-1 (a context manager)."""

    def __init__(self, n: int):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        for core in range(self.n):
            self.procs.append(subprocess.Popen(
                ["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"],
                stdin=subprocess.DEVNULL))
        if self.n:
            time.sleep(1.0)
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise SystemExit("a busy loop exited at once (is `taskset` installed? util-linux)")
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs.clear()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def bench_ours(binary: str, model: Path, a) -> dict:
    runs, errors = [], []
    for _ in range(a.runs):
        cmd = [binary, "bench", "-m", str(model), "--prompt-tokens", "16", "--gen-tokens",
               str(a.gen_tokens), "-t", str(a.threads), "--repeats", "1", "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=a.timeout)
        if r.returncode != 0:
            errors.append(r.stderr.strip()[-300:])
            continue
        runs.append(float(json.loads(r.stdout.strip().splitlines()[-1])["decode_tok_s"]))
    return {"runs": runs, "tok_s": median(runs), "errors": errors}


def bench_llama(binary: str, model: Path, a) -> dict:
    runs, errors = [], []
    for _ in range(a.runs):
        cmd = [binary, "-m", str(model), "-p", "0", "-n", str(a.gen_tokens), "-t", str(a.threads),
               "-r", "1", "-o", "json"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=a.timeout)
        if r.returncode != 0:
            errors.append(r.stderr.strip()[-300:])
            continue
        rows = [x for x in json.loads(r.stdout) if x.get("n_gen") == a.gen_tokens]
        if not rows:
            errors.append(f"no tg{a.gen_tokens} row in llama-bench output")
            continue
        runs.append(float(rows[0]["avg_ts"]))
    return {"runs": runs, "tok_s": median(runs), "errors": errors}


def serve_args(a, server_bin: str) -> argparse.Namespace:
    """The settings bench/serve.py's bench_engine reads."""
    return argparse.Namespace(
        ours_args="", llama_args="", server_bin=server_bin, llama_server_bin=a.llama_server_bin,
        threads=a.threads, ctx_per_slot=256, api_key=None, wait_idle=0, idle_seconds=0,
        start_timeout=300, seed=0, shared_prefix=0, prompt_tokens=16, max_tokens=a.gen_tokens,
        endpoint="completions", timeout=a.timeout, target_seconds=a.target_seconds,
        max_requests=100, retries=0, arrivals="burst")


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help=f"one of {','.join(oc.MODELS)} or a .gguf path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loads", default="0,1", help="comma-separated numbers of busy cores")
    ap.add_argument("--streams", default="1,8", help="comma-separated serve concurrencies (empty: none)")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="bench processes per engine and load (median)")
    ap.add_argument("--target-seconds", type=float, default=15.0, help="about this long per serve run")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run or request")
    ap.add_argument("--before-bin", help="another ferrollama binary, measured as a third column")
    ap.add_argument("--no-llama", action="store_true", help="only ferrollama")
    ap.add_argument("--server-bin", default=str(oc.FERRO), help="ferrollama binary")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release -p ferrollama`")
    ap.add_argument("--json", type=Path, help="write every number here")
    a = ap.parse_args()
    loads = [int(x) for x in a.loads.split(",") if x]
    streams = [int(x) for x in a.streams.split(",") if x]
    ncpu = os.cpu_count() or 1
    if any(n < 0 or n >= ncpu for n in loads):
        sys.exit(f"--loads: each must be 0 .. {ncpu - 1} (this machine has {ncpu} cores)")

    if not a.no_build and a.server_bin == str(oc.FERRO):
        log("cargo build --release -p ferrollama")
        if subprocess.run(["cargo", "build", "--release", "-p", "ferrollama"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release -p ferrollama failed")
    a.llama_server_bin = a.llama_bench_bin = None
    if not a.no_llama:
        r = subprocess.run([str(ROOT / "scripts" / "setup-llama-server")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if r.returncode != 0:
            sys.exit("scripts/setup-llama-server failed")
        a.llama_server_bin = r.stdout.strip().splitlines()[-1]
        a.llama_bench_bin = str(Path(a.llama_server_bin).with_name("llama-bench"))
    model = oc.resolve_model(a.model, Path(a.server_bin))
    log_dir = oc.cache_dir() / "bench" / "contention-logs" / time.strftime("%Y%m%d-%H%M%S")
    log(f"model {model}; server logs in {log_dir}")

    engines = [("ours", a.server_bin)]
    if a.before_bin:
        engines.append(("before", a.before_bin))
    if not a.no_llama:
        engines.append(("llama", a.llama_server_bin))
    rows = ["bench"] + [f"serve {c}" for c in streams]
    res: dict = {}  # (load, row, engine) -> dict
    failed = False
    for li, L in enumerate(loads):
        with Load(L):
            log(f"load: {L} busy core(s)")
            for ri, row in enumerate(rows):
                order = engines if (li + ri) % 2 == 0 else engines[::-1]
                R = None
                for eng, binary in order:
                    if row == "bench":
                        d = bench_llama(a.llama_bench_bin, model, a) if eng == "llama" else bench_ours(binary, model, a)
                        if d["errors"]:
                            failed = True
                            log(f"  {eng} bench errors: {d['errors'][0]}")
                    else:
                        C = int(row.split()[1])
                        sa = serve_args(a, binary)
                        # The before binary may be many times slower under load: it sizes its
                        # own run from its warm-up instead of the shared request count.
                        shared = eng != "before"
                        d, r = asyncio.run(sv.bench_engine(sa, "llama" if eng == "llama" else "ours",
                                                           f"{eng}-load{L}", model, C,
                                                           R if shared else None, log_dir))
                        if shared:
                            R = r
                        d["tok_s"] = None if d.get("error") else d.get("agg_tok_s")
                        if d.get("error") or d.get("errors"):
                            failed = True
                    log(f"  load {L} {row} {eng}: {sv._f(d.get('tok_s'))} tok/s")
                    res[(L, row, eng)] = d

    # ---- report ----
    print()
    lver = sv.llama_server_version(a.llama_server_bin) if a.llama_server_bin else "(not run)"
    print(f"decode under competing load: ferrollama vs llama.cpp {lver} on {oc.cpu_name()}, {ncpu} cores,"
          f" {a.threads} threads each; model {model.name}; {a.gen_tokens} tokens per run/request")
    print("load = busy loops pinned to cores 0..L-1; bench = median of"
          f" {a.runs} processes; serve C = aggregate tok/s of C concurrent streams")
    names = [e for e, _ in engines]
    hdr = f"{'load':>4} {'row':<9} | " + " ".join(f"{n + ' tok/s':>12}" for n in names)
    hdr += f" | {'ours/llama':>10} | " + " ".join(f"{n + ' vs L0':>12}" for n in names)
    print(hdr)
    print("-" * len(hdr))
    for L in loads:
        for row in rows:
            tok = {n: res.get((L, row, n), {}).get("tok_s") for n in names}
            ratio = tok["ours"] / tok["llama"] if tok.get("ours") and tok.get("llama") else None
            rel = {}
            for n in names:
                base = res.get((loads[0], row, n), {}).get("tok_s")
                rel[n] = tok[n] / base if tok[n] and base else None
            line = f"{L:>4} {row:<9} | " + " ".join(f"{sv._f(tok[n]):>12}" for n in names)
            line += f" | {sv._f(ratio, 2):>10} | " + " ".join(f"{sv._f(rel[n], 2):>12}" for n in names)
            print(line)
    print()
    print(f"vs L0 = tok/s at this load / tok/s at load {loads[0]}; ours/llama at the same load."
          " Goal (issue 10): ours keeps >= 0.40 of its unloaded rate under 1 busy core and"
          " stays >= 1.0x llama.cpp there.")

    if a.json:
        doc = {
            "machine": {"cpu": oc.cpu_name(), "cores": ncpu, "platform": platform.platform()},
            "llama": {"server": a.llama_server_bin, "bench": a.llama_bench_bin, "version": lver},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "model": str(model),
            "results": [{"load": L, "row": row, "engine": eng, **d} for (L, row, eng), d in res.items()],
        }
        a.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        log(f"wrote {a.json}")
    if failed:
        log("FAILED: some runs failed (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
