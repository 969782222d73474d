"""Prefill attention (op "attention_prefill"): causal, tiled, over the KV cache.

  attention_prefill  q (n_tok, n_heads*hd) f32, k_cache, v_cache, out (n_tok, n_heads*hd),
                     params{n_tok, pos}; query t attends positions [0, pos + t]
  grid (ceil(n_tok / TQ), n_heads, 1): a workgroup per TQ query rows of one query head walks the
  K/V tiles of positions [0, pos + last row] (see ``attention_prefill.wgsl``).

KV cache layout, GQA and the softmax scale as in shaders/attention.py (its module docstring); the
numpy reference ``attention.ref_attention`` checks both. Arithmetic f32 by default; the shader-f16
variant (opt-in, ``arith="f16"``) stages Q and K/V tiles as f16 (half the workgroup memory traffic,
packed f16 dot products for the scores; values still accumulate in f32); it is not the default
because it measurably shortens greedy agreement with f32 (see build_prefill). Pure Python; numpy
only inside the check cases.
"""

from __future__ import annotations

import math

from .attention import _check_dims, kv_arrays, ref_attention
from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .wgsl_common import enable_lines, features, wgsl_float
from .registry import Case, register, register_cases
from . import attention_prefill_gqa as gqa

PREFILL_PARAMS = Params((("n_tok", "u32"), ("pos", "u32")))
SPLIT_PARAMS = Params((("n_tok", "u32"), ("pos", "u32"), ("span", "u32")))
COMBINE_PARAMS = Params((("n_tok", "u32"), ("splits", "u32")))
MAX_SPLITS = 8          # position ranges of the split variant (grid z), ``part``'s stride

# the template's variant pieces: (one pass, split=1)
_OUT_DECL = ("@group(0) @binding(3) var<storage, read_write> out: array<f32>;    "
             "// (n_tok, N_HEADS * HD) f32",
             f"const MAX_SPLITS: u32 = {MAX_SPLITS}u;\n"
             "@group(0) @binding(3) var<storage, read_write> part: array<f32>;   "
             "// (n_tok, N_HEADS, MAX_SPLITS, HD + 2) f32: acc, then m, l")
_RANGE = ("    let k_begin = 0u;\n    let klast = last;",
          "    let k_begin = wid.z * params.span;             // this split's positions: [k_begin, "
          "k_begin + span)\n    let klast = min(last, k_begin + params.span - 1u);")
_STORE = ("""    if (row_ok) {
        let o = (t0 + r) * N_HEADS * HD + hq * HD;
        for (var i = 0u; i < DPT4; i++) {
            let d = 4u * (j + TPR * i);
            let v = acc[i] / l;
            out[o + d] = v.x;
            out[o + d + 1u] = v.y;
            out[o + d + 2u] = v.z;
            out[o + d + 3u] = v.w;
        }
    }""", """    if (row_ok) {
        let o = (((t0 + r) * N_HEADS + hq) * MAX_SPLITS + wid.z) * (HD + 2u);
        for (var i = 0u; i < DPT4; i++) {
            let d = o + 4u * (j + TPR * i);
            part[d] = acc[i].x;
            part[d + 1u] = acc[i].y;
            part[d + 2u] = acc[i].z;
            part[d + 3u] = acc[i].w;
        }
        if (j == 0u) {
            part[o + HD] = m;
            part[o + HD + 1u] = l;
        }
    }""")


def _tile_io(kv: str, head_dim: int, tk: int, wg: int, f16: bool) -> dict[str, str]:
    """WGSL of the v1 kernel's tile staging (``attention_prefill_gqa.tile_io``, into ``kt`` as
    ``vec4<ST>``: f32, or f16 in the shader-f16 variant); TK x HD must be whole 16-byte loads per
    invocation here."""
    per = 8 if kv == "f16" else 4          # elements per 16-byte word
    if tk * head_dim // per % wg:
        raise UnsupportedKernel(f"attention_prefill: a {tk}x{head_dim} tile is not a whole "
                                f"number of 16-byte loads per invocation")
    return gqa.tile_io(kv, head_dim, tk, wg, cast=True)


def _score_io(kpt: int) -> dict[str, str]:
    """WGSL of the score phase (SCORES: invocation (r, j)'s scores of keys j + TPR * i, i < KPT,
    into ``pw``) and of the probabilities (P_STORE: the same keys' exp(score - max) over them),
    unrolled over i with named scalars."""
    ks = [f"j + {i}u * TPR" if i else "j" for i in range(kpt)]
    sc = [f"        var s{i} = 0.0;" for i in range(kpt)]
    sc.append("        for (var d4 = 0u; d4 < HD4; d4++) {")
    sc.append("            let qv = qs[r * HD4 + d4];")
    sc += [f"            s{i} += f32(dot(qv, kt[({k}) * KROW4 + d4]));" for i, k in enumerate(ks)]
    sc.append("        }")
    sc += [f"        pw[r * TK + {k}] = select(NEG, s{i}, k0 + {k} <= my_last);"
           for i, k in enumerate(ks)]
    ps = [f"        pw[r * TK + {k}] = exp(pw[r * TK + {k}] - mx);" for k in ks]
    return {"SCORES": "\n".join(sc), "P_STORE": "\n".join(ps)}


def prefill_tiles(head_dim: int, kv: str, wg: int = 128) -> tuple[int, int]:
    """(TQ query rows, TK keys) per tile. TPR = wg / TQ invocations share a query row and must
    split head_dim / 4 (vec4 accumulators); a K/V tile must be whole 16-byte loads per
    invocation. Llama shapes: hd 128 -> (8, 16), hd 64 -> (16, 32): 4 KiB of queries and
    8 KiB of keys in workgroup memory."""
    h4 = head_dim // 4
    tpr = next(t for t in (16, 8, 4, 2, 1) if h4 % t == 0 and (t < 16 or head_dim >= 128))
    tq = wg // tpr
    per = 8 if kv == "f16" else 4
    unit = wg * per // math.gcd(wg * per, head_dim)      # TK multiple: whole loads per invocation
    tk = unit * tpr // math.gcd(unit, tpr)
    while tk < 2 * tq:
        tk *= 2
    return tq, tk


@register("attention_prefill")
def build_prefill(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int,
                  kv: str = "f16", arith: str = "f32", split: int = 0,
                  tiles: str = "auto") -> Kernel:
    """``arith="f16"`` opts into f16 tiles and score dot products when the adapter has shader-f16
    (else f32), on today's kernel. Not the default: on the engine's f16 test model it cut the
    greedy agreement with the f32 run from >= 32 tokens to 15 (tests/test_engine.py quality
    check). ``split=1``: the split variant, grid z = params' position ranges of ``span`` keys,
    partials into ``part`` for attention_prefill_combine (long cached contexts: many short walks
    instead of a few long). ``tiles``: "auto" (the GQA-row register-tiled kernel,
    shaders/attention_prefill_gqa.py, in the first of its CONFIGS that fits the dims and the
    adapter, else today's), "v1" (today's: TQ rows of one query head), or one config
    "RQxRK/TK/WG" (UnsupportedKernel if it does not fit)."""
    _check_dims("attention_prefill", n_heads, n_kv_heads, head_dim, kv)
    if split not in (0, 1):
        raise UnsupportedKernel(f"attention_prefill: split must be 0 or 1, got {split!r}")
    if arith not in ("f32", "f16"):
        raise UnsupportedKernel(f"attention_prefill: arith must be 'f32' or 'f16', got {arith!r}")
    f16 = caps.shader_f16 and arith == "f16"
    if tiles == "v1" or (tiles == "auto" and f16):
        return _build_v1(caps, n_heads, n_kv_heads, head_dim, kv, f16, split)
    if f16:
        raise UnsupportedKernel("attention_prefill: arith='f16' runs only on tiles 'v1'/'auto'")
    t = (gqa.pick(caps, n_heads, n_kv_heads, head_dim) if tiles == "auto"
         else gqa.plan(tiles, caps, n_heads, n_kv_heads, head_dim))
    if t is None:
        return _build_v1(caps, n_heads, n_kv_heads, head_dim, kv, False, split)
    key = KernelKey(op="attention_prefill", fmt=kv, wg=t.wg, tile=t.tq, f16=False,
                    dims=(("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim), ("tk", t.tk),
                          ("rq", t.rq), ("rk", t.rk)) + ((("split", 1),) if split else ()))
    src = render(load_template("attention_prefill_gqa"), {
        "N_HEADS": str(n_heads), "N_KV": str(n_kv_heads), "HEAD_DIM": str(head_dim),
        "SCALE": wgsl_float(1.0 / math.sqrt(head_dim)),
        "PARAMS": (SPLIT_PARAMS if split else PREFILL_PARAMS).wgsl(), "KV_DECL": _kv_decl(kv),
        # the one-pass kernel stores whole vec4s of out (head_dim is a multiple of 8)
        "OUT_DECL": _OUT_DECL[1] if split else _OUT_DECL[0].replace("array<f32>", "array<vec4<f32>>"),
        "RANGE": _RANGE[split], **gqa.subs(kv, head_dim, t, split)}, key.slug())
    return _kernel(key, src, kv, n_heads, n_kv_heads, head_dim, split, t.tq, t.tk, t.wg, False)


def _kv_decl(kv: str) -> str:
    wt = "vec4<u32>" if kv == "f16" else "vec4<f32>"
    return (f"@group(0) @binding(1) var<storage, read> k_cache: array<{wt}>;"
            f"  // (max_ctx, N_KV, HD) {kv}, 16-byte words\n"
            f"@group(0) @binding(2) var<storage, read> v_cache: array<{wt}>;"
            f"  // (max_ctx, N_KV, HD) {kv}, 16-byte words")


def _kernel(key, src, kv, n_heads, n_kv_heads, head_dim, split, tq, tk, wg, f16) -> Kernel:
    """The Kernel of either tiling: same bindings, params and split protocol; the grid's y is the
    query heads (today's kernel) or the KV heads (GQA rows: a workgroup holds all G heads)."""
    prm = SPLIT_PARAMS if split else PREFILL_PARAMS
    gy = n_kv_heads if "rq" in dict(key.dims) else n_heads
    kv_shape = f"(max_ctx, n_kv_heads, head_dim) {kv}"
    out = (Binding("part", "read_write", "(n_tok, n_heads, MAX_SPLITS, head_dim + 2) f32") if split
           else Binding("out", "read_write", "(n_tok, n_heads*head_dim) f32"))
    return Kernel(key=key, wgsl=src, params=prm, workgroup_size=(wg, 1, 1),
                  features=features(f16, False), bindings=(
        Binding("q", "read", "(n_tok, n_heads*head_dim) f32"),
        Binding("k_cache", "read", kv_shape), Binding("v_cache", "read", kv_shape), out,
        Binding("params", "uniform", "Params{n_tok, pos, span}" if split else "Params{n_tok, pos}")),
        grid=(Grid(lambda n_tok=1, splits=1: (-(-n_tok // tq), gy, splits), ("n_tok", "splits"))
              if split else Grid(lambda n_tok=1: (-(-n_tok // tq), gy, 1), ("n_tok",))),
        meta={"tk": tk, "part_bytes_per_row": n_heads * MAX_SPLITS * (head_dim + 2) * 4} if split
        else {"tk": tk})


def _build_v1(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int, kv: str, f16: bool,
              split: int) -> Kernel:
    """Today's kernel (attention_prefill.wgsl): TQ rows of one query head per workgroup."""
    wg = 128
    if wg > caps.max_workgroup_size:
        raise UnsupportedKernel(f"attention_prefill: needs {wg} invocations per workgroup")
    tq, tk = prefill_tiles(head_dim, kv, wg)
    esize = 2 if f16 else 4
    shared = esize * (tq * head_dim + tk * (head_dim + 4)) + 4 * tq * tk
    if shared > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"attention_prefill: needs {shared} B of workgroup storage, "
                                f"adapter has {caps.max_workgroup_storage}")
    key = KernelKey(op="attention_prefill", fmt=kv, wg=wg, tile=tq, f16=f16,
                    dims=(("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim), ("tk", tk))
                    + ((("split", 1),) if split else ()))
    src = render(load_template("attention_prefill"), {
        "ENABLES": enable_lines(f16, False) + f"\nalias ST = {'f16' if f16 else 'f32'};",
        "N_HEADS": str(n_heads), "N_KV": str(n_kv_heads), "HEAD_DIM": str(head_dim),
        "WG": str(wg), "TQ": str(tq), "TK": str(tk),
        "SCALE": wgsl_float(1.0 / math.sqrt(head_dim)),
        "PARAMS": (SPLIT_PARAMS if split else PREFILL_PARAMS).wgsl(),
        "KV_DECL": _kv_decl(kv), "OUT_DECL": _OUT_DECL[split], "RANGE": _RANGE[split],
        "STORE": _STORE[split], **_score_io(tk // (wg // tq)),
        **_tile_io(kv, head_dim, tk, wg, f16)}, key.slug())
    return _kernel(key, src, kv, n_heads, n_kv_heads, head_dim, split, tq, tk, wg, f16)


@register("attention_prefill_combine")
def build_prefill_combine(caps: Caps, n_heads: int, head_dim: int) -> Kernel:
    """Merges attention_prefill's split variant: grid (n_tok, n_heads), params{n_tok, splits}."""
    if n_heads < 1 or head_dim < 1:
        raise UnsupportedKernel(f"attention_prefill_combine: bad dims n_heads={n_heads}, "
                                f"head_dim={head_dim}")
    wg = min(64, caps.max_workgroup_size)
    key = KernelKey(op="attention_prefill_combine", fmt="f32", wg=wg, tile=1, f16=False,
                    dims=(("nh", n_heads), ("hd", head_dim), ("ms", MAX_SPLITS)))
    src = render(load_template("attention_prefill_combine"), {
        "N_HEADS": str(n_heads), "HEAD_DIM": str(head_dim), "WG": str(wg),
        "MAX_SPLITS": str(MAX_SPLITS), "PARAMS": COMBINE_PARAMS.wgsl()}, key.slug())
    return Kernel(key=key, wgsl=src, params=COMBINE_PARAMS, workgroup_size=(wg, 1, 1),
                  features=features(False, False), bindings=(
        Binding("part", "read", "(n_tok, n_heads, MAX_SPLITS, head_dim + 2) f32"),
        Binding("out", "read_write", "(n_tok, n_heads*head_dim) f32"),
        Binding("params", "uniform", "Params{n_tok, splits}")),
        grid=Grid(lambda n_tok=1: (n_tok, n_heads, 1), ("n_tok",)))


def split_plan(pos: int, n_tok: int, tk: int, keys: int) -> tuple[int, int]:
    """(splits, span) of the split variant for a chunk of ``n_tok`` rows after ``pos`` cached
    positions: one split per ``keys`` positions of the chunk's context, at most MAX_SPLITS, each a
    whole number of ``tk``-key tiles; (1, 0) = the one-pass kernel (a short cached prefix)."""
    ctx = pos + n_tok
    if keys <= 0 or pos < keys:
        return 1, 0
    splits = min(MAX_SPLITS, -(-ctx // keys))
    span = -(-(-(-ctx // splits)) // tk) * tk
    return -(-ctx // span), span


def _prefill_case(n_heads, n_kv_heads, head_dim, kv, n_tok, pos, arith="f32",
                  tiles="auto") -> Case:
    dims = {"n_heads": n_heads, "n_kv_heads": n_kv_heads, "head_dim": head_dim, "kv": kv,
            **({"arith": arith} if arith != "f32" else {}),
            **({"tiles": tiles} if tiles != "auto" else {})}

    def make(rng):
        import numpy as np
        kb, vb, k, v = kv_arrays(rng, pos + n_tok + 2, n_kv_heads, head_dim, kv, pos + n_tok)
        q = rng.standard_normal((n_tok, n_heads * head_dim)).astype(np.float32)
        return {"buffers": {"q": q, "k_cache": kb, "v_cache": vb, "out": q.nbytes},
                "params": {"n_tok": n_tok, "pos": pos}, "grid": {"n_tok": n_tok}, "k": k, "v": v}

    def ref(inp):
        import numpy as np
        return {"out": ref_attention(inp["buffers"]["q"], inp["k"], inp["v"], n_heads, n_kv_heads,
                                     head_dim, pos).astype(np.float32)}

    return Case(op="attention_prefill", dims=dims, make_inputs=make, reference=ref, tol="attention",
                tol_f16="attention_f16",
                label=f"nh={n_heads},nkv={n_kv_heads},hd={head_dim},{kv},n_tok={n_tok},pos={pos}"
                      + (f",arith={arith}" if arith != "f32" else "")
                      + (f",tiles={tiles}" if tiles != "auto" else ""))


def _split_case(n_heads, n_kv_heads, head_dim, kv, n_tok, pos, keys, tiles="auto") -> Case:
    """The split variant + attention_prefill_combine (``keys`` positions a split, as
    ``split_plan``) against the same reference as the one-pass kernel."""
    dims = {"n_heads": n_heads, "n_kv_heads": n_kv_heads, "head_dim": head_dim, "kv": kv,
            **({"tiles": tiles} if tiles != "auto" else {})}

    def make(rng):
        import numpy as np
        kb, vb, k, v = kv_arrays(rng, pos + n_tok + 2, n_kv_heads, head_dim, kv, pos + n_tok)
        q = rng.standard_normal((n_tok, n_heads * head_dim)).astype(np.float32)
        part = n_tok * n_heads * MAX_SPLITS * (head_dim + 2) * 4
        return {"buffers": {"q": q, "k_cache": kb, "v_cache": vb, "part": part, "out": q.nbytes},
                "k": k, "v": v}

    def ref(inp):
        import numpy as np
        return {"out": ref_attention(inp["buffers"]["q"], inp["k"], inp["v"], n_heads, n_kv_heads,
                                     head_dim, pos).astype(np.float32)}

    def steps(caps, inp):
        k1 = build_prefill(caps, **dims, split=1)
        splits, span = split_plan(pos, n_tok, k1.meta["tk"], keys)
        assert splits > 1, (splits, span)   # the case must exercise the split path
        k2 = build_prefill_combine(caps, n_heads, head_dim)
        return [(k1, {"n_tok": n_tok, "pos": pos, "span": span}, k1.grid(n_tok=n_tok, splits=splits)),
                (k2, {"n_tok": n_tok, "splits": splits}, k2.grid(n_tok=n_tok))]

    return Case(op="attention_prefill", dims=dims, make_inputs=make, reference=ref, tol="attention",
                steps=steps, label=f"nh={n_heads},nkv={n_kv_heads},hd={head_dim},{kv},n_tok={n_tok},"
                                   f"pos={pos},split,keys={keys}"
                                   + (f",tiles={tiles}" if tiles != "auto" else ""))


@register_cases("attention_prefill", covers=("attention_prefill_combine",))
def prefill_cases(quick: bool) -> list[Case]:
    out = [_prefill_case(8, 8, 64, "f16", 1, 0), _prefill_case(9, 3, 64, "f32", 5, 12),
           _prefill_case(8, 2, 128, "f16", 33, 0), _prefill_case(4, 1, 128, "f32", 17, 3),
           _prefill_case(4, 2, 16, "f16", 40, 3), _prefill_case(3, 1, 32, "f32", 9, 0),
           _prefill_case(8, 2, 128, "f16", 33, 5, arith="f16"),
           _prefill_case(9, 3, 64, "f32", 17, 0, arith="f16"),
           # split variant: rows whose causal end precedes the last split (all masked there),
           # a partial last tile, GQA 4 / 3 / 1, f16 and f32 KV, the most splits
           _split_case(4, 1, 128, "f32", 17, 40, 16), _split_case(9, 3, 64, "f16", 5, 300, 64),
           _split_case(32, 8, 128, "f16", 33, 700, 128), _split_case(8, 2, 64, "f16", 9, 1000, 32),
           # GQA-row tiles, each config at least once (partial token and key tiles: n_tok and
           # pos + n_tok not multiples of TQ / TK), today's kernel explicitly, G = 1 / 3 / 4 / 8;
           # the two 48 KiB configs at head_dim 32 (within lavapipe's 32 KiB, the same code)
           _prefill_case(8, 2, 32, "f16", 37, 29, tiles="4x4/64/128"),
           _split_case(16, 2, 32, "f32", 21, 90, 32, tiles="4x4/32/128"),
           _prefill_case(32, 8, 32, "f16", 70, 3, tiles="8x4/64/64"),
           _split_case(8, 2, 32, "f16", 15, 200, 64, tiles="4x8/64/64"),
           _prefill_case(4, 1, 64, "f16", 9, 66, tiles="4x4/64/64"),
           _prefill_case(16, 2, 128, "f32", 13, 50, tiles="4x2/32/64"),
           _prefill_case(4, 4, 64, "f32", 45, 7, tiles="4x4/32/64"),
           _prefill_case(9, 3, 64, "f16", 21, 11, tiles="3x4/32/128"),
           _prefill_case(8, 2, 128, "f16", 19, 40, tiles="2x2/16/64"),
           _prefill_case(8, 2, 64, "f32", 11, 5, tiles="v1"),
           _split_case(32, 8, 64, "f16", 23, 300, 64, tiles="4x2/32/128"),
           _split_case(8, 1, 128, "f32", 10, 130, 32, tiles="4x2/32/64")]
    if not quick:
        out += [_prefill_case(32, 8, 128, "f16", 33, 4000), _prefill_case(9, 3, 64, "f16", 33, 100),
                _prefill_case(8, 1, 64, "f16", 5, 17), _prefill_case(4, 4, 128, "f16", 130, 0)]
    return out
