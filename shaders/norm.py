"""RMSNorm and residual-add + RMSNorm kernels, their numpy references and check cases.

  rmsnorm      x (n_tok, hidden) f32, w (hidden) f32, out (n_tok, hidden) f32, params{n_tok}
  add_rmsnorm  x (n_tok, hidden) f32 read_write, delta (n_tok, hidden), w, out, params{n_tok}
               x += delta; out = x / rms(x) * w
  grid: (n_tok, 1, 1), one workgroup per token row.
"""

from __future__ import annotations

from .core import Binding, Caps, Grid, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .registry import Case, register, register_cases
from .wgsl_common import SG_ARGS, SG_CALL, enable_lines, features, pow2_at_most, wg_reduce, wgsl_float

PARAMS = Params((("n_tok", "u32"),))
MAX_UNROLL = 16   # elements per invocation written out; longer rows loop


def _norm_body(op: str, hv: int, wg: int) -> str:
    """WGSL of the two passes (sum of squares, scale) over one row of ``hv`` VT elements."""
    add = op == "add_rmsnorm"
    n = -(-hv // wg)
    reduce = "    let r = inverseSqrt(wg_sum(acc, lid{{SG_CALL}}) * INV_HIDDEN + EPS);\n"
    if n > MAX_UNROLL:
        load = ("let v = x[base + i] + delta[base + i];\n        x[base + i] = v;" if add
                else "let v = x[base + i];")
        return ("    var acc = 0.0;\n"
                "    for (var i = lid; i < HIDDEN_V; i += WG) {\n"
                f"        {load}\n        acc += sq(v);\n    }}\n" + reduce +
                "    for (var i = lid; i < HIDDEN_V; i += WG) {\n"
                "        out[base + i] = x[base + i] * r * w[i];\n    }")
    out = ""
    for k in range(n):
        out += (f"    let i{k} = min(lid + {k * wg}u, HIDDEN_V - 1u);   // clamped: in bounds\n"
                f"    let x{k} = x[base + i{k}]" + (f" + delta[base + i{k}]" if add else "") + ";\n"
                f"    let w{k} = w[i{k}];\n")
    full = hv % wg == 0
    ok = (lambda k: "true") if full else (lambda k: f"lid + {k * wg}u < HIDDEN_V")
    out += "    var acc = 0.0;\n"
    for k in range(n):
        out += f"    acc += select(0.0, sq(x{k}), {ok(k)});\n"
        if add:
            out += f"    if ({ok(k)}) {{ x[base + i{k}] = x{k}; }}\n"
    out += reduce
    for k in range(n):
        out += f"    if ({ok(k)}) {{ out[base + i{k}] = x{k} * r * w{k}; }}\n"
    return out.rstrip("\n")


def build(op: str, caps: Caps, hidden: int, eps: float = 1e-5) -> Kernel:
    """``op`` in ("rmsnorm", "add_rmsnorm"); subgroup reduction when ``caps`` has subgroups."""
    if op not in ("rmsnorm", "add_rmsnorm"):
        raise UnsupportedKernel(f"{op}: not a norm op")
    if hidden <= 0 or not (0 < eps < 1):
        raise UnsupportedKernel(f"{op}: need hidden > 0 and 0 < eps < 1, got {hidden}, {eps}")
    sg = caps.subgroups
    vec = 4 if hidden % 4 == 0 else 1
    hv = hidden // vec
    wg = pow2_at_most(max(hv, 32), min(256, caps.max_workgroup_size))
    vt = "vec4<f32>" if vec == 4 else "f32"
    xkind = "read_write" if op == "add_rmsnorm" else "read"
    names = (["x", "delta", "w", "out"] if op == "add_rmsnorm" else ["x", "w", "out"])
    kinds = {"x": xkind, "delta": "read", "w": "read", "out": "read_write"}
    shapes = {"x": "(n_tok, hidden) f32", "delta": "(n_tok, hidden) f32", "w": "(hidden) f32",
              "out": "(n_tok, hidden) f32"}
    decl = "\n".join(
        f"@group(0) @binding({i}) var<storage, {kinds[n]}> {n}: array<VT>;  // {shapes[n]}"
        for i, n in enumerate(names))
    body = _norm_body(op, hv, wg)
    key = KernelKey(op=op, wg=wg, vec=vec, subgroups=sg, dims=(("h", hidden),))
    src = render(load_template("norm"), {
        "ENABLES": enable_lines(False, sg) + f"\nalias VT = {vt};",
        "HIDDEN_V": str(hv), "EPS": wgsl_float(eps), "INV_HIDDEN": wgsl_float(1.0 / hidden),
        "WG": str(wg), "PARAMS": PARAMS.wgsl(), "BINDINGS": decl,
        "PARAMS_BINDING": str(len(names)),
        "SQ": "return dot(v, v);" if vec == 4 else "return v * v;",
        "REDUCE": wg_reduce("wg_sum", "sum", wg, sg), "BODY": body,
        "SG_ARGS": SG_ARGS if sg else "", "SG_CALL": SG_CALL if sg else "",
    }, key.slug())
    binds = tuple(Binding(n, kinds[n], shapes[n]) for n in names) + (
        Binding("params", "uniform", "Params{n_tok}"),)
    return Kernel(key=key, wgsl=src, bindings=binds, params=PARAMS, workgroup_size=(wg, 1, 1),
                  features=features(False, sg),
                  grid=Grid(lambda n_tok=1: (n_tok, 1, 1), ("n_tok",)))


# ---- numpy references (float64) ----
def ref_rmsnorm(x, w, eps):
    """x (n_tok, hidden), w (hidden) -> (n_tok, hidden) float64."""
    import numpy as np
    x = np.asarray(x, np.float64)
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return x * r * np.asarray(w, np.float64)


def ref_add_rmsnorm(x, delta, w, eps):
    """Returns (new x in f32 as the kernel stores it, out float64)."""
    import numpy as np
    s = (np.asarray(x, np.float32) + np.asarray(delta, np.float32)).astype(np.float32)
    return s, ref_rmsnorm(s, w, eps)


@register("rmsnorm")
def build_rmsnorm(caps: Caps, hidden: int, eps: float = 1e-5) -> Kernel:
    return build("rmsnorm", caps, hidden, eps)


@register("add_rmsnorm")
def build_add_rmsnorm(caps: Caps, hidden: int, eps: float = 1e-5) -> Kernel:
    return build("add_rmsnorm", caps, hidden, eps)


# ---- check cases ----
def _norm_case(op: str, hidden: int, n_tok: int, eps: float) -> Case:
    def make(rng):
        import numpy as np
        x = rng.standard_normal((n_tok, hidden)).astype(np.float32) * 3
        w = rng.standard_normal(hidden).astype(np.float32)
        bufs = {"x": x, "w": w, "out": x.nbytes}
        if op == "add_rmsnorm":
            bufs["delta"] = rng.standard_normal((n_tok, hidden)).astype(np.float32)
        return {"buffers": bufs, "params": {"n_tok": n_tok}, "grid": {"n_tok": n_tok}}

    def ref(inp):
        import numpy as np
        b = inp["buffers"]
        # f32 expected arrays: the harness views the GPU bytes with the reference's dtype
        if op == "rmsnorm":
            return {"out": ref_rmsnorm(b["x"], b["w"], eps).astype(np.float32)}
        x, out = ref_add_rmsnorm(b["x"], b["delta"], b["w"], eps)
        return {"out": out.astype(np.float32), "x": x}

    return Case(op=op, dims={"hidden": hidden, "eps": eps}, make_inputs=make, reference=ref,
                tol="f32", label=f"hidden={hidden},n_tok={n_tok}")


@register_cases("rmsnorm")
def rmsnorm_cases(quick: bool) -> list[Case]:
    return [_norm_case("rmsnorm", h, n, 1e-5) for h, n in ((1, 1), (7, 3), (576, 5), (4096, 2),
                                                            (20000, 1))]   # looped (> 16 per lane)


@register_cases("add_rmsnorm")
def add_rmsnorm_cases(quick: bool) -> list[Case]:
    return [_norm_case("add_rmsnorm", h, n, 1e-6) for h, n in ((1, 2), (7, 1), (576, 5),
                                                                (4096, 2))]
