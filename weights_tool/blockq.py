"""Activation-weighted block quantization: the scale (and min) of each 32-wide block chosen to
minimise the block's output error, not its weight error. numpy only, float32.

A block is G consecutive columns of one row (the q4_0 / q4_1 / q8_0 group). For calibration
inputs X (n, cols), the output error a block causes is  e^T H_g e  with e = w - w' the block's
weight error and H_g = X_g^T X_g the (G, G) diagonal block of the Hessian X^T X.  ``hw`` below
is the diagonal of that block (per-input-channel mean x^2, llama.cpp's "importance matrix"), which
ranks candidates almost as well at 1/G of the cost; with ``hw`` all ones the search minimises
the plain weight error.

Candidates per block (then one or two weighted least-squares refinements of the scale given the
codes, and a re-rounding):
  q4_0  codes -8..7 (all 16; the kernels compute (q - 8) * d for any f16 d, negative included):
        d = v / t, v the block's signed extreme, t in -8 .. -10 (v on code -8, mild clipping)
        and 7 .. 9 (v on code 7); the plain RTN of modelfmt.quantize (d = amax / 7) is one
        of them, so the search never does worse than RTN on the weighted error
  q4_1  lo / hi pulled in by 0 .. 10 % of the range each (clipping), d = (hi - lo) / 15
  q8_0  d = amax / t, t in 127 .. 135
and, first of all, modelfmt.quantize's own round-to-nearest scale (and min).

Shapes: w (rows, ng, G) float32, hw (ng, G) float32 >= 0; scales d / mins m (rows, ng) float32
holding f16 values; codes q (rows, ng, G) float32 holding integers in the format's code range.
"""

from __future__ import annotations

import numpy as np

from modelfmt.quantize import _f16_down, _f16_up, _pack_nibbles

Q4_0_T = np.concatenate([-8.0 - 0.25 * np.arange(9), 7.0 + 0.25 * np.arange(9)])
Q4_1_CLIP = 0.025 * np.arange(5)          # fraction of the range each end is pulled in
Q8_0_T = 127.0 + np.arange(0, 9)
CODE_RANGE = {"q4_0": (-8.0, 7.0), "q4_1": (0.0, 15.0), "q8_0": (-127.0, 127.0)}
_ROW_CHUNK = 1 << 20                      # elements per row chunk of temporaries (4 MB f32)


def _f16(a: np.ndarray) -> np.ndarray:
    """Round to the nearest f16 value (kept as float32); f16 overflow clamps to +-65504."""
    return np.clip(a, -65504.0, 65504.0).astype(np.float16).astype(np.float32)


def codes(w: np.ndarray, fmt: str, d: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """Round ``w`` (r, ng, G) to the format's codes for scales d (r, ng) [and mins m]."""
    lo, hi = CODE_RANGE[fmt]
    safe = np.where(d != 0, d, 1.0)[..., None]
    x = w - m[..., None] if m is not None else w
    return np.clip(np.rint(x / safe), lo, hi)


def dequant(q: np.ndarray, d: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """(r, ng, G) codes -> float32 values."""
    out = q * d[..., None]
    return out + m[..., None] if m is not None else out


def _werr(w, wq, hw):
    """(r, ng) weighted squared error of each block."""
    e = w - wq
    return np.einsum("rgk,gk->rg", e * e, hw)


def _refine(w, q, hw, fmt):
    """Weighted least-squares scale (and min) for fixed codes; returns f16-rounded (d, m)."""
    if fmt == "q4_1":
        # minimise sum h (w - m - d q)^2: 2x2 normal equations per block
        s0 = hw.sum(-1)[None]                             # (1, ng)
        s1 = np.einsum("rgk,gk->rg", q, hw)
        s2 = np.einsum("rgk,gk->rg", q * q, hw)
        t0 = np.einsum("rgk,gk->rg", w, hw)
        t1 = np.einsum("rgk,gk->rg", w * q, hw)
        det = s0 * s2 - s1 * s1
        ok = np.abs(det) > 1e-30 * np.maximum(s0 * s2, 1e-30)
        det = np.where(ok, det, 1.0)
        d = np.where(ok, (s0 * t1 - s1 * t0) / det, np.nan)
        m = np.where(ok, (s2 * t0 - s1 * t1) / det, np.nan)
        return _f16(d), _f16(m)
    num = np.einsum("rgk,gk->rg", w * q, hw)
    den = np.einsum("rgk,gk->rg", q * q, hw)
    d = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return _f16(d), None


def _rtn(w: np.ndarray, fmt: str):
    """modelfmt.quantize's own (d, m) (f16 rounded outwards): the search's first candidate."""
    if fmt == "q4_1":
        m = _f16_down(w.min(-1))
        return _f16_up((w.max(-1) - m.astype(np.float32)) / 15.0).astype(np.float32), \
            m.astype(np.float32)
    qmax = 127.0 if fmt == "q8_0" else 7.0
    return _f16_up(np.abs(w).max(-1) / qmax).astype(np.float32), None


def _candidates(w: np.ndarray, fmt: str, fast: bool = False):
    """Yield (d, m) candidate arrays (r, ng), f16-rounded: RTN's first, then the searched ones
    (``fast``: only the unclipped)."""
    yield _rtn(w, fmt)
    if fmt == "q4_1":
        lo, hi = w.min(-1), w.max(-1)
        span = hi - lo
        clip = Q4_1_CLIP[:1] if fast else Q4_1_CLIP
        for a in clip:
            for b in clip:
                m = _f16(lo + a * span)
                yield _f16((hi - b * span - m) / 15.0), m
        return
    idx = np.abs(w).argmax(-1)[..., None]
    v = np.take_along_axis(w, idx, -1)[..., 0]           # (r, ng) signed extreme
    if fmt == "q8_0":
        for t in Q8_0_T[:1] if fast else Q8_0_T:
            yield _f16(np.abs(v) / t), None
        return
    for t in (-8.0, 7.0) if fast else Q4_0_T:
        yield _f16(v / t), None


def fit(w: np.ndarray, fmt: str, hw: np.ndarray | None = None, refine: int = 2,
        fast: bool = False):
    """Best (d, m) per block of ``w`` (r, ng, G) for weights ``hw`` (ng, G); m None but q4_1.
    ``fast``: the unclipped candidates only (the AWQ scale search's inner quantizer)."""
    r, ng, G = w.shape
    hw = np.ones((ng, G), np.float32) if hw is None else np.asarray(hw, np.float32)
    hw = hw + 1e-12 * hw.mean(-1, keepdims=True) + 1e-30   # a dead channel still counts a little
    best_d = best_m = best_e = None
    for d, m in _candidates(w, fmt, fast):
        e = _werr(w, dequant(codes(w, fmt, d, m), d, m), hw)
        if best_e is None:
            best_d, best_m, best_e = d, m, e
            continue
        better = e < best_e
        best_e = np.where(better, e, best_e)
        best_d = np.where(better, d, best_d)
        if m is not None:
            best_m = np.where(better, m, best_m)
    for _ in range(refine):
        q = codes(w, fmt, best_d, best_m)
        d, m = _refine(w, q, hw, fmt)
        ok = np.isfinite(d) if m is None else np.isfinite(d) & np.isfinite(m)
        d = np.where(ok, d, best_d)
        m = np.where(ok, m, best_m) if m is not None else None
        e = _werr(w, dequant(codes(w, fmt, d, m), d, m), hw)
        better = e < best_e
        best_e = np.where(better, e, best_e)
        best_d = np.where(better, d, best_d)
        if m is not None:
            best_m = np.where(better, m, best_m)
    return best_d.astype(np.float32), (None if best_m is None else best_m.astype(np.float32))


def quantize_weighted(w2d: np.ndarray, fmt: str, hw: np.ndarray | None = None,
                      group_size: int = 32):
    """Quantize (rows, cols) with the weighted search; returns (parts, dequantized (rows, cols)).

    ``hw``: (cols,) per-input-channel importance (mean x^2 over the calibration tokens) or None.
    Parts have ``modelfmt.quantize``'s layout (ordinary q4_0 / q4_1 / q8_0 blocks).
    """
    rows, cols = w2d.shape
    G = group_size
    ng = cols // G
    h = None if hw is None else np.asarray(hw, np.float32).reshape(ng, G)
    step = max(1, _ROW_CHUNK // cols)
    d_all = np.empty((rows, ng), np.float32)
    m_all = np.empty((rows, ng), np.float32) if fmt == "q4_1" else None
    q_all = np.empty((rows, ng, G), np.int8 if fmt != "q4_1" else np.uint8)
    deq = np.empty((rows, cols), np.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        w = np.asarray(w2d[r0:r1], np.float32).reshape(r1 - r0, ng, G)
        d, m = fit(w, fmt, h)
        q = codes(w, fmt, d, m)
        d_all[r0:r1] = d
        if m is not None:
            m_all[r0:r1] = m
        q_all[r0:r1] = q
        deq[r0:r1] = dequant(q, d, m).reshape(r1 - r0, cols)
    return to_parts(q_all.reshape(rows, cols), d_all, m_all, fmt), deq


def to_parts(q: np.ndarray, d: np.ndarray, m: np.ndarray | None, fmt: str) -> dict:
    """Codes (rows, cols) + f16-valued scales (rows, ng) [+ mins] -> the format's parts.

    q4_0 codes are -8..7 (stored +8), q4_1 0..15, q8_0 -127..127.
    """
    rows, cols = q.shape
    out = {"scales": np.ascontiguousarray(d.astype(np.float16).view(np.uint16))}
    if fmt == "q8_0":
        out["qs"] = np.ascontiguousarray(q.astype(np.int8)).view("<u4")  # (rows, cols/4)
    else:
        b = q.astype(np.int16) + (8 if fmt == "q4_0" else 0)
        out["qs"] = _pack_nibbles(b.astype(np.uint8))                    # (rows, cols/8)
    if fmt == "q4_1":
        out["mins"] = np.ascontiguousarray(m.astype(np.float16).view(np.uint16))
    return {k: out[k] for k in ("qs", "scales", "mins") if k in out}
