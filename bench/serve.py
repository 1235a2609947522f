#!/usr/bin/env python3
"""Serving speed: `ferrollama serve` vs llama.cpp's `llama-server`, concurrent streaming clients.

    python3 bench/serve.py [--models smollm2,1b-q8_0] [--concurrency 1,4,16]
                           [--prompt-tokens 128] [--max-tokens 64] [--requests R]
                           [--shared-prefix N] [--no-llama] [--json OUT]

Standard library only (bench/oaiclient.py: raw HTTP/1.1 over asyncio, SSE parsing).
For every model x concurrency C, for each server in turn (alternating which goes first):

  1. start it on a free port, C sequence slots, --threads (default 2):
       ours   target/release/ferrollama serve -m MODEL --port P --threads T [--ours-args]
       llama  llama-server -m MODEL --port P -t T -tb T -np C -c C*CTX --cont-batching
              --no-webui [--llama-args]     (scripts/setup-llama-server builds it)
     and wait for GET /health = 200;
  2. warm up: one request, then one round of C concurrent requests (its time sets R, the
     requests per client, when --requests is not given: about --target-seconds per run,
     decided by the first server and reused for the second, so both serve the same
     requests);
  3. wait for the machine to be idle (as bench/engine.py: /proc/stat), then C clients each
     send R requests one after another: POST /v1/completions (or --endpoint chat) with
     "stream": true, "temperature": 0, "max_tokens": G, "ignore_eos": true and
     "stream_options": {"include_usage": true}; every prompt is --prompt-tokens random
     common words (about one token each) from a seeded RNG, different per request (so no
     prefix cache can skip them) but the same for both servers; --shared-prefix N makes
     the first N words the same fixed text in every request (a shared system prompt).

Per request: TTFT = send -> first SSE chunk with non-empty text; inter-token latency (ITL)
= gaps between consecutive chunks with text; tokens = usage.completion_tokens when the
server reports it, else the number of text chunks. Per run: aggregate tok/s = generated
tokens of all requests / wall time of the run; TTFT and ITL p50/p99 over all requests.
Other processes' CPU share during a run (total busy jiffies minus the server's and this
client's own) is reported; a run is measured again (--retries) when it exceeds 5%.

Exits non-zero if any request fails (HTTP error, error event, no [DONE]) or a server does
not start. Requests that generate a token count other than G are reported ("short").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402

ROOT = oc.ROOT


def log(msg: str):
    print(f"serve: {msg}", file=sys.stderr, flush=True)


# ======================================================================================
# idle machine (the approach of bench/engine.py)
# ======================================================================================
def busy_fraction(seconds: float) -> float:
    b0, t0 = oc.cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = oc.cpu_jiffies()
    return (b1 - b0) / max(1, t1 - t0)


def wait_idle(max_wait: float, threshold: float = 0.10, quiet: float = 5.0) -> float:
    """Wait (up to max_wait s) until the machine has been idle (busy <= threshold) for
    `quiet` seconds in a row; return the last busy fraction."""
    deadline = time.monotonic() + max_wait
    warned = False
    calm = 0.0
    while True:
        b = busy_fraction(1.0)
        calm = calm + 1.0 if b <= threshold else 0.0
        if calm >= quiet or time.monotonic() >= deadline:
            if b > threshold:
                log(f"WARNING: machine still {100 * b:.0f}% busy with other work; measuring anyway")
            return b
        if b > threshold and not warned:
            log(f"machine {100 * b:.0f}% busy with other processes; waiting up to {max_wait:.0f} s")
            warned = True


# ======================================================================================
# one request, one run
# ======================================================================================
class Workload:
    def __init__(self, a, model_name: str):
        self.a = a
        self.model_name = model_name
        rng = random.Random(f"shared-prefix-{a.seed}")
        self.prefix = [rng.choice(oc.WORDS) for _ in range(a.shared_prefix)]

    def body(self, key: str, max_tokens: int | None = None) -> dict:
        a = self.a
        rng = random.Random(f"{a.seed}-{key}")
        text = oc.make_prompt(rng, a.prompt_tokens, self.prefix)
        b = {"model": self.model_name, "max_tokens": max_tokens or a.max_tokens, "temperature": 0,
             "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
        if a.endpoint == "chat":
            b["messages"] = [{"role": "user", "content": text}]
        else:
            b["prompt"] = text
        return b

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.a.endpoint == "chat" else "/v1/completions"


async def one_request(t: oc.Target, path: str, body: dict, timeout: float) -> dict:
    rec = {"ok": False, "error": None, "ttft": None, "itl": [], "chunks": 0, "tokens": 0,
           "usage_completion": None, "usage_prompt": None}
    t0 = time.perf_counter()
    rec["start"] = t0
    try:
        s = await oc.Stream.open(t, path, body, timeout=timeout)
        try:
            if s.status != 200:
                rec["error"] = f"HTTP {s.status}: {(await s.read_rest())[:300].decode('utf-8', 'replace')}"
                return rec
            last = None

            async def consume():
                nonlocal last
                async for ev in s.events():
                    now = time.perf_counter()
                    err = oc.event_error(ev)
                    if err:
                        rec["error"] = f"error event: {err}"
                        return
                    if isinstance(ev, dict) and isinstance(ev.get("usage"), dict):
                        u = ev["usage"]
                        rec["usage_completion"] = u.get("completion_tokens", rec["usage_completion"])
                        rec["usage_prompt"] = u.get("prompt_tokens", rec["usage_prompt"])
                    if oc.event_text(ev):
                        rec["chunks"] += 1
                        if last is None:
                            rec["ttft"] = now - t0
                        else:
                            rec["itl"].append(now - last)
                        last = now
            await asyncio.wait_for(consume(), timeout)
            if rec["error"] is None and not s.done:
                rec["error"] = "stream ended without [DONE]"
        finally:
            s.close()
    except (oc.HttpError, asyncio.TimeoutError, OSError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    rec["end"] = time.perf_counter()
    rec["e2e"] = rec["end"] - t0
    uc = rec["usage_completion"]
    rec["tokens"] = uc if isinstance(uc, int) and uc > 0 else rec["chunks"]
    rec["ok"] = rec["error"] is None
    return rec


async def run_clients(t: oc.Target, wl: Workload, C: int, R: int, tag: str, timeout: float,
                      max_tokens: int | None = None, stagger: float = 0.0) -> tuple[list[dict], float]:
    """C closed-loop clients, R requests each. With `stagger` > 0, client i starts
    i * stagger / C seconds late, so arrivals are spread over one request's duration as
    with independent users (all at once, every wave stays in lockstep: a burst)."""
    recs: list[dict] = []

    async def client(i: int):
        if stagger > 0:
            await asyncio.sleep(i * stagger / C)
        for j in range(R):
            recs.append(await one_request(t, wl.path, wl.body(f"{tag}-{C}-{i}-{j}", max_tokens), timeout))

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(C)))
    return recs, time.perf_counter() - t0


def summarize(recs: list[dict], wall: float, G: int) -> dict:
    ok = [r for r in recs if r["ok"]]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [x for r in ok for x in r["itl"]]
    toks = sum(r["tokens"] for r in ok)
    pt = [r["usage_prompt"] for r in ok if isinstance(r["usage_prompt"], int)]
    ms = lambda v: None if v is None else 1e3 * v  # noqa: E731
    return {
        "requests": len(recs), "errors": len(recs) - len(ok),
        "error_samples": sorted({r["error"] for r in recs if r["error"]})[:5],
        "short": sum(1 for r in ok if r["tokens"] != G),
        "generated_tokens": toks, "wall_s": wall,
        "agg_tok_s": toks / wall if wall > 0 else 0.0, "req_s": len(ok) / wall if wall > 0 else 0.0,
        "ttft_ms": {p: ms(oc.percentile(ttft, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "ttft_ms_mean": ms(sum(ttft) / len(ttft)) if ttft else None,
        "itl_ms": {p: ms(oc.percentile(itl, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "itl_ms_mean": ms(sum(itl) / len(itl)) if itl else None,
        "e2e_ms": {p: ms(oc.percentile([r["e2e"] for r in ok], q)) for p, q in (("p50", 50), ("p99", 99))},
        "prompt_tokens_mean": sum(pt) / len(pt) if pt else None,
        "usage_reported": sum(1 for r in ok if r["usage_completion"] is not None),
        "tokens_per_chunk": toks / max(1, sum(r["chunks"] for r in ok)),
    }


# ======================================================================================
# servers
# ======================================================================================
def server_cmd(a, engine: str, model: Path, C: int, port: int) -> list[str]:
    extra = (a.ours_args if engine == "ours" else a.llama_args).replace("{C}", str(C))
    if engine == "ours":
        cmd = [a.server_bin, "serve", "-m", str(model), "--port", str(port), "--threads", str(a.threads)]
    else:
        cmd = [a.llama_server_bin, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(a.threads), "-tb", str(a.threads), "-np", str(C), "-c", str(C * a.ctx_per_slot),
               "--cont-batching", "--no-webui"]
    return cmd + shlex.split(extra)


async def bench_engine(a, engine: str, mkey: str, model: Path, C: int, R: int | None,
                       log_dir: Path) -> tuple[dict, int | None]:
    """Start the server, warm up, (decide R), measure. Returns (result, R)."""
    port = oc.free_port()
    cmd = server_cmd(a, engine, model, C, port)
    srv = oc.Server(cmd, port, log_dir / f"{mkey}-{engine}-c{C}.log", a.api_key)
    res: dict = {"engine": engine, "model": mkey, "concurrency": C, "cmd": cmd, "log": str(srv.log_path)}
    if a.wait_idle > 0:
        wait_idle(a.wait_idle, quiet=a.idle_seconds)
    log(f"{mkey} C={C} {engine}: {' '.join(cmd)}")
    srv.start()
    try:
        t0 = time.perf_counter()
        await srv.wait_ready(a.start_timeout)
        res["startup_s"] = time.perf_counter() - t0
        t = srv.target
        wl = Workload(a, await oc.model_id(t, default=mkey))

        ncpu = os.cpu_count() or 1
        hz = os.sysconf("SC_CLK_TCK")
        # warm-up: one request, then one concurrent round (sets R)
        if a.wait_idle > 0:
            wait_idle(a.wait_idle, quiet=a.idle_seconds)
        warm1, _ = await run_clients(t, wl, 1, 1, "warm1", a.timeout)
        j0, s0, c0 = oc.cpu_jiffies(), oc.proc_cpu_seconds(srv.pid), time.process_time()
        warm, round_s = await run_clients(t, wl, C, 1, "warmC", a.timeout)
        j1, s1, c1 = oc.cpu_jiffies(), oc.proc_cpu_seconds(srv.pid), time.process_time()
        others = max(0.0, ((j1[0] - j0[0]) / hz - (s1 - s0) - (c1 - c0)) / (round_s * ncpu))
        bad = [r["error"] for r in warm1 + warm if not r["ok"]]
        if bad:
            res["error"] = f"warm-up failed: {bad[0]}"
            log(f"  {res['error']}")
            return res, R
        res["warmup_round_s"] = round_s
        if R is None:
            # other load during the warm-up stretches it: discount its share
            eff = round_s * max(0.2, 1.0 - others)
            R = max(1, -(-8 // C), round(a.target_seconds / max(eff, 1e-3)))
            R = min(R, a.max_requests)
            log(f"  warm-up round of {C} request(s): {round_s:.2f} s (other processes {100 * others:.0f}%)"
                f" -> {R} request(s) per client")
        res["requests_per_client"] = R

        for attempt in range(1 + a.retries):
            if a.wait_idle > 0:
                wait_idle(a.wait_idle, quiet=a.idle_seconds)
            j0, s0, c0 = oc.cpu_jiffies(), oc.proc_cpu_seconds(srv.pid), time.process_time()
            # a repeat gets new prompts: the server may have cached the first attempt's
            stagger = round_s if a.arrivals == "staggered" else 0.0
            recs, wall = await run_clients(t, wl, C, R, f"run{attempt}", a.timeout, stagger=stagger)
            res["arrivals"] = a.arrivals
            res["stagger_s"] = stagger
            j1, s1, c1 = oc.cpu_jiffies(), oc.proc_cpu_seconds(srv.pid), time.process_time()
            busy = (j1[0] - j0[0]) / hz
            res.update(summarize(recs, wall, a.max_tokens))
            res["server_cpu_share"] = (s1 - s0) / (wall * ncpu)
            res["client_cpu_share"] = (c1 - c0) / (wall * ncpu)
            res["other_cpu_share"] = max(0.0, (busy - (s1 - s0) - (c1 - c0)) / (wall * ncpu))
            res["attempts"] = attempt + 1
            log(f"  {res['agg_tok_s']:.1f} tok/s over {wall:.1f} s ({res['requests']} requests,"
                f" {res['errors']} errors, {res['short']} short), TTFT p50 {_f(res['ttft_ms']['p50'])} ms,"
                f" ITL p50 {_f(res['itl_ms']['p50'])} ms; CPU: server {100 * res['server_cpu_share']:.0f}%,"
                f" client {100 * res['client_cpu_share']:.0f}%, other {100 * res['other_cpu_share']:.0f}%")
            if res["errors"] or res["other_cpu_share"] <= 0.05 or attempt == a.retries:
                break
            log("  other processes used >5% of the CPUs during the run; measuring again")
        for e in res.get("error_samples", []):
            log(f"  error: {e}")
        res["peak_rss_bytes"] = oc.rss_bytes(srv.pid, "VmHWM")
    except oc.HttpError as e:
        res["error"] = str(e)
        log(f"  {engine} failed: {e}")
    finally:
        rc = srv.stop()
        res["exit_code"] = rc
    return res, R


def _f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def _pp(d: dict | None, key: str) -> str:
    if not d or d.get("error") or key not in d:
        return "-"
    v = d[key]
    return f"{_f(v['p50'], 0)}/{_f(v['p99'], 0)}"


def llama_server_version(binary: str) -> str:
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        for line in (r.stdout + r.stderr).splitlines():
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "?"


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,1b-q8_0",
                    help=f"comma-separated: {','.join(oc.MODELS)} or paths to .gguf files")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in words (~tokens)")
    ap.add_argument("--shared-prefix", type=int, default=0,
                    help="the first N prompt words are the same in every request (shared system prompt)")
    ap.add_argument("--max-tokens", "--gen-tokens", type=int, default=64, help="generated tokens per request")
    ap.add_argument("--requests", type=int, help="requests per client (default: from the warm-up, ~--target-seconds per run)")
    ap.add_argument("--target-seconds", type=float, default=25.0)
    ap.add_argument("--max-requests", type=int, default=1000, help="cap on the automatic requests per client")
    ap.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    ap.add_argument("--arrivals", choices=["staggered", "burst"], default="staggered",
                    help="staggered: client i starts i/C of a request's duration late (independent users);"
                         " burst: all clients start together and stay in lockstep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx-per-slot", type=int,
                    help="llama-server context per slot (default: 2*prompt + max-tokens + 64, rounded up to 256)")
    ap.add_argument("--no-llama", action="store_true", help="only ferrollama")
    ap.add_argument("--no-ours", action="store_true", help="only llama-server")
    ap.add_argument("--server-bin", default=str(oc.FERRO), help="ferrollama binary")
    ap.add_argument("--llama-server-bin", help="llama-server binary (default: scripts/setup-llama-server)")
    ap.add_argument("--ours-args", default="", help="extra `ferrollama serve` arguments; {C} = concurrency")
    ap.add_argument("--llama-args", default="", help="extra llama-server arguments; {C} = concurrency")
    ap.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request")
    ap.add_argument("--start-timeout", type=float, default=300, help="seconds for a server to become healthy")
    ap.add_argument("--wait-idle", type=float, default=180,
                    help="before each server start and run, wait up to this many seconds for other load to go away (0: don't)")
    ap.add_argument("--idle-seconds", type=float, default=5,
                    help="the machine counts as idle after this many seconds in a row under 10%% busy")
    ap.add_argument("--retries", type=int, default=1, help="re-run when other processes used >5%% of the CPUs")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release -p ferrollama`")
    ap.add_argument("--json", type=Path, help="write every number here")
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    conc = [int(c) for c in a.concurrency.split(",") if c]
    if a.ctx_per_slot is None:
        a.ctx_per_slot = -(-(2 * a.prompt_tokens + a.max_tokens + 64) // 256) * 256
    if a.shared_prefix > a.prompt_tokens:
        sys.exit("--shared-prefix must not exceed --prompt-tokens")
    engines = [e for e, off in (("llama", a.no_llama), ("ours", a.no_ours)) if not off]
    if not engines:
        sys.exit("nothing to run (--no-llama and --no-ours)")

    if "ours" in engines and not a.no_build and a.server_bin == str(oc.FERRO):
        log("cargo build --release -p ferrollama")
        if subprocess.run(["cargo", "build", "--release", "-p", "ferrollama"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release -p ferrollama failed")
    if "llama" in engines and not a.llama_server_bin:
        r = subprocess.run([str(ROOT / "scripts" / "setup-llama-server")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if r.returncode != 0:
            sys.exit("scripts/setup-llama-server failed")
        a.llama_server_bin = r.stdout.strip().splitlines()[-1]
    paths = {m: oc.resolve_model(m, Path(a.server_bin)) for m in models}
    log_dir = oc.cache_dir() / "bench" / "serve-logs" / time.strftime("%Y%m%d-%H%M%S")
    log(f"server logs in {log_dir}")

    results: list[dict] = []
    failed = False
    for m in models:
        for ci, C in enumerate(conc):
            R = a.requests
            order = engines if ci % 2 == 0 else engines[::-1]
            for eng in order:
                res, R = asyncio.run(bench_engine(a, eng, m, paths[m], C, R, log_dir))
                results.append(res)
                if res.get("error") or res.get("errors"):
                    failed = True

    # ---- report ----
    lver = llama_server_version(a.llama_server_bin) if "llama" in engines else None
    print()
    print(f"ferrollama serve vs llama-server {lver or '(not run)'} on {oc.cpu_name()}, {os.cpu_count()} cores,"
          f" --threads {a.threads}")
    print(f"POST /v1/{'chat/completions' if a.endpoint == 'chat' else 'completions'}, stream, prompt"
          f" {a.prompt_tokens} words{f' ({a.shared_prefix} shared)' if a.shared_prefix else ''},"
          f" {a.max_tokens} tokens generated (ignore_eos), temperature 0; times in ms (p50/p99)")
    by = {(r["model"], r["engine"], r["concurrency"]): r for r in results}
    for m in models:
        pts = [r.get("prompt_tokens_mean") for r in results if r["model"] == m and r.get("prompt_tokens_mean")]
        print()
        print(f"{m} ({paths[m].name}); prompt tokens per request (usage): {_f(pts[0], 0) if pts else '?'}")
        hdr = (f"{'C':>3} {'R':>4} | {'ours tok/s':>10} {'llama tok/s':>11} {'ratio':>6} | {'ours TTFT':>11}"
               f" {'llama TTFT':>11} | {'ours ITL':>9} {'llama ITL':>9} | {'err o/l':>7} {'busy% o/l':>9}")
        print(hdr)
        print("-" * len(hdr))
        for C in conc:
            o, ll = by.get((m, "ours", C)), by.get((m, "llama", C))
            ot = o.get("agg_tok_s") if o and not o.get("error") else None
            lt = ll.get("agg_tok_s") if ll and not ll.get("error") else None
            ratio = ot / lt if ot and lt else None
            R = (o or ll or {}).get("requests_per_client", "-")
            err = lambda d: "-" if not d else ("X" if d.get("error") else str(d.get("errors", 0)))  # noqa: E731
            busy = lambda d: "-" if not d or "other_cpu_share" not in d else f"{100 * d['other_cpu_share']:.0f}"  # noqa: E731
            print(f"{C:>3} {R:>4} | {_f(ot):>10} {_f(lt):>11} {_f(ratio, 2):>6} | {_pp(o, 'ttft_ms'):>11}"
                  f" {_pp(ll, 'ttft_ms'):>11} | {_pp(o, 'itl_ms'):>9} {_pp(ll, 'itl_ms'):>9} |"
                  f" {err(o) + '/' + err(ll):>7} {busy(o) + '/' + busy(ll):>9}")
        lo, hi = min(conc), max(conc)
        if lo != hi:
            parts = []
            for eng in ("ours", "llama"):
                x, y = by.get((m, eng, hi)), by.get((m, eng, lo))
                if x and y and x.get("agg_tok_s") and y.get("agg_tok_s") and not x.get("error") and not y.get("error"):
                    parts.append(f"{eng} {hi}-stream / {lo}-stream: {x['agg_tok_s'] / y['agg_tok_s']:.2f}x")
            if parts:
                print("scaling: " + "; ".join(parts))
        shorts = [f"{r['engine']} C={r['concurrency']}: {r['short']}" for r in results
                  if r["model"] == m and r.get("short")]
        if shorts:
            print(f"WARNING: requests that did not generate exactly {a.max_tokens} tokens: " + ", ".join(shorts))
    print()
    print("ratio = ours / llama; tok/s = generated tokens of all requests / wall time of the run;"
          " TTFT from sending to the first text chunk; ITL = gaps between text chunks;"
          " err = failed requests (X: server failed); busy% = CPU share of other processes during the run")

    if a.json:
        doc = {
            "machine": {"cpu": oc.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
            "llama_server": {"bin": a.llama_server_bin, "version": lver},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "models": {m: str(p) for m, p in paths.items()},
            "results": results,
        }
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {a.json}")
    if failed:
        log("FAILED: some requests or servers failed (see above)")
        sys.exit(1)


if __name__ == "__main__":
    main()
