"""Fused QKV projection + RoPE + KV-cache append: one dispatch per layer and token block.

    kernel("qkv_rope", caps, fmt, hidden, n_heads, n_kv_heads, head_dim, group_size=32, kv="f16",
           heads="qkv")
      bindings: x (n_tok, hidden) f32 | wq_<parts> (n_heads*hd, hidden) | wk_<parts> (n_kv*hd,
                hidden) | wv_<parts> (n_kv*hd, hidden) | inv_freq (hd/2) f32 | q (n_tok, n_heads*hd)
                f32 rw | k_cache, v_cache (max_ctx, n_kv, hd) f16-packed or f32 rw | params
      params {n_tok, pos}; grid(n_tok=) -> ((n_heads + 2*n_kv) * hd / 4, ceil(n_tok / 4), 1)
      q[t] = rope(x[t] Wq^T, pos + t); k_cache[pos + t] = rope(x[t] Wk^T, pos + t);
      v_cache[pos + t] = x[t] Wv^T  (rotate-half RoPE, HF layout; inv_freq from
      ModelConfig.rope_inv_freq(), llama3-scaled or plain)

``heads`` ("qkv", "q", "kv", "k", "v", "qk", "qv") selects the projections of one dispatch: the
bindings (and grid units) of the others are left out, inv_freq too when neither q nor k is
computed. Why: the fused kernel binds 8 storage buffers for f32/f16, 11 for q4_0/q8_0 and 14 for
q4_1, above WebGPU's default maxStorageBuffersPerShaderStage of 8 (SwiftShader: 10).
``qkv_split(caps, fmt)`` gives the fewest dispatches that fit ``caps.max_storage_buffers``
(["qkv"], ["q", "kv"] or ["q", "k", "v"]); each keeps RoPE and the KV append fused.

Where the driver uses what (measured on an H200, docs/PERFORMANCE.md): decode runs
``qkv_rope_decode`` (the same bindings on matvec's M = 1 loop, 6.6x faster at M = 1), prefill runs
three tiled matmuls + ``rope_append`` (this kernel's token blocking re-reads the weights per 4
tokens: 63 % of an 8B prefill). This op stays the general any-n_tok reference of the fusion and
the source of the split rules, bindings and epilogue both others share.

Why fused, and why this shape: a decode step runs it once per layer instead of four dispatches
(three matvecs + a rope/append pass, ~5 us each on an H200, see shared/notes/device-gpu.md), and
the RoPE'd K goes straight into the packed f16 cache. One workgroup owns 4 output rows chosen so
that both RoPE partners (j, j + hd/2) and both halves of each packed f16 word are computed by it.
The weight reading is matvec's own (``shaders.matvec`` helpers and matvec_dot_*.wgsl), so the
dequantisation exists once. For prefill (n_tok > 1) the grid gains a token axis: a workgroup
handles TT = 4 tokens, so each weight chunk comes from memory once per 4 tokens (the re-reads hit
cache); not a tiled matmul, but the QKV share of prefill FLOPs is ~1/8 of a layer's. Decode
(n_tok = 1) skips the other token slots (a workgroup-uniform branch).
"""

from __future__ import annotations

from modelfmt.formats import QUANTIZED

from . import tolerances
from .core import Binding, Caps, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .matvec import (EPW, binding_decls, check_weight, enables, pick_vec, pow2_at_least,
                     weight_bindings, weight_fns, words_per_row)
from .registry import Case, register, register_cases
from .rope import ROPE_FN

PARAMS = Params((("n_tok", "u32"), ("pos", "u32")))
TT = 4   # tokens per workgroup in prefill: each weight chunk is fetched once per 4 tokens


SECTIONS = "qkv"          # section index 0 = Q, 1 = K, 2 = V (the template's ``sect``)
HEADS = ("qkv", "q", "kv", "k", "v", "qk", "qv")
SPLITS = (("qkv",), ("q", "kv"), ("q", "k", "v"))   # fewest dispatches first


def storage_buffers(fmt: str, heads: str = "qkv") -> int:
    """Storage buffers the kernel of ``heads`` binds: x, the weights' parts, inv_freq (q or k),
    and one output per projection (q, k_cache, v_cache)."""
    from modelfmt.formats import PART_NAMES
    return 1 + len(PART_NAMES[fmt]) * len(heads) + (1 if set(heads) & {"q", "k"} else 0) + len(heads)


def qkv_split(caps: Caps, fmt: str) -> list[str]:
    """The ``heads`` of each qkv_rope dispatch of a layer: the fewest that all fit
    ``caps.max_storage_buffers`` (["qkv"] where the fused kernel does)."""
    for split in SPLITS:
        if all(storage_buffers(fmt, h) <= caps.max_storage_buffers for h in split):
            return list(split)
    raise UnsupportedKernel(f"qkv_rope: even one projection per dispatch binds "
                            f"{max(storage_buffers(fmt, h) for h in SPLITS[-1])} storage buffers "
                            f"({fmt}); this GPU allows {caps.max_storage_buffers}")


def _dots(tt: int, secs: str) -> tuple[str, str, str]:
    """(accumulator declarations, the unrolled dot statements of one chunk, accumulator list)."""
    decl = "".join(f"    var a{t}_{r} = 0.0;\n" for t in range(tt) for r in range(4))
    body = ""
    for t in range(tt):
        body += f"        if (cnt > {t}u) {{\n            xoff = (t0 + {t}u) * (COLS / XV);\n"
        for i, h in enumerate(secs):
            k = SECTIONS.index(h)
            if len(secs) == 1:
                kw = "{"
            else:
                kw = ("if" if i == 0 else "} else" if i == len(secs) - 1 else "} else if")
                kw += f" (sect == {k}u) {{" if i < len(secs) - 1 else " {"
            body += (f"            {kw}\n"
                     + "".join(f"                a{t}_{r} += w{h}_dot(rows.{'xyzw'[r]}, ch);\n"
                               for r in range(4)))
        body += "            }\n        }\n"
    lst = ", ".join(f"a{t}_{r}" for t in range(tt) for r in range(4))
    return decl.rstrip("\n"), body.rstrip("\n"), lst


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


def _epilogue(secs: str) -> str:
    """WGSL: store the 4 rows ``a`` of token t (position p) of this unit's section."""
    out = ""
    v_store = ("        store_kv(1u, p * KVD + 4u * v, a.xy);\n"
               "        store_kv(1u, p * KVD + 4u * v + 2u, a.zw);\n")
    if "v" in secs:
        if secs == "v":
            return v_store.rstrip("\n")
        out += "        if (sect == 2u) {\n    " + v_store.replace("\n        ", "\n            ")
        out += "            return;\n        }\n"
    out += ("        let r0 = rope_rotate(a.xz, rope_cs(p, inv_freq[j]));        // (row j, row j + HALF)\n"
            "        let r1 = rope_rotate(a.yw, rope_cs(p, inv_freq[j + 1u]));   // (row j + 1, row j + 1 + HALF)\n")
    q_store = ("            let o = t * QD + h * HD + j;\n"
               "            q[o] = r0.x;\n            q[o + 1u] = r1.x;\n"
               "            q[o + HALF] = r0.y;\n            q[o + HALF + 1u] = r1.y;\n")
    k_store = ("            let o = p * KVD + h * HD + j;\n"
               "            store_kv(0u, o, vec2<f32>(r0.x, r1.x));\n"
               "            store_kv(0u, o + HALF, vec2<f32>(r0.y, r1.y));\n")
    if "q" in secs and "k" in secs:
        out += "        if (sect == 0u) {\n" + q_store + "        } else {\n" + k_store + "        }"
    else:
        body = q_store if "q" in secs else k_store
        out += "        {\n" + body + "        }"
    return out


def _x_fns(xvec: int) -> str:
    """x4(i) / x1(c) over the current token's row of x (``xoff``, in XV-wide elements)."""
    if xvec == 4:
        return ("const XV: u32 = 4u;\n"
                "fn x4(i: u32) -> vec4<f32> { return x[xoff + i]; }\n"
                "fn x1(c: u32) -> f32 { return x[xoff + (c >> 2u)][c & 3u]; }\n")
    return ("const XV: u32 = 1u;\n"
            "fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x[xoff + 4u * i], x[xoff + 4u * i + 1u],"
            " x[xoff + 4u * i + 2u], x[xoff + 4u * i + 3u]); }\n"
            "fn x1(c: u32) -> f32 { return x[xoff + c]; }\n")


def _kv_store(kv: str, secs: str) -> str:
    """store_kv(which 0 = k / 1 = v, even element index e, (value e, value e + 1)), over the
    caches this kernel binds ('' when it binds none)."""
    if kv == "f16":
        put = {"k": "k_cache[e / 2u] = pack2x16float(val);",
               "v": "v_cache[e / 2u] = pack2x16float(val);"}
    else:
        put = {"k": "k_cache[e] = val.x; k_cache[e + 1u] = val.y;",
               "v": "v_cache[e] = val.x; v_cache[e + 1u] = val.y;"}
    have = [h for h in "kv" if h in secs]
    if not have:
        return ""
    if len(have) == 1:
        body = f"    {put[have[0]]}\n"
    else:
        body = f"    if (which == 0u) {{ {put['k']} }}\n    else {{ {put['v']} }}\n"
    return f"\nfn store_kv(which: u32, e: u32, val: vec2<f32>) {{\n{body}}}\n"


@register("qkv_rope")
def build_qkv_rope(caps: Caps, fmt: str, hidden: int, n_heads: int, n_kv_heads: int,
                   head_dim: int, group_size: int = 32, kv: str = "f16",
                   heads: str = "qkv") -> Kernel:
    op = "qkv_rope"
    if heads not in HEADS:
        raise UnsupportedKernel(f"{op}: heads must be one of {', '.join(HEADS)}, got {heads!r}")
    if kv not in ("f16", "f32"):
        raise UnsupportedKernel(f"{op}: kv must be 'f16' or 'f32', got {kv!r}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads or head_dim % 4 or head_dim <= 0:
        raise UnsupportedKernel(f"{op}: need n_heads % n_kv_heads == 0 and head_dim % 4 == 0, "
                                f"got {n_heads}, {n_kv_heads}, {head_dim}")
    qd, kvd = n_heads * head_dim, n_kv_heads * head_dim
    for rows in (qd, kvd):
        check_weight(op, fmt, rows, hidden, group_size)
    vec = pick_vec(fmt, hidden, group_size)
    xvec = 4 if hidden % 4 == 0 else 1
    wpr = words_per_row(fmt, hidden)
    nch = wpr // vec
    cap = min(128, caps.max_workgroup_size)   # the (16, WG) f32 tree of the fallback: 8 KiB
    wg = min(max(32, pow2_at_least(nch)), cap)
    wg = 1 << (wg.bit_length() - 1)   # a power of two (tree reduction)
    sg = caps.subgroups
    sizes = {"q": qd // 4, "k": kvd // 4, "v": kvd // 4}   # 4-row units per section
    units = sum(sizes[h] for h in heads)
    if units > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{op}: {units} row units exceed the grid limit")
    key = KernelKey(op=op, fmt=fmt, wg=wg, tile=4, vec=vec, subgroups=sg,
                    dims=(("h", hidden), ("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim),
                          ("g", group_size), ("kv", 16 if kv == "f16" else 32))
                    + ((("s", sum(1 << SECTIONS.index(h) for h in heads)),) if heads != "qkv" else ()))
    kv_ty = "u32" if kv == "f16" else "f32"
    kv_doc = f"(max_ctx, n_kv_heads, head_dim) {kv}" + (" packed 2 per u32" if kv == "f16" else "")
    binds = [(Binding("x", "read", "(n_tok, hidden) f32" + (" as vec4" if xvec == 4 else "")),
              "vec4<f32>" if xvec == 4 else "f32")]
    for h in heads:
        binds += weight_bindings(fmt, f"w{h}_", vec, "n_heads*head_dim" if h == "q"
                                 else "n_kv_heads*head_dim", "hidden")
    if set(heads) & {"q", "k"}:
        binds.append((Binding("inv_freq", "read", "(head_dim/2) f32"), "f32"))
    if "q" in heads:
        binds.append((Binding("q", "read_write", "(n_tok, n_heads*head_dim) f32"), "f32"))
    binds += [(Binding(f"{h}_cache", "read_write", kv_doc), kv_ty) for h in "kv" if h in heads]
    binds.append((Binding("params", "uniform", "Params{n_tok, pos}"), "Params"))
    decls, bindings = binding_decls(binds)
    acc_decl, dots, acc_list = _dots(TT, heads)
    src = render(load_template("qkv"), {
        "ENABLES": enables(False, sg), "FMT": fmt, "PARAMS": PARAMS.wgsl(), "BINDINGS": decls,
        "COLS": hidden, "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": hidden // group_size if fmt in QUANTIZED else 1, "WPR": wpr, "VEC": vec,
        "NCH": nch, "CE": vec * EPW[fmt], "WG": wg, "N_HEADS": n_heads, "N_KV": n_kv_heads,
        "HEAD_DIM": head_dim, "XFNS": _x_fns(xvec), "TT": TT,
        "ACC_DECL": acc_decl, "DOTS": dots, "ACC_LIST": acc_list,
        "WFNS": "".join(weight_fns(fmt, f"w{h}_", vec, dot=True) for h in heads),
        "REDUCE": load_template("matvec_reduce_sg" if sg else "matvec_reduce_wg"),
        "ROPE_FN": ROPE_FN, "KV_STORE": _kv_store(kv, heads), "HEADS": heads,
        "UNIT": _unit(heads, sizes), "EPILOGUE": _epilogue(heads),
        "SGARGS": (",\n        @builtin(subgroup_invocation_id) sg_lane: u32,"
                   "\n        @builtin(subgroup_size) sg_size: u32") if sg else "",
        "SGCALL": ", sg_lane, sg_size" if sg else ""}, slug=key.slug())
    return Kernel(key=key, wgsl=src, bindings=bindings, params=PARAMS, workgroup_size=(wg, 1, 1),
                  features=("subgroups",) if sg else (),
                  meta={"grid": lambda n_tok=1, **_: (units, -(-n_tok // TT), 1)})


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
def _case(fmt, hidden, n_heads, n_kv_heads, head_dim, kv, n_tok, pos, scaled=True,
          group_size=32, heads="qkv", split=()) -> Case:
    """One check of the ``heads`` kernel (only its outputs compared; the other outputs' bindings
    do not exist), or with ``split`` the dispatches ``split`` in order on the same buffers."""
    dims = dict(fmt=fmt, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads,
                head_dim=head_dim, group_size=group_size, kv=kv)
    if split or heads != "qkv":   # a split case is reported (and refused) by its first kernel
        dims["heads"] = split[0] if split else heads
    max_ctx = pos + n_tok + 2

    def make(rng):
        import numpy as np

        from .harness import weight_parts
        from .rope import case_inv_freq
        bufs = {}
        ws = {}
        for nm, rows in (("wq", n_heads * head_dim), ("wk", n_kv_heads * head_dim),
                         ("wv", n_kv_heads * head_dim)):
            b, ws[nm] = weight_parts(rng, fmt, rows, hidden, group_size, prefix=nm + "_")
            bufs.update(b)
        x = (rng.standard_normal((n_tok, hidden)) / np.sqrt(hidden)).astype(np.float32)
        dt = np.float16 if kv == "f16" else np.float32
        kc = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)  # old contents
        vc = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)
        inv = np.asarray(case_inv_freq(head_dim, scaled), np.float32)
        bufs.update(x=x, inv_freq=inv, q=n_tok * n_heads * head_dim * 4, k_cache=kc, v_cache=vc)
        return {"buffers": bufs, "params": {"n_tok": n_tok, "pos": pos},
                "grid": {"n_tok": n_tok}, **ws}

    def ref(inp):
        import numpy as np
        b = inp["buffers"]
        q, k, v = ref_qkv_rope(b["x"], inp["wq"], inp["wk"], inp["wv"], b["inv_freq"],
                               n_heads, n_kv_heads, head_dim, pos)
        kc, vc = b["k_cache"].copy(), b["v_cache"].copy()
        kc[pos:pos + n_tok] = k.reshape(n_tok, n_kv_heads, head_dim)
        vc[pos:pos + n_tok] = v.reshape(n_tok, n_kv_heads, head_dim)
        out = {"q": q.astype(np.float32), "k_cache": kc, "v_cache": vc}
        done = "".join(split) or heads
        return {n: a for n, a in out.items() if n[0] in done}

    steps = None
    if split:
        def steps(caps, inp):
            ks = [kernel_of(caps, h) for h in split]
            return [(k, inp["params"], k.meta["grid"](**inp["grid"])) for k in ks]

        def kernel_of(caps, h):
            from . import kernel
            return kernel("qkv_rope", caps, **{**dims, "heads": h})

    what = f"split {'+'.join(split)}" if split else ("" if heads == "qkv" else f"heads={heads}")
    return Case(op="qkv_rope", dims=dims, make_inputs=make, reference=ref, steps=steps,
                tol="qkv_kv_f16" if kv == "f16" else "dot_f32",
                label=f"{fmt} h={hidden} nh={n_heads} nkv={n_kv_heads} hd={head_dim} {kv} "
                      f"n_tok={n_tok} pos={pos}" + (f" {what}" if what else ""))


@register_cases("qkv_rope")
def qkv_cases(quick: bool) -> list[Case]:
    out = [_case("q4_0", 128, 4, 1, 64, "f16", 1, 5), _case("q4_1", 96, 3, 3, 64, "f32", 3, 0),
           _case("q8_0", 64, 2, 1, 128, "f16", 1, 17, scaled=False),
           _case("f16", 72, 4, 2, 64, "f16", 5, 2), _case("f32", 36, 8, 1, 64, "f32", 1, 0),
           # the split kernels (caps.max_storage_buffers below the fused kernel's count)
           _case("q4_0", 64, 4, 2, 64, "f16", 5, 3, heads="q"),
           _case("q8_0", 64, 2, 1, 64, "f16", 1, 7, heads="kv"),
           _case("q4_1", 64, 2, 2, 64, "f32", 2, 1, heads="k"),
           _case("q4_1", 64, 4, 2, 64, "f16", 6, 0, heads="v"),
           _case("q4_1", 96, 6, 2, 64, "f16", 5, 9, split=("q", "k", "v"))]
    if not quick:
        out += [_case("q4_0", 576, 9, 3, 64, "f16", 33, 100),
                _case("q4_1", 2048, 32, 8, 64, "f16", 1, 4095),
                _case("q8_0", 512, 8, 2, 128, "f16", 5, 30),
                _case("f16", 256, 4, 4, 128, "f32", 1, 1),
                _case("q4_0", 576, 9, 3, 64, "f16", 17, 40, split=("q", "kv")),
                _case("f32", 64, 4, 2, 64, "f32", 1, 2, heads="qk"),
                _case("q4_1", 64, 4, 2, 64, "f16", 3, 2, heads="qv")]
    return out
