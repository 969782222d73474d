"""Fused gate + up projection with SiLU-mul: act = silu(x W1^T) * (x W3^T), one dispatch, x read
once per tile and no (n_tok, ffn) intermediate in memory.

    kernel("gate_up", caps, fmt, ffn, hidden, group_size=32, decode=0)
        bindings: x (n_tok, hidden) f32 | w1_<parts> | w3_<parts> | act (n_tok, ffn) f32 | params {n_tok}
        decode=1: the M = 1 kernel (matvec layout, n_tok must be 1), grid() -> fixed
        decode=0: the tiled kernel for any n_tok, grid(n_tok=...)

Pure Python; numpy only inside the check cases.
"""

from __future__ import annotations

from . import decode_loop
from .core import Caps, Kernel, Params, UnsupportedKernel
from .decode_loop import decode_tol
from .matmul import tiled_kernel
from .matvec import decode_kernel
from .wgsl_common import BASE, WeightSpec
from .registry import Case, register, register_cases

GATE_UP_PARAMS = Params((("n_tok", "u32"),))
SEM = "act[t, f] = silu(x[t] . W1[f]) * (x[t] . W3[f])"


@register("gate_up")
def build_gate_up(caps: Caps, fmt: str, ffn: int, hidden: int, group_size: int = 32,
                  decode: int = 0, wg: int = 0, r: int = 0, unpack: int | None = None,
                  norm_eps: float = 0.0, rb: int = 0, xq: int = 0) -> Kernel:
    """``wg`` / ``r`` / ``unpack`` / ``rb`` override the decode kernel's workgroup size / rows per
    workgroup / weight unpacking (decode_loop.DECODE_UNPACK; bench). ``norm_eps`` > 0 (decode only):
    x is un-normed and ``norm_w`` the fused RMSNorm weight (``decode_loop.norm_parts``)."""
    if decode:
        store = ("        let g = total(r * NW);\n"
                 "        act[row0 + r] = g / (1.0 + exp(-g)) * total(r * NW + 1u);")
        spec = WeightSpec("gate_up", fmt, ffn, hidden, group_size, ("w1_", "w3_"), "act", store,
                          SEM, GATE_UP_PARAMS, (("m1", 1),))
        return decode_kernel(caps, spec, wg=wg, r=r, unpack=unpack, norm_eps=norm_eps, rb=rb,
                             xq=xq)
    if norm_eps or xq:
        raise UnsupportedKernel("gate_up: the fused RMSNorm (norm_eps) and xq are for decode=1 only")
    store = ("        let g = acc_w1_{i}.{c};\n"
             "        act[o] = g / (1.0 + exp(-g)) * acc_w3_{i}.{c};")
    return tiled_kernel(caps, WeightSpec("gate_up", fmt, ffn, hidden, group_size, ("w1_", "w3_"),
                                         "act", store, SEM, GATE_UP_PARAMS))


def _case(fmt: str, ffn: int, hidden: int, n_tok: int, decode: int,
          group_size: int = 32, unpack: int | None = None, norm: bool = False) -> Case:
    def make(rng):
        import numpy as np

        from .harness import weight_parts

        b1, w1 = weight_parts(rng, fmt, ffn, hidden, group_size, prefix="w1_")
        b3, w3 = weight_parts(rng, fmt, ffn, hidden, group_size, prefix="w3_")
        if norm:   # decode with the fused RMSNorm: x un-normed, norm_w bound
            x, extra = decode_loop.case_norm_input(rng, hidden, True)
        else:
            x, extra = (rng.standard_normal((n_tok, hidden)) / np.sqrt(hidden)).astype(
                np.float32), {}
        bufs = {**b1, **b3, "x": x, **extra, "act": n_tok * ffn * 4}   # act (n_tok, ffn) f32
        return {"buffers": bufs, "params": {"n_tok": n_tok}, "grid": {"n_tok": n_tok},
                "w1": w1, "w3": w3, "x": x}

    def ref(inp):
        import numpy as np

        x = decode_loop.ref_normed(inp["x"], inp["buffers"])
        g = x @ inp["w1"].astype(np.float64).T
        u = x @ inp["w3"].astype(np.float64).T
        return {"act": (g / (1.0 + np.exp(-g)) * u).astype(np.float32)}

    dims = dict(fmt=fmt, ffn=ffn, hidden=hidden, group_size=group_size, decode=decode)
    if unpack is not None:
        dims["unpack"] = unpack
    if norm:
        dims["norm_eps"] = decode_loop.NORM_EPS_CASE
    u = (decode_loop.DECODE_UNPACK.get(fmt, 0) if unpack is None else unpack) if decode else 0
    return Case("gate_up", dims, make, ref, decode_tol(fmt, u, "gate_up_f32"),
                tol_f16="gate_up_f16",
                label=f"{fmt} {ffn}x{hidden} M={n_tok}" + (" decode" if decode else "") +
                      (f" u{unpack}" if unpack is not None else "") + (" norm" if norm else ""))


@register_cases("gate_up")
def gate_up_cases(quick: bool) -> list[Case]:
    shapes = [(7, 96), (67, 64), (1, 32)]
    if not quick:
        shapes += [(1536, 576), (14336 // 4, 4096)]
    out = [_case(f, ffn, h, 1, 1) for f in BASE for ffn, h in shapes]
    out += [_case(f, ffn, h, m, 0) for f in BASE for (ffn, h), m in zip(shapes, (3, 17, 130, 64, 33))]
    out += [_case("f16", 5, 6, 1, 1), _case("f32", 9, 7, 4, 0)]
    # decode with int8 x + packed integer dot products, and the exact path explicitly
    out += [_case(f, 67, 64, 1, 1, unpack=u) for f in ("q4_0", "q4_1", "q8_0") for u in (2, 3)]
    out += [_case("q4_0", 67, 64, 1, 1, unpack=0)]
    # decode with the fused RMSNorm of the residual stream (the driver's decode path)
    out += [_case(f, 67, 64, 1, 1, norm=True) for f in BASE] + [_case("f32", 5, 6, 1, 1, norm=True)]
    if not quick:
        out += [_case("q4_0", 14336 // 4, 4096, 1, 1, norm=True),
                _case("q4_1", 1536, 576, 1, 1, norm=True)]
    return out
