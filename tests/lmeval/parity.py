"""Parity of `ferrollama eval` with EleutherAI's lm-evaluation-harness.

lm-eval (`lm_eval --model local-completions`, the real package from PyPI) scores a small
multiple-choice task against `ferrollama serve`; `ferrollama eval` scores the same task
file on the same GGUF in process, and with --http also through its own HTTP backend
against the same server. Per document and choice the log-likelihoods must agree, and the
per-document and overall acc / acc_norm must be equal. Tolerances: --tol (1e-3 nats)
against the same server; --tol-in-process (5e-3) in process, because the engine's
results on F16 weights move by up to ~2.4e-3 with how many tokens share a forward call
(measured on SmolLM2-135M F16, docs/eval.md), and serve (its engine steps) and eval (a
context once, then its choices) group tokens differently.

lm-eval needs a tokenizer to count a request's context tokens; there is no Hugging Face
Hub here, so tests/lmeval/gguf_tokenizer.py writes a `tokenizers` tokenizer.json from the
GGUF's own vocabulary and merges, and lm-eval sends token ids (its default).

Used by scripts/lmeval-parity (the test, in scripts/test) and bench/lmeval_parity.py (the
llama.cpp comparison). Run with the lm-eval venv's python (scripts/lmeval-venv).
"""

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import gguf_tokenizer  # noqa: E402

DATASET = os.path.join(REPO, "testdata", "eval", "parity.jsonl")
TASK = "ferrollama_parity_mc"


def log(msg):
    print(f"lmeval-parity: {msg}", file=sys.stderr, flush=True)


def write_task(folder, dataset=DATASET):
    """The task in lm-eval's YAML form (local JSON lines), read by both harnesses."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{TASK}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"task: {TASK}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(os.path.abspath(dataset))}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
            "doc_to_target: label\n"
            'doc_to_choice: "{{choices}}"\n'
            "metric_list:\n"
            "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
            "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
        )
    return path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A server process on a free port, stopped on exit from the `with` block."""

    def __init__(self, argv_for_port, health_paths, logfile, ready_s=180, env=None):
        self.argv_for_port = argv_for_port
        self.env = env
        self.health_paths = health_paths
        self.logfile = logfile
        self.ready_s = ready_s
        self.proc = None

    def __enter__(self):
        for _attempt in range(3):
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            out = open(self.logfile, "w")
            self.proc = subprocess.Popen(
                self.argv_for_port(self.port), stdout=out, stderr=subprocess.STDOUT,
                env=self.env,
            )
            if self._wait():
                return self
            self.stop()
            with open(self.logfile, errors="replace") as f:
                text = f.read()
            if "in use" not in text:
                raise RuntimeError(f"server did not start; log {self.logfile}:\n{text[-3000:]}")
        raise RuntimeError("server did not start: no free port after 3 tries")

    def _wait(self):
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            for p in self.health_paths:
                try:
                    with urllib.request.urlopen(self.base + p, timeout=2) as r:
                        if r.status == 200:
                            return True
                except Exception:
                    pass
            time.sleep(0.25)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc):
        self.stop()


def ferrollama_serve(binary, model, logfile):
    """`ferrollama serve` of one model; no embedding model, its data beside the log."""
    env = dict(os.environ, FERROLLAMA_DATA=os.path.splitext(logfile)[0] + "-data")
    return Server(
        lambda port: [binary, "serve", "-m", model, "--embedding-model", "none",
                      "--host", "127.0.0.1", "--port", str(port)],
        ["/v1/health", "/health"],
        logfile,
        env=env,
    )


def run_lm_eval(python, base_url, model_id, tokenizer_dir, add_bos, task_dir, fewshot, out_dir,
                limit=None):
    """Runs lm-eval's CLI; returns its per-document results (see `lm_eval_samples`)."""
    model_args = ",".join(
        [
            f"base_url={base_url}/v1/completions",
            f"model={model_id}",
            "tokenizer_backend=huggingface",
            f"tokenizer={tokenizer_dir}",
            "tokenized_requests=True",
            f"add_bos_token={add_bos}",
            "max_length=2048",
            "num_concurrent=1",
            "max_retries=1",
            "timeout=300",
        ]
    )
    argv = [
        python, "-m", "lm_eval", "run",
        "--model", "local-completions",
        "--model_args", model_args,
        "--tasks", TASK,
        "--include_path", task_dir,
        "--num_fewshot", str(fewshot),
        "--log_samples",
        "--output_path", out_dir,
        "--seed", "0,1234,1234,1234",
    ] + (["--limit", str(limit)] if limit else [])
    env = dict(os.environ)
    # No network: the task's data is a local file, the tokenizer a local folder.
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=os.path.join(out_dir, "hf-home"),
        TOKENIZERS_PARALLELISM="false",
        OPENAI_API_KEY="",
    )
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    secs = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(
            f"lm_eval exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-6000:]}"
        )
    return lm_eval_samples(out_dir), secs


def lm_eval_samples(out_dir):
    """{doc_id: {"ll": [per choice], "acc": x, "acc_norm": y}} and the task's accuracies."""
    files = glob.glob(os.path.join(out_dir, "**", f"samples_{TASK}_*.jsonl"), recursive=True)
    results = glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)
    if len(files) != 1 or len(results) != 1:
        raise RuntimeError(f"lm-eval's output in {out_dir}: want one samples and one results file")
    docs = {}
    with open(files[0]) as f:
        for line in f:
            s = json.loads(line)
            docs[s["doc_id"]] = {
                # lm-eval writes each (loglik, is_greedy) as strings (str(float) is exact).
                "ll": [float(r[0]) for r in s["filtered_resps"]],
                "acc": float(s["acc"]),
                "acc_norm": float(s["acc_norm"]),
            }
    with open(results[0]) as f:
        res = json.load(f)["results"][TASK]
    return {"docs": docs, "acc": res["acc,none"], "acc_norm": res["acc_norm,none"]}


def run_ferrollama_eval(binary, model, task_yaml, fewshot, out_json, base_url=None, extra=(),
                        limit=None):
    """`ferrollama eval`, in process or with --base-url; same shape as lm_eval_samples."""
    argv = [binary, "eval", "-m", model, "--task", task_yaml, "--num-fewshot", str(fewshot),
            "--json", out_json, *extra] + (["--limit", str(limit)] if limit else [])
    if base_url:
        argv += ["--base-url", base_url]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    secs = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"ferrollama eval exited {r.returncode}:\n{r.stderr[-4000:]}")
    with open(out_json) as f:
        rep = json.load(f)
    docs = {
        s["doc_index"]: {
            "ll": s["loglikelihoods"],
            "acc": float(s["metrics"]["acc,none"]),
            "acc_norm": float(s["metrics"]["acc_norm,none"]),
        }
        for s in rep["samples"]
    }
    m = {row["metric"]: row["value"] for row in rep["metrics"]}
    return {"docs": docs, "acc": m["acc"], "acc_norm": m["acc_norm"]}, secs


def compare(a, b):
    """Differences between two runs: max/mean |Δ loglik| over choices, and disagreements."""
    if sorted(a["docs"]) != sorted(b["docs"]):
        raise RuntimeError(f"different documents: {sorted(a['docs'])} vs {sorted(b['docs'])}")
    diffs, acc_diff, norm_diff, pick_diff = [], [], [], []
    for d in sorted(a["docs"]):
        x, y = a["docs"][d], b["docs"][d]
        if len(x["ll"]) != len(y["ll"]):
            raise RuntimeError(f"doc {d}: {len(x['ll'])} vs {len(y['ll'])} choices")
        diffs += [abs(p - q) for p, q in zip(x["ll"], y["ll"])]
        if x["acc"] != y["acc"]:
            acc_diff.append(d)
        if x["acc_norm"] != y["acc_norm"]:
            norm_diff.append(d)
        if max(range(len(x["ll"])), key=x["ll"].__getitem__) != max(
            range(len(y["ll"])), key=y["ll"].__getitem__
        ):
            pick_diff.append(d)
    return {
        "choices": len(diffs),
        "max": max(diffs),
        "mean": sum(diffs) / len(diffs),
        "over_1e-3": sum(1 for v in diffs if v > 1e-3),
        "acc_docs_differ": acc_diff,
        "acc_norm_docs_differ": norm_diff,
        "argmax_docs_differ": pick_diff,
        "acc": (a["acc"], b["acc"]),
        "acc_norm": (a["acc_norm"], b["acc_norm"]),
    }


def tokenizer_folder(model, folder):
    """The HF tokenizer folder for `model`; returns (folder, add_bos)."""
    tok, _config = gguf_tokenizer.write_folder(model, folder)
    return folder, tok["post_processor"]["type"] == "TemplateProcessing"


def check_tokenizer(base_url, model_id, tok_dir, add_bos, texts):
    """The HF tokenizer made from the GGUF must split each text into the tokens that
    `ferrollama serve` echoes for it; else log-likelihood differences would be
    tokenization, not scoring. Returns the mismatches."""
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(tok_dir)
    bad = []
    for t in texts:
        body = json.dumps({"model": model_id, "prompt": t, "max_tokens": 0, "echo": True,
                           "logprobs": 1, "temperature": 0}).encode()
        req = urllib.request.Request(base_url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            ours = json.load(r)["choices"][0]["logprobs"]["tokens"]
        ids = hf(t, add_special_tokens=add_bos).input_ids
        theirs = [hf.decode([i]) for i in ids]
        if ours != theirs:
            bad.append(f"{t!r}: serve {ours} vs tokenizers {theirs}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the ferrollama binary")
    ap.add_argument("--model", required=True, help="the GGUF (F16 for the 1e-3 check)")
    ap.add_argument("--fewshot", default="0,3:8",
                    help="comma-separated num_fewshot values, each with an optional :LIMIT "
                         "(the first LIMIT questions)")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="per-choice tolerance against the same server (--base-url)")
    ap.add_argument("--tol-in-process", type=float, default=5e-3,
                    help="per-choice tolerance for in-process scoring: the engine's F16 "
                         "results move by up to ~2.4e-3 with the tokens per forward call "
                         "(docs/eval.md), which serve and eval lay out differently")
    ap.add_argument("--http", default="", metavar="K,...",
                    help="also `ferrollama eval --base-url` for these num_fewshot values")
    ap.add_argument("--keep", help="keep outputs in this folder (default: a temp dir)")
    a = ap.parse_args()

    work = a.keep or tempfile.mkdtemp(prefix="ferrollama-lmeval-")
    os.makedirs(work, exist_ok=True)
    model_id = os.path.basename(a.model)[: -len(".gguf")]
    task_dir = os.path.join(work, "task")
    task_yaml = write_task(task_dir)
    tok_dir, add_bos = tokenizer_folder(a.model, os.path.join(work, "tokenizer"))
    passed, failed = 0, 0

    def check(ok, what):
        nonlocal passed, failed
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if ok:
            passed += 1
        else:
            failed += 1

    with open(DATASET) as f:
        rows = [json.loads(line) for line in f]
    texts = [f"Question: {r['question']}\nAnswer: {c}" for r in rows for c in r["choices"]]
    try:
        run_checks(a, work, model_id, task_dir, task_yaml, tok_dir, add_bos, texts, check)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        check(False, f"the run stopped: {e}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"lmeval parity: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def run_checks(a, work, model_id, task_dir, task_yaml, tok_dir, add_bos, texts, check):
    with ferrollama_serve(a.bin, a.model, os.path.join(work, "serve.log")) as srv:
        bad = check_tokenizer(srv.base, model_id, tok_dir, add_bos, texts)
        check(not bad, f"tokenizer.json from the GGUF splits the {len(texts)} prompts as ferrollama serve does"
              + "".join("\n     " + b for b in bad[:5]))
        for spec in a.fewshot.split(","):
            k, _, lim = spec.partition(":")
            k, lim = int(k), (int(lim) if lim else None)
            lm, lm_s = run_lm_eval(sys.executable, srv.base, model_id, tok_dir, add_bos,
                                   task_dir, k, os.path.join(work, f"lmeval-{k}shot"), limit=lim)
            runs = [("in process", a.tol_in_process, run_ferrollama_eval(
                a.bin, a.model, task_yaml, k, os.path.join(work, f"ferrollama-{k}shot.json"),
                limit=lim))]
            if str(k) in a.http.split(","):
                runs.append(("--base-url", a.tol, run_ferrollama_eval(
                    a.bin, model_id, task_yaml, k, os.path.join(work, f"ferrollama-http-{k}shot.json"),
                    base_url=srv.base, limit=lim)))
            for name, tol, (ours, secs) in runs:
                c = compare(lm, ours)
                log(f"{k}-shot, lm-eval ({lm_s:.1f} s) vs ferrollama eval {name} ({secs:.1f} s): "
                    f"{c['choices']} choices, max |Δ| {c['max']:.2e}, mean {c['mean']:.2e}; "
                    f"acc {c['acc'][0]:.4f} / {c['acc'][1]:.4f}, acc_norm {c['acc_norm'][0]:.4f} / {c['acc_norm'][1]:.4f}")
                what = f"{k}-shot, ferrollama eval {name} vs lm-eval"
                check(c["max"] <= tol,
                      f"{what}: per-choice log-likelihoods within {tol:g} (max |Δ| {c['max']:.2e} over {c['choices']})")
                check(not c["acc_docs_differ"] and c["acc"][0] == c["acc"][1],
                      f"{what}: acc equal ({c['acc'][0]:.4f}; documents differing: {c['acc_docs_differ']})")
                check(not c["acc_norm_docs_differ"] and c["acc_norm"][0] == c["acc_norm"][1],
                      f"{what}: acc_norm equal ({c['acc_norm'][0]:.4f}; documents differing: {c['acc_norm_docs_differ']})")


if __name__ == "__main__":
    sys.exit(main())
