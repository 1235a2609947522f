#!/usr/bin/env python3
"""Golden sentence embeddings for ferrollama's BERT encoder (all-MiniLM-L6-v2).

A numpy port of what sentence-transformers computes for this model, in float64:
- tokenization: the folder's tokenizer.json through the `tokenizers` package (the same
  Rust library ferrollama links), padding off, truncated to sentence_bert_config.json's
  max_seq_length (256), as sentence-transformers' Transformer module does;
- transformers' BertModel (`modeling_bert.py`): word + absolute position + token type 0
  embeddings, LayerNorm; per layer self-attention (scores / sqrt(head_dim), softmax),
  output dense + residual + LayerNorm, intermediate dense + exact erf GELU, output dense +
  residual + LayerNorm;
- modules.json's Pooling (1_Pooling/config.json: mean over the attention mask) and
  Normalize (L2) modules.

It writes expected.json next to this script: the model's sha256, and per sentence the
token ids and the embedding (8 significant digits). The Rust tests
(crates/engine/tests/embedding.rs) need only that file and the fetched model.

    python3 -m venv V && V/bin/pip install numpy tokenizers==0.22.1
    V/bin/python testdata/minilm/make_expected.py "$(target/release/ferrollama fetch minilm)"
"""
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent

# Eight Llama 3.1 languages and then some: accents (stripped by the uncased normalizer),
# CJK (split per character), Thai/Devanagari (unknown words), emoji, control characters,
# an empty string, and a text longer than max_seq_length.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "Paris is the capital of France.",
    "How do I reset my password?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Größenänderung der Straße in München",
    "Le café est très chaud ce matin, n'est-ce pas ?",
    "Il gatto dorme sul divano tutto il pomeriggio.",
    "A população de São Paulo é enorme.",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "नमस्ते, आप कैसे हैं?",
    "ภาษาไทยเป็นภาษาที่สวยงาม",
    "我喜欢在周末读书和喝茶。",
    "東京は日本の首都です",
    "Привет, как дела?",
    "Emoji test 🚀🔥 and symbols © ® ™ — done.",
    "tab\there\nnewline\r\nand\u0000null",
    "",
    "RAG: retrieval-augmented generation combines a retriever with a generator.",
    "def add(a, b):\n    return a + b",
    "UPPER lower MiXeD CaSe 12345 3.14159",
    " ".join(["Long text for truncation number %d." % i for i in range(80)]),
]


def load_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def bert(ids, w, cfg):
    p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    n = len(ids)
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = h // heads
    eps = cfg["layer_norm_eps"]
    x = (
        w[p + "embeddings.word_embeddings.weight"][ids]
        + w[p + "embeddings.position_embeddings.weight"][:n]
        + w[p + "embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        L = f"{p}encoder.layer.{i}."
        lin = lambda t, name: t @ w[L + name + ".weight"].T + w[L + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # (heads, n, n)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        a = layer_norm(lin(ctx, "attention.output.dense") + x, w[L + "attention.output.LayerNorm.weight"], w[L + "attention.output.LayerNorm.bias"], eps)
        f = gelu(lin(a, "intermediate.dense"))
        x = layer_norm(lin(f, "output.dense") + a, w[L + "output.LayerNorm.weight"], w[L + "output.LayerNorm.bias"], eps)
    return x  # (n, hidden)


def main():
    model = Path(sys.argv[1])
    cfg = json.loads((model / "config.json").read_text())
    max_len = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"]
    pooling = json.loads((model / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"], "this port does mean pooling only"
    modules = json.loads((model / "modules.json").read_text())
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    w = load_safetensors(model / "model.safetensors")
    sha = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    cases = []
    for text in SENTENCES:
        ids = tok.encode(text).ids
        hidden = bert(ids, w, cfg)
        e = hidden.mean(0)  # every token is real: no padding
        if normalize:
            e = e / max(np.linalg.norm(e), 1e-12)
        cases.append({"text": text, "ids": ids, "embedding": [float("%.8g" % v) for v in e]})
        print(f"{len(ids):4d} tokens  {text[:50]!r}", file=sys.stderr)
    out = {"model_sha256": sha, "max_seq_length": max_len, "normalize": normalize, "cases": cases}
    (HERE / "expected.json").write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n")


if __name__ == "__main__":
    main()
