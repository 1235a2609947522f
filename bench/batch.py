#!/usr/bin/env python3
"""Offline batch throughput: `ferrollama batch` vs the same chat requests sent to
llama.cpp's `llama-server -np 16` (continuous batching) by 16 concurrent clients.

    python3 bench/batch.py [--model smollm2] [--requests 500] [--max-tokens 128]
                           [--threads 2] [--parallel 16] [--ignore-eos] [--no-build]
                           [--batch-args "..."] [--json OUT]

Standard library only. The workload: --requests chat requests, each a fixed system
message plus one user message made from a few dozen templates and a noun list by a
seeded RNG (so every prompt differs and both sides get the same ones), "temperature": 0,
"max_tokens": --max-tokens (generation stops at the end-of-turn token unless
--ignore-eos). An explicit system message is sent because SmolLM2's Jinja template adds a
default one when there is none, which llama-server's built-in chatml template does not.

  ours   target/release/ferrollama batch IN.jsonl OUT.jsonl -m MODEL -t T --json
         [--batch-args], timed from process start to exit (model loading included; the
         time of the same command on a 1-request file with max_tokens 1 is reported as
         "startup" next to it);
  llama  (the first --llama-requests only, when given)
         llama-server -m MODEL -t T -tb T -np P -c P*CTX --cont-batching --no-webui,
         started and warmed up (one request) first, then P client threads each take the
         next request from the shared list and POST it to /v1/chat/completions
         (non-streaming), until all are answered; timed from the first send to the last
         answer.

Reported per side: wall time, requests answered, total completion tokens (the servers'
`usage.completion_tokens`), total prompt tokens, **tok/s = completion tokens / wall**, and
the CPU share other processes used meanwhile (busy jiffies minus the measured processes'
own); then ours/llama of tok/s, how many requests got the same completion-token count and
the same text on both sides (greedy on both; quantized kernels differ in rounding, so
long generations can diverge). Which side runs first: ours (--llama-first swaps).
Exits non-zero if any request fails on either side.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402

ROOT = oc.ROOT


def log(msg: str):
    print(f"batch: {msg}", file=sys.stderr, flush=True)


SYSTEM = "You are a helpful assistant. Answer briefly and clearly."

NOUNS = """river mountain garden forest village market school library hospital kitchen
bicycle train ship airplane bridge castle island desert ocean lake volcano cloud storm rainbow
planet moon star comet robot computer telephone camera painting song poem story letter map
clock candle lamp window door key book pencil teacher doctor farmer sailor painter musician
scientist baker chef dog cat horse bird fish whale elephant lion bee tree flower apple bread
cheese coffee tea soup rice honey salt sugar winter summer autumn spring morning night
festival holiday birthday game team city country museum park zoo friend family neighbor
child king queen dragon wizard knight""".split()

TEMPLATES = [
    "Write a short poem about a {a} and a {b}.",
    "Explain how a {a} is different from a {b}.",
    "Give three tips for someone who wants to learn about the {a}.",
    "Tell a short story about a {a} who finds a {b} near the {c}.",
    "What is a {a} used for? Answer in a few sentences.",
    "Describe a {a} to a five-year-old child.",
    "List five words that you associate with a {a}.",
    "Write a friendly note to a {a} about the {b} in the {c}.",
    "Why might a {a} be important to a {b}?",
    "Invent a name for a {a} that lives in a {b}, and explain the name.",
    "Compare a {a}, a {b} and a {c} in one paragraph.",
    "Write a haiku about the {a} at night.",
    "What questions would a {a} ask a {b}?",
    "Summarize the life of a {a} in three sentences.",
    "Give a recipe idea that uses {a} and {b}.",
    "Write the opening line of a novel about a {a}.",
    "How would you draw a {a}? Describe the steps.",
    "What would happen if every {a} could talk to a {b}?",
    "Write a riddle whose answer is a {a}.",
    "Plan a day trip to the {a} with a {b}.",
]


def make_requests(n: int, max_tokens: int, seed: int, ignore_eos: bool) -> list[dict]:
    rng = random.Random(f"bench-batch-{seed}")
    reqs = []
    for i in range(n):
        t = rng.choice(TEMPLATES)
        a, b, c = rng.sample(NOUNS, 3)
        body = {"messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": t.format(a=a, b=b, c=c)}],
                "max_tokens": max_tokens, "temperature": 0}
        if ignore_eos:
            body["ignore_eos"] = True
        reqs.append({"custom_id": f"r{i:04d}", "method": "POST", "url": "/v1/chat/completions", "body": body})
    return reqs


def answer_of(body: dict) -> tuple[int, int, str, str]:
    """(completion tokens, prompt tokens, text, finish_reason) of a chat completion body."""
    u = body.get("usage") or {}
    ch = (body.get("choices") or [{}])[0]
    return (int(u.get("completion_tokens") or 0), int(u.get("prompt_tokens") or 0),
            (ch.get("message") or {}).get("content") or "", ch.get("finish_reason") or "")


def run_measured(cmd: list[str], timeout: float) -> tuple[int, str, str, float, float, float]:
    """(rc, stdout, stderr, wall s, own CPU s, other processes' CPU share) of cmd."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        j0 = oc.cpu_jiffies()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t
        j1 = oc.cpu_jiffies()
        hz = os.sysconf("SC_CLK_TCK")
        own = ru.ru_utime + ru.ru_stime
        others = ((j1[0] - j0[0]) / hz - own) / max(1e-9, wall * (os.cpu_count() or 1))
        fo.seek(0)
        fe.seek(0)
        return (os.waitstatus_to_exitcode(status), fo.read().decode("utf-8", "replace"),
                fe.read().decode("utf-8", "replace"), wall, own, others)


def run_ours(a, model: Path, reqs: list[dict], work: Path) -> dict:
    inp, out = work / "in.jsonl", work / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    base = [a.server_bin, "batch"]
    opts = ["-m", str(model), "-t", str(a.threads), "--json"] + shlex.split(a.batch_args)
    # startup: the same command on one request with max_tokens 1
    one = dict(reqs[0], body=dict(reqs[0]["body"], max_tokens=1))
    (work / "one.jsonl").write_text(json.dumps(one) + "\n")
    rc, so, se, startup, _, _ = run_measured(base + [str(work / "one.jsonl"), str(work / "one-out.jsonl")] + opts,
                                             a.timeout)
    if rc != 0:
        raise SystemExit(f"ferrollama batch (1 request) failed with {rc}:\n{se[-3000:]}")
    cmd = base + [str(inp), str(out)] + opts
    log("ours: " + " ".join(cmd))
    rc, so, se, wall, own, others = run_measured(cmd, a.timeout)
    if rc != 0:
        raise SystemExit(f"ferrollama batch failed with {rc}:\n{se[-3000:]}")
    answers: dict[str, tuple] = {}
    errors = 0
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        resp = rec.get("response") or {}
        if resp.get("status_code") != 200:
            errors += 1
            continue
        answers[rec["custom_id"]] = answer_of(resp.get("body") or {})
    errf = work / "out.errors.jsonl"
    if errf.exists():
        errors += sum(1 for _ in errf.read_text().splitlines())
    return {"cmd": cmd, "wall_s": wall, "startup_s": startup, "cpu_s": own, "others_busy": others,
            "summary": oc_last_json(so), "answers": answers, "errors": errors}


def oc_last_json(s: str) -> dict | None:
    for line in reversed(s.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def post_json(port: int, path: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def run_llama(a, model: Path, reqs: list[dict], log_dir: Path) -> dict:
    import asyncio
    port = oc.free_port()
    ctx = a.parallel * a.ctx_per_slot
    cmd = [a.llama_server_bin, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
           "-t", str(a.threads), "-tb", str(a.threads), "-np", str(a.parallel), "-c", str(ctx),
           "--cont-batching", "--no-webui"] + shlex.split(a.llama_args)
    srv = oc.Server(cmd, port, log_dir / "llama-server.log")
    log("llama: " + " ".join(cmd))
    srv.start()
    try:
        asyncio.run(srv.wait_ready(a.timeout))
        post_json(port, "/v1/chat/completions", dict(reqs[0]["body"], model="m"), a.timeout)  # warm-up
        answers: dict[str, tuple] = {}
        errors: list[str] = []

        def one(r: dict):
            try:
                return r["custom_id"], answer_of(post_json(port, "/v1/chat/completions",
                                                           dict(r["body"], model="m"), a.timeout)), None
            except (urllib.error.URLError, OSError, ValueError) as e:
                return r["custom_id"], None, f"{type(e).__name__}: {e}"

        c0 = oc.proc_cpu_seconds(srv.pid)
        t0c = os.times()
        j0 = oc.cpu_jiffies()
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(a.clients or a.parallel) as ex:
            for cid, ans, err in ex.map(one, reqs):
                if err:
                    errors.append(f"{cid}: {err}")
                else:
                    answers[cid] = ans
        wall = time.perf_counter() - t0
        j1 = oc.cpu_jiffies()
        t1c = os.times()
        srv_cpu = oc.proc_cpu_seconds(srv.pid) - c0
        client_cpu = (t1c.user - t0c.user) + (t1c.system - t0c.system)
        hz = os.sysconf("SC_CLK_TCK")
        others = ((j1[0] - j0[0]) / hz - srv_cpu - client_cpu) / max(1e-9, wall * (os.cpu_count() or 1))
    finally:
        rc = srv.stop()
    return {"cmd": cmd, "wall_s": wall, "cpu_s": srv_cpu, "client_cpu_s": client_cpu, "others_busy": others,
            "answers": answers, "errors": len(errors), "error_samples": errors[:5], "exit": rc,
            "log": str(srv.log_path)}


def totals(side: dict) -> dict:
    ans = side["answers"].values()
    comp = sum(x[0] for x in ans)
    return {"requests": len(side["answers"]), "errors": side["errors"], "completion_tokens": comp,
            "prompt_tokens": sum(x[1] for x in ans), "wall_s": side["wall_s"],
            "tok_s": comp / side["wall_s"] if side["wall_s"] > 0 else 0.0,
            "finish_length": sum(1 for x in ans if x[3] == "length"),
            "others_busy_pct": 100 * side["others_busy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a key of bench/oaiclient.py MODELS or a .gguf path")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens per request")
    ap.add_argument("--threads", type=int, default=2, help="threads of both engines")
    ap.add_argument("--parallel", type=int, default=16, help="llama-server -np (slots)")
    ap.add_argument("--llama-requests", type=int, default=0,
                    help="send llama-server only the first N requests (default: all); for a loaded machine,"
                         " where llama.cpp's spinning threads make the full run take hours")
    ap.add_argument("--clients", type=int, default=0, help="concurrent client threads (default: --parallel)")
    ap.add_argument("--ctx-per-slot", type=int, default=512, help="llama-server context per slot")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-args", default="", help="extra `ferrollama batch` arguments")
    ap.add_argument("--llama-args", default="", help="extra llama-server arguments")
    ap.add_argument("--server-bin", default=str(oc.FERRO), help="ferrollama binary (default target/release)")
    ap.add_argument("--llama-server-bin", help="llama-server binary (default: scripts/setup-llama-server)")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release --bin ferrollama`")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--no-ours", action="store_true")
    ap.add_argument("--llama-first", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", help="write all results (and per-request answers) here")
    a = ap.parse_args()
    oc.exit_on_sigterm()

    if not a.no_build and not a.no_ours:
        subprocess.run(["cargo", "build", "--release", "--bin", "ferrollama"], cwd=ROOT, check=True)
    if not a.no_llama and not a.llama_server_bin:
        r = subprocess.run([str(ROOT / "scripts" / "setup-llama-server")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if r.returncode != 0:
            sys.exit("scripts/setup-llama-server failed")
        a.llama_server_bin = r.stdout.strip().splitlines()[-1]
    model = oc.resolve_model(a.model, Path(a.server_bin))
    reqs = make_requests(a.requests, a.max_tokens, a.seed, a.ignore_eos)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = oc.cache_dir() / "bench" / "batch" / stamp
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()

    res: dict = {}
    order = ["llama", "ours"] if a.llama_first else ["ours", "llama"]
    for side in order:
        if side == "ours" and not a.no_ours:
            res["ours"] = run_ours(a, model, reqs, work)
        if side == "llama" and not a.no_llama:
            res["llama"] = run_llama(a, model, reqs[:a.llama_requests or len(reqs)], work)
        if side in res:
            v = totals(res[side])
            log(f"{side}: {v['requests']} requests, {v['completion_tokens']} completion tokens in "
                f"{v['wall_s']:.2f} s = {v['tok_s']:.1f} tok/s (others busy {v['others_busy_pct']:.0f}%)")
    load1 = os.getloadavg()

    lver = ""
    if a.llama_server_bin and not a.no_llama:
        v = subprocess.run([a.llama_server_bin, "--version"], capture_output=True, text=True)
        lver = " ".join((v.stdout + v.stderr).split("\n")[0:1]).strip() or (v.stdout + v.stderr).strip()[:80]
    print(f"ferrollama batch vs llama-server ({lver or 'not run'}) on {oc.cpu_name()}, "
          f"{os.cpu_count()} logical CPUs; model {model.name}; {a.requests} chat requests, "
          f"max_tokens {a.max_tokens}{' (ignore_eos)' if a.ignore_eos else ''}, temperature 0; "
          f"threads {a.threads} each; llama-server -np {a.parallel}, {a.clients or a.parallel} client threads")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print()
    print(f"{'side':6} {'requests':>8} {'errors':>6} {'prompt tok':>10} {'compl tok':>9} {'length-stops':>12} "
          f"{'wall s':>8} {'tok/s':>8} {'others busy%':>12}")
    t = {k: totals(v) for k, v in res.items()}
    for k, v in t.items():
        print(f"{k:6} {v['requests']:8d} {v['errors']:6d} {v['prompt_tokens']:10d} {v['completion_tokens']:9d} "
              f"{v['finish_length']:12d} {v['wall_s']:8.2f} {v['tok_s']:8.1f} {v['others_busy_pct']:12.1f}")
    if "ours" in res:
        o = res["ours"]
        print(f"ours: startup (the same command on 1 request, max_tokens 1) {o['startup_s']:.2f} s; "
              f"CPU {o['cpu_s']:.1f} s; summary {json.dumps(o['summary'])}")
    if "llama" in res:
        ll = res["llama"]
        print(f"llama: server CPU {ll['cpu_s']:.1f} s, client CPU {ll['client_cpu_s']:.1f} s")
        for e in ll["error_samples"]:
            print(f"  error {e}")
    if "ours" in t and "llama" in t:
        ao, al = res["ours"]["answers"], res["llama"]["answers"]
        both = sorted(set(ao) & set(al))
        same_n = sum(1 for k in both if ao[k][0] == al[k][0])
        same_text = sum(1 for k in both if ao[k][2] == al[k][2])
        same_prompt = sum(1 for k in both if ao[k][1] == al[k][1])
        ratio = t["ours"]["tok_s"] / max(1e-9, t["llama"]["tok_s"])
        print(f"ours/llama tok/s: {ratio:.2f}x" + ("" if t["llama"]["requests"] != t["ours"]["requests"] else
              f"   (wall: llama/ours {t['llama']['wall_s'] / t['ours']['wall_s']:.2f}x)"))
        if a.llama_requests:
            sub = [k for k in sorted(ao)[:a.llama_requests]]
            print(f"llama-server got the first {a.llama_requests} requests only (--llama-requests); ours on those: "
                  f"{sum(ao[k][0] for k in sub if k in ao)} completion tokens, llama {sum(x[0] for x in al.values())}")
        print(f"same prompt-token count {same_prompt}/{len(both)}, same completion-token count "
              f"{same_n}/{len(both)}, identical text {same_text}/{len(both)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "totals": t, "load_before": load0, "load_after": load1,
                                            "results": res}, indent=1))
    want = {"ours": a.requests, "llama": a.llama_requests or a.requests}
    failed = sum(want[k] - v["requests"] for k, v in t.items())
    if failed:
        sys.exit(f"{failed} requests failed or unanswered")


if __name__ == "__main__":
    main()
