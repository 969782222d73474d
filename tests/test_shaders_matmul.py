"""Weight-kernel compositions the driver relies on, beyond the per-op check cases: the LM head as
row blocks written at row_offset, prefill at M = 512, decode vs tiled gate_up, and a vocabulary
split across embedding blocks. References are numpy on the same dequantized weights."""

from __future__ import annotations

import numpy as np
import pytest

import shaders
from shaders import harness

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    dev = harness.get_device()
    return dev, harness.caps_of(dev)


def _f32(raw: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return raw[: 4 * n].view(np.float32).reshape(shape)


@pytest.mark.parametrize("fmt", ["q4_0", "f16"])
def test_lm_head_row_blocks(gpu, fmt):
    """Three row blocks (each a standalone tensor, scales restarting at 0) fill one logits vector."""
    dev, caps = gpu
    rng = np.random.default_rng(7)
    cols, blocks = 96, [(0, 40), (40, 33), (73, 9)]
    x = rng.standard_normal(cols).astype(np.float32)
    y = np.full(82, np.nan, np.float32)              # every logit must be written
    want = np.empty(82)
    for r0, n in blocks:
        parts, w = harness.weight_parts(rng, fmt, n, cols)
        k = shaders.kernel("matvec", caps, fmt=fmt, rows=n, cols=cols)
        out = harness.run(k, {**parts, "x": x, "y": y}, {"row_offset": r0}, k.grid(),
                          ["y"], dev)
        y = _f32(out["y"], (82,)).copy()
        want[r0:r0 + n] = w.astype(np.float64) @ x
    _, _, ok = harness.compare(y, want, "dot_f32")
    assert ok, np.abs(y - want).max()


def test_matmul_m512(gpu):
    """Prefill with 512 tokens: 8 token tiles, the last rows tile partial."""
    dev, caps = gpu
    rng = np.random.default_rng(8)
    rows, cols, m = 70, 64, 512
    parts, w = harness.weight_parts(rng, "q4_0", rows, cols)
    x = rng.standard_normal((m, cols)).astype(np.float32)
    k = shaders.kernel("matmul", caps, fmt="q4_0", rows=rows, cols=cols)
    out = harness.run(k, {**parts, "x": x, "y": m * rows * 4}, {"n_tok": m},
                      k.grid(n_tok=m), ["y"], dev)
    got = _f32(out["y"], (m, rows))
    want = x.astype(np.float64) @ w.astype(np.float64).T
    _, _, ok = harness.compare(got, want, "dot_f16" if k.key.f16 else "dot_f32")
    assert ok, np.abs(got - want).max()


def test_gate_up_decode_matches_tiled(gpu):
    dev, caps = gpu
    rng = np.random.default_rng(9)
    ffn, hidden = 48, 64
    p1, _ = harness.weight_parts(rng, "q8_0", ffn, hidden, prefix="w1_")
    p3, _ = harness.weight_parts(rng, "q8_0", ffn, hidden, prefix="w3_")
    x = (rng.standard_normal((1, hidden)) / 8).astype(np.float32)
    res = []
    for decode in (1, 0):
        k = shaders.kernel("gate_up", caps, fmt="q8_0", ffn=ffn, hidden=hidden, decode=decode)
        grid = k.grid() if decode else k.grid(n_tok=1)
        out = harness.run(k, {**p1, **p3, "x": x, "act": ffn * 4}, {"n_tok": 1}, grid, ["act"], dev)
        res.append(_f32(out["act"], (ffn,)))
    tol = "gate_up_f16" if not decode and k.key.f16 else "gate_up_f32"
    assert harness.compare(res[1], res[0].astype(np.float64), tol)[2]


def test_embed_vocab_split_across_blocks(gpu):
    """Two blocks of one vocabulary: every token row is written by exactly the block holding it."""
    dev, caps = gpu
    rng = np.random.default_rng(10)
    hidden, ids = 64, np.array([0, 11, 12, 23, 5, 12], np.uint32)
    table = []
    x = np.full((len(ids), hidden), np.nan, np.float32)
    for r0, n in [(0, 12), (12, 12)]:
        parts, w = harness.weight_parts(rng, "q4_1", n, hidden)
        table.append(w)
        k = shaders.kernel("embed", caps, fmt="q4_1", hidden=hidden)
        out = harness.run(k, {**parts, "ids": ids, "x": x},
                          {"n_tok": len(ids), "row_start": r0, "rows": n},
                          k.grid(n_tok=len(ids)), ["x"], dev)
        x = _f32(out["x"], x.shape).copy()
    assert np.array_equal(x, np.concatenate(table)[ids])


def test_int8_x_residual_recovers_precision(gpu):
    """q4_0 decode with int8 x (unpack=2) and with its rounding residual (unpack=3, the default):
    the residual must cut the error by far more than 50x. A compiler that reassociates the
    residual away (fma(x, s, M) - M == x * s) would leave unpack=3 as coarse as unpack=2."""
    dev, caps = gpu
    rng = np.random.default_rng(11)
    rows, cols = 64, 1024
    parts, w = harness.weight_parts(rng, "q4_0", rows, cols)
    x = rng.standard_normal(cols).astype(np.float32)
    ref = w.astype(np.float64) @ x.astype(np.float64)
    nmse = {}
    for u in (2, 3, None):
        k = shaders.kernel("matvec", caps, fmt="q4_0", rows=rows, cols=cols, unpack=u)
        out = harness.run(k, {**parts, "x": x, "y": np.zeros(rows, np.float32)},
                          {"row_offset": 0}, k.grid(), ["y"], dev)
        y = _f32(out["y"], (rows,)).astype(np.float64)
        nmse[u] = float(np.sum((y - ref) ** 2) / np.sum(ref ** 2))
    assert 1e-6 < nmse[2] < 1e-3, nmse            # int8 x: ~0.4 % per dot
    assert nmse[3] < nmse[2] / 50, nmse
    assert nmse[None] == nmse[3], nmse            # the default q4_0 decode is unpack=3
    assert "dot4I8Packed" in shaders.kernel("gate_up", caps, fmt="q4_0", ffn=8, hidden=64,
                                            decode=1).wgsl
