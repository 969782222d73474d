"""shaders/multi.py's pre-quantized x (``quant_x`` then matvec_multi / gate_up_multi with xq=1):
the same int8 chunks as the kernels that quantize x themselves, so the same outputs to f32
rounding, and both within the int8-x tolerance of float64 numpy (lavapipe in CI)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from shaders import UnsupportedKernel, harness, kernel, load_ops  # noqa: E402


@pytest.fixture(scope="module")
def caps():
    load_ops()
    try:
        dev = harness.get_device()
    except harness.NoAdapter as e:
        pytest.skip(f"no WebGPU adapter: {e}")
    c = harness.caps_of(dev)
    if not c.packed_dot:
        pytest.skip("the adapter's WGSL lacks packed_4x8_integer_dot_product (xq needs unpack 3)")
    return c


@pytest.mark.parametrize("op,rows,cols,nb,n,knobs", [
    ("matvec_multi", 37, 512, 8, 5, {}),
    ("matvec_multi", 64, 1024, 4, 4, {"wg": 32, "r": 8}),
    ("gate_up_multi", 21, 512, 8, 5, {"r": 2}),
    ("gate_up_multi", 16, 256, 2, 1, {"sg": 0}),
])
def test_prequantized_x_matches(caps, op, rows, cols, nb, n, knobs):
    rng = np.random.default_rng(7)
    gate = op == "gate_up_multi"
    if gate:
        b1, w1 = harness.weight_parts(rng, "q4_0", rows, cols, prefix="w1_")
        b3, w3 = harness.weight_parts(rng, "q4_0", rows, cols, prefix="w3_")
        bufs, dims, out = {**b1, **b3}, {"ffn": rows, "hidden": cols}, "act"
    else:
        bufs, w = harness.weight_parts(rng, "q4_0", rows, cols)
        dims, out = {"rows": rows, "cols": cols}, "y"
    x = (rng.standard_normal((nb, cols)) * rng.uniform(0.1, 3.0, (nb, 1))).astype(np.float32)
    y0 = np.full((nb, rows), 7.0, np.float32)            # rows t >= n stay untouched
    kq = kernel("quant_x", caps, fmt="q4_0", cols=cols, nb=nb)
    k1 = kernel(op, caps, fmt="q4_0", nb=nb, xq=1, **dims, **knobs)
    k0 = kernel(op, caps, fmt="q4_0", nb=nb, **dims, **knobs)
    assert "xq" in k1.slug and [b.name for b in k1.bindings][0] == "xq"
    p = {"n_tok": n}
    got = harness.run_steps([(kq, p, kq.grid()), (k1, p, k1.grid())],
                            {**bufs, "x": x, "xq": nb * cols // 32 * 80, out: y0}, [out])
    ref = harness.run(k0, {**bufs, "x": x, out: y0}, p, k0.grid(), [out])
    a = got[out].view(np.float32).reshape(nb, rows)
    b = ref[out].view(np.float32).reshape(nb, rows)
    assert (a[n:] == 7.0).all() and (b[n:] == 7.0).all()
    assert np.allclose(a[:n], b[:n], rtol=1e-5, atol=1e-5 * np.abs(b[:n]).max()), \
        np.abs(a[:n] - b[:n]).max()
    xd = x[:n].astype(np.float64)
    if gate:
        g = xd @ w1.astype(np.float64).T
        want = g / (1 + np.exp(-g)) * (xd @ w3.astype(np.float64).T)
    else:
        want = xd @ w.astype(np.float64).T
    assert np.abs(a[:n] - want).max() <= 2e-3 * np.abs(want).max()


def test_prequantized_x_refused_where_it_does_not_apply(caps):
    for fmt in ("q8_0", "f16"):
        with pytest.raises(UnsupportedKernel, match="q4_0"):
            kernel("quant_x", caps, fmt=fmt, cols=64, nb=2)
        with pytest.raises(UnsupportedKernel, match="q4_0"):
            kernel("matvec_multi", caps, fmt=fmt, rows=8, cols=64, nb=2, xq=1)
    with pytest.raises(UnsupportedKernel, match="q4_0"):
        kernel("matvec_multi", caps, fmt="q4_0", rows=8, cols=64, nb=2, xq=1, unpack=0)


def test_bench_multi_default_shapes_are_the_presets_layers():
    """``python -m shaders bench --multi`` (default sweep): the 1B and 8B presets' layer weights."""
    from shaders.bench_multi import preset_shapes
    got = {(p, nm): (op, r, c) for op, r, c, nm, _, p in preset_shapes()}
    assert got == {
        ("llama3-8b-shape", "wq/wo"): ("matvec_multi", 4096, 4096),
        ("llama3-8b-shape", "wk/wv"): ("matvec_multi", 1024, 4096),
        ("llama3-8b-shape", "w1+w3"): ("gate_up_multi", 14336, 4096),
        ("llama3-8b-shape", "w2"): ("matvec_multi", 4096, 14336),
        ("llama3.2-1b-shape", "wq/wo"): ("matvec_multi", 2048, 2048),
        ("llama3.2-1b-shape", "wk/wv"): ("matvec_multi", 512, 2048),
        ("llama3.2-1b-shape", "w1+w3"): ("gate_up_multi", 8192, 2048),
        ("llama3.2-1b-shape", "w2"): ("matvec_multi", 2048, 8192)}
