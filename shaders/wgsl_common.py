"""WGSL helpers every op family shares, written once: the weight formats' bindings and accessors,
binding declarations with shape comments, enable lines and device features, subgroup entry-point
arguments and workgroup reductions (subgroup variant + shared-memory fallback), float literals,
grid folding, and the KV-cache store.

Pure Python (runs in Pyodide). The format layouts themselves are modelfmt/formats.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelfmt.formats import KQUANT, PART_NAMES, QUANTIZED, check_shape

from .core import Binding, Params, UnsupportedKernel, load_template
from .kquant import sb_binding

EPW = {"q4_0": 8, "q4_1": 8, "q8_0": 4, "f16": 2, "f32": 1,   # columns per u32 word of qs/data
       "q4_k": 8, "q5_k": 8, "q6_k": 8}
SCALED = QUANTIZED + KQUANT   # per-block scales: R rows a workgroup, the int8-x decode paths
BASE = tuple(f for f in EPW if f not in KQUANT)   # the op modules' own check cases (K: kquant_cases)
MAX_GRID = 65535   # maxComputeWorkgroupsPerDimension default


# ---- weight formats (matvec, matmul, gate_up, embed, qkv_rope_decode) ----
@dataclass(frozen=True)
class WeightSpec:
    """What a weight-reading kernel computes, for the decode (``matvec.decode_kernel``) and tiled
    (``matmul.tiled_kernel``) builders: ``weights`` are binding prefixes (``w_``, or ``w1_`` and
    ``w3_`` for gate_up) of (rows, cols) matrices in ``fmt``; ``store`` is the WGSL that writes an
    output element of binding ``out_name``; ``semantics`` a one-line comment; ``extra_dims``
    slug dims of the caller (e.g. accumulate)."""

    op: str
    fmt: str
    rows: int
    cols: int
    group_size: int
    weights: tuple[str, ...]
    out_name: str
    store: str
    semantics: str
    params: Params
    extra_dims: tuple = ()


def tiled_bindings(spec: WeightSpec) -> list:
    """[(Binding, WGSL type)] of a prefill tile (matmul.py's FMA tiles and matmul_sgmat.py's matrix
    tiles): x, each weight's parts, the output, the params uniform."""
    xvec = spec.cols % 4 == 0
    binds = [(Binding("x", "read", "(n_tok, cols) f32" + (" as vec4" if xvec else "")),
              "vec4<f32>" if xvec else "f32")]
    for p in spec.weights:
        binds += weight_bindings(spec.fmt, p, 1, "rows", "cols")
    return binds + [(Binding(spec.out_name, "read_write", "(n_tok, rows) f32"), "f32"),
                    (Binding("params", "uniform", "Params"), "Params")]


def check_weight(op: str, fmt: str, rows: int, cols: int, group_size: int) -> None:
    if fmt not in EPW:
        raise UnsupportedKernel(f"{op}: unknown weight format {fmt!r}; known: {', '.join(EPW)}")
    why = check_shape(fmt, rows, cols, group_size)
    if why or rows < 1 or cols < 1:
        raise UnsupportedKernel(f"{op}: {fmt} ({rows}, {cols}): {why or 'empty matrix'}")


def words_per_row(fmt: str, cols: int) -> int:
    return cols // EPW[fmt]


def pick_vec(fmt: str, cols: int, group_size: int) -> int:
    """4 (vec4<u32> loads) when a row's words come in whole 16-byte chunks that never straddle a
    quantization group, else 1."""
    wpr = words_per_row(fmt, cols)
    ce = 4 * EPW[fmt]
    ok_group = fmt not in QUANTIZED or group_size % ce == 0
    return 4 if wpr % 4 == 0 and ok_group else 1


def weight_bindings(fmt: str, prefix: str, vec: int, rows_doc: str, cols_doc: str):
    """[(Binding, WGSL element type)] of one weight, in part order (modelfmt/formats.py)."""
    out = []
    for part in PART_NAMES[fmt]:
        if part == "sb":   # K-quant super-block records (shaders/kquant.py)
            out.append(sb_binding(fmt, prefix, rows_doc, cols_doc))
            continue
        main = part in ("qs", "data")
        if main:
            per = {"q8_0": "/4", "f16": "/2", "f32": ""}.get(fmt, "/8")
            shape = f"({rows_doc}, {cols_doc}{per}) u32" + (" as vec4" if vec == 4 else "")
        else:
            shape = f"({rows_doc} * {cols_doc}/GS) f16, 2 per u32"
        out.append((Binding(prefix + part, "read", shape),
                    "vec4<u32>" if main and vec == 4 else "u32"))
    return out


def weight_fns(fmt: str, prefix: str, vec: int) -> str:
    """WGSL: word/chunk accessors of the main part and the format's dequantization helpers
    (scale/min, elem4, elem1, nibble/byte unpacking), all prefixed with ``prefix``."""
    main = prefix + PART_NAMES[fmt][0]
    if vec == 4:
        acc = (f"fn {prefix}word(i: u32) -> u32 {{ return {main}[i >> 2u][i & 3u]; }}\n"
               f"fn {prefix}chunk(i: u32) -> vec4<u32> {{ return {main}[i]; }}\n")
    else:
        acc = (f"fn {prefix}word(i: u32) -> u32 {{ return {main}[i]; }}\n"
               f"fn {prefix}chunk(i: u32) -> vec4<u32> {{ return vec4<u32>({main}[i], 0u, 0u, 0u); }}\n")
    return (acc + load_template(f"matvec_elem_{fmt}")).replace("{{W}}", prefix)


def binding_decls(bindings) -> tuple[str, tuple[Binding, ...]]:
    """[(Binding, element type)] -> (WGSL declarations with shape comments, bindings tuple)."""
    lines = []
    for i, (b, ty) in enumerate(bindings):
        if b.kind == "uniform":
            lines.append(f"@group(0) @binding({i}) var<uniform> {b.name}: {ty};")
            continue
        mode = "read" if b.kind == "read" else "read_write"
        lines.append(f"@group(0) @binding({i}) var<storage, {mode}> {b.name}: array<{ty}>;"
                     f"  // {b.shape}")
    return "\n".join(lines) + "\n", tuple(b for b, _ in bindings)


def fold_grid(n: int) -> tuple[int, int]:
    """(gx, gy) covering n workgroups within the 65535-per-dimension limit."""
    gx = max(1, min(n, MAX_GRID))
    return gx, -(-n // gx)


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


# ---- enable lines, features, subgroup arguments, reductions ----
def enable_lines(f16: bool, subgroups: bool) -> str:
    out = []
    if f16:
        out.append("enable f16;")
    if subgroups:  # the harness comments this line out for naga, which rejects it
        out.append("enable subgroups;")
    return "\n".join(out)


def features(f16: bool, subgroups: bool) -> tuple[str, ...]:
    """WebGPU feature names a device needs for these variants."""
    return (("shader-f16",) if f16 else ()) + (("subgroups",) if subgroups else ())


# Subgroup builtins of the entry point. Not subgroup_id / num_subgroups: those need WGSL's
# `subgroup_id` language extension (Chrome 144+, not Firefox/Safari); like matvec, the subgroup of
# an invocation is taken as local_invocation_index / subgroup_size (subgroups are consecutive
# index ranges on NVIDIA, AMD, Intel, lavapipe, SwiftShader; Dawn emulates subgroup_id so on D3D).
SG_ARGS = (", @builtin(subgroup_invocation_id) sg_lane: u32"
           ", @builtin(subgroup_size) sg_size: u32")
SG_CALL = ", sg_lane, sg_size"
SG_IDS = "let sg_id = {lid} / sg_size;\n    let n_sg = ({wg} + sg_size - 1u) / sg_size;"


def wg_reduce(name: str, op: str, wg: int, subgroups: bool) -> str:
    """WGSL ``fn name(v: f32, lid: u32[, sg_lane, sg_size]) -> f32``: the workgroup-wide sum or max.

    Must be called from uniform control flow by every invocation. ``op`` is "sum" or "max".
    Subgroup variant: one subgroup reduction, one slot per subgroup in shared memory, every
    invocation then folds the (few) slots itself. Fallback: a shared-memory tree (WG is a power
    of two)."""
    comb = "a + b" if op == "sum" else "max(a, b)"
    sgop = "subgroupAdd" if op == "sum" else "subgroupMax"
    buf = f"red_{name}"
    if subgroups:
        return f"""
var<workgroup> {buf}: array<f32, {max(1, wg // 4)}>;  // one slot per subgroup (size >= 4)
fn {name}_comb(a: f32, b: f32) -> f32 {{ return {comb}; }}
fn {name}(v: f32, lid: u32, sg_lane: u32, sg_size: u32) -> f32 {{
    {SG_IDS.format(lid="lid", wg=f"{wg}u")}
    let s = {sgop}(v);
    if (sg_lane == 0u) {{ {buf}[sg_id] = s; }}
    workgroupBarrier();
    var r = {buf}[0];
    for (var i = 1u; i < n_sg; i++) {{ r = {name}_comb(r, {buf}[i]); }}
    workgroupBarrier();  // the slots are reused by the next call
    return r;
}}
"""
    return f"""
var<workgroup> {buf}: array<f32, {wg}>;
fn {name}_comb(a: f32, b: f32) -> f32 {{ return {comb}; }}
fn {name}(v: f32, lid: u32) -> f32 {{
    {buf}[lid] = v;
    workgroupBarrier();
    for (var s = {wg}u / 2u; s > 0u; s >>= 1u) {{
        if (lid < s) {{ {buf}[lid] = {name}_comb({buf}[lid], {buf}[lid + s]); }}
        workgroupBarrier();
    }}
    let r = {buf}[0];
    workgroupBarrier();  // the tree buffer is reused by the next call
    return r;
}}
"""


def pow2_at_most(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= min(n, cap):
        p *= 2
    return p


def wgsl_float(v: float) -> str:
    s = repr(float(v))
    return s if ("." in s or "e" in s) else s + ".0"


# ---- KV cache ----
def kv_store(kv: str, secs: str) -> str:
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
