#!/usr/bin/env python3
"""llama.cpp reference outputs for Qwen2.5-Coder-Instruct GGUFs (architecture `qwen2`).

Runs llama.cpp's own `llama-server` (scripts/setup-llama-server builds it) on each model
given and asks it, over HTTP, for:

- tokenization (`/tokenize`, no BOS) of every text of ../llama3/tokenizer.jsonl shorter than
  2000 characters, plus texts with Qwen's special tokens with special parsing on and off
  -> tokenize.jsonl (from the first model; the script checks every other model gives the
  same ids, since the Qwen2.5 models share one vocabulary);
- the chat prompt llama.cpp renders from the GGUF's template (`/apply-template`) for one
  user message, tokenized with special parsing -> chat.json;
- greedy continuations (`/completion`, temperature 0, prompt given as token ids) of a few
  prompts, with llama.cpp's top-1 minus top-2 log-probability (= logit) margin at every
  step (`n_probs`) -> greedy-<label>.json.

Usage (stdlib only; any python 3.9+):

    LLAMA_SERVER=$(scripts/setup-llama-server | tail -n1)
    python3 testdata/qwen2/make_reference.py --server "$LLAMA_SERVER" \
        0.5b=/path/qwen2.5-coder-0.5b-instruct.gguf 1.5b=/path/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

Settings: 2 threads, context 512, the prompt in one batch of 512, then one token per
decode, flash attention off, KV cache F32. Deterministic on one CPU and build.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
N_GEN = 48
N_CTX = 512
MAX_TOKENIZE_CHARS = 2000

PROMPTS = [
    {"id": "prose", "text": "The old lighthouse keeper climbed the spiral stairs every evening, and"},
    {"id": "question", "text": "What causes the seasons on Earth? The seasons are caused by"},
    {"id": "code", "text": "import numpy as np\n\ndef softmax(x):\n"},
    {"id": "list", "text": "Things to pack for a camping trip:\n1. Tent\n2. Sleeping bag\n3."},
    {"id": "numbers", "text": "1 + 1 = 2\n2 + 2 = 4\n3 + 3 ="},
    {"id": "german", "text": "Der schnelle braune Fuchs springt über den faulen Hund, und"},
    {"id": "rust", "text": "/// Returns the n-th Fibonacci number.\nfn fib(n: u64) -> u64 {\n"},
]

CHAT_USER = "What is the capital of Australia?"

SPECIAL_TEXTS = [
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?<|im_end|>\n",
    "<|im_start|>",
    "text <|im_end|>with<|im_start|> odd  spacing<|endoftext|> end",
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c<|fim_middle|>",
    "<|repo_name|>ferrollama<|file_sep|>src/main.rs\nfn main() {}<|endoftext|>",
    "Numbers 1234567890 and ٣٤٥ and ⅷ, contractions I'LL we'Ve it'ſ",
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, model: Path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "-t", "2", "-tb", "2", "-c", str(N_CTX), "-b", str(N_CTX), "-ub", str(N_CTX),
             "-np", "1", "-fa", "off", "-ctk", "f32", "-ctv", "f32", "--no-warmup"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                if json.loads(self.get("/health")).get("status") == "ok":
                    return
            except Exception:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"llama-server exited with {self.proc.returncode}")
            time.sleep(0.5)
        sys.exit("llama-server did not become ready")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=600) as r:
            return r.read().decode()

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read().decode())

    def tokenize(self, text: str, special: bool) -> list[int]:
        r = self.post("/tokenize", {"content": text, "add_special": False, "parse_special": special})
        return [t if isinstance(t, int) else t["id"] for t in r["tokens"]]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def greedy(srv: Server, prompt_ids: list[int]) -> dict:
    r = srv.post("/completion", {
        "prompt": prompt_ids, "n_predict": N_GEN, "temperature": 0.0, "top_k": 1,
        "n_probs": 2, "cache_prompt": False, "return_tokens": True, "samplers": ["top_k", "temperature"],
    })
    probs = r["completion_probabilities"]
    ids = [p["id"] for p in probs]
    margins = []
    for p in probs:
        top = p["top_logprobs"]
        assert top[0]["id"] == p["id"], (top, p["id"])
        margins.append(top[0]["logprob"] - top[1]["logprob"] if len(top) > 1 else 1e9)
    return {"ids": ids, "text": r["content"], "pieces": [p["token"] for p in probs],
            "stop_type": r.get("stop_type"),
            "top1_minus_top2_logit": [round(m, 4) for m in margins],
            "min_margin": round(min(margins), 4)}


def tokenize_lines(srv: Server) -> list[dict]:
    lines = []
    for line in (REPO / "testdata" / "llama3" / "tokenizer.jsonl").read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        if len(row["text"]) >= MAX_TOKENIZE_CHARS:
            continue
        lines.append({"id": row["id"], "text": row["text"], "parse_special": False,
                      "ids": srv.tokenize(row["text"], False)})
    for i, text in enumerate(SPECIAL_TEXTS):
        for special in (True, False):
            lines.append({"id": f"special-{i + 1:02d}", "text": text, "parse_special": special,
                          "ids": srv.tokenize(text, special)})
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="path of llama-server")
    ap.add_argument("models", nargs="+", help="LABEL=PATH.gguf")
    args = ap.parse_args()
    tok_lines = None
    for spec in args.models:
        label, path = spec.split("=", 1)
        path = Path(path)
        digest = sha256(path)
        srv = Server(args.server, path)
        try:
            lines = tokenize_lines(srv)
            if tok_lines is None:
                tok_lines = lines
                with open(HERE / "tokenize.jsonl", "w", encoding="utf-8") as f:
                    for row in lines:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                print(f"tokenize.jsonl: {len(lines)} lines (from {label})", file=sys.stderr)
            else:
                assert [l["ids"] for l in lines] == [l["ids"] for l in tok_lines], \
                    f"{label} tokenizes differently"
            rendered = srv.post("/apply-template", {
                "messages": [{"role": "user", "content": CHAT_USER}]})["prompt"]
            chat_ids = srv.tokenize(rendered, True)
            chat = {"user": CHAT_USER, "rendered": rendered, "ids": chat_ids,
                    "generated": greedy(srv, chat_ids)}
            out = []
            for p in PROMPTS:
                ids = srv.tokenize(p["text"], False)
                g = greedy(srv, ids)
                out.append({"id": p["id"], "prompt": p["text"], "prompt_ids": ids, "generated": g})
                print(f"{label} {p['id']}: min margin {g['min_margin']}: {g['text']!r}", file=sys.stderr)
            print(f"{label} chat: {chat['generated']['text']!r}", file=sys.stderr)
            meta = {
                "generator": "testdata/qwen2/make_reference.py",
                "model": {"file": path.name, "sha256": digest},
                "llama_server": srv.get("/props") and json.loads(srv.get("/props")).get("build_info"),
                "settings": {"n_ctx": N_CTX, "n_batch": N_CTX, "n_threads": 2, "flash_attn": False,
                             "kv_cache": "f32", "tokenize": {"add_special": False, "parse_special": False},
                             "decoding": "llama-server /completion, temperature 0 (greedy), prompt as ids",
                             "n_gen": N_GEN,
                             "stop": "after n_gen tokens or on an end-of-generation token (included)"},
                "chat": chat,
                "prompts": out,
            }
            (HERE / f"greedy-{label}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        finally:
            srv.close()


if __name__ == "__main__":
    main()
