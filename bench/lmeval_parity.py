#!/usr/bin/env python3
"""lm-evaluation-harness parity, with llama.cpp: `ferrollama serve` and llama.cpp's
`llama-server` scored by lm-eval on the same GGUF and the same task, next to `ferrollama
eval` (in process with and without prefix sharing, and with --base-url), on SmolLM2-135M
F16 and on the original Q4_1. Writes a table of the differences.

llama-server (llama-cpp-python 0.3.36's llama.cpp) accepts `echo: true` on /v1/completions
but returns only the generated token's log-probability, in the chat-style
`logprobs.content` shape, so lm-eval's `local-completions` cannot score log-likelihoods
against it (it stops with `KeyError: 'token_logprobs'`); the error is recorded. What can
still be compared: the same (context, continuation) requests lm-eval
made, scored on llama-server one continuation token at a time (the prompt is the context
and the tokens before it, as ids; `logit_bias` forces the token; `n_probs: 1` returns the
sampled token's probability from the raw logits over the whole vocabulary).

    python3 bench/lmeval_parity.py [--bin BIN] [--q4 GGUF] [--llama-server BIN|none] [--out TXT]

It re-runs itself in the lm-eval venv (scripts/lmeval-venv). Defaults: target/release/
ferrollama, `ferrollama fetch smollm2`, `scripts/setup-llama-server` (built once into the
cache, ~15 minutes on 2 cores), bench/results/lmeval-parity-<today>.txt.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "lmeval"))
import parity  # noqa: E402


def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def llama_server(binary, model, logfile, threads):
    return parity.Server(
        lambda port: [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
                      "-c", "2048", "-np", "1", "-t", str(threads), "--no-webui"],
        ["/health"],
        logfile,
    )


def lm_eval_requests(out_dir):
    """{doc_id: [(context, continuation), ...]} as lm-eval's samples file records them."""
    import glob

    (path,) = glob.glob(os.path.join(out_dir, "**", f"samples_{parity.TASK}_*.jsonl"),
                        recursive=True)
    reqs = {}
    with open(path) as f:
        for line in f:
            s = json.loads(line)
            reqs[s["doc_id"]] = [(a["arg_0"], a["arg_1"]) for a in s["arguments"].values()] \
                if isinstance(s["arguments"], dict) else [tuple(a) for a in s["arguments"]]
    return reqs


def encode_pair(hf, add_bos, context, continuation):
    """lm-eval's TemplateLM._encode_pair with the Hugging Face tokenizer."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = hf(context + continuation, add_special_tokens=add_bos).input_ids
    ctx = hf(context, add_special_tokens=add_bos).input_ids
    return ctx, whole[len(ctx):]


def score_llama_server(base, hf, add_bos, reqs, docs_gold):
    """Teacher-forced per-choice log-likelihoods on llama-server, in lm-eval's result shape."""
    docs = {}
    for d, pairs in sorted(reqs.items()):
        lls, lens = [], []
        for context, continuation in pairs:
            ctx, cont = encode_pair(hf, add_bos, context, continuation)
            ll = 0.0
            for i, tok in enumerate(cont):
                r = post(base + "/completion", {
                    "prompt": ctx + cont[:i], "n_predict": 1, "n_probs": 1, "temperature": 0,
                    "logit_bias": [[tok, 1000.0]], "cache_prompt": True,
                })
                (p,) = r["completion_probabilities"]
                if p["id"] != tok:
                    raise RuntimeError(f"llama-server sampled {p['id']}, not the forced {tok}")
                ll += p["logprob"] if "logprob" in p else math.log(p["prob"])
            lls.append(ll)
            lens.append(len(continuation))
        gold = docs_gold[d]
        pick = max(range(len(lls)), key=lls.__getitem__)
        norm = max(range(len(lls)), key=lambda j: lls[j] / lens[j])
        docs[d] = {"ll": lls, "acc": float(pick == gold), "acc_norm": float(norm == gold)}
    n = len(docs)
    return {"docs": docs, "acc": sum(v["acc"] for v in docs.values()) / n,
            "acc_norm": sum(v["acc_norm"] for v in docs.values()) / n}


def lm_eval_against_llama_server(py, base, model_id, tok_dir, add_bos, task_dir, out_dir):
    """Runs lm-eval against llama-server; returns the error it ends with (expected)."""
    try:
        parity.run_lm_eval(py, base, model_id, tok_dir, add_bos, task_dir, 0, out_dir)
        return None
    except RuntimeError as e:
        text = str(e)
        lines = [ln for ln in text.splitlines() if "echo" in ln or "Error" in ln or "error" in ln]
        return "\n".join(lines[-4:]) or text[-800:]


def row(name, c):
    return (f"  {name:<44} {c['max']:>9.2e} {c['mean']:>9.2e} {c['over_1e-3']:>5}/{c['choices']:<4} "
            f"{c['acc'][1]:>7.4f} {c['acc_norm'][1]:>8.4f} {len(c['argmax_docs_differ']):>4}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "ferrollama"))
    ap.add_argument("--q4", help="SmolLM2-135M-Instruct Q4_1 GGUF (default: ferrollama fetch smollm2)")
    ap.add_argument("--llama-server", help="llama.cpp's llama-server binary, or none "
                    "(default: scripts/setup-llama-server)")
    ap.add_argument("--fewshot", default="0,3")  # all questions each
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(
        ROOT, "bench", "results", f"lmeval-parity-{time.strftime('%Y-%m-%d')}.txt"))
    ap.add_argument("--work", help="keep intermediate files here")
    a = ap.parse_args()

    try:
        import lm_eval  # noqa: F401
        import transformers
    except ImportError:
        py = subprocess.run([os.path.join(ROOT, "scripts", "lmeval-venv")], check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
        os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])
    if a.q4 is None:
        a.q4 = subprocess.run([a.bin, "fetch", "smollm2"], check=True, stdout=subprocess.PIPE,
                              text=True).stdout.strip().splitlines()[-1]
    if a.llama_server is None:
        a.llama_server = subprocess.run(
            [os.path.join(ROOT, "scripts", "setup-llama-server")], check=True,
            stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    elif a.llama_server == "none":
        a.llama_server = None

    work = a.work or tempfile.mkdtemp(prefix="ferrollama-lmeval-bench-")
    os.makedirs(work, exist_ok=True)
    f16 = os.path.join(work, "SmolLM2-135M-Instruct.F16.gguf")
    if not os.path.exists(f16):
        subprocess.run([a.bin, "quantize", a.q4, f16, "--type", "f16"], check=True,
                       stdout=subprocess.DEVNULL)
    task_dir = os.path.join(work, "task")
    task_yaml = parity.write_task(task_dir)
    with open(parity.DATASET) as f:
        gold = {i: json.loads(line)["label"] for i, line in enumerate(f)}
    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    out(f"lm-evaluation-harness parity ({time.strftime('%Y-%m-%d')}), task testdata/eval/parity.jsonl "
        f"({len(gold)} questions, 4 choices), lm-eval 0.4.13 local-completions")
    out("reference: lm-eval against `ferrollama serve`; each row: that reference vs the row's scorer")
    out("columns: max / mean |Δ loglik| per choice (nats), choices differing > 1e-3, the row's acc and "
        "acc_norm, questions whose argmax choice differs")
    for label, model in [("F16", f16), ("Q4_1", a.q4)]:
        model_id = os.path.basename(model)[: -len(".gguf")]
        tok_dir, add_bos = parity.tokenizer_folder(model, os.path.join(work, f"tok-{label}"))
        hf = transformers.AutoTokenizer.from_pretrained(tok_dir)
        for k in [int(x) for x in a.fewshot.split(",")]:
            tag = f"{label}-{k}shot"
            with parity.ferrollama_serve(a.bin, model, os.path.join(work, f"serve-{tag}.log")) as srv:
                lm_dir = os.path.join(work, f"lmeval-{tag}")
                lm, lm_s = parity.run_lm_eval(sys.executable, srv.base, model_id, tok_dir, add_bos,
                                              task_dir, k, lm_dir)
                http, http_s = parity.run_ferrollama_eval(
                    a.bin, model_id, task_yaml, k, os.path.join(work, f"http-{tag}.json"),
                    base_url=srv.base)
            shared, shared_s = parity.run_ferrollama_eval(
                a.bin, model, task_yaml, k, os.path.join(work, f"shared-{tag}.json"))
            onepass, onepass_s = parity.run_ferrollama_eval(
                a.bin, model, task_yaml, k, os.path.join(work, f"onepass-{tag}.json"),
                extra=["--no-prefix-sharing"])
            out()
            out(f"{label}, {k}-shot: lm-eval vs ferrollama serve: acc {lm['acc']:.4f}, acc_norm "
                f"{lm['acc_norm']:.4f} ({lm_s:.1f} s)")
            out(f"  {'scorer':<44} {'max|Δ|':>9} {'mean|Δ|':>9} {'>1e-3':>10} {'acc':>7} {'acc_norm':>8} {'argΔ':>4}")
            out(row(f"ferrollama eval in process ({shared_s:.1f} s)", parity.compare(lm, shared)))
            out(row(f"  --no-prefix-sharing ({onepass_s:.1f} s)", parity.compare(lm, onepass)))
            out(row(f"ferrollama eval --base-url serve ({http_s:.1f} s)", parity.compare(lm, http)))
            if a.llama_server:
                with llama_server(a.llama_server, model, os.path.join(work, f"llama-{tag}.log"),
                                  a.threads) as ls:
                    if k == 0:
                        err = lm_eval_against_llama_server(
                            sys.executable, ls.base, model_id, tok_dir, add_bos, task_dir,
                            os.path.join(work, f"lmeval-llama-{tag}"))
                        out(f"  lm-eval against llama-server: {'ran' if err is None else 'failed:'}")
                        for ln in (err or "").splitlines():
                            out(f"    {ln.strip()[:300]}")
                    t0 = time.monotonic()
                    ll = score_llama_server(ls.base, hf, add_bos, lm_eval_requests(lm_dir), gold)
                    ls_s = time.monotonic() - t0
                out(row(f"llama-server, teacher-forced ({ls_s:.1f} s)", parity.compare(lm, ll)))
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
