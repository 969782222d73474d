"""The one tolerance table of the kernel check (``python -m shaders check`` and pytest).

A case passes when  max|out - ref| <= atol + rtol * max|ref|  and  NMSE = sum((out-ref)^2) /
sum(ref^2) <= nmse  (NMSE skipped when the reference is all zeros). References are computed in
float64 on the SAME dequantized weights the kernel reads, so these bound kernel error only
(rounding order, f16 arithmetic), never quantization error. Any entry looser than the f32 default
says why.
"""

from __future__ import annotations

TOL: dict[str, dict[str, float]] = {
    # bit-exact outputs: gathers, copies, integer results (embedding rows, sampled token ids)
    "exact": {"atol": 0.0, "rtol": 0.0, "nmse": 0.0},
    # f32 elementwise / short reductions (norms, rope, activations)
    "f32": {"atol": 1e-5, "rtol": 1e-5, "nmse": 1e-10},
    # f32 dot products of length up to ~16k accumulated in f32 in a different order than the
    # float64 reference: the error grows like sqrt(K) * eps * sum|w x|, so the bound is relative to
    # the output scale (rtol) rather than absolute.
    "dot_f32": {"atol": 1e-5, "rtol": 2e-5, "nmse": 1e-9},
    # silu(a) * b on top of two f32 dot products: the product doubles the relative error.
    "gate_up_f32": {"atol": 1e-5, "rtol": 5e-5, "nmse": 4e-9},
    # shader-f16 arithmetic: activations and weights rounded to f16 (11-bit mantissa, eps 9.8e-4)
    # before the multiply, partial sums of one K-tile kept in f16, tiles accumulated in f32.
    "dot_f16": {"atol": 1e-3, "rtol": 1e-2, "nmse": 5e-6},
    "gate_up_f16": {"atol": 1e-3, "rtol": 2e-2, "nmse": 2e-5},
    # decode with x rounded to int8 per chunk of 16-32 columns (matvec/gate_up unpack=2, as
    # llama.cpp's q8_1 activations): each x carries an error up to max|x_chunk| / 254, about
    # 0.5 % of its chunk's scale; check cases measured NMSE 2e-5..6e-5 (q4_0, q8_0) and up to
    # 6e-4 (q4_1, whose unsigned q do not cancel) with max errors ~4 % of max|ref|; bounds ~2-5x
    # above that. A wrong dequantization gives NMSE ~1.
    "dot_i8x": {"atol": 1e-4, "rtol": 8e-2, "nmse": 1e-3},
    "gate_up_i8x": {"atol": 1e-4, "rtol": 1.5e-1, "nmse": 3e-3},
    # the same plus the rounding residual as a second int8 (unpack=3): x to ~1.5e-5 of its
    # chunk's max|x| (7 more bits), i.e. ~250x below dot_i8x in error, still above f32 rounding:
    # check cases measured NMSE 1e-10..1e-9 (q4_1: up to 1e-8) and max errors up to 3e-4 of
    # max|ref|; bounds ~3-5x above that.
    "dot_i16x": {"atol": 1e-5, "rtol": 1e-3, "nmse": 5e-8},
    "gate_up_i16x": {"atol": 1e-5, "rtol": 2e-3, "nmse": 1e-8},
    # WGSL bounds exp() only to 3+2|x| ULP and softmax sums run over ~1e4 positions in f32.
    "attention": {"atol": 1e-5, "rtol": 1e-4, "nmse": 1e-9},
    # shader-f16 prefill: q/K rounded to f16, q.k summed 4 products at a time in f16.
    "attention_f16": {"atol": 2e-3, "rtol": 2e-2, "nmse": 1e-4},
    # K/V stored as f16 after an f32 dot: one f16 rounding (2^-11) on top of dot_f32.
    "qkv_kv_f16": {"atol": 1e-5, "rtol": 1e-3, "nmse": 2e-7},
}


def verdict(err: float, sq_err: float, scale: float, den: float, key: str) -> tuple[float, bool]:
    """(NMSE, passed) from an output's reduced statistics: ``err`` = max|out - ref|, ``sq_err`` =
    sum((out - ref)^2), ``scale`` = max|ref|, ``den`` = sum(ref^2). The ONE pass rule, shared by
    the native check (numpy reduces, ``harness.compare``) and the page's (pure Python,
    ``compare_values``)."""
    t = get(key)
    nmse = sq_err / den if den > 0 else (0.0 if err == 0 else float("inf"))
    ok = err <= t["atol"] + t["rtol"] * scale and (den == 0 or nmse <= t["nmse"])
    return nmse, ok


def compare_values(out, ref, key: str) -> tuple[float, float, bool]:
    """(max abs error, NMSE, passed) of the flat sequences ``out`` against ``ref`` under
    ``TOL[key]``, in pure Python (Pyodide has no numpy): harness.compare's rule through
    ``verdict``; a length mismatch or a non-finite output fails."""
    import math

    if len(out) != len(ref) or not all(map(math.isfinite, out)):
        return float("inf"), float("inf"), False
    diffs = [abs(float(o) - float(r)) for o, r in zip(out, ref)]
    err = max(diffs, default=0.0)
    scale = max(map(abs, ref), default=0.0)
    den = math.fsum(float(r) * float(r) for r in ref)
    nmse, ok = verdict(err, math.fsum(d * d for d in diffs), float(scale), den, key)
    return err, nmse, ok


def get(key: str) -> dict[str, float]:
    if key not in TOL:
        raise KeyError(f"no tolerance {key!r} in shaders/tolerances.py; known: {', '.join(TOL)}")
    return TOL[key]
