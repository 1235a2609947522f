#!/usr/bin/env python3
"""llama.cpp's logits with a LoRA adapter written by ferrollama, for the adapter-parity test
(crates/train/tests/llamacpp_adapter.rs).

    PY=$(scripts/setup-llamacpp | tail -n1)
    cargo build --profile ci --bin ferrollama
    "$PY" testdata/train/make_lora_parity.py target/ci/ferrollama

Steps:
1. `ferrollama finetune --method lora` trains a rank-4 adapter on every projection of the
   tiny F16 model (testdata/tiny) for 40 steps on generated text lines (a high learning rate,
   so the adapter moves the logits far more than the tolerance the test allows), and the
   adapter's GGUF (`adapter.gguf`, llama.cpp's LoRA format, f32 tensors) is copied here.
2. llama.cpp (llama-cpp-python 0.3.36, `Llama(base, lora_path=adapter.gguf)`) evaluates the
   tiny model's 24-token prompt (`testdata/tiny/tiny.json` prompt_ids) in one batch for the
   F16, Q8_0 and Q4_K_M bases, with and without the adapter, KV cache in F32:
   `lora_parity/tiny-{f16,q8_0,q4_k_m}.lora.logits.npy` [24, 512] float32.
3. `lora_parity/manifest.json` records the versions, the command, sha256 of the adapter and
   how far the adapter moves llama.cpp's logits (max |with - without| per base): the test
   requires ferrollama to be much closer to llama.cpp than that.
"""
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import Llama

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TINY = ROOT / "testdata" / "tiny"
OUT = HERE / "lora_parity"
BASES = ["f16", "q8_0", "q4_k_m"]
N_VOCAB = 512

FINETUNE = [
    "finetune", "--method", "lora", "--rank", "4", "--alpha", "8",
    "--targets", "q,k,v,o,gate,up,down", "--steps", "40", "--lr", "1e-2",
    "--seq-len", "32", "--seed", "7", "-t", "2",
]


def training_lines() -> list[str]:
    dirs = ["north", "south", "east", "west"]
    return [json.dumps({"text": f"Note {i}: the river runs {dirs[i % 4]} past {i * 3 % 17} stones "
                                f"and {i % 5} trees."}) for i in range(24)]


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def logits(base: Path, prompt: list[int], lora: Path | None) -> np.ndarray:
    n = len(prompt)
    kw = dict(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=2, n_threads_batch=2,
              logits_all=True, flash_attn=False, type_k=llama_cpp.GGML_TYPE_F32,
              type_v=llama_cpp.GGML_TYPE_F32, n_gpu_layers=0, seed=0, verbose=False)
    if lora is not None:
        kw.update(lora_path=str(lora), lora_scale=1.0)
    llm = Llama(str(base), **kw)
    assert llm.n_vocab() == N_VOCAB
    llm.eval(prompt)
    out = np.array(llm.scores[:n], dtype=np.float32)
    llm.close()
    assert out.shape == (n, N_VOCAB) and np.isfinite(out).all()
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = Path(sys.argv[1]).resolve()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "train.jsonl").write_text("\n".join(training_lines()) + "\n")
        cmd = [str(binary), *FINETUNE[:1], "-m", str(TINY / "tiny-f16.gguf"),
               "--data", str(tmp / "train.jsonl"), *FINETUNE[1:], "--out", str(tmp / "out")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                       env={"FERROLLAMA_MODELS": str(tmp / "store"), "PATH": "/usr/bin:/bin"})
        shutil.copyfile(tmp / "out" / "adapter.gguf", OUT / "adapter.gguf")
    adapter = OUT / "adapter.gguf"
    prompt = json.loads((TINY / "tiny.json").read_text())["prompt_ids"]
    moved = {}
    for b in BASES:
        base = TINY / f"tiny-{b}.gguf"
        with_lora = logits(base, prompt, adapter)
        without = logits(base, prompt, None)
        np.save(OUT / f"tiny-{b}.lora.logits.npy", with_lora)
        moved[b] = float(np.abs(with_lora - without).max())
        print(f"{b}: adapter moves llama.cpp's logits by up to {moved[b]:.4f}", file=sys.stderr)
    manifest = {
        "generator": "testdata/train/make_lora_parity.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "numpy_version": np.__version__,
        "machine": platform.machine(),
        "finetune": " ".join(FINETUNE),
        "training_data": "training_lines() in the script (24 text records)",
        "adapter": {"file": adapter.name, "sha256": sha256(adapter)},
        "prompt": "testdata/tiny/tiny.json prompt_ids (24 tokens), one batch, every position",
        "api": "Llama(base, lora_path=adapter.gguf, lora_scale=1.0, type_k/type_v=F32, "
               "flash_attn=False).eval(prompt)",
        "logits": {b: f"tiny-{b}.lora.logits.npy" for b in BASES},
        "max_abs_moved_by_adapter": moved,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
