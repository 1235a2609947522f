#!/usr/bin/env python3
"""Make a Llama-3.2-1B-shaped GGUF with seeded random weights, for speed benchmarks.

Run with the python of the llama.cpp venv (scripts/setup-llamacpp prints its path):

    PY=$(scripts/setup-llamacpp | tail -n1)
    "$PY" bench/make_1b.py

Writes into <cache>/bench-models/ (never into the repo):
    llama-1b-f16.gguf      F16 matrices, F32 norms / rope_freqs (the quantizer's input)
    llama-1b-q8_0.gguf     llama.cpp's quantizer, LLAMA_FTYPE_MOSTLY_Q8_0
    llama-1b-q4_k_m.gguf   llama.cpp's quantizer, LLAMA_FTYPE_MOSTLY_Q4_K_M
    llama-1b-q5_0.gguf     llama.cpp's quantizer, LLAMA_FTYPE_MOSTLY_Q5_0 (only with --only)
    llama-1b.json          sizes of the finished files (what makes re-runs skip them)

Shape = Llama 3.2 1B: dim 2048, 16 layers, 32 heads, 8 KV heads (head_dim 64), ffn 8192,
vocab 128256 (the real Llama 3 BPE vocab + merges from llama.cpp's
models/ggml-vocab-llama-bpe.gguf, special tokens renamed to their Llama 3.1/3.2 names),
tied embeddings (no output.weight), rope theta 500000 with Llama 3.1-style rope_freqs
(factor 32, as Llama 3.2), training context 131072. Matrices ~ N(0, 0.02), norms = 1.

Idempotent: a file is skipped when it exists with the size recorded in llama-1b.json;
everything is written under a temporary name and renamed when complete. The F16 file is
written tensor by tensor (peak memory ~1.5 GB, for the embedding matrix).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import gguf
import llama_cpp

SEED = 20240925  # Llama 3.2 release date

N_VOCAB = 128256
N_EMBD = 2048
N_LAYER = 16
N_HEAD = 32
N_HEAD_KV = 8
HEAD_DIM = N_EMBD // N_HEAD  # 64
N_FF = 8192
ROPE_THETA = 500000.0
N_CTX_TRAIN = 131072
RMS_EPS = 1e-5
STD = 0.02
# Llama 3.2 1B config.json rope_scaling
ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
# Llama 3.1/3.2 special tokens that the Llama 3.0 vocab file calls <|reserved_special_token_*|>;
# every other id >= 128000 is <|reserved_special_token_K|>, K counting up (as in 3.1/3.2)
SPECIALS = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}
N_REGULAR = 128000

NAMES = {"f16": "llama-1b-f16.gguf", "q8_0": "llama-1b-q8_0.gguf", "q4_k_m": "llama-1b-q4_k_m.gguf",
         "q5_0": "llama-1b-q5_0.gguf"}


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


def vendored_llamacpp() -> Path:
    p = cache_dir() / "llamacpp-src" / f"llama_cpp_python-{llama_cpp.__version__}" / "vendor" / "llama.cpp"
    if not p.is_dir():
        sys.exit(f"vendored llama.cpp source not found at {p}; run scripts/setup-llamacpp")
    return p


def build_vocab():
    src = vendored_llamacpp() / "models" / "ggml-vocab-llama-bpe.gguf"
    r = gguf.GGUFReader(str(src))
    assert r.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    tokens = list(r.fields["tokenizer.ggml.tokens"].contents())
    types = [int(t) for t in r.fields["tokenizer.ggml.token_type"].contents()]
    merges = list(r.fields["tokenizer.ggml.merges"].contents())
    if len(tokens) > N_VOCAB:
        sys.exit(f"{src} has {len(tokens)} tokens, more than {N_VOCAB}")
    # pad to 128256 with reserved control tokens if the file is short (it is not, for 0.3.36)
    while len(tokens) < N_VOCAB:
        tokens.append("<pad>")
        types.append(int(gguf.TokenType.CONTROL))
    assert all(t == gguf.TokenType.NORMAL for t in types[:N_REGULAR])
    k = 0
    for i in range(N_REGULAR, N_VOCAB):
        if i in SPECIALS:
            tokens[i] = SPECIALS[i]
        else:
            tokens[i] = f"<|reserved_special_token_{k}|>"
            k += 1
        types[i] = int(gguf.TokenType.CONTROL)
    assert len(set(tokens)) == N_VOCAB
    return tokens, types, merges


def rope_freqs() -> np.ndarray:
    """As conversion/llama.py LlamaModel.generate_extra_tensors (float32 ops)."""
    base = np.float32(ROPE_THETA)
    freqs = np.float32(1.0) / (base ** (np.arange(0, HEAD_DIM, 2, dtype=np.float32) / np.float32(HEAD_DIM)))
    factor = ROPE_SCALING["factor"]
    lo, hi = ROPE_SCALING["low_freq_factor"], ROPE_SCALING["high_freq_factor"]
    old = ROPE_SCALING["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in freqs:
        wl = np.float32(2 * math.pi) / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            s = (np.float32(old) / wl - np.float32(lo)) / np.float32(hi - lo)
            out.append(np.float32(1) / ((np.float32(1) - s) / np.float32(factor) + s))
    return np.array(out, dtype=np.float32)


def tensor_plan():
    """(name, shape as numpy (rows, cols) or (n,), kind) in converter order; tied: no output.weight."""
    plan = [("rope_freqs.weight", (HEAD_DIM // 2,), "rope"),
            ("token_embd.weight", (N_VOCAB, N_EMBD), "mat")]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (N_EMBD,), "norm"),
            (p + "ffn_down.weight", (N_EMBD, N_FF), "mat"),
            (p + "ffn_gate.weight", (N_FF, N_EMBD), "mat"),
            (p + "ffn_up.weight", (N_FF, N_EMBD), "mat"),
            (p + "ffn_norm.weight", (N_EMBD,), "norm"),
            (p + "attn_k.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), "mat"),
            (p + "attn_output.weight", (N_EMBD, N_HEAD * HEAD_DIM), "mat"),
            (p + "attn_q.weight", (N_HEAD * HEAD_DIM, N_EMBD), "mat"),
            (p + "attn_v.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), "mat"),
        ]
    plan.append(("output_norm.weight", (N_EMBD,), "norm"))
    return plan


def write_f16(path: Path):
    tokens, types, merges = build_vocab()
    rf = rope_freqs()
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("ferrollama-bench-llama-1b (random weights)")
    w.add_block_count(N_LAYER)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(N_VOCAB)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128001)
    w.add_eot_token_id(128009)
    w.add_eom_token_id(128008)
    w.add_add_bos_token(True)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    plan = tensor_plan()
    for name, shape, kind in plan:
        dt = np.float16 if kind == "mat" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(SEED)
    for name, shape, kind in plan:
        if kind == "rope":
            arr = rf
        elif kind == "norm":
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = rng.standard_normal(size=shape, dtype=np.float32)
            arr *= STD
            arr = arr.astype(np.float16)
        w.write_tensor_data(arr)
        del arr
    w.close()


def quantize(src: Path, dst: Path, ftype: int, nthread: int):
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc}) for {dst}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=cache_dir() / "bench-models")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="quantizer threads")
    ap.add_argument("--only", default="f16,q8_0,q4_k_m", help="which files (the quantized ones need f16)")
    a = ap.parse_args()
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "llama-1b.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("seed") not in (None, SEED):
        manifest = {}
    manifest["seed"] = SEED
    manifest.setdefault("sizes", {})
    want = [k for k in a.only.split(",") if k]
    for k in want:
        if k not in NAMES:
            sys.exit(f"unknown --only entry {k!r}; choose from {','.join(NAMES)}")
    if any(k != "f16" for k in want) and "f16" not in want:
        want.insert(0, "f16")

    def done(key: str) -> bool:
        p = out / NAMES[key]
        return p.exists() and manifest["sizes"].get(p.name) == p.stat().st_size

    def finish(key: str, tmp: Path, t0: float):
        dst = out / NAMES[key]
        os.replace(tmp, dst)
        manifest["sizes"][dst.name] = dst.stat().st_size
        tmpm = manifest_path.with_suffix(".json.tmp")
        tmpm.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmpm, manifest_path)
        print(f"make_1b: wrote {dst} in {time.time() - t0:.0f} s", file=sys.stderr)

    llama_cpp.llama_backend_init()
    f16 = out / NAMES["f16"]
    for key in want:
        dst = out / NAMES[key]
        if done(key):
            continue
        tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
        t0 = time.time()
        print(f"make_1b: writing {dst}", file=sys.stderr)
        try:
            if key == "f16":
                write_f16(tmp)
            else:
                ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
                         "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
                         "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0}[key]
                quantize(f16, tmp, ftype, a.threads)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finish(key, tmp, t0)

    for key in want:
        p = out / NAMES[key]
        print(f"{p}\t{p.stat().st_size}\t{p.stat().st_size / 2**30:.3f} GiB")


if __name__ == "__main__":
    main()
