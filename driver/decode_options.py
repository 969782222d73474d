"""How the decode program is recorded (``DecodeOptions``): every choice computes the same function,
the defaults are the fewest dependent dispatches; ``python -m driver sweep`` measures the others."""

from __future__ import annotations

from dataclasses import dataclass

KNOB_OPS = ("qkv_rope_decode", "attention_decode", "matvec", "gate_up", "head")


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
    pair): e.g. (("matvec", (("r", 4),)),). Benchmarks only."""

    short_ctx: int = 512
    short_wg: int = 256
    head_norm: bool = True
    knobs: tuple = ()

    def __post_init__(self):
        for op, kv in self.knobs:
            if op not in KNOB_OPS:
                raise ValueError(f"DecodeOptions.knobs: unknown op {op!r}; one of {KNOB_OPS}")
        if not (isinstance(self.short_ctx, int) and self.short_ctx >= 0):
            raise ValueError(f"DecodeOptions.short_ctx must be an integer >= 0, got "
                             f"{self.short_ctx!r}")

    def knob(self, op: str) -> dict:
        return {k: v for o, kv in self.knobs if o == op for k, v in kv}

    @staticmethod
    def knobs_of(d: dict) -> tuple:
        """``{"matvec": {"r": 4}}`` -> the ``knobs`` tuple."""
        return tuple((op, tuple(sorted(kv.items()))) for op, kv in sorted(d.items()) if kv)
