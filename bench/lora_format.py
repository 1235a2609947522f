#!/usr/bin/env python3
"""Does a short LoRA run teach SmolLM2 an answer format it does not have?

Generates a small chat dataset whose assistant replies always read
`Answer: WORD (N letters)` (40 training words, 19 held-out words never trained on),
fine-tunes a LoRA adapter with `ferrollama finetune --method lora` (SmolLM2-135M-Instruct
Q4_1 kept as stored, its own ChatML template), then serves the base and the adapter side
by side (`serve --lora fmt=...`) and asks both every held-out prompt greedily through
`/v1/chat/completions`. Prints the share of replies in the format (and exactly right:
word and letter count) before and after, and writes bench/results/lora-format-DATE.json.

Usage: bench/lora_format.py [--bin target/release/ferrollama] [--threads 2] [--steps 20]
No Python packages needed (urllib only).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

WORDS = """apple river mountain candle garden pencil window rocket silver thunder
forest bridge castle dragon engine feather galaxy harbor island jacket
kettle lantern marble needle orange planet quartz rabbit saddle tomato
umbrella velvet walnut yellow zebra anchor basket cactus dolphin eagle
falcon ginger hammer igloo jungle koala lemon magnet nectar oyster
parrot quiver sunset tiger violin wizard yogurt button cloud""".split()
QUESTIONS = [
    "Spell out the word {w} for me.",
    "What word is this: {w}?",
    "Tell me about the word '{w}'.",
    "Repeat {w}.",
]
FORMAT = re.compile(r"^Answer: ([A-Z]+) \((\d+) letters\)$")


def record(w: str, i: int) -> dict:
    return {"messages": [
        {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)].format(w=w)},
        {"role": "assistant", "content": f"Answer: {w.upper()} ({len(w)} letters)"},
    ]}


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def score(base_url: str, model: str, held: list[tuple[str, str]]) -> tuple[float, float, list[str]]:
    fmt = exact = 0
    replies = []
    for q, w in held:
        r = post(f"{base_url}/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": q}],
            "temperature": 0, "max_tokens": 24,
        })
        text = (r["choices"][0]["message"]["content"] or "").strip()
        replies.append(text)
        m = FORMAT.match(text)
        if m:
            fmt += 1
            exact += m.group(1) == w.upper() and int(m.group(2)) == len(w)
    return fmt / len(held), exact / len(held), replies


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/ferrollama")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    bin_ = str(Path(a.bin).resolve())
    model = subprocess.run([bin_, "fetch", "smollm2"], check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]
    words = list(dict.fromkeys(WORDS))
    random.Random(0).shuffle(words)
    train, held_words = words[:40], words[40:]
    tmp = Path(tempfile.mkdtemp(prefix="ferrollama-lora-format-"))
    (tmp / "train.jsonl").write_text("".join(json.dumps(record(w, i)) + "\n" for i, w in enumerate(train)))
    (tmp / "held.jsonl").write_text("".join(json.dumps(record(w, i)) + "\n" for i, w in enumerate(held_words)))
    held = [(QUESTIONS[i % len(QUESTIONS)].format(w=w), w) for i, w in enumerate(held_words)]

    t0 = time.time()
    out = subprocess.run([
        bin_, "finetune", "-m", model, "--data", str(tmp / "train.jsonl"), "--eval", str(tmp / "held.jsonl"),
        "--method", "lora", "--rank", "8", "--alpha", "16", "--steps", str(a.steps), "--batch-size", "4",
        "--lr", "1e-3", "--seq-len", "128", "--out", str(tmp / "out"), "--json", "-t", str(a.threads),
    ], check=True, capture_output=True, text=True).stdout
    train_s = time.time() - t0
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    steps = [l for l in lines if l["event"] == "step"]
    evals = [l for l in lines if l["event"] == "eval"]

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    srv = subprocess.Popen([
        bin_, "serve", "-m", model, "--lora", f"fmt={tmp / 'out' / 'adapter.gguf'}", "--port", str(port),
        "--data-dir", ":memory:", "-t", str(a.threads),
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base_url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        base_id = Path(model).stem
        before = score(base_url, base_id, held)
        after = score(base_url, "fmt", held)
    finally:
        srv.terminate()
        srv.wait(timeout=30)

    result = {
        "date": datetime.date.today().isoformat(), "model": Path(model).name, "threads": a.threads,
        "steps": a.steps, "train_seconds": round(train_s, 1),
        "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
        "held_out_loss": evals[-1]["eval_loss"] if evals else None,
        "held_out_prompts": len(held),
        "format_before": before[0], "exact_before": before[1],
        "format_after": after[0], "exact_after": after[1],
        "replies_before": before[2][:5], "replies_after": after[2][:5],
    }
    print(f"LoRA r8, {a.steps} steps ({train_s:.0f} s): loss {result['first_loss']:.3f} -> "
          f"{result['last_loss']:.3f}, held-out loss {result['held_out_loss']}")
    print(f"held-out format: {before[0]:.0%} before -> {after[0]:.0%} after "
          f"(exactly right: {before[1]:.0%} -> {after[1]:.0%}) on {len(held)} prompts")
    dest = Path(__file__).resolve().parent / "results" / f"lora-format-{result['date']}.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
