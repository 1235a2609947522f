#!/usr/bin/env python3
"""Make the tiny seeded Llama-3.1-architecture fixtures and llama.cpp reference logits.

Run with the python of the llama.cpp venv (scripts/setup-llamacpp prints its path):

    PY=$(scripts/setup-llamacpp | tail -n1)
    "$PY" testdata/tiny/make_tiny.py

Writes into testdata/tiny/ (committed):
    tiny-f16.gguf, tiny-q8_0.gguf, tiny-q4_k_m.gguf
    tiny-{f32,f16,q8_0,q4_k_m}.logits.npy       [24, 512] float32, llama.cpp logits, every position
                                                 of the 24-token prompt (n_ctx 256)
    tiny-{f32,f16,q8_0,q4_k_m}.long.logits.npy  [16, 512] float32, llama.cpp logits of the last 16
                                                 positions of a 1024-token prompt (n_ctx 1024): long
                                                 relative distances, so rope_freqs matter
    tiny-f32.numpy{,.long}.logits.npy           same shapes: a plain numpy forward pass (float64
                                                 math) of the f32 weights, independent of llama.cpp
    tiny.json                                prompt, hyperparameters, argmax per position, tensor
                                             types, sha256 of every fixture, versions
and into the cache (<cache>/tiny/, NOT committed): tiny-f32.gguf, the quantizer's input.

Everything is deterministic: re-running produces bit-identical files.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import gguf
import llama_cpp
from llama_cpp import Llama

HERE = Path(__file__).resolve().parent
SEED = 20240723  # Llama 3.1 release date

# ---- hyperparameters (Llama-3.1 shaped, tiny) ----
N_VOCAB = 512
N_EMBD = 256
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD  # 64
N_FF = 256
ROPE_THETA = 500000.0
N_CTX_TRAIN = 131072
RMS_EPS = 1e-5
# Llama 3.1 rope_scaling from its config.json
ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# ---- reference run settings ----
N_PROMPT = 24
# second run: a long prompt, so that relative distances reach ~1000 and the Llama 3.1
# rope_freqs (which only change the low frequencies) move the logits visibly; only the
# logits of the last LONG_KEEP positions are stored
N_LONG = 1024
LONG_KEEP = 16
N_CTX = 256
N_THREADS = 2

CONTROL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]
N_REGULAR = N_VOCAB - len(CONTROL_TOKENS)  # 505: Llama 3 ids 0..504 keep their ids


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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# vocab
# --------------------------------------------------------------------------------------
def build_vocab():
    """First 505 tokens of Llama 3 (ids unchanged) + 7 control tokens at 505..511."""
    src = vendored_llamacpp() / "models" / "ggml-vocab-llama-bpe.gguf"
    r = gguf.GGUFReader(str(src))
    assert r.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    ttype = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()

    tokens = list(toks[:N_REGULAR])
    types = [int(t) for t in ttype[:N_REGULAR]]
    assert all(t == gguf.TokenType.NORMAL for t in types)
    assert len(set(tokens)) == N_REGULAR
    kept = set(tokens)
    # merges in their original rank order whose two parts and result are all kept
    kept_merges = []
    for m in merges:
        a, b = m.split(" ")
        if a in kept and b in kept and (a + b) in kept:
            kept_merges.append(m)

    # (this Llama 3.0 vocab file names 128008/128010 <|reserved_special_token_*|>; in
    # Llama 3.1 they are <|eom_id|>/<|python_tag|>; all are CONTROL tokens either way)
    for t in CONTROL_TOKENS:
        tokens.append(t)
        types.append(int(gguf.TokenType.CONTROL))
    assert len(tokens) == N_VOCAB
    return tokens, types, kept_merges


# --------------------------------------------------------------------------------------
# rope_freqs, exactly as conversion/llama.py LlamaModel.generate_extra_tensors
# (the converter does this in torch float32; we mirror each float32 op with numpy float32)
# --------------------------------------------------------------------------------------
def llama31_rope_freqs() -> np.ndarray:
    base = np.float32(ROPE_THETA)
    dim = HEAD_DIM
    freqs = np.float32(1.0) / (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor = ROPE_SCALING["factor"]
    low_freq_factor = ROPE_SCALING["low_freq_factor"]
    high_freq_factor = ROPE_SCALING["high_freq_factor"]
    old_context_len = ROPE_SCALING["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < high_freq_wavelen:
            out.append(1.0)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (np.float32(old_context_len) / wavelen - np.float32(low_freq_factor)) / np.float32(
                high_freq_factor - low_freq_factor)
            out.append(np.float32(1) / ((np.float32(1) - smooth) / np.float32(factor) + smooth))
    return np.array(out, dtype=np.float32)


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------
def f16_round(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def make_weights() -> dict[str, np.ndarray]:
    """numpy arrays in GGUF/ggml layout: shape (rows, cols) <=> ggml ne = [cols, rows]."""
    rng = np.random.default_rng(SEED)
    W: dict[str, np.ndarray] = {}

    def mat(rows, cols, std):
        return f16_round(rng.normal(0.0, std, size=(rows, cols)))

    def norm(n):
        return f16_round(1.0 + 0.1 * rng.normal(0.0, 1.0, size=(n,)))

    W["token_embd.weight"] = mat(N_VOCAB, N_EMBD, 0.5)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        W[p + "attn_norm.weight"] = norm(N_EMBD)
        W[p + "attn_q.weight"] = mat(N_HEAD * HEAD_DIM, N_EMBD, 0.05)
        W[p + "attn_k.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 0.05)
        W[p + "attn_v.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 0.05)
        W[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM, 0.05)
        W[p + "ffn_norm.weight"] = norm(N_EMBD)
        W[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, 0.05)
        W[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, 0.05)
        W[p + "ffn_down.weight"] = mat(N_EMBD, N_FF, 0.05)
    W["output_norm.weight"] = norm(N_EMBD)
    W["output.weight"] = mat(N_VOCAB, N_EMBD, 0.05)
    return W


def write_gguf(path: Path, W: dict[str, np.ndarray], rope_freqs: np.ndarray, vocab, ftype: int):
    tokens, types, merges = vocab
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("ferrollama-tiny")
    w.add_block_count(N_LAYER)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(ftype)
    w.add_vocab_size(N_VOCAB)
    w.add_rope_dimension_count(HEAD_DIM)
    # rope_type "llama3": the converter writes NO llama.rope.scaling.* keys, only rope_freqs.weight
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(N_REGULAR + CONTROL_TOKENS.index("<|begin_of_text|>"))
    w.add_eos_token_id(N_REGULAR + CONTROL_TOKENS.index("<|end_of_text|>"))
    w.add_eot_token_id(N_REGULAR + CONTROL_TOKENS.index("<|eot_id|>"))
    w.add_eom_token_id(N_REGULAR + CONTROL_TOKENS.index("<|eom_id|>"))
    w.add_add_bos_token(True)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # converter order: generated extra tensors first
    w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    for name, arr in W.items():
        if arr.ndim == 2 and ftype == gguf.LlamaFileType.MOSTLY_F16:
            arr = arr.astype(np.float16)
        else:
            arr = arr.astype(np.float32)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, ftype: int):
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = N_THREADS
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc}) for {dst}")


def tensor_types(path: Path) -> dict[str, str]:
    r = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in r.tensors}


# --------------------------------------------------------------------------------------
# llama.cpp reference logits
# --------------------------------------------------------------------------------------
LLAMA_KW = dict(
    n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
    logits_all=True, flash_attn=False,
    type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
    n_gpu_layers=0, seed=0, verbose=False,
)


def llamacpp_logits(path: Path, prompt: list[int], n_ctx: int) -> np.ndarray:
    kw = dict(LLAMA_KW, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx)
    llm = Llama(str(path), **kw)
    assert llm.n_vocab() == N_VOCAB
    llm.eval(prompt)  # one batch (n_batch >= len(prompt)), logits for every position
    logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    llm.close()
    assert logits.shape == (len(prompt), N_VOCAB) and np.isfinite(logits).all()
    return logits


def dequantized_weights(path: Path) -> dict[str, np.ndarray]:
    r = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            for t in r.tensors if t.name != "rope_freqs.weight"}


def check_vocab_with_llamacpp(path: Path):
    """Load the vocab in llama.cpp; return a few tokenizations as extra fixtures."""
    llm = Llama(str(path), vocab_only=True, verbose=False)
    assert llm.n_vocab() == N_VOCAB
    assert llm.token_bos() == N_REGULAR and llm.token_eos() == N_REGULAR + 1
    samples = []
    for text, add_bos, special in [
        ("Hello, world!", False, False),
        ("The quick brown fox jumps over the lazy dog.", False, False),
        ("  int main() {\n\treturn 0;\n}\n", False, False),
        ("12345 apples; don't I'll", True, False),
        ("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", True, True),
        ("<|start_header_id|>user<|end_header_id|>", False, False),
    ]:
        ids = llm.tokenize(text.encode(), add_bos=add_bos, special=special)
        back = llm.detokenize(ids, special=True).decode("utf-8")
        expect = ("<|begin_of_text|>" if add_bos else "") + text
        assert back == expect, (text, ids, back)
        if not special:
            assert all(i < N_REGULAR for i in ids if not (add_bos and i == N_REGULAR))
        samples.append({"text": text, "add_bos": add_bos, "parse_special": special, "ids": ids})
    llm.close()
    return samples


# --------------------------------------------------------------------------------------
# independent numpy forward pass (float64 math on the f32 weights) as a cross-check
# --------------------------------------------------------------------------------------
def numpy_forward(W, rope_freqs, prompt) -> np.ndarray:
    f = {k: v.astype(np.float64) for k, v in W.items()}
    T = len(prompt)
    pos = np.arange(T, dtype=np.float64)

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * g

    # RoPE "normal" (LLAMA_ROPE_TYPE_NORM): rotate adjacent pairs (2i, 2i+1);
    # theta_i = pos * base^(-2i/d) / rope_freqs[i]
    inv = ROPE_THETA ** (-np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM) / rope_freqs.astype(np.float64)
    ang = pos[:, None] * inv[None, :]  # [T, d/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # [T, H, d]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    x = f["token_embd.weight"][prompt]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        h = rms(x, f[p + "attn_norm.weight"])
        q = rope((h @ f[p + "attn_q.weight"].T).reshape(T, N_HEAD, HEAD_DIM))
        k = rope((h @ f[p + "attn_k.weight"].T).reshape(T, N_HEAD_KV, HEAD_DIM))
        v = (h @ f[p + "attn_v.weight"].T).reshape(T, N_HEAD_KV, HEAD_DIM)
        g = N_HEAD // N_HEAD_KV
        outs = []
        for hd in range(N_HEAD):
            kv = hd // g  # q head h uses kv head h // (n_head / n_head_kv)
            s = q[:, hd] @ k[:, kv].T / math.sqrt(HEAD_DIM) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            outs.append(s @ v[:, kv])
        x = x + np.concatenate(outs, axis=-1) @ f[p + "attn_output.weight"].T
        h = rms(x, f[p + "ffn_norm.weight"])
        a = h @ f[p + "ffn_gate.weight"].T
        u = h @ f[p + "ffn_up.weight"].T
        x = x + ((a / (1.0 + np.exp(-a))) * u) @ f[p + "ffn_down.weight"].T
    x = rms(x, f["output_norm.weight"])
    return (x @ f["output.weight"].T).astype(np.float32)


def main():
    out = HERE
    cdir = cache_dir() / "tiny"
    cdir.mkdir(parents=True, exist_ok=True)
    llama_cpp.llama_backend_init()

    vocab = build_vocab()
    rope_freqs = llama31_rope_freqs()
    W = make_weights()

    f32 = cdir / "tiny-f32.gguf"
    write_gguf(f32, W, rope_freqs, vocab, gguf.LlamaFileType.ALL_F32)
    files = {"f32": f32, "f16": out / "tiny-f16.gguf",
             "q8_0": out / "tiny-q8_0.gguf", "q4_k_m": out / "tiny-q4_k_m.gguf"}
    write_gguf(files["f16"], W, rope_freqs, vocab, gguf.LlamaFileType.MOSTLY_F16)
    quantize(f32, files["q8_0"], llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
    quantize(f32, files["q4_k_m"], llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)

    tok_samples = check_vocab_with_llamacpp(files["f16"])

    prompt = [int(t) for t in np.random.default_rng(SEED + 1).integers(0, N_REGULAR, size=N_PROMPT)]

    prompt_long = [int(t) for t in np.random.default_rng(SEED + 2).integers(0, N_REGULAR, size=N_LONG)]
    runs = {"short": (prompt, N_CTX, slice(None)), "long": (prompt_long, N_LONG, slice(N_LONG - LONG_KEEP, None))}

    results = {}
    written = [files["f16"], files["q8_0"], files["q4_k_m"]]
    ref = {run: numpy_forward(W, rope_freqs, p)[keep] for run, (p, _, keep) in runs.items()}
    for name, path in files.items():
        # numpy forward pass on this file's own (dequantized) weights: what an engine that
        # dequantizes and computes in f32 would get; the rest of the gap to llama.cpp is its
        # activation rounding (f16 / q8_0 / q8_K activations in the CPU matmuls)
        Wd = dequantized_weights(path)
        results[name] = {}
        for run, (p, n_ctx, keep) in runs.items():
            lg = llamacpp_logits(path, p, n_ctx)[keep]
            own = numpy_forward(Wd, rope_freqs, p)[keep]
            lp = out / (f"tiny-{name}.logits.npy" if run == "short" else f"tiny-{name}.long.logits.npy")
            np.save(lp, lg)
            written.append(lp)
            results[name][run] = {
                "logits": lp.name,
                "argmax": [int(a) for a in lg.argmax(-1)],
                "max_abs_diff_vs_numpy_f32": float(np.abs(lg - ref[run]).max()),
                "argmax_agree_with_numpy_f32": int((lg.argmax(-1) == ref[run].argmax(-1)).sum()),
                "max_abs_diff_vs_numpy_on_dequantized_weights": float(np.abs(lg - own).max()),
                "argmax_agree_with_numpy_on_dequantized_weights": int((lg.argmax(-1) == own.argmax(-1)).sum()),
            }
    results["numpy_f32"] = {}
    for run, (p, _, keep) in runs.items():
        np_path = out / ("tiny-f32.numpy.logits.npy" if run == "short" else "tiny-f32.numpy.long.logits.npy")
        np.save(np_path, ref[run])
        written.append(np_path)
        no_scaling = numpy_forward(W, np.ones_like(rope_freqs), p)[keep]
        results["numpy_f32"][run] = {
            "logits": np_path.name, "argmax": [int(a) for a in ref[run].argmax(-1)],
            "rope_freqs_effect_max_abs": float(np.abs(ref[run] - no_scaling).max()),
        }

    meta = {
        "generator": "testdata/tiny/make_tiny.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "gguf_py_version": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy_version": np.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "seed": SEED,
        "hparams": {
            "architecture": "llama", "vocab_size": N_VOCAB, "embedding_length": N_EMBD,
            "block_count": N_LAYER, "head_count": N_HEAD, "head_count_kv": N_HEAD_KV,
            "head_dim": HEAD_DIM, "feed_forward_length": N_FF, "rope_freq_base": ROPE_THETA,
            "rope_dimension_count": HEAD_DIM, "rope_type": "norm (adjacent pairs)",
            "context_length": N_CTX_TRAIN, "layer_norm_rms_epsilon": RMS_EPS, "tied_embeddings": False,
            "rope_scaling_hf_config": ROPE_SCALING,
            "rope_freqs": [float(x) for x in rope_freqs],
        },
        "vocab": {
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
            "source": "vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf: Llama 3 ids 0..504 (same ids)"
                      " + control tokens 505..511; merges = the Llama 3 merges (rank order) whose two"
                      " parts and result are all kept",
            "n_merges": len(vocab[2]),
            "control_tokens": {t: N_REGULAR + i for i, t in enumerate(CONTROL_TOKENS)},
            "bos_token_id": N_REGULAR, "eos_token_id": N_REGULAR + 1,
            "eot_token_id": N_REGULAR + 4, "eom_token_id": N_REGULAR + 5, "add_bos_token": True,
            "llamacpp_tokenize_samples": tok_samples,
        },
        "reference_run": {
            "api": "llama_cpp.Llama(...).eval(prompt) in one batch, logits for every position",
            "n_ctx": N_CTX, "n_batch": N_CTX, "n_ubatch": N_CTX, "n_threads": N_THREADS,
            "flash_attn": False, "type_k": "f32", "type_v": "f32", "bos_prepended": False,
            "short": {"prompt": "prompt_ids", "n_ctx": N_CTX, "positions": f"0..{N_PROMPT - 1}",
                      "logits_rows": f"all {N_PROMPT} positions"},
            "long": {"prompt": "prompt_ids_long", "n_ctx": N_LONG, "n_batch": N_LONG, "n_ubatch": N_LONG,
                     "positions": f"0..{N_LONG - 1}",
                     "logits_rows": f"last {LONG_KEEP} positions ({N_LONG - LONG_KEEP}..{N_LONG - 1})"},
        },
        "prompt_ids": prompt,
        "prompt_ids_long": prompt_long,
        "results": results,
        "tensor_types": {k: tensor_types(p) for k, p in files.items()},
        "f32_gguf_in_cache": {"path": "<cache>/tiny/tiny-f32.gguf", "sha256": sha256(f32),
                              "size": f32.stat().st_size},
        "sha256": {p.name: sha256(p) for p in written},
        "sizes": {p.name: p.stat().st_size for p in written},
    }
    (out / "tiny.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    summary = {k: {kk: ({a: b for a, b in vv.items() if a != "argmax"} if isinstance(vv, dict) else vv)
                   for kk, vv in v.items()} for k, v in results.items()}
    print(json.dumps(summary, indent=1))


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
