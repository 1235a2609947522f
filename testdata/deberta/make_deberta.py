#!/usr/bin/env python3
"""Golden logits for ferrollama's DeBERTa-v3 classifier (Prompt Guard's architecture).

A numpy-only port of Hugging Face transformers' `DebertaV2ForSequenceClassification`
forward pass (`transformers/models/deberta_v2/modeling_deberta_v2.py`, v5.x): embeddings
(word embeddings, LayerNorm; v3 has no absolute positions and no token types),
disentangled self-attention with the c2p and p2c terms over log-bucketed relative
positions, relative embeddings normed by the encoder LayerNorm, shared attention keys,
the ContextPooler and the classifier.

It builds small SEEDED random models and writes, next to this script:
- model/       HF folder: config.json, model.safetensors (F32; written by hand: u64 header
               length + JSON header + raw little-endian bytes). The tokenizer files in it
               (tokenizer.json, spm.model) come from make_tokenizer.py and are only read.
- model-b16/   a second config: position_buckets 16 (log buckets from |d| > 8 on),
               share_att_key false (separate pos_key_proj / pos_query_proj), F16 weights.
- expected.json  logits and probabilities for token-id sequences: the texts of
               tokens.json (from make_tokenizer.py) wrapped [CLS] .. [SEP], and random
               sequences of 300 and 512 tokens (beyond the bucket range).

Computation is float64 except the bucket positions, which follow torch's float32 ops.
Only numpy is needed: `python3 make_deberta.py`.

`python3 make_deberta.py --prompt-guard-shape DIR` instead writes a random model of
Prompt-Guard-86M's shape (hidden 768, 12 layers, 12 heads, intermediate 3072, vocabulary
251000; about 1.1 GB, F32) with this folder's tokenizer, for benchmarks; nothing else.
"""

import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = ["BENIGN", "INJECTION", "JAILBREAK"]


# ---------------------------------------------------------------- safetensors
def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray) in F32 or F16."""
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        dt = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- the model
def config_for(vocab_size, position_buckets, share_att_key):
    return {
        "architectures": ["DebertaV2ForSequenceClassification"],
        "model_type": "deberta-v2",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
        "relative_attention": True,
        "max_relative_positions": -1,
        "position_buckets": position_buckets,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": share_att_key,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-7,
        "type_vocab_size": 0,
        "pad_token_id": 0,
        "pooler_hidden_size": 32,
        "pooler_hidden_act": "gelu",
        "pooler_dropout": 0,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "id2label": {str(i): l for i, l in enumerate(LABELS)},
        "label2id": {l: i for i, l in enumerate(LABELS)},
        "torch_dtype": "float32",
    }


def random_weights(cfg, seed):
    rng = np.random.default_rng(seed)
    h, inter, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    span = cfg["position_buckets"] if cfg["position_buckets"] > 0 else cfg["max_position_embeddings"]

    def mat(r, c, s=None):
        return (rng.standard_normal((r, c)) * (s or 1.0 / math.sqrt(c))).astype(np.float32)

    def vec(n, s=0.1, base=0.0):
        return (base + rng.standard_normal(n) * s).astype(np.float32)

    w = [
        ("deberta.embeddings.word_embeddings.weight", mat(cfg["vocab_size"], h, 1.0)),
        ("deberta.embeddings.LayerNorm.weight", vec(h, 0.1, 1.0)),
        ("deberta.embeddings.LayerNorm.bias", vec(h)),
    ]
    for i in range(L):
        p = f"deberta.encoder.layer.{i}."
        for proj in ["query_proj", "key_proj", "value_proj"]:
            w += [(p + f"attention.self.{proj}.weight", mat(h, h)), (p + f"attention.self.{proj}.bias", vec(h))]
        if not cfg["share_att_key"]:
            for proj in ["pos_key_proj", "pos_query_proj"]:
                w += [(p + f"attention.self.{proj}.weight", mat(h, h)), (p + f"attention.self.{proj}.bias", vec(h))]
        w += [
            (p + "attention.output.dense.weight", mat(h, h)),
            (p + "attention.output.dense.bias", vec(h)),
            (p + "attention.output.LayerNorm.weight", vec(h, 0.1, 1.0)),
            (p + "attention.output.LayerNorm.bias", vec(h)),
            (p + "intermediate.dense.weight", mat(inter, h)),
            (p + "intermediate.dense.bias", vec(inter)),
            (p + "output.dense.weight", mat(h, inter)),
            (p + "output.dense.bias", vec(h)),
            (p + "output.LayerNorm.weight", vec(h, 0.1, 1.0)),
            (p + "output.LayerNorm.bias", vec(h)),
        ]
    w += [
        ("deberta.encoder.rel_embeddings.weight", mat(2 * span, h, 1.0)),
        ("deberta.encoder.LayerNorm.weight", vec(h, 0.1, 1.0)),
        ("deberta.encoder.LayerNorm.bias", vec(h)),
        ("pooler.dense.weight", mat(cfg["pooler_hidden_size"], h)),
        ("pooler.dense.bias", vec(cfg["pooler_hidden_size"])),
        # Large enough that the three logits differ clearly.
        ("classifier.weight", mat(len(LABELS), cfg["pooler_hidden_size"], 1.0)),
        ("classifier.bias", vec(len(LABELS), 0.5)),
    ]
    return w


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


_erf = np.vectorize(math.erf)


def gelu(x):
    # transformers' "gelu": the exact erf form.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def make_log_bucket_position(rel, bucket_size, max_position):
    # torch does this in float32 (int tensor / int -> float32); so do we.
    f32 = np.float32
    sign = np.sign(rel)
    mid = bucket_size // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    log_pos = (
        np.ceil(
            np.log(abs_pos.astype(f32) / f32(mid)) / np.log(f32((max_position - 1) / mid)) * f32(mid - 1)
        ).astype(f32)
        + f32(mid)
    )
    bucket = np.where(abs_pos <= mid, rel.astype(f32), log_pos * sign.astype(f32))
    return bucket.astype(np.int64)


def build_relative_position(n, bucket_size, max_position):
    ids = np.arange(n, dtype=np.int64)
    rel = ids[:, None] - ids[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = make_log_bucket_position(rel, bucket_size, max_position)
    return rel  # (n, n): bucket(i - j)


def forward(cfg, W, ids):
    """logits (3,) for one sequence `ids` (already [CLS] .. [SEP])."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    h, H = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // H
    eps = cfg["layer_norm_eps"]
    n = len(ids)
    max_rel = cfg["max_relative_positions"]
    if max_rel < 1:
        max_rel = cfg["max_position_embeddings"]
    buckets = cfg["position_buckets"]
    span = buckets if buckets > 0 else max_rel

    x = W["deberta.embeddings.word_embeddings.weight"][np.array(ids)]  # (n, h)
    x = layer_norm(x, W["deberta.embeddings.LayerNorm.weight"], W["deberta.embeddings.LayerNorm.bias"], eps)
    # mask of ones: x * 1

    rel_pos = build_relative_position(n, buckets, max_rel)  # (n, n)
    rel_emb = layer_norm(
        W["deberta.encoder.rel_embeddings.weight"],
        W["deberta.encoder.LayerNorm.weight"],
        W["deberta.encoder.LayerNorm.bias"],
        eps,
    )[: 2 * span]  # (2span, h)

    def heads(t):  # (m, h) -> (H, m, d)
        return t.reshape(t.shape[0], H, d).transpose(1, 0, 2)

    n_terms = 1 + len(cfg["pos_att_type"])
    scale = math.sqrt(d * n_terms)
    c2p_pos = np.clip(rel_pos + span, 0, 2 * span - 1)  # (n, n)
    p2c_pos = np.clip(-rel_pos + span, 0, 2 * span - 1)  # (n, n)
    rows = np.arange(n)[:, None]
    for i in range(cfg["num_hidden_layers"]):
        p = f"deberta.encoder.layer.{i}."

        def lin(name, t):
            return t @ W[p + name + ".weight"].T + W[p + name + ".bias"]

        q = heads(lin("attention.self.query_proj", x))  # (H, n, d)
        k = heads(lin("attention.self.key_proj", x))
        v = heads(lin("attention.self.value_proj", x))
        if cfg["share_att_key"]:
            pq = heads(lin("attention.self.query_proj", rel_emb))  # (H, 2span, d)
            pk = heads(lin("attention.self.key_proj", rel_emb))
        else:
            pq = heads(lin("attention.self.pos_query_proj", rel_emb))
            pk = heads(lin("attention.self.pos_key_proj", rel_emb))
        scores = q @ (k / scale).transpose(0, 2, 1)  # (H, n, n)
        c2p = q @ pk.transpose(0, 2, 1)  # (H, n, 2span)
        scores = scores + c2p[:, rows, c2p_pos] / scale  # [h, i, c2p_pos[i, j]]
        p2c = k @ pq.transpose(0, 2, 1)  # (H, n, 2span): key j against position rows
        g = p2c[:, rows, p2c_pos]  # [h, a, b] = p2c[h, a, p2c_pos[a, b]]
        scores = scores + g.transpose(0, 2, 1) / scale
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, h)  # (n, h)
        a = layer_norm(
            lin("attention.output.dense", ctx) + x,
            W[p + "attention.output.LayerNorm.weight"],
            W[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        f = gelu(lin("intermediate.dense", a))
        x = layer_norm(
            lin("output.dense", f) + a, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps
        )

    pooled = gelu(x[0] @ W["pooler.dense.weight"].T + W["pooler.dense.bias"])
    return pooled @ W["classifier.weight"].T + W["classifier.bias"]


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def case(cfg, W, name, ids, text=None):
    logits = forward(cfg, W, ids)
    c = {"name": name}
    if text is not None:
        c["text"] = text
    c["ids"] = [int(i) for i in ids]
    c["logits"] = [float(v) for v in logits]
    c["probs"] = [float(v) for v in softmax(logits)]
    return c


def prompt_guard_shape(out_dir):
    tok = json.load(open(os.path.join(HERE, "tokens.json")))
    cfg = config_for(251000, 256, True)
    cfg.update(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, pooler_hidden_size=768)
    os.makedirs(out_dir, exist_ok=True)
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), random_weights(cfg, 3))
    for f in ["tokenizer.json", "spm.model"]:
        with open(os.path.join(HERE, "model", f), "rb") as src, open(os.path.join(out_dir, f), "wb") as dst:
            dst.write(src.read())
    assert tok["vocab_size"] <= cfg["vocab_size"]


def main():
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--prompt-guard-shape":
        return prompt_guard_shape(sys.argv[2])
    tok = json.load(open(os.path.join(HERE, "tokens.json")))
    vocab_size, cls, sep = tok["vocab_size"], tok["cls"], tok["sep"]
    rng = np.random.default_rng(1234)
    out = {}

    # Model A: Prompt Guard's settings (256 buckets, shared keys), F32.
    cfg = config_for(vocab_size, 256, True)
    weights = random_weights(cfg, 7)
    os.makedirs(os.path.join(HERE, "model"), exist_ok=True)
    json.dump(cfg, open(os.path.join(HERE, "model", "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(HERE, "model", "model.safetensors"), weights)
    W = dict(weights)
    cases = [case(cfg, W, t["name"], [cls] + t["ids"] + [sep], t["text"]) for t in tok["texts"]]
    for n in [300, 512]:
        ids = [cls] + [int(i) for i in rng.integers(4, vocab_size, n - 2)] + [sep]
        cases.append(case(cfg, W, f"random-{n}", ids))
    out["model"] = cases

    # Model B: 16 buckets, separate position projections, F16 weights.
    cfg = config_for(vocab_size, 16, False)
    weights = [(k, v.astype(np.float16)) for k, v in random_weights(cfg, 11)]
    os.makedirs(os.path.join(HERE, "model-b16"), exist_ok=True)
    json.dump(cfg, open(os.path.join(HERE, "model-b16", "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(HERE, "model-b16", "model.safetensors"), weights)
    W = {k: v.astype(np.float32) for k, v in weights}
    cases = []
    for n in [2, 40, 300]:
        ids = [cls] + [int(i) for i in rng.integers(4, vocab_size, n - 2)] + [sep]
        cases.append(case(cfg, W, f"random-{n}", ids))
    out["model-b16"] = cases

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
