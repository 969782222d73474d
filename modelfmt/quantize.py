"""numpy reference quantization: float32 (rows, cols) <-> the bit layouts of modelfmt/formats.py.

Schemes (G = group_size consecutive columns of one row share a scale; scales are f16):
  q8_0  d = amax / 127                q = round(x / d)          in [-127, 127]   x' = q * d
  q4_0  d = amax / 7                  q = round(x / d) + 8      in [1, 15]       x' = (q - 8) * d
        Symmetric: 15 of the 16 codes (q = 0, i.e. -8d, is never produced; GGUF Q4_0 sources
        that use it are still copied bit-exactly). llama.cpp's signed-max / -8 rule uses all 16
        codes but can put the opposite extreme a whole step away (error up to d, not d/2), and
        a 7.5 divisor maps the extreme between two codes, so re-quantizing dequantized values
        would change the grid; with amax / 7 the bound is d/2 and quantize(dequantize(.)) is exact.
  q4_1  m = min, d = (max - m) / 15   q = round((x - m) / d)    in [0, 15]       x' = q * d + m
  f16   IEEE half of x (round to nearest)
  f32   x unchanged
  q4_k / q5_k / q6_k   GGUF's K-quants (256-column super-blocks): modelfmt/kquant.py
Scales (and q4_1 mins) are rounded to f16 FIRST, in the safe direction: d up, m down, so that
every x of the group lies within the grid the stored f16 values describe. q is then computed
against those rounded values, which makes |x - x'| <= d/2 hold per element for the STORED d.

Output parts (see ``quantize``) are 2-D with one row per tensor row; ``part_bytes`` turns a part
into the bytes stored in a shard (padded to 4). Work is done in row chunks of ~8 MB so that
quantizing a 2 GB tensor needs only small temporaries.
"""

from __future__ import annotations

import numpy as np

from modelfmt.formats import FORMATS, KQUANT, check_shape, pad4

_CHUNK_ELEMS = 2 * 1024 * 1024  # elements per row chunk: 8 MB f32 temporaries (RSS bound)
_F16_MAX = 65504.0


class QuantError(ValueError):
    """Values that cannot be stored in a format (non-finite, beyond f16 range, bad shape)."""


# ---- helpers ----
def _f16_up(v: np.ndarray) -> np.ndarray:
    """Round non-negative f32 ``v`` to f16, never below ``v``."""
    h = v.astype(np.float16)
    low = h.astype(np.float32) < v
    if low.any():
        h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def _f16_down(v: np.ndarray) -> np.ndarray:
    """Round f32 ``v`` to f16, never above ``v``."""
    h = v.astype(np.float16)
    high = h.astype(np.float32) > v
    if high.any():
        h[high] = np.nextafter(h[high], np.float16(-np.inf))
    return h


def _row_chunks(rows: int, cols: int):
    step = max(1, _CHUNK_ELEMS // max(cols, 1))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _check_finite(x: np.ndarray, what: str) -> None:
    if not np.isfinite(x).all():
        raise QuantError(f"{what} holds NaN or infinite values")


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 (r, c) values 0..15 -> uint32 (r, c/8); nibble j of word w = column 8w+j."""
    b = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)  # (r, c/2): low nibble = even column
    return np.ascontiguousarray(b).view("<u4")              # little-endian: byte k = cols 8w+2k..


def _unpack_nibbles(qs: np.ndarray, cols: int) -> np.ndarray:
    """uint32 (r, c/8) -> uint8 (r, c)."""
    b = np.ascontiguousarray(qs).astype("<u4", copy=False).view(np.uint8)  # (r, c/2)
    out = np.empty((b.shape[0], cols), np.uint8)
    out[:, 0::2] = b & 0x0F
    out[:, 1::2] = b >> 4
    return out


# ---- quantize ----
def quantize(w: np.ndarray, fmt: str, group_size: int = 32) -> dict[str, np.ndarray]:
    """Quantize float (rows, cols) ``w`` into ``fmt``'s parts.

    Returns {"qs": uint32 (rows, cols/8 | cols/4), "scales": uint16 (rows, cols/G) f16 bits,
    "mins": uint16 (rows, cols/G)} for q4_0 / q4_1 / q8_0, {"qs", "sb"} uint32 for the
    K-quants, or {"data": float32 (rows, cols)} / {"data": uint16 (rows, cols) f16 bits}.
    Raises QuantError for bad shapes or values.
    """
    if fmt not in FORMATS:
        raise QuantError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise QuantError(f"expected a 2-D (rows, cols) array, got shape {w.shape}")
    rows, cols = w.shape
    why = check_shape(fmt, rows, cols, group_size)
    if why:
        raise QuantError(why)
    G = group_size
    if fmt in KQUANT:   # {"qs": u32 (rows, cols/8), "sb": u32 (rows, cols/256 * words)}
        from . import kquant
        try:
            return kquant.to_parts(kquant.quantize(w, fmt))
        except kquant.KQuantError as e:
            raise QuantError(str(e)) from None
    if fmt == "f32":
        data = np.ascontiguousarray(w, dtype=np.float32)  # (rows, cols) f32
        for r0, r1 in _row_chunks(rows, cols):
            _check_finite(data[r0:r1], "the tensor")
        return {"data": data}
    if fmt == "f16":
        data = np.empty((rows, cols), np.uint16)  # (rows, cols) f16 bits
        for r0, r1 in _row_chunks(rows, cols):
            x = np.asarray(w[r0:r1], np.float32)
            _check_finite(x, "the tensor")
            if np.abs(x).max(initial=0.0) > _F16_MAX:
                raise QuantError("values exceed the f16 range (65504)")
            data[r0:r1] = x.astype(np.float16).view(np.uint16)
        return {"data": data}

    ng = cols // G
    qcols = cols // 4 if fmt == "q8_0" else cols // 8
    qs = np.empty((rows, qcols), np.uint32)      # (rows, cols/4 | cols/8) packed
    scales = np.empty((rows, ng), np.uint16)     # (rows, cols/G) f16 bits
    mins = np.empty((rows, ng), np.uint16) if fmt == "q4_1" else None
    for r0, r1 in _row_chunks(rows, cols):
        x = np.asarray(w[r0:r1], np.float32).reshape(r1 - r0, ng, G)  # (r, ng, G)
        if fmt == "q4_1":
            lo = x.min(axis=2)
            hi = x.max(axis=2)
            _check_finite(lo, "the tensor")
            _check_finite(hi, "the tensor")
            if max(-lo.min(), hi.max()) > _F16_MAX:
                raise QuantError("values exceed the f16 range (65504) of the stored mins")
            m16 = _f16_down(lo)                                        # (r, ng) f16 <= min
            d16 = _f16_up((hi - m16.astype(np.float32)) / 15.0)        # (r, ng) f16
            d = d16.astype(np.float32)[..., None]
            safe = np.where(d > 0, d, 1.0)
            q = np.rint((x - m16.astype(np.float32)[..., None]) / safe)
            q = np.clip(q, 0, 15).astype(np.uint8).reshape(r1 - r0, cols)
            mins[r0:r1] = m16.view(np.uint16)
        else:
            amax = np.abs(x).max(axis=2)                               # (r, ng)
            _check_finite(amax, "the tensor")
            qmax = 127.0 if fmt == "q8_0" else 7.0
            if amax.max(initial=0.0) / qmax > _F16_MAX:
                raise QuantError("values too large for an f16 scale")
            d16 = _f16_up(amax / qmax)
            d = d16.astype(np.float32)[..., None]
            safe = np.where(d > 0, d, 1.0)
            q = np.rint(x / safe)
            if fmt == "q8_0":
                q = np.clip(q, -127, 127).astype(np.int8).reshape(r1 - r0, cols)
            else:
                q = (np.clip(q, -7, 7) + 8).astype(np.uint8).reshape(r1 - r0, cols)
        scales[r0:r1] = d16.view(np.uint16)
        if fmt == "q8_0":
            qs[r0:r1] = np.ascontiguousarray(q).view("<u4")  # byte j of word w = column 4w+j
        else:
            qs[r0:r1] = _pack_nibbles(q)
    out = {"qs": qs, "scales": scales}
    if mins is not None:
        out["mins"] = mins
    return out


# ---- dequantize ----
def dequantize(parts: dict[str, np.ndarray], fmt: str, rows: int, cols: int,
               group_size: int = 32) -> np.ndarray:
    """Inverse of ``quantize``: parts (arrays, or raw shard bytes) -> float32 (rows, cols)."""
    if fmt not in FORMATS:
        raise QuantError(f"unknown format {fmt!r}")
    if fmt in KQUANT:
        from . import kquant
        try:
            return kquant.dequantize(kquant.from_parts(parts, fmt, rows, cols))
        except kquant.KQuantError as e:
            raise QuantError(str(e)) from None
    G = group_size
    ng = cols // G if fmt in ("q4_0", "q4_1", "q8_0") else 0

    def arr(name, dtype, n):
        a = parts[name]
        a = np.frombuffer(a, dtype=dtype) if isinstance(a, (bytes, bytearray, memoryview)) \
            else np.ascontiguousarray(a).reshape(-1).view(dtype)
        return a[:n]  # drop the 4-byte padding of f16 arrays

    if fmt == "f32":
        return arr("data", "<f4", rows * cols).astype(np.float32).reshape(rows, cols)
    if fmt == "f16":
        return arr("data", "<f2", rows * cols).astype(np.float32).reshape(rows, cols)
    d = arr("scales", "<f2", rows * ng).astype(np.float32).reshape(rows, ng, 1)  # (rows, ng, 1)
    if fmt == "q8_0":
        q = arr("qs", np.int8, rows * cols).astype(np.float32).reshape(rows, ng, G)
        return (q * d).reshape(rows, cols)
    qs = arr("qs", "<u4", rows * cols // 8).reshape(rows, cols // 8)
    q = _unpack_nibbles(qs, cols).astype(np.float32).reshape(rows, ng, G)
    if fmt == "q4_0":
        return ((q - 8.0) * d).reshape(rows, cols)
    m = arr("mins", "<f2", rows * ng).astype(np.float32).reshape(rows, ng, 1)
    return (q * d + m).reshape(rows, cols)


def part_bytes(a: np.ndarray) -> bytes:
    """The bytes of one part as stored in a shard: little-endian, padded with zeros to 4 bytes."""
    b = np.ascontiguousarray(a)
    if b.dtype.byteorder == ">":
        b = b.byteswap().view(b.dtype.newbyteorder("<"))
    raw = b.tobytes()
    return raw + b"\0" * (pad4(len(raw)) - len(raw))


def error_stats(w: np.ndarray, parts: dict[str, np.ndarray], fmt: str,
                group_size: int = 32) -> tuple[float, float]:
    """(max, sum) of |w - dequantize(parts)| over all elements, computed in row chunks."""
    rows, cols = w.shape
    G = group_size
    worst, total = 0.0, 0.0
    for r0, r1 in _row_chunks(rows, cols):
        sub = {}
        for k, v in parts.items():
            sub[k] = v[r0:r1]  # every part is 2-D with one row per tensor row
        ref = np.asarray(w[r0:r1], np.float32)
        err = np.abs(ref - dequantize(sub, fmt, r1 - r0, cols, G))
        worst = max(worst, float(err.max(initial=0.0)))
        total += float(err.sum(dtype=np.float64))
    return worst, total
