"""Prefill matrix-matrix kernels (tiled, any number of tokens) for every weight format.

    kernel("matmul", caps, fmt, rows, cols, group_size=32, accumulate=0)
        bindings: x (n_tok, cols) f32 | w_<parts> | y (n_tok, rows) f32 | params {n_tok}
        Y (+)= X W^T; grid(n_tok=...) -> (ceil(rows/64), ceil(n_tok/64), 1)

f32 tiles and accumulation by default; with shader-f16 the tiles are staged as f16 and each K
step's 32 products are summed in f16 (twice the FMA rate on GPUs with packed half math) before
being added to f32 accumulators. Where the device offers Chromium's subgroup matrices
(``matmul_sgmat.sgmat_config``), the tiles run on the GPU's matrix units instead. Pure Python; numpy only inside the check cases.
"""

from __future__ import annotations

from modelfmt.formats import QUANTIZED

from .core import Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .wgsl_common import (BASE, WeightSpec, binding_decls, check_weight, enable_lines, tiled_bindings,
                          weight_fns, words_per_row)
from .matmul_sgmat import sgmat_config, sgmat_kernel
from .registry import Case, register, register_cases

TN = 64   # weight rows per tile (tokens per tile: 16 * tokens per thread)
MATMUL_PARAMS = Params((("n_tok", "u32"),))


def _wload(prefix: str, cols: int, tk: int) -> str:
    """WGSL expression: 4 weights of ``row`` from column 4*c4 (zero past the end of the row)."""
    if cols % 4 == 0:
        if cols % tk == 0:
            return f"{prefix}elem4(row, c4)"
        return f"select(vec4<f32>(0.0), {prefix}elem4(row, min(c4, COLS / 4u - 1u)), 4u * c4 < COLS)"
    return (f"vec4<f32>({prefix}elem1(row, min(4u * c4, COLS - 1u)), "
            f"{prefix}elem1(row, min(4u * c4 + 1u, COLS - 1u)), "
            f"{prefix}elem1(row, min(4u * c4 + 2u, COLS - 1u)), "
            f"{prefix}elem1(row, min(4u * c4 + 3u, COLS - 1u))) * "
            f"vec4<f32>(vec4<u32>(4u * c4) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(COLS))")


def _xload(xvec: bool) -> str:
    """WGSL ``xload4(t, c4)``: 4 consecutive x values of token t from column 4*c4, zero past the end."""
    if xvec:  # whole vec4 loads: every token row starts 16-byte aligned
        return ("fn xload4(t: u32, c4: u32) -> vec4<f32> {\n"
                "    if (4u * c4 >= COLS) { return vec4<f32>(0.0); }\n"
                "    return x[(t * COLS) / 4u + c4];\n}\n")
    return ("fn xload4(t: u32, c4: u32) -> vec4<f32> {\n    var v = vec4<f32>(0.0);\n"
            "    for (var e = 0u; e < 4u; e++) {\n        let c = 4u * c4 + e;\n"
            "        if (c < COLS) { v[e] = x[t * COLS + c]; }\n    }\n    return v;\n}\n")


def tiled_kernel(caps: Caps, spec: WeightSpec, mt: int = 4) -> Kernel:
    """16*mt tokens x 64 rows per workgroup of 256 threads (mt = 4 or 8 tokens per thread);
    ``spec.store`` is the WGSL run per output element with ``o`` (flat index) in scope, where
    ``{i}`` / ``{c}`` become the token index (0..mt-1) and row component (x..w) of
    ``acc_<prefix>{i}.{c}``."""
    op, fmt, rows, cols, group_size = spec.op, spec.fmt, spec.rows, spec.cols, spec.group_size
    weights, store, params = spec.weights, spec.store, spec.params
    if mt not in (4, 8):
        raise UnsupportedKernel(f"{op}: tokens per thread must be 4 or 8, got {mt}")
    tm = 16 * mt
    check_weight(op, fmt, rows, cols, group_size)
    cfg = sgmat_config(caps)
    if cfg and mt == 4:   # the GPU's matrix units (Chromium): same bindings, grid semantics and store
        try:
            return sgmat_kernel(caps, spec, cfg, _xload(cols % 4 == 0),
                                lambda p, tk: _wload(p, cols, tk))
        except UnsupportedKernel:   # e.g. too little workgroup memory: the FMA tiles below
            pass
    if caps.max_workgroup_size < 256:
        raise UnsupportedKernel(f"{op}: needs 256 invocations per workgroup")
    f16 = caps.shader_f16
    st = "f16" if f16 else "f32"
    nw = len(weights)
    esize = 2 if f16 else 4
    tk = 32
    while tk > 4 and (tm + nw * TN) * tk * esize > caps.max_workgroup_storage:
        tk //= 2
    if fmt in QUANTIZED and group_size % 4:
        raise UnsupportedKernel(f"{op}: group size {group_size} is not a multiple of 4")
    key = KernelKey(op=op, fmt=fmt, wg=256, tile=tm, vec=4, f16=f16,
                    dims=(("r", rows), ("c", cols), ("g", group_size), ("k", tk)) + spec.extra_dims)
    xvec = cols % 4 == 0
    decls, bindings = binding_decls(tiled_bindings(spec))
    tiles = f"var<workgroup> xs: array<vec4<{st}>, TK * TM / 4u>;   // (TK, TM) x tile, k-major\n"
    for p in weights:
        tiles += (f"var<workgroup> {p}tile: array<vec4<{st}>, TK * TN / 4u>;"
                  f"   // (TK, TN) dequantized weight tile, k-major\n")
    stage = ""
    for p in weights:
        stage += f"            let v_{p} = vec4<{st}>(wload4_{p}(row, k0 / 4u + k4));\n"
        stage += "".join(f"            {p}tile[((4u * k4 + {e}u) * TN + n) / 4u][n % 4u] = v_{p}.{c};\n"
                         for e, c in enumerate("xyzw"))
    more = "".join(f"fn wload4_{p}(row: u32, c4: u32) -> vec4<f32> {{ return "
                   f"{_wload(p, cols, tk)}; }}\n" for p in weights[1:])
    acc_decl = "".join(f"    var acc_{p}{i} = vec4<f32>(0.0);   // token MT ty + {i}, rows 4 tx .. +3\n"
                       for p in weights for i in range(mt))
    acc = "h" if f16 else "acc"
    inner = ""
    if f16:   # this K step's products summed in f16, then added to the f32 accumulators
        inner += "".join(f"        var h_{p}{i} = vec4<f16>(0.0);\n" for p in weights for i in range(mt))
    inner += "        for (var k = 0u; k < TK; k++) {\n"
    inner += "".join(f"            let a{q} = xs[k * (TM / 4u) + {mt // 4}u * ty + {q}u];\n"
                     for q in range(mt // 4))
    for p in weights:
        inner += f"            let b_{p} = {p}tile[k * (TN / 4u) + tx];\n"
        inner += "".join(f"            {acc}_{p}{i} += a{i // 4}.{'xyzw'[i % 4]} * b_{p};\n"
                         for i in range(mt))
    inner += "        }\n"
    if f16:
        inner += "".join(f"        acc_{p}{i} += vec4<f32>(h_{p}{i});\n" for p in weights for i in range(mt))
    stores = []
    for i in range(mt):
        for j, c in enumerate("xyzw"):
            body = store.replace("{i}", str(i)).replace("{c}", c)
            stores.append(f"    if (t0 + MT * ty + {i}u < n_tok && n0 + 4u * tx + {j}u < ROWS) {{\n"
                          f"        let o = (t0 + MT * ty + {i}u) * ROWS + n0 + 4u * tx + {j}u;\n"
                          f"{body}\n    }}")
    store_all = "\n".join(stores)
    xload = _xload(xvec)
    wfns = "".join(weight_fns(fmt, p, 1) for p in weights)
    src = render(load_template("matmul"), {
        "ENABLES": enable_lines(f16, False), "OP": op, "FMT": fmt, "SEMANTICS": spec.semantics,
        "PARAMS": params.wgsl(), "BINDINGS": decls, "ROWS": rows, "COLS": cols,
        "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": cols // group_size if fmt in QUANTIZED else 1, "WPR": words_per_row(fmt, cols),
        "TK": tk, "MT": mt, "XLOAD": xload, "TILES": tiles, "WFNS": wfns, "W0": weights[0],
        "WLOAD0": _wload(weights[0], cols, tk), "WLOAD_MORE": more, "ST": st,
        "ACC_DECL": acc_decl, "STAGE_W": stage.rstrip("\n"), "INNER": inner.rstrip("\n"),
        "STORE": store_all}, slug=key.slug())
    return Kernel(key=key, wgsl=src, bindings=bindings, params=params,
                  workgroup_size=(256, 1, 1), features=("shader-f16",) if f16 else (),
                  grid=Grid(lambda n_tok=1: (-(-rows // TN), -(-int(n_tok) // tm), 1), ("n_tok",)),
                  meta={"tile": (tm, TN, tk)})


@register("matmul")
def build_matmul(caps: Caps, fmt: str, rows: int, cols: int, group_size: int = 32,
                 accumulate: int = 0, mt: int = 4) -> Kernel:
    """``mt=8``: 8 tokens per thread (128-token tiles, fewer shared loads per FMA), a candidate
    not yet measured on a GPU; for benchmarks, not the driver."""
    prev = "y[o] + " if accumulate else ""
    store = f"        y[o] = {prev}acc_w_{{i}}.{{c}};"
    sem = "Y[t, r] " + ("+= " if accumulate else "= ") + "sum_c X[t, c] * W[r, c]"
    spec = WeightSpec("matmul", fmt, rows, cols, group_size, ("w_",), "y", store, sem,
                      MATMUL_PARAMS, (("acc", int(accumulate)),) + ((("mt", mt),) if mt != 4 else ()))
    return tiled_kernel(caps, spec, mt)


# ---- check cases ----
def _case(fmt: str, rows: int, cols: int, n_tok: int, acc: int = 0, group_size: int = 32,
          mt: int = 4) -> Case:
    def make(rng):
        import numpy as np

        from .harness import weight_parts

        bufs, w = weight_parts(rng, fmt, rows, cols, group_size)
        x = rng.standard_normal((n_tok, cols)).astype(np.float32)     # (n_tok, cols) f32
        y0 = rng.standard_normal((n_tok, rows)).astype(np.float32)    # (n_tok, rows) f32
        bufs.update(x=x, y=y0)
        return {"buffers": bufs, "params": {"n_tok": n_tok}, "grid": {"n_tok": n_tok},
                "w": w, "x": x, "y0": y0}

    def ref(inp):
        import numpy as np

        y = inp["x"].astype(np.float64) @ inp["w"].astype(np.float64).T
        if acc:
            y += inp["y0"]
        return {"y": y.astype(np.float32)}

    dims = dict(fmt=fmt, rows=rows, cols=cols, group_size=group_size, accumulate=acc)
    if mt != 4:
        dims["mt"] = mt
    return Case("matmul", dims, make, ref, "dot_f32",
                label=f"{fmt} {rows}x{cols} M={n_tok}" + (" acc" if acc else "") +
                      (f" mt{mt}" if mt != 4 else ""),
                tol_f16="dot_f16")


@register_cases("matmul")
def matmul_cases(quick: bool) -> list[Case]:
    shapes = [(7, 96, 3), (67, 576, 17), (1, 32, 1), (70, 64, 130)]
    if not quick:
        shapes += [(576, 576, 64), (576, 1536, 130), (1536, 576, 17), (4096, 4096, 64),
                   (67, 1536, 512)]
    out = [_case(f, r, c, m) for f in BASE for r, c, m in shapes]
    out += [_case("q4_0", 33, 64, 5, acc=1), _case("f16", 5, 6, 3), _case("f32", 9, 7, 66),
            _case("f32", 6, 20, 2), _case("q4_1", 6, 48, 4, group_size=16)]
    # 8 tokens per thread (bench candidate): partial token and row tiles, K tail
    out += [_case("q4_0", 67, 96, 130, mt=8), _case("f16", 9, 20, 3, mt=8),
            _case("q8_0", 33, 64, 129, acc=1, mt=8)]
    return out
