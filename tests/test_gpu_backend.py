"""The wgpu-py backend of driver.gpu: buffers, a replayed Program, async reads, error reporting.

Runs on whatever adapter wgpu-py finds (lavapipe in CI). When WGPU_EXPECT_ADAPTER is set, the
adapter's description must contain it (the test fails, never skips, on a mismatch).
"""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from driver import gpu as g  # noqa: E402
from driver.native.backend_wgpu import WgpuBackend  # noqa: E402
from shaders.core import Binding, Kernel, KernelKey, Params  # noqa: E402

pytestmark = pytest.mark.gpu

# y[i] = x[i] * params.scale + y[i]  over n elements (a tiny axpy kernel written for this test)
_AXPY = """
struct Params { n: u32, scale: f32, }
@group(0) @binding(0) var<storage, read> x: array<f32>;          // (n,)
@group(0) @binding(1) var<storage, read_write> y: array<f32>;    // (n,)
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < params.n) { y[i] = x[i] * params.scale + y[i]; }
}
"""


def _axpy_kernel(wgsl: str = _AXPY) -> Kernel:
    return Kernel(key=KernelKey(op="test_axpy"), wgsl=wgsl,
                  bindings=(Binding("x", "read"), Binding("y", "read_write"),
                            Binding("params", "uniform")),
                  params=Params((("n", "u32"), ("scale", "f32"))))


@pytest.fixture(scope="module")
def backend():
    b = WgpuBackend.create_sync()
    want = os.environ.get("WGPU_EXPECT_ADAPTER")
    if want:
        assert want.lower() in b.info["description"].lower(), (
            f"expected adapter {want!r}, got {b.info['description']!r}")
    yield b
    b.destroy()


def test_program_replay_and_reads(backend):
    n = 100
    k = _axpy_kernel()
    pipe = backend.create_pipeline(k)
    x = backend.create_buffer(n * 4, g.STORAGE, "x")     # (n,) f32
    y = backend.create_buffer(n * 4, g.STORAGE, "y")     # (n,) f32
    u = backend.create_buffer(2 * g.UNIFORM_STRIDE, g.UNIFORM, "params")  # two param slices
    rb = backend.create_buffer(256, g.READBACK, "rb")
    backend.write_buffer(x, 0, struct.pack(f"<{n}f", *range(n)))
    backend.write_buffer(y, 0, bytes(n * 4))
    backend.write_buffer(u, 0, k.params.pack(n=n, scale=2.0))
    backend.write_buffer(u, g.UNIFORM_STRIDE, k.params.pack(n=n // 2, scale=1.0))
    bg0 = backend.create_bind_group(pipe, k, {"x": (x, 0, n * 4), "y": (y, 0, n * 4),
                                              "params": (u, 0, 16)})
    bg1 = backend.create_bind_group(pipe, k, {"x": (x, 0, n * 4), "y": (y, 0, n * 4),
                                              "params": (u, g.UNIFORM_STRIDE, 16)})
    prog = g.Program()
    prog.dispatch(pipe, bg0, (2,), k.slug)
    prog.dispatch(pipe, bg1, (2, 1, 1), k.slug)
    prog.copy(y, 4 * 7, rb, 0, 4)
    assert prog.n_dispatches == 2

    async def run():
        backend.submit(prog)
        backend.submit(prog)    # replay: y = 2 * (2x + [x on the first half])
        first = await backend.map_read(rb, 0, 4)
        whole = await backend.read(y, 0, n * 4)
        return first, whole

    first, whole = asyncio.run(run())
    ys = struct.unpack(f"<{n}f", whole)
    for i in range(n):
        per = 2.0 * i + (i if i < n // 2 else 0)
        assert ys[i] == pytest.approx(2 * per), i
    assert struct.unpack("<f", first)[0] == pytest.approx(2 * 21.0)


def test_shader_error_names_the_kernel(backend):
    bad = _axpy_kernel(_AXPY.replace("x[i] * params.scale", "x[i] * undefined_thing"))
    with pytest.raises(g.ShaderError, match="test_axpy"):
        backend.create_pipeline(bad)


def test_bind_group_names_checked(backend):
    k = _axpy_kernel()
    pipe = backend.create_pipeline(k)
    x = backend.create_buffer(64, g.STORAGE)
    with pytest.raises(ValueError, match="missing"):
        backend.create_bind_group(pipe, k, {"x": (x, 0, 64)})


def test_requirements_checked(backend):
    huge = backend.limits["max_buffer_size"] + 1
    with pytest.raises(g.LimitTooLow, match="max_buffer_size"):
        backend.check_requirements({"max_buffer_size": huge, "features": []})
    with pytest.raises(g.FeatureMissing, match="no-such-feature"):
        backend.check_requirements({"features": ["no-such-feature"]})
    backend.check_requirements({"max_buffer_size": 1024, "features": []})
    assert backend.caps.max_storage_binding >= 128 << 20
