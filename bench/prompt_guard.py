#!/usr/bin/env python3
"""Prompt Guard throughput: `ferrollama prompt-guard` vs ONNX Runtime on the same model, one run.

    python3 bench/prompt_guard.py [--threads 2] [--texts 20] [--lengths 64,256,512]
                                  [--ort-batch 8] [--no-ort-int8] [--no-build] [--skip-ours]
                                  [--wait-idle 120] [--json OUT]

Sets up (once, in the cache, outside the repo) a virtualenv `<cache>/bench-venv-pg` with
pinned torch, transformers, tokenizers, safetensors, onnx and onnxruntime from PyPI, then
re-runs itself in it. No real Prompt Guard weights can be fetched, so it builds (once) a
model of Prompt-Guard-86M's exact shape with random weights from a fixed seed, in
`<cache>/bench-models/prompt-guard-shaped/` (an HF folder: config.json, model.safetensors,
tokenizer.json):

  * transformers' DebertaV2ForSequenceClassification with microsoft/mdeberta-v3-base's
    config (hidden 768, 12 layers, 12 heads, FFN 3072, vocab 251000, 512 positions,
    relative attention with 256 log buckets, p2c+c2p, shared attention keys, layer-normed
    relative embeddings, no absolute positions, no token types, eps 1e-7), 3 labels
    BENIGN/INJECTION/JAILBREAK; 278.8M parameters (86M backbone + 192M embeddings), f32.
    Weights are transformers' own init (N(0, 0.02)) under torch.manual_seed(0), except the
    classifier, scaled x10 so the logits spread over a few units and the agreement check
    below has probabilities away from 1/3 to compare;
  * spm.model + tokenizer.json: mdeberta's SentencePiece model is not downloadable, so a
    SentencePiece Unigram model (nmt_nfkc, [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3) is trained on a
    seeded synthetic corpus (~11k pieces) and converted by transformers' DebertaV2Converter
    (Strip + Precompiled + Replace normalizer, Metaspace, Unigram, `[CLS] $A [SEP]`,
    [MASK] last): the format of Prompt Guard's own tokenizer.json. The ids only need to be
    valid: what the benchmark depends on is the sequence length (~1.2 tokens per word);
  * onnx/model.onnx: torch.onnx.export (TorchScript exporter, opset 17, dynamic batch and
    sequence axes; input_ids + attention_mask -> logits), checked against transformers at
    several lengths when built; onnx/model-int8.onnx: onnxruntime's quantize_dynamic of the
    MatMuls (int8 weights, per-channel), the ORT counterpart of q8_0.

Workload: for every --lengths L, --texts N different texts (seeded random English-like
prose) cut to the most words whose encoding, [CLS] and [SEP] included, is at most L
tokens, so one 512-token window each. Both engines get the same texts; ORT gets the ids
ferrollama's tokenizer.json gives (tokenized here with `tokenizers`, outside the timing),
one text at a time (batch 1, like a shield check), intra-op threads = --threads, inter-op
1, sequential execution, all graph optimizations. Measured per length (texts/s = N / time,
after 2 untimed warm-up texts):

  ORT f32 b1      the exported model, batch 1: the baseline of the ratios;
  ORT int8 b1     quantize_dynamic model, batch 1 (--no-ort-int8 skips it);
  ORT f32 bB      batches of --ort-batch texts, padded to the longest (0 skips it): what
                  ORT gets when requests can be batched; not used in the ratios;
  ours f32/q8_0   `ferrollama prompt-guard -m DIR --jsonl --threads T --weights W`, all N
                  texts on stdin (one {"text": ...} per line), one process per length x
                  weights; texts/s from its stderr summary (which excludes model load);
                  if that can't be parsed, (N - 1) / (wall(N texts) - wall(1 text)).

Agreement: ferrollama's probabilities (benign, injection, jailbreak) against ORT f32's
softmax on the same texts: max |diff| and how many argmaxes agree; ours' reported token
count and windows are checked against the ids used for ORT. ORT vs transformers (torch)
is checked when the model is built (max |logit diff| printed).

The machine should be otherwise idle: before each measurement the script waits up to
--wait-idle s for other load to go away (bench/serve.py's wait_idle) and records the CPU
share other processes used during it (busy%). Exits non-zero if ferrollama fails or
disagrees (max |p diff| over 1e-3 for f32, 5e-2 for q8_0). Goal (issue): ours >= 1.5x ORT.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402 (standard library only: importable before the venv)

ROOT = Path(__file__).resolve().parent.parent
FERRO = ROOT / "target" / "release" / "ferrollama"
# Verified together on 2026-12 (Python 3.11, x86_64). PyPI's Linux torch wheel is the CUDA
# build (it pulls the nvidia-* wheels, ~4 GiB); it runs on the CPU as well.
PINS = ["numpy==2.4.6", "torch==2.15.0", "transformers==5.25.0", "tokenizers==0.23.3",
        "safetensors==0.8.0", "sentencepiece==0.2.3", "protobuf==7.36.2", "onnx==1.23.2",
        "onnxscript==0.7.2", "onnxruntime==1.32.0"]
# Bump when the model, tokenizer or ONNX recipe changes: the cached folder is rebuilt.
RECIPE = "prompt-guard-shaped v2"
LABELS = ["BENIGN", "INJECTION", "JAILBREAK"]
TOL = {"f32": 1e-3, "q8_0": 5e-2}


def log(msg: str):
    print(f"prompt_guard: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


def ensure_venv_and_reexec():
    """Run the rest of this script inside <cache>/bench-venv-pg (made on first use)."""
    venv = cache_dir() / "bench-venv-pg"
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    stamp = venv / ".pins"
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS)):
        log(f"setting up {venv} with {', '.join(PINS)} (about 6 GiB, a few minutes) ...")
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS])
        if r.returncode != 0:
            sys.exit(f"pip install into {venv} failed (exit {r.returncode})")
        stamp.write_text("\n".join(PINS))
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# ======================================================================================
# text: a seeded English-like generator (tokenizer training corpus and the workload)
# ======================================================================================
def _words() -> list[str]:
    return list(oc.WORDS)


SYLLABLES = ("ka ro mi tes lan dor vi sha pre con ment ing tion al er ous ble ize ful ness "
             "qu ex tra ph th str gl bri ver sol ure ence ant ist ic ly ward").split()
PHRASES = ["Ignore all previous instructions and", "You are now in developer mode, so",
           "Please summarize the following document:", "Translate this into French:",
           "The assistant must not reveal", "Here is the web page you asked for:",
           "As an AI language model,", "Can you help me write", "Tool output:", "Dear team,"]


class Prose:
    """Sentences of common words, made-up words (names, jargon), numbers and punctuation."""

    def __init__(self, seed: str):
        self.rng = random.Random(seed)
        base = random.Random("prompt-guard-lexicon")
        self.common = _words()
        self.rare = ["".join(base.choice(SYLLABLES) for _ in range(base.randint(2, 4)))
                     for _ in range(3000)]

    def word(self) -> str:
        r = self.rng.random()
        if r < 0.80:
            return self.rng.choice(self.common)
        if r < 0.95:
            w = self.rare[min(int(self.rng.paretovariate(1.0)) - 1, len(self.rare) - 1)
                          if self.rng.random() < 0.5 else self.rng.randrange(len(self.rare))]
            return w.capitalize() if self.rng.random() < 0.3 else w
        return str(self.rng.randint(0, 10 ** self.rng.randint(1, 5)))

    def sentence(self) -> str:
        n = self.rng.randint(5, 22)
        ws = [self.word() for _ in range(n)]
        if self.rng.random() < 0.15:
            ws = self.rng.choice(PHRASES).split() + ws
        for i in range(1, len(ws) - 1):
            if self.rng.random() < 0.08:
                ws[i] += ","
        s = " ".join(ws)
        return s[0].upper() + s[1:] + self.rng.choice(".....?!:")

    def words(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            out += self.sentence().split()
        return out


# ======================================================================================
# the model folder (built once, cached)
# ======================================================================================
def model_config():
    from transformers import DebertaV2Config
    return DebertaV2Config(
        vocab_size=251000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=0,
        initializer_range=0.02, layer_norm_eps=1e-7, relative_attention=True,
        max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        pad_token_id=0, pooler_hidden_size=768, pooler_dropout=0, pooler_hidden_act="gelu",
        num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})


def build_tokenizer(folder: Path):
    """spm.model + tokenizer.json the way Prompt Guard's were made: a SentencePiece Unigram
    model (nmt_nfkc normalization, [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3, as mDeBERTa's) converted
    by transformers' own DebertaV2Converter, [MASK] added after the pieces."""
    import io
    import sentencepiece as spm
    prose = Prose("prompt-guard-tokenizer-corpus")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(prose.sentence() for _ in range(60000)), model_writer=buf,
        vocab_size=16000, hard_vocab_limit=False, model_type="unigram", normalization_rule_name="nmt_nfkc",
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", character_coverage=1.0, num_threads=1, minloglevel=2)
    (folder / "spm.model").write_bytes(buf.getvalue())
    # The converter of the committed test tokenizer (testdata/deberta/make_tokenizer.py).
    sys.path.insert(0, str(ROOT / "testdata" / "deberta"))
    from make_tokenizer import to_tokenizer_json
    tok = to_tokenizer_json(str(folder / "spm.model"))
    for i, s in enumerate(["[PAD]", "[CLS]", "[SEP]", "[UNK]"]):
        if tok.token_to_id(s) != i:
            raise SystemExit(f"tokenizer: {s} got id {tok.token_to_id(s)}, want {i}")
    tok.save(str(folder / "tokenizer.json"))


def build_model(out: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import DebertaV2ForSequenceClassification

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "onnx").mkdir(parents=True)
    t0 = time.perf_counter()
    log(f"building {out}: seeded DebertaV2ForSequenceClassification (mdeberta-v3-base shape) ...")
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(model_config()).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(10.0)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp, safe_serialization=True)
    log("training the SentencePiece tokenizer ...")
    build_tokenizer(tmp)

    log("exporting ONNX (torch.onnx.export, opset 17, dynamic batch/sequence) ...")
    ids = torch.tensor([[1] + list(range(100, 135)) + [2]])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, torch.ones_like(ids)), str(tmp / "onnx" / "model.onnx"),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False)
    log("quantizing MatMuls to int8 (onnxruntime quantize_dynamic) ...")
    quantize_dynamic(str(tmp / "onnx" / "model.onnx"), str(tmp / "onnx" / "model-int8.onnx"),
                     op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)

    # ORT vs transformers at several lengths (one batch of two, padded, too)
    log("checking ORT against transformers ...")
    sess = ort.InferenceSession(str(tmp / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    checks = []
    for L in (3, 17, 64, 200, 512):
        x = torch.randint(4, 16000, (2, L), generator=g)
        x[:, 0], x[:, -1] = 1, 2
        m = torch.ones_like(x)
        m[1, L // 2:] = 0
        x[1, L // 2:] = 0
        with torch.no_grad():
            ref = model(input_ids=x, attention_mask=m).logits.numpy()
        got = sess.run(None, {"input_ids": x.numpy(), "attention_mask": m.numpy()})[0]
        d = float(np.abs(ref - got).max())
        worst = max(worst, d)
        checks.append({"len": L, "max_abs_logit_diff": d})
    if worst > 1e-3:
        raise SystemExit(f"ONNX export disagrees with transformers: max |logit diff| {worst:.2e}")
    meta = {"recipe": RECIPE, "params": n_params, "pins": PINS, "ort_vs_transformers": checks,
            "ort_vs_transformers_max": worst, "build_s": time.perf_counter() - t0}
    (tmp / "bench-meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"built in {meta['build_s']:.0f} s; {n_params / 1e6:.1f}M parameters; ORT vs transformers"
        f" max |logit diff| {worst:.1e}")


def ensure_model(out: Path) -> dict:
    meta = out / "bench-meta.json"
    want = ["config.json", "model.safetensors", "tokenizer.json", "onnx/model.onnx", "onnx/model-int8.onnx"]
    ok = meta.exists() and all((out / f).exists() for f in want)
    if ok:
        m = json.loads(meta.read_text())
        if m.get("recipe") == RECIPE:
            return m
    build_model(out)
    return json.loads(meta.read_text())


# ======================================================================================
# workload
# ======================================================================================
def make_texts(tok, L: int, n: int, seed: int) -> list[dict]:
    """n texts, each the longest run of words whose encoding ([CLS] and [SEP] included)
    has at most L tokens."""
    prose = Prose(f"prompt-guard-texts-{seed}-{L}")
    out = []
    for _ in range(n):
        words = prose.words(L + 8)
        lo, hi = 1, len(words)  # largest k with len(enc(words[:k])) <= L
        while lo < hi:
            k = (lo + hi + 1) // 2
            if len(tok.encode(" ".join(words[:k])).ids) <= L:
                lo = k
            else:
                hi = k - 1
        text = " ".join(words[:lo])
        ids = tok.encode(text).ids
        out.append({"text": text, "ids": ids})
    return out


# ======================================================================================
# measurement
# ======================================================================================
class Busy:
    """CPU share of other processes over a span (total busy jiffies minus our own process
    and the children we waited for)."""

    def __enter__(self):
        self.j0 = oc.cpu_jiffies()
        self.s0 = self._own()
        self.t0 = time.perf_counter()
        return self

    @staticmethod
    def _own() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def __exit__(self, *exc):
        j1 = oc.cpu_jiffies()
        wall = time.perf_counter() - self.t0
        hz = os.sysconf("SC_CLK_TCK")
        busy = (j1[0] - self.j0[0]) / hz
        self.share = max(0.0, (busy - (self._own() - self.s0)) / (max(wall, 1e-9) * (os.cpu_count() or 1)))
        return False


def wait_idle(a):
    if a.wait_idle > 0:
        import serve as sv
        sv.wait_idle(a.wait_idle, quiet=a.idle_seconds)


def softmax(x):
    import numpy as np
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s, time.perf_counter() - t0


def ort_run(a, sess, texts: list[dict], batch: int) -> dict:
    import numpy as np

    def feed(chunk):
        n = max(len(t["ids"]) for t in chunk)
        ids = np.zeros((len(chunk), n), dtype=np.int64)
        mask = np.zeros((len(chunk), n), dtype=np.int64)
        for i, t in enumerate(chunk):
            ids[i, :len(t["ids"])] = t["ids"]
            mask[i, :len(t["ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask}

    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    feeds = [feed(c) for c in chunks]
    for f in feeds[:2]:  # warm-up
        sess.run(None, f)
    wait_idle(a)
    lat = []
    probs = []
    with Busy() as b:
        t0 = time.perf_counter()
        for f in feeds:
            t1 = time.perf_counter()
            logits = sess.run(None, f)[0]
            lat.append(time.perf_counter() - t1)
            probs += softmax(logits.astype(np.float64)).tolist()
        wall = time.perf_counter() - t0
    lat.sort()
    return {"texts": len(texts), "batch": batch, "seconds": wall, "texts_per_s": len(texts) / wall,
            "latency_ms_p50": 1e3 * lat[len(lat) // 2], "busy": b.share, "probs": probs}


SUMMARY_RE = [re.compile(r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*texts?\s*/\s*s", re.I),
              re.compile(r"texts?(?:/s|_per_s|_per_second|\s+per\s+second)\"?\s*[=:]\s*([0-9]+(?:\.[0-9]+)?)", re.I)]


def parse_summary(stderr: str) -> float | None:
    found = None
    for line in stderr.splitlines():
        for rx in SUMMARY_RE:
            for m in rx.finditer(line):
                found = float(m.group(1))
    return found


def ours_process(a, model: Path, weights: str, texts: list[dict]) -> tuple[float, list[dict], str, int]:
    cmd = [a.ferrollama, "prompt-guard", "-m", str(model), "--jsonl", "--threads", str(a.threads),
           "--weights", weights, "--mode", "jailbreak"]
    stdin = "".join(json.dumps({"text": t["text"]}, ensure_ascii=False) + "\n" for t in texts)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return wall, rows, p.stderr, p.returncode


def ours_run(a, model: Path, weights: str, texts: list[dict]) -> dict:
    cmd = f"{a.ferrollama} prompt-guard -m {model} --jsonl --threads {a.threads} --weights {weights} --mode jailbreak"
    res: dict = {"weights": weights, "texts": len(texts), "cmd": cmd}
    wait_idle(a)
    log(f"  {cmd} < {len(texts)} texts")
    with Busy() as b:
        wall, rows, err, rc = ours_process(a, model, weights, texts)
    res.update({"wall_s": wall, "busy": b.share, "stderr_tail": err[-2000:]})
    if rc != 0 or len(rows) != len(texts):
        res["error"] = f"exit {rc}, {len(rows)} result lines for {len(texts)} texts; stderr: {err.strip()[-600:]}"
        return res
    summ = parse_summary(err)
    if summ is not None:
        res["texts_per_s"], res["source"] = summ, "summary"
    else:
        wall1, rows1, err1, rc1 = ours_process(a, model, weights, texts[:1])
        if rc1 != 0 or wall <= wall1 or len(texts) < 2:
            res["error"] = f"no texts/s in the summary and the 1-text run failed (exit {rc1}) or took as long"
            return res
        res["texts_per_s"], res["source"] = (len(texts) - 1) / (wall - wall1), "wall - 1-text run"
        res["load_s_est"] = wall1
    res["summary_line"] = next((ln for ln in reversed(err.splitlines()) if "/s" in ln), err.strip()[-300:])
    try:
        res["probs"] = [[float(r["benign"]), float(r["injection"]), float(r["jailbreak"])] for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        res["error"] = f"result line without benign/injection/jailbreak numbers: {e}: {rows[0]}"
        return res
    res["windows"] = [r.get("windows") for r in rows]
    res["tokens"] = [r.get("tokens") for r in rows]
    return res


def agreement(ours: dict, ref: dict, texts: list[dict]) -> dict:
    import numpy as np
    p, q = np.array(ours["probs"]), np.array(ref["probs"])
    out = {"max_abs_diff": float(np.abs(p - q).max()), "argmax_agree": int((p.argmax(1) == q.argmax(1)).sum()),
           "n": len(p)}
    n_ids = [len(t["ids"]) for t in texts]
    tok = ours.get("tokens") or []
    # accept either convention: with or without [CLS]/[SEP]
    bad_tok = [i for i, (n, t) in enumerate(zip(n_ids, tok)) if t is not None and t not in (n, n - 2)]
    bad_win = [i for i, w in enumerate(ours.get("windows") or []) if w is not None and w != 1]
    out["token_mismatch"] = len(bad_tok)
    out["multi_window"] = len(bad_win)
    if bad_tok:
        i = bad_tok[0]
        out["token_mismatch_example"] = {"text": i, "ours": tok[i], "ids_with_specials": n_ids[i]}
    return out


# ======================================================================================
# main
# ======================================================================================
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    ap.add_argument("--texts", type=int, default=20, help="texts per length (default 20)")
    ap.add_argument("--lengths", default="64,256,512", help="token counts incl. [CLS]/[SEP] (max 512)")
    ap.add_argument("--ort-batch", type=int, default=8, help="batch size of the extra batched ORT row (0: none)")
    ap.add_argument("--no-ort-int8", action="store_true", help="skip ORT's int8 (quantize_dynamic) model")
    ap.add_argument("--skip-ours", action="store_true", help="ONNX Runtime only")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--ferrollama", default=str(FERRO), help="the binary (default target/release/ferrollama)")
    ap.add_argument("--weights", default="f32,q8_0", help="ferrollama --weights to run")
    ap.add_argument("--model-dir", type=Path, help="default <cache>/bench-models/prompt-guard-shaped")
    ap.add_argument("--seed", type=int, default=0, help="seed of the workload texts")
    ap.add_argument("--wait-idle", type=float, default=120, help="max seconds to wait for an idle machine (0: don't)")
    ap.add_argument("--idle-seconds", type=float, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(",") if x]
    if any(not 4 <= L <= 512 for L in lengths):
        sys.exit("--lengths: each must be in 4..512 (one window)")
    if a.texts < 2:
        sys.exit("--texts must be at least 2")
    weights = [w for w in a.weights.split(",") if w]

    ensure_venv_and_reexec()  # from here on we run inside the venv
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    oc.exit_on_sigterm()

    if not a.skip_ours and not a.no_build and a.ferrollama == str(FERRO):
        log("cargo build --release -p ferrollama")
        if subprocess.run(["cargo", "build", "--release", "-p", "ferrollama"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release -p ferrollama failed")
    if not a.skip_ours:
        if not Path(a.ferrollama).exists():
            sys.exit(f"{a.ferrollama} not found: build it (cargo build --release -p ferrollama) or pass --skip-ours")
        h = subprocess.run([a.ferrollama, "prompt-guard", "--help"], capture_output=True, text=True)
        if h.returncode != 0:
            sys.exit(f"{a.ferrollama} has no working `prompt-guard` command (exit {h.returncode}:"
                     f" {(h.stderr or h.stdout).strip()[:300]}); use --skip-ours to measure ONNX Runtime only")

    model = (a.model_dir or cache_dir() / "bench-models" / "prompt-guard-shaped").resolve()
    meta = ensure_model(model)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    log(f"model {model} ({meta['params'] / 1e6:.1f}M parameters); ORT {ort.__version__}, "
        f"threads {a.threads}, {a.texts} texts per length, lengths {lengths}")

    sessions = {"ort-f32": ort_session(model / "onnx" / "model.onnx", a.threads)}
    if not a.no_ort_int8:
        sessions["ort-int8"] = ort_session(model / "onnx" / "model-int8.onnx", a.threads)
    for k, (_, load) in sessions.items():
        log(f"{k}: session created in {load:.1f} s")

    rows = []
    failed = False
    for L in lengths:
        texts = make_texts(tok, L, a.texts, a.seed)
        n_ids = [len(t["ids"]) for t in texts]
        row: dict = {"length": L, "tokens_min": min(n_ids), "tokens_max": max(n_ids),
                     "tokens_mean": sum(n_ids) / len(n_ids), "runs": {}}
        log(f"L={L}: {len(texts)} texts, {min(n_ids)}..{max(n_ids)} tokens"
            f" ({sum(len(t['text'].split()) for t in texts) / len(texts):.0f} words on average)")
        for key, (sess, _) in sessions.items():
            r = ort_run(a, sess, texts, 1)
            row["runs"][f"{key}-b1"] = r
            log(f"  {key} b1: {r['texts_per_s']:.2f} texts/s (p50 {r['latency_ms_p50']:.0f} ms, busy {100 * r['busy']:.0f}%)")
        if a.ort_batch > 1:
            r = ort_run(a, sessions["ort-f32"][0], texts, a.ort_batch)
            row["runs"][f"ort-f32-b{a.ort_batch}"] = r
            log(f"  ort-f32 b{a.ort_batch}: {r['texts_per_s']:.2f} texts/s (busy {100 * r['busy']:.0f}%)")
        if not a.skip_ours:
            ref = row["runs"]["ort-f32-b1"]
            for w in weights:
                r = ours_run(a, model, w, texts)
                row["runs"][f"ours-{w}"] = r
                if r.get("error"):
                    failed = True
                    log(f"  ours {w}: FAILED: {r['error']}")
                    continue
                r["agreement"] = ag = agreement(r, ref, texts)
                bad = ag["max_abs_diff"] > TOL.get(w, 5e-2) or ag["token_mismatch"] or ag["multi_window"]
                r["agreement_ok"] = not bad
                failed |= bad
                log(f"  ours {w}: {r['texts_per_s']:.2f} texts/s ({r['source']}; busy {100 * r['busy']:.0f}%);"
                    f" vs ORT max |p diff| {ag['max_abs_diff']:.1e}, argmax {ag['argmax_agree']}/{ag['n']}"
                    + (f", token count mismatches {ag['token_mismatch']}" if ag["token_mismatch"] else "")
                    + (f", multi-window texts {ag['multi_window']}" if ag["multi_window"] else ""))
        rows.append(row)

    # ---- table
    cpu = oc.cpu_name()
    print()
    print(f"Prompt Guard (mDeBERTa-v3-base shape, random weights) on {cpu}, {os.cpu_count()} cores,"
          f" threads {a.threads}; {a.texts} texts per length, batch 1 unless noted")
    print(f"ONNX Runtime {ort.__version__} (CPU EP, intra-op {a.threads}, inter-op 1, sequential,"
          f" ORT_ENABLE_ALL); ORT vs transformers max |logit diff| {meta['ort_vs_transformers_max']:.1e} (at build)")
    print()
    cols = [("ort-f32-b1", "ORT f32")]
    if not a.no_ort_int8:
        cols.append(("ort-int8-b1", "ORT int8"))
    if a.ort_batch > 1:
        cols.append((f"ort-f32-b{a.ort_batch}", f"ORT b{a.ort_batch}"))
    if not a.skip_ours:
        cols += [(f"ours-{w}", f"ours {w}") for w in weights]
    hdr = f"{'tokens':>7} | " + " ".join(f"{name:>9}" for _, name in cols)
    ratios = []
    if not a.skip_ours:
        ratios = [(f"ours-{w}", "ort-f32-b1", f"{w}/ORT") for w in weights]
        if "q8_0" in weights and not a.no_ort_int8:
            ratios.append(("ours-q8_0", "ort-int8-b1", "q8/int8"))
        hdr += " | " + " ".join(f"{n:>9}" for *_, n in ratios) + " | max|dp| f32/q8 | busy%"
    else:
        hdr += " | busy%"
    print("texts/s")
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        R = row["runs"]
        tps = lambda k: R[k]["texts_per_s"] if k in R and R[k].get("texts_per_s") else None  # noqa: E731
        line = f"{row['tokens_mean']:>7.0f} | " + " ".join(
            f"{tps(k):>9.2f}" if tps(k) else f"{'failed' if k in R else '-':>9}" for k, _ in cols)
        if ratios:
            line += " | " + " ".join(
                f"{tps(x) / tps(y):>8.2f}x" if tps(x) and tps(y) else f"{'-':>9}" for x, y, _ in ratios)
            diffs = [f"{R[f'ours-{w}']['agreement']['max_abs_diff']:.0e}" if "agreement" in R.get(f"ours-{w}", {}) else "-"
                     for w in weights]
            line += f" | {'/'.join(diffs):>14}"
        line += " | " + f"{100 * max(r.get('busy', 0) for r in R.values()):.0f}"
        print(line)
    print()
    print("tokens = mean ids per text incl. [CLS]/[SEP]; ratios vs ORT f32 batch 1 (q8/int8: ours q8_0 vs ORT int8);"
          " max|dp| = max |probability diff| vs ORT f32; busy% = worst CPU share of other processes")
    if not a.skip_ours:
        print("goal (issue): ours >= 1.5x ORT")
    if a.json:
        doc = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               "model": str(model), "model_meta": meta, "onnxruntime": ort.__version__, "numpy": np.__version__,
               "results": rows}
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=1))
        log(f"wrote {a.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
