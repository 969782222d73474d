"""Native-only half of the driver: wgpu-py backend, CLIs (generate / bench / quality), numpy
reference forward pass, synthetic random-weight models. Never shipped to the browser (the
browser wheel is ``driver`` minus this folder); nothing under ``driver/`` outside it imports it.

    from driver.native import load
    engine = load("models/smollm2-135m-instruct")      # wgpu-py backend, folder or synth:PRESET:QUANT
"""

from __future__ import annotations

import asyncio

from driver.decode_options import NATIVE, DecodeOptions
from driver.engine import Engine
from driver.loader import FolderSource, ModelError, ModelSource

__all__ = ["load", "load_draft", "open_source"]


def open_source(model) -> ModelSource:
    """A ModelSource as is, ``synth:PRESET:QUANT`` (random weights, bench), or a folder."""
    if isinstance(model, ModelSource):
        return model
    s = str(model)
    if s.startswith("synth:"):
        from .synthetic import SyntheticSource
        parts = s.split(":")
        if len(parts) != 3:
            raise ModelError(f"{s}: expected synth:PRESET:QUANT, e.g. synth:llama3.2-1b-shape:q4_0")
        return SyntheticSource(parts[1], parts[2])
    return FolderSource(model)


def load(model, *, backend=None, max_context: int | None = None, kv: str = "f16",
         chunk: int | None = None, progress=None, f16_math: bool | None = None,
         decode: DecodeOptions | None = None) -> Engine:
    """An Engine for ``model`` (folder, ``synth:PRESET:QUANT`` or a ModelSource) on the wgpu-py
    backend (or ``backend``), driven by an event loop the engine owns (its sync wrappers).
    ``decode``: the decode program (default ``decode_options.NATIVE``, measured faster natively)."""
    loop = asyncio.new_event_loop()
    source = open_source(model)
    if backend is None:
        from .backend_wgpu import WgpuBackend
        backend = loop.run_until_complete(WgpuBackend.create())
    eng = loop.run_until_complete(Engine.load_async(
        source, backend, max_context=max_context, kv=kv, chunk=chunk, progress=progress,
        f16_math=f16_math, decode=NATIVE if decode is None else decode))
    eng.adopt_loop(loop)
    return eng


def load_draft(model, target: Engine) -> Engine:
    """A draft model for speculative decoding with ``target``: on its GPU and event loop, with the
    target's context or the draft's own limit if smaller (drafting simply stops past it)."""
    source = open_source(model)
    limit = (source.manifest.get("config") or {}).get("max_position_embeddings")
    ctx = min(target.max_context, limit) if isinstance(limit, int) and limit > 0 else None
    draft = load(source, backend=target.gpu, max_context=ctx)
    draft.close()
    draft.adopt_loop(target._loop)     # one event loop drives both engines
    return draft
