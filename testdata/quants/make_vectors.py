#!/usr/bin/env python3
"""Generate bit-exactness vectors for ferrollama-tensor's ggml quant formats.

An independent reference: the PyPI `gguf` package implements ggml's
(de)quantization in numpy. For every format we write seeded random blocks
(sane f16 scales, random quants, plus a few edge-case scales), dequantize
them with `gguf.quants.dequantize`, and store inputs + outputs. gguf has no
Q8_1 / Q8_K dequantizer, so those two use the one-line numpy formula from
ggml (`qs * d`). For Q8_0 / Q4_0 / Q4_1 / BF16 / F16 we also store
`gguf.quants.quantize` results for random f32 rows. Q5_0 / Q5_1 (both
directions) come last, from their own seeded generator, so adding them left
every earlier file byte-identical.

Output (little-endian), one file per case `<name>.bin`:
    u32 magic 0x51564543 ('CEVQ'), u32 ggml type id, u32 n_elements,
    u32 n_input_bytes, input bytes, n_elements f32 (or for quantize cases:
    n_elements f32 inputs, then the quantized bytes).
Index: `index.txt`, one line per file: `<file> <kind> <type> <n>`.

Usage: python make_vectors.py   (needs: pip install gguf numpy)
"""
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x51564543
rng = np.random.default_rng(0x5EED)


def f16_scales(n, lo=1e-3, hi=1e-1, signed=True):
    """Random f16 scales, log-uniform magnitude, with edge cases mixed in."""
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.float16)
    if signed:
        mag = mag * rng.choice([-1, 1], n).astype(np.float16)
    edge = np.array([0.0, -0.0, 6.0e-8, 3.0e-5, 65504.0, 1.0], dtype=np.float16)
    mag[: min(len(edge), n)] = edge[: min(len(edge), n)]
    return mag.view(np.uint8).reshape(n, 2)


def rand_bytes(n, k):
    return rng.integers(0, 256, (n, k), dtype=np.uint8)


def blocks(qtype, n):
    """Raw bytes of n random blocks of qtype."""
    if qtype == T.Q8_0:
        return np.concatenate([f16_scales(n), rand_bytes(n, 32)], axis=1)
    if qtype == T.Q8_1:
        return np.concatenate([f16_scales(n), f16_scales(n), rand_bytes(n, 32)], axis=1)
    if qtype == T.Q4_0:
        return np.concatenate([f16_scales(n), rand_bytes(n, 16)], axis=1)
    if qtype == T.Q4_1:
        return np.concatenate([f16_scales(n), f16_scales(n), rand_bytes(n, 16)], axis=1)
    if qtype == T.Q5_0:
        return np.concatenate([f16_scales(n), rand_bytes(n, 4), rand_bytes(n, 16)], axis=1)
    if qtype == T.Q5_1:
        return np.concatenate([f16_scales(n), f16_scales(n), rand_bytes(n, 4), rand_bytes(n, 16)], axis=1)
    if qtype == T.Q4_K:
        return np.concatenate(
            [f16_scales(n, signed=False), f16_scales(n, signed=False), rand_bytes(n, 12), rand_bytes(n, 128)],
            axis=1,
        )
    if qtype == T.Q6_K:
        return np.concatenate([rand_bytes(n, 128), rand_bytes(n, 64), rand_bytes(n, 16), f16_scales(n)], axis=1)
    if qtype == T.Q8_K:
        d = (rng.uniform(1e-4, 1e-2, n) * rng.choice([-1, 1], n)).astype(np.float32)
        d[0] = 0.0
        qs = rng.integers(-127, 128, (n, 256), dtype=np.int8)
        bsums = qs.reshape(n, 16, 16).astype(np.int16).sum(axis=2).astype(np.int16)
        return np.concatenate([d.view(np.uint8).reshape(n, 4), qs.view(np.uint8), bsums.view(np.uint8)], axis=1)
    if qtype == T.F16:
        v = (rng.standard_normal(n) * 10).astype(np.float16)
        v[:4] = np.array([0.0, -0.0, 6.0e-8, 65504.0], dtype=np.float16)
        return v.view(np.uint8).reshape(n, 2)
    if qtype == T.BF16:
        v = (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        v[:5] = np.array([0x0000, 0x8000, 0x0001, 0x7FC0, 0xFF80], dtype=np.uint16)  # 0, -0, subnormal, NaN, -inf
        return v.view(np.uint8).reshape(n, 2)
    raise ValueError(qtype)


def dequant(qtype, data):
    if qtype == T.Q8_1:
        d = data[:, 0:2].copy().view(np.float16).astype(np.float32)
        return (data[:, 4:].copy().view(np.int8).astype(np.float32) * d).ravel()
    if qtype == T.Q8_K:
        d = data[:, 0:4].copy().view(np.float32)
        return (d * data[:, 4:260].copy().view(np.int8).astype(np.float32)).ravel()
    return quants.dequantize(data.ravel(), qtype).astype(np.float32).ravel()


def quant_row(n):
    """A gaussian row of mixed scales with an all-zero, a constant and a ramp block."""
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 30.0], n)).astype(np.float32)
    x[0:32] = 0.0  # all-zero block
    x[32:64] = 1.25  # constant block
    x[64:96] = np.linspace(-1, 1, 32, dtype=np.float32)
    return x


def write(name, qtype, n_elems, payload_in, payload_out, kind, index):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(struct.pack("<4I", MAGIC, int(qtype), n_elems, len(payload_in)))
        f.write(payload_in)
        f.write(payload_out)
    index.append(f"{name} {kind} {qtype.name} {n_elems}")


def main():
    index = []
    block_elems = {T.Q8_0: 32, T.Q8_1: 32, T.Q4_0: 32, T.Q4_1: 32, T.Q4_K: 256, T.Q6_K: 256, T.Q8_K: 256, T.F16: 1, T.BF16: 1}
    for qtype, be in block_elems.items():
        n_blocks = 2048 // be
        data = blocks(qtype, n_blocks).astype(np.uint8)
        out = dequant(qtype, data)
        assert out.dtype == np.float32 and out.size == n_blocks * be
        write(f"deq_{qtype.name.lower()}.bin", qtype, out.size, data.tobytes(), out.astype("<f4").tobytes(), "dequant", index)

    # Quantization cases: gaussian rows with a few special blocks.
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.BF16, T.F16):
        x = quant_row(1024)
        q = quants.quantize(x.reshape(1, -1), qtype)
        qb = np.ascontiguousarray(q).view(np.uint8).tobytes()
        write(f"q_{qtype.name.lower()}.bin", qtype, x.size, x.astype("<f4").tobytes(), qb, "quant", index)

    # Q5_0 / Q5_1, appended with a fresh generator (see the docstring).
    global rng
    rng = np.random.default_rng(0x5EED5)
    for qtype in (T.Q5_0, T.Q5_1):
        data = blocks(qtype, 2048 // 32).astype(np.uint8)
        out = dequant(qtype, data)
        assert out.dtype == np.float32 and out.size == 2048
        write(f"deq_{qtype.name.lower()}.bin", qtype, out.size, data.tobytes(), out.astype("<f4").tobytes(), "dequant", index)
    for qtype in (T.Q5_0, T.Q5_1):
        x = quant_row(2048)
        # Values whose scaled form lands on exact .5 steps (+16.5 / +0.5 truncation).
        x[96:128] = np.arange(-16, 16, dtype=np.float32)
        x[128:160] = np.arange(0, 32, dtype=np.float32) * 0.5 - 3.0
        q = quants.quantize(x.reshape(1, -1), qtype)
        qb = np.ascontiguousarray(q).view(np.uint8).tobytes()
        write(f"q_{qtype.name.lower()}.bin", qtype, x.size, x.astype("<f4").tobytes(), qb, "quant", index)

    with open(os.path.join(HERE, "index.txt"), "w") as f:
        f.write("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
