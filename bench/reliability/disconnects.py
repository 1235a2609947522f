#!/usr/bin/env python3
"""Client disconnects mid-stream must free everything: sequences, queue slots, KV blocks.

    python3 bench/reliability/disconnects.py --spawn smollm2 [--requests 1000] [--concurrency 16]
    python3 bench/reliability/disconnects.py --base-url http://127.0.0.1:8080 [--api-key KEY]

Sends --requests streaming requests (default 1000), --concurrency at a time (default 16),
alternating POST /v1/chat/completions and /v1/completions (--routes also takes ls-chat and
ls-completion, the Llama Stack routes), each with a random prompt (8-128 words) and
max_tokens 64-256; each client reads a random 1-3 SSE chunks (--min-chunks/--max-chunks;
--min-chunks 0 also drops requests still queued), then drops the connection: half with a
FIN (close), half with a RST (SO_LINGER 0). A request that finishes before its chunk count
is counted as "completed", not as an error.

Then polls GET /metrics until ferrollama_running_sequences, ferrollama_queue_depth and
ferrollama_kv_blocks_used are all 0 (--drain-timeout, default 30 s;
ferrollama_kv_blocks_used counts blocks referenced by sequences only; blocks kept by the
prefix cache without a reference are ferrollama_kv_blocks_cached, printed for information),
and checks GET /health and one normal completion. Prints the numbers; exits non-zero on a
leak (gauges not back to 0), any request error (non-200 status, connection failure before
the first chunk), a missing metric, or a failed final check.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import oaiclient as oc  # noqa: E402

GAUGES = ["ferrollama_running_sequences", "ferrollama_queue_depth", "ferrollama_kv_blocks_used"]
INFO = ["ferrollama_kv_blocks_cached", "ferrollama_kv_blocks_total", "ferrollama_requests_total",
        "ferrollama_prompt_tokens_total", "ferrollama_generated_tokens_total"]


def body_for(route: str, model: str, rng: random.Random) -> tuple[str, dict]:
    text = oc.make_prompt(rng, rng.randint(8, 128))
    mt = rng.randint(64, 256)
    if route == "chat":
        return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": text}],
                                        "max_tokens": mt, "stream": True, "temperature": 0.7, "seed": rng.randint(0, 1 << 30)}
    if route == "completions":
        return "/v1/completions", {"model": model, "prompt": text, "max_tokens": mt, "stream": True, "temperature": 0.7}
    sp = {"strategy": {"type": "top_p", "temperature": 0.7, "top_p": 0.95}, "max_tokens": mt}
    if route == "ls-chat":
        return "/v1/inference/chat-completion", {"model_id": model, "messages": [{"role": "user", "content": text}],
                                                 "sampling_params": sp, "stream": True}
    if route == "ls-completion":
        return "/v1/inference/completion", {"model_id": model, "content": text, "sampling_params": sp, "stream": True}
    raise SystemExit(f"unknown route {route!r}")


def gauges(m: dict) -> dict[str, float | None]:
    return {k: oc.metric(m, k) for k in GAUGES + INFO}


def fmt(g: dict) -> str:
    return ", ".join(f"{k.removeprefix('ferrollama_')}={'missing' if v is None else f'{v:g}'}" for k, v in g.items())


async def main_async(a) -> int:
    routes = [r for r in a.routes.split(",") if r]
    async with oc.target_from_args(a, "disconnects") as (t, _pid):
        model = a.model or await oc.model_id(t)
        try:
            before = gauges(await oc.metrics(t))
            print(f"before: {fmt(before)}")
        except oc.HttpError as e:
            print(f"disconnects: GET /metrics failed: {e}")
            return 1

        outcomes: Counter = Counter()
        errors: list[str] = []
        counter = iter(range(a.requests))

        async def one(i: int):
            rng = random.Random(f"{a.seed}-{i}")
            path, body = body_for(routes[i % len(routes)], model, rng)
            want = rng.randint(a.min_chunks, a.max_chunks)
            rst = i % 2 == 1
            try:
                s = await oc.Stream.open(t, path, body, timeout=a.timeout)
            except oc.HttpError as e:
                outcomes["error"] += 1
                errors.append(f"#{i} {path}: {e}")
                return
            try:
                if s.status != 200:
                    outcomes["error"] += 1
                    errors.append(f"#{i} {path}: HTTP {s.status} {(await s.read_rest())[:200]!r}")
                    return
                got = 0
                if want > 0:
                    async def read():
                        nonlocal got
                        async for ev in s.events():
                            if oc.event_error(ev):
                                raise oc.HttpError(f"error event {oc.event_error(ev)}")
                            got += 1
                            if got >= want:
                                return
                    await asyncio.wait_for(read(), a.timeout)
                outcomes["completed" if s.done else f"dropped-after-{got}-{'rst' if rst else 'fin'}"] += 1
            except (oc.HttpError, asyncio.TimeoutError, OSError) as e:
                outcomes["error"] += 1
                errors.append(f"#{i} {path}: {type(e).__name__} {e}")
            finally:
                s.close(rst=rst)

        async def worker():
            for i in counter:
                await one(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        wall = time.perf_counter() - t0
        print(f"sent {a.requests} requests in {wall:.1f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
        for e in errors[:20]:
            print("  error: " + e)

        # drain: the gauges must all come back to 0
        t1 = time.perf_counter()
        deadline = t1 + a.drain_timeout
        g: dict = {}
        drained = False
        while True:
            try:
                g = gauges(await oc.metrics(t))
            except oc.HttpError as e:
                g = {"error": str(e)}
            if all(g.get(k) == 0 for k in GAUGES):
                drained = True
                break
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.5)
        waited = time.perf_counter() - t1
        print(f"after {waited:.1f} s: {fmt(g) if 'error' not in g else g['error']}")
        missing = [k for k in GAUGES if g.get(k) is None]
        if missing:
            print(f"missing metrics: {', '.join(missing)}")

        final_ok = True
        try:
            h = await oc.request(t, "GET", "/health", timeout=10)
            r = await oc.request(t, "POST", "/v1/completions",
                                 {"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0}, timeout=60)
            final_ok = h.status == 200 and r.status == 200
            print(f"after: GET /health {h.status}, completion {r.status}")
        except oc.HttpError as e:
            final_ok = False
            print(f"after: server check failed: {e}")

        leak = not drained
        print(f"disconnects: {a.requests} requests, {outcomes['error']} errors,"
              f" {'drained' if drained else ('METRICS MISSING' if missing else 'LEAK')} (running={g.get(GAUGES[0])}, queue={g.get(GAUGES[1])},"
              f" kv_blocks_used={g.get(GAUGES[2])}, kv_blocks_cached={g.get('ferrollama_kv_blocks_cached')})")
        return 1 if leak or outcomes["error"] or not final_ok else 0


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    oc.add_target_args(ap)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--routes", default="chat,completions", help="comma-separated: chat,completions,ls-chat,ls-completion")
    ap.add_argument("--min-chunks", type=int, default=1)
    ap.add_argument("--max-chunks", type=int, default=3)
    ap.add_argument("--drain-timeout", type=float, default=30)
    ap.add_argument("--timeout", type=float, default=120, help="seconds per request")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sys.exit(asyncio.run(main_async(a)))


if __name__ == "__main__":
    main()
