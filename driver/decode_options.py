"""How the decode program is recorded (``DecodeOptions``): every choice computes the same function,
the defaults are the fewest dependent dispatches; ``python -m driver sweep`` measures the others."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

KNOB_OPS = ("qkv_rope_decode", "attention_decode", "matvec", "gate_up", "head")
MAX_DEPTH = 8   # decode steps in flight at most (driver.graph.RING readback slots = MAX_DEPTH + 1)


@dataclass(frozen=True)
class DecodeOptions:
    """How the decode program is recorded. Every choice computes the same function (round-off
    aside); the defaults are the fewest dependent dispatches, the alternatives are benchmark
    candidates (``python -m driver sweep`` measures them on one loaded model).

    ``short_ctx``: up to this context length attention is ONE dispatch a layer
    (attention_decode ``direct=1``: a workgroup per KV head walks every position and writes the
    output), past it split-K attention_decode + attention_combine; 0 = always split-K. The
    one-pass kernel's time grows with ctx / ``short_wg`` tiles walked in sequence by only
    n_kv_heads workgroups, while the split-K pair costs one more dependent dispatch (~5 us on
    an H200), hence a threshold. ``short_wg``: its tile (workgroup size).
    ``head_norm``: the final RMSNorm fused into the LM head matvec(s) (``norm_eps``) instead of
    its own dispatch; every head workgroup then also reads the norm weight and sums x^2.
    ``knobs``: ((op, ((dim, value), ...)), ...) kernel overrides of the decode kernels, ops in
    KNOB_OPS ("matvec": wo / w2, "head": the LM head matvec, "attention_decode": the split-K
    pair): e.g. (("matvec", (("r", 4),)),). Benchmarks only.
    ``depth``: decode steps in flight (each step's sampled id stays on the GPU for the next
    step's embed; ids are read back ``depth`` steps behind). Not part of the recorded program:
    it sets how far ahead ``Engine.generate_async`` submits. In Chromium a readback resolves
    milliseconds after the GPU finished (docs/PERFORMANCE.md), so the page may want more.
    ``xq``: each input of the int8-x decode kernels (q4_0 and the K-quants where the GPU has
    packed integer dot products) quantized to int8 ONCE a step by a ``quant_x`` dispatch (x, the
    attention output, act; with the RMSNorm weight applied there), instead of by every
    workgroup of every kernel reading it: the same int8 values, so the same results, with about
    half of those kernels' instructions gone, for one small dispatch more per input.
    ``xq_min_weights``: ... but only for an input whose kernels read at least this many weights
    (rows x cols summed). Natively (``NATIVE``: 0, every input) the extra dispatch costs ~2.5 us
    and every projection gains more (H200: 1B shape 924 against 864 tok/s, 8B 321 against 266);
    in Chromium a dispatch costs more: with every input the 8B shape went 276 -> 351 tok/s but
    the 1B shape 792 -> 617 (its wo / w2 / qkv weights are 4-17 M), hence the page's threshold
    (docs/PERFORMANCE.md)."""

    short_ctx: int = 512
    short_wg: int = 256
    head_norm: bool = True
    knobs: tuple = ()
    depth: int = 3
    xq: bool = True
    xq_min_weights: int = 24 << 20

    def __post_init__(self):
        for op, kv in self.knobs:
            if op not in KNOB_OPS:
                raise ValueError(f"DecodeOptions.knobs: unknown op {op!r}; one of {KNOB_OPS}")
        if not (isinstance(self.depth, int) and 1 <= self.depth <= MAX_DEPTH):
            raise ValueError(f"DecodeOptions.depth must be an integer in [1, {MAX_DEPTH}], got "
                             f"{self.depth!r}")
        if not (isinstance(self.xq_min_weights, int) and self.xq_min_weights >= 0):
            raise ValueError(f"DecodeOptions.xq_min_weights must be an integer >= 0, got "
                             f"{self.xq_min_weights!r}")
        if not (isinstance(self.short_ctx, int) and self.short_ctx >= 0):
            raise ValueError(f"DecodeOptions.short_ctx must be an integer >= 0, got "
                             f"{self.short_ctx!r}")

    def knob(self, op: str) -> dict:
        return {k: v for o, kv in self.knobs if o == op for k, v in kv}

    @staticmethod
    def knobs_of(d: dict) -> tuple:
        """``{"matvec": {"r": 4}}`` -> the ``knobs`` tuple."""
        return tuple((op, tuple(sorted(kv.items()))) for op, kv in sorted(d.items()) if kv)


# The native (wgpu-py, Vulkan) default: split-K attention at every context and the final norm in
# its own dispatch. On an H200 (2026-12-03, docs/PERFORMANCE.md) it decodes faster natively than
# the fewest-dispatch default on every shape measured (1B shape 890 vs 857 tok/s at ctx 128, best of
# 5, three runs); in the page neither won consistently (best-of-5 spread 15-20 %), and in
# compatibility mode, where a dispatch costs 30-45 us, the fewer dispatches win, so the page keeps
# ``DecodeOptions()``.
NATIVE = DecodeOptions(short_ctx=0, head_norm=False, xq_min_weights=0)


def from_json(text: str) -> DecodeOptions:
    """``DecodeOptions`` from the page's bench mode (a JSON object of its fields, e.g.
    ``{"short_ctx": 0, "head_norm": false}``); ValueError in plain words for anything else."""
    try:
        d = json.loads(text)
    except ValueError:
        raise ValueError(f"decode program {text!r} is not JSON") from None
    names = [f.name for f in fields(DecodeOptions) if f.name != "knobs"]
    if not isinstance(d, dict) or set(d) - set(names):
        raise ValueError(f"decode program {text!r}: expected an object with some of {names}")
    for b in ("head_norm", "xq"):
        if b in d and not isinstance(d[b], bool):
            raise ValueError(f"decode program {text!r}: {b} must be true or false")
    return DecodeOptions(**d)
