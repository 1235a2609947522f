#!/usr/bin/env python3
"""What shields cost a served chat: `ferrollama serve` without shields, with a Llama Guard
input shield, and with input + streaming output shields, at 1 and 16 streams; and the
guard check's own latency with a warm prefix cache.

    python3 bench/guard.py [--model 1b-q4_k_m] [--guard MODEL] [--concurrency 1,16]
                           [--prompt-tokens 128] [--max-tokens 64] [--moderate-every 32]
                           [--checks 20] [--json OUT]

The chat model defaults to the Llama-3.2-1B-shaped model of bench/make_1b.py; the guard
is the same file under another name (a symlink `guard-<model>.gguf` in the cache), so it
is a second 1B model with its own weights and KV, as Llama-Guard-3-1B would be (random
weights: the verdicts mean nothing, the cost is the real one). The shields run with
`--shield-action log` (audit mode: every check runs and output is held back exactly as when
blocking, but a violation is only logged), so that the random guard's verdicts do not turn
requests into refusals: the table is the cost of requests that pass. Standard library only.

Every scenario reuses bench/serve.py's measurement (start the server, warm up, wait for an
idle machine, C closed-loop streaming clients on POST /v1/chat/completions, prompts of
--prompt-tokens random words, exactly --max-tokens generated with ignore_eos): TTFT is
send -> first text chunk, so with an output shield it includes the first moderation
window, which is held back until the shield passes it. Aggregate tok/s = generated tokens /
wall time.

Guard latency: a server with the guard only; --checks POST /v1/safety/run-shield calls,
each a new user message of ~--check-tokens words (different every time, so only the
guard's fixed prompt header can come from the prefix cache); the first call (cold cache)
is reported apart from the rest.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402
import serve as sv  # noqa: E402

ROOT = oc.ROOT
SCENARIOS = ("none", "input", "input+output")


def log(msg: str):
    print(f"guard: {msg}", file=sys.stderr, flush=True)


def serve_args(a, guard: Path, scenario: str) -> str:
    gid = guard.stem
    args = {
        "none": "",
        "input": f"--guard {guard} --input-shield {gid} --shield-action log",
        "input+output": f"--guard {guard} --input-shield {gid} --output-shield {gid} --shield-action log"
                        f" --moderate-every {a.moderate_every} --moderate-at {a.moderate_at}",
    }[scenario]
    return args


async def guard_latency(a, model: Path, guard: Path, log_dir: Path) -> dict:
    port = oc.free_port()
    cmd = [a.server_bin, "serve", "-m", str(model), "--guard", str(guard), "--port", str(port),
           "--threads", str(a.threads)]
    srv = oc.Server(cmd, port, log_dir / "guard-latency.log")
    res: dict = {"cmd": cmd}
    sv.wait_idle(a.wait_idle, quiet=a.idle_seconds)
    srv.start()
    try:
        await srv.wait_ready(a.start_timeout)
        rng = random.Random(f"guard-{a.seed}")
        times = []
        for i in range(a.checks + 1):
            text = oc.make_prompt(rng, a.check_tokens)
            body = {"shield_id": guard.stem, "messages": [{"role": "user", "content": text}], "params": {}}
            t0 = time.perf_counter()
            r = await oc.request(srv.target, "POST", "/v1/safety/run-shield", body, timeout=a.timeout)
            dt = time.perf_counter() - t0
            if r.status != 200:
                raise oc.HttpError(f"run-shield answered {r.status}: {r.text()[:300]}")
            times.append(dt)
        res["cold_ms"] = 1e3 * times[0]
        warm = times[1:]
        res["warm_ms"] = {"p50": 1e3 * oc.percentile(warm, 50), "p90": 1e3 * oc.percentile(warm, 90),
                          "min": 1e3 * min(warm), "n": len(warm)}
        log(f"guard check: cold {res['cold_ms']:.0f} ms, warm p50 {res['warm_ms']['p50']:.0f} ms")
    except oc.HttpError as e:
        res["error"] = str(e)
        log(f"guard latency failed: {e}")
    finally:
        srv.stop()
    return res


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b-q4_k_m", help="chat model: a bench key (see bench/README.md) or a .gguf")
    ap.add_argument("--guard", help="guard model .gguf (default: the chat model's file, linked as guard-<model>.gguf)")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--moderate-every", type=int, default=32)
    ap.add_argument("--moderate-at", choices=["sentences", "tokens"], default="sentences")
    ap.add_argument("--requests", type=int, help="requests per client (default: ~--target-seconds per run)")
    ap.add_argument("--target-seconds", type=float, default=25.0)
    ap.add_argument("--checks", type=int, default=20, help="guard-latency calls after the cold one")
    ap.add_argument("--check-tokens", type=int, default=32, help="words per guard-latency message")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--server-bin", default=str(oc.FERRO))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--start-timeout", type=float, default=300)
    ap.add_argument("--wait-idle", type=float, default=180)
    ap.add_argument("--idle-seconds", type=float, default=5)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    # what bench/serve.py's measurement reads
    a.endpoint, a.arrivals, a.shared_prefix, a.api_key = "chat", "staggered", 0, None
    a.max_requests, a.llama_args = 1000, ""
    conc = [int(c) for c in a.concurrency.split(",") if c]
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}: use {', '.join(SCENARIOS)}")

    if not a.no_build and a.server_bin == str(oc.FERRO):
        log("cargo build --release -p ferrollama")
        if subprocess.run(["cargo", "build", "--release", "-p", "ferrollama"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release -p ferrollama failed")
    model = oc.resolve_model(a.model, Path(a.server_bin))
    if a.guard:
        guard = Path(a.guard).resolve()
    else:
        # the same weights under another name: served as a second model
        guard = oc.cache_dir() / "bench-models" / f"guard-{model.stem}.gguf"
        if guard.is_symlink() and guard.resolve() != model.resolve():
            guard.unlink()
        if not guard.exists():
            guard.parent.mkdir(parents=True, exist_ok=True)
            guard.symlink_to(model)
    log_dir = oc.cache_dir() / "bench" / "guard-logs" / time.strftime("%Y%m%d-%H%M%S")
    log(f"server logs in {log_dir}; chat {model}, guard {guard}")

    results: list[dict] = []
    failed = False
    for C in conc:
        R = a.requests
        for sc in scenarios:
            a.ours_args = serve_args(a, guard, sc)
            res, R = asyncio.run(sv.bench_engine(a, "ours", f"{a.model}-{sc}", model, C, R, log_dir))
            res["scenario"] = sc
            results.append(res)
            failed |= bool(res.get("error") or res.get("errors"))
    lat = asyncio.run(guard_latency(a, model, guard, log_dir))
    failed |= bool(lat.get("error"))

    print()
    print(f"ferrollama serve with shields on {oc.cpu_name()}, {os.cpu_count()} cores, --threads {a.threads}")
    print(f"chat {model.name}, guard {guard.name} (Llama Guard prompt, 1B-shaped); POST /v1/chat/completions,"
          f" stream, prompt {a.prompt_tokens} words, {a.max_tokens} tokens (ignore_eos), temperature 0;"
          f" output moderation every {a.moderate_every} tokens or at sentence ends ({a.moderate_at})")
    print()
    hdr = f"{'C':>3} {'shields':<13} | {'tok/s':>7} {'vs none':>7} | {'TTFT p50':>8} {'vs none':>7} {'TTFT p99':>8} | {'ITL p50':>7} | err"
    print(hdr)
    print("-" * len(hdr))
    by = {(r["concurrency"], r["scenario"]): r for r in results}
    for C in conc:
        base = by.get((C, "none"))
        for sc in scenarios:
            r = by.get((C, sc))
            if not r or r.get("error"):
                print(f"{C:>3} {sc:<13} | failed: {r.get('error') if r else '?'}")
                continue
            tps, t50 = r["agg_tok_s"], r["ttft_ms"]["p50"]
            rel = lambda x, y: "-" if not x or not y else f"{x / y:.2f}x"  # noqa: E731
            b_ok = base and not base.get("error")
            print(f"{C:>3} {sc:<13} | {tps:>7.1f} {rel(tps, base['agg_tok_s'] if b_ok else None):>7} |"
                  f" {sv._f(t50, 0):>8} {rel(t50, base['ttft_ms']['p50'] if b_ok else None):>7}"
                  f" {sv._f(r['ttft_ms']['p99'], 0):>8} | {sv._f(r['itl_ms']['p50'], 1):>7} | {r['errors']}")
    print()
    if lat.get("error"):
        print(f"guard check latency: failed: {lat['error']}")
    else:
        w = lat["warm_ms"]
        print(f"guard check (POST /v1/safety/run-shield, one new user message of {a.check_tokens} words):"
              f" cold {lat['cold_ms']:.0f} ms; warm prefix cache p50 {w['p50']:.0f} ms, p90 {w['p90']:.0f} ms,"
              f" min {w['min']:.0f} ms over {w['n']} calls")
    print("goals (issue 12): input shield <= 1.25x TTFT p50 at 1 stream; streaming output moderation"
          " >= 0.85x aggregate tok/s at 16 streams")
    if a.json:
        doc = {"machine": {"cpu": oc.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               "model": str(model), "guard": str(guard), "results": results, "guard_latency": lat}
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {a.json}")
    if failed:
        log("FAILED: some requests or servers failed (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
