"""Writes a Hugging Face tokenizer folder (tokenizer.json + tokenizer_config.json) from the
tokenizer a GGUF file carries, so that lm-evaluation-harness's `huggingface` tokenizer
backend can count tokens offline (there is no Hugging Face Hub here).

Only byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`) are supported, with the
pre-tokenizers `smollm` (digits one by one, then GPT-2's pattern, as SmolLM2's own
tokenizer.json has it) and `gpt2`/`default` (GPT-2's pattern). The tokenizer is built by
the `tokenizers` library from the file's vocabulary and merges: it is an independent
implementation of the same tokenizer, not ours.

BOS: when the file says prompts start with BOS (`tokenizer.ggml.add_bos_token`, absent
meaning true, as llama.cpp reads it), the post-processor adds it when lm-eval asks for
special tokens (`add_bos_token=True` in its model_args).

Usage: python gguf_tokenizer.py MODEL.gguf OUT_DIR
"""

import json
import os
import struct
import sys

# GGUF value types (ggml's gguf.h).
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9
# llama.cpp's token types: 3 control, 4 user-defined (both matched as whole strings).
_CONTROL, _USER_DEFINED = 3, 4

_GPT2_PATTERN_TOKENIZER = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}


class GgufError(Exception):
    pass


def read_metadata(path):
    """The key/value metadata of a GGUF file (versions 2 and 3), as a dict."""
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise GgufError(f"{path}: truncated GGUF header")
            return struct.unpack(fmt, data)[0]

        def read_str():
            n = read("<Q")
            data = f.read(n)
            if len(data) != n:
                raise GgufError(f"{path}: truncated string in GGUF header")
            return data.decode("utf-8", errors="surrogateescape")

        def read_value(t):
            if t in _SCALARS:
                return read(_SCALARS[t])
            if t == _STRING:
                return read_str()
            if t == _ARRAY:
                et, n = read("<I"), read("<Q")
                return [read_value(et) for _ in range(n)]
            raise GgufError(f"{path}: unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise GgufError(f"{path}: not a GGUF file (bad magic)")
        version = read("<I")
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        read("<Q")  # tensor count
        n_kv = read("<Q")
        meta = {}
        for _ in range(n_kv):
            key = read_str()
            meta[key] = read_value(read("<I"))
        return meta


def tokenizer_files(meta):
    """(tokenizer.json, tokenizer_config.json) as dicts, from GGUF metadata."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GgufError(
            f"tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported"
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre == "smollm":
        pre_tokenizer = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                _GPT2_PATTERN_TOKENIZER,
            ],
        }
    elif pre in ("gpt2", "default"):
        pre_tokenizer = _GPT2_PATTERN_TOKENIZER
    else:
        raise GgufError(f"tokenizer.ggml.pre {pre!r} is not supported (smollm, gpt2)")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = meta["tokenizer.ggml.merges"]
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True)) and bos is not None
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": ty == _CONTROL,
        }
        for i, (t, ty) in enumerate(zip(tokens, types))
        if ty in (_CONTROL, _USER_DEFINED)
    ]
    if add_bos:
        bos_text = tokens[bos]
        post = {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos_text, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos_text, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}},
        }
    else:
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(meta.get(f"{meta.get('general.architecture', 'llama')}.context_length", 2048)),
        "clean_up_tokenization_spaces": False,
    }
    if bos is not None:
        config["bos_token"] = tokens[bos]
    if eos is not None:
        config["eos_token"] = tokens[eos]
    return tok, config


def write_folder(gguf_path, out_dir):
    tok, config = tokenizer_files(read_metadata(gguf_path))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    return tok, config


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_tokenizer.py MODEL.gguf OUT_DIR")
    try:
        write_folder(sys.argv[1], sys.argv[2])
    except (GgufError, OSError, KeyError) as e:
        sys.exit(f"error: {e}")
