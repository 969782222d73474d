"""Check cases of the decode kernels on x pre-quantized by quant_x (``xq`` = 1, what the driver
records with ``DecodeOptions.xq``): matvec (plain, accumulate, at an offset, the fused final
RMSNorm), gate_up (decode, fused RMSNorm) and qkv_rope_decode (fused norm, one
section) for every int8-x format (``decode_loop.XQ_FORMATS``). Each wraps the op's own case, so
the reference and tolerance are the op's; only the dispatches change: quant_x of x (times the
norm weight where the case fuses the norm), then the kernel reading its records. On caps
without packed integer dot products (the check's fallback variants) the kernel runs alone, as
the driver does there.

Pure Python; numpy only inside the cases (as every op module's).
"""

from __future__ import annotations

from dataclasses import replace

from . import gate_up, matvec, qkv_decode
from .decode_loop import XQ_FORMATS, XQ_WORDS
from .registry import Case, kernel, register_cases

_COLS = {"matvec": "cols", "gate_up": "hidden", "qkv_rope_decode": "hidden"}


def via_quant_x(case: Case) -> Case:
    """``case`` run as decode runs it with ``DecodeOptions.xq`` (see the module docstring)."""
    if case.steps is not None:
        raise ValueError(f"{case.label}: already several dispatches")
    cols = case.dims[_COLS[case.op]]
    norm = int(bool(case.dims.get("norm_eps")))

    def make(rng):
        inp = case.make_inputs(rng)
        inp["buffers"]["xq"] = cols // 32 * XQ_WORDS * 16   # (cols / 32, 5) vec4<u32>
        return inp

    def steps(caps, inp):
        k = kernel(case.op, caps, **case.dims)
        grid = inp.get("grid", {})
        if not (caps.packed_dot and k.meta.get("language_features")):
            return [(k, inp.get("params"), k.grid(**grid))]
        kq = kernel("quant_x", caps, fmt="q4_0", cols=cols, nb=1, norm=norm)
        k1 = kernel(case.op, caps, **case.dims, xq=1)
        return [(kq, {"n_tok": 1}, kq.grid()), (k1, inp.get("params"), k1.grid(**grid))]

    return replace(case, make_inputs=make, steps=steps, label=case.label + " via quant_x")


@register_cases("matvec", covers=("quant_x",))
def _matvec(quick: bool):
    c, n = matvec._matvec_case, matvec._matvec_norm_case
    out = [c(f, 67, 512) for f in XQ_FORMATS] + [c(f, 33, 256, acc=1) for f in XQ_FORMATS]
    out += [c("q6_k", 19, 512, row_offset=45), c("q4_0", 37, 576, r=4, rb=3),
            c("q4_0", 13, 1536)]
    out += [n(f, 67, 256) for f in XQ_FORMATS] + [n("q4_0", 67, 96, r=4, rb=3),
                                                   n("q6_k", 19, 512, row_offset=45)]
    if not quick:
        out += [c(f, 1024, 4096) for f in XQ_FORMATS]
    return [via_quant_x(x) for x in out]


@register_cases("gate_up")
def _gate_up(quick: bool):
    c = gate_up._case
    out = [c(f, 67, 256, 1, 1) for f in XQ_FORMATS]
    out += [c(f, 67, 256, 1, 1, norm=True) for f in XQ_FORMATS]
    out += [c("q4_0", 2048, 1024, 1, 1, norm=True)]   # auto row blocks (RB = 2 at 2048 rows)
    return [via_quant_x(x) for x in out]


@register_cases("qkv_rope_decode")
def _qkv_decode(quick: bool):
    c = qkv_decode._case
    out = [c(f, 256, 4, 1, 64, "f16", 5, norm=True) for f in XQ_FORMATS]
    out += [c("q4_0", 256, 4, 2, 64, "f32", 9), c("q6_k", 256, 4, 2, 64, "f16", 3, heads="v")]
    return [via_quant_x(x) for x in out]
