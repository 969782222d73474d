"""The decode (M = 1) chunk loop that matvec, gate_up's M = 1 kernel and qkv_rope_decode share.

A workgroup owns R weight rows; its WG threads stride along them one chunk (VEC u32 words,
coalesced) at a time, so every weight byte is read once; the chunk's x is loaded once (and on the
int8 paths quantized once) for all R rows, one unrolled dot per row into its own register; then
the partial sums are reduced across the workgroup (subgroupAdd or a shared-memory tree) and an
op-specific epilogue stores the rows. ``DecodeLoop`` makes the shared decisions (vector width, x
unpacking, workgroup size) once and renders the shared WGSL (decode_consts.wgsl,
decode_loop.wgsl); the op modules add their bindings, row choice and epilogue.

Pure Python (runs in Pyodide); numpy only inside the check-case helpers at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modelfmt.formats import KQUANT, QUANTIZED

from . import kquant as kq
from .core import Binding, Caps, UnsupportedKernel, load_template, render
from .wgsl_common import (EPW, SCALED, SG_ARGS, enable_lines, pick_vec, pow2_at_least,
                          weight_fns, words_per_row, wgsl_float)

# decode weight unpacking per format when a kernel does not name one: 0 shift (nibbles shifted
# into f32 mantissas, exact f32 math), 1 mask (shift-free), 2 int8 x + dot4I8Packed (x rounded to
# int8 per chunk: changes numerics, ~0.4 % per dot), 3 as 2 plus the rounding residual in a second
# int8 (x to ~1.5e-5 of its chunk's max). 2 and 3 need the packed_4x8_integer_dot_product WGSL
# language feature; unpack=0 is the fallback. q4_0: 3 (H100: docs/PERFORMANCE.md); q4_1 / q8_0
# stay exact: the SmolLM2 (q4_1 + q8_0 head) f32 chat test must match transformers token for
# token, and unpack=3 flipped one near-tie there (token 10 of 48).
# The K-quants take q4_0's unpack=3 (the same instruction mix; bench rows u0 / u2 / u3 compare).
DECODE_UNPACK: dict[str, int] = {"q4_0": 3, "q4_k": 3, "q5_k": 3, "q6_k": 3}


def default_unpack(caps: Caps, fmt: str) -> int:
    """The decode unpacking of ``fmt`` on these caps: DECODE_UNPACK, or 0 (exact f32) where
    the WGSL compiler lacks packed_4x8_integer_dot_product."""
    u = DECODE_UNPACK.get(fmt, 0)
    return u if caps.packed_dot or u not in (2, 3) else 0


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
    if fmt in ("q4_1", "q4_k", "q5_k"):  # sum(x) of the chunk: m * sum(x), shared by all rows
        lines.append("let sx = dot(" + " + ".join(names) + ", vec4<f32>(1.0));")
    if fmt in KQUANT:
        lines += kq.chunk_lines(fmt)
    if i8:
        lines += i8_quant_lines(fmt, names, i8 == 2) + kq.i8_lines(fmt, i8 == 2)
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


# ---- x pre-quantized once (quant_x, shaders/multi.py) ----
XQ_FORMATS = tuple(f for f, u in DECODE_UNPACK.items() if u == 3)   # decode x is int8 (unpack 3)
XQ_WORDS = 5   # vec4<u32> per 32-column chunk: xe, xo, ye, yo words, (dx, sq|sr, sqa|sra, ss)


def xq_load_lines(idx: str, halves: bool) -> list[str]:
    """WGSL: chunk ``idx`` of the ``xq`` binding (quant_x's record) as the names
    ``i8_quant_lines`` would have computed: xe/xo/ye/yo 0..3, dx, sq, sr (and with ``halves``,
    q6_k's per-16-column sums sqa / sqb / sra / srb); ``q4.w`` is the chunk's raw sum x^2
    where quant_x fused a norm. The sums are 16-bit fields (|sum| <= 32 * 127)."""
    out = [f"let xqb = ({idx}) * {XQ_WORDS}u;"]
    out += [f"let q{j} = xq[xqb + {j}u];" for j in range(XQ_WORDS)]
    out += [f"let {nm}{k} = q{j}.{'xyzw'[k]};" for j, nm in enumerate(("xe", "xo", "ye", "yo"))
            for k in range(4)]
    out += ["let dx = bitcast<f32>(q4.x);",
            "let sq = bitcast<i32>(q4.y << 16u) >> 16u;", "let sr = bitcast<i32>(q4.y) >> 16u;"]
    if halves:
        out += ["let sqa = bitcast<i32>(q4.z << 16u) >> 16u;", "let sqb = sq - sqa;",
                "let sra = bitcast<i32>(q4.z) >> 16u;", "let srb = sr - sra;"]
    return out


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


def decode_tol(fmt: str, unpack: int, f32_key: str) -> str:
    """Tolerance key of a decode check case: int8 x (unpack=2/3) on a q format is looser."""
    if unpack in (2, 3) and fmt in SCALED:
        k = "dot_i8x" if f32_key == "dot_f32" else "gate_up_i8x"
        return k.replace("i8x", "i16x") if unpack == 3 else k
    return f32_key


# ---- the loop, decided once ----
@dataclass(frozen=True)
class DecodeLoop:
    """The shared decisions of one decode kernel over a (rows, cols) weight in ``fmt``: ``vec``
    words per weight load, ``xvec`` (4: x bound as vec4), ``unpack`` (DECODE_UNPACK's codes) with
    its ``mask`` / ``i8`` forms, the workgroup size ``wg`` and subgroup use ``sg``."""

    fmt: str
    cols: int
    group_size: int
    vec: int
    xvec: int
    unpack: int
    mask: bool
    i8: int
    wg: int
    sg: bool
    xq: bool = False

    @classmethod
    def plan(cls, caps: Caps, fmt: str, cols: int, group_size: int, unpack: int | None = None,
             wg: int = 0, xq: int = 0) -> "DecodeLoop":
        vec = pick_vec(fmt, cols, group_size)
        if unpack is None:
            unpack = default_unpack(caps, fmt)
        mask = unpack == 1 and fmt in ("q4_0", "q4_1")
        # unpack=2/3 (int8 x, dot4I8Packed) needs whole vec4 chunks inside one group
        i8 = unpack - 1 if unpack in (2, 3) and fmt in SCALED and vec == 4 else 0
        nch = words_per_row(fmt, cols) // vec
        cap = min(max(256, wg), caps.max_workgroup_size)   # an explicit wg may go past 256
        wg = wg or max(32, min(cap, pow2_at_least(nch)))
        wg = min(pow2_at_least(wg), cap)
        # f32 arithmetic only: a shader-f16 q4 path (two nibbles per 32-bit op) needs
        # bitcast<vec2<f16>>(u32), which naga (wgpu-py 0.32) mistypes, so it could not be checked
        if xq and not (i8 == 2 and fmt in XQ_FORMATS and vec == 4 and cols % 32 == 0):
            raise UnsupportedKernel(f"xq (x pre-quantized by quant_x) needs unpack 3 on one of "
                                    f"{', '.join(XQ_FORMATS)} with 32-column chunks; got {fmt} "
                                    f"unpack {unpack}, {cols} columns")
        return cls(fmt, cols, group_size, vec, 4 if cols % 4 == 0 else 1, unpack, mask, i8, wg,
                   caps.subgroups, bool(xq))

    @property
    def nch(self) -> int:
        return words_per_row(self.fmt, self.cols) // self.vec

    def with_wg(self, wg: int) -> "DecodeLoop":
        return replace(self, wg=wg)

    def red_bytes(self, nacc: int) -> int:
        """Workgroup storage of the reduction of ``nacc`` partial sums per thread."""
        return 4 * nacc * (self.wg // 4 if self.sg else self.wg)

    def key_dims(self, norm_eps: float) -> tuple:
        """Slug dims that tell the variants apart (pipelines are cached by slug)."""
        return (((("u", self.unpack),) if self.mask or self.i8 else ())
                + ((("n", eps_tag(norm_eps)),) if norm_eps else ())
                + ((("xq", 1),) if self.xq else ()))

    def x_binding(self, doc: str, norm_eps: float) -> list:
        """[(Binding, type)] of x, and of the fused RMSNorm's weight right after it."""
        if self.xq:   # quant_x's records; the fused norm's weight was applied there
            return [(Binding("xq", "read", f"(cols / 32, {XQ_WORDS}) vec4 u32: x's 32-column chunks "
                             "as quant_x stored them" + (" (of x * norm_w, with each chunk's raw "
                                                          "sum x^2)" if norm_eps else "")),
                     "vec4<u32>")]
        v4 = self.xvec == 4
        out = [(Binding("x", "read", doc + (" as vec4" if v4 else "")
                        + (", un-normed (fused RMSNorm)" if norm_eps else "")),
                "vec4<f32>" if v4 else "f32")]
        return out + ([norm_binding(self.xvec)] if norm_eps else [])

    def norm(self, eps: float, ss: int) -> dict | None:
        """The fused RMSNorm's parts (``norm_parts``) summing x^2 into accumulator ``ss``."""
        if eps and self.xq:   # x * w already quantized; the chunk records carry sum x^2
            return {**norm_parts(self.cols, self.xvec, self.vec * EPW[self.fmt], eps, ss),
                    "FNS": "var<private> rinv: f32;   // 1 / rms(x), set after the reduction\n"}
        return norm_parts(self.cols, self.xvec, self.vec * EPW[self.fmt], eps, ss) if eps else None

    def x_lines(self, nrm: dict | None) -> tuple[list[str], list[str]]:
        """WGSL lines giving the chunk's x (``x_chunk``), or with ``xq`` the names the int8
        paths use read from quant_x's record of the chunk (``xq_load_lines``)."""
        if not self.xq:
            return x_chunk(self.fmt, self.vec, self.mask, self.i8, nrm)
        lines = kq.chunk_lines(self.fmt) if self.fmt in KQUANT else []
        lines += xq_load_lines("ch", self.fmt == "q6_k")
        if nrm:
            lines.append(f"acc{nrm['SS']} += bitcast<f32>(q4.w);   // the chunk's raw sum x^2")
        return lines, []

    def dot(self, prefix: str, row: str, xs: list[str]) -> str:
        """WGSL: row ``row``'s chunk of weight ``prefix`` dotted with this chunk's x."""
        wv = f"{prefix}chunk({row} * NCH + ch)"
        if self.i8:
            return chunk_dot_i8(self.fmt, prefix, self.vec, wv, row, self.i8 == 2)
        return chunk_dot(self.fmt, prefix, self.vec, wv, xs, row, self.mask)

    def accum(self, acc: str, prefix: str, row: str, xs: list[str], tag: str) -> list[str]:
        """WGSL adding that dot to ``acc``: one line, or the K-quants' several (record decode;
        ``tag`` keeps their temporaries apart, shaders/kquant.py)."""
        if self.fmt in KQUANT:
            return kq.accum_lines(self.fmt, prefix, f"{prefix}chunk({row} * NCH + ch)", xs, row,
                                  acc, tag, self.i8)
        return [f"{acc} += {self.dot(prefix, row, xs)};"]

    def render(self, template: str, slug: str, *, prefixes, r: int, nacc: int, nrm: dict | None,
               accum, xs_lines: list[str], subs: dict, guards: list[str] | None = None,
               rb: int = 1) -> str:
        """``template`` rendered with the shared tokens (ENABLES, REDUCTION, CONSTS, XFNS, WFNS,
        REDVARS, SGARGS, WG, LOOP) plus the op's own ``subs``; ``accum``: the chunk's dot lines;
        ``guards`` (subgroup reduction only): a workgroup-uniform WGSL condition per accumulator
        ("" = always) under which it is reduced (matvec_multi: token rows past n_tok are not)."""
        fq = self.fmt in QUANTIZED
        consts = render(load_template("decode_consts"), {
            "COLS": self.cols, "GS": self.group_size if fq else 1,
            "GPR": self.cols // self.group_size if fq else 1,
            "WPR": words_per_row(self.fmt, self.cols), "VEC": self.vec, "NCH": self.nch,
            "CE": self.vec * EPW[self.fmt], "WG": self.wg, "R": r, "NACC": nacc})
        if self.sg:
            reduce = []
            g = guards or [""] * nacc
            i = 0
            while i < nacc:   # runs of accumulators with the same guard
                j = i
                while j < nacc and g[j] == g[i]:
                    j += 1
                ind = "    " if g[i] else ""
                body = [f"{ind}let s{a} = subgroupAdd(acc{a});" for a in range(i, j)]
                body += [f"{ind}if (sg_lane == 0u) {{"] + [
                    f"{ind}    red[(lid / sg_size) * NACC + {a}u] = s{a};"
                    for a in range(i, j)] + [f"{ind}}}"]
                reduce += ([f"if ({g[i]}) {{"] + body + ["}"]) if g[i] else body
                i = j
            reduce += ["if (lid == 0u) { nsg = (WG + sg_size - 1u) / sg_size; }",
                       "workgroupBarrier();"]
        else:
            reduce = [f"red[{i}u * WG + lid] = acc{i};" for i in range(nacc)] + ["tree_reduce(lid);"]
        if nrm:
            reduce.append(nrm["AFTER"])
        loop = render(load_template("decode_loop"), {
            "ACC_DECL": "\n".join(f"    var acc{i} = 0.0;" for i in range(nacc)),
            "XLOAD": "\n".join(" " * 8 + ln for ln in xs_lines),
            "ACCUM": "\n".join(" " * 8 + ln for ln in accum),
            "REDUCE": "\n".join("    " + ln for ln in reduce)})
        blocks = {"XHOIST": "", "BLOCK_OPEN": "", "BLOCK_CLOSE": "",
                  "ROW0": "(wid.x + wid.y * GX) * R"}
        if rb > 1:
            # RB row blocks per workgroup, one after the other: this thread's one x chunk is
            # loaded (and quantized) once for all RB * R rows, not once per R rows
            if self.nch > self.wg:
                raise UnsupportedKernel(f"rb={rb} needs one chunk per thread ({self.nch} chunks, "
                                        f"wg {self.wg})")
            # the fused norm's sum of squares is summed here once (zero on a thread with no
            # chunk: its clamped chunk repeats the last one) and reduced again with every block
            ss = [f"    var acc{nrm['SS']} = 0.0;"] if nrm else []
            ss_fix = [f"    if (!cv) {{ acc{nrm['SS']} = 0.0; }}"] if nrm else []
            blocks = {
                "XHOIST": "\n".join(["    let ch = min(lid, NCH - 1u);", "    let cv = lid < NCH;"]
                                    + ss + ["    " + ln for ln in xs_lines] + ss_fix) + "\n",
                "BLOCK_OPEN": f"    for (var blk = 0u; blk < {rb}u; blk++) {{",
                "BLOCK_CLOSE": "    workgroupBarrier();   // red is reused by the next row block\n    }",
                "ROW0": f"(wid.x + wid.y * GX) * (R * {rb}u) + blk * R"}
            loop = ("\n".join(f"    var acc{i} = 0.0;" for i in range(nacc)
                               if not nrm or i != nrm["SS"]) + "\n    if (cv) {\n"
                    + "\n".join(" " * 8 + ln for ln in accum) + "\n    }\n"
                    + "\n".join("    " + ln for ln in reduce) + "\n")
        return render(load_template(template), {
            "ENABLES": enable_lines(False, self.sg),
            "REDUCTION": "subgroupAdd" if self.sg else "shared-memory tree",
            "CONSTS": consts, "LOOP": loop,
            "XFNS": nrm["FNS"] if nrm else ("" if self.xq else x_fns(self.cols, self.xvec)),
            "WFNS": "".join(weight_fns(self.fmt, p, self.vec) for p in prefixes)
                    + (PK8_WGSL if self.i8 else ""),
            "REDVARS": reduce_template(self.sg, bool(nrm)),
            "SGARGS": SG_ARGS if self.sg else "", "WG": self.wg,
            **(blocks if template == "matvec" else {}), **subs}, slug=slug)

    def meta(self) -> dict:
        """Kernel.meta entries: the WGSL language feature the int8 paths need (not a device
        feature: ``navigator.gpu.wgslLanguageFeatures`` in browsers)."""
        return {"language_features": ("packed_4x8_integer_dot_product",)} if self.i8 else {}
