"""Rotate-half RoPE (HF layout) with the Llama-3 ``llama3`` frequency scaling or without.

The frequencies are not computed in WGSL: ``modelfmt.config.ModelConfig.rope_inv_freq()`` gives the
head_dim/2 inverse frequencies (scaled or plain) and the driver uploads them once as the ``inv_freq``
f32 buffer, so one kernel serves both kinds. The angle (pos + t) * inv_freq[j] is rounded to f32 as
transformers computes it, then reduced to [-pi, pi] before cos/sin (WGSL bounds their accuracy only
there; positions reach 1e5 radians).

  rope   x (n_tok, n_heads*head_dim) f32 read_write, inv_freq (head_dim/2) f32, params{n_tok, pos}
         grid: (ceil(n_heads*head_dim/2 / 64), n_tok, 1)

``ROPE_FN`` (the WGSL helpers ``rope_cs`` and ``rope_rotate``) is shared with the fused qkv kernel.
"""

from __future__ import annotations

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .registry import Case, register, register_cases

ROPE_FN = """
const TWO_PI_HI: f32 = 6.28125;                 // 8 significant bits: k * TWO_PI_HI is exact (k < 2^15)
const TWO_PI_LO: f32 = 0.0019353071795864769;   // 2*pi - TWO_PI_HI
const INV_TWO_PI: f32 = 0.15915494309189535;
// (cos, sin) of the f32 angle pos * f, after a Cody-Waite reduction to [-pi, pi].
fn rope_cs(pos: u32, f: f32) -> vec2<f32> {
    let a = f32(pos) * f;
    let k = round(a * INV_TWO_PI);
    let r = (a - k * TWO_PI_HI) - k * TWO_PI_LO;
    return vec2<f32>(cos(r), sin(r));
}
// (x[j], x[j + half]) rotated: rotate-half convention of HF Llama.
fn rope_rotate(v: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.y * cs.x + v.x * cs.y);
}
"""

PARAMS = Params((("n_tok", "u32"), ("pos", "u32")))
WG = 64


@register("rope")
def build_rope(caps: Caps, n_heads: int, head_dim: int) -> Kernel:
    if n_heads <= 0 or head_dim <= 0 or head_dim % 2:
        raise UnsupportedKernel(f"rope: need n_heads > 0 and an even head_dim, got "
                                f"{n_heads}, {head_dim}")
    key = KernelKey(op="rope", wg=WG, dims=(("nh", n_heads), ("hd", head_dim)))
    src = render(load_template("rope"), {"N_HEADS": str(n_heads), "HEAD_DIM": str(head_dim),
                                         "WG": str(WG), "PARAMS": PARAMS.wgsl(),
                                         "ROPE_FN": ROPE_FN}, key.slug())
    pairs = n_heads * head_dim // 2
    return Kernel(key=key, wgsl=src, params=PARAMS, workgroup_size=(WG, 1, 1), bindings=(
        Binding("x", "read_write", "(n_tok, n_heads*head_dim) f32"),
        Binding("inv_freq", "read", "(head_dim/2) f32"),
        Binding("params", "uniform", "Params{n_tok, pos}")),
        grid=Grid(lambda n_tok=1: ((pairs + WG - 1) // WG, n_tok, 1), ("n_tok",)))


# ---- numpy reference ----
def ref_angles(positions, inv_freq):
    """(len(positions), head_dim/2) angles rounded to f32 as transformers computes them."""
    import numpy as np
    p = np.asarray(positions, np.float32)[:, None]
    return (p * np.asarray(inv_freq, np.float32)[None, :]).astype(np.float32)


def ref_rope(x, n_heads: int, head_dim: int, pos: int, inv_freq):
    """x (n_tok, n_heads*head_dim) -> rotated float64 copy (rotate-half, HF layout)."""
    import numpy as np
    n_tok = x.shape[0]
    a = ref_angles(np.arange(pos, pos + n_tok), inv_freq).astype(np.float64)  # (n_tok, half)
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    xh = np.asarray(x, np.float64).reshape(n_tok, n_heads, head_dim)
    half = head_dim // 2
    x1, x2 = xh[..., :half], xh[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(x.shape)


def case_inv_freq(head_dim: int, scaled: bool):
    """inv_freq of a Llama-3.1-like config (theta 500000, llama3 scaling factor 8) or plain."""
    from modelfmt.config import ModelConfig, RopeScaling
    rs = RopeScaling(8.0, 1.0, 4.0, 8192) if scaled else None
    cfg = ModelConfig(vocab_size=8, hidden_size=head_dim, intermediate_size=8,
                      num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                      head_dim=head_dim, rms_norm_eps=1e-5,
                      rope_theta=500000.0 if scaled else 10000.0,
                      max_position_embeddings=131072, tie_word_embeddings=False, rope_scaling=rs)
    return cfg.rope_inv_freq()


# ---- check cases ----
def _case(n_heads, head_dim, n_tok, pos, scaled) -> Case:
    def make(rng):
        import numpy as np
        x = rng.standard_normal((n_tok, n_heads * head_dim)).astype(np.float32)
        inv = np.asarray(case_inv_freq(head_dim, scaled), np.float32)
        return {"buffers": {"x": x, "inv_freq": inv}, "params": {"n_tok": n_tok, "pos": pos},
                "grid": {"n_tok": n_tok}}

    def ref(inp):
        import numpy as np
        b = inp["buffers"]
        return {"x": ref_rope(b["x"], n_heads, head_dim, pos, b["inv_freq"]).astype(np.float32)}

    return Case(op="rope", dims={"n_heads": n_heads, "head_dim": head_dim}, make_inputs=make,
                reference=ref, tol="f32",
                label=f"nh={n_heads},hd={head_dim},n_tok={n_tok},pos={pos}," +
                      ("llama3" if scaled else "plain"))


@register_cases("rope")
def rope_cases(quick: bool) -> list[Case]:
    out = [_case(3, 64, 5, 0, False), _case(32, 128, 1, 4095, True), _case(8, 128, 33, 17, True),
           _case(1, 64, 1, 131000, True)]
    if not quick:
        out += [_case(9, 64, 33, 4000, False), _case(4, 128, 5, 100000, False)]
    return out
