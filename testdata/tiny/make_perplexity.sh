#!/usr/bin/env bash
# llama.cpp's perplexity and KL divergence on the tiny model, the reference for
# crates/eval/tests/llamacpp.rs. ppl-text.txt is the first 6000 bytes of the Python 3.11
# reference topics (pydoc_data.topics, joined in key order with blank lines).
# Usage: testdata/tiny/make_perplexity.sh > testdata/tiny/perplexity.json
set -euo pipefail
cd "$(dirname "$0")"
L=$(../../scripts/setup-llama-perplexity | tail -n1)
args=(-f ppl-text.txt -c 128 -b 128 -t 2 -fa off)
kld=$(mktemp)
trap 'rm -f "$kld"' EXIT
f16=$("$L" -m tiny-f16.gguf "${args[@]}" --kl-divergence-base "$kld" 2>&1 | grep "Final estimate")
q8=$("$L" -m tiny-q8_0.gguf "${args[@]}" --kl-divergence-base "$kld" --kl-divergence 2>&1)
num() { grep -m1 "$1" <<<"$2" | sed -E 's/.*: *([-0-9.]+).*/\1/'; }
python3 - "$f16" "$q8" <<'PY'
import json, re, sys
f16, q8 = sys.argv[1], sys.argv[2]
ppl = float(re.search(r"PPL = ([0-9.]+)", f16).group(1))
get = lambda pat: float(re.search(pat + r"\s*:\s*([-0-9.]+)", q8).group(1))
print(json.dumps({
    "generator": "testdata/tiny/make_perplexity.sh (llama-perplexity from llama-cpp-python 0.3.36's llama.cpp, -c 128 -b 128 -fa off)",
    "n_ctx": 128,
    "f16_ppl": ppl,
    "q8_0_ppl": get(r"Mean PPL\(Q\)"),
    "q8_0_kld_mean": get(r"Mean    KLD"),
    "q8_0_same_top_pct": get(r"Same top p"),
}, indent=1))
PY
