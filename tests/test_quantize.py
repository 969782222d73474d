"""modelfmt.quantize: per-element error bound, exact round trip on the grid, and the bit layout
of modelfmt/formats.py checked against gguf's own dequantization (an independent oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from modelfmt.formats import part_nbytes
from modelfmt.quantize import QuantError, dequantize, part_bytes, quantize

QUANT = ("q4_0", "q4_1", "q8_0")


def _inputs():
    rng = np.random.default_rng(7)
    yield "normal", rng.standard_normal((64, 256)).astype(np.float32) * 0.02
    yield "uniform", rng.uniform(-3, 3, (32, 128)).astype(np.float32)
    x = rng.standard_normal((16, 128)).astype(np.float32)
    x[:, ::37] *= 50  # outliers inside groups
    yield "outliers", x
    c = np.full((8, 64), 0.37, np.float32)
    c[4:] = 0.0  # constant and all-zero groups: d = 0 must not divide by zero
    yield "constant", c
    # all-positive groups with a tiny spread: q4_1's f16 min must round DOWN or the bound breaks
    yield "offset", (1.0 + 1e-4 * rng.standard_normal((16, 64))).astype(np.float32)
    yield "tiny", (rng.standard_normal((8, 64)) * 1e-7).astype(np.float32)  # subnormal f16 scales
    yield "large", (rng.standard_normal((8, 64)) * 3e3).astype(np.float32)
    yield "positive", rng.uniform(0, 1, (8, 96)).astype(np.float32)


@pytest.mark.parametrize("fmt", QUANT)
@pytest.mark.parametrize("group", [32, 64])
def test_error_within_half_scale(fmt, group):
    for label, x in _inputs():
        rows, cols = x.shape
        if cols % group:
            continue
        parts = quantize(x, fmt, group)
        y = dequantize(parts, fmt, rows, cols, group)
        d = parts["scales"].view(np.float16).astype(np.float32)      # (rows, cols/G) stored scales
        bound = np.repeat(d, group, axis=1) / 2                        # (rows, cols)
        slack = 1e-6 * (np.abs(x) + 1e-30)                             # f32 rounding of q*d+m
        err = np.abs(x - y)
        assert (err <= bound + slack).all(), (
            f"{fmt} g{group} {label}: worst excess {(err - bound).max()} at "
            f"{np.unravel_index(np.argmax(err - bound), err.shape)}")


@pytest.mark.parametrize("fmt", QUANT)
def test_round_trip_exact_on_grid(fmt):
    for label, x in _inputs():
        if fmt == "q4_1" and label == "offset":
            # m ~ 1 with d ~ 1e-5: q*d + m needs more than f32's 24 bits, so the dequantized
            # values are rounded OFF the grid and cannot round-trip bit-exactly (the error bound
            # test above still covers this case).
            continue
        rows, cols = x.shape
        y = dequantize(quantize(x, fmt), fmt, rows, cols)  # values on the grid
        p2 = quantize(y, fmt)
        assert np.array_equal(dequantize(p2, fmt, rows, cols), y), f"{fmt} {label}"
        if label == "tiny":
            continue  # subnormal f16 scales: several (d, m, q) spell the same values
        p1 = quantize(x, fmt)
        for k in p1:  # the same codes and scales again
            assert np.array_equal(p1[k], p2[k]), f"{fmt} {label} part {k}"


def test_f16_and_f32():
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    p = quantize(x, "f16")
    assert p["data"].dtype == np.uint16
    assert np.array_equal(dequantize(p, "f16", 8, 64), x.astype(np.float16).astype(np.float32))
    assert np.array_equal(dequantize(quantize(x, "f32"), "f32", 8, 64), x)


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0", "f16", "f32"])
def test_part_sizes_match_formats(fmt):
    x = np.random.default_rng(2).standard_normal((3, 96)).astype(np.float32)
    for name, a in quantize(x, fmt).items():
        assert len(part_bytes(a)) == part_nbytes(fmt, name, 3, 96), name
        assert len(part_bytes(a)) % 4 == 0


def test_nibble_and_byte_order():
    """formats.py: nibble j (bits 4j..4j+3) of u32 word w = column 8w+j; q8 byte j = column 4w+j."""
    x = np.zeros((1, 32), np.float32)
    x[0, :15] = np.arange(-7, 8)  # amax 7 -> d = 1, q = x + 8 = 1..15 in columns 0..14
    p = quantize(x, "q4_0")
    assert p["scales"].view(np.float16)[0, 0] == 1.0
    words = [int(w) for w in p["qs"][0]]
    codes = [(words[c // 8] >> (4 * (c % 8))) & 15 for c in range(32)]
    assert codes == list(range(1, 16)) + [8] * 17
    x8 = np.arange(32, dtype=np.float32).reshape(1, 32) - 16  # amax 16: d = 16/127
    p8 = quantize(x8, "q8_0")
    b = [(int(p8["qs"][0, c // 4]) >> (8 * (c % 4))) & 0xFF for c in range(32)]
    d = float(p8["scales"].view(np.float16)[0, 0])
    assert [((v + 128) % 256) - 128 for v in b] == [round(float(v) / d) for v in x8[0]]


def _to_gguf_blocks(parts, fmt, rows, cols):
    """Our parts -> GGUF block bytes, written from the layouts' definitions (test-only, slow)."""
    d = parts["scales"].view(np.float16).reshape(rows, cols // 32)
    out = bytearray()
    for r in range(rows):
        for g in range(cols // 32):
            if fmt == "q8_0":
                raw = np.ascontiguousarray(parts["qs"][r]).view(np.int8)[g * 32:(g + 1) * 32]
                out += d[r, g].tobytes() + raw.tobytes()
                continue
            words = parts["qs"][r]
            code = [(int(words[(g * 32 + j) // 8]) >> (4 * ((g * 32 + j) % 8))) & 15
                    for j in range(32)]
            # GGUF Q4_0/Q4_1: byte j = element j (low nibble) | element j+16 (high nibble)
            qb = bytes(code[j] | (code[j + 16] << 4) for j in range(16))
            head = d[r, g].tobytes()
            if fmt == "q4_1":
                head += parts["mins"].view(np.float16).reshape(rows, -1)[r, g].tobytes()
            out += head + qb
    return np.frombuffer(bytes(out), np.uint8)


@pytest.mark.parametrize("fmt", QUANT)
def test_dequantize_matches_gguf(fmt):
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize as gg_dequantize
    rows, cols = 4, 64
    x = np.random.default_rng(3).standard_normal((rows, cols)).astype(np.float32)
    parts = quantize(x, fmt)
    qt = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0}[fmt]
    ref = gg_dequantize(_to_gguf_blocks(parts, fmt, rows, cols), qt).reshape(rows, cols)
    assert np.array_equal(dequantize(parts, fmt, rows, cols), ref.astype(np.float32))


def test_dequantize_reads_shard_bytes():
    x = np.random.default_rng(4).standard_normal((5, 64)).astype(np.float32)
    parts = quantize(x, "q4_1")
    raw = {k: part_bytes(v) for k, v in parts.items()}  # padded, as stored
    assert np.array_equal(dequantize(raw, "q4_1", 5, 64), dequantize(parts, "q4_1", 5, 64))


@pytest.mark.parametrize("bad, why", [
    (np.full((2, 32), np.nan, np.float32), "NaN"),
    (np.full((2, 32), np.inf, np.float32), "NaN or infinite"),
    (np.ones((2, 33), np.float32), "multiple of the group size"),
    (np.ones(32, np.float32), "2-D"),
])
def test_bad_values_refused(bad, why):
    with pytest.raises(QuantError, match=why):
        quantize(bad, "q4_0")


def test_8b_shape_is_fast():
    """A 14336 x 4096 (8B FFN) matrix must quantize in seconds, not minutes."""
    import time
    x = np.random.default_rng(5).standard_normal((14336, 4096), dtype=np.float32)
    t = time.time()
    quantize(x, "q4_0")
    assert time.time() - t < 30
