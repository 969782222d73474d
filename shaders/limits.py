"""Storage-buffer budget: the least maxStorageBuffersPerShaderStage a set of ops needs.

Pure Python (runs in Pyodide). Every kernel counts its storage bindings (``Kernel.storage_buffers``)
and ``shaders.kernel`` refuses one above ``caps.max_storage_buffers``; qkv_rope_decode splits into
up to three dispatches (``shaders.qkv_decode.qkv_split``) to fit. ``min_storage_buffers(ops, fmt)``
builds each op at small probe dims and counts: the driver's graph declares its ops
(``driver.graph.OPS``), and ``modelfmt.manifest.MIN_STORAGE_BUFFERS`` is this function over them,
per weight format (tests/test_layers.py recomputes it), so the page can refuse a GPU before
downloading anything.
"""

from __future__ import annotations

from dataclasses import replace

from .core import Caps, UnsupportedKernel

WEBGPU_DEFAULT = 8   # maxStorageBuffersPerShaderStage every core WebGPU adapter offers
_ATT = dict(n_heads=2, n_kv_heads=1, head_dim=64)


def _probes(op: str) -> list[dict]:
    """Small dims that build ``op`` in every variant the driver may dispatch (the weight format is
    added by the caller): fused RMSNorms left out (the driver falls back to unfused ones where a
    fused kernel does not fit) and qkv_rope_decode split as finely as it goes."""
    from .qkv_decode import SPLITS
    return {
        "attention_decode": [_ATT], "attention_combine": [_ATT], "attention_prefill": [_ATT, {**_ATT, "split": 1}],
        "attention_prefill_combine": [{"n_heads": _ATT["n_heads"], "head_dim": _ATT["head_dim"]}],
        "rope_append": [_ATT], "sample": [{"vocab": 64}], "sample_select": [{"vocab": 64}],
        "rmsnorm": [{"hidden": 64}], "add_rmsnorm": [{"hidden": 64}],
        # weight widths of 256: a multiple of every format's block (the K-quants' super-block)
        "embed": [{"hidden": 256}], "matvec": [{"rows": 64, "cols": 256}],
        "matmul": [{"rows": 64, "cols": 256}],
        "gate_up": [{"ffn": 64, "hidden": 256, "decode": d} for d in (0, 1)],
        "qkv_rope_decode": [{"hidden": 256, **_ATT, "heads": h} for h in SPLITS[-1]],
        "matvec_multi": [{"rows": 64, "cols": 256, "nb": 2}],
        "gate_up_multi": [{"ffn": 64, "hidden": 256, "nb": 2}],
        "quant_x": [{"fmt": "q4_0", "cols": 256, "nb": 2}],   # q4_0 only, whatever the model's
    }.get(op, [])


WEIGHT_OPS = ("embed", "matvec", "matmul", "gate_up", "qkv_rope_decode", "matvec_multi",
              "gate_up_multi")   # take fmt, group_size


def min_storage_buffers(ops, fmt: str) -> int:
    """The most storage buffers one dispatch of ``ops`` binds for weights in format ``fmt``: a
    device allowing fewer cannot run a graph of these ops. Counted from the kernels themselves."""
    from . import kernel
    caps = replace(Caps(), max_storage_buffers=1 << 20, packed_dot=True)
    need = 0
    for op in ops:
        probes = _probes(op)
        if not probes:
            raise UnsupportedKernel(f"{op}: no probe dims in shaders/limits.py; add them")
        w = {"fmt": fmt, "group_size": 32} if op in WEIGHT_OPS else {}
        need = max([need] + [kernel(op, caps, **d, **w).storage_buffers for d in probes])
    return need
