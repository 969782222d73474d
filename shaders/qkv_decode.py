"""Fused QKV projection + RoPE + KV-cache append for one token (decode), on the decode matvec's
inner loop.

    kernel("qkv_rope_decode", caps, fmt, hidden, n_heads, n_kv_heads, head_dim, group_size=32,
           kv="f16", heads="qkv", norm_eps=0.0)
      bindings: x (1, hidden) f32 | [norm_w (hidden) f32 when norm_eps > 0] | wq_<parts>
                (n_heads*hd, hidden) | wk_<parts> (n_kv*hd, hidden) | wv_<parts> (n_kv*hd, hidden)
                | inv_freq (hd/2) f32 | q (1, n_heads*hd) f32 rw | k_cache, v_cache (max_ctx,
                n_kv, hd) f16-packed or f32 rw | params {n_tok, pos}; only the bindings of the
                projections in ``heads`` (inv_freq only with q or k); n_tok must be 1
      grid(n_tok=1) -> (units, 1, 1), units = (rows of the projections in heads) / R, folded into
      y past 65535; R = 8 rows per workgroup for q formats (4 where head_dim/2 is not a multiple
      of 4), 4 for f16 / f32
      q = rope(x Wq^T, pos); k_cache[pos] = rope(x Wk^T, pos); v_cache[pos] = x Wv^T
      (rotate-half RoPE, HF layout; inv_freq from ModelConfig.rope_inv_freq())

``heads`` ("qkv", "q", "kv", "k", "v", "qk", "qv") selects the projections of one dispatch. Why:
the fused kernel binds 8 storage buffers for f32/f16, 11 for q4_0/q8_0 and 14 for q4_1, above
WebGPU's default maxStorageBuffersPerShaderStage of 8 (SwiftShader: 10). ``qkv_split(caps, fmt)``
gives the fewest dispatches that fit ``caps.max_storage_buffers`` (["qkv"], ["q", "kv"] or
["q", "k", "v"]); each keeps RoPE and the KV append fused. Prefill runs three tiled matmuls and
``rope_append`` instead (the same cache store, ``rope_append.kv_store``).

Why this shape: a decode step runs it once per layer instead of four dispatches (three matvecs +
a rope/append pass, ~5 us each on an H200). It is built from matvec's decode pieces
(``x_chunk``, ``chunk_dot`` / ``chunk_dot_i8``, ``weight_fns``, the reduction templates) and uses
the same weight unpacking per format (``matvec.DECODE_UNPACK``: q4_0 int8 x + residual with
dot4I8Packed, the others exact f32). A Q / K workgroup owns P rotate-half pairs (rows j .. j+P-1
and their partners j+HALF ..) of one head, so RoPE and the packed f16 K words need no other
workgroup.

Pure Python (runs in Pyodide); numpy only inside the check-case functions.
"""

from __future__ import annotations

from modelfmt.formats import PART_NAMES, QUANTIZED

from .core import Binding, Caps, Kernel, KernelKey, UnsupportedKernel, load_template, render
from .matvec import (DECODE_UNPACK, EPW, NORM_EPS_CASE, PK8_WGSL, binding_decls,
                     case_norm_input, check_weight, chunk_dot, chunk_dot_i8, decode_tol,
                     default_unpack, enables, eps_tag, fold_grid, norm_binding, norm_parts,
                     pick_vec, pow2_at_least, reduce_template, ref_normed, weight_bindings,
                     weight_fns, words_per_row, x_chunk, x_fns)
from .registry import Case, register, register_cases
from .rope import PARAMS, ROPE_FN
from .rope_append import kv_store

OP = "qkv_rope_decode"


SECTIONS = "qkv"          # section index 0 = Q, 1 = K, 2 = V (the template's ``sect``)
HEADS = ("qkv", "q", "kv", "k", "v", "qk", "qv")
SPLITS = (("qkv",), ("q", "kv"), ("q", "k", "v"))   # fewest dispatches first


def storage_buffers(fmt: str, heads: str = "qkv") -> int:
    """Storage buffers the kernel of ``heads`` binds: x, the weights' parts, inv_freq (q or k),
    and one output per projection (q, k_cache, v_cache)."""
    return 1 + len(PART_NAMES[fmt]) * len(heads) + (1 if set(heads) & {"q", "k"} else 0) + len(heads)


def qkv_split(caps: Caps, fmt: str) -> list[str]:
    """The ``heads`` of each qkv_rope_decode dispatch of a layer: the fewest that all fit
    ``caps.max_storage_buffers`` (["qkv"] where the fused kernel does)."""
    for split in SPLITS:
        if all(storage_buffers(fmt, h) <= caps.max_storage_buffers for h in split):
            return list(split)
    raise UnsupportedKernel(f"{OP}: even one projection per dispatch binds "
                            f"{max(storage_buffers(fmt, h) for h in SPLITS[-1])} storage buffers "
                            f"({fmt}); this GPU allows {caps.max_storage_buffers}")


def _unit(secs: str, sizes: dict) -> str:
    """WGSL: ``sect`` (0 Q, 1 K, 2 V) and ``v`` (unit within its section) of workgroup unit u."""
    ks = [SECTIONS.index(h) for h in secs]
    n = [sizes[h] for h in secs]
    if len(secs) == 1:
        return f"    let sect = {ks[0]}u;\n    let v = u;"
    if len(secs) == 2:
        return (f"    let sect = select({ks[1]}u, {ks[0]}u, u < {n[0]}u);\n"
                f"    let v = u - select({n[0]}u, 0u, u < {n[0]}u);")
    a, b = n[0], n[0] + n[1]
    return (f"    let sect = select(select({ks[2]}u, {ks[1]}u, u < {b}u), {ks[0]}u, u < {a}u);\n"
            f"    let v = u - select(select({b}u, {a}u, u < {b}u), 0u, u < {a}u);")


def _accum(fmt: str, heads: str, vec: int, r: int, xs: list[str], mask: bool, i8: int) -> list[str]:
    """WGSL: the R unrolled dot statements of one chunk, per section of ``heads`` behind a
    workgroup-uniform ``sect`` branch (one weight per workgroup)."""
    out = []
    for n, h in enumerate(heads):
        p = f"w{h}_"
        if len(heads) > 1:
            k = SECTIONS.index(h)
            out.append("if (sect == %du) {" % k if n == 0 else
                       "} else {" if n == len(heads) - 1 else "} else if (sect == %du) {" % k)
        pad = "    " if len(heads) > 1 else ""
        for i in range(r):
            wv = f"{p}chunk(rr{i} * NCH + ch)"
            out.append(f"{pad}acc{i} += " + (
                chunk_dot_i8(fmt, p, vec, wv, f"rr{i}", i8 == 2) if i8
                else chunk_dot(fmt, p, vec, wv, xs, f"rr{i}", mask)) + ";")
    if len(heads) > 1:
        out.append("}")
    return out


def _reduce(r: int, sg: bool) -> list[str]:
    """WGSL: the R partial sums into the reduction template's shared slots (as matvec's)."""
    if sg:
        out = [f"let s{i} = subgroupAdd(acc{i});" for i in range(r)]
        out += ["if (sg_lane == 0u) {"] + [f"    red[(lid / sg_size) * NACC + {i}u] = s{i};"
                                          for i in range(r)] + ["}"]
        return out + ["if (lid == 0u) { nsg = (WG + sg_size - 1u) / sg_size; }",
                      "workgroupBarrier();"]
    return [f"red[{i}u * WG + lid] = acc{i};" for i in range(r)] + ["tree_reduce(lid);"]


def _epilogue(heads: str) -> str:
    """WGSL run by thread lid < P/2 with ``i``, ``p``, ``a`` = (row i, i+1, i+P, i+1+P)."""
    ind = "        "
    out = ""
    if "v" in heads:
        v_store = (f"store_kv(1u, p * KVD + base + i, a.xy);\n"
                   f"{ind}store_kv(1u, p * KVD + base + P + i, a.zw);")
        if heads == "v":
            return ind + v_store
        out += f"{ind}if (sect == 2u) {{\n{ind}    " + v_store.replace("\n", "\n    ")
        out += f"\n{ind}    return;\n{ind}}}\n"
    out += (f"{ind}let r0 = rope_rotate(a.xz, rope_cs(p, inv_freq[j + i]));        // rows (j+i, j+i+HALF)\n"
            f"{ind}let r1 = rope_rotate(a.yw, rope_cs(p, inv_freq[j + i + 1u]));   // (j+i+1, j+i+1+HALF)\n")
    q_store = (f"{ind}    let o = h * HD + j + i;\n"
               f"{ind}    q[o] = r0.x;\n{ind}    q[o + 1u] = r1.x;\n"
               f"{ind}    q[o + HALF] = r0.y;\n{ind}    q[o + HALF + 1u] = r1.y;\n")
    k_store = (f"{ind}    let o = p * KVD + h * HD + j + i;\n"
               f"{ind}    store_kv(0u, o, vec2<f32>(r0.x, r1.x));\n"
               f"{ind}    store_kv(0u, o + HALF, vec2<f32>(r0.y, r1.y));\n")
    if "q" in heads and "k" in heads:
        return out + f"{ind}if (sect == 0u) {{\n{q_store}{ind}}} else {{\n{k_store}{ind}}}"
    return out + f"{ind}{{\n{q_store if 'q' in heads else k_store}{ind}}}"


@register(OP)
def build_qkv_rope_decode(caps: Caps, fmt: str, hidden: int, n_heads: int, n_kv_heads: int,
                          head_dim: int, group_size: int = 32, kv: str = "f16", heads: str = "qkv",
                          wg: int = 0, r: int = 0, unpack: int | None = None,
                          norm_eps: float = 0.0) -> Kernel:
    """``wg`` / ``r`` / ``unpack`` override the workgroup size / rows per workgroup (a multiple
    of 4 whose half divides head_dim/2) / weight unpacking, as matvec's (benchmarks only).
    ``norm_eps`` > 0: x is the un-normed residual and ``norm_w`` (bound after x) the RMSNorm
    weight, applied in the kernel (``matvec.norm_parts``)."""
    if heads not in HEADS:
        raise UnsupportedKernel(f"{OP}: heads must be one of {', '.join(HEADS)}, got {heads!r}")
    if kv not in ("f16", "f32"):
        raise UnsupportedKernel(f"{OP}: kv must be 'f16' or 'f32', got {kv!r}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads or head_dim % 4 or head_dim <= 0:
        raise UnsupportedKernel(f"{OP}: need n_heads % n_kv_heads == 0 and head_dim % 4 == 0, "
                                f"got {n_heads}, {n_kv_heads}, {head_dim}")
    qd, kvd, half = n_heads * head_dim, n_kv_heads * head_dim, head_dim // 2
    for rows in (qd, kvd):
        check_weight(OP, fmt, rows, hidden, group_size)
    vec = pick_vec(fmt, hidden, group_size)
    xvec = 4 if hidden % 4 == 0 else 1
    if unpack is None:
        unpack = default_unpack(caps, fmt)
    mask = unpack == 1 and fmt in ("q4_0", "q4_1")
    i8 = unpack - 1 if unpack in (2, 3) and fmt in QUANTIZED and vec == 4 else 0
    # rows per workgroup: matvec's 8 for q formats (x chunk and its int8 quantization shared by
    # more rows); f16/f32 matvec measured best at 1 row, but a workgroup here needs 2 pairs (4
    # rows) so that the packed f16 K/V words are whole
    r = r or (8 if fmt in QUANTIZED and half % 4 == 0 else 4)
    if r % 4 or half % (r // 2):
        raise UnsupportedKernel(f"{OP}: r={r} rows per workgroup: need a multiple of 4 whose "
                                f"half divides head_dim/2 = {half}")
    wpr = words_per_row(fmt, hidden)
    nch = wpr // vec
    cap = min(256, caps.max_workgroup_size)
    wg = wg or max(32, min(cap, pow2_at_least(nch)))
    wg = min(pow2_at_least(wg), cap)
    sg = caps.subgroups
    na = r + (1 if norm_eps else 0)   # partial sums per thread (+ the fused norm's)
    while wg > 32 and na * (wg // 4 if sg else wg) * 4 > caps.max_workgroup_storage:
        wg //= 2   # keep the reduction within the workgroup storage limit
    if na * (wg // 4 if sg else wg) * 4 > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"{OP}: reduction of {r} rows exceeds the workgroup storage")
    sizes = {"q": qd // r, "k": kvd // r, "v": kvd // r}   # workgroups per section
    units = sum(sizes[h] for h in heads)
    gx, gy = fold_grid(units)
    if gy > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{OP}: {units} workgroups exceed the grid limit")
    extra = ((("u", unpack),) if mask or i8 else ()) + ((("n", eps_tag(norm_eps)),) if norm_eps else ())
    key = KernelKey(op=OP, fmt=fmt, wg=wg, tile=r, vec=vec, subgroups=sg,
                    dims=(("h", hidden), ("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim),
                          ("g", group_size), ("kv", 16 if kv == "f16" else 32))
                    + ((("s", sum(1 << SECTIONS.index(h) for h in heads)),) if heads != "qkv" else ())
                    + extra)
    kv_ty = "u32" if kv == "f16" else "f32"
    kv_doc = f"(max_ctx, n_kv_heads, head_dim) {kv}" + (" packed 2 per u32" if kv == "f16" else "")
    binds = [(Binding("x", "read", "(n_tok = 1, hidden) f32" + (" as vec4" if xvec == 4 else "")),
              "vec4<f32>" if xvec == 4 else "f32")]
    if norm_eps:
        binds.append(norm_binding(xvec))
    for h in heads:
        binds += weight_bindings(fmt, f"w{h}_", vec, "n_heads*head_dim" if h == "q"
                                 else "n_kv_heads*head_dim", "hidden")
    if set(heads) & {"q", "k"}:
        binds.append((Binding("inv_freq", "read", "(head_dim/2) f32"), "f32"))
    if "q" in heads:
        binds.append((Binding("q", "read_write", "(n_tok = 1, n_heads*head_dim) f32"), "f32"))
    binds += [(Binding(f"{h}_cache", "read_write", kv_doc), kv_ty) for h in "kv" if h in heads]
    binds.append((Binding("params", "uniform", "Params{n_tok, pos}"), "Params"))
    decls, bindings = binding_decls(binds)
    nrm = norm_parts(hidden, xvec, vec * EPW[fmt], norm_eps, r) if norm_eps else None
    nacc = r + (1 if nrm else 0)
    xlines, xs = x_chunk(fmt, vec, mask, i8, nrm)
    rows_decl = [f"    let rr{i} = base + {i}u;" for i in range(r // 2)]
    rows_decl += [f"    let rr{i} = base + off2 + {i - r // 2}u;" for i in range(r // 2, r)]
    src = render(load_template("qkv_decode"), {
        "ENABLES": enables(False, sg), "FMT": fmt, "HEADS": heads,
        "REDUCTION": "subgroupAdd" if sg else "shared-memory tree",
        "PARAMS": PARAMS.wgsl(), "BINDINGS": decls,
        "COLS": hidden, "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": hidden // group_size if fmt in QUANTIZED else 1, "WPR": wpr, "VEC": vec,
        "NCH": nch, "CE": vec * EPW[fmt], "WG": wg, "R": r, "GX": gx, "UNITS": units,
        "N_HEADS": n_heads, "N_KV": n_kv_heads, "HEAD_DIM": head_dim,
        "XFNS": nrm["FNS"] if nrm else x_fns(hidden, xvec), "NACC": nacc,
        "WFNS": "".join(weight_fns(fmt, f"w{h}_", vec) for h in heads) + (PK8_WGSL if i8 else ""),
        "REDVARS": reduce_template(sg, bool(nrm)),
        "ROPE_FN": ROPE_FN if set(heads) & {"q", "k"} else "",
        "KV_STORE": kv_store(kv, heads),
        "SGARGS": (",\n        @builtin(subgroup_invocation_id) sg_lane: u32,"
                   "\n        @builtin(subgroup_size) sg_size: u32") if sg else "",
        "UNIT": _unit(heads, sizes), "ROWS_DECL": "\n".join(rows_decl),
        "ACC_DECL": "\n".join(f"    var acc{i} = 0.0;" for i in range(nacc)),
        "XLOAD": "\n".join(" " * 8 + ln for ln in xlines),
        "ACCUM": "\n".join(" " * 8 + ln for ln in _accum(fmt, heads, vec, r, xs, mask, i8)),
        "REDUCE": "\n".join("    " + ln for ln in _reduce(nacc, sg) +
                             ([nrm["AFTER"]] if nrm else [])),
        "EPILOGUE": _epilogue(heads)}, slug=key.slug())

    def grid(n_tok=1, **_):
        if n_tok != 1:
            raise UnsupportedKernel(f"{OP}: decode kernel got n_tok={n_tok}; it computes one "
                                    f"token (prefill: matmul + rope_append)")
        return (gx, gy, 1)

    meta = {"grid": grid, "rows_per_wg": r}
    if i8:   # a WGSL language feature, not a device feature (as matvec's)
        meta["language_features"] = ("packed_4x8_integer_dot_product",)
    return Kernel(key=key, wgsl=src, bindings=bindings, params=PARAMS, workgroup_size=(wg, 1, 1),
                  features=("subgroups",) if sg else (), meta=meta)


# ---- numpy reference ----
def ref_qkv_rope(x, wq, wk, wv, inv_freq, n_heads, n_kv_heads, head_dim, pos):
    """x (n_tok, hidden); w* dequantized (rows, hidden) -> (q, k, v) float64, q/k roped."""
    import numpy as np

    from .rope import ref_rope
    x = np.asarray(x, np.float64)
    q = ref_rope(x @ np.asarray(wq, np.float64).T, n_heads, head_dim, pos, inv_freq)
    k = ref_rope(x @ np.asarray(wk, np.float64).T, n_kv_heads, head_dim, pos, inv_freq)
    v = x @ np.asarray(wv, np.float64).T
    return q, k, v


# ---- check cases ----
def _case(fmt, hidden, n_heads, n_kv_heads, head_dim, kv, pos, scaled=True, group_size=32,
          heads="qkv", split=(), unpack=None, norm=False) -> Case:
    """One token at ``pos`` through the ``heads`` kernel (only its outputs compared), or with
    ``split`` the kernels of ``split`` in order on the same buffers (the driver's split)."""
    dims = dict(fmt=fmt, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads,
                head_dim=head_dim, group_size=group_size, kv=kv)
    if split or heads != "qkv":   # a split case is reported (and refused) by its first kernel
        dims["heads"] = split[0] if split else heads
    if unpack is not None:
        dims["unpack"] = unpack
    if norm:   # the fused RMSNorm: x un-normed, norm_w bound (the driver's decode path)
        dims["norm_eps"] = NORM_EPS_CASE
    max_ctx = pos + 3   # rows after pos must stay untouched

    def make(rng):
        import numpy as np

        from .harness import weight_parts
        from .rope import case_inv_freq
        bufs, ws = {}, {}
        for nm, rows in (("wq", n_heads * head_dim), ("wk", n_kv_heads * head_dim),
                         ("wv", n_kv_heads * head_dim)):
            b, ws[nm] = weight_parts(rng, fmt, rows, hidden, group_size, prefix=nm + "_")
            bufs.update(b)
        x, extra = case_norm_input(rng, hidden, norm)   # (1, hidden), norm_w when fused
        bufs.update(extra)
        dt = np.float16 if kv == "f16" else np.float32
        kc = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)  # old contents
        vc = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)
        inv = np.asarray(case_inv_freq(head_dim, scaled), np.float32)         # (head_dim/2)
        bufs.update(x=x, inv_freq=inv, q=n_heads * head_dim * 4, k_cache=kc, v_cache=vc)
        return {"buffers": bufs, "params": {"n_tok": 1, "pos": pos}, "grid": {"n_tok": 1}, **ws}

    def ref(inp):
        import numpy as np
        b = inp["buffers"]
        q, k, v = ref_qkv_rope(ref_normed(b["x"], b), inp["wq"], inp["wk"], inp["wv"],
                               b["inv_freq"], n_heads, n_kv_heads, head_dim, pos)
        kc, vc = b["k_cache"].copy(), b["v_cache"].copy()
        kc[pos] = k.reshape(n_kv_heads, head_dim)
        vc[pos] = v.reshape(n_kv_heads, head_dim)
        out = {"q": q.astype(np.float32), "k_cache": kc, "v_cache": vc}
        done = "".join(split) or heads
        return {n: a for n, a in out.items() if n[0] in done}

    steps = None
    if split:
        def steps(caps, inp):
            from . import kernel
            ks = [kernel(OP, caps, **{**dims, "heads": h}) for h in split]
            return [(k, inp["params"], k.meta["grid"](**inp["grid"])) for k in ks]

    u = DECODE_UNPACK.get(fmt, 0) if unpack is None else unpack
    tol = decode_tol(fmt, u, "dot_f32")
    if kv == "f16" and tol in ("dot_f32", "dot_i16x"):
        # one f16 rounding of K/V (2^-11) on top: qkv_kv_f16 bounds both (rtol 1e-3 against
        # dot_i16x's measured <= 3e-4 plus 2.4e-4; NMSE 2e-7 against ~1e-8 plus ~8e-8)
        tol = "qkv_kv_f16"
    what = f"split {'+'.join(split)}" if split else ("" if heads == "qkv" else f"heads={heads}")
    return Case(op=OP, dims=dims, make_inputs=make, reference=ref, steps=steps, tol=tol,
                label=f"{fmt} h={hidden} nh={n_heads} nkv={n_kv_heads} hd={head_dim} {kv} "
                      f"pos={pos}" + (f" {what}" if what else "")
                      + (f" u{unpack}" if unpack is not None else "") + (" norm" if norm else ""))


@register_cases(OP)
def qkv_decode_cases(quick: bool) -> list[Case]:
    # every format, kv f16 / f32, every heads value and the driver's splits, GQA 1 / 3 / 4 / 8,
    # head_dim 16 / 32 / 64 / 128 (and 8, 4: R = 8 and R = 4 at the smallest), pos 0 and large
    out = [_case("q4_0", 128, 4, 1, 64, "f16", 5),
           _case("q4_0", 256, 8, 1, 32, "f32", 0),
           _case("q4_0", 64, 6, 2, 16, "f16", 70000),
           _case("q4_1", 96, 3, 3, 64, "f32", 0),
           _case("q4_1", 64, 4, 1, 16, "f16", 65000, scaled=False),
           _case("q8_0", 64, 2, 1, 128, "f16", 17, scaled=False),
           _case("q8_0", 128, 8, 1, 32, "f32", 100000),
           _case("f16", 72, 4, 2, 64, "f16", 2),
           _case("f16", 6, 3, 1, 16, "f32", 9),
           _case("f32", 36, 8, 1, 64, "f32", 0),
           _case("f32", 5, 3, 3, 32, "f16", 40000),
           _case("q4_0", 64, 4, 4, 8, "f16", 3), _case("q4_0", 64, 2, 1, 4, "f32", 1),
           # heads subsets (caps.max_storage_buffers below the fused kernel's count)
           _case("q4_0", 64, 4, 2, 64, "f16", 3, heads="q"),
           _case("q8_0", 64, 2, 1, 64, "f16", 7, heads="kv"),
           _case("q4_1", 64, 2, 2, 64, "f32", 1, heads="k"),
           _case("q4_1", 64, 4, 2, 32, "f16", 0, heads="v"),
           _case("f32", 64, 4, 2, 64, "f32", 2, heads="qk"),
           _case("q4_0", 64, 4, 2, 16, "f16", 50000, heads="qv"),
           _case("q4_1", 96, 6, 2, 64, "f16", 9, split=("q", "k", "v")),
           _case("q4_0", 128, 8, 2, 32, "f16", 3000, split=("q", "kv")),
           # the exact fallback where the default is int8 x (no packed_4x8_integer_dot_product)
           _case("q4_0", 128, 4, 1, 32, "f16", 4, unpack=0),
           # the fused RMSNorm of the residual stream (the driver's decode path)
           _case("q4_0", 128, 4, 1, 64, "f16", 5, norm=True),
           _case("q4_1", 96, 3, 3, 64, "f32", 0, norm=True),
           _case("q8_0", 64, 2, 1, 128, "f16", 17, norm=True),
           _case("f16", 72, 4, 2, 64, "f16", 2, norm=True),
           _case("f32", 5, 3, 3, 32, "f16", 40, norm=True),
           _case("q4_1", 96, 6, 2, 64, "f16", 9, split=("q", "k", "v"), norm=True)]
    if not quick:
        out += [_case("q4_0", 4096, 32, 8, 128, "f16", 4095),          # Llama-3-8B layer
                _case("q4_0", 2048, 32, 8, 64, "f32", 65000),   # Llama-3.2-1B layer (cache < 128 MiB)
                _case("q4_1", 576, 9, 3, 64, "f16", 100),               # SmolLM2-135M layer
                _case("q8_0", 512, 8, 2, 128, "f16", 30),
                _case("f16", 256, 4, 4, 128, "f32", 1),
                _case("f16", 2048, 32, 8, 64, "f16", 8191),
                _case("q4_1", 576, 9, 3, 64, "f16", 40, split=("q", "kv")),
                _case("q4_0", 512, 16, 2, 64, "f16", 7, split=("q", "k", "v")),
                _case("q4_0", 512, 8, 2, 64, "f16", 7, unpack=2),
                _case("q4_1", 512, 8, 2, 64, "f32", 7, unpack=3),
                _case("q4_0", 512, 8, 2, 64, "f16", 7, unpack=1)]
    return out
