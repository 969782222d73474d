"""Generated WGSL kernels for Llama-3 inference, the same text natively (wgpu-py) and in the browser.

Pure Python, no third-party import at module level (it runs in Pyodide). The entry point:

    shaders.kernel(op: str, caps: shaders.Caps, **dims) -> shaders.Kernel

picks and renders the variant of ``op`` for the GPU's caps and the model's dims (cached). Ops are
registered by the op modules of this package (``@register(op)``), which are imported on first use.
Native-only tools: ``python -m shaders check [--quick]`` (numpy check through wgpu-py, see
``shaders.harness``) and ``python -m shaders bench``. Exact bindings of every op: shaders/OPS.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, render
from .registry import Case, all_ops as _all_ops, fits as _fits, kernel as _kernel, register, register_cases

# Modules of this package that define no op (everything else, except *_bench, is an op module).
_NOT_OPS = {"__init__", "__main__", "core", "registry", "harness", "cli", "bench", "tolerances", "attention_bench",
            "limits", "wgsl_common", "decode_loop", "kquant", "case_export"}
_LOADED = False


def load_ops() -> None:
    """Import every op module of the package once, so their ``@register`` decorators have run."""
    global _LOADED
    if _LOADED:
        return
    for p in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if p.stem not in _NOT_OPS and not p.stem.startswith("_") and not p.stem.endswith("_bench"):
            importlib.import_module(f"{__name__}.{p.stem}")
    _LOADED = True


def kernel(op: str, caps: Caps, **dims) -> Kernel:
    """The rendered kernel of ``op`` for ``caps`` and ``dims``; raises UnsupportedKernel."""
    load_ops()
    return _kernel(op, caps, **dims)


def fits(op: str, caps: Caps, **dims) -> bool:
    """Whether ``kernel(op, caps, **dims)`` would succeed (shaders.registry.fits)."""
    load_ops()
    return _fits(op, caps, **dims)


def qkv_split(caps: Caps, fmt: str, heads: str = "qkv") -> list[str]:
    """The ``heads`` of each qkv_rope_decode dispatch a layer needs on ``caps`` (shaders.qkv_decode)."""
    from .qkv_decode import qkv_split as split
    return split(caps, fmt, heads)


def split_plan(pos: int, n_tok: int, tk: int, keys: int) -> tuple[int, int]:
    """(splits, span) of attention_prefill's split variant for a chunk (shaders.attention_prefill)."""
    from .attention_prefill import split_plan as plan
    return plan(pos, n_tok, tk, keys)


def min_storage_buffers(ops, fmt: str) -> int:
    """Least maxStorageBuffersPerShaderStage a graph of ``ops`` needs for ``fmt`` weights
    (shaders.limits)."""
    from .limits import min_storage_buffers as need
    return need(ops, fmt)


def all_ops() -> list[str]:
    load_ops()
    return _all_ops()


__all__ = ["Binding", "Caps", "Case", "Grid", "Kernel", "KernelKey", "Params", "UnsupportedKernel",
           "all_ops", "fits", "kernel", "load_ops", "min_storage_buffers", "qkv_split", "register",
           "split_plan",
           "register_cases", "render"]
