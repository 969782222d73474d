"""The browser GPU backend: driver.gpu.GPU over WebGPU in Pyodide, through the JS helper web/gpu-replay.js.

Runs in the page's Web Worker. The worker registers gpu-replay.js as the JS module ``llgpu`` before Python starts.
Each method is ONE Python->JS call into that helper (a Pyodide FFI crossing costs about 1-10 us), and the hot
ones avoid per-dispatch chatter:

- ``submit(program)`` converts the program's op list to a JS array ONCE (cached on ``program.cache``) and the
  helper replays it: one encoder, one compute pass per run of dispatches, one queue.submit.
- ``map_read``/``read`` copy the mapped bytes in JS before unmapping (an unmapped ArrayBuffer is detached).
- weight bytes never enter the Python heap: ``BrowserSource.upload_shard`` asks the helper to copy a cached shard
  (ArrayBuffer, verified by sha256 in JS) into the GPU buffer the plan created.

Pyodide pitfalls handled here: JS ``null`` arrives as ``jsnull`` (falsy, not None); Python buffers are not
BufferSources (``to_js(memoryview)`` makes a Uint8Array); descriptors are built in JS, not from Python dicts.
Only the standard library and ``pyodide``/``js`` (imported lazily, inside functions) are used, so this module
imports in CPython too (its pure helpers are tested natively).
"""

from __future__ import annotations

import functools
import json

from modelfmt.device import snake

from . import gpu as g
from .loader import ModelSource

ALIGN = 16  # buffer sizes rounded up: uniform slices and copies need multiples of 4, 16 keeps vec4 loads whole


def aligned(size: int) -> int:
    return max(ALIGN, (int(size) + ALIGN - 1) // ALIGN * ALIGN)


def program_ops(program: g.Program) -> list[list]:
    """The program as the helper's flat op list: [0, pipe, bind_group, x, y, z] or [1, src, so, dst, do, size]."""
    out = []
    for op in program.ops:
        if isinstance(op, g.Dispatch):
            out.append([0, op.pipeline, op.bind_group, *op.grid])
        else:
            out.append([1, op.src, op.src_offset, op.dst, op.dst_offset, op.size])
    return out


def _to_js(obj):
    from pyodide.ffi import to_js
    import js
    return to_js(obj, dict_converter=js.Object.fromEntries)


def _u8(data):
    """A JS Uint8Array copy of a bytes-like object (Python buffers are not WebGPU BufferSources)."""
    from pyodide.ffi import to_js
    return to_js(memoryview(data).cast("B"))


class JsBackend(g.GPU):
    """driver.gpu.GPU over a WebGPU device opened by the JS helper (``openDevice``)."""

    def __init__(self, helper, opened):
        self.h = helper
        self.device = opened.device
        self.lost = opened.lost
        info = opened.info.to_py()
        self.mode = info.get("mode", "")
        self.info = {"name": info.get("device") or info.get("architecture", ""), "vendor": info.get("vendor", ""),
                     "architecture": info.get("architecture", ""),
                     "backend": "WebGPU " + self.mode, "description": info.get("description", ""),
                     "fallback": bool(info.get("fallback")), "mode": self.mode}
        self.features = frozenset(opened.features.to_py())
        self.limits = {snake(k): int(v) for k, v in opened.limits.to_py().items()}
        from shaders.core import Caps
        lang = opened.languageFeatures
        self.language_features = frozenset(lang.to_py() if hasattr(lang, "to_py") else lang or ())
        mats = getattr(opened, "matrixConfigs", None)
        sizes = getattr(opened, "subgroupSizes", None)
        self.caps = Caps.from_adapter(self.features, self.limits, self.language_features,
                                      mats.to_py() if hasattr(mats, "to_py") else mats,
                                      tuple(sizes.to_py() if hasattr(sizes, "to_py") else sizes or (0, 0)))

    @classmethod
    async def create(cls, helper=None, mode: str = "") -> "JsBackend":
        if helper is None:
            import llgpu as helper  # registered by the worker (web/worker.js)
        try:
            opened = await helper.openDevice(_to_js({"mode": mode}))
        except Exception as e:  # JsException: the helper's message is already plain
            raise g.WebGPUNotAvailable(str(e).split("Error: ", 1)[-1]) from None
        return cls(helper, opened)

    # ---- resources ----
    def create_buffer(self, size: int, kind: str, label: str = ""):
        g.check_kind(kind)
        size = aligned(size)
        mx = self.limits.get("max_buffer_size", 0)
        if mx and size > mx:
            raise g.LimitTooLow("max_buffer_size", size, mx)
        return self.h.createBuffer(self.device, size, kind, label)

    def write_buffer(self, buf, offset: int, data) -> None:
        self.h.writeBuffer(self.device, buf, int(offset), _u8(data))

    def create_pipeline(self, kernel):
        missing = [f for f in kernel.features if f not in self.features]
        if missing:
            raise g.FeatureMissing(missing[0], f"kernel {kernel.slug}")
        from pyodide.ffi import run_sync
        kinds = _to_js([b.kind for b in kernel.bindings])
        try:
            # JSPI: wait for the async compile so errors surface here, naming the kernel
            return run_sync(self.h.createPipeline(self.device, kernel.wgsl, kernel.entry, kinds, kernel.slug))
        except Exception as e:
            raise g.ShaderError(str(e).split("Error: ", 1)[-1]) from None

    def create_bind_group(self, pipeline, kernel, entries: dict):
        rows = [list(e) for e in self.bind_entries(kernel, entries)]
        try:
            return self.h.createBindGroup(self.device, pipeline, _to_js(rows), kernel.slug)
        except Exception as e:
            raise g.GPUError(f"kernel {kernel.slug}: bind group rejected: {e}") from None

    # ---- work ----
    def js_ops(self, program: g.Program):
        ops = program.cache.get("js")
        if ops is None:
            ops = _to_js(program_ops(program))
            program.cache["js"] = ops
        return ops

    def submit(self, program: g.Program) -> None:
        self.h.submit(self.device, self.js_ops(program))

    async def read(self, buf, offset: int, size: int) -> bytes:
        return (await self.h.read(self.device, buf, int(offset), int(size))).to_bytes()

    async def map_read(self, buf, offset: int, size: int) -> bytes:
        return (await self.h.mapRead(buf, int(offset), int(size))).to_bytes()

    async def sync(self) -> None:
        await self.h.sync(self.device)

    def destroy(self) -> None:
        self.device.destroy()


class BrowserSource(ModelSource):
    """A model whose manifest came from the page and whose shards sit in the worker's verified shard cache."""

    def __init__(self, manifest_json: str, where: str, files_dir: str = ""):
        self.manifest = json.loads(manifest_json)
        self.where = where
        self.files_dir = files_dir  # folder in Pyodide's FS holding the tokenizer files the worker wrote

    async def upload_shard(self, gpu: JsBackend, index: int, buffer) -> None:
        await gpu.h.uploadShard(gpu.device, buffer, index)

    def tokenizer_path(self, name: str):
        from pathlib import Path
        return Path(self.files_dir) / name


# ---- errors, as the page gets them ----

def error_info(exc: BaseException) -> dict:
    """{kind, message, hint, cls} of an exception: the driver's error classes carry a stable ``kind``
    (model, context-overflow, bad-option, config, tokenizer, chat-template, capability,
    no-webgpu, gpu, shader) and a ``hint`` (what to do); anything else is kind "error". ``cls``,
    the class name, is for the browser console only (the page shows web/errors.js's sentence)."""
    return {"kind": getattr(exc, "kind", "error"), "message": str(exc) or type(exc).__name__,
            "cls": type(exc).__name__,
            "hint": getattr(exc, "hint", "")}


_last_error: dict | None = None


def last_error_json() -> str:
    """The error_info of the last exception an entry point below raised, as JSON (web/worker.js
    asks for it when a Python call rejects, instead of parsing the traceback text)."""
    return json.dumps(_last_error or {"kind": "error", "message": "unknown error", "hint": ""})


def _reported(fn):
    """An entry point the worker calls: its exception is kept for ``last_error_json``."""
    @functools.wraps(fn)
    async def call(*args, **kw):
        global _last_error
        try:
            return await fn(*args, **kw)
        except Exception as e:
            _last_error = error_info(e)
            raise
    return call


# ---- the worker's entry points (web/worker.js calls these) ----

class Session:
    """One loaded model in the worker: an Engine on a JsBackend; requests go through
    ``driver.session.ChatSession`` (the one request path: options, chat template, context fit,
    KV-cache reuse across turns, speculative decoding)."""

    def __init__(self, engine, gpu: JsBackend):
        from .session import ChatSession
        self.engine, self.gpu = engine, gpu
        self.chat = ChatSession(engine)

    def info_json(self) -> str:
        e = self.engine
        cfg = e.cfg
        return json.dumps({
            "adapter": {**self.gpu.info, "vendor": self.gpu.info.get("vendor", "")},
            "mode": self.gpu.mode, "features": sorted(self.gpu.features),
            "kernels": len(e.graph.pipes),
            "dispatches_per_token": e.dispatches_per_token, "max_context": e.max_context,
            "layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
        })

    def lost_promise(self):
        return self.gpu.lost

    @_reported
    async def generate(self, request_json: str, on_token, control, on_prefill=None) -> str:
        """Run one request {messages | prompt | prompt_ids, options, continue_final_message?} (driver.session;
        continue_final_message: the last message is a partial assistant reply, continued from the KV cache).
        Calls ``on_token(id, text)`` per token (id -1 for trailing text flushed at the end) and
        ``on_prefill(done, total)`` after each prefill chunk but the last; ``control.stop`` is polled between
        prefill chunks (each one awaited, so the worker's message loop runs) and between tokens. Returns the
        stats as JSON."""
        req = json.loads(request_json)
        async for tok, text in self.chat.stream_async(req, should_stop=lambda: bool(control.stop),
                                                      on_prefill=on_prefill):
            on_token(tok, text)
        return json.dumps(self.chat.last_stats)

    @_reported
    async def profile(self, prompt: int, ctx: int) -> str:
        """The page's bench mode ``&profile=1``: ``driver.profile.engine_profile`` (each op and weight
        shape of a ``prompt``-token prefill chunk and of a decode step at ``ctx``, replayed alone) as
        JSON, the same rows ``python -m driver bench --profile`` prints natively."""
        from .profile import engine_profile
        return json.dumps(await engine_profile(self.engine, int(prompt), int(ctx)))

    def close(self) -> None:
        self.gpu.destroy()


@_reported
async def open_session(manifest_json: str, where: str, files_dir: str, progress=None,
                       decode_json: str = "") -> Session:
    """Open the device (adapter choice in the helper), then load the model: plan, shaders, weight upload.
    ``decode_json``: the page's bench mode may name the decode program (``DecodeOptions`` fields as
    JSON, e.g. {"short_ctx": 0, "head_norm": false}) to measure the candidates in the browser."""
    from .decode_options import DecodeOptions, from_json
    from .engine import BadOption, Engine
    decode = None
    if decode_json:
        try:
            decode = from_json(decode_json)
        except ValueError as e:
            raise BadOption(str(e)) from None
    gpu = await JsBackend.create()
    if decode is None and gpu.mode == "compatibility":
        # a dispatch costs 30-45 us there: quant_x's dispatches cost more than the instructions
        # they save (H200, 1B shape: 224 tok/s without, 210 with; docs/PERFORMANCE.md)
        decode = DecodeOptions(xq=False)
    src = BrowserSource(manifest_json, where, files_dir)
    engine = await Engine.load_async(src, gpu, decode=decode)
    return Session(engine, gpu)
