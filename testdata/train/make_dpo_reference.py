#!/usr/bin/env python3
"""PyTorch reference for the DPO tests in crates/train/tests/dpo.rs: the tiny Llama 3.1 of
make_reference.py (same forward, same tiny_init.safetensors), trained for 10 steps with
the DPO sigmoid loss as TRL's DPOTrainer computes it (log-probabilities summed over the
completion tokens, reference = the starting weights, computed once), AdamW, clipping,
accumulation over two micro-batches of two pairs, and the cosine schedule with warmup.

Writes tiny_dpo_reference.json next to this script: the pairs, hyperparameters, the
reference log-probabilities, and per step the loss, TRL's reward metrics, the gradient norm
before clipping, the learning rate, and the full gradient of two tensors at steps 0 and 3.

Run with the training bench venv (torch, numpy, safetensors):
  ~/.cache/ferrollama/bench-venv-train/bin/python testdata/train/make_dpo_reference.py
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_reference import CFG, forward  # noqa: E402  (the pinned tiny model's forward)

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

HP = dict(steps=10, lr=1e-2, warmup=2, weight_decay=0.01, beta1=0.9, beta2=0.999,
          eps=1e-8, max_grad_norm=1.0, grad_accum=2, micro_batch=2, beta=0.1)
GRAD_TENSORS = ["output.weight", "layers.0.attention.wq.weight"]
GRAD_STEPS = [0, 3]


def pairs(rng):
    # Prompt: 3 tokens counting up by a stride; chosen continues the count, rejected
    # repeats the last prompt token with noise. Lengths differ between the two.
    V = CFG["vocab_size"]
    n = HP["steps"] * HP["grad_accum"] * HP["micro_batch"]
    out = []
    for _ in range(n):
        start, stride = int(rng.integers(0, V)), int(rng.integers(1, 4))
        prompt = [(start + stride * t) % V for t in range(3)]
        lc, lr = int(rng.integers(4, 9)), int(rng.integers(4, 9))
        chosen = [(start + stride * t) % V for t in range(3, 3 + lc)]
        rejected = [int(x) for x in rng.integers(0, V, lr)]
        out.append(dict(prompt=prompt, chosen=chosen, rejected=rejected))
    return out


def logp(p, prompt, completion):
    toks = torch.tensor([prompt + completion])
    logits = forward(p, toks[:, :-1])[0]
    tgt = toks[0, 1:]
    lp = torch.log_softmax(logits, -1).gather(-1, tgt[:, None])[:, 0]
    return lp[len(prompt) - 1:].sum()  # the completion's tokens only


def main():
    w = load_file(str(HERE / "tiny_init.safetensors"))
    data = pairs(np.random.default_rng(20261208))
    p = {k: torch.tensor(v, requires_grad=True) for k, v in w.items()}
    with torch.no_grad():
        refs = [(logp(p, d["prompt"], d["chosen"]).item(), logp(p, d["prompt"], d["rejected"]).item())
                for d in data]
    opt = torch.optim.AdamW(list(p.values()), lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]),
                            eps=HP["eps"], weight_decay=HP["weight_decay"], foreach=False)

    def lam(step):  # torchtune get_cosine_schedule_with_warmup, num_cycles 0.5
        if step < HP["warmup"]:
            return step / max(1, HP["warmup"])
        progress = (step - HP["warmup"]) / max(1, HP["steps"] - HP["warmup"])
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2 * 0.5 * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    beta = HP["beta"]
    steps = []
    k = 0
    for step in range(HP["steps"]):
        opt.zero_grad()
        lr = opt.param_groups[0]["lr"]
        losses, rc, rr, acc, lpc, lpr = [], [], [], [], [], []
        for _ in range(HP["grad_accum"]):
            mb = range(k, k + HP["micro_batch"])
            k += HP["micro_batch"]
            pc = torch.stack([logp(p, data[i]["prompt"], data[i]["chosen"]) for i in mb])
            pr = torch.stack([logp(p, data[i]["prompt"], data[i]["rejected"]) for i in mb])
            rc_ = torch.tensor([refs[i][0] for i in mb])
            rr_ = torch.tensor([refs[i][1] for i in mb])
            z = beta * ((pc - rc_) - (pr - rr_))
            loss = -F.logsigmoid(z).mean()  # TRL's sigmoid loss, label_smoothing 0
            (loss / HP["grad_accum"]).backward()
            cr, rj = beta * (pc - rc_).detach(), beta * (pr - rr_).detach()
            losses.append(loss.item())
            rc += cr.tolist()
            rr += rj.tolist()
            acc += (cr > rj).float().tolist()
            lpc += pc.detach().tolist()
            lpr += pr.detach().tolist()
        grads = {n: p[n].grad.flatten().tolist() for n in GRAD_TENSORS} if step in GRAD_STEPS else None
        norm = torch.nn.utils.clip_grad_norm_(list(p.values()), HP["max_grad_norm"], foreach=False)
        opt.step()
        sched.step()
        n = len(rc)
        rec = dict(loss=sum(losses) / len(losses), rewards_chosen=sum(rc) / n,
                   rewards_rejected=sum(rr) / n, accuracy=sum(acc) / n,
                   margin=(sum(rc) - sum(rr)) / n, logps_chosen=sum(lpc) / n,
                   logps_rejected=sum(lpr) / n, grad_norm=norm.item(), lr=lr)
        if grads is not None:
            rec["grads"] = grads
        steps.append(rec)
        print(f"step {step}: loss {rec['loss']:.6f} acc {rec['accuracy']:.2f} "
              f"margin {rec['margin']:.5f} grad norm {rec['grad_norm']:.6f} lr {lr:.4g}")
    ref = dict(hyper=HP, pairs=data, reference_logps=refs, steps=steps, torch=torch.__version__,
               note="made by testdata/train/make_dpo_reference.py on tiny_init.safetensors")
    (HERE / "tiny_dpo_reference.json").write_text(json.dumps(ref) + "\n")


if __name__ == "__main__":
    main()
