"""Decode matrix-vector kernels (M = 1) for every weight format, on the decode chunk loop
(shaders/decode_loop.py); ``decode_kernel`` also builds gate_up's M = 1 kernel.

    kernel("matvec", caps, fmt, rows, cols, group_size=32, accumulate=0, norm_eps=0.0, rb=0)
        bindings: x (cols) f32 | [norm_w (cols) f32] | w_<parts> | y (row_offset + rows) f32 |
                  params {row_offset}
        y[row_offset + r] (+)= sum_c W[r, c] x[c]   (norm_eps > 0: RMSNorm(x) * norm_w for x)

Pure Python (runs in Pyodide); numpy only inside the check-case functions.
"""

from __future__ import annotations

from modelfmt.formats import QUANTIZED

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel
from .decode_loop import DECODE_UNPACK, DecodeLoop, decode_tol
from .registry import Case, register, register_cases
from .wgsl_common import (BASE, SCALED, WeightSpec, binding_decls, check_weight, fold_grid,
                          weight_bindings)


# ---- the decode kernel (matvec, and gate_up's M = 1 variant) ----
def decode_kernel(caps: Caps, spec: WeightSpec, *, wg: int = 0, r: int = 0,
                  unpack: int | None = None, norm_eps: float = 0.0, rb: int = 0,
                  xq: int = 0) -> Kernel:
    """One workgroup per RB blocks of R rows of ``spec``'s weights (``rb`` 0: ``auto_rb``);
    ``spec.store`` is WGSL run by thread r < R with ``row0``, ``r`` and ``total(i)`` in scope.
    ``xq`` = 1: x bound as quant_x's int8 chunk records (``decode_loop.XQ_FORMATS``, unpack 3),
    not quantized again by every workgroup."""
    op, fmt, rows, cols, G = spec.op, spec.fmt, spec.rows, spec.cols, spec.group_size
    check_weight(op, fmt, rows, cols, G)
    lp = DecodeLoop.plan(caps, fmt, cols, G, unpack, wg, xq)
    nw = len(spec.weights)
    # rows per workgroup: q formats reuse the chunk's x (8 vec4 loads per 16 weight bytes for
    # q4) across R rows, and q4 decode is instruction-bound, so more rows per workgroup win
    # (H100: R=8 best of 1..8 for matvec; gate_up, two weights per row, measured at R=4);
    # f16/f32 read as many x bytes as weight bytes and one row per workgroup measured best
    # (docs/PERFORMANCE.md, bench --tune)
    # int8-x paths (unpack 2/3) also quantize x once per chunk for all R rows: gate_up at R=8
    # measured 1910 against 1755 GB/s at R=4 (H100, 14336x4096, unpack 3; 8192x2048 equal)
    # x from quant_x (xq): no per-workgroup quantization to share, so the smaller R = 4 gives
    # more workgroups (H200, `python -m shaders bench --sweep q6_k`: 4096 x 4096 44 against 35 %
    # of the copy roofline at R = 8, 14336 x 4096 66 / 63 %, the LM head 85 / 81 %), except q4_0
    # rows of several chunks a thread (4096 x 14336: 62 % at R = 8, 53 % at R = 4)
    xr = 8 if fmt == "q4_0" and lp.nch > lp.wg else 4
    r = r or min((xr if lp.xq else 8 if nw == 1 or lp.i8 else 4) if fmt in SCALED else 1, rows)
    while r > 1 and lp.red_bytes(r * nw) > caps.max_workgroup_storage:
        r //= 2   # keep the reduction within the workgroup storage limit
    nacc = r * nw + (1 if norm_eps else 0)   # + the fused norm's sum of squares
    if lp.red_bytes(nacc) > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"{op}: reduction needs {lp.red_bytes(nacc)} B of workgroup "
                                "storage")
    rb = rb or auto_rb(fmt, rows, r, lp)
    gx, gy = fold_grid(-(-rows // (r * rb)))
    if gy > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{op}: {rows} rows need a {gx}x{gy} grid")
    key = KernelKey(op=op, fmt=fmt, wg=lp.wg, tile=r, vec=lp.vec, subgroups=lp.sg,
                    dims=(("r", rows), ("c", cols), ("g", G)) + spec.extra_dims
                    + lp.key_dims(norm_eps) + ((("rb", rb),) if rb > 1 else ()))
    binds = lp.x_binding("(cols) f32", norm_eps)
    for p in spec.weights:
        binds += weight_bindings(fmt, p, lp.vec, "rows", "cols")
    binds += [(Binding(spec.out_name, "read_write", "(row_offset + rows) f32"), "f32"),
              (Binding("params", "uniform", "Params"), "Params")]
    decls, bindings = binding_decls(binds)
    nrm = lp.norm(norm_eps, r * nw)
    xlines, xs = lp.x_lines(nrm)
    accum = [ln for i in range(r) for k, p in enumerate(spec.weights)
             for ln in lp.accum(f"acc{i * nw + k}", p, f"rr{i}", xs, str(i))]
    src = lp.render("matvec", key.slug(), prefixes=spec.weights, r=r, nacc=nacc, nrm=nrm,
                    accum=accum, xs_lines=xlines, rb=rb, subs={
                        "OP": op, "FMT": fmt, "SEMANTICS": spec.semantics,
                        "PARAMS": spec.params.wgsl(), "BINDINGS": decls, "ROWS": rows,
                        "NW": nw, "GX": gx, "STORE": spec.store,
                        "ROWS_DECL": "\n".join(f"    let rr{i} = min(row0 + {i}u, ROWS - 1u);"
                                               for i in range(r))})
    return Kernel(key=key, wgsl=src, bindings=bindings, params=spec.params,
                  workgroup_size=(lp.wg, 1, 1), features=("subgroups",) if lp.sg else (),
                  grid=Grid.fixed(gx, gy), meta={"rows_per_wg": r, **lp.meta()})


# Row blocks: a workgroup that runs RB blocks of R rows one after the other loads (and on the
# int8 paths quantizes) its x chunk once for all of them. That halves decode's x work a weight
# byte, but also the threads in flight, so it pays only where plenty are left: H200, 2026-12-03
# (`python -m shaders bench --decode`, rows "row blocks"): 14336 x 4096 q4_0 38 -> 46 % of the
# copy roofline at RB = 2, q6_k 45 -> 53 %, gate_up q4_0 53 -> 61 %, q6_k 57 -> 67 %; 4096 x 4096
# 24 -> 19 %, gate_up 8192 x 2048 35 -> 27 %; the LM head (128256 x 2048) 51 / 60 / 63 % at RB =
# 1 / 2 / 4, while RB = 4 lost on 14336 rows. The rule: the largest RB of 4, 2 that leaves at least
# RB / 2 * ROW_BLOCK_THREADS threads (14336 x 4096 at RB = 2: 114,688; 4096 x 4096: 32,768).
ROW_BLOCK_THREADS = 65536
AUTO_ROW_BLOCKS = True   # off: RB = 1 everywhere (the bench's before / after switch)


def auto_rb(fmt: str, rows: int, r: int, lp: DecodeLoop) -> int:
    """Row blocks per workgroup (see ROW_BLOCK_THREADS) of a scaled format whose x chunks fit
    one per thread; 1 for f16 / f32 (one row per workgroup) and wider rows."""
    if not AUTO_ROW_BLOCKS or fmt not in SCALED or lp.nch > lp.wg or lp.xq:
        return 1   # xq: no x quantization left to share (q4_0 14336 x 4096: 56 % at RB 1, 53 % at 2)
    for rb in (4, 2):
        if -(-rows // (rb * r)) * lp.wg >= rb // 2 * ROW_BLOCK_THREADS:
            return rb
    return 1


MATVEC_PARAMS = Params((("row_offset", "u32"),))


@register("matvec")
def build_matvec(caps: Caps, fmt: str, rows: int, cols: int, group_size: int = 32,
                 accumulate: int = 0, wg: int = 0, r: int = 0,
                 unpack: int | None = None, norm_eps: float = 0.0, rb: int = 0,
                 xq: int = 0) -> Kernel:
    """y[row_offset + r] (+)= W[r, :] . x. ``wg`` / ``r`` override the tuned workgroup size and
    rows per workgroup; ``unpack`` the q-format unpacking (default ``DECODE_UNPACK``; 0 exact
    f32, 1 shift-free q4, 2 / 3 int8 x with packed integer dot products; 0 is the fallback for
    WGSL without packed_4x8_integer_dot_product); all three are for benchmarks, not the driver.
    ``norm_eps`` > 0: x is un-normed and ``norm_w`` (cols) f32 is bound after it: W . RMSNorm(x)
    (the decode LM head on the residual stream, ``decode_loop.norm_parts``)."""
    prev = "y[o] + " if accumulate else ""
    store = (f"        let o = params.row_offset + row0 + r;\n"
             f"        y[o] = {prev}total(r);")
    sem = "y[row_offset + r] " + ("+= " if accumulate else "= ") + "sum_c W[r, c] * x[c]"
    spec = WeightSpec("matvec", fmt, rows, cols, group_size, ("w_",), "y", store, sem,
                      MATVEC_PARAMS, (("acc", int(accumulate)),))
    return decode_kernel(caps, spec, wg=wg, r=r, unpack=unpack, norm_eps=norm_eps, rb=rb, xq=xq)


# ---- check cases ----
def _matvec_case(fmt: str, rows: int, cols: int, acc: int = 0, row_offset: int = 0,
                 group_size: int = 32, unpack: int | None = None, **knobs) -> Case:
    def make(rng):
        import numpy as np

        from .harness import weight_parts

        bufs, w = weight_parts(rng, fmt, rows, cols, group_size)
        x = rng.standard_normal(cols).astype(np.float32)               # (cols) f32
        y0 = rng.standard_normal(row_offset + rows).astype(np.float32)  # (row_offset + rows) f32
        bufs.update(x=x, y=y0)
        return {"buffers": bufs, "params": {"row_offset": row_offset}, "w": w, "x": x, "y0": y0}

    def ref(inp):
        import numpy as np

        y = inp["y0"].astype(np.float64)
        dot = inp["w"].astype(np.float64) @ inp["x"].astype(np.float64)
        y[row_offset:] = (y[row_offset:] if acc else 0.0) + dot
        return {"y": y.astype(np.float32)}

    dims = dict(fmt=fmt, rows=rows, cols=cols, group_size=group_size, accumulate=acc, **knobs)
    if unpack is not None:
        dims["unpack"] = unpack
    u = DECODE_UNPACK.get(fmt, 0) if unpack is None else unpack
    return Case("matvec", dims, make, ref, decode_tol(fmt, u, "dot_f32"),
                label=f"{fmt} {rows}x{cols}" + (" acc" if acc else "") +
                      (f" off{row_offset}" if row_offset else "") +
                      {1: " mask", 2: " i8x", 3: " i16x"}.get(u, "") * (fmt in SCALED) +
                      "".join(f" {k}{v}" for k, v in knobs.items()))


@register_cases("matvec")
def matvec_cases(quick: bool) -> list[Case]:
    shapes = [(1, 32), (7, 96), (67, 576), (13, 1536)]
    if not quick:
        shapes += [(576, 576), (576, 1536), (1536, 576), (4096, 4096)]
    out = [_matvec_case(f, r, c) for f in BASE for r, c in shapes]
    # accumulate (residual fusion) and an LM-head row block written at an offset
    out += [_matvec_case(f, 33, 64, acc=1) for f in BASE]
    out += [_matvec_case("q4_0", 19, 128, row_offset=45), _matvec_case("f16", 5, 6),
            _matvec_case("f32", 3, 5), _matvec_case("q8_0", 9, 64, group_size=64),
            _matvec_case("q4_1", 6, 48, group_size=16)]
    # the shift-free q4 unpacking (bench candidate)
    out += [_matvec_case(f, r, c, unpack=1) for f in ("q4_0", "q4_1") for r, c in shapes[1:3]]
    out += [_matvec_case("q4_1", 6, 48, group_size=16, unpack=1)]
    # int8 x with packed integer dot products (vec4 chunks; the 5-column f16 case falls back),
    # and the explicit exact path when the default is int8
    for u in (2, 3):
        out += [_matvec_case(f, r, c, unpack=u) for f in QUANTIZED for r, c in shapes[1:3]]
        out += [_matvec_case("q8_0", 9, 64, group_size=64, unpack=u),
                _matvec_case("q4_0", 19, 128, row_offset=45, acc=1, unpack=u)]
        if not quick:
            out += [_matvec_case(f, 4096, 4096, unpack=u) for f in QUANTIZED]
    out += [_matvec_case("q4_0", 7, 96, unpack=0)]
    # RB row blocks per workgroup (``rb``): x loaded once for RB * R rows; 37 rows at R = 4 x
    # RB = 3 leave the last workgroup's last block past the end
    out += [_matvec_case(f, 37, 576, r=4, rb=3) for f in ("q4_0", "q4_1", "q8_0", "f16")]
    out += [_matvec_case("q4_0", 37, 576, r=4, rb=2, acc=1, row_offset=3)]
    return out


# the fused RMSNorm (norm_eps: the decode LM head on the un-normed residual stream)
def _matvec_norm_case(fmt: str, rows: int, cols: int, row_offset: int = 0,
                      group_size: int = 32, **knobs) -> Case:
    from . import decode_loop

    def make(rng):
        from .harness import weight_parts

        bufs, w = weight_parts(rng, fmt, rows, cols, group_size)
        x, extra = decode_loop.case_norm_input(rng, cols, True)           # (1, cols) f32
        bufs.update(x=x[0], **extra, y=(row_offset + rows) * 4)            # y (row_offset + rows)
        return {"buffers": bufs, "params": {"row_offset": row_offset}, "w": w, "x": x}

    def ref(inp):
        import numpy as np

        xn = decode_loop.ref_normed(inp["x"], inp["buffers"])[0]
        y = np.zeros(row_offset + rows)
        y[row_offset:] = inp["w"].astype(np.float64) @ xn
        return {"y": y.astype(np.float32)}

    u = DECODE_UNPACK.get(fmt, 0)
    return Case("matvec", dict(fmt=fmt, rows=rows, cols=cols, group_size=group_size,
                               norm_eps=decode_loop.NORM_EPS_CASE, **knobs),
                make, ref, decode_tol(fmt, u, "dot_f32"),
                label=f"{fmt} {rows}x{cols} norm" + (f" off{row_offset}" if row_offset else "")
                + "".join(f" {k}{v}" for k, v in knobs.items()))


@register_cases("matvec")
def matvec_norm_cases(quick: bool) -> list[Case]:
    out = [_matvec_norm_case(f, 67, 64) for f in BASE]   # K-quants: kquant_cases
    # row blocks: 96 columns of q4 are 3 chunks for a 32-thread workgroup (29 threads idle)
    out += [_matvec_norm_case(f, 67, 96, r=4, rb=3) for f in ("q4_0", "q8_0", "f32")]
    out += [_matvec_norm_case("q4_0", 19, 128, row_offset=45), _matvec_norm_case("f32", 5, 6)]
    if not quick:
        out += [_matvec_norm_case(f, 1536, 576) for f in BASE]
    return out
