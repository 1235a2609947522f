#!/usr/bin/env python3
"""Training throughput and peak memory: ferrollama's train crate vs PyTorch + PEFT on CPU,
the same model, tokens, sequence length, batch (1 sequence), threads and optimizer (AdamW,
lr 1e-4), one run.

    python3 bench/train.py [--threads 1,2] [--seq 512] [--steps 3]
                           [--methods lora16,lora16:q8_0:int8,lora16:f16:int8,full]
                           [--json OUT] [--out TXT]

Model: SmolLM2-135M-Instruct Q4_1 (`ferrollama fetch smollm2`). PyTorch: transformers'
GGUF loader, which dequantizes to f32 (PyTorch + PEFT's usual CPU setup). Ours, by
method:
- `lora16`, `full`: the model widened to f32 `Params` (`params_from_weights`);
- `lora16:TYPE:COMPUTE`: LoRA over a frozen base converted at load to TYPE (f16, q8_0,
  q4_k, ... or `stored` for the file's own Q4_1) and kept in it, multiplied by COMPUTE
  (`f32`: decoded f32 panels; `int8`: the integer GEMM with a 12-bit transposed copy,
  `finetune --base-compute int8`). Every `lora16*` row is compared with the same PyTorch
  run (LoRA rank 16 over the f32 model), which is run once per thread count.

Ours: `target/release/examples/step_bench` (built by this script with
`cargo build --release -p ferrollama-train --example step_bench`), forward + backward +
AdamW per step, LoRA rank 16 / alpha 32 on q,k,v,o,gate,up,down, or full fine-tuning.
PyTorch: transformers 5.24 LlamaForCausalLM in float32 + PEFT 0.21 LoRA with the same
targets, `torch.optim.AdamW`, `torch.set_num_threads(N)`, each configuration in a fresh
process. Steps after the first are timed (best of the rest); peak memory is the process's
maximum resident set (VmHWM / ru_maxrss), model loading included on both sides.
Both report the first step's loss on the same tokens: they must agree (same weights).

Sets up (once) a virtualenv <cache>/bench-venv-train with pinned torch, transformers,
peft, gguf.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ["numpy==2.4.6", "torch==2.15.0", "transformers==5.24.0", "peft==0.21.2",
        "gguf==0.19.0", "accelerate==1.16.0"]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(msg):
    print(f"train-bench: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


def ensure_venv_and_reexec():
    venv = cache_dir() / "bench-venv-train"
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    stamp = venv / ".pins"
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS)):
        log(f"setting up {venv} with {', '.join(PINS)} (a few GiB, a few minutes) ...")
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS])
        if r.returncode != 0:
            sys.exit(f"pip install into {venv} failed (exit {r.returncode})")
        stamp.write_text("\n".join(PINS))
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


def torch_worker(a):
    """One PyTorch configuration; prints one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(a.model_dir), gguf_file=GGUF,
                                                 dtype=torch.float32)
    model.train()
    if a.method.startswith("lora"):
        from peft import LoraConfig, get_peft_model
        r = int(a.method[4:])
        model = get_peft_model(model, LoraConfig(
            r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    toks = [int(t) for t in Path(a.tokens).read_text().split()][: a.seq + 1]
    ids = torch.tensor([toks])
    times, losses = [], []
    for _ in range(a.steps):
        t = time.perf_counter()
        opt.zero_grad()
        # The loss computed here, not through `labels` (transformers shifts labels by one
        # itself): token t predicts token t + 1 for t < seq, as in ours.
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[0, 1:])
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    best = min(times[1:]) if len(times) > 1 else times[0]
    print(json.dumps(dict(method=a.method, threads=a.threads, seq=a.seq, losses=losses,
                          step_s=times, tokens_per_s=a.seq / best,
                          peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--methods", default="lora16,lora16:q8_0:int8,lora16:f16:int8,full")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, default=cache_dir() / "models")
    a = ap.parse_args()
    ensure_venv_and_reexec()
    if a.worker:
        a.threads = int(a.threads)
        return torch_worker(a)
    gguf = a.model_dir / GGUF
    if not gguf.exists():
        subprocess.run([str(ROOT / "target" / "ci" / "ferrollama"), "fetch", "smollm2"], check=True)
    log("building step_bench (release) ...")
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "ferrollama-train", "--example", "step_bench"],
                   cwd=ROOT, check=True)
    ours = ROOT / "target" / "release" / "examples" / "step_bench"
    # Fixed tokens (seeded), shared by both sides.
    import random
    rng = random.Random(7)
    tok_file = cache_dir() / "bench-train-tokens.txt"
    tok_file.write_text(" ".join(str(rng.randrange(49152)) for _ in range(a.seq + 1)))
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        torch_runs = {}
        for method in a.methods.split(","):
            # method[:base:compute]: the PyTorch side runs `method` over the f32 model.
            name, *variant = method.split(":")
            lora = ["--lora", name[4:]] if name.startswith("lora") else []
            if variant:
                if not lora or len(variant) != 2:
                    sys.exit(f"--methods: {method!r} is not lora<R>:<type>:<f32|int8>")
                lora += ["--base", variant[0], "--compute", variant[1]]
            r = {}
            for engine in ["ours", "pytorch"]:
                if engine == "pytorch" and name in torch_runs:
                    r[engine] = torch_runs[name]
                    continue
                if engine == "ours":
                    cmd = [str(ours), str(gguf), "--seq", str(a.seq), "--threads", str(threads),
                           "--steps", str(a.steps), "--tokens", str(tok_file), *lora]
                else:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--method", name,
                           "--threads", str(threads), "--seq", str(a.seq), "--steps", str(a.steps),
                           "--tokens", str(tok_file), "--model-dir", str(a.model_dir)]
                log(f"{engine} {method if engine == 'ours' else name} {threads} thread(s) ...")
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{engine} failed:\n{p.stderr[-3000:]}")
                r[engine] = json.loads(p.stdout.strip().splitlines()[-1])
                if engine == "pytorch":
                    torch_runs[name] = r[engine]
            rows.append(dict(method=method, threads=threads, **r))
    lines = [f"# bench/train.py --threads {a.threads} --seq {a.seq} --steps {a.steps} --methods {a.methods}",
             f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"# load average before the table: {os.getloadavg()}",
             "| method | ours base | threads | ours tok/s | PyTorch+PEFT tok/s | ratio | ours peak MiB | PyTorch peak MiB | mem ratio | loss step 0 ours / PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, t = r["ours"], r["pytorch"]
        lines.append(f"| {r['method']} | {o['base']} | {r['threads']} | {o['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | "
                     f"{o['tokens_per_s'] / t['tokens_per_s']:.2f}x | {o['peak_rss_mib']:.0f} | {t['peak_rss_mib']:.0f} | "
                     f"{o['peak_rss_mib'] / t['peak_rss_mib']:.2f} | {o['losses'][0]:.4f} / {t['losses'][0]:.4f} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(dict(args=vars(a) | {"model_dir": str(a.model_dir), "json": None, "out": None},
                                          rows=rows), indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
