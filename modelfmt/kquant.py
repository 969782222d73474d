"""GGUF K-quants (Q4_K, Q5_K, Q6_K) in numpy: block parser, the re-layout into our parts, the
inverse, dequantization and the K-quant quantizer. Native only (numpy).

Three forms of the same weights:
  GGUF blocks  (rows, nsb * block bytes) u8, as llama.cpp writes them (144 / 176 / 210 bytes
               per 256 weights); the oracle is ``gguf.quants.dequantize`` of these bytes
  KBlocks      the logical content: f16 super-block scales d (and dmin), per-sub-block scales
               sc (and mins m), one unsigned quant q per weight
  parts        our shard layout {"qs", "sb"} (modelfmt/formats.py), built for the kernels

``from_gguf`` / ``to_gguf`` and ``from_parts`` / ``to_parts`` convert losslessly between them, so
a GGUF file's K-quant tensors are copied bit for bit; ``dequantize`` reproduces gguf's float32
arithmetic exactly (same products, same order: ``(d * sc) * q - dmin * m``, ``(d * s) * (q - 32)``).

``quantize(w, fmt)`` is our implementation of the published K-quant rules (llama.cpp's reference
quantizers, without an importance matrix):
  q4_k / q5_k  per sub-block of 32: weights |x| + rms(x); a scale and min from a least-squares
               fit over a sweep of candidate grid spacings (nmax 15: 21 steps from 14 to 17;
               nmax 31: 16 steps from 30.5 to 32); then the 8 scales and 8 mins of a super-block
               are quantized to 6 bits against d = max scale / 63, dmin = max min / 63 (f16),
               and every weight re-rounded against the stored d * sc, dmin * m.
  q6_k         per sub-block of 16: symmetric, q in [-32, 31], weights x^2, 19 candidate scales
               around -32 / (signed max); the 16 scales quantized to int8 against d = -max / 128.
Work runs on whole row chunks at once (vectorized over sub-blocks), ~8 MB of input at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import KQUANT, QK_K, SB_WORDS

BLOCK_BYTES = {"q4_k": 144, "q5_k": 176, "q6_k": 210}   # GGUF bytes per super-block
NSUB = {"q4_k": 8, "q5_k": 8, "q6_k": 16}               # sub-blocks per super-block
QMAX = {"q4_k": 15, "q5_k": 31, "q6_k": 63}             # largest unsigned quant
_CHUNK_ELEMS = 2 * 1024 * 1024


class KQuantError(ValueError):
    """K-quant data that cannot be parsed or stored (bad shape, non-finite scale, overflow)."""


@dataclass
class KBlocks:
    """The logical content of a (rows, cols) K-quant tensor, nsb = cols / 256 super-blocks a row.

    d:    (rows, nsb) uint16  f16 bits of the super-block scale
    dmin: (rows, nsb) uint16  f16 bits of the super-block min scale (q4_k / q5_k; None for q6_k)
    sc:   (rows, nsb, 8) uint8 6-bit scales (q4_k / q5_k) | (rows, nsb, 16) int8 scales (q6_k)
    m:    (rows, nsb, 8) uint8 6-bit mins (q4_k / q5_k; None for q6_k)
    q:    (rows, cols) uint8 quants, 0..15 / 0..31 / 0..63 (q6_k's value is q - 32)
    """

    fmt: str
    d: np.ndarray
    dmin: np.ndarray | None
    sc: np.ndarray
    m: np.ndarray | None
    q: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape


def _check(fmt: str, rows: int, cols: int) -> int:
    if fmt not in KQUANT:
        raise KQuantError(f"unknown K-quant format {fmt!r}; known: {', '.join(KQUANT)}")
    if cols <= 0 or cols % QK_K or rows < 0:
        raise KQuantError(f"{fmt} needs a multiple of {QK_K} columns, got {cols}")
    return cols // QK_K


def _f16_bad(bits: np.ndarray) -> np.ndarray:
    """True where f16 bit patterns are inf or NaN (exponent all ones)."""
    return (bits & 0x7C00) == 0x7C00


def _finite_or_raise(bits: np.ndarray, what: str, row0: int = 0) -> None:
    bad = _f16_bad(bits)
    if bad.any():
        r, s = (int(v) for v in np.argwhere(bad)[0])
        raise KQuantError(f"the super-block scale {what} of super-block {s} in row {row0 + r} "
                          f"is not finite (f16 0x{int(bits[r, s]):04x})")


# ---- GGUF blocks <-> KBlocks ----
def check_gguf(raw: np.ndarray, fmt: str, rows: int, cols: int, row0: int = 0) -> None:
    """Raise KQuantError unless ``raw`` holds rows x cols/256 whole blocks with finite scales
    (``row0``: the first row's index in the tensor, for the message)."""
    nsb = _check(fmt, rows, cols)
    raw = np.asarray(raw)
    want = rows * nsb * BLOCK_BYTES[fmt]
    if raw.dtype != np.uint8 or raw.size != want:
        raise KQuantError(f"{fmt} tensor of shape ({rows}, {cols}) needs {want} bytes, got "
                          f"{raw.size * raw.itemsize} (truncated or of another type)")
    b = raw.reshape(rows, nsb, BLOCK_BYTES[fmt])
    if fmt == "q6_k":
        _finite_or_raise(np.ascontiguousarray(b[..., 208:210]).view("<u2")[..., 0], "d", row0)
    else:
        _finite_or_raise(np.ascontiguousarray(b[..., 0:2]).view("<u2")[..., 0], "d", row0)
        _finite_or_raise(np.ascontiguousarray(b[..., 2:4]).view("<u2")[..., 0], "dmin", row0)


def from_gguf(raw: np.ndarray, fmt: str, rows: int, cols: int, row0: int = 0) -> KBlocks:
    """Parse GGUF block bytes (rows, nsb * block bytes) u8. Raises KQuantError for a wrong byte
    count or a non-finite super-block scale (every other bit pattern is a valid block)."""
    check_gguf(raw, fmt, rows, cols, row0)
    nsb = cols // QK_K
    b = np.asarray(raw).reshape(rows, nsb, BLOCK_BYTES[fmt])
    if fmt == "q6_k":
        ql, qh = b[..., :128], b[..., 128:192]
        sc = np.ascontiguousarray(b[..., 192:208]).view(np.int8)       # (rows, nsb, 16)
        d = np.ascontiguousarray(b[..., 208:210]).view("<u2")[..., 0]  # (rows, nsb)
        lo = np.empty((rows, nsb, 2, 4, 32), np.uint8)   # (half, quarter, l): column 128h+32t+l
        qlh = ql.reshape(rows, nsb, 2, 2, 32)            # byte 64h + 32u + l
        lo[:, :, :, 0] = qlh[:, :, :, 0] & 15
        lo[:, :, :, 1] = qlh[:, :, :, 1] & 15
        lo[:, :, :, 2] = qlh[:, :, :, 0] >> 4
        lo[:, :, :, 3] = qlh[:, :, :, 1] >> 4
        qhh = qh.reshape(rows, nsb, 2, 1, 32)
        hi = (qhh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 1, 4, 1)) & 3
        q = (lo | (hi << 4)).reshape(rows, cols)
        return KBlocks(fmt, d, None, sc, None, q)
    d = np.ascontiguousarray(b[..., 0:2]).view("<u2")[..., 0]
    dmin = np.ascontiguousarray(b[..., 2:4]).view("<u2")[..., 0]
    s = b[..., 4:16]
    sc = np.empty((rows, nsb, 8), np.uint8)
    m = np.empty((rows, nsb, 8), np.uint8)
    sc[..., :4] = s[..., 0:4] & 63
    m[..., :4] = s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)
    m[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    qs = b[..., -128:].reshape(rows, nsb, 4, 1, 32)      # byte 32c + l: columns 64c + l, +32
    q = ((qs >> np.array([0, 4], np.uint8).reshape(1, 1, 1, 2, 1)) & 15)   # (.., 4, 2, 32)
    if fmt == "q5_k":
        qh = b[..., 16:48].reshape(rows, nsb, 1, 32)     # bit i of byte l: column 32i + l
        h = (qh >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1
        q = q.reshape(rows, nsb, 8, 32) | (h << 4)
    return KBlocks(fmt, d, dmin, sc, m, np.ascontiguousarray(q).reshape(rows, cols))


def to_gguf(kb: KBlocks) -> np.ndarray:
    """KBlocks -> GGUF block bytes (rows, nsb * block bytes) u8 (the inverse of ``from_gguf``)."""
    fmt = kb.fmt
    rows, cols = kb.shape
    nsb = _check(fmt, rows, cols)
    out = np.zeros((rows, nsb, BLOCK_BYTES[fmt]), np.uint8)
    if fmt == "q6_k":
        q = kb.q.reshape(rows, nsb, 2, 4, 32)
        lo, hi = q & 15, q >> 4
        out[..., :128] = np.stack([lo[:, :, :, 0] | (lo[:, :, :, 2] << 4),
                                   lo[:, :, :, 1] | (lo[:, :, :, 3] << 4)], 3).reshape(
                                       rows, nsb, 128)
        out[..., 128:192] = (hi[:, :, :, 0] | (hi[:, :, :, 1] << 2) | (hi[:, :, :, 2] << 4)
                             | (hi[:, :, :, 3] << 6)).reshape(rows, nsb, 64)
        out[..., 192:208] = kb.sc.astype(np.int8).view(np.uint8)
        out[..., 208:210] = np.ascontiguousarray(kb.d.astype("<u2"))[..., None].view(np.uint8)
        return out.reshape(rows, -1)
    out[..., 0:2] = np.ascontiguousarray(kb.d.astype("<u2"))[..., None].view(np.uint8)
    out[..., 2:4] = np.ascontiguousarray(kb.dmin.astype("<u2"))[..., None].view(np.uint8)
    sc, m = kb.sc, kb.m
    out[..., 4:8] = (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6)
    out[..., 8:12] = (m[..., :4] & 63) | ((m[..., 4:] >> 4) << 6)
    out[..., 12:16] = (sc[..., 4:] & 15) | ((m[..., 4:] & 15) << 4)
    q = kb.q.reshape(rows, nsb, 4, 2, 32)
    out[..., -128:] = ((q[:, :, :, 0] & 15) | ((q[:, :, :, 1] & 15) << 4)).reshape(rows, nsb, 128)
    if fmt == "q5_k":
        h = (kb.q.reshape(rows, nsb, 8, 32) >> 4).astype(np.uint8)
        out[..., 16:48] = np.bitwise_or.reduce(h << np.arange(8, dtype=np.uint8)[None, None, :,
                                                                                None], axis=2)
    return out.reshape(rows, -1)


# ---- KBlocks <-> our parts ----
def _nibble_words(lo: np.ndarray) -> np.ndarray:
    """uint8 (rows, cols) values 0..15 -> u32 (rows, cols/8), nibble j of word w = col 8w+j."""
    b = (lo[:, 0::2] | (lo[:, 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(b).view("<u4")


def _words_nibbles(qs: np.ndarray, rows: int, cols: int) -> np.ndarray:
    b = np.ascontiguousarray(qs).reshape(-1).view(np.uint8)[: rows * cols // 2].reshape(rows, -1)
    out = np.empty((rows, cols), np.uint8)
    out[:, 0::2] = b & 15
    out[:, 1::2] = b >> 4
    return out


# For the high bits: within a 32-column chunk, column c = 8k + 2i + p (qs word k, byte i, parity
# p). q5_k: bit 2k + p of byte i of the chunk's word. q6_k: word h = k >> 1, bits 4g + 2p of
# byte i, g = k & 1.
def _hi_words(q_hi: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) high parts (1 or 2 bits) -> u32 (rows, cols/32 * bits) in the dot order."""
    rows, cols = q_hi.shape
    h = q_hi.reshape(rows, cols // 32, 4, 4, 2).astype(np.uint32)   # (.., k, i, p)
    if bits == 1:
        sh = (2 * np.arange(4)[:, None, None] + np.arange(2)[None, None, :]
              + 8 * np.arange(4)[None, :, None]).astype(np.uint32)  # (k, i, p) bit position
        return np.bitwise_or.reduce((h << sh).reshape(rows, cols // 32, 32), axis=2)
    h = h.reshape(rows, cols // 32, 2, 2, 4, 2)                      # (.., hw, g, i, p)
    sh = (4 * np.arange(2)[:, None, None] + 2 * np.arange(2)[None, None, :]
          + 8 * np.arange(4)[None, :, None]).astype(np.uint32)      # (g, i, p)
    w = np.bitwise_or.reduce((h << sh).reshape(rows, cols // 32, 2, 16), axis=3)
    return w.reshape(rows, cols // 16)


def _hi_unwords(words: np.ndarray, rows: int, cols: int, bits: int) -> np.ndarray:
    """Inverse of ``_hi_words``: u32 -> (rows, cols) uint8 high parts."""
    if bits == 1:
        w = words.reshape(rows, cols // 32, 1, 1, 1).astype(np.uint32)
        sh = (2 * np.arange(4)[:, None, None] + np.arange(2)[None, None, :]
              + 8 * np.arange(4)[None, :, None]).astype(np.uint32)
        return ((w >> sh) & 1).astype(np.uint8).reshape(rows, cols)
    w = words.reshape(rows, cols // 32, 2, 1, 1, 1).astype(np.uint32)
    sh = (4 * np.arange(2)[:, None, None] + 2 * np.arange(2)[None, None, :]
          + 8 * np.arange(4)[None, :, None]).astype(np.uint32)
    return ((w >> sh) & 3).astype(np.uint8).reshape(rows, cols)


def _scale_words(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(rows, nsb, 8) 6-bit scales and mins -> (rows, nsb, 3) u32: low nibbles, high 2 bits."""
    j = np.arange(8, dtype=np.uint32)
    s, mm = sc.astype(np.uint32), m.astype(np.uint32)
    w1 = np.bitwise_or.reduce((s & 15) << (4 * j), axis=-1)
    w2 = np.bitwise_or.reduce((mm & 15) << (4 * j), axis=-1)
    w3 = np.bitwise_or.reduce(((s >> 4) << (2 * j)) | ((mm >> 4) << (16 + 2 * j)), axis=-1)
    return np.stack([w1, w2, w3], -1)


def to_parts(kb: KBlocks) -> dict[str, np.ndarray]:
    """KBlocks -> {"qs": u32 (rows, cols/8), "sb": u32 (rows, nsb * SB_WORDS)}."""
    fmt = kb.fmt
    rows, cols = kb.shape
    nsb = _check(fmt, rows, cols)
    qs = _nibble_words(kb.q & 15)
    sb = np.zeros((rows, nsb, SB_WORDS[fmt]), np.uint32)
    if fmt == "q6_k":
        sb[..., 0:4] = np.ascontiguousarray(kb.sc.astype(np.int8)).view("<u4")
        sb[..., 4] = kb.d.astype(np.uint32)
        sb[..., 5:] = _hi_words(kb.q >> 4, 2).reshape(rows, nsb, 16)
    else:
        sb[..., 0] = kb.d.astype(np.uint32) | (kb.dmin.astype(np.uint32) << 16)
        sb[..., 1:4] = _scale_words(kb.sc, kb.m)
        if fmt == "q5_k":
            sb[..., 4:] = _hi_words(kb.q >> 4, 1).reshape(rows, nsb, 8)
    return {"qs": qs, "sb": sb.reshape(rows, -1)}


def from_parts(parts: dict, fmt: str, rows: int, cols: int) -> KBlocks:
    """Our parts (arrays of any integer dtype, or raw shard bytes) -> KBlocks."""
    nsb = _check(fmt, rows, cols)

    def words(name, n):
        a = parts[name]
        a = np.frombuffer(a, "<u4") if isinstance(a, (bytes, bytearray, memoryview)) \
            else np.ascontiguousarray(a).reshape(-1).view("<u4")
        if a.size < n:
            raise KQuantError(f"{fmt} part {name!r} holds {a.size} words, needs {n}")
        return a[:n]

    q = _words_nibbles(words("qs", rows * cols // 8), rows, cols)
    sb = words("sb", rows * nsb * SB_WORDS[fmt]).reshape(rows, nsb, SB_WORDS[fmt])
    if fmt == "q6_k":
        sc = np.ascontiguousarray(sb[..., 0:4]).view(np.int8).reshape(rows, nsb, 16)
        d = (sb[..., 4] & 0xFFFF).astype(np.uint16)
        q |= _hi_unwords(sb[..., 5:], rows, cols, 2) << 4
        return KBlocks(fmt, d, None, sc.copy(), None, q)
    d = (sb[..., 0] & 0xFFFF).astype(np.uint16)
    dmin = (sb[..., 0] >> 16).astype(np.uint16)
    j = np.arange(8, dtype=np.uint32)
    w1, w2, w3 = sb[..., 1:2], sb[..., 2:3], sb[..., 3:4]
    sc = (((w1 >> (4 * j)) & 15) | (((w3 >> (2 * j)) & 3) << 4)).astype(np.uint8)
    m = (((w2 >> (4 * j)) & 15) | (((w3 >> (16 + 2 * j)) & 3) << 4)).astype(np.uint8)
    if fmt == "q5_k":
        q |= _hi_unwords(sb[..., 4:], rows, cols, 1) << 4
    return KBlocks(fmt, d, dmin, sc, m, q)


# ---- dequantize (gguf's float32 arithmetic, operation for operation) ----
def dequantize(kb: KBlocks) -> np.ndarray:
    """float32 (rows, cols), bit-identical to ``gguf.quants.dequantize`` of ``to_gguf(kb)``."""
    rows, cols = kb.shape
    nsb = cols // QK_K
    d = kb.d.view(np.float16).astype(np.float32)[..., None]          # (rows, nsb, 1)
    if kb.fmt == "q6_k":
        dl = (d * kb.sc.astype(np.float32))[..., None]                # (rows, nsb, 16, 1)
        q = (kb.q.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(rows, nsb, 16, 16)
        return (dl * q).reshape(rows, cols)
    dm = kb.dmin.view(np.float16).astype(np.float32)[..., None]
    d1 = (d * kb.sc.astype(np.float32))[..., None]                    # (rows, nsb, 8, 1)
    m1 = (dm * kb.m.astype(np.float32))[..., None]
    q = kb.q.astype(np.float32).reshape(rows, nsb, 8, 32)
    return (d1 * q - m1).reshape(rows, cols)


# ---- quantize ----
def _rint(v: np.ndarray) -> np.ndarray:
    return np.rint(v)   # round half to even, as llama.cpp's nearest_int (1.5 * 2^23 trick)


def _fit_scale_min(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                   nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of x (N, n): (scale, min) with x ~ scale * L + min, L in [0, nmax], min <= 0,
    minimising sum w (scale L + min - x)^2 over the plain min/max grid and ``nstep`` + 1
    candidate grids of nmax + rmin + rdelta * i steps, each refit by weighted least squares."""
    mn = np.minimum(x.min(axis=1), 0.0)
    mx = x.max(axis=1)
    span = mx - mn
    flat = span == 0
    span = np.where(flat, 1.0, span).astype(np.float32)
    sum_w = w.sum(axis=1)
    sum_x = (w * x).sum(axis=1)
    xm = x - mn[:, None]
    iscale = np.float32(nmax) / span
    scale = 1.0 / iscale
    L = np.clip(_rint(iscale[:, None] * xm), 0, nmax)
    best = (w * (scale[:, None] * L + mn[:, None] - x) ** 2).sum(axis=1)
    best_scale, best_min = scale.astype(np.float32), mn.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(nstep + 1):
            iscale = np.float32(rmin + rdelta * i + nmax) / span
            La = np.clip(_rint(iscale[:, None] * xm), 0, nmax)
            wl = w * La
            sum_l = wl.sum(axis=1)
            sum_l2 = (wl * La).sum(axis=1)
            sum_xl = (wl * x).sum(axis=1)
            D = sum_w * sum_l2 - sum_l * sum_l
            s = (sum_w * sum_xl - sum_x * sum_l) / D
            m = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = m > 0
            s = np.where(pos, sum_xl / sum_l2, s)
            m = np.where(pos, 0.0, m)
            err = (w * (s[:, None] * La + m[:, None] - x) ** 2).sum(axis=1)
            take = (D > 0) & (err < best)
            best = np.where(take, err, best)
            best_scale = np.where(take, s, best_scale)
            best_min = np.where(take, m, best_min)
    best_scale = np.where(flat, 0.0, best_scale)
    best_min = np.where(flat, mn, best_min)
    return best_scale.astype(np.float32), (-best_min).astype(np.float32)


def _fit_symmetric(x: np.ndarray, nmax: int) -> np.ndarray:
    """Per row of x (N, n): signed scale with x ~ scale * L, L in [-nmax, nmax - 1], weights x^2;
    the extreme value maps to -nmax, then 18 more candidate grids (nmax +- 0.1 i)."""
    n = x.shape[1]
    ax = np.abs(x)
    idx = ax.argmax(axis=1)                     # first of equal maxima, as llama.cpp's loop
    mx = x[np.arange(x.shape[0]), idx]
    zero = ax[np.arange(x.shape[0]), idx] < 1e-15
    mx = np.where(zero, 1.0, mx).astype(np.float32)
    w = x * x

    def attempt(iscale):
        L = np.clip(_rint(iscale[:, None] * x), -nmax, nmax - 1)
        return (w * x * L).sum(axis=1), (w * L * L).sum(axis=1)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sumlx, suml2 = attempt(np.float32(-nmax) / mx)
        scale = np.where(suml2 > 0, sumlx / suml2, 0.0)
        best = scale * sumlx
        for i in range(-9, 10):
            if i == 0:
                continue
            sumlx, suml2 = attempt(np.float32(-(nmax + 0.1 * i)) / mx)
            take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            scale = np.where(take, sumlx / suml2, scale)
            best = np.where(take, scale * sumlx, best)
    del n
    return np.where(zero, 0.0, scale).astype(np.float32)


def _to_f16(v: np.ndarray, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = v.astype(np.float16)
    if not np.isfinite(h).all():
        raise KQuantError(f"values too large for the f16 super-block {what} (65504)")
    return h


def _quantize_rows(x: np.ndarray, fmt: str) -> KBlocks:
    rows, cols = x.shape
    nsb = cols // QK_K
    if fmt == "q6_k":
        sub = x.reshape(-1, 16)
        scales = _fit_symmetric(sub, 32).reshape(rows, nsb, 16)
        pick = np.abs(scales).argmax(axis=2)
        max_scale = np.take_along_axis(scales, pick[..., None], 2)[..., 0]   # (rows, nsb)
        nz = max_scale != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = np.where(nz, np.float32(-128.0) / max_scale, 0.0).astype(np.float32)
            d16 = _to_f16(np.where(nz, np.float32(1.0) / iscale, 0.0).astype(np.float32), "scale")
        sc = np.clip(_rint(iscale[..., None] * scales), -128, 127).astype(np.int8)
        dl = (d16.astype(np.float32)[..., None] * sc.astype(np.float32))[..., None]
        xs = x.reshape(rows, nsb, 16, 16)
        with np.errstate(divide="ignore", invalid="ignore"):
            L = np.where(dl != 0, np.clip(_rint(xs / dl), -32, 31), 0.0)
        q = (L + 32).astype(np.uint8).reshape(rows, cols)
        return KBlocks(fmt, d16.view(np.uint16), None, sc, None, q)
    sub = x.reshape(-1, 32)
    av = np.sqrt((sub * sub).sum(axis=1) / 32)[:, None]
    w = av + np.abs(sub)
    if fmt == "q4_k":
        scales, mins = _fit_scale_min(sub, w, 15, -1.0, 0.1, 20)
    else:
        scales, mins = _fit_scale_min(sub, w, 31, -0.5, 0.1, 15)
    scales, mins = scales.reshape(rows, nsb, 8), mins.reshape(rows, nsb, 8)
    max_scale = np.maximum(scales.max(axis=2), 0.0)
    max_min = np.maximum(mins.max(axis=2), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = np.where(max_scale > 0, np.float32(63.0) / max_scale, 0.0).astype(np.float32)
        inv_m = np.where(max_min > 0, np.float32(63.0) / max_min, 0.0).astype(np.float32)
    sc = np.clip(_rint(inv_s[..., None] * scales), 0, 63).astype(np.uint8)
    m = np.clip(_rint(inv_m[..., None] * mins), 0, 63).astype(np.uint8)
    d16 = _to_f16((max_scale / np.float32(63.0)).astype(np.float32), "scale")
    m16 = _to_f16((max_min / np.float32(63.0)).astype(np.float32), "min scale")
    d1 = (d16.astype(np.float32)[..., None] * sc.astype(np.float32))[..., None]
    m1 = (m16.astype(np.float32)[..., None] * m.astype(np.float32))[..., None]
    xs = x.reshape(rows, nsb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        L = np.where(d1 != 0, np.clip(_rint((xs + m1) / d1), 0, QMAX[fmt]), 0.0)
    q = L.astype(np.uint8).reshape(rows, cols)
    return KBlocks(fmt, d16.view(np.uint16), m16.view(np.uint16), sc, m, q)


def quantize(w: np.ndarray, fmt: str) -> KBlocks:
    """float (rows, cols) -> KBlocks by the K-quant rules (module docstring), in row chunks.
    Raises KQuantError for a bad shape, non-finite values or f16 overflow of a scale."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise KQuantError(f"expected a 2-D (rows, cols) array, got shape {w.shape}")
    rows, cols = w.shape
    nsb = _check(fmt, rows, cols)
    ns = NSUB[fmt]
    d = np.empty((rows, nsb), np.uint16)
    dmin = None if fmt == "q6_k" else np.empty((rows, nsb), np.uint16)
    sc = np.empty((rows, nsb, ns), np.int8 if fmt == "q6_k" else np.uint8)
    m = None if fmt == "q6_k" else np.empty((rows, nsb, 8), np.uint8)
    q = np.empty((rows, cols), np.uint8)
    step = max(1, _CHUNK_ELEMS // cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        x = np.asarray(w[r0:r1], np.float32)
        if not np.isfinite(x).all():
            raise KQuantError("the tensor holds NaN or infinite values")
        kb = _quantize_rows(x, fmt)
        d[r0:r1], sc[r0:r1], q[r0:r1] = kb.d, kb.sc, kb.q
        if dmin is not None:
            dmin[r0:r1], m[r0:r1] = kb.dmin, kb.m
    return KBlocks(fmt, d, dmin, sc, m, q)


def gguf_to_parts(raw: np.ndarray, fmt: str, rows: int, cols: int,
                  row0: int = 0) -> dict[str, np.ndarray]:
    """GGUF block bytes -> our parts (the lossless transcode of ``weights_tool pack``)."""
    return to_parts(from_gguf(raw, fmt, rows, cols, row0))
