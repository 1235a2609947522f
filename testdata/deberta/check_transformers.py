#!/usr/bin/env python3
"""Checks expected.json (made by make_deberta.py's numpy port) against PyTorch transformers
itself: loads model/ and model-b16/ with DebertaV2ForSequenceClassification in float64 and
compares the logits of every case. Needs torch and transformers (e.g. the venv that
bench/prompt_guard.py makes: ~/.cache/ferrollama/bench-venv-pg/bin/python); the Rust tests
do not run it.

    <venv>/bin/python testdata/deberta/check_transformers.py   # from the repo root
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import DebertaV2ForSequenceClassification

HERE = Path(__file__).resolve().parent
TOL = 1e-6  # relative, floor 1 (the port runs float64 but buckets in float32, as torch)


def main() -> int:
    expected = json.loads((HERE / "expected.json").read_text())
    worst = 0.0
    for name, cases in expected.items():
        m = DebertaV2ForSequenceClassification.from_pretrained(HERE / name, dtype=torch.float64).eval()
        for c in cases:
            ids = torch.tensor([c["ids"]])
            with torch.no_grad():
                got = m(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy()
            want = np.array(c["logits"])
            d = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))
            worst = max(worst, d)
            print(f"{name:10s} {c['name']:14s} {len(c['ids']):4d} tokens  max rel diff {d:.2e}")
    print(f"worst {worst:.2e} (tolerance {TOL:g}); transformers {transformers.__version__}, torch {torch.__version__}")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
