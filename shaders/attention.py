"""Decode attention over the KV cache: split-K flash-decoding (and its one-pass short variant).

KV cache per layer: ``k_cache``, ``v_cache`` of shape (max_ctx, n_kv_heads, head_dim), f16 packed
two per u32 (low half first, ``kv="f16"``) or f32 (``kv="f32"``). Query heads h*G .. h*G+G-1 share
KV head h (G = n_heads / n_kv_heads, HF's ``repeat_kv``). Softmax scale 1/sqrt(head_dim).

Decode, two dispatches (the driver records both, in this order):
  attention_decode   q (n_heads*hd) f32, k_cache, v_cache, part (scratch, ``part_bytes``),
                     params{ctx}; grid (n_chunks(ctx), n_kv_heads, 1)
  attention_combine  part, out (n_heads*hd) f32, params{ctx}; grid (n_heads, 1, 1)
or, for short contexts, one (``direct=1``):
  attention_decode   q, k_cache, v_cache, out (n_heads*hd) f32, params{ctx}; grid (1, n_kv_heads, 1)
                     one chunk: a workgroup per KV head walks every tile and writes acc / l
  The context is cut into at most MAX_CHUNKS chunks of whole tiles (TILE = workgroup size
  positions); one workgroup per (chunk, KV head) runs an online softmax over its tiles for the G
  query heads at once (K and V are read once per group, not once per query head), the combine
  pass merges the chunks' (acc, max, sum) partials. At 4096 positions that is 32 chunks x n_kv
  workgroups, each streaming 2 x 128 rows of K and V.
  Every memory load of a tile is issued before any is used (K row and V words unrolled in the
  generated WGSL): on an H100 a rolled loop left one load per memory round trip in flight.
Prefill attention (causal, tiled) is shaders/attention_prefill.py; it shares this module's
cache layout, ``kv_arrays`` and the numpy reference ``ref_attention``.
Decode arithmetic is f32 in every variant (f16 only as KV storage, through unpack2x16float): it is
bound by memory traffic and latency, where f16 math buys nothing and costs accuracy. Subgroup
variant: the per-tile score maxima of attention_decode (subgroupMax) instead of a shared-memory
tree.
"""

from __future__ import annotations

import math

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .wgsl_common import SG_ARGS, SG_CALL, enable_lines, features, wg_reduce, wgsl_float
from .registry import Case, register, register_cases


MAX_CHUNKS = 64         # partial slots per query head: bounds the scratch and the combine loop
DECODE_PARAMS = Params((("ctx", "u32"),))


def _check_dims(op, n_heads, n_kv_heads, head_dim, kv):
    if kv not in ("f16", "f32"):
        raise UnsupportedKernel(f"{op}: kv must be 'f16' or 'f32', got {kv!r}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise UnsupportedKernel(f"{op}: n_heads {n_heads} is not a multiple of n_kv_heads "
                                f"{n_kv_heads}")
    if head_dim % 8 or head_dim <= 0:
        raise UnsupportedKernel(f"{op}: head_dim must be a positive multiple of 8, got {head_dim}")


# ---- KV cache access fragments (f16 packed or f32) ----
def kv_fragments(kv: str, head_dim: int) -> tuple[str, str]:
    """(binding declarations of k_cache, v_cache; WGSL fns ``kdot(p, h) -> array<f32, G>``
    (scaled q rows of the group in workgroup ``qs`` dotted with K[p, h]), ``vraw(p, h, dg)`` (the
    raw words of elements 8*dg .. 8*dg+7 of V[p, h]) and ``vunpack(raw) -> V8``).

    kdot is unrolled in Python: its head_dim/8 16-byte loads are written out before any use, so
    they are all in flight at once (a rolled WGSL loop gave one load per memory round trip on an
    H100: 10% of the copy roofline)."""
    n8 = head_dim // 8
    if kv == "f16":
        decl = ("@group(0) @binding(1) var<storage, read> k_cache: array<vec4<u32>>;  "
                "// (max_ctx, N_KV, HD) f16, 8 per vec4<u32>\n"
                "@group(0) @binding(2) var<storage, read> v_cache: array<vec4<u32>>;  "
                "// (max_ctx, N_KV, HD) f16, 8 per vec4<u32>")
        loads = "".join(f"    let w{j} = k_cache[base + {j}u];\n" for j in range(n8))
        conv = "".join(f"    let ka{j} = vec4<f32>(unpack2x16float(w{j}.x), unpack2x16float(w{j}.y));\n"
                       f"    let kb{j} = vec4<f32>(unpack2x16float(w{j}.z), unpack2x16float(w{j}.w));\n"
                       for j in range(n8))
        base = "(p * N_KV + h) * (HD / 8u)"
        vfns = """
alias VR = vec4<u32>;
fn vraw(p: u32, h: u32, dg: u32) -> VR { return v_cache[(p * N_KV + h) * (HD / 8u) + dg]; }
fn vunpack(w: VR) -> V8 {
    return V8(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
              vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}
"""
    else:
        decl = ("@group(0) @binding(1) var<storage, read> k_cache: array<vec4<f32>>;  "
                "// (max_ctx, N_KV, HD) f32\n"
                "@group(0) @binding(2) var<storage, read> v_cache: array<vec4<f32>>;  "
                "// (max_ctx, N_KV, HD) f32")
        loads = "".join(f"    let ka{j} = k_cache[base + {2 * j}u];\n"
                        f"    let kb{j} = k_cache[base + {2 * j + 1}u];\n" for j in range(n8))
        conv = ""
        base = "(p * N_KV + h) * (HD / 4u)"
        vfns = """
alias VR = V8;
fn vraw(p: u32, h: u32, dg: u32) -> VR {
    let i = (p * N_KV + h) * (HD / 4u) + 2u * dg;
    return V8(v_cache[i], v_cache[i + 1u]);
}
fn vunpack(w: VR) -> V8 { return w; }
"""
    dots = " +\n            ".join(f"dot(qs[qb + {2 * j}u], ka{j}) + dot(qs[qb + {2 * j + 1}u], kb{j})"
                                 for j in range(n8))
    fns = f"""
struct V8 {{ a: vec4<f32>, b: vec4<f32> }}   // 8 consecutive head-dim elements
fn kdot(p: u32, h: u32) -> array<f32, G> {{
    let base = {base};
{loads}{conv}    var s = array<f32, G>();
    for (var g = 0u; g < G; g++) {{
        let qb = g * (HD / 4u);
        s[g] = {dots};
    }}
    return s;
}}
{vfns}"""
    return decl, fns


def v_phase(head_dim: int, n_group: int) -> tuple[str, str]:
    """(V prefetch, V accumulate) WGSL of one tile, unrolled over the NV = head_dim/8 positions
    an invocation owns (see kv_fragments for why unrolled)."""
    nv = head_dim // 8
    pre = "".join(f"        let vr{i} = vraw(min(p0 + pg + {i}u * PG, p_end - 1u), h, dg);\n"
                  for i in range(nv))
    acc = ""
    for i in range(nv):
        acc += f"        {{\n            let v = vunpack(vr{i});\n"
        for g in range(n_group):
            acc += (f"            let w{g} = pw[{g}u * TILE + pg + {i}u * PG];\n"
                    f"            acc{g}a += w{g} * v.a;\n            acc{g}b += w{g} * v.b;\n"
                    f"            l{g} += w{g};\n")
        acc += "        }\n"
    return pre, acc


_G_LOOP = "for (var g = 0u; g < G; g++) {"


def unroll_g(src: str, n_group: int) -> str:
    """Every ``for (var g = 0u; g < G; g++) { BODY }`` of ``src`` written out as G braced copies
    of BODY with ``g`` a constant: private arrays indexed by the loop variable went to local
    memory on an H200 and made a workgroup's time grow with G (see attention_decode.wgsl)."""
    import re
    while _G_LOOP in src:
        i = src.index(_G_LOOP)
        j, depth = i + len(_G_LOOP), 1
        while depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        body = src[i + len(_G_LOOP):j - 1]
        copies = " ".join("{" + re.sub(r"\bg\b", f"{g}u", body) + "}" for g in range(n_group))
        src = src[:i] + copies + src[j:]
    return src


def acc_fragments(n_group: int) -> dict[str, str]:
    """ACC_DECL / ACC_RESCALE / FOLD of attention_decode.wgsl: the per-query-head accumulators
    as named scalars (see the template for why), written out for the G heads of a group."""
    return {
        "ACC_DECL": "".join(f"    var l{g} = 0.0;\n    var acc{g}a = vec4<f32>();\n"
                            f"    var acc{g}b = vec4<f32>();\n" for g in range(n_group)),
        "ACC_RESCALE": "".join(f"        acc{g}a *= alpha[{g}];\n        acc{g}b *= alpha[{g}];\n"
                               f"        l{g} *= alpha[{g}];\n" for g in range(n_group)),
        "FOLD": "".join(f"    fold({g}u, h, row, c, t, o, pg, dg, acc{g}a, acc{g}b, l{g}, m[{g}]);\n"
                        for g in range(n_group)),
    }


def _tile_max(subgroups: bool) -> str:
    """WGSL ``tile_max(s, t[, sg...]) -> array<f32, G>``: per-head max over the TILE invocations."""
    if subgroups:
        return """
fn tile_max(s: array<f32, G>, t: u32, sg_lane: u32, sg_size: u32) -> array<f32, G> {
    let sg_id = t / sg_size;
    let n_sg = (WG + sg_size - 1u) / sg_size;
    for (var g = 0u; g < G; g++) {
        let v = subgroupMax(s[g]);
        if (sg_lane == 0u) { red[g * TILE + sg_id] = v; }
    }
    workgroupBarrier();
    var r: array<f32, G>;
    for (var g = 0u; g < G; g++) {
        var x = red[g * TILE];
        for (var i = 1u; i < n_sg; i++) { x = max(x, red[g * TILE + i]); }
        r[g] = x;
    }
    return r;   // red is next written after the barrier that follows the pw writes
}
"""
    return """
fn tile_max(s: array<f32, G>, t: u32) -> array<f32, G> {
    for (var g = 0u; g < G; g++) { red[g * TILE + t] = s[g]; }
    workgroupBarrier();
    for (var st = TILE / 2u; st > 0u; st >>= 1u) {
        if (t < st) {
            for (var g = 0u; g < G; g++) {
                red[g * TILE + t] = max(red[g * TILE + t], red[g * TILE + t + st]);
            }
        }
        workgroupBarrier();
    }
    var r: array<f32, G>;
    for (var g = 0u; g < G; g++) { r[g] = red[g * TILE]; }
    return r;   // red is next written after the barrier that follows the pw writes
}
"""


DECODE_WG = 128          # invocations = positions per tile of attention_decode


def n_chunks(ctx: int, tile: int = DECODE_WG, max_chunks: int = MAX_CHUNKS) -> int:
    """Chunks of whole tiles covering ``ctx`` positions (same arithmetic as the WGSL)."""
    n_tiles = -(-ctx // tile)
    tpc = -(-n_tiles // max_chunks)
    return -(-n_tiles // tpc)


def part_bytes(n_heads: int, head_dim: int, max_chunks: int = MAX_CHUNKS, nb: int = 0) -> int:
    """Byte size of the ``part`` scratch buffer of attention_decode / attention_combine (``nb``
    query rows of the verify variant, one row's layout after another; 0: decode, one row)."""
    return max(1, nb) * n_heads * max_chunks * (head_dim + 2) * 4


def verify_chunks(ctx: int, n_tok: int, tile: int = DECODE_WG, max_chunks: int = MAX_CHUNKS) -> int:
    """Grid x of the verify variant: the most chunks any of its ``n_tok`` rows has (row i's
    context is ctx - n_tok + 1 + i; ``n_chunks`` is not monotonic: 64 tiles are 64 chunks of one
    tile, 65 tiles 33 chunks of two). A workgroup past its row's last chunk returns at once."""
    return max(n_chunks(c, tile, max_chunks) for c in range(max(1, ctx - n_tok + 1), ctx + 1))


def _decode_knobs(wg: int, max_chunks: int) -> tuple[int, int]:
    return wg or DECODE_WG, max_chunks or MAX_CHUNKS


VERIFY_PARAMS = Params((("ctx", "u32"), ("n_tok", "u32")))
MAX_NB = 64             # query rows of the verify variant (grid z)


def _check_nb(op: str, nb) -> None:
    if not (isinstance(nb, int) and 0 <= nb <= MAX_NB):
        raise UnsupportedKernel(f"{op}: nb (query rows of a verify pass) must be an integer in "
                                f"[0, {MAX_NB}] (0: decode), got {nb!r}")


def _row_setup(nb: int, z: str) -> str:
    """WGSL of the query row and its context length ``ctx``: decode, row 0 at params.ctx; the
    verify variant (nb > 0), row ``z`` (a grid dimension) of the pass's n_tok rows ending at
    params.ctx, its causal context ctx - n_tok + 1 + row (workgroup-uniform early return past
    n_tok)."""
    if not nb:
        return "    let row = 0u;\n    let ctx = params.ctx;"
    return (f"    let row = {z};\n    if (row >= params.n_tok) {{ return; }}\n"
            "    let ctx = params.ctx + 1u + row - params.n_tok;   // positions row sees (causal)")


_PART_DECL = ("@group(0) @binding(3) var<storage, read_write> part: array<f32>;     "
              "// per row: (N_HEADS, MAX_CHUNKS, HD) acc, then (N_HEADS, MAX_CHUNKS, 2) (m, l)")
_OUT_DECL = ("@group(0) @binding(3) var<storage, read_write> out: array<f32>;      "
             "// (rows, N_HEADS * HD) f32 attention output")
# fold's store: the chunk's partial (split-K) ...
_STORE_PART = """    for (var d = t; d < HD; d += WG) {
        var sum = 0.0;
        for (var i = 0u; i < PG; i++) { sum += red[i * HD + d]; }
        part[row * PART_ROW + (hq * MAX_CHUNKS + c) * HD + d] = sum;
    }
    if (t == 0u) {
        var ls = 0.0;
        for (var i = 0u; i < PG; i++) { ls += red[PG * HD + i]; }
        let ml = row * PART_ROW + N_HEADS * MAX_CHUNKS * HD + (hq * MAX_CHUNKS + c) * 2u;
        part[ml] = mg;
        part[ml + 1u] = ls;
    }"""
# ... or (direct=1, the only chunk) the output itself: acc / l, the same sums in the same order
# as attention_combine's merge of a single chunk (its weight exp(m - M) is exactly 1)
_STORE_OUT = """    var ls = 0.0;
    for (var i = 0u; i < PG; i++) { ls += red[PG * HD + i]; }
    for (var d = t; d < HD; d += WG) {
        var sum = 0.0;
        for (var i = 0u; i < PG; i++) { sum += red[i * HD + d]; }
        out[(row * N_HEADS + hq) * HD + d] = sum / ls;
    }"""


@register("attention_decode")
def build_decode(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int, kv: str = "f16",
                 wg: int = 0, max_chunks: int = 0, direct: int = 0, nb: int = 0) -> Kernel:
    """``wg`` (tile = workgroup size, power of two) and ``max_chunks`` override the defaults
    (benchmarks only; attention_combine must get the same values). ``direct=1``: the one-pass
    variant for short contexts: one workgroup per KV head over all ``ctx`` positions (one
    chunk), the normalised output written to ``out`` (bound instead of ``part``); no
    attention_combine after it. Its time grows with ctx / wg tiles walked in sequence, so the
    driver uses it only up to a context length (``driver.graph.DecodeOptions.short_ctx``).
    ``nb`` > 0: the verify variant for a speculative verify pass of n_tok <= nb query rows at
    the cache's end (their K/V already appended): q and out (n_tok, n_heads*hd), params{ctx,
    n_tok}, grid z = row; row i computes decode's result for context ctx - n_tok + 1 + i, with
    decode's arithmetic (same chunks, same sums; direct or split-K as chosen)."""
    _check_dims("attention_decode", n_heads, n_kv_heads, head_dim, kv)
    _check_nb("attention_decode", nb)
    if direct not in (0, 1) or (direct and max_chunks not in (0, 1)):
        raise UnsupportedKernel(f"attention_decode: direct must be 0 or 1 (direct=1 is one chunk: "
                                f"no max_chunks), got direct={direct!r} max_chunks={max_chunks!r}")
    wg, mc = _decode_knobs(wg, 1 if direct else max_chunks)
    tpr = head_dim // 8
    if wg & (wg - 1) or wg % tpr or wg > caps.max_workgroup_size:
        raise UnsupportedKernel(f"attention_decode: workgroup {wg} must be a power of two, a "
                                f"multiple of head_dim/8 = {tpr} and <= adapter max "
                                f"{caps.max_workgroup_size}")
    g = n_heads // n_kv_heads
    pg = wg // tpr
    shared = 4 * (g * head_dim + g * wg + max(g * wg, pg * head_dim + pg))
    if shared > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"attention_decode: needs {shared} B of workgroup storage, "
                                f"adapter has {caps.max_workgroup_storage}")
    sg = caps.subgroups
    key = KernelKey(op="attention_decode", fmt=kv, wg=wg, vec=4, subgroups=sg,
                    dims=(("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim), ("mc", mc))
                    + ((("dir", 1),) if direct else ()) + ((("nb", nb),) if nb else ()))
    decl, fns = kv_fragments(kv, head_dim)
    prm = VERIFY_PARAMS if nb else DECODE_PARAMS
    vpre, vacc = v_phase(head_dim, g)
    src = render(load_template("attention_decode"), {
        "V_PREFETCH": vpre, "V_ACCUM": vacc, **acc_fragments(g),
        "ENABLES": enable_lines(False, sg), "N_HEADS": str(n_heads), "N_KV": str(n_kv_heads),
        "HEAD_DIM": str(head_dim), "WG": str(wg), "MAX_CHUNKS": str(mc),
        "SCALE": wgsl_float(1.0 / math.sqrt(head_dim)), "PARAMS": prm.wgsl(),
        "ROW_SETUP": _row_setup(nb, "wid.z"), "KV_DECL": decl, "KV_FNS": fns,
        "TILE_MAX": _tile_max(sg),
        "SG_ARGS": SG_ARGS if sg else "", "SG_CALL": SG_CALL if sg else "",
        "PART_DECL": _OUT_DECL if direct else _PART_DECL,
        "FOLD_STORE": _STORE_OUT if direct else _STORE_PART}, key.slug())
    src = unroll_g(src, g)
    kv_shape = f"(max_ctx, n_kv_heads, head_dim) {kv}" + (" packed 2 per u32" if kv == "f16"
                                                          else "")
    rows = "(n_tok, n_heads*head_dim) f32" if nb else "(n_heads*head_dim) f32"
    if nb:   # grid z: query rows; x: the most chunks of any row
        grid = (Grid(lambda n_tok=1: (1, n_kv_heads, n_tok), ("n_tok",)) if direct else
                Grid(lambda ctx=1, n_tok=1: (verify_chunks(ctx, n_tok, wg, mc), n_kv_heads,
                                             n_tok), ("ctx", "n_tok")))
    else:
        grid = (Grid.fixed(1, n_kv_heads) if direct else
                Grid(lambda ctx=1: (n_chunks(ctx, wg, mc), n_kv_heads, 1), ("ctx",)))
    return Kernel(key=key, wgsl=src, params=prm, workgroup_size=(wg, 1, 1),
                  features=features(False, sg), bindings=(
                      Binding("q", "read", rows),
                      Binding("k_cache", "read", kv_shape),
                      Binding("v_cache", "read", kv_shape),
                      Binding("out", "read_write", rows) if direct else
                      Binding("part", "read_write", f"{'(nb) x ' if nb else ''}(n_heads, "
                              "MAX_CHUNKS, head_dim) + (n_heads, MAX_CHUNKS, 2) f32"),
                      Binding("params", "uniform", "Params{ctx, n_tok}" if nb else "Params{ctx}")),
                  grid=grid, meta={
                        "part_bytes": 0 if direct else part_bytes(n_heads, head_dim, mc, nb),
                        "tile": wg, "max_chunks": mc, "direct": direct})


@register("attention_combine")
def build_combine(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int, kv: str = "f16",
                  wg: int = 0, max_chunks: int = 0, nb: int = 0) -> Kernel:
    """Pass 2 of attention_decode; takes the same dims (they fix the tile and chunk layout;
    ``nb`` > 0: the verify variant, grid (n_heads, n_tok), out (n_tok, n_heads*hd))."""
    _check_dims("attention_combine", n_heads, n_kv_heads, head_dim, kv)
    _check_nb("attention_combine", nb)
    tile, mc = _decode_knobs(wg, max_chunks)
    cwg = 256 if caps.max_workgroup_size >= 256 else 128
    if head_dim > cwg or cwg % head_dim:
        raise UnsupportedKernel(f"attention_combine: head_dim {head_dim} must divide the "
                                f"workgroup size {cwg}")
    unroll = 8
    loads = "".join(f"        let i{u} = min(c0 + {u}u * CS, n_chunks - 1u);\n"
                    f"        let x{u} = part[base + i{u} * HD];\n" for u in range(unroll))
    loads += "".join(f"        num += select(0.0, sw[i{u}] * x{u}, c0 + {u}u * CS < n_chunks);\n"
                     for u in range(unroll))
    sg = caps.subgroups
    key = KernelKey(op="attention_combine", wg=cwg, subgroups=sg,
                    dims=(("nh", n_heads), ("hd", head_dim), ("tile", tile), ("mc", mc))
                    + ((("nb", nb),) if nb else ()))
    prm = VERIFY_PARAMS if nb else DECODE_PARAMS
    src = render(load_template("attention_combine"), {
        "ENABLES": enable_lines(False, sg), "SG_ARGS": SG_ARGS if sg else "",
        "SG_CALL": SG_CALL if sg else "",
        "FOLDS": wg_reduce("wg_max", "max", cwg, sg) + wg_reduce("wg_sum", "sum", cwg, sg),
        "N_HEADS": str(n_heads), "HEAD_DIM": str(head_dim), "WG": str(cwg), "TILE": str(tile),
        "MAX_CHUNKS": str(mc), "PARAMS": prm.wgsl(), "UNROLL": str(unroll),
        "ROW_SETUP": _row_setup(nb, "wid.y"), "VALUE_LOADS": loads.rstrip("\n")}, key.slug())
    return Kernel(key=key, wgsl=src, params=prm, workgroup_size=(cwg, 1, 1),
                  features=features(False, sg),
                  bindings=(Binding("part", "read", "as written by attention_decode"),
                            Binding("out", "read_write", "(n_tok, n_heads*head_dim) f32" if nb
                                    else "(n_heads*head_dim) f32"),
                            Binding("params", "uniform", "Params{ctx, n_tok}" if nb
                                    else "Params{ctx}")),
                  grid=(Grid(lambda n_tok=1: (n_heads, n_tok, 1), ("n_tok",)) if nb
                        else Grid.fixed(n_heads)))


# ---- numpy references (float64) ----
def ref_attention(q, k, v, n_heads, n_kv_heads, head_dim, pos: int):
    """q (n_tok, n_heads*hd); k, v (>= pos+n_tok, n_kv, hd) -> (n_tok, n_heads*hd) float64.
    Query t sees positions [0, pos + t] (decode: n_tok = 1, pos = ctx - 1)."""
    import numpy as np
    n_tok = q.shape[0]
    g = n_heads // n_kv_heads
    qh = np.asarray(q, np.float64).reshape(n_tok, n_heads, head_dim)
    out = np.zeros((n_tok, n_heads, head_dim))
    for t in range(n_tok):
        n = pos + t + 1
        kk = np.asarray(k[:n], np.float64)   # (n, n_kv, hd)
        vv = np.asarray(v[:n], np.float64)
        for hq in range(n_heads):
            s = kk[:, hq // g, :] @ qh[t, hq] / math.sqrt(head_dim)
            w = np.exp(s - s.max())
            out[t, hq] = (w / w.sum()) @ vv[:, hq // g, :]
    return out.reshape(n_tok, n_heads * head_dim)


def kv_arrays(rng, max_ctx, n_kv_heads, head_dim, kv, valid):
    """Random K, V caches (max_ctx, n_kv, hd): (packed buffer bytes for k, for v, float k, v).
    Rows >= ``valid`` hold NaN so a kernel that reads past the context fails the check."""
    import numpy as np
    dt = np.float16 if kv == "f16" else np.float32
    k = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)
    v = rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)
    # keys with a spread of norms so some positions dominate the softmax
    k[:valid] *= rng.uniform(0.2, 3.0, size=(valid, 1, 1)).astype(dt)
    k[valid:] = np.nan
    v[valid:] = np.nan
    return k.tobytes(), v.tobytes(), k[:valid].astype(np.float64), v[:valid].astype(np.float64)


# ---- check cases ----
def _decode_case(n_heads, n_kv_heads, head_dim, kv, ctx, **knobs) -> Case:
    dims = {"n_heads": n_heads, "n_kv_heads": n_kv_heads, "head_dim": head_dim, "kv": kv,
            **knobs}

    def make(rng):
        import numpy as np
        kb, vb, k, v = kv_arrays(rng, ctx + 3, n_kv_heads, head_dim, kv, ctx)
        q = rng.standard_normal(n_heads * head_dim).astype(np.float32)
        return {"buffers": {"q": q, "k_cache": kb, "v_cache": vb,
                            "part": part_bytes(n_heads, head_dim, knobs.get("max_chunks", 0)
                                               or MAX_CHUNKS),
                            "out": n_heads * head_dim * 4},
                "params": {"ctx": ctx}, "grid": {"ctx": ctx}, "k": k, "v": v}

    def ref(inp):
        import numpy as np
        q = inp["buffers"]["q"][None, :]
        return {"out": ref_attention(q, inp["k"], inp["v"], n_heads, n_kv_heads, head_dim,
                                     ctx - 1)[0].astype(np.float32)}

    def steps(caps, inp):
        k1 = build_decode(caps, **dims)
        p = {"ctx": ctx}
        if knobs.get("direct"):   # one pass: the output straight from attention_decode
            return [(k1, p, k1.grid(ctx=ctx))]
        k2 = build_combine(caps, **dims)
        return [(k1, p, k1.grid(ctx=ctx)), (k2, p, k2.grid(ctx=ctx))]

    return Case(op="attention_decode", dims=dims, make_inputs=make, reference=ref, tol="attention",
                steps=steps, label=f"nh={n_heads},nkv={n_kv_heads},hd={head_dim},{kv},ctx={ctx}"
                      + "".join(f",{k}={v}" for k, v in knobs.items()))


@register_cases("attention_decode", covers=("attention_combine",))
def decode_cases(quick: bool) -> list[Case]:
    out = [_decode_case(8, 8, 64, "f16", 17), _decode_case(9, 3, 64, "f32", 1),
           _decode_case(32, 8, 128, "f16", 17), _decode_case(16, 2, 128, "f16", 300),
           _decode_case(4, 1, 64, "f32", 290),
           _decode_case(12, 4, 128, "f16", 700, wg=64, max_chunks=4),   # multi-tile chunks
           _decode_case(4, 2, 16, "f16", 140), _decode_case(3, 1, 32, "f32", 9),   # tiny heads
           # one pass (direct=1, the driver's short-context path): one tile, several tiles
           # walked by one workgroup, a partial last tile, f32 KV, a 256-position tile
           _decode_case(32, 8, 128, "f16", 1, direct=1), _decode_case(32, 8, 64, "f16", 300,
                                                                       direct=1),
           _decode_case(9, 3, 64, "f32", 130, direct=1),
           _decode_case(32, 8, 128, "f16", 257, wg=256, direct=1)]
    if not quick:
        out += [_decode_case(32, 8, 128, "f16", 4096), _decode_case(9, 3, 64, "f16", 4096),
                _decode_case(8, 1, 128, "f32", 4096), _decode_case(4, 4, 128, "f16", 1),
                _decode_case(8, 8, 64, "f16", 4096),
                _decode_case(24, 8, 64, "f16", 9000),
                _decode_case(32, 8, 128, "f16", 1024, wg=256, direct=1),
                _decode_case(4, 2, 16, "f16", 140, direct=1), _decode_case(3, 1, 32, "f32", 9,
                                                                          direct=1)]
    return out


def _verify_case(n_heads, n_kv_heads, head_dim, kv, ctx, n_tok, nb, **knobs) -> Case:
    """The verify variant: n_tok query rows at positions ctx - n_tok .. ctx - 1 (their K/V in
    the cache) of a kernel compiled for nb >= n_tok rows; rows past n_tok of ``out`` must stay."""
    dims = {"n_heads": n_heads, "n_kv_heads": n_kv_heads, "head_dim": head_dim, "kv": kv,
            "nb": nb, **knobs}
    Q = n_heads * head_dim

    def make(rng):
        import numpy as np
        kb, vb, k, v = kv_arrays(rng, ctx + 3, n_kv_heads, head_dim, kv, ctx)
        q = rng.standard_normal((nb, Q)).astype(np.float32)        # (nb, Q): rows >= n_tok unused
        y0 = rng.standard_normal((nb, Q)).astype(np.float32)       # (nb, Q): rows >= n_tok stay
        return {"buffers": {"q": q, "k_cache": kb, "v_cache": vb, "out": y0,
                            "part": part_bytes(n_heads, head_dim, knobs.get("max_chunks", 0)
                                               or MAX_CHUNKS, nb)},
                "k": k, "v": v, "y0": y0}

    def ref(inp):
        y = inp["y0"].copy()
        y[:n_tok] = ref_attention(inp["buffers"]["q"][:n_tok], inp["k"], inp["v"], n_heads,
                                  n_kv_heads, head_dim, ctx - n_tok)
        return {"out": y}

    def steps(caps, inp):
        k1 = build_decode(caps, **dims)
        p = {"ctx": ctx, "n_tok": n_tok}
        if knobs.get("direct"):
            return [(k1, p, k1.grid(ctx=ctx, n_tok=n_tok))]
        k2 = build_combine(caps, **{d: x for d, x in dims.items() if d != "direct"})
        return [(k1, p, k1.grid(ctx=ctx, n_tok=n_tok)), (k2, p, k2.grid(n_tok=n_tok))]

    return Case(op="attention_decode", dims=dims, make_inputs=make, reference=ref, tol="attention",
                steps=steps, label=f"nh={n_heads},nkv={n_kv_heads},hd={head_dim},{kv},ctx={ctx},"
                                   f"rows={n_tok}/{nb}" + "".join(f",{k}={v}"
                                                                  for k, v in knobs.items()))


@register_cases("attention_decode", covers=("attention_combine",))
def verify_cases(quick: bool) -> list[Case]:
    """The verify variant (nb > 0): one chunk; rows on both sides of a tile boundary (2 and 3
    chunks); rows whose chunk layouts differ (tile 64, 4 chunks: 8 tiles are 4 chunks of 2,
    9 tiles 3 of 3); every row from position 0; fewer rows than compiled; GQA 1, 3, 4, 8; f16
    and f32 KV; the one-pass variant (direct=1)."""
    out = [_verify_case(32, 8, 128, "f16", 17, 5, 8), _verify_case(16, 2, 128, "f16", 258, 5, 8),
           _verify_case(9, 3, 64, "f32", 131, 4, 4),
           _verify_case(12, 4, 128, "f16", 515, 6, 8, wg=64, max_chunks=4),
           _verify_case(8, 8, 64, "f16", 5, 5, 8), _verify_case(8, 1, 64, "f32", 200, 3, 16),
           _verify_case(32, 8, 128, "f16", 300, 5, 8, direct=1, wg=256),
           _verify_case(9, 3, 64, "f32", 130, 3, 4, direct=1)]
    if not quick:
        out += [_verify_case(32, 8, 128, "f16", 4096, 5, 8),
                _verify_case(24, 8, 64, "f16", 9000, 16, 16),
                _verify_case(8, 1, 128, "f32", 8195, 9, 16),
                _verify_case(32, 8, 64, "f16", 512, 9, 16, direct=1, wg=256)]
    return out
