"""Embedding row gather with dequantization, restricted to one row block of the table.

    kernel("embed", caps, fmt, hidden, group_size=32)
        bindings: ids (n_tok) u32 | w_<parts> (block rows, hidden) | x (n_tok, hidden) f32
                  | params {n_tok, row_start, rows}
        x[t] = W[ids[t] - row_start] for ids in [row_start, row_start + rows); grid(n_tok=...)

A vocabulary too large for one binding is stored as row blocks; the driver dispatches this kernel
once per block. Pure Python; numpy only inside the check cases.
"""

from __future__ import annotations

from modelfmt.formats import QUANTIZED

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, load_template, render
from .wgsl_common import BASE, binding_decls, check_weight, weight_bindings, weight_fns, words_per_row
from .registry import Case, register, register_cases

EMBED_PARAMS = Params((("n_tok", "u32"), ("row_start", "u32"), ("rows", "u32")))


@register("embed")
def build_embed(caps: Caps, fmt: str, hidden: int, group_size: int = 32) -> Kernel:
    check_weight("embed", fmt, 1, hidden, group_size)
    key = KernelKey(op="embed", fmt=fmt, wg=64, vec=4, dims=(("h", hidden), ("g", group_size)))
    binds = [(Binding("ids", "read", "(n_tok) u32 token ids"), "u32")]
    binds += weight_bindings(fmt, "w_", 1, "rows", "hidden")
    binds += [(Binding("x", "read_write", "(n_tok, hidden) f32"), "f32"),
              (Binding("params", "uniform", "Params"), "Params")]
    decls, bindings = binding_decls(binds)
    if hidden % 4 == 0:
        copy = ("    let v = w_elem4(row, c4);\n"
                "    for (var e = 0u; e < 4u; e++) { x[t * COLS + 4u * c4 + e] = v[e]; }")
    else:
        copy = ("    for (var c = 4u * c4; c < min(4u * c4 + 4u, COLS); c++) {\n"
                "        x[t * COLS + c] = w_elem1(row, c);\n    }")
    nc4 = -(-hidden // 4)
    src = render(load_template("embed"), {
        "FMT": fmt, "PARAMS": EMBED_PARAMS.wgsl(), "BINDINGS": decls, "COLS": hidden,
        "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": hidden // group_size if fmt in QUANTIZED else 1, "WPR": words_per_row(fmt, hidden),
        "NC4": nc4, "WFNS": weight_fns(fmt, "w_", 1), "COPY": copy}, slug=key.slug())
    return Kernel(key=key, wgsl=src, bindings=bindings, params=EMBED_PARAMS,
                  workgroup_size=(64, 1, 1),
                  grid=Grid(lambda n_tok=1: (-(-nc4 // 64), int(n_tok), 1), ("n_tok",)))


def _case(fmt: str, hidden: int, rows: int, row_start: int, ids: list[int]) -> Case:
    def make(rng):
        import numpy as np

        from .harness import weight_parts

        bufs, w = weight_parts(rng, fmt, rows, hidden)
        x0 = rng.standard_normal((len(ids), hidden)).astype(np.float32)  # (n_tok, hidden) f32
        ids_a = np.array(ids, np.uint32)                                 # (n_tok) u32
        bufs.update(ids=ids_a, x=x0)
        n = len(ids)
        return {"buffers": bufs, "params": {"n_tok": n, "row_start": row_start, "rows": rows},
                "grid": {"n_tok": n}, "w": w, "x0": x0, "ids": ids_a}

    def ref(inp):
        x = inp["x0"].copy()
        for t, i in enumerate(inp["ids"]):
            if row_start <= i < row_start + rows:
                x[t] = inp["w"][i - row_start]
        return {"x": x}

    return Case("embed", dict(fmt=fmt, hidden=hidden), make, ref, "exact",
                label=f"{fmt} h={hidden} block[{row_start}:{row_start + rows}] n={len(ids)}")


@register_cases("embed")
def embed_cases(quick: bool) -> list[Case]:
    out = []
    for f in BASE:
        out.append(_case(f, 96, 7, 0, [0, 6, 3]))
        # a row block: ids below, inside and past it (only the inside ones are written)
        out.append(_case(f, 576, 13, 20, [19, 20, 32, 33, 5, 25, 1000]))
    out += [_case("f16", 6, 5, 2, [2, 6, 1]), _case("f32", 7, 3, 0, [2, 0, 3])]
    if not quick:
        out += [_case(f, 4096, 64, 100, list(range(90, 170, 3))) for f in BASE]
    return out
