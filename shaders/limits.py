"""Storage-buffer budget: the least maxStorageBuffersPerShaderStage the engine's kernels need.

Pure Python (runs in Pyodide). Every kernel counts its storage bindings (``Kernel.storage_buffers``)
and ``shaders.kernel`` refuses one above ``caps.max_storage_buffers``; qkv_rope_decode splits into up to
three dispatches (``shaders.qkv_decode.qkv_split``) to fit. ``min_storage_buffers`` is what a model's
manifest states in ``requirements`` so that the page can refuse a GPU before downloading anything.
"""

from __future__ import annotations

from dataclasses import replace

from .core import Caps

WEBGPU_DEFAULT = 8   # maxStorageBuffersPerShaderStage every core WebGPU adapter offers


def min_storage_buffers(fmts) -> int:
    """The most storage buffers one dispatch of the driver's graph binds for weights in ``fmts``
    (format names), with qkv_rope_decode split as finely as it goes: a device allowing fewer cannot run
    the model. Counted from the kernels themselves (built at small dims)."""
    from . import kernel
    from .qkv_decode import SPLITS

    caps = replace(Caps(), max_storage_buffers=1 << 20)
    att = dict(n_heads=2, n_kv_heads=1, head_dim=64)
    need = [kernel(op, caps, **att).storage_buffers
            for op in ("attention_decode", "attention_combine", "attention_prefill")]
    need += [kernel(op, caps, **d).storage_buffers
             for op, d in (("sample", {"vocab": 64}), ("sample_select", {"vocab": 64}),
                           ("rmsnorm", {"hidden": 64}), ("add_rmsnorm", {"hidden": 64}))]
    for fmt in sorted(set(fmts)):
        w = dict(fmt=fmt, group_size=32)
        need += [kernel("gate_up", caps, ffn=64, hidden=64, decode=d, **w).storage_buffers
                 for d in (0, 1)]
        need += [kernel(op, caps, rows=64, cols=64, **w).storage_buffers
                 for op in ("matvec", "matmul")]
        need.append(kernel("embed", caps, hidden=64, **w).storage_buffers)
        need.append(max(kernel("qkv_rope_decode", caps, hidden=64, **att, heads=h, **w).storage_buffers
                        for h in SPLITS[-1]))
    return max(need)
