#!/usr/bin/env python3
"""Write PyTorch `torch.save` zip files without torch: the Meta-format tiny checkpoint and
a few small record files that pin the reader's behaviour.

Run with any python that has numpy and the `gguf` package, e.g. the llama.cpp venv:

    PY=$(scripts/setup-llamacpp | tail -n1)
    "$PY" testdata/meta/make_meta.py

Writes into testdata/meta/ (committed):
    tiny/params.json, tiny/consolidated.00.pth, tiny/consolidated.01.pth
        testdata/tiny/tiny-f16.gguf as a Meta checkpoint split for 2-way model parallelism,
        the way llama-models' checkpoint.py reshards: column-parallel matrices (wq wk wv w1
        w3 output tok_embeddings) split on rows, row-parallel ones (wo w2) on columns,
        norms replicated. Matrices F16 (HalfStorage) and norms F32 (FloatStorage), so the
        values are exactly the GGUF's. No rope_freqs (Meta has none: use_scaled_rope).
    records.pth, records-p4.pth
        edge cases (BF16, shared storage with an offset, 0-d and empty tensors, a Parameter,
        an int64 tensor, size-1 dims with odd strides, non-tensor values), pickled with
        protocol 2 (what torch.save writes) and protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL).
    records.json
        what the record files hold: dtype, shape and values of every tensor.
    noncontig.pth
        one transposed (non-contiguous) tensor, which the reader must refuse.

How the files are made matches torch/serialization.py `_save` (pickle protocol 2, each
storage a persistent id `('storage', torch.<Type>Storage, key, 'cpu', numel)`, storages in
records `<archive>/data/<key>` written in sorted key order, plus `byteorder` and `version`
records) and caffe2's PyTorchFileWriter (every record stored uncompressed, its data aligned
to 64 bytes by an `FB` extra field). Tensors pickle as `torch._utils._rebuild_tensor_v2`
with `(storage, storage_offset, size, stride, requires_grad, OrderedDict())`, exactly the
arguments `Tensor._reduce_ex_internal` gives. A stand-in `torch` module is registered in
sys.modules so that pickle writes those globals by name; nothing here imports real torch.

Deterministic: re-running produces bit-identical files.
"""
from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import gguf

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "tiny" / "tiny-f16.gguf"

# ---- a stand-in `torch` module, only so pickle writes the right global names ----------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _never(*_args):
    raise RuntimeError("stand-in: this script only writes files")


def _named_function(module, name):
    f = types.FunctionType(_never.__code__, {}, name)
    f.__module__ = module.__name__
    f.__qualname__ = name
    setattr(module, name, f)
    return f


_rebuild_tensor_v2 = _named_function(torch_utils, "_rebuild_tensor_v2")
_rebuild_parameter = _named_function(torch_utils, "_rebuild_parameter")


def _storage_class(name):
    cls = type(name, (), {})
    cls.__module__ = "torch"
    cls.__qualname__ = name
    setattr(torch, name, cls)
    return cls


STORAGE = {
    np.dtype(np.float32): _storage_class("FloatStorage"),
    np.dtype(np.float16): _storage_class("HalfStorage"),
    "bf16": _storage_class("BFloat16Storage"),
    np.dtype(np.int64): _storage_class("LongStorage"),
}


class Storage:
    """One storage: raw little-endian bytes and its element type."""

    def __init__(self, kind, raw: bytes, itemsize: int):
        self.cls = STORAGE[kind]
        self.raw = raw
        self.numel = len(raw) // itemsize


def storage_of(arr: np.ndarray) -> Storage:
    arr = np.ascontiguousarray(arr)
    return Storage(arr.dtype, arr.tobytes(), arr.dtype.itemsize)


def bf16_storage(values: np.ndarray) -> Storage:
    """BF16 = the top 16 bits of f32 (values chosen to be exact)."""
    bits = (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    assert np.array_equal(
        (bits.astype(np.uint32) << 16).view(np.float32), np.asarray(values, np.float32)
    ), "bf16 values must be exact"
    return Storage("bf16", bits.tobytes(), 2)


class Tensor:
    """A tensor record: a view (offset, shape, stride in elements) of a storage."""

    def __init__(self, storage, offset, shape, stride=None, parameter=False):
        if stride is None:  # contiguous row-major
            stride, acc = [], 1
            for d in reversed(shape):
                stride.insert(0, acc)
                acc *= d
        self.storage, self.offset = storage, offset
        self.shape, self.stride = tuple(shape), tuple(stride)
        self.parameter = parameter

    def __reduce_ex__(self, _protocol):
        if self.parameter:
            inner = Tensor(self.storage, self.offset, self.shape, self.stride)
            return (_rebuild_parameter, (inner, False, collections.OrderedDict()))
        args = (self.storage, self.offset, self.shape, self.stride, False,
                collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


def tensor(arr: np.ndarray) -> Tensor:
    return Tensor(storage_of(arr), 0, arr.shape)


# ---- torch.save ------------------------------------------------------------------------
class TorchPickler(pickle.Pickler):
    """torch.save's pickler: storages leave the pickle as persistent ids."""

    def __init__(self, f, protocol):
        super().__init__(f, protocol=protocol)
        self.keys: dict[int, str] = {}
        self.storages: dict[str, Storage] = {}

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            key = self.keys.setdefault(id(obj), str(len(self.keys)))
            self.storages[key] = obj
            return ("storage", obj.cls, key, "cpu", obj.numel)
        return None


def write_record(zf: zipfile.ZipFile, name: str, data: bytes):
    """A stored record whose data starts at a multiple of 64, as PyTorchFileWriter does."""
    offset = zf.fp.tell()
    header = 30 + len(name.encode()) + 4
    pad = (-(offset + header)) % 64
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # header id "FB"
    info.create_system = 0
    info.external_attr = 0
    zf.writestr(info, data)


def torch_save(obj, path: Path, archive: str, protocol: int = 2):
    buf = io.BytesIO()
    p = TorchPickler(buf, protocol)
    p.dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        write_record(zf, f"{archive}/data.pkl", buf.getvalue())
        write_record(zf, f"{archive}/byteorder", b"little")
        for key in sorted(p.storages):
            write_record(zf, f"{archive}/data/{key}", p.storages[key].raw)
        write_record(zf, f"{archive}/version", b"3\n")
        write_record(zf, f"{archive}/.data/serialization_id", b"0" * 40)


# ---- the tiny model as a Meta checkpoint --------------------------------------------------
GGUF_TO_META = {
    "token_embd": "tok_embeddings",
    "output_norm": "norm",
    "output": "output",
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
}
# llama-models 0.3.0 models/checkpoint.py: _WEIGHT_ROW_KEY (split on the last dim) and
# _WEIGHT_COLUMN_KEY (split on dim 0); anything else is replicated.
ROW_PARALLEL = ("attention.wo", "feed_forward.w2")
COLUMN_PARALLEL = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1",
                   "feed_forward.w3", "output", "tok_embeddings")


def meta_name(gguf_name: str) -> str | None:
    base = gguf_name.removesuffix(".weight")
    if base.startswith("blk."):
        _, layer, rest = base.split(".", 2)
        return f"layers.{layer}.{GGUF_TO_META[rest]}.weight"
    if base == "rope_freqs":
        return None
    return f"{GGUF_TO_META[base]}.weight"


def field(r, key):
    return r.fields[key].contents()


def make_tiny(mp: int = 2):
    r = gguf.GGUFReader(str(TINY))
    shards = [collections.OrderedDict() for _ in range(mp)]
    for t in r.tensors:
        name = meta_name(t.name)
        if name is None:
            continue
        arr = np.array(t.data)  # numpy order: (rows, cols); F16 matrices, F32 norms
        ref = name.removesuffix(".weight")
        if ref.startswith("layers."):
            ref = ref.split(".", 2)[2]
        if arr.ndim == 1:
            parts = [arr] * mp
        elif ref in ROW_PARALLEL:
            parts = np.split(arr, mp, axis=1)
        elif ref in COLUMN_PARALLEL:
            parts = np.split(arr, mp, axis=0)
        else:
            raise SystemExit(f"unexpected tensor {name}")
        for shard, part in zip(shards, parts):
            shard[name] = tensor(np.ascontiguousarray(part))
    out = HERE / "tiny"
    out.mkdir(exist_ok=True)
    for i, shard in enumerate(shards):
        # a module state_dict carries `_metadata`; pickle writes it with BUILD
        shard._metadata = collections.OrderedDict([("", {"version": 1})])
        torch_save(shard, out / f"consolidated.{i:02d}.pth", "consolidated")

    dim = int(field(r, "llama.embedding_length"))
    ffn = int(field(r, "llama.feed_forward_length"))
    multiple_of, multiplier = 256, 0.375
    # llama-models FeedForward: int(2 * 4 * dim / 3), * multiplier, round up to multiple_of
    hidden = int(multiplier * int(2 * (4 * dim) / 3))
    assert multiple_of * ((hidden + multiple_of - 1) // multiple_of) == ffn
    params = {
        "dim": dim,
        "n_layers": int(field(r, "llama.block_count")),
        "n_heads": int(field(r, "llama.attention.head_count")),
        "n_kv_heads": int(field(r, "llama.attention.head_count_kv")),
        "vocab_size": int(field(r, "llama.vocab_size")),
        "multiple_of": multiple_of,
        "ffn_dim_multiplier": multiplier,
        # the shortest decimal of the GGUF's f32 (1e-05), as Meta writes it
        "norm_eps": float(str(np.float32(field(r, "llama.attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "use_scaled_rope": True,
    }
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")


# ---- record files ------------------------------------------------------------------------
def make_records():
    shared = storage_of(np.arange(20, dtype=np.float16) - 7)
    bf16_values = np.arange(15, dtype=np.float32).reshape(3, 5) * 0.5 - 3
    entries = collections.OrderedDict()
    entries["bf16"] = Tensor(bf16_storage(bf16_values), 0, (3, 5))
    entries["f16.whole"] = Tensor(shared, 0, (20,))
    entries["f16.view"] = Tensor(shared, 4, (2, 4))
    entries["f32.3d"] = tensor(np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4))
    entries["scalar"] = tensor(np.array(2.5, dtype=np.float32))
    entries["param"] = Tensor(storage_of(np.array([1, -2, 3, -4], np.float32)), 0, (4,),
                              parameter=True)
    entries["i64"] = tensor(np.array([5, -6, 1 << 40], dtype=np.int64))
    entries["size1"] = Tensor(storage_of(np.arange(4, dtype=np.float32)), 0, (1, 4), (7, 1))
    entries["empty"] = tensor(np.zeros((0, 4), np.float32))
    entries["not_a_tensor"] = {"epoch": 3, "lr": 1.5e-4, "name": "x", "big": 1 << 40,
                               "neg": -(1 << 33), "flags": [True, False, None], "t": (1, 2)}

    def values(name):
        t = entries[name]
        raw = t.storage.raw
        kind = t.storage.cls.__name__
        if kind == "BFloat16Storage":
            all_ = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            dt = {"FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8"}[kind]
            all_ = np.frombuffer(raw, dt)
        n = int(np.prod(t.shape, dtype=np.int64))
        return kind, [v.item() for v in all_[t.offset:t.offset + n]]

    expect = {}
    for name, t in entries.items():
        if isinstance(t, Tensor):
            kind, vals = values(name)
            expect[name] = {"storage": kind, "shape": list(t.shape), "values": vals}
    torch_save(entries, HERE / "records.pth", "archive", protocol=2)
    torch_save(entries, HERE / "records-p4.pth", "records-p4", protocol=4)
    (HERE / "records.json").write_text(json.dumps(expect, indent=1) + "\n")

    a = np.arange(6, dtype=np.float32)
    torch_save({"t": Tensor(storage_of(a), 0, (3, 2), (1, 3))}, HERE / "noncontig.pth",
               "noncontig")


if __name__ == "__main__":
    make_tiny()
    make_records()
    for p in sorted(HERE.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(HERE)}: {p.stat().st_size} bytes")
