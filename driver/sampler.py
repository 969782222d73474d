"""Sampling parameters: validation (one clear message per bad value) and the sample kernel's values.

Pure Python (runs in Pyodide). Sampling itself runs on the GPU (the ``sample`` op): greedy when
temperature is 0, else temperature -> repetition penalty -> top-k -> top-p, seeded by
(seed, step) so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass


class BadOption(ValueError):
    """A sampling or generation option out of range."""

    kind = "bad-option"
    hint = "Change the generation settings named in the message."


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_k: int = 0             # 0: no top-k cut
    top_p: float = 1.0         # 1.0: no nucleus cut
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature <= 100):
            raise BadOption(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise BadOption(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise BadOption(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.repetition_penalty, (int, float))
                and 0 < self.repetition_penalty <= 10):
            raise BadOption(f"repetition_penalty must be in (0, 10], got "
                            f"{self.repetition_penalty!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2 ** 32):
            raise BadOption(f"seed must be an integer in [0, 2^32), got {self.seed!r}")

    def runtime(self, vocab: int) -> dict:
        """Values for the sample kernel's params (``step`` / ``n_hist`` are added per step)."""
        return {"temperature": float(self.temperature),
                "top_k": min(self.top_k, vocab) if self.top_k else 0,
                "top_p": float(self.top_p), "rep_penalty": float(self.repetition_penalty),
                "seed": int(self.seed)}
