"""Decode matrix-vector kernels (M = 1) for every weight format, and the weight-format plumbing
(bindings, word accessors, dequantization snippets) shared with matmul, gate_up and embed.

    kernel("matvec", caps, fmt, rows, cols, group_size=32, accumulate=0)
        bindings: x (cols) f32 | w_<parts> | y (row_offset + rows) f32 | params {row_offset}
        y[row_offset + r] (+)= sum_c W[r, c] x[c]

Pure Python (runs in Pyodide); numpy only inside the check-case functions.
"""

from __future__ import annotations

from modelfmt.formats import PART_NAMES, QUANTIZED, check_shape

from .core import Binding, Caps, Kernel, KernelKey, Params, UnsupportedKernel, load_template, render
from .registry import Case, register, register_cases

EPW = {"q4_0": 8, "q4_1": 8, "q8_0": 4, "f16": 2, "f32": 1}  # columns per u32 word of qs/data
MAX_GRID = 65535
# decode weight unpacking per format when a kernel does not name one: 0 shift (nibbles shifted
# into f32 mantissas, exact f32 math), 1 mask (shift-free), 2 int8 x + dot4I8Packed (x rounded to
# int8 per chunk: changes numerics, ~0.4 % per dot), 3 as 2 plus the rounding residual in a second
# int8 (x to ~1.5e-5 of its chunk's max). 2 and 3 need the packed_4x8_integer_dot_product WGSL
# language feature; unpack=0 is the fallback. q4_0: 3 (H100: docs/PERFORMANCE.md); q4_1 / q8_0
# stay exact: the SmolLM2 (q4_1 + q8_0 head) f32 chat test must match transformers token for
# token, and unpack=3 flipped one near-tie there (token 10 of 48).
DECODE_UNPACK: dict[str, int] = {"q4_0": 3}


def default_unpack(caps: Caps, fmt: str) -> int:
    """The decode unpacking of ``fmt`` on these caps: DECODE_UNPACK, or 0 (exact f32) where
    the WGSL compiler lacks packed_4x8_integer_dot_product."""
    u = DECODE_UNPACK.get(fmt, 0)
    return u if caps.packed_dot or u not in (2, 3) else 0


# ---- weight-format plumbing (shared by the weight-reading ops) ----
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
        main = part in ("qs", "data")
        if main:
            per = {"q4_0": "/8", "q4_1": "/8", "q8_0": "/4", "f16": "/2", "f32": ""}[fmt]
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


# ---- decode chunk code (generated unrolled) ----
def x_chunk(fmt: str, vec: int, mask: bool = False, i8: int = 0,
            norm: dict | None = None) -> tuple[list[str], list[str]]:
    """WGSL lines loading this chunk's x (column c4 * 4 = ch * CE) and the variable names;
    ``mask`` (q4 "mask" unpacking): the returned x vectors are pre-scaled by 16^-lane;
    ``i8`` 1 / 2 (unpack=2 / 3): also the chunk's x quantized to int8 (``i8_quant_lines``);
    ``norm`` (``norm_parts``' dict): the fused RMSNorm's x * w, its squares summed from the
    same raw loads (vec4 x) or by ``chunk_sq``."""
    ce = vec * EPW[fmt]
    if norm and norm["XVEC"] == 4 and ce % 4 == 0:
        n4 = ce // 4
        names = [f"xv{i}" for i in range(n4)]
        lines = ["let c4 = ch * (CE / 4u);"]
        lines += [f"let xn{i} = x[c4 + {i}u];" for i in range(n4)]
        lines += [f"let xv{i} = xn{i} * norm_w[c4 + {i}u];" for i in range(n4)]
        lines.append(f"acc{norm['SS']} += " + " + ".join(f"dot(xn{i}, xn{i})" for i in range(n4))
                     + ";")
    elif ce % 4 == 0:
        names = [f"xv{i}" for i in range(ce // 4)]
        lines = ["let c4 = ch * (CE / 4u);"] + [f"let xv{i} = x4(c4 + {i}u);"
                                               for i in range(ce // 4)]
    elif ce == 2:
        names, lines = ["xv0"], ["let xv0 = vec2<f32>(x1(2u * ch), x1(2u * ch + 1u));"]
    else:
        names, lines = ["xv0"], ["let xv0 = x1(ch);"]
    if norm and not (norm["XVEC"] == 4 and ce % 4 == 0):
        lines.append(norm["ACCUM"])
    if fmt == "q4_1":  # q4_1 needs sum(x) of the chunk: m * sum(x), shared by all rows
        lines.append("let sx = dot(" + " + ".join(names) + ", vec4<f32>(1.0));")
    if i8:
        lines += i8_quant_lines(fmt, names, i8 == 2)
    if mask:   # exact: powers of two
        lines += [f"let xm{i} = {n} * vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);"
                  for i, n in enumerate(names)]
        names = [f"xm{i}" for i in range(len(names))]
    return lines, names


def i8_quant_lines(fmt: str, names: list[str], two: bool = False) -> list[str]:
    """WGSL: the chunk's x (CE f32 in vec4s ``names``) quantized to int8 with one scale ``dx``
    (max|x| / 127, as llama.cpp's q8_1 activations), packed 4 per u32 for dot4I8Packed: for q4
    ``xe<k>`` / ``xo<k>`` hold the even / odd columns of qs word k (the byte order of
    ``w & 0x0F0F0F0F`` / ``(w >> 4) & 0x0F0F0F0F``), ``sq`` = sum of the quantized x (the q4_0
    "-8" costs one multiply per row and chunk); for q8_0 ``xq<k>`` holds columns 4k .. 4k+3.
    ``two`` (unpack=3): also the rounding residual, quantized to int8 in steps of dx / 254
    (``ye``/``yo``/``yq``, sum ``sr``): x = dx * (xq + yq / 254) to ~1.5e-5 of max|x|.
    Rounding: 1.5 * 2^23 + v has round(v) in its low byte (two's complement), no float-to-int
    conversion."""
    n = len(names)
    ab = [f"abs({v})" for v in names]
    while len(ab) > 1:
        ab = [f"max({ab[i]}, {ab[i + 1]})" if i + 1 < len(ab) else ab[i]
              for i in range(0, len(ab), 2)]
    magic = "vec4<f32>(12582912.0)"
    out = [f"let am4 = {ab[0]};",
           "let amax = max(max(am4.x, am4.y), max(am4.z, am4.w));",
           # chunks below 1e-30 count as zero (127 / amax must stay finite in f32)
           "let qinv = select(0.0, 127.0 / amax, amax > 1e-30);",
           "let dx = amax * (1.0 / 127.0);   // x ~= dx * xq"]
    sets = [("x", "xr")]
    for i, v in enumerate(names):
        out.append(f"let xr{i} = bitcast<vec4<u32>>(fma({v}, vec4<f32>(qinv), {magic}));")
        if two:   # residual of the rounding in [-0.5, 0.5] steps of dx, scaled by 254; the
            # OR (a no-op on these bits) hides from compilers that round() - magic cancels out
            # against fma(x, qinv, magic) - magic (reassociation would make the residual 0)
            out.append(f"let yr{i} = bitcast<vec4<u32>>(fma({v} * qinv - (bitcast<vec4<f32>>("
                       f"xr{i} | vec4<u32>(0x4B000000u)) - {magic}), vec4<f32>(254.0), {magic}));")
    if two:
        sets.append(("y", "yr"))
    for pre, src in sets:
        if fmt == "q8_0":
            out += [f"let {pre}q{k} = pk8({src}{k}.x, {src}{k}.y, {src}{k}.z, {src}{k}.w);"
                    for k in range(n)]
            continue
        for k in range(n // 2):
            a, b = f"{src}{2 * k}", f"{src}{2 * k + 1}"
            out += [f"let {pre}e{k} = pk8({a}.x, {a}.z, {b}.x, {b}.z);",
                    f"let {pre}o{k} = pk8({a}.y, {a}.w, {b}.y, {b}.w);"]
        if fmt == "q4_0":
            out.append(f"let s{'q' if pre == 'x' else 'r'} = " + " + ".join(
                f"dot4I8Packed({pre}{e}{k}, 0x01010101u)" for k in range(n // 2)
                for e in "eo") + ";")
    return out


PK8_WGSL = """
// 4 bytes (the low byte of each argument) packed into one u32, first argument lowest
fn pk8(a: u32, b: u32, c: u32, d: u32) -> u32 {
    return (a & 0xFFu) | ((b & 0xFFu) << 8u) | ((c & 0xFFu) << 16u) | (d << 24u);
}
"""


def chunk_dot_i8(fmt: str, prefix: str, vec: int, wv: str, row: str, two: bool = False) -> str:
    """WGSL expression (unpack=2/3): row chunk ``wv`` dotted with the int8 x of
    ``i8_quant_lines`` by packed integer dot products (4 multiply-adds per instruction where the
    GPU has them), then scaled once: d * dx * (sum q xq [- 8 sq]) [+ m * sum x]; ``two`` adds
    the residual's sum / 254."""
    words = [f"{wv}.{c}" for c in "xyzw"[:vec]]
    if fmt == "q4_0" or fmt == "q4_1":   # nibble bytes of the word (even / odd columns)
        qs = [q for w in words for q in (f"({w} & 0x0F0F0F0Fu)", f"(({w} >> 4u) & 0x0F0F0F0Fu)")]
    else:
        qs = words

    def isum(pre: str, corr: str) -> str:
        if fmt == "q8_0":
            xs_ = [f"{pre}q{k}" for k in range(len(words))]
        else:
            xs_ = [f"{pre}{e}{k}" for k in range(len(words)) for e in "eo"]
        t = " + ".join(f"dot4I8Packed({q}, {x})" for q, x in zip(qs, xs_))
        return f"f32({t}" + (f" - 8 * {corr}" if fmt == "q4_0" else "") + ")"

    s = isum("x", "sq")
    if two:
        s = f"({s} + {isum('y', 'sr')} * (1.0 / 254.0))"
    g = f"{row} * GPR + (ch * CE) / GS"
    out = f"{prefix}scale({g}) * dx * {s}"
    return out + (f" + {prefix}min({g}) * sx" if fmt == "q4_1" else "")


def chunk_dot(fmt: str, prefix: str, vec: int, wv: str, xs: list[str], row: str,
              mask: bool = False) -> str:
    """WGSL expression: dequantized row chunk ``wv`` (vec4<u32>) dotted with the chunk's x
    (``mask``: q4 nibbles unpacked in place against x from ``x_chunk(..., mask=True)``)."""
    words = [f"{wv}.{c}" for c in "xyzw"[:vec]]
    if fmt in ("q4_0", "q4_1"):
        lo, hi = ("nibm_lo", "nibm_hi") if mask else ("nib_lo", "nib_hi")
        part = " + ".join(f"dot({prefix}{lo}({w}), {xs[2 * k]}) + dot({prefix}{hi}({w}), "
                          f"{xs[2 * k + 1]})" for k, w in enumerate(words))
    elif fmt == "q8_0":
        part = " + ".join(f"dot({prefix}i8x4({w}), {xs[k]})" for k, w in enumerate(words))
    elif fmt == "f16":
        if vec == 4:
            part = (f"dot(vec4<f32>(unpack2x16float({wv}.x), unpack2x16float({wv}.y)), {xs[0]}) + "
                    f"dot(vec4<f32>(unpack2x16float({wv}.z), unpack2x16float({wv}.w)), {xs[1]})")
        else:
            part = f"dot(unpack2x16float({wv}.x), {xs[0]})"
    else:
        part = (f"dot(bitcast<vec4<f32>>({wv}), {xs[0]})" if vec == 4
                else f"bitcast<f32>({wv}.x) * {xs[0]}")
    if fmt not in QUANTIZED:
        return part
    g = f"{row} * GPR + (ch * CE) / GS"   # the chunk lies in one group (pick_vec)
    if fmt == "q4_1":
        return f"{prefix}scale({g}) * ({part}) + {prefix}min({g}) * sx"
    return f"{prefix}scale({g}) * ({part})"


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


def x_fns(cols: int, xvec: int, name: str = "x") -> str:
    """x4(i): x[4i .. 4i+3]; x1(c): x[c] — over an array<vec4<f32>> or array<f32> binding."""
    if xvec == 4:
        return (f"fn x4(i: u32) -> vec4<f32> {{ return {name}[i]; }}\n"
                f"fn x1(c: u32) -> f32 {{ return {name}[c >> 2u][c & 3u]; }}\n")
    return (f"fn x4(i: u32) -> vec4<f32> {{ return vec4<f32>({name}[4u * i], {name}[4u * i + 1u], "
            f"{name}[4u * i + 2u], {name}[4u * i + 3u]); }}\n"
            f"fn x1(c: u32) -> f32 {{ return {name}[c]; }}\n")


def norm_parts(cols: int, xvec: int, ce: int, eps: float, ss: int) -> dict[str, str]:
    """The fused RMSNorm of the decode kernels' input (``norm_eps`` > 0). x is bound un-normed
    (the residual stream) beside ``norm_w`` (cols) f32; x4 / x1 return x * w, and the same loop
    that reads the chunks adds their squares into accumulator ``ss`` (the threads' chunks
    cover every column once), reduced with the row sums; ``total(i)`` then returns the row
    sum times rinv = 1 / rms(x). Why: it replaces a dependent norm dispatch (~5-8 us each on
    an H200, two per layer). Measured on the H200 (8B shape): the fused gate_up costs ~8 us a
    dispatch more than the plain one, about what the saved rmsnorm dispatch cost; a first
    version reducing sum(x^2) in a prologue before the weight loads was no cheaper.

    Keys: FNS (replaces ``x_fns``), ACCUM (one more line of the chunk loop), AFTER (after the
    reduction), and ``total_raw`` must be the reduction template's ``total`` (``scaled``)."""
    from .norm import wgsl_float
    if xvec == 4:
        fns = ("fn x4(i: u32) -> vec4<f32> { return x[i] * norm_w[i]; }\n"
               "fn x1(c: u32) -> f32 { return x[c >> 2u][c & 3u] * norm_w[c >> 2u][c & 3u]; }\n")
    else:
        fns = ("fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x1(4u * i), x1(4u * i + 1u), "
               "x1(4u * i + 2u), x1(4u * i + 3u)); }\n"
               "fn x1(c: u32) -> f32 { return x[c] * norm_w[c]; }\n")
    fns = "var<private> rinv: f32;   // 1 / rms(x), set after the reduction\n" + fns
    if not (xvec == 4 and ce % 4 == 0):   # else x_chunk sums the squares of its own raw loads
        raw = "x[c >> 2u][c & 3u]" if xvec == 4 else "x[c]"
        fns += (f"fn chunk_sq(ch: u32) -> f32 {{   // sum of the chunk's raw x^2\n"
                f"    var s = 0.0;\n    for (var c = ch * {ce}u; c < ch * {ce}u + {ce}u; c++) "
                f"{{ let v = {raw}; s += v * v; }}\n    return s;\n}}\n")
    return {"FNS": fns, "ACCUM": f"acc{ss} += chunk_sq(ch);", "SS": ss, "XVEC": xvec,
            "AFTER": f"rinv = inverseSqrt(total_raw({ss}u) * {wgsl_float(1.0 / cols)} + "
                     f"{wgsl_float(eps)});"}


def reduce_template(sg: bool, norm: bool) -> str:
    """The matvec reduction template; with the fused norm its ``total`` is ``total_raw`` and
    ``total(i)`` scales by rinv."""
    src = load_template("matvec_reduce_sg" if sg else "matvec_reduce_wg")
    if not norm:
        return src
    return (src.replace("fn total(", "fn total_raw(") +
            "\nfn total(i: u32) -> f32 { return total_raw(i) * rinv; }   // normed row sum\n")


NORM_EPS_CASE = 1e-5


def case_norm_input(rng, n: int, on: bool):
    """(x, buffers) of a decode check case: with ``on`` (fused RMSNorm) x is an un-normed
    residual row of scale 3 and ``norm_w`` a weight around 1; else x is already small."""
    import numpy as np
    if not on:
        return (rng.standard_normal((1, n)) / np.sqrt(n)).astype(np.float32), {}
    x = (3.0 * rng.standard_normal((1, n))).astype(np.float32)
    w = (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)
    return x, {"norm_w": w}


def ref_normed(x, bufs: dict):
    """x as the kernels see it: RMSNorm'd with ``norm_w`` when the case binds one."""
    import numpy as np
    x = np.asarray(x, np.float64)
    if "norm_w" not in bufs:
        return x
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + NORM_EPS_CASE)
    return x * r * np.asarray(bufs["norm_w"], np.float64)


def eps_tag(eps: float) -> str:
    """The fused norm's epsilon as a slug-safe tag (pipelines are cached by slug): 1e-05 -> 1em05."""
    return f"{eps:g}".replace("-", "m").replace(".", "p").replace("+", "")


def norm_binding(xvec: int):
    return (Binding("norm_w", "read", "(cols) f32 RMSNorm weight" + (" as vec4" if xvec == 4
                                                                       else "")),
            "vec4<f32>" if xvec == 4 else "f32")


def fold_grid(n: int) -> tuple[int, int]:
    """(gx, gy) covering n workgroups within the 65535-per-dimension limit."""
    gx = max(1, min(n, MAX_GRID))
    return gx, -(-n // gx)


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def enables(f16: bool, sg: bool) -> str:
    return ("enable f16;\n" if f16 else "") + ("enable subgroups;\n" if sg else "")


# ---- the decode kernel (matvec, and gate_up's M = 1 variant) ----
def decode_kernel(op: str, caps: Caps, fmt: str, rows: int, cols: int, group_size: int,
                  weights: tuple[str, ...], out_name: str, store: str, semantics: str,
                  params: Params, extra_dims: tuple = (), wg: int = 0, r: int = 0,
                  unpack: int | None = None, norm_eps: float = 0.0) -> Kernel:
    """One workgroup per R rows; ``weights`` are binding prefixes (``w_`` or ``w1_``, ``w3_``);
    ``store`` is WGSL run by thread r < R with ``row0``, ``r`` and ``total(i)`` in scope."""
    check_weight(op, fmt, rows, cols, group_size)
    vec = pick_vec(fmt, cols, group_size)
    xvec = 4 if cols % 4 == 0 else 1
    if unpack is None:
        unpack = default_unpack(caps, fmt)
    mask = unpack == 1 and fmt in ("q4_0", "q4_1")
    # unpack=2/3 (int8 x, dot4I8Packed) needs whole vec4 chunks inside one group
    i8 = unpack - 1 if unpack in (2, 3) and fmt in QUANTIZED and vec == 4 else 0
    if mask or i8:
        extra_dims = extra_dims + (("u", unpack),)
    wpr = words_per_row(fmt, cols)
    nch = wpr // vec
    cap = min(256, caps.max_workgroup_size)
    wg = wg or max(32, min(cap, pow2_at_least(nch)))
    wg = min(pow2_at_least(wg), cap)
    # rows per workgroup: q formats reuse the chunk's x (8 vec4 loads per 16 weight bytes for
    # q4) across R rows, and q4 decode is instruction-bound, so more rows per workgroup win
    # (H100: R=8 best of 1..8 for matvec; gate_up, two weights per row, measured at R=4);
    # f16/f32 read as many x bytes as weight bytes and one row per workgroup measured best
    # (docs/PERFORMANCE.md, bench --tune)
    # int8-x paths (unpack 2/3) also quantize x once per chunk for all R rows: gate_up at R=8
    # measured 1910 against 1755 GB/s at R=4 (H100, 14336x4096, unpack 3; 8192x2048 equal)
    r = r or min((8 if len(weights) == 1 or i8 else 4) if fmt in QUANTIZED else 1, rows)
    nw = len(weights)
    sg = caps.subgroups
    # f32 arithmetic only: a shader-f16 q4 path (two nibbles per 32-bit op) needs
    # bitcast<vec2<f16>>(u32), which naga (wgpu-py 0.32) mistypes, so it could not be checked
    while r > 1 and r * nw * (wg // 4 if sg else wg) * 4 > caps.max_workgroup_storage:
        r //= 2   # keep the reduction within the workgroup storage limit
    nacc = r * nw + (1 if norm_eps else 0)   # + the fused norm's sum of squares
    red_floats = nacc * (wg // 4 if sg else wg)
    if red_floats * 4 > caps.max_workgroup_storage:
        raise UnsupportedKernel(f"{op}: reduction needs {red_floats * 4} B of workgroup storage")
    n_wg = -(-rows // r)
    gx, gy = fold_grid(n_wg)
    if gy > caps.max_workgroups_per_dim:
        raise UnsupportedKernel(f"{op}: {rows} rows need a {gx}x{gy} grid")
    if norm_eps:
        extra_dims = extra_dims + (("n", eps_tag(norm_eps)),)
    key = KernelKey(op=op, fmt=fmt, wg=wg, tile=r, vec=vec, subgroups=sg,
                    dims=(("r", rows), ("c", cols), ("g", group_size)) + extra_dims)
    binds = [(Binding("x", "read", "(cols) f32" + (" as vec4" if xvec == 4 else "")
                      + (", un-normed (fused RMSNorm)" if norm_eps else "")),
              "vec4<f32>" if xvec == 4 else "f32")]
    if norm_eps:
        binds.append(norm_binding(xvec))
    nrm = norm_parts(cols, xvec, vec * EPW[fmt], norm_eps, r * nw) if norm_eps else None
    for p in weights:
        binds += weight_bindings(fmt, p, vec, "rows", "cols")
    binds += [(Binding(out_name, "read_write", "(row_offset + rows) f32"), "f32"),
              (Binding("params", "uniform", "Params"), "Params")]
    decls, bindings = binding_decls(binds)
    ind = " " * 8
    xlines, xs = x_chunk(fmt, vec, mask, i8, nrm)
    accum = []
    for i in range(r):
        for k, p in enumerate(weights):
            wv = f"{p}chunk(rr{i} * NCH + ch)"
            accum.append(f"acc{i * nw + k} += " + (
                chunk_dot_i8(fmt, p, vec, wv, f"rr{i}", i8 == 2) if i8
                else chunk_dot(fmt, p, vec, wv, xs, f"rr{i}", mask)) + ";")
    if sg:
        reduce = [f"let s{i} = subgroupAdd(acc{i});" for i in range(nacc)]
        reduce += ["if (sg_lane == 0u) {"] + [
            f"    red[(lid / sg_size) * NACC + {i}u] = s{i};" for i in range(nacc)] + ["}"]
        reduce += ["if (lid == 0u) { nsg = (WG + sg_size - 1u) / sg_size; }", "workgroupBarrier();"]
    else:
        reduce = [f"red[{i}u * WG + lid] = acc{i};" for i in range(nacc)] + ["tree_reduce(lid);"]
    if nrm:
        reduce.append(nrm["AFTER"])
    src = render(load_template("matvec"), {
        "ENABLES": enables(False, sg), "OP": op, "FMT": fmt, "SEMANTICS": semantics,
        "REDUCTION": "subgroupAdd" if sg else "shared-memory tree",
        "PARAMS": params.wgsl(), "BINDINGS": decls,
        "ROWS": rows, "COLS": cols, "GS": group_size if fmt in QUANTIZED else 1,
        "GPR": cols // group_size if fmt in QUANTIZED else 1, "WPR": wpr, "VEC": vec,
        "NCH": nch, "CE": vec * EPW[fmt], "WG": wg, "R": r, "NW": nw, "GX": gx,
        "XFNS": nrm["FNS"] if nrm else x_fns(cols, xvec), "NACC": nacc,
        "WFNS": "".join(weight_fns(fmt, p, vec) for p in weights) + (PK8_WGSL if i8 else ""),
        "REDVARS": reduce_template(sg, bool(nrm)),
        "SGARGS": (",\n        @builtin(subgroup_invocation_id) sg_lane: u32,"
                   "\n        @builtin(subgroup_size) sg_size: u32") if sg else "",
        "ROWS_DECL": "\n".join(f"    let rr{i} = min(row0 + {i}u, ROWS - 1u);" for i in range(r)),
        "ACC_DECL": "\n".join(f"    var acc{i} = 0.0;" for i in range(nacc)),
        "XLOAD": "\n".join(ind + ln for ln in xlines),
        "ACCUM": "\n".join(ind + ln for ln in accum),
        "REDUCE": "\n".join("    " + ln for ln in reduce),
        "STORE": store}, slug=key.slug())
    feats = ("subgroups",) if sg else ()
    meta = {"grid": lambda **_: (gx, gy, 1), "rows_per_wg": r}
    if i8:   # a WGSL language feature, not a device feature: wgslLanguageFeatures in browsers
        meta["language_features"] = ("packed_4x8_integer_dot_product",)
    return Kernel(key=key, wgsl=src, bindings=bindings, params=params, workgroup_size=(wg, 1, 1),
                  features=feats, meta=meta)


MATVEC_PARAMS = Params((("row_offset", "u32"),))


@register("matvec")
def build_matvec(caps: Caps, fmt: str, rows: int, cols: int, group_size: int = 32,
                 accumulate: int = 0, wg: int = 0, r: int = 0,
                 unpack: int | None = None) -> Kernel:
    """y[row_offset + r] (+)= W[r, :] . x. ``wg`` / ``r`` override the tuned workgroup size and
    rows per workgroup; ``unpack`` the q-format unpacking (default ``DECODE_UNPACK``; 0 exact
    f32, 1 shift-free q4, 2 / 3 int8 x with packed integer dot products; 0 is the fallback for
    WGSL without packed_4x8_integer_dot_product); all three are for benchmarks, not the driver."""
    prev = "y[o] + " if accumulate else ""
    store = (f"        let o = params.row_offset + row0 + r;\n"
             f"        y[o] = {prev}total(r);")
    sem = "y[row_offset + r] " + ("+= " if accumulate else "= ") + "sum_c W[r, c] * x[c]"
    return decode_kernel("matvec", caps, fmt, rows, cols, group_size, ("w_",), "y", store, sem,
                         MATVEC_PARAMS, (("acc", int(accumulate)),), wg, r, unpack)


# ---- check cases ----
def decode_tol(fmt: str, unpack: int, f32_key: str) -> str:
    """Tolerance key of a decode check case: int8 x (unpack=2/3) on a q format is looser."""
    if unpack in (2, 3) and fmt in QUANTIZED:
        k = "dot_i8x" if f32_key == "dot_f32" else "gate_up_i8x"
        return k.replace("i8x", "i16x") if unpack == 3 else k
    return f32_key


def _matvec_case(fmt: str, rows: int, cols: int, acc: int = 0, row_offset: int = 0,
                 group_size: int = 32, unpack: int | None = None) -> Case:
    def make(rng):
        import numpy as np

        from .harness import weight_parts

        bufs, w = weight_parts(rng, fmt, rows, cols, group_size)
        x = rng.standard_normal(cols).astype(np.float32)               # (cols) f32
        y0 = rng.standard_normal(row_offset + rows).astype(np.float32)  # (row_offset + rows) f32
        bufs.update(x=x, y=y0)
        return {"buffers": bufs, "params": {"row_offset": row_offset}, "w": w, "x": x, "y0": y0}

    def ref(inp):
        import numpy as np

        y = inp["y0"].astype(np.float64)
        dot = inp["w"].astype(np.float64) @ inp["x"].astype(np.float64)
        y[row_offset:] = (y[row_offset:] if acc else 0.0) + dot
        return {"y": y.astype(np.float32)}

    dims = dict(fmt=fmt, rows=rows, cols=cols, group_size=group_size, accumulate=acc)
    if unpack is not None:
        dims["unpack"] = unpack
    u = DECODE_UNPACK.get(fmt, 0) if unpack is None else unpack
    return Case("matvec", dims, make, ref, decode_tol(fmt, u, "dot_f32"),
                label=f"{fmt} {rows}x{cols}" + (" acc" if acc else "") +
                      (f" off{row_offset}" if row_offset else "") +
                      {1: " mask", 2: " i8x", 3: " i16x"}.get(u, "") * (fmt in QUANTIZED))


@register_cases("matvec")
def matvec_cases(quick: bool) -> list[Case]:
    shapes = [(1, 32), (7, 96), (67, 576), (13, 1536)]
    if not quick:
        shapes += [(576, 576), (576, 1536), (1536, 576), (4096, 4096)]
    out = [_matvec_case(f, r, c) for f in EPW for r, c in shapes]
    # accumulate (residual fusion) and an LM-head row block written at an offset
    out += [_matvec_case(f, 33, 64, acc=1) for f in EPW]
    out += [_matvec_case("q4_0", 19, 128, row_offset=45), _matvec_case("f16", 5, 6),
            _matvec_case("f32", 3, 5), _matvec_case("q8_0", 9, 64, group_size=64),
            _matvec_case("q4_1", 6, 48, group_size=16)]
    # the shift-free q4 unpacking (bench candidate)
    out += [_matvec_case(f, r, c, unpack=1) for f in ("q4_0", "q4_1") for r, c in shapes[1:3]]
    out += [_matvec_case("q4_1", 6, 48, group_size=16, unpack=1)]
    # int8 x with packed integer dot products (vec4 chunks; the 5-column f16 case falls back),
    # and the explicit exact path when the default is int8
    for u in (2, 3):
        out += [_matvec_case(f, r, c, unpack=u) for f in QUANTIZED for r, c in shapes[1:3]]
        out += [_matvec_case("q8_0", 9, 64, group_size=64, unpack=u),
                _matvec_case("q4_0", 19, 128, row_offset=45, acc=1, unpack=u)]
        if not quick:
            out += [_matvec_case(f, 4096, 4096, unpack=u) for f in QUANTIZED]
    out += [_matvec_case("q4_0", 7, 96, unpack=0)]
    return out
