"""RoPE on q in place + RoPE'd k and v appended to the KV cache: the prefill tail of the QKV
projection when it runs as three tiled matmuls.

    kernel("rope_append", caps, n_heads, n_kv_heads, head_dim, kv="f16")
      bindings: q (n_tok, n_heads*hd) f32 rw | k_new, v_new (n_tok, n_kv*hd) f32 | inv_freq
                (hd/2) f32 | k_cache, v_cache (max_ctx, n_kv, hd) f16-packed or f32 rw | params
      params {n_tok, pos}; grid(n_tok=) -> (ceil((n_heads*hd/2 + n_kv*hd/2) / 64), n_tok, 1)
      q[t] = rope(q[t], pos + t); k_cache[pos + t] = rope(k_new[t], pos + t);
      v_cache[pos + t] = v_new[t]

Why: a fused QKV + RoPE prefill kernel with a token-blocked loop (the former ``qkv_rope``)
re-read its weights once per 4 tokens and took 63 % of an 8B-shape 512-token prefill on an H200
(docs/PERFORMANCE.md, ``driver bench --profile``); the tiled matmul does the same projections at its own FLOP rate and this pass adds one cheap
elementwise dispatch. Decode keeps the fused qkv_rope_decode. The angle arithmetic is rope's
(``ROPE_FN``) and the cache store (``wgsl_common.kv_store``) is shared with qkv_rope_decode, so both
paths write the same bits for the same projections.

Pure Python (runs in Pyodide); numpy only inside the check cases.
"""

from __future__ import annotations

from .core import Binding, Caps, Grid, Kernel, KernelKey, UnsupportedKernel, load_template, render
from .registry import Case, register, register_cases
from .rope import PARAMS, ROPE_FN
from .wgsl_common import kv_store

OP = "rope_append"
WG = 64


@register(OP)
def build_rope_append(caps: Caps, n_heads: int, n_kv_heads: int, head_dim: int,
                      kv: str = "f16") -> Kernel:
    if kv not in ("f16", "f32"):
        raise UnsupportedKernel(f"{OP}: kv must be 'f16' or 'f32', got {kv!r}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads or head_dim <= 0 or head_dim % 4:
        raise UnsupportedKernel(f"{OP}: need n_heads % n_kv_heads == 0 and head_dim % 4 == 0, "
                                f"got {n_heads}, {n_kv_heads}, {head_dim}")
    key = KernelKey(op=OP, wg=WG, dims=(("nh", n_heads), ("nkv", n_kv_heads), ("hd", head_dim),
                                        ("kv", 16 if kv == "f16" else 32)))
    src = render(load_template(OP), {
        "KV": kv, "KV_TY": "u32" if kv == "f16" else "f32", "PARAMS": PARAMS.wgsl(),
        "N_HEADS": n_heads, "N_KV": n_kv_heads, "HEAD_DIM": head_dim, "WG": WG,
        "ROPE_FN": ROPE_FN, "KV_STORE": kv_store(kv, "kv")}, key.slug())
    units = (n_heads + n_kv_heads) * head_dim // 2
    kv_doc = f"(max_ctx, n_kv_heads, head_dim) {kv}" + (" packed 2 per u32" if kv == "f16" else "")
    return Kernel(key=key, wgsl=src, params=PARAMS, workgroup_size=(WG, 1, 1), bindings=(
        Binding("q", "read_write", "(n_tok, n_heads*head_dim) f32"),
        Binding("k_new", "read", "(n_tok, n_kv_heads*head_dim) f32"),
        Binding("v_new", "read", "(n_tok, n_kv_heads*head_dim) f32"),
        Binding("inv_freq", "read", "(head_dim/2) f32"),
        Binding("k_cache", "read_write", kv_doc),
        Binding("v_cache", "read_write", kv_doc),
        Binding("params", "uniform", "Params{n_tok, pos}")),
        grid=Grid(lambda n_tok=1: ((units + WG - 1) // WG, n_tok, 1), ("n_tok",)))


# ---- check cases ----
def _case(n_heads, n_kv_heads, head_dim, kv, n_tok, pos, scaled=True) -> Case:
    max_ctx = pos + n_tok + 2

    def make(rng):
        import numpy as np

        from .rope import case_inv_freq
        qd, kvd = n_heads * head_dim, n_kv_heads * head_dim
        dt = np.float16 if kv == "f16" else np.float32
        return {"buffers": {
            "q": rng.standard_normal((n_tok, qd)).astype(np.float32),
            "k_new": rng.standard_normal((n_tok, kvd)).astype(np.float32),
            "v_new": rng.standard_normal((n_tok, kvd)).astype(np.float32),
            "inv_freq": np.asarray(case_inv_freq(head_dim, scaled), np.float32),
            # old contents: rows outside pos .. pos+n_tok-1 must survive
            "k_cache": rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt),
            "v_cache": rng.standard_normal((max_ctx, n_kv_heads, head_dim)).astype(dt)},
            "params": {"n_tok": n_tok, "pos": pos}, "grid": {"n_tok": n_tok}}

    def ref(inp):
        import numpy as np

        from .rope import ref_rope
        b = inp["buffers"]
        q = ref_rope(b["q"], n_heads, head_dim, pos, b["inv_freq"])
        k = ref_rope(b["k_new"], n_kv_heads, head_dim, pos, b["inv_freq"])
        kc, vc = b["k_cache"].copy(), b["v_cache"].copy()
        kc[pos:pos + n_tok] = k.reshape(n_tok, n_kv_heads, head_dim)
        vc[pos:pos + n_tok] = b["v_new"].reshape(n_tok, n_kv_heads, head_dim)
        return {"q": q.astype(np.float32), "k_cache": kc, "v_cache": vc}

    return Case(op=OP, dims=dict(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                                 kv=kv), make_inputs=make, reference=ref,
                tol="qkv_kv_f16" if kv == "f16" else "f32",
                label=f"nh={n_heads} nkv={n_kv_heads} hd={head_dim} {kv} n_tok={n_tok} "
                      f"pos={pos}" + ("" if scaled else " plain"))


@register_cases(OP)
def rope_append_cases(quick: bool) -> list[Case]:
    out = [_case(4, 1, 64, "f16", 5, 3), _case(3, 3, 64, "f32", 1, 0, scaled=False),
           _case(8, 2, 128, "f16", 17, 4000), _case(9, 3, 64, "f16", 33, 100)]
    if not quick:
        out += [_case(8, 1, 128, "f16", 64, 131000 - 64), _case(6, 2, 4, "f32", 7, 9),
                _case(32, 8, 64, "f32", 40, 1)]
    return out
