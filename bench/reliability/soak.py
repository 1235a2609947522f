#!/usr/bin/env python3
"""Soak: 16 streaming clients for 10 minutes; no errors, no memory growth.

    python3 bench/reliability/soak.py --spawn smollm2 [--minutes 10] [--concurrency 16]
    python3 bench/reliability/soak.py --base-url http://127.0.0.1:8080 [--pid PID] [--api-key KEY]

--concurrency clients (default 16) loop for --minutes (default 10), each sending streaming
requests one after another, cycling through POST /v1/chat/completions and /v1/completions
(--routes also takes ls-chat, ls-completion) with random prompts (16-256 words), max_tokens
16-128 and temperature 0-1, reading every stream to `[DONE]`. A request is an error if its
status is not 200, the stream carries an error event, ends without [DONE], or generates no
text.

The server's resident set (VmRSS of /proc/<pid>/status) is sampled every --interval
seconds (default 5): the pid is the spawned server's with --spawn, else --pid, else the
process listening on the --base-url port (local servers only). Reported: RSS at
--baseline-at seconds (default 60, after warm-up; at most half the run) and at the end,
growth %, peak, requests, generated text chunks, errors, and a line per minute. Exits
non-zero if RSS grew by --max-growth % (default 5) or more, or on any error.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import oaiclient as oc  # noqa: E402


def body_for(route: str, model: str, rng: random.Random) -> tuple[str, dict]:
    text = oc.make_prompt(rng, rng.randint(16, 256))
    mt = rng.randint(16, 128)
    temp = round(rng.random(), 2)
    if route == "chat":
        return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": text}],
                                        "max_tokens": mt, "stream": True, "temperature": temp, "seed": rng.randint(0, 1 << 30)}
    if route == "completions":
        return "/v1/completions", {"model": model, "prompt": text, "max_tokens": mt, "stream": True, "temperature": temp}
    strategy = {"type": "greedy"} if temp < 0.1 else {"type": "top_p", "temperature": temp, "top_p": 0.95}
    sp = {"strategy": strategy, "max_tokens": mt}
    if route == "ls-chat":
        return "/v1/inference/chat-completion", {"model_id": model, "messages": [{"role": "user", "content": text}],
                                                 "sampling_params": sp, "stream": True}
    if route == "ls-completion":
        return "/v1/inference/completion", {"model_id": model, "content": text, "sampling_params": sp, "stream": True}
    raise SystemExit(f"unknown route {route!r}")


async def main_async(a) -> int:
    routes = [r for r in a.routes.split(",") if r]
    async with oc.target_from_args(a, "soak") as (t, pid):
        if pid is None or oc.rss_bytes(pid) is None:
            print("soak: cannot read the server's RSS: give --pid (or --spawn)", file=sys.stderr)
            return 2
        model = a.model or await oc.model_id(t)
        duration = a.minutes * 60
        baseline_at = min(a.baseline_at, duration / 2)
        print(f"soak: {a.concurrency} clients for {a.minutes:g} min against {t.url} (pid {pid}, model {model!r});"
              f" RSS baseline at {baseline_at:.0f} s", flush=True)

        stats = {"requests": 0, "errors": 0, "chunks": 0}
        errors: list[str] = []
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        end = t0 + duration

        async def client(ci: int):
            rng = random.Random(f"{a.seed}-{ci}")
            k = 0
            while time.monotonic() < end:
                path, body = body_for(routes[(ci + k) % len(routes)], model, rng)
                k += 1
                err = None
                chunks = 0
                try:
                    s = await oc.Stream.open(t, path, body, timeout=a.timeout)
                    try:
                        if s.status != 200:
                            err = f"HTTP {s.status} {(await s.read_rest())[:200]!r}"
                        else:
                            async def read():
                                nonlocal chunks, err
                                async for ev in s.events():
                                    if oc.event_error(ev):
                                        err = f"error event {oc.event_error(ev)}"
                                        return
                                    if oc.event_text(ev):
                                        chunks += 1
                            await asyncio.wait_for(read(), a.timeout)
                            if err is None and not s.done:
                                err = "stream ended without [DONE]"
                            if err is None and chunks == 0:
                                err = "no text generated"
                    finally:
                        s.close()
                except (oc.HttpError, asyncio.TimeoutError, OSError) as e:
                    err = f"{type(e).__name__} {e}"
                stats["requests"] += 1
                stats["chunks"] += chunks
                if err:
                    stats["errors"] += 1
                    if len(errors) < 50:
                        errors.append(f"{time.monotonic() - t0:.0f}s {path}: {err}")
                    await asyncio.sleep(0.5)  # don't spin on a dead server

        async def sampler():
            last_report = 0
            while True:
                now = time.monotonic()
                rss = oc.rss_bytes(pid)
                if rss is None:
                    print("soak: the server process is gone", flush=True)
                    return
                samples.append((now - t0, rss))
                minute = int((now - t0) // 60)
                if minute > last_report:
                    last_report = minute
                    print(f"  {minute:>3} min: RSS {rss / 2**20:.1f} MiB, {stats['requests']} requests,"
                          f" {stats['errors']} errors", flush=True)
                if now >= end:
                    return
                await asyncio.sleep(min(a.interval, max(0.0, end - now)))

        smp = asyncio.create_task(sampler())
        await asyncio.gather(*(client(i) for i in range(a.concurrency)))
        await smp

        if not samples:
            print("soak: no RSS samples")
            return 1
        base = next((r for ts, r in samples if ts >= baseline_at), samples[-1][1])
        final = samples[-1][1]
        peak = max(r for _, r in samples)
        growth = 100.0 * (final - base) / base
        for e in errors[:20]:
            print("  error: " + e)
        try:
            m = await oc.metrics(t)
            parts = [f"{k.removeprefix('ferrollama_')}={oc.metric(m, k):g}" for k in
                     ("ferrollama_running_sequences", "ferrollama_queue_depth", "ferrollama_kv_blocks_used",
                      "ferrollama_kv_blocks_cached") if oc.metric(m, k) is not None]
            if parts:
                print("metrics at the end: " + ", ".join(parts))
        except oc.HttpError:
            pass
        print(f"soak: {a.minutes:g} min, {stats['requests']} requests, {stats['errors']} errors,"
              f" {stats['chunks']} text chunks; RSS {base / 2**20:.1f} MiB at {baseline_at:.0f} s ->"
              f" {final / 2**20:.1f} MiB at the end ({growth:+.2f}%), peak {peak / 2**20:.1f} MiB")
        bad = growth >= a.max_growth or stats["errors"] > 0
        if growth >= a.max_growth:
            print(f"FAIL: RSS grew {growth:.2f}% (limit {a.max_growth:g}%)")
        return 1 if bad else 0


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    oc.add_target_args(ap)
    ap.add_argument("--pid", type=int, help="server pid for RSS sampling (default: spawned / listening process)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--routes", default="chat,completions", help="comma-separated: chat,completions,ls-chat,ls-completion")
    ap.add_argument("--interval", type=float, default=5, help="RSS sampling interval, seconds")
    ap.add_argument("--baseline-at", type=float, default=60, help="seconds after the start of the RSS baseline")
    ap.add_argument("--max-growth", type=float, default=5, help="percent")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sys.exit(asyncio.run(main_async(a)))


if __name__ == "__main__":
    main()
