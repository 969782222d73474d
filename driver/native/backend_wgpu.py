"""The native GPU backend: driver.gpu.GPU over wgpu-py (tests, CLI, bench). Native only.

Only this module imports wgpu. It uses wgpu's async entry points (``request_adapter_async``,
``request_device_async``, ``map_async``) so the engine's async code is the same one the browser
backend runs; ``create_sync`` is the facade the native CLI uses via ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

# Mesa's Vulkan loader prints "error: XDG_RUNTIME_DIR is invalid" on every start when the variable is
# unset (root shells, CI); a private runtime folder keeps the CLI's output to what it says itself.
if not os.environ.get("XDG_RUNTIME_DIR"):
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-runtime-")

import wgpu  # noqa: E402

from driver import gpu as g
from modelfmt import device as dev
from shaders.harness import native_source

try:  # the raw wgpu-native bindings, for the per-dispatch hot loop only
    from wgpu.backends.wgpu_native._ffi import ffi as _ffi, lib as _lib
except ImportError:  # another wgpu-py layout: use the public API
    _ffi = _lib = None

# Features enabled when the adapter has them and limits raised to its maximum: modelfmt.device's,
# in wgpu-py's spelling (kebab-case limits, "subgroup").
WANTED_FEATURES = tuple(n for f in dev.WANTED_FEATURES for n in (f, *dev.FEATURE_ALIASES.get(f, ())))
RAISED_LIMITS = tuple(dev.kebab(n) for n in dev.RAISED_LIMITS)

_USAGE = {
    g.STORAGE: wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST,
    g.UNIFORM: wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST,
    g.READBACK: wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
}
_BINDING_TYPE = {
    "read": {"buffer": {"type": wgpu.BufferBindingType.read_only_storage}},
    "read_write": {"buffer": {"type": wgpu.BufferBindingType.storage}},
    "uniform": {"buffer": {"type": wgpu.BufferBindingType.uniform}},
}


class WgpuBackend(g.GPU):
    def __init__(self, adapter, device):
        self.adapter = adapter
        self.device = device
        self.queue = device.queue
        info = dict(adapter.info)
        self.info = {"name": info.get("device", ""), "vendor": info.get("vendor", ""),
                     "backend": info.get("backend_type", ""),
                     "description": adapter.summary}
        # WebGPU spells it "subgroups"; expose both so Caps and manifests match either.
        feats = set(device.features)
        if "subgroup" in feats:
            feats.add("subgroups")
        self.features = frozenset(feats)
        self.limits = {k.replace("-", "_"): int(v) for k, v in dict(device.limits).items()
                       if isinstance(v, int)}
        from shaders.core import Caps
        self.caps = Caps.from_adapter(self.features, self.limits)
        self._staging: dict[int, object] = {}
        self._fence = None   # a 16-byte buffer sync() reads after all submitted work
        self._self_poll = _own_polling(device)

    # ---- creation ----
    @classmethod
    async def create(cls, power_preference: str = "high-performance") -> "WgpuBackend":
        adapter = await wgpu.gpu.request_adapter_async(power_preference=power_preference)
        if adapter is None:
            raise g.WebGPUNotAvailable("no WebGPU adapter found (no Vulkan/Metal/D3D12 driver?)")
        feats = [f for f in WANTED_FEATURES if f in adapter.features]
        alim = dict(adapter.limits)
        limits = {k: alim[k] for k in RAISED_LIMITS if k in alim}
        device = await adapter.request_device_async(required_features=feats,
                                                    required_limits=limits, label="llama3")
        return cls(adapter, device)

    @classmethod
    def create_sync(cls, **kw) -> "WgpuBackend":
        return asyncio.run(cls.create(**kw))

    # ---- resources ----
    def create_buffer(self, size: int, kind: str, label: str = ""):
        g.check_kind(kind)
        size = max(16, (int(size) + 15) // 16 * 16)  # uniform + copy alignment
        mx = self.limits.get("max_buffer_size", 0)
        if mx and size > mx:
            raise g.LimitTooLow("max_buffer_size", size, mx)
        return self.device.create_buffer(size=size, usage=_USAGE[kind], label=label)

    def write_buffer(self, buf, offset: int, data) -> None:
        self.queue.write_buffer(buf, offset, data)

    def create_pipeline(self, kernel):
        missing = [f for f in kernel.features
                   if f not in self.features and not (f == "subgroups" and "subgroup" in
                                                      self.features)]
        if missing:
            raise g.FeatureMissing(missing[0], f"kernel {kernel.slug}")
        entries = [{"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, **_BINDING_TYPE[b.kind]}
                   for i, b in enumerate(kernel.bindings)]
        try:
            module = self.device.create_shader_module(code=native_source(kernel.wgsl),
                                                      label=kernel.slug)
            bgl = self.device.create_bind_group_layout(entries=entries, label=kernel.slug)
            layout = self.device.create_pipeline_layout(bind_group_layouts=[bgl])
            pipe = self.device.create_compute_pipeline(
                layout=layout, compute={"module": module, "entry_point": kernel.entry},
                label=kernel.slug)
        except Exception as e:  # wgpu raises GPUValidationError etc. with the naga report
            raise g.ShaderError(f"kernel {kernel.slug} failed to compile: {e}") from None
        return _Pipeline(pipe, bgl, kernel)

    def create_bind_group(self, pipeline, kernel, entries: dict):
        res = [{"binding": i, "resource": {"buffer": buf, "offset": off, "size": size}}
               for i, (buf, off, size) in enumerate(self.bind_entries(kernel, entries))]
        try:
            return self.device.create_bind_group(layout=pipeline.bgl, entries=res,
                                                 label=kernel.slug)
        except Exception as e:
            raise g.GPUError(f"kernel {kernel.slug}: bind group rejected: {e}") from None

    # ---- work ----
    def submit(self, program: g.Program) -> None:
        enc = self.device.create_command_encoder()
        runs = program.cache.get("wgpu")
        if runs is None:
            runs = program.cache["wgpu"] = _flatten(program)
        for kind, items in runs:
            if kind == "copy":
                enc.copy_buffer_to_buffer(*items)
                continue
            cpass = enc.begin_compute_pass()
            if _lib is not None:
                # Raw wgpu-native calls: wgpu-py's per-call error-capture proxy costs ~5 us a
                # call, 3 calls a dispatch; encoding errors still surface at finish().
                h = cpass._internal
                for pipe, bg, x, y, z in items:
                    _lib.wgpuComputePassEncoderSetPipeline(h, pipe._internal)
                    _lib.wgpuComputePassEncoderSetBindGroup(h, 0, bg._internal, 0, _ffi.NULL)
                    _lib.wgpuComputePassEncoderDispatchWorkgroups(h, x, y, z)
            else:
                for pipe, bg, x, y, z in items:
                    cpass.set_pipeline(pipe)
                    cpass.set_bind_group(0, bg)
                    cpass.dispatch_workgroups(x, y, z)
            cpass.end()
        self.queue.submit([enc.finish()])

    def _staging_for(self, size: int):
        size = max(256, 1 << (size - 1).bit_length())
        buf = self._staging.get(size)
        if buf is None:
            buf = self.create_buffer(size, g.READBACK, f"staging{size}")
            self._staging[size] = buf
        return buf

    async def read(self, buf, offset: int, size: int) -> bytes:
        padded = (size + 3) // 4 * 4
        st = self._staging_for(padded)
        enc = self.device.create_command_encoder()
        enc.copy_buffer_to_buffer(buf, offset, st, 0, padded)
        self.queue.submit([enc.finish()])
        return (await self.map_read(st, 0, padded))[:size]

    async def map_read(self, buf, offset: int, size: int) -> bytes:
        if self._self_poll:
            poller = self.device._poller
            poller.get_token = _NoPollToken      # this map only: no blocking poll thread
            try:
                promise = buf.map_async(wgpu.MapMode.READ, offset, size)
            finally:
                del poller.get_token             # back to the class method for everything else
        else:
            promise = buf.map_async(wgpu.MapMode.READ, offset, size)
        if self._self_poll:
            # Poll the device ourselves, without waiting: the map of step n resolves as soon as
            # step n is done, while step n+1 still runs (see _own_polling).
            spins = 0
            while getattr(promise, "_state", "") == "pending":
                self.device._poll(False)
                spins += 1
                if spins % 16 == 0:
                    await asyncio.sleep(0)        # let other tasks run
                elif spins > 64:
                    # ~60-80 us naps: asyncio.sleep(1e-4) would nap ~1 ms (epoll's ms timeout),
                    # longer than a small model's whole decode step.
                    time.sleep(2e-5)
        await promise
        try:
            return bytes(buf.read_mapped(offset, size, copy=True))
        finally:
            buf.unmap()

    async def sync(self) -> None:
        # wgpu-py 0.32's on_submitted_work_done_* is broken (a cffi callback signature
        # mismatch): a 4-byte read after all submitted work waits for the queue instead.
        if self._fence is None:
            self._fence = self.create_buffer(16, g.STORAGE, "fence")
        await self.read(self._fence, 0, 4)

    def destroy(self) -> None:
        for b in self._staging.values():
            b.destroy()
        self._staging.clear()
        self.device.destroy()


class _NoPollToken:
    def set_done(self):
        pass

    def is_done(self):
        return True


def _own_polling(device) -> bool:
    """wgpu-py 0.32 resolves promises from a thread that calls wgpuDevicePoll(wait=True), which
    returns only once the queue is EMPTY: with decode steps pipelined, the id of step n would
    come back only after step n+1 finished, so the GPU would idle while the CPU encodes n+2.
    Take that thread out of ``map_read``'s maps (their token is a no-op) and poll without
    waiting there. Returns False (plain awaiting) on a wgpu-py without these internals."""
    poller = getattr(device, "_poller", None)
    return (poller is not None and "get_token" in type(poller).__dict__
            and "get_token" not in vars(poller) and hasattr(device, "_poll"))


def _flatten(program: g.Program) -> list:
    """Runs of dispatches (one compute pass each) and copies, as plain tuples."""
    runs: list = []
    for op in program.ops:
        if isinstance(op, g.Dispatch):
            if not runs or runs[-1][0] != "pass":
                runs.append(("pass", []))
            runs[-1][1].append((op.pipeline.pipe, op.bind_group, *op.grid))
        else:
            runs.append(("copy", (op.src, op.src_offset, op.dst, op.dst_offset, op.size)))
    return runs


class _Pipeline:
    __slots__ = ("pipe", "bgl", "kernel")

    def __init__(self, pipe, bgl, kernel):
        self.pipe, self.bgl, self.kernel = pipe, bgl, kernel
