#!/usr/bin/env python3
"""One agent turn with one tool call, end to end, on a ~1B model (stdlib only).

    python3 bench/agent.py [--model qwen1.5b|1b-q8_0|PATH] [--turns 10] [--bin PATH]

Starts `ferrollama serve` with the model (state in memory), creates a Llama Stack agent with
`builtin::code_interpreter` and `tool_choice: required` (greedy, at most 2 inference steps),
and runs --turns turns, each in a fresh session (so every turn's first tool call is a cold
sandbox), over plain HTTP: inference → the call runs in the sandbox → inference → answer.
From each turn's stored steps it splits the time into inference and tool execution.

As the reference, the same run times the two inference requests alone as plain chat
completions (the same prompts, no agent, no tool): what a client-side loop would pay for the
model, so `turn - inference` is what the agent machinery and the sandbox add.

Writes bench/results/agent-YYYY-MM-DD.{txt,json}. Model keys: `qwen1.5b`,`qwen0.5b`
(`ferrollama fetch ...`), `1b-q8_0` / `1b-q4_k_m` (bench/make_1b.py: Llama-3.2-1B-shaped,
random weights — its "code" is gibberish; the timing is what matters), or a .gguf path.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oaiclient import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Use Python to compute 1234 * 5678 and print the result."


def pct(values, p):
    v = sorted(values)
    rank = max(1, min(len(v), math.ceil(p * len(v))))
    return v[rank - 1]


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferrollama"


def model_path(key: str, binary: str) -> str:
    if key.endswith(".gguf"):
        return key
    if key.startswith("1b-"):
        p = cache_dir() / "bench-models" / f"llama-{key}.gguf"
        if not p.exists():
            sys.exit(f"error: {p} missing: run bench/make_1b.py (see bench/README.md)")
        return str(p)
    out = subprocess.run([binary, "fetch", key], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def call(base, method, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def iso(s: str) -> float:
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen1.5b")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.environ.get("FERROLLAMA_BIN", str(ROOT / "target" / "release" / "ferrollama")))
    a = ap.parse_args()
    path = model_path(a.model, a.bin)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    base = f"http://127.0.0.1:{port}"
    import tempfile
    data = tempfile.mkdtemp(prefix="ferrollama-bench-agent-")
    server = subprocess.Popen([a.bin, "serve", "-m", path, "--port", str(port), "--data-dir", data,
                               "--threads", str(a.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                call(base, "GET", "/v1/health", timeout=2)
                break
            except Exception:
                if server.poll() is not None:
                    sys.exit("error: the server exited: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        model = call(base, "GET", "/v1/models")["data"][0]["id"]
        sampling = {"strategy": {"type": "greedy"}, "max_tokens": a.max_tokens}
        agent = call(base, "POST", "/v1/agents", {"agent_config": {
            "model": model, "instructions": "You are a helpful assistant. Use Python for arithmetic.",
            "toolgroups": ["builtin::code_interpreter"], "tool_config": {"tool_choice": "required"},
            "max_infer_iters": 2, "sampling_params": sampling}})["agent_id"]
        rows = []
        for i in range(a.turns + 1):  # the first is a warm-up, not counted
            sid = call(base, "POST", f"/v1/agents/{agent}/session", {"session_name": f"b{i}"})["session_id"]
            t = time.perf_counter()
            turn = call(base, "POST", f"/v1/agents/{agent}/session/{sid}/turn",
                        {"messages": [{"role": "user", "content": PROMPT}], "stream": False})
            wall = (time.perf_counter() - t) * 1000
            steps = turn["steps"]
            dur = {k: 0.0 for k in ("inference", "tool_execution")}
            for st in steps:
                dur[st["step_type"]] = dur.get(st["step_type"], 0.0) + (iso(st["completed_at"]) - iso(st["started_at"])) * 1000
            ex = [st for st in steps if st["step_type"] == "tool_execution"]
            # Reference: the same two inferences as plain chat completions (no agent, no tool).
            msgs = [{"role": "system", "content": "You are a helpful assistant. Use Python for arithmetic."},
                    {"role": "user", "content": PROMPT}]
            t = time.perf_counter()
            first = call(base, "POST", "/v1/chat/completions", {"model": model, "messages": msgs, "temperature": 0,
                                                                  "max_tokens": a.max_tokens})
            msgs2 = msgs + [{"role": "assistant", "content": first["choices"][0]["message"]["content"] or ""},
                            {"role": "user", "content": ex[0]["tool_responses"][0]["content"] if ex else ""}]
            call(base, "POST", "/v1/chat/completions", {"model": model, "messages": msgs2, "temperature": 0,
                                                        "max_tokens": a.max_tokens})
            plain = (time.perf_counter() - t) * 1000
            if i == 0:
                continue
            rows.append({"turn_ms": wall, "inference_ms": dur["inference"], "tool_ms": dur["tool_execution"],
                         "steps": [st["step_type"] for st in steps], "plain_two_inferences_ms": plain,
                         "tool_output": ex[0]["tool_responses"][0]["content"][:200] if ex else None})
    finally:
        server.terminate()
        server.wait(30)
    def stat(key):
        v = [r[key] for r in rows]
        return {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "mean": sum(v) / len(v)}
    res = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "model": a.model, "path": path,
           "turns": len(rows), "max_tokens": a.max_tokens, "threads": a.threads,
           "turn": stat("turn_ms"), "inference": stat("inference_ms"), "tool": stat("tool_ms"),
           "plain_two_inferences": stat("plain_two_inferences_ms"), "rows": rows}
    lines = [
        f"agent turn with one code_interpreter call — {res['date']} — {res['cpu']}, {a.threads} threads",
        f"model {a.model} ({Path(path).name}), greedy, max_tokens {a.max_tokens}, {len(rows)} turns (fresh session each: cold sandbox)",
        f"steps of the last turn: {rows[-1]['steps']}",
        f"{'':28}{'p50 ms':>10}{'p99 ms':>10}",
    ]
    for label, key in [("whole turn (HTTP)", "turn"), ("  inference steps", "inference"), ("  tool execution step", "tool"),
                       ("reference: 2 plain chat calls", "plain_two_inferences")]:
        lines.append(f"{label:28}{res[key]['p50']:>10.1f}{res[key]['p99']:>10.1f}")
    lines.append(f"agent overhead over the plain calls (p50): {res['turn']['p50'] - res['plain_two_inferences']['p50']:.1f} ms; "
                 f"tool step share of the turn: {100 * res['tool']['p50'] / res['turn']['p50']:.1f}%")
    lines.append(f"last tool output: {rows[-1]['tool_output']!r}")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / f"agent-{res['date']}"
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
