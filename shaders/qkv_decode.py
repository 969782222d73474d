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
the same weight unpacking per format (``decode_loop.DECODE_UNPACK``: q4_0 and the K-quants int8 x
+ residual with dot4I8Packed, the others exact f32). A Q / K workgroup owns P rotate-half pairs (rows j .. j+P-1
and their partners j+HALF ..) of one head, so RoPE and the packed f16 K words need no other
workgroup.

Pure Python (runs in Pyodide); numpy only inside the check-case functions.
"""

from __future__ import annotations

from modelfmt.formats import PART_NAMES

from dataclasses import dataclass

from .core import Binding, Caps, Grid, Kernel, KernelKey, UnsupportedKernel
from .decode_loop import (DECODE_UNPACK, NORM_EPS_CASE, DecodeLoop, case_norm_input, decode_tol,
                          ref_normed)
from .registry import Case, register, register_cases
from .rope import PARAMS, ROPE_FN
from .wgsl_common import SCALED, binding_decls, check_weight, fold_grid, kv_store, weight_bindings

OP = "qkv_rope_decode"


SECTIONS = "qkv"          # section index 0 = Q, 1 = K, 2 = V (the template's ``sect``)
HEADS = ("qkv", "q", "kv", "k", "v", "qk", "qv")
SPLITS = (("qkv",), ("q", "kv"), ("q", "k", "v"))   # fewest dispatches first


def storage_buffers(fmt: str, heads: str = "qkv") -> int:
    """Storage buffers the kernel of ``heads`` binds: x, the weights' parts, inv_freq (q or k),
    and one output per projection (q, k_cache, v_cache)."""
    return 1 + len(PART_NAMES[fmt]) * len(heads) + (1 if set(heads) & {"q", "k"} else 0) + len(heads)


def qkv_split(caps: Caps, fmt: str, heads: str = "qkv") -> list[str]:
    """The ``heads`` of each qkv_rope_decode dispatch of a layer: the fewest that all fit
    ``caps.max_storage_buffers`` (["qkv"] where the fused kernel does). ``heads``: only these
    projections (a layer whose wq, wk, wv have different formats, e.g. a Q4_K_M file's Q6_K
    attn_v, runs one group per format: driver.graph)."""
    for split in SPLITS:
        parts = [g for g in ("".join(c for c in s if c in heads) for s in split) if g]
        if all(storage_buffers(fmt, h) <= caps.max_storage_buffers for h in parts):
            return parts
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


def _accum(lp: DecodeLoop, heads: str, r: int, xs: list[str]) -> list[str]:
    """WGSL: the R unrolled dot statements of one chunk, per section of ``heads`` behind a
    workgroup-uniform ``sect`` branch (one weight per workgroup)."""
    out = []
    for n, h in enumerate(heads):
        if len(heads) > 1:
            k = SECTIONS.index(h)
            out.append("if (sect == %du) {" % k if n == 0 else
                       "} else {" if n == len(heads) - 1 else "} else if (sect == %du) {" % k)
        pad = "    " if len(heads) > 1 else ""
        out += [pad + ln for i in range(r) for ln in lp.accum(f"acc{i}", f"w{h}_", f"rr{i}", xs,
                                                              str(i))]
    if len(heads) > 1:
        out.append("}")
    return out


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


@dataclass(frozen=True)
class QkvDecodeSpec:
    """The dims of one qkv_rope_decode kernel (``kernel(OP, caps, **dims)`` builds it from them).
    ``wg`` / ``r`` / ``unpack`` override the workgroup size / rows per workgroup (a multiple of 4
    whose half divides head_dim/2) / weight unpacking, as matvec's (benchmarks only);
    ``norm_eps`` > 0: x is the un-normed residual and ``norm_w`` (bound after x) the RMSNorm
    weight, applied in the kernel (``decode_loop.norm_parts``)."""

    fmt: str
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    group_size: int = 32
    kv: str = "f16"
    heads: str = "qkv"
    wg: int = 0
    r: int = 0
    unpack: int | None = None
    norm_eps: float = 0.0
    xq: int = 0

    def __post_init__(self):
        if self.heads not in HEADS:
            raise UnsupportedKernel(f"{OP}: heads must be one of {', '.join(HEADS)}, "
                                    f"got {self.heads!r}")
        if self.kv not in ("f16", "f32"):
            raise UnsupportedKernel(f"{OP}: kv must be 'f16' or 'f32', got {self.kv!r}")
        if (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads or self.head_dim % 4
                or self.head_dim <= 0):
            raise UnsupportedKernel(f"{OP}: need n_heads % n_kv_heads == 0 and head_dim % 4 == 0, "
                                    f"got {self.n_heads}, {self.n_kv_heads}, {self.head_dim}")
        for rows in (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim):
            check_weight(OP, self.fmt, rows, self.hidden, self.group_size)


def _bindings(s: QkvDecodeSpec, lp: DecodeLoop) -> list:
    """[(Binding, type)]: x [, norm_w], the weights of ``heads``, inv_freq (with q or k), q (with
    q), the caches of k / v, params."""
    kv_ty = "u32" if s.kv == "f16" else "f32"
    kv_doc = f"(max_ctx, n_kv_heads, head_dim) {s.kv}" + (" packed 2 per u32" if s.kv == "f16"
                                                           else "")
    binds = lp.x_binding("(n_tok = 1, hidden) f32", s.norm_eps)
    for h in s.heads:
        binds += weight_bindings(s.fmt, f"w{h}_", lp.vec, "n_heads*head_dim" if h == "q"
                                 else "n_kv_heads*head_dim", "hidden")
    if set(s.heads) & {"q", "k"}:
        binds.append((Binding("inv_freq", "read", "(head_dim/2) f32"), "f32"))
    if "q" in s.heads:
        binds.append((Binding("q", "read_write", "(n_tok = 1, n_heads*head_dim) f32"), "f32"))
    binds += [(Binding(f"{h}_cache", "read_write", kv_doc), kv_ty) for h in "kv" if h in s.heads]
    return binds + [(Binding("params", "uniform", "Params{n_tok, pos}"), "Params")]


@register(OP)
def build_qkv_rope_decode(caps: Caps, **dims) -> Kernel:
    """The kernel of ``QkvDecodeSpec(**dims)`` for ``caps``."""
    s = QkvDecodeSpec(**dims)
    half = s.head_dim // 2
    lp = DecodeLoop.plan(caps, s.fmt, s.hidden, s.group_size, s.unpack, s.wg, s.xq)
    # rows per workgroup: matvec's 8 for q formats (x chunk and its int8 quantization shared by
    # more rows); f16/f32 matvec measured best at 1 row, but a workgroup here needs 2 pairs (4
    # rows) so that the packed f16 K/V words are whole
    r = s.r or (8 if s.fmt in SCALED and half % 4 == 0 and not lp.xq else 4)   # xq: as matvec
    if r % 4 or half % (r // 2):
        raise UnsupportedKernel(f"{OP}: r={r} rows per workgroup: need a multiple of 4 whose "
                                f"half divides head_dim/2 = {half}")
    nacc = r + (1 if s.norm_eps else 0)   # partial sums per thread (+ the fused norm's)
    while lp.wg > 32 and lp.red_bytes(nacc) > caps.max_workgroup_storage:
        lp = lp.with_wg(lp.wg // 2)   # keep the reduction within the workgroup storage limit
    if lp.red_bytes(nacc) > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"{OP}: reduction of {r} rows exceeds the workgroup storage")
    qd, kvd = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    sizes = {"q": qd // r, "k": kvd // r, "v": kvd // r}   # workgroups per section
    units = sum(sizes[h] for h in s.heads)
    gx, gy = fold_grid(units)
    if gy > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{OP}: {units} workgroups exceed the grid limit")
    key = KernelKey(op=OP, fmt=s.fmt, wg=lp.wg, tile=r, vec=lp.vec, subgroups=lp.sg,
                    dims=(("h", s.hidden), ("nh", s.n_heads), ("nkv", s.n_kv_heads),
                          ("hd", s.head_dim), ("g", s.group_size), ("kv", 16 if s.kv == "f16" else 32))
                    + ((("s", sum(1 << SECTIONS.index(h) for h in s.heads)),)
                       if s.heads != "qkv" else ())
                    + lp.key_dims(s.norm_eps))
    decls, bindings = binding_decls(_bindings(s, lp))
    nrm = lp.norm(s.norm_eps, r)
    xlines, xs = lp.x_lines(nrm)
    rows_decl = [f"    let rr{i} = base + {i}u;" for i in range(r // 2)]
    rows_decl += [f"    let rr{i} = base + off2 + {i - r // 2}u;" for i in range(r // 2, r)]
    src = lp.render("qkv_decode", key.slug(), prefixes=[f"w{h}_" for h in s.heads], r=r,
                    nacc=nacc, nrm=nrm, accum=_accum(lp, s.heads, r, xs), xs_lines=xlines,
                    subs={"FMT": s.fmt, "HEADS": s.heads, "PARAMS": PARAMS.wgsl(),
                          "BINDINGS": decls, "GX": gx, "UNITS": units, "N_HEADS": s.n_heads,
                          "N_KV": s.n_kv_heads, "HEAD_DIM": s.head_dim,
                          "ROPE_FN": ROPE_FN if set(s.heads) & {"q", "k"} else "",
                          "KV_STORE": kv_store(s.kv, s.heads), "UNIT": _unit(s.heads, sizes),
                          "ROWS_DECL": "\n".join(rows_decl), "EPILOGUE": _epilogue(s.heads)})

    def grid(n_tok=1):
        if n_tok != 1:
            raise UnsupportedKernel(f"{OP}: decode kernel got n_tok={n_tok}; it computes one "
                                    f"token (prefill: matmul + rope_append)")
        return (gx, gy, 1)

    return Kernel(key=key, wgsl=src, bindings=bindings, params=PARAMS,
                  workgroup_size=(lp.wg, 1, 1), features=("subgroups",) if lp.sg else (),
                  grid=Grid(grid, ("n_tok",)), meta={"rows_per_wg": r, **lp.meta()})


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
            return [(k, inp["params"], k.grid(**inp["grid"])) for k in ks]

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
