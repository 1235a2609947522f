#!/usr/bin/env python3
"""Prompt Guard speed: `ferrollama prompt-guard --jsonl` against ONNX Runtime, same model,
same token ids, same threads.

The ONNX graph is built here from the safetensors file with onnx.helper, following
transformers' `DebertaV2ForSequenceClassification` (what an `optimum` export computes):
per layer the q/k/v projections, the position keys/queries `key_proj(LN(rel))` /
`query_proj(LN(rel))` computed in the graph as HF does on every call, c2p/p2c products
gathered with the relative-position index (given as an input, computed in numpy with the
same log buckets), softmax, output dense + LayerNorm, GELU FFN + LayerNorm, then the pooler
and classifier. ORT applies its own fusions (LayerNorm, Gelu, MatMul+Add).

    python3 bench/prompt_guard_ort.py check                  # the graph vs expected.json
    python3 bench/prompt_guard_ort.py bench MODEL_DIR TEXTS.jsonl THREADS [FERROLLAMA]

`bench` tokenizes every text with the folder's tokenizer.json (the `tokenizers` package),
times ORT on the windows ([CLS] ids[:510] [SEP]) one at a time, then runs the ferrollama
binary on the same lines and prints both throughputs. Needs numpy, onnx, onnxruntime,
tokenizers.
"""

import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "testdata", "deberta"))
from make_deberta import build_relative_position  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": np.float32, "F16": np.float16}[v["dtype"]]
        out[k] = np.frombuffer(data[s:e], dtype=dt).reshape(v["shape"]).astype(np.float32)
    return out


def build(cfg, W):
    h, H = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // H
    eps = cfg["layer_norm_eps"]
    buckets = cfg["position_buckets"]
    max_rel = cfg["max_relative_positions"]
    if max_rel < 1:
        max_rel = cfg["max_position_embeddings"]
    span = buckets if buckets > 0 else max_rel
    scale = math.sqrt(d * 3)
    nodes, inits = [], []
    cnt = [0]

    def name(p="t"):
        cnt[0] += 1
        return f"{p}{cnt[0]}"

    def const(a, p="c"):
        n = name(p)
        inits.append(numpy_helper.from_array(np.asarray(a), n))
        return n

    def op(t, ins, **kw):
        o = name(t.lower())
        nodes.append(helper.make_node(t, ins, [o], **kw))
        return o

    def linear(x, prefix):
        return op("Add", [op("MatMul", [x, const(W[prefix + ".weight"].T.copy())]), const(W[prefix + ".bias"])])

    def ln(x, prefix):
        return op("LayerNormalization", [x, const(W[prefix + ".weight"]), const(W[prefix + ".bias"])], axis=-1, epsilon=eps)

    def gelu(x):
        return op("Gelu", [x])

    def heads(x):  # (m, h) -> (H, m, d)
        return op("Transpose", [op("Reshape", [x, const(np.array([-1, H, d], np.int64))])], perm=[1, 0, 2])

    ids = "ids"
    c2p_idx, p2c_idx = "c2p_idx", "p2c_idx"  # (H, n, n) int64
    x = op("Gather", [const(W["deberta.embeddings.word_embeddings.weight"]), ids])
    x = ln(x, "deberta.embeddings.LayerNorm")
    rel = ln(const(W["deberta.encoder.rel_embeddings.weight"][: 2 * span]), "deberta.encoder.LayerNorm")
    s = const(np.float32(scale))
    for i in range(cfg["num_hidden_layers"]):
        p = f"deberta.encoder.layer.{i}."
        q = heads(linear(x, p + "attention.self.query_proj"))
        k = heads(linear(x, p + "attention.self.key_proj"))
        v = heads(linear(x, p + "attention.self.value_proj"))
        pos = "" if cfg["share_att_key"] else "pos_"
        pq = heads(linear(rel, p + f"attention.self.{pos}query_proj"))
        pk = heads(linear(rel, p + f"attention.self.{pos}key_proj"))
        kt = op("Transpose", [k], perm=[0, 2, 1])
        scores = op("Div", [op("MatMul", [q, kt]), s])
        c2p = op("MatMul", [q, op("Transpose", [pk], perm=[0, 2, 1])])
        c2p = op("GatherElements", [c2p, c2p_idx], axis=2)
        p2c = op("MatMul", [k, op("Transpose", [pq], perm=[0, 2, 1])])
        p2c = op("Transpose", [op("GatherElements", [p2c, p2c_idx], axis=2)], perm=[0, 2, 1])
        scores = op("Add", [scores, op("Div", [op("Add", [c2p, p2c]), s])])
        probs = op("Softmax", [scores], axis=-1)
        ctx = op("Reshape", [op("Transpose", [op("MatMul", [probs, v])], perm=[1, 0, 2]), const(np.array([-1, h], np.int64))])
        a = ln(op("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        f = gelu(linear(a, p + "intermediate.dense"))
        x = ln(op("Add", [linear(f, p + "output.dense"), a]), p + "output.LayerNorm")
    cls = op("Gather", [x, const(np.array([0], np.int64))])
    pooled = gelu(linear(cls, "pooler.dense"))
    logits = linear(pooled, "classifier")
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes,
        "deberta",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info(c2p_idx, TensorProto.INT64, [H, "n", "n"]),
            helper.make_tensor_value_info(p2c_idx, TensorProto.INT64, [H, "n", "n"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


class OrtDeberta:
    def __init__(self, model_dir, threads):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        W = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        m = build(self.cfg, W)
        path = os.path.join("/tmp", f"deberta-{os.getpid()}.onnx")
        onnx.save(m, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        c = self.cfg
        self.H = c["num_attention_heads"]
        b = c["position_buckets"]
        mr = c["max_relative_positions"] if c["max_relative_positions"] >= 1 else c["max_position_embeddings"]
        self.b, self.mr, self.span = b, mr, b if b > 0 else mr

    def logits(self, ids):
        n = len(ids)
        r = build_relative_position(n, self.b, self.mr)
        c2p = np.clip(r + self.span, 0, 2 * self.span - 1)
        p2c = np.clip(-r + self.span, 0, 2 * self.span - 1)
        feed = {
            "ids": np.array(ids, np.int64),
            "c2p_idx": np.broadcast_to(c2p, (self.H, n, n)).copy(),
            "p2c_idx": np.broadcast_to(p2c, (self.H, n, n)).copy(),
        }
        return self.sess.run(["logits"], feed)[0][0]


def check():
    exp = json.load(open(os.path.join(HERE, "..", "testdata", "deberta", "expected.json")))
    worst = 0.0
    for model, cases in exp.items():
        m = OrtDeberta(os.path.join(HERE, "..", "testdata", "deberta", model), 1)
        for c in cases:
            got = m.logits(c["ids"])
            worst = max(worst, float(np.max(np.abs(got - np.array(c["logits"])))))
    print(f"ONNX Runtime graph vs expected.json: max |logit difference| = {worst:.2e}")
    assert worst < 1e-3


def bench(model_dir, texts_path, threads, binary):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    texts = [json.loads(l)["text"] for l in open(texts_path) if l.strip()]
    windows = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        chunks = [ids[i : i + 510] for i in range(0, len(ids), 510)] or [[]]
        windows.append([[cls] + c + [sep] for c in chunks])
    m = OrtDeberta(model_dir, threads)
    m.logits(windows[0][0])  # warm-up
    t0 = time.perf_counter()
    for ws in windows:
        for w in ws:
            m.logits(w)
    ort_s = time.perf_counter() - t0
    n_tok = sum(len(w) - 2 for ws in windows for w in ws)
    print(f"onnxruntime {ort.__version__}: {len(texts)} texts, {n_tok} tokens, {ort_s:.3f} s, "
          f"{len(texts) / ort_s:.2f} texts/s ({threads} threads)")
    for fmt in ["f32", "q8_0"]:
        r = subprocess.run(
            [binary, "prompt-guard", "-m", model_dir, "--jsonl", "--threads", str(threads), "--weights", fmt],
            stdin=open(texts_path, "rb"), capture_output=True, text=True,
        )
        line = [l for l in r.stderr.splitlines() if "texts/s" in l][-1]
        ours = float(line.split(" s: ")[1].split(" texts/s")[0])
        print(f"ferrollama {fmt}: {line.strip()}  -> {ours / (len(texts) / ort_s):.2f}x onnxruntime")


if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        check()
    else:
        bench(sys.argv[2], sys.argv[3], int(sys.argv[4]),
              sys.argv[5] if len(sys.argv) > 5 else "target/release/ferrollama")
