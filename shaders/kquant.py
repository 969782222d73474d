"""The K-quant formats (q4_k, q5_k, q6_k: GGUF's Q4_K / Q5_K / Q6_K re-laid out, modelfmt/formats.py)
in the decode kernels: bindings and the WGSL of one 32-column chunk per row, generated unrolled
like the group formats' (``shaders.decode_loop``: ``x_chunk`` and ``DecodeLoop.accum``, shared by
matvec, gate_up's M = 1 kernel and qkv_rope_decode, call these).

A decode thread owns chunk ch of the row = one vec4<u32> of qs = 32 columns = one q4_k / q5_k
sub-block (one scale, one min) or two q6_k sub-blocks of 16 (two int8 scales); the chunk's place
in its super-block (``kj``) and the super-block (``ksb``) are computed once per chunk for all R
rows. Per row it reads the qs vec4 (coalesced: consecutive threads, consecutive 16 bytes) and
the super-block record (q4_k: one vec4 shared by the 8 threads of the super-block; q5_k: that vec4
and the chunk's high-bit word; q6_k: two high-bit words, a scale word and d). The dequantization
helpers (``kdm``, ``q5``, ``k6s``, ``q6``, elem4 / elem1 for matmul and embed) live in
matvec_elem_<fmt>.wgsl.

Unpackings (as matvec's ``unpack``): 0 exact f32 (nibbles through the mantissa of 2^23, q6_k's
``q - 32`` folded into the same subtraction); 2 / 3 int8 x with dot4I8Packed (the q bytes are
``w & 0x0F0F0F0F`` / ``(w >> 4) & 0x0F0F0F0F`` with the high bits ORed in by one shift and one
mask: the layout puts them there), 3 adding the rounding residual of x as a second int8.
q4_k / q5_k: sum (d1 q - m1) x = d1 sum q x - m1 sum x (``sx`` per chunk, shared by the rows);
q6_k: sum d s (q - 32) x = d s (sum q x - 32 sum x) per 16 columns (``sqa`` / ``sqb``: the int8
x sums of the two halves, per chunk).

Pure Python (runs in Pyodide).
"""

from __future__ import annotations

from modelfmt.formats import KQUANT

from .core import Binding

__all__ = ["KQUANT", "sb_binding", "chunk_lines", "i8_lines", "accum_lines"]


def sb_binding(fmt: str, prefix: str, rows_doc: str, cols_doc: str):
    """(Binding, WGSL element type) of the super-block record part ``sb``."""
    if fmt == "q6_k":
        return (Binding(prefix + "sb", "read", f"({rows_doc} * {cols_doc}/256 * 21) u32 q6_k "
                        "records: 16 int8 scales, f16 d, 16 high-bit words"), "u32")
    n = 1 if fmt == "q4_k" else 3
    return (Binding(prefix + "sb", "read", f"({rows_doc} * {cols_doc}/256 * {n}) vec4<u32> {fmt} "
                    "records: f16 d, dmin, 6-bit scales and mins" +
                    (", 5th-bit words" if fmt == "q5_k" else "")), "vec4<u32>")


def chunk_lines(fmt: str) -> list[str]:
    """WGSL, once per chunk (shared by every row and weight): the chunk's place."""
    return ["let kj = ch & 7u;     // 32-column sub-block (q6_k: pair of 16) in its super-block",
            "let ksb = ch >> 3u;   // super-block along the row"]


def i8_lines(fmt: str, two: bool) -> list[str]:
    """WGSL after matvec.i8_quant_lines: the int8 x sums of the chunk, per chunk for all rows:
    q4_k / q5_k ``sq`` (residual ``sr``) for the min term, q6_k per 16-column half ``sqa`` /
    ``sqb`` (``sra`` / ``srb``) for the -32 of its quants. Why the min term takes the int8 sum
    and not the exact ``sx``: the weights are d1 q - m1 with q in 0..15 (0..31), so d1 q alone
    is far from zero; against int8 x its error is d1 mean(q) sum(x error), which only cancels
    when the min is multiplied by the same quantized x (measured on gate_up 67x256: NMSE 6e-3
    with sx, int8 x; q4_1, which uses sx, shows the same)."""
    if fmt not in KQUANT:
        return []
    out = []
    halves = (("", (0, 1, 2, 3)),) if fmt != "q6_k" else (("a", (0, 1)), ("b", (2, 3)))
    for pre, base in (("x", "sq"),) + ((("y", "sr"),) if two else ()):
        for suffix, ks in halves:
            out.append(f"let {base}{suffix} = " + " + ".join(
                f"dot4I8Packed({pre}{e}{k}, 0x01010101u)" for k in ks for e in "eo") + ";")
    return out


def _hi_bits(fmt: str, t: str, k: int, odd: bool) -> str:
    """WGSL: the high bits of qs word k's even / odd columns, placed at bit 4 (q5_k) or bits
    4-5 (q6_k) of each byte (byte i = column 8k + 2i (+1))."""
    if fmt == "q5_k":
        return f"((({t}h >> {2 * k + odd}u) << 4u) & 0x10101010u)"
    h = f"{t}ha" if k < 2 else f"{t}hb"
    sh = 4 * (k & 1)
    src = f"({h} >> {sh}u)" if sh else h
    return f"(({src} << {2 if odd else 4}u) & 0x30303030u)"


def accum_lines(fmt: str, p: str, wv: str, xs: list[str], row: str, acc: str, tag: str,
                i8: int = 0) -> list[str]:
    """WGSL adding row ``row``'s chunk dot of weight ``p`` (chunk vec4 expression ``wv``) to
    ``acc``; ``xs``: the chunk's 8 x vec4s (f32 path); ``i8`` 1 / 2: int8 x (unpack 2 / 3, the
    names of matvec.i8_quant_lines); ``tag`` makes the temporaries' names unique."""
    t = f"{p}{tag}"
    words = "xyzw"
    lines = [f"let {t}c = {wv};"]
    if fmt == "q6_k":
        lines += [f"let {t}b = {p}rb({row}, ksb);",
                  f"let {t}s = {p}k6s({t}b, kj);   // (d * s_2j, d * s_2j+1)",
                  f"let {t}ha = {p}sb[{t}b + 5u + 2u * kj];   // high bits, columns 0..15",
                  f"let {t}hb = {p}sb[{t}b + 6u + 2u * kj];   // columns 16..31"]
    else:
        lines.append(f"let {t}m = {p}kdm({p}rec({row}, ksb), kj);   // (d * sc, dmin * m)")
        if fmt == "q5_k":
            lines.append(f"let {t}h = {p}qh({row}, ch);   // 5th bits")
    if i8:
        for k, w in enumerate(words):
            e = f"({t}c.{w} & 0x0F0F0F0Fu)"
            o = f"(({t}c.{w} >> 4u) & 0x0F0F0F0Fu)"
            if fmt != "q4_k":
                e, o = f"{e} | {_hi_bits(fmt, t, k, False)}", f"{o} | {_hi_bits(fmt, t, k, True)}"
            lines += [f"let {t}e{k} = {e};", f"let {t}o{k} = {o};"]

        def isum(pre: str, ks) -> str:
            return " + ".join(f"dot4I8Packed({t}e{k}, {pre}e{k}) + dot4I8Packed({t}o{k}, {pre}o{k})"
                              for k in ks)

        def scaled(ks, cx: str = "", cy: str = "") -> str:
            s = f"f32({isum('x', ks)}{f' - 32 * {cx}' if cx else ''})"
            if i8 == 2:
                s = (f"({s} + f32({isum('y', ks)}{f' - 32 * {cy}' if cy else ''}) "
                     f"* (1.0 / 254.0))")
            return s

        if fmt == "q6_k":
            lines.append(f"{acc} += dx * ({t}s.x * {scaled((0, 1), 'sqa', 'sra')} + "
                         f"{t}s.y * {scaled((2, 3), 'sqb', 'srb')});")
        else:   # the min against the same int8 x (i8_lines)
            ones = "f32(sq)" if i8 == 1 else "(f32(sq) + f32(sr) * (1.0 / 254.0))"
            lines.append(f"{acc} += dx * ({t}m.x * {scaled(range(4))} - {t}m.y * {ones});")
        return lines
    if fmt == "q6_k":
        def half(ks, h):
            terms = []
            for k in ks:
                sh = 4 * (k & 1)
                w = f"{t}c.{words[k]}"
                terms.append(f"dot({p}q6({w}, {h} >> {sh}u), {xs[2 * k]}) + "
                             f"dot({p}q6({w} >> 16u, {h} >> {sh + 16}u), {xs[2 * k + 1]})")
            return " + ".join(terms)
        lines.append(f"{acc} += {t}s.x * ({half((0, 1), t + 'ha')}) + "
                     f"{t}s.y * ({half((2, 3), t + 'hb')});")
        return lines
    if fmt == "q5_k":
        dots = " + ".join(f"dot({p}q5({t}c.{w}, {t}h >> {2 * k}u), {xs[2 * k]}) + "
                          f"dot({p}q5({t}c.{w} >> 16u, {t}h >> {2 * k + 16}u), {xs[2 * k + 1]})"
                          for k, w in enumerate(words))
    else:
        dots = " + ".join(f"dot({p}nib_lo({t}c.{w}), {xs[2 * k]}) + "
                          f"dot({p}nib_hi({t}c.{w}), {xs[2 * k + 1]})" for k, w in enumerate(words))
    lines.append(f"{acc} += {t}m.x * ({dots}) - {t}m.y * sx;")
    return lines
