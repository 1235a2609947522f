#!/usr/bin/env python3
"""PyTorch reference for crates/train/tests/pytorch_pin.rs: a tiny Llama 3.1 (Meta's
model.py, float32: RMSNorm, RoPE on adjacent pairs with Llama 3.1 frequency scaling,
causal grouped-query attention, SwiGLU, separate output matrix) trained for 20 steps with
torch.optim.AdamW (single-tensor path), clip_grad_norm_, gradient accumulation over two
micro-batches, a loss mask, and torchtune's cosine schedule with warmup.

Writes, next to this script:
  tiny_init.safetensors   the initial weights (Meta's names), float32
  tiny_reference.json     config, hyperparameters, data, and per step: loss, grad norm, lr

Run with any Python that has torch, numpy and safetensors, e.g. the embeddings bench venv:
  ~/.cache/ferrollama/bench-venv-embed/bin/python testdata/train/make_reference.py
"""
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

CFG = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=64,
           norm_eps=1e-5, rope_theta=500000.0,
           # Llama 3.1's scaling, scaled down so the tiny head (8 dims, 4 frequencies) has
           # one frequency in each regime: kept, blended, divided by the factor.
           rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=64.0))
HP = dict(steps=20, lr=3e-3, warmup=3, weight_decay=0.01, beta1=0.9, beta2=0.999,
          eps=1e-8, max_grad_norm=1.0, grad_accum=2, micro_batch=2, seq_len=16,
          prompt_tokens=3)
HD = CFG["dim"] // CFG["n_heads"]


def apply_scaling(freqs, s):
    # Meta's apply_scaling (llama_models/llama3/reference_impl/model.py), with parameters.
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            out.append((1 - smooth) * freq / s["factor"] + smooth * freq)
    return torch.tensor(out, dtype=freqs.dtype, device=freqs.device)


def freqs_cis(end):
    freqs = 1.0 / (CFG["rope_theta"] ** (torch.arange(0, HD, 2)[: (HD // 2)].float() / HD))
    freqs = apply_scaling(freqs, CFG["rope_scaling"])
    t = torch.arange(end, device=freqs.device, dtype=torch.float32)
    freqs = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(freqs), freqs)


def rope(x, fc):  # x (B, T, H, hd)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * fc[None, :, None, :]).flatten(3).type_as(x)


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + CFG["norm_eps"]) * w


def forward(p, tokens):  # tokens (B, T) -> logits (B, T, V)
    B, T = tokens.shape
    nh, nkv = CFG["n_heads"], CFG["n_kv_heads"]
    fc = freqs_cis(T)
    mask = torch.full((T, T), float("-inf")).triu(1)
    h = p["tok_embeddings.weight"][tokens]
    for i in range(CFG["n_layers"]):
        L = lambda n: p[f"layers.{i}.{n}.weight"]
        xn = rmsnorm(h, L("attention_norm"))
        q = (xn @ L("attention.wq").T).view(B, T, nh, HD)
        k = (xn @ L("attention.wk").T).view(B, T, nkv, HD)
        v = (xn @ L("attention.wv").T).view(B, T, nkv, HD)
        q, k = rope(q, fc), rope(k, fc)
        rep = nh // nkv
        k = k[:, :, :, None, :].expand(B, T, nkv, rep, HD).reshape(B, T, nh, HD)
        v = v[:, :, :, None, :].expand(B, T, nkv, rep, HD).reshape(B, T, nh, HD)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        s = q @ k.transpose(2, 3) / math.sqrt(HD) + mask
        a = F.softmax(s.float(), dim=-1).type_as(q) @ v
        a = a.transpose(1, 2).contiguous().view(B, T, -1)
        h = h + a @ L("attention.wo").T
        hn = rmsnorm(h, L("ffn_norm"))
        h = h + (F.silu(hn @ L("feed_forward.w1").T) * (hn @ L("feed_forward.w3").T)) @ L("feed_forward.w2").T
    return rmsnorm(h, p["norm.weight"]) @ p["output.weight"].T


def init(rng):
    d, q, kv, ff, V = CFG["dim"], CFG["dim"], CFG["n_kv_heads"] * HD, CFG["ffn_dim"], CFG["vocab_size"]
    w = {"tok_embeddings.weight": rng.normal(0, 0.5, (V, d))}
    for i in range(CFG["n_layers"]):
        P = f"layers.{i}."
        w[P + "attention_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
        w[P + "attention.wq.weight"] = rng.normal(0, 0.2, (q, d))
        w[P + "attention.wk.weight"] = rng.normal(0, 0.2, (kv, d))
        w[P + "attention.wv.weight"] = rng.normal(0, 0.2, (kv, d))
        w[P + "attention.wo.weight"] = rng.normal(0, 0.2, (d, q))
        w[P + "ffn_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
        w[P + "feed_forward.w1.weight"] = rng.normal(0, 0.2, (ff, d))
        w[P + "feed_forward.w3.weight"] = rng.normal(0, 0.2, (ff, d))
        w[P + "feed_forward.w2.weight"] = rng.normal(0, 0.2, (d, ff))
    w["norm.weight"] = 1 + 0.1 * rng.normal(size=d)
    w["output.weight"] = rng.normal(0, 0.2, (V, d))
    return {k: v.astype(np.float32) for k, v in w.items()}


def data(rng):
    # Each sequence counts up by a per-sequence stride from a random start (mod V): a
    # pattern the tiny model can learn within 20 steps. One batch per step.
    n = HP["steps"] * HP["grad_accum"] * HP["micro_batch"]
    out = []
    for _ in range(n):
        start, stride = rng.integers(0, CFG["vocab_size"]), rng.integers(1, 4)
        out.append([int((start + stride * t) % CFG["vocab_size"]) for t in range(HP["seq_len"] + 1)])
    return out


def main():
    rng = np.random.default_rng(20261207)
    w = init(rng)
    seqs = data(rng)
    save_file(w, str(HERE / "tiny_init.safetensors"))
    p = {k: torch.tensor(v, requires_grad=True) for k, v in w.items()}
    opt = torch.optim.AdamW(list(p.values()), lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]),
                            eps=HP["eps"], weight_decay=HP["weight_decay"], foreach=False)

    def lam(step):  # torchtune get_cosine_schedule_with_warmup, num_cycles 0.5
        if step < HP["warmup"]:
            return step / max(1, HP["warmup"])
        progress = (step - HP["warmup"]) / max(1, HP["steps"] - HP["warmup"])
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2 * 0.5 * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    steps = []
    k = 0
    for step in range(HP["steps"]):
        opt.zero_grad()
        losses = []
        lr = opt.param_groups[0]["lr"]
        for _ in range(HP["grad_accum"]):
            batch = torch.tensor(seqs[k:k + HP["micro_batch"]])
            k += HP["micro_batch"]
            inp, tgt = batch[:, :-1], batch[:, 1:]
            counted = torch.ones_like(tgt, dtype=torch.bool)
            counted[:, :HP["prompt_tokens"]] = False
            logits = forward(p, inp)
            ce = F.cross_entropy(logits.reshape(-1, CFG["vocab_size"]), tgt.reshape(-1), reduction="none")
            loss = (ce * counted.reshape(-1)).sum() / counted.sum()
            (loss / HP["grad_accum"]).backward()
            losses.append(loss.item())
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), HP["max_grad_norm"], foreach=False)
        opt.step()
        sched.step()
        steps.append(dict(loss=sum(losses) / len(losses), grad_norm=norm.item(), lr=lr))
        print(f"step {step}: loss {steps[-1]['loss']:.6f} grad norm {norm.item():.6f} lr {lr:.6g}")
    ref = dict(config=CFG, hyper=HP, sequences=seqs, steps=steps,
               torch=torch.__version__, note="made by testdata/train/make_reference.py")
    (HERE / "tiny_reference.json").write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
