"""Mixed precision: which format each matrix is packed in.

``--quant FORMAT`` is the format of the matrices no rule names. With a 4-bit ``--quant`` the
default rules keep the tensors that cost the most quality per bit at 8 bits (measured on
SmolLM2-135M-Instruct, docs/QUANTIZATION.md, "Which tensors pay"):
  q4_0  the token embedding / LM head; every layer's attention.wv (3 % of a layer's weights,
        ~40 % of the KL a GPTQ q4_0 packing has left); feed_forward.w2 of the first and last
        eighth of the layers and every third layer between (llama.cpp's Q4_K_M layer choice)
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


def more_bits_layers(n_layers: int) -> list[int]:
    """The layers whose down projection a q4_0 packing keeps at 8 bits: the first and last
    eighth and every third one between (the layer rule of llama.cpp's Q4_K_M)."""
    return [i for i in range(n_layers)
            if i < n_layers // 8 or i >= 7 * n_layers // 8 or (i - n_layers // 8) % 3 == 2]


def default_rules(quant: str, n_layers: int) -> list[str]:
    """The default rules of a ``quant`` packing of an ``n_layers`` model (none for 8/16/32 bits)."""
    if quant == "q4_0":
        return list(HEAD_KEEP) + ["layers.*.attention.wv=q8_0"] + [
            f"layers.{i}.feed_forward.w2=q8_0" for i in more_bits_layers(n_layers)]
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
