"""Mixed precision: which format each matrix is packed in.

``--quant FORMAT`` is the format of the matrices no rule names. With a 4-bit ``--quant`` the
default rules keep the tensors that cost the most quality per bit at 8 bits (measured on
SmolLM2-135M-Instruct, docs/QUANTIZATION.md, "Which tensors pay"):
  q4_0  the token embedding / LM head and every layer's attention.wv, attention.wk and
        feed_forward.w2 (6.33 bits / weight on SmolLM2): the cheapest set measured that meets
        issue 10's KL target under GPTQ (0.042 nats on the table's 512 held-out tokens; with w2
        in only llama.cpp's Q4_K_M layers and no wk, 5.81 bits, GPTQ left 0.063). Per extra bit
        wv (3 % of a layer's weights) pays most, then wk, then w2; wo hardly pays (wq, w1 and
        w3 were not measured)
  q4_1  the token embedding / LM head (the q4_1 matrices of the one model measured are
        bit-exact copies of its GGUF, so nothing else could be measured to pay)
  q4_k / q5_k / q6_k  none: the K-quants keep their own rule (pack.target_format: a width that
        is not a multiple of 256 falls back to q4_1 / q8_0, as llama.cpp falls back for such
        tensors); ``--keep`` rules apply to them as to any format
``--keep 'PATTERN=FORMAT'``
(repeatable; shell-style patterns over Meta's tensor names, e.g. 'layers.*.feed_forward.w2=q8_0')
adds rules, later ones winning; ``--uniform`` drops the default rules (every matrix in --quant,
the behaviour before mixed precision). Norms are always f32 and no rule applies to them.
"""

from __future__ import annotations

import fnmatch

from .errors import PackError

FOUR_BIT = ("q4_0", "q4_1")
HEAD_KEEP = ("tok_embeddings=q8_0", "output=q8_0")
Q4_0_EIGHT_BIT = ("attention.wv", "attention.wk", "feed_forward.w2")   # every layer's


def default_rules(quant: str, n_layers: int) -> list[str]:
    """The default rules of a ``quant`` packing of an ``n_layers`` model (none for 8/16/32 bits;
    ``n_layers`` is kept for rules that pick layers, none does today)."""
    if quant == "q4_0":
        return list(HEAD_KEEP) + [f"layers.*.{n}=q8_0" for n in Q4_0_EIGHT_BIT]
    if quant == "q4_1":
        return list(HEAD_KEEP)
    return []


def parse_rule(spec: str, formats) -> tuple[str, str]:
    """'PATTERN=FORMAT' -> (pattern, format); PackError on a malformed rule or unknown format."""
    pat, sep, fmt = spec.rpartition("=")
    if not sep or not pat.strip():
        raise PackError("--keep", f"{spec!r} is not PATTERN=FORMAT",
                        "Write e.g. --keep 'layers.*.feed_forward.w2=q8_0'")
    fmt = fmt.strip().lower()
    if fmt not in formats:
        raise PackError("--keep", f"unknown format {fmt!r} in {spec!r}",
                        "Choose one of " + ", ".join(formats))
    return pat.strip(), fmt


class Policy:
    """canon name -> format for every matrix of a checkpoint."""

    def __init__(self, quant: str, keep=(), uniform: bool = False, formats=(),
                 n_layers: int = 0):
        self.quant = quant
        self.user = [parse_rule(s, formats) for s in keep]
        self.defaults = [] if uniform else \
            [parse_rule(s, formats) for s in default_rules(quant, n_layers)]

    def rules(self) -> list[str]:
        """The effective rules, defaults first (recorded in the manifest)."""
        return [f"{p}={f}" for p, f in self.defaults + self.user]

    def check(self, matrices) -> None:
        """Every user rule must match at least one matrix name (a typo is bad input)."""
        names = list(matrices)
        for pat, fmt in self.user:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                example = next((n for n in names if n.startswith("layers.")), names[0] if
                               names else "-")
                raise PackError("--keep", f"pattern {pat!r} matches no matrix of this model",
                                f"Use Meta's tensor names, e.g. {example!r} or "
                                "'layers.*.attention.wv'")

    def user_format(self, canon: str) -> str | None:
        """The format the USER's rules give ``canon`` (None: no rule of theirs names it)."""
        fmt = None
        for pat, f in self.user:
            if fnmatch.fnmatchcase(canon, pat):
                fmt = f
        return fmt

    def format(self, canon: str) -> str:
        """The format of matrix ``canon``: the last matching rule, else --quant."""
        fmt = self.quant
        for pat, f in self.defaults + self.user:
            if fnmatch.fnmatchcase(canon, pat):
                fmt = f
        return fmt
