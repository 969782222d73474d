"""Small-M matrix-vector kernels: up to ``nb`` token rows of x against one weight, each weight byte
read once. For driver.speculative's verify pass (k + 1 rows): the tiled prefill matmul computes a
whole 64- or 128-token tile at any n_tok, the decode matvec one row per weight read.

    kernel("matvec_multi", caps, fmt, rows, cols, nb, group_size=32)
        bindings: x (nb, cols) f32 | w_<parts> | y (nb, rows) f32 | params {n_tok}
        y[t, r] = sum_c W[r, c] x[t, c] for t < n_tok (rows t >= n_tok untouched)
    kernel("gate_up_multi", caps, fmt, ffn, hidden, nb, group_size=32)
        bindings: x (nb, hidden) f32 | w1_<parts> | w3_<parts> | act (nb, ffn) f32 | params {n_tok}
        act[t, f] = silu(x[t] . W1[f]) * (x[t] . W3[f]) for t < n_tok

On the decode chunk loop (shaders/decode_loop.py, matvec.wgsl): a workgroup owns R rows, its
threads stride along them a chunk at a time; the chunk's weight words are loaded once into
registers, then for each token row t < n_tok (a workgroup-uniform branch) x's chunk is loaded
(from the row start ``xb``) and dotted with the decode kernel's own unpacking
(``decode_loop.DECODE_UNPACK``: int8 x for q4_0 where the GPU has packed dot products, exact f32
otherwise), so each token's dot is the decode matvec's arithmetic for that chunk (the K-quants'
several lines from shaders/kquant.py; their check cases are in shaders/kquant_cases.py).
Pure Python; numpy only inside the check cases.
"""

from __future__ import annotations

from modelfmt.formats import KQUANT

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel
from .decode_loop import (DECODE_UNPACK, PK8_WGSL, XQ_FORMATS, XQ_WORDS, DecodeLoop, chunk_dot,
                          chunk_dot_i8, decode_tol, norm_binding, x_chunk, xq_load_lines)
from .registry import Case, register, register_cases
from . import kquant as kq
from .wgsl_common import (BASE, SCALED, WeightSpec, binding_decls, check_weight, fold_grid,
                          weight_bindings)

MULTI_PARAMS = Params((("n_tok", "u32"),))
MAX_NB = 32
ACC_BUDGET = 32   # default rows per workgroup: the largest R <= 8 with nb * R * weights <= this

# (op, rows, cols, nb) -> (wg, r, sg): measured best workgroup size / rows per workgroup /
# reduction (1 subgroupAdd where the device has subgroups, 0 the shared-memory tree), from
# ``python -m shaders bench --multi`` (shaders/bench_multi.py prints this line); other shapes
# take the rule above (wg from the decode loop, R from ACC_BUDGET, subgroups where present)
MULTI_TUNED: dict[tuple, tuple[int, int, int]] = {}
# the same for the xq = 1 kernels (pre-quantized x; driver.graph.VERIFY_XQ)
# measured on an NVIDIA H200, 2026-12-03 (`python -m shaders bench --multi`, 8B-shape weights; the 1B
# shapes' defaults were the best of what the time budget measured)
MULTI_TUNED_XQ: dict[tuple, tuple[int, int, int]] = {
    ('gate_up_multi', 14336, 4096, 2): (64, 4, 1),
    ('gate_up_multi', 14336, 4096, 8): (64, 4, 1),
    ('matvec_multi', 1024, 4096, 2): (128, 4, 1),
    ('matvec_multi', 4096, 4096, 2): (64, 4, 1),
    ('matvec_multi', 4096, 4096, 8): (64, 4, 1),
    ('matvec_multi', 4096, 14336, 2): (64, 4, 1),
    ('matvec_multi', 4096, 14336, 8): (64, 8, 1),
}


def multi_kernel(caps: Caps, spec: WeightSpec, nb: int, unpack: int | None = None,
                 wg: int = 0, r: int = 0, sg: int = -1, xq: int = 0) -> Kernel:
    """One workgroup per R rows of ``spec``'s weights and ``nb`` token rows; ``spec.store`` is
    WGSL run by thread r < R for each token ``b < n_tok`` with ``row0``, ``r``, ``b`` and
    ``total(i)`` in scope. ``wg`` / ``r`` override the workgroup size / rows per workgroup,
    ``sg`` = 0 the subgroup reduction (shared-memory tree: ~NACC * WG adds a workgroup instead of
    NACC * WG * log2(subgroup) shuffles + adds; benchmarks: shaders/bench_multi.py); ``xq`` = 1
    (q4_0, unpack 3): x bound as ``quant_x``'s int8 chunks instead of f32, so the per-token
    quantization (~2/3 of the instructions a row chunk at R = 4) is done once per pass, not
    once per workgroup."""
    op, fmt, rows, cols, G = spec.op, spec.fmt, spec.rows, spec.cols, spec.group_size
    check_weight(op, fmt, rows, cols, G)
    if not (isinstance(nb, int) and 1 <= nb <= MAX_NB):
        raise UnsupportedKernel(f"{op}: nb (token rows) must be in [1, {MAX_NB}], got {nb!r}")
    tuned = MULTI_TUNED_XQ if xq else MULTI_TUNED
    if not wg and not r and sg < 0:
        # the entry for nb, else for the smallest tuned nb above it (the sweep measures nb 2 /
        # 8 / 16; a 3-row verify pass compiles nb 4, whose untuned default took 14.2 ms on the
        # 8B shape against 10.2 ms for 5 rows on nb 8: H200, 2026-12-03)
        at = sorted(n for (o, ro, co, n) in tuned if (o, ro, co) == (op, rows, cols) and n >= nb)
        if at:
            wg, r, sg = tuned[(op, rows, cols, at[0])]
    if sg == 0 and caps.subgroups:
        from dataclasses import replace
        caps = replace(caps, subgroups=False)
    lp = DecodeLoop.plan(caps, fmt, cols, G, unpack, min(wg, caps.max_workgroup_size))
    nw = len(spec.weights)
    # rows per workgroup: q formats share a token's x chunk over R rows (as decode); the
    # accumulators (nb * R * weights) stay within ~ACC_BUDGET registers
    if r:
        r = max(1, min(r, rows))
    else:
        r = 1
        while fmt in SCALED and 2 * r <= min(8, rows) and nb * 2 * r * nw <= ACC_BUDGET:
            r *= 2
    while r > 1 and lp.red_bytes(nb * r * nw) > caps.max_workgroup_storage:
        r //= 2
    while lp.wg > 32 and lp.red_bytes(nb * r * nw) > caps.max_workgroup_storage:
        lp = lp.with_wg(lp.wg // 2)
    nacc = nb * r * nw
    if lp.red_bytes(nacc) > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"{op}: nb={nb} needs {lp.red_bytes(nacc)} B of workgroup storage")
    gx, gy = fold_grid(-(-rows // r))
    if gy > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{op}: {rows} rows need a {gx}x{gy} grid")
    if xq and not (fmt == "q4_0" and lp.i8 == 2):
        raise UnsupportedKernel(f"{op}: xq (pre-quantized x) is for q4_0 with unpack 3 only")
    key = KernelKey(op=op, fmt=fmt, wg=lp.wg, tile=r, vec=lp.vec, subgroups=lp.sg,
                    dims=(("r", rows), ("c", cols), ("g", G), ("nb", nb)) + lp.key_dims(0.0)
                    + ((("xq", 1),) if xq else ()))
    # the reduction skips the token rows past n_tok (a workgroup-uniform branch): a pass of
    # n rows on a body compiled for nb >= n (powers of two) reduces n, not nb, rows' sums
    guards = [f"{b}u < params.n_tok" if b else "" for b in range(nb) for _ in range(r * nw)]
    binds = ([(Binding("xq", "read", f"({nb}, cols / 32, {XQ_WORDS}) int8 x of quant_x as vec4 "
                                       "u32"), "vec4<u32>")] if xq
             else lp.x_binding(f"({nb}, cols) f32", 0.0))
    for p in spec.weights:
        binds += weight_bindings(fmt, p, lp.vec, "rows", "cols")
    binds += [(Binding(spec.out_name, "read_write", f"({nb}, rows) f32"), "f32"),
              (Binding("params", "uniform", "Params"), "Params")]
    decls, bindings = binding_decls(binds)
    # x of token row b: x4 / x1 read from the row start ``xb`` set before the token's block
    if lp.xvec == 4:
        xfns = ("var<private> xb: u32;   // first vec4 of the current token row\n"
                "fn x4(i: u32) -> vec4<f32> { return x[xb + i]; }\n"
                "fn x1(c: u32) -> f32 { return x[xb + (c >> 2u)][c & 3u]; }\n")
        xrow = cols // 4
    else:
        xfns = ("var<private> xb: u32;   // first element of the current token row\n"
                "fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x[xb + 4u * i], "
                "x[xb + 4u * i + 1u], x[xb + 4u * i + 2u], x[xb + 4u * i + 3u]); }\n"
                "fn x1(c: u32) -> f32 { return x[xb + c]; }\n")
        xrow = cols
    xlines, xs = x_chunk(fmt, lp.vec, lp.mask, lp.i8, None)
    if xq:   # token b's chunk as quant_x stored it
        xfns = ""
        xlines = xq_load_lines("b_ * NCH + ch", False)
    wload = [f"let wc{i}_{k} = {p}chunk(rr{i} * NCH + ch);   // weight words, once for all rows"
             for i in range(r) for k, p in enumerate(spec.weights)]
    accum = []
    for b in range(nb):
        accum += [f"if ({b}u < params.n_tok) {{",
                  f"    let b_ = {b}u;" if xq else f"    xb = {b * xrow}u;"]
        accum += ["    " + ln for ln in xlines]
        for i in range(r):
            for k, p in enumerate(spec.weights):
                wv, acc = f"wc{i}_{k}", f"acc{b * r * nw + i * nw + k}"
                if fmt in KQUANT:   # several lines (super-block scales), as DecodeLoop.accum
                    accum += ["    " + ln for ln in kq.accum_lines(fmt, p, wv, xs, f"rr{i}", acc,
                                                                   str(i), lp.i8)]
                    continue
                dot = (chunk_dot_i8(fmt, p, lp.vec, wv, f"rr{i}", lp.i8 == 2) if lp.i8
                       else chunk_dot(fmt, p, lp.vec, wv, xs, f"rr{i}", lp.mask))
                accum.append(f"    {acc} += {dot};")
        accum.append("}")
    store = ("        for (var b = 0u; b < params.n_tok; b++) {\n" + spec.store + "\n        }")
    src = lp.render("matvec", key.slug(), prefixes=spec.weights, r=r, nacc=nacc, nrm=None,
                    accum=accum, xs_lines=wload, guards=guards, subs={
                        "OP": op, "FMT": fmt, "SEMANTICS": spec.semantics,
                        "PARAMS": spec.params.wgsl(), "BINDINGS": decls, "ROWS": rows,
                        "NW": nw, "GX": gx, "STORE": store, "XFNS": xfns,
                        "ROWS_DECL": "\n".join(f"    let rr{i} = min(row0 + {i}u, ROWS - 1u);"
                                               for i in range(r))})
    return Kernel(key=key, wgsl=src, bindings=bindings, params=spec.params,
                  workgroup_size=(lp.wg, 1, 1), features=("subgroups",) if lp.sg else (),
                  grid=Grid.fixed(gx, gy), meta={"rows_per_wg": r, **lp.meta()})


@register("matvec_multi")
def build_matvec_multi(caps: Caps, fmt: str, rows: int, cols: int, nb: int,
                       group_size: int = 32, unpack: int | None = None, wg: int = 0,
                       r: int = 0, sg: int = -1, xq: int = 0) -> Kernel:
    store = "            y[b * ROWS + row0 + r] = total(b * R * NW + r);"
    spec = WeightSpec("matvec_multi", fmt, rows, cols, group_size, ("w_",), "y", store,
                      "y[t, r] = sum_c W[r, c] * x[t, c], t < n_tok", MULTI_PARAMS)
    return multi_kernel(caps, spec, nb, unpack, wg, r, sg, xq)


@register("gate_up_multi")
def build_gate_up_multi(caps: Caps, fmt: str, ffn: int, hidden: int, nb: int,
                        group_size: int = 32, unpack: int | None = None, wg: int = 0,
                        r: int = 0, sg: int = -1, xq: int = 0) -> Kernel:
    store = ("            let g = total(b * R * NW + r * NW);\n"
             "            act[b * ROWS + row0 + r] = g / (1.0 + exp(-g)) * "
             "total(b * R * NW + r * NW + 1u);")
    spec = WeightSpec("gate_up_multi", fmt, ffn, hidden, group_size, ("w1_", "w3_"), "act",
                      store, "act[t, f] = silu(x[t] . W1[f]) * (x[t] . W3[f]), t < n_tok",
                      MULTI_PARAMS)
    return multi_kernel(caps, spec, nb, unpack, wg, r, sg, xq)


QUANT_X_WGSL = """
// quant_x: x (nb, cols) f32 -> xq (nb, cols / 32, 5) vec4<u32>: each 32-column chunk of each token
// row quantized to int8 once (shaders/decode_loop.i8_quant_lines, the decode kernels' own
// arithmetic), for the kernels built with xq = 1 (matvec_multi / gate_up_multi in a verify pass;
// matvec / gate_up / qkv_rope_decode in decode). One invocation a chunk. Record: xe, xo, ye, yo
// words; (dx, sq | sr << 16, sqa | sra << 16, ss): the int8 sums of the chunk and of its first
// 16 columns (q6_k's two scales), 16-bit fields (|sum| <= 32 * 127); ss = the chunk's raw sum of
// x^2 where the RMSNorm weight is fused (x * norm_w is what gets quantized; the consumer still
// reduces ss into 1 / rms(x)), else 0.
{{PARAMS}}
{{BINDINGS}}
const NCH: u32 = {{NCH}}u;     // 32-column chunks a row
const CE: u32 = 32u;           // columns a chunk
const XROW: u32 = {{XROW}}u;   // vec4s a row of x
var<private> xb: u32;          // first vec4 of the current token row
fn x4(i: u32) -> vec4<f32> { return x[xb + i]{{NORM}}; }
{{PK8}}
fn pk16(a: i32, b: i32) -> u32 { return (bitcast<u32>(a) & 0xFFFFu) | (bitcast<u32>(b) << 16u); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n_tok * NCH) {
        return;
    }
    let ch = i % NCH;
    xb = (i / NCH) * XROW;
{{LINES}}
    let sqa = dot4I8Packed(xe0, 0x01010101u) + dot4I8Packed(xo0, 0x01010101u) +
              dot4I8Packed(xe1, 0x01010101u) + dot4I8Packed(xo1, 0x01010101u);
    let sra = dot4I8Packed(ye0, 0x01010101u) + dot4I8Packed(yo0, 0x01010101u) +
              dot4I8Packed(ye1, 0x01010101u) + dot4I8Packed(yo1, 0x01010101u);
    let o = i * 5u;
    xq[o] = vec4<u32>(xe0, xe1, xe2, xe3);
    xq[o + 1u] = vec4<u32>(xo0, xo1, xo2, xo3);
    xq[o + 2u] = vec4<u32>(ye0, ye1, ye2, ye3);
    xq[o + 3u] = vec4<u32>(yo0, yo1, yo2, yo3);
    xq[o + 4u] = vec4<u32>(bitcast<u32>(dx), pk16(sq, sr), pk16(sqa, sra), bitcast<u32>({{SS}}));
}
"""


@register("quant_x")
def build_quant_x(caps: Caps, fmt: str, cols: int, nb: int, group_size: int = 32,
                  norm: int = 0) -> Kernel:
    """x (nb, cols) f32 -> xq (nb, cols / 32, XQ_WORDS) vec4<u32> (rows t < n_tok), for the
    consumers of ``fmt`` (any of decode_loop.XQ_FORMATS: the quantization is the same). ``norm``
    = 1 (nb = 1, decode): ``norm_w`` (cols) f32 is bound after x and x * norm_w is quantized,
    each record keeping its chunk's raw sum of x^2 for the consumer's fused RMSNorm."""
    from .core import render
    lp = DecodeLoop.plan(caps, "q4_0", cols, group_size, None)
    if not (fmt in XQ_FORMATS and lp.i8 == 2 and cols % 32 == 0 and lp.xvec == 4):
        raise UnsupportedKernel(f"quant_x: for {', '.join(XQ_FORMATS)} with packed int8 dot "
                                f"products and cols a multiple of 32 only (got {fmt}, {cols})")
    if not (isinstance(nb, int) and 1 <= nb <= MAX_NB):
        raise UnsupportedKernel(f"quant_x: nb (token rows) must be in [1, {MAX_NB}], got {nb!r}")
    if norm and nb != 1:
        raise UnsupportedKernel("quant_x: the fused RMSNorm weight (norm=1) is for nb = 1 only")
    nch = cols // 32
    lines, _ = x_chunk("q4_0", 4, False, 2, None)
    if norm:   # the raw squares of this chunk, from the same loads x4 makes
        lines = [f"let xn{i} = x[xb + ch * 8u + {i}u];" for i in range(8)] + [
            "let ss = " + " + ".join(f"dot(xn{i}, xn{i})" for i in range(8)) + ";"] + lines
    binds = [(Binding("x", "read", f"({nb}, cols) f32 as vec4"), "vec4<f32>")]
    binds += [norm_binding(4)] if norm else []
    binds += [(Binding("xq", "read_write", f"({nb}, cols / 32, {XQ_WORDS}) vec4 u32"), "vec4<u32>"),
              (Binding("params", "uniform", "Params"), "Params")]
    decls, bindings = binding_decls(binds)
    key = KernelKey(op="quant_x", fmt="q4_0", wg=64,
                    dims=(("c", cols), ("nb", nb)) + ((("n", 1),) if norm else ()))
    src = render(QUANT_X_WGSL, {"PARAMS": MULTI_PARAMS.wgsl(), "BINDINGS": decls, "NCH": nch,
                                "XROW": cols // 4, "PK8": PK8_WGSL,
                                "NORM": " * norm_w[i]" if norm else "",
                                "SS": "ss" if norm else "0.0",
                                "LINES": "\n".join("    " + ln for ln in lines)}, slug=key.slug())
    return Kernel(key=key, wgsl=src, bindings=bindings, params=MULTI_PARAMS,
                  workgroup_size=(64, 1, 1), grid=Grid.fixed(-(-nb * nch // 64)), meta=lp.meta())


# ---- check cases ----
def _case(op: str, fmt: str, rows: int, cols: int, nb: int, n_tok: int,
          unpack: int | None = None, via_xq: bool = False, **knobs) -> Case:
    """``via_xq``: on caps with packed int8 dot products, quant_x then the kernel with xq=1 (as
    the verify body runs them), elsewhere the self-quantizing kernel alone."""
    gate = op == "gate_up_multi"
    out = "act" if gate else "y"

    def make(rng):
        import numpy as np

        from .harness import weight_parts

        if gate:
            b1, w1 = weight_parts(rng, fmt, rows, cols, 32, prefix="w1_")
            b3, w3 = weight_parts(rng, fmt, rows, cols, 32, prefix="w3_")
            bufs, ws = {**b1, **b3}, (w1, w3)
        else:
            bufs, w = weight_parts(rng, fmt, rows, cols, 32)
            ws = (w,)
        x = (rng.standard_normal((nb, cols)) / np.sqrt(cols)).astype(np.float32)  # (nb, cols)
        y0 = rng.standard_normal((nb, rows)).astype(np.float32)   # rows t >= n_tok stay
        bufs.update(x=x, **{out: y0})
        if via_xq:
            bufs["xq"] = nb * (cols // 32) * XQ_WORDS * 16   # (nb, cols / 32, 5) vec4 u32
        return {"buffers": bufs, "params": {"n_tok": n_tok}, "ws": ws, "x": x, "y0": y0}

    def ref(inp):
        import numpy as np

        x = inp["x"][:n_tok].astype(np.float64)
        y = inp["y0"].astype(np.float64).copy()
        if gate:
            g = x @ inp["ws"][0].astype(np.float64).T
            y[:n_tok] = g / (1.0 + np.exp(-g)) * (x @ inp["ws"][1].astype(np.float64).T)
        else:
            y[:n_tok] = x @ inp["ws"][0].astype(np.float64).T
        return {out: y.astype(np.float32)}

    dims = dict(fmt=fmt, nb=nb, **({"ffn": rows, "hidden": cols} if gate else
                                   {"rows": rows, "cols": cols}))
    if unpack is not None:
        dims["unpack"] = unpack
    dims.update(knobs)
    u = DECODE_UNPACK.get(fmt, 0) if unpack is None else unpack

    def steps(caps, inp):
        from .registry import kernel
        p = {"n_tok": n_tok}
        k = kernel(op, caps, **dims)
        if not (caps.packed_dot and k.meta.get("language_features")):
            return [(k, p, k.grid())]
        kq = kernel("quant_x", caps, fmt=fmt, cols=cols, nb=nb)
        k1 = kernel(op, caps, xq=1, **dims)
        return [(kq, p, kq.grid()), (k1, p, k1.grid())]

    return Case(op, dims, make, ref, decode_tol(fmt, u, "gate_up_f32" if gate else "dot_f32"),
                label=f"{fmt} {rows}x{cols} nb={nb} n={n_tok}"
                      + (f" u{unpack}" if unpack is not None else "")
                      + "".join(f" {k}{v}" for k, v in knobs.items())
                      + (" via quant_x" if via_xq else ""),
                steps=steps if via_xq else None)


@register_cases("matvec_multi", covers=("quant_x",))
def matvec_multi_cases(quick: bool) -> list[Case]:
    out = [_case("matvec_multi", f, rows, cols, nb, n)
           for f in BASE for (rows, cols), nb, n in (((7, 96), 5, 5), ((67, 64), 5, 3),
                                                    ((13, 1536), 2, 1))]
    out += [_case("matvec_multi", f, 67, 64, 4, 4, unpack=u) for f in ("q4_0", "q8_0")
            for u in (0, 3)]
    # the bench sweep's knobs (shaders/bench_multi.py): small workgroups striding several
    # chunks, many rows per workgroup, a partial last row block
    out += [_case("matvec_multi", "q4_0", 37, 512, 8, 5, wg=32, r=16),
            _case("matvec_multi", "q4_0", 19, 256, 2, 2, wg=64, r=1, unpack=0),
            _case("matvec_multi", "q4_0", 37, 512, 8, 5, wg=64, r=4, sg=0),
            _case("matvec_multi", "q4_0", 37, 512, 8, 5, via_xq=True),
            _case("matvec_multi", "q4_0", 19, 1024, 4, 3, via_xq=True, wg=32, r=8)]
    if not quick:
        out += [_case("matvec_multi", "q4_0", 4096, 4096, 8, 5),
                _case("matvec_multi", "q4_1", 576, 576, 16, 16)]
    return out


@register_cases("gate_up_multi")
def gate_up_multi_cases(quick: bool) -> list[Case]:
    out = [_case("gate_up_multi", f, ffn, h, nb, n)
           for f in BASE for (ffn, h), nb, n in (((7, 96), 5, 5), ((67, 64), 3, 2))]
    out += [_case("gate_up_multi", "q4_0", 21, 512, 16, 9, wg=32, r=8),
            _case("gate_up_multi", "q4_0", 21, 512, 8, 5, wg=128, r=2, sg=0),
            _case("gate_up_multi", "q4_0", 21, 512, 8, 5, via_xq=True)]
    if not quick:
        out += [_case("gate_up_multi", "q4_0", 1536, 576, 8, 5)]
    return out
