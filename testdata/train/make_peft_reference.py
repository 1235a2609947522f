#!/usr/bin/env python3
"""PEFT reference for crates/train/tests/peft_pin.rs: a tiny random Hugging Face Llama
(Llama 3.1 RoPE scaling, GQA, separate lm_head) saved with transformers, a LoRA adapter on
all seven projections made by PEFT (lora_B set to random values so the update is not
zero), and the summed next-token loss of two sequences with and without the adapter.

ferrollama must load the HF folder (its q/k rows in rotate-half order), read the PEFT
adapter (load_peft: names, shapes, q/k rows) and compute the same losses.

Writes peft/model/{config.json,model.safetensors}, peft/adapter/{adapter_config.json,
adapter_model.safetensors} and peft/reference.json next to this script. Run with a Python
that has torch, transformers and peft, e.g.:
  ~/.cache/ferrollama/bench-venv-embed/bin/pip install peft
  ~/.cache/ferrollama/bench-venv-embed/bin/python testdata/train/make_peft_reference.py
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
import peft
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).resolve().parent / "peft"
torch.manual_seed(20261207)

cfg = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                      high_freq_factor=4.0, original_max_position_embeddings=64),
    bos_token_id=1, eos_token_id=2, torch_dtype="float32",
)
model = LlamaForCausalLM(cfg).float().eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.1 * torch.randn_like(p))
        else:
            p.copy_(0.3 * torch.randn_like(p))
model.save_pretrained(OUT / "model", safe_serialization=True)

tokens = [[3, 17, 42, 8, 8, 59, 1, 33, 20, 7, 61, 12], [5, 5, 30, 2, 44, 9, 18, 27, 63, 0, 11, 36]]
ids = torch.tensor(tokens)


def summed_loss(m):
    with torch.no_grad():
        logits = m(input_ids=ids[:, :-1]).logits.float()
        return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1),
                               reduction="sum").item()


base_loss = summed_loss(model)
lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                  task_type="CAUSAL_LM")
pm = get_peft_model(model, lcfg).eval()
with torch.no_grad():
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.copy_(torch.randn_like(p))
lora_loss = summed_loss(pm)
pm.save_pretrained(OUT / "adapter", safe_serialization=True)
(OUT / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's model card template
ref = dict(tokens=tokens, base_loss=base_loss, lora_loss=lora_loss,
           torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
           note="made by testdata/train/make_peft_reference.py")
(OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
print(ref)
