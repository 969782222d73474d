"""Offline residual-stream rotation (QuaRot / SpinQuant "R1"): the same model, easier to quantize.

The residual stream x (N, H) of a Llama model is only ever read through an RMSNorm followed by a
linear layer, and written by adding a linear layer's output. For an orthogonal Q (H, H):
  1. fold every RMSNorm weight g into the matrices that read it: (rms(x) * g) W^T =
     rms(x) (W diag(g))^T, so W <- W diag(g) (attention_norm -> wq / wk / wv, ffn_norm -> w1 / w3,
     the final norm -> the LM head) and g <- 1;
  2. rotate: x' = x Q. rms(x Q) = rms(x) Q (Q keeps the sum of squares, so the mean over H too),
     hence every matrix reading the stream W <- W Q (wq, wk, wv, w1, w3, output), every matrix
     writing it W <- Q^T W (wo, w2), and the embedding E <- E Q.
The logits are unchanged (up to float round-off). What changes is the weights' shape: each row of
W Q mixes all H columns with weights +-1/sqrt(H) (a Hadamard Q), so a few outlier input channels
(the ones whose activations are 100x the others) are spread over every 32-wide block instead of
setting one block's scale; 4-bit blocks then round far less of the signal away.

A tied embedding / LM head cannot stay tied: the head becomes (E diag(g_norm)) Q, the embedding
E Q. The rotated source is untied (its config says so and it yields a real ``output``); the
extra matrix is stored like any other and counted in the bits per weight.

Q = D K / sqrt(H), D a seeded random +-1 diagonal, K a Hadamard matrix of order H built as a
Kronecker product of small ones: Sylvester orders 2^k and Paley (type I) orders q + 1 for a prime
q = 3 mod 4 (12, 20, 24, 44, 48, ...). SmolLM2's 576 = 4 x 12 x 12, Llama-3's 2048 / 4096 are
powers of two, 3072 = 12 x 256. Applied factor by factor (``Rotation.right``), X Q costs
N * H * (sum of the factor orders) instead of N * H^2. For a width with no known construction,
``hadamard`` falls back to a seeded random orthogonal Q (QR of a Gaussian), and says so.

``RotatedSource`` wraps a Source lazily: each tensor is transformed when ``load_f32()`` is asked
for it (float64 arithmetic, rows in chunks), so the packer and calibration still hold one
tensor / one layer at a time. Its tensors have no ``native()`` blocks (their values are new).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from .errors import PackError
from .source import Source, SourceTensor

KINDS = ("off", "hadamard", "random")
READS = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
WRITES = ("attention.wo", "feed_forward.w2")
NORM_OF = {"attention.wq": "attention_norm", "attention.wk": "attention_norm",
           "attention.wv": "attention_norm", "feed_forward.w1": "ffn_norm",
           "feed_forward.w3": "ffn_norm"}
MAX_SYLVESTER = 64         # largest power-of-two factor applied as one dense block
MAX_PALEY = 256            # largest Paley order tried
CHUNK_ELEMS = 1 << 22      # float64 elements per row chunk (32 MiB): bounds the temporaries


# ---- Hadamard matrices ----
def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q ** 0.5) + 1))


def sylvester(n: int) -> np.ndarray:
    """Hadamard matrix of order n = 2^k: (n, n) int8 of +-1."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"sylvester order must be a power of two, got {n}")
    h = np.ones((1, 1), np.int8)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def paley(n: int) -> np.ndarray:
    """Paley construction I, order n = q + 1 for a prime q = 3 (mod 4): (n, n) int8 of +-1.
    Jacobsthal matrix J[i, j] = chi(j - i) (the quadratic character mod q, antisymmetric since
    chi(-1) = -1); S = [[0, 1^T], [-1, J]]; H = I + S."""
    q = n - 1
    if not (_is_prime(q) and q % 4 == 3):
        raise ValueError(f"no Paley I construction of order {n}")
    squares = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if a in squares else -1 for a in range(1, q)], np.int8)   # (q,)
    idx = np.arange(q)
    S = np.zeros((n, n), np.int8)
    S[0, 1:] = 1
    S[1:, 0] = -1
    S[1:, 1:] = chi[(idx[None, :] - idx[:, None]) % q]
    return (S + np.eye(n, dtype=np.int8)).astype(np.int8)


def _small_orders(limit: int) -> list[int]:
    """Orders of one Kronecker factor, largest first: powers of two up to MAX_SYLVESTER, Paley
    orders up to MAX_PALEY."""
    pw = [1 << k for k in range(1, MAX_SYLVESTER.bit_length())]
    pal = [q + 1 for q in range(3, MAX_PALEY) if _is_prime(q) and q % 4 == 3 and q + 1 not in pw]
    return sorted((o for o in pw + pal if o <= limit), reverse=True)


@lru_cache(maxsize=None)
def hadamard_factors(n: int) -> tuple[int, ...] | None:
    """Orders whose Kronecker product is a Hadamard matrix of order n (each a Sylvester or Paley
    order), or None when this construction has none (n > 2 not a multiple of 4, or e.g. 4 x 23)."""
    if n == 1:
        return ()
    for o in _small_orders(n):
        if n % o == 0:
            rest = hadamard_factors(n // o)
            if rest is not None:
                return (o,) + rest
    return None


def small_hadamard(n: int) -> np.ndarray:
    return sylvester(n) if n & (n - 1) == 0 else paley(n)


# ---- the rotation ----
class Rotation:
    """Q (H, H) orthogonal: ``kind`` "hadamard" (D K / sqrt(H)) or "random" (QR of a Gaussian),
    both seeded. ``right(X)`` = X Q, ``left_t(W)`` = Q^T W."""

    def __init__(self, n: int, kind: str = "hadamard", seed: int = 0):
        if kind not in ("hadamard", "random"):
            raise ValueError(f"unknown rotation {kind!r}")
        self.n, self.seed, self.requested = n, int(seed), kind
        rng = np.random.default_rng(self.seed)
        self.factors = hadamard_factors(n) if kind == "hadamard" else None
        self.kind = "hadamard" if self.factors is not None else "random"
        if self.kind == "hadamard":
            self.signs = rng.choice(np.array([-1.0, 1.0]), n)                     # (H,) D
            self.blocks = [small_hadamard(o).astype(np.float64) for o in self.factors]
            self.dense = None
        else:
            g = rng.standard_normal((n, n))
            q, r = np.linalg.qr(g)
            self.dense = q * np.sign(np.diag(r))[None, :]        # (H, H) Haar-distributed

    def record(self) -> dict:
        """The manifest's ``quant.rotate`` entry."""
        r = {"kind": self.kind, "seed": self.seed, "size": self.n}
        if self.kind == "hadamard":
            r["factors"] = list(self.factors)
        if self.requested != self.kind:
            r["requested"] = self.requested
            r["why"] = f"no Hadamard construction of order {self.n}"
        return r

    def _apply(self, x: np.ndarray) -> np.ndarray:
        """x (r, H) float64 -> x Q (r, H) float64."""
        if self.dense is not None:
            return x @ self.dense
        r = x.shape[0]
        y = (x * self.signs).reshape((r,) + tuple(self.factors))       # (r, f1, f2, ...)
        for a, h in enumerate(self.blocks):
            # contract axis a+1 with H_a: (x K)[.., j_a, ..] = sum_i x[.., i, ..] H_a[i, j_a]
            y = np.moveaxis(np.tensordot(y, h, axes=([a + 1], [0])), -1, a + 1)
        return y.reshape(r, self.n) / np.sqrt(self.n)

    def right(self, x: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """(x diag(scale)) Q for x (r, H): float32 (r, H), computed in float64 by row chunks."""
        out = np.empty(x.shape, np.float32)                                       # (r, H)
        step = max(1, CHUNK_ELEMS // self.n)
        for r0 in range(0, x.shape[0], step):
            c = np.asarray(x[r0:r0 + step], np.float64)                          # (<=step, H)
            if scale is not None:
                c = c * scale
            out[r0:r0 + step] = self._apply(c)
        return out

    def left_t(self, w: np.ndarray) -> np.ndarray:
        """Q^T W for W (H, c): float32 (H, c) (= (W^T Q)^T)."""
        return np.ascontiguousarray(self.right(np.ascontiguousarray(w.T)).T)

    def matrix(self) -> np.ndarray:
        """Q itself, (H, H) float64 (tests; a dense copy)."""
        return self._apply(np.eye(self.n)) if self.dense is None else self.dense.copy()


# ---- the source wrapper ----
class _Rotated(SourceTensor):
    """One tensor of the rotated model, computed from the wrapped source's tensors on demand."""

    def __init__(self, canon, shape, src_dtype, make):
        self.canon, self.shape, self.src_dtype, self._make = canon, tuple(shape), src_dtype, make

    def load_f32(self):
        return self._make()

    def native(self, fmt):
        return None          # new values: no source block is a lossless copy of them


def _mark(dtype: str) -> str:
    """The recorded source type of a rotated tensor (never equal to a format name, so nothing
    treats it as a bit-exact copy of its source blocks)."""
    return f"{dtype}+rot"


class RotatedSource(Source):
    """``src`` with RMSNorm weights folded and the residual stream rotated (see top); untied."""

    def __init__(self, src: Source, rot: Rotation):
        if rot.n != src.config.hidden_size:
            raise ValueError("rotation size != hidden size")
        self.src, self.rot = src, rot
        self.kind, self.path, self.name = src.kind, src.path, src.name
        self.config = replace(src.config, tie_word_embeddings=False)

    def tokenizer_files(self):
        return self.src.tokenizer_files()

    def close(self):
        self.src.close()

    def tensor_info(self):
        info = [(c, s, _mark(d)) for c, s, d in self.src.tensor_info()]
        if not any(c == "output" for c, _, _ in info):
            c, s, d = next(i for i in info if i[0] == "tok_embeddings")
            info.append(("output", s, d))
        return info

    def tensors(self):
        by = {t.canon: t for t in self.src.tensors()}
        H, rot = self.config.hidden_size, self.rot

        def ones():
            return np.ones(H, np.float32)                                          # (H,)

        def reads(t, norm):       # (rows, H): (W diag(g)) Q
            return lambda: rot.right(t.load_f32(), by[norm].load_f32().astype(np.float64))

        def writes(t):            # (H, cols): Q^T W
            return lambda: rot.left_t(t.load_f32())

        for canon, t in by.items():
            short = canon.split(".", 2)[-1] if canon.startswith("layers.") else canon
            if canon == "tok_embeddings":
                make = (lambda t=t: rot.right(t.load_f32()))                       # (V, H)
            elif canon == "output":
                make = reads(t, "norm")                                            # (V, H)
            elif short in READS:
                make = reads(t, canon.rsplit(".", 2)[0] + "." + NORM_OF[short])
            elif short in WRITES:
                make = writes(t)
            elif short in ("norm", "attention_norm", "ffn_norm"):
                make = ones
            else:
                raise PackError(self.path, f"rotation does not know tensor {canon!r}",
                                "Pack without --rotate")
            yield _Rotated(canon, t.shape, _mark(t.src_dtype), make)
        if "output" not in by:                 # tied: the head is the embedding, untied now
            e = by["tok_embeddings"]
            yield _Rotated("output", e.shape, _mark(e.src_dtype), reads(e, "norm"))


def rotated(src: Source, kind: str, seed: int = 0) -> tuple[Source, dict | None]:
    """``src`` rotated by ``kind`` (off | hadamard | random) and the manifest record (None: off).
    PackError on an unknown kind or seed."""
    if kind not in KINDS:
        raise PackError("--rotate", f"unknown rotation {kind!r}", "Choose one of " + ", ".join(KINDS))
    if not (isinstance(seed, int) and 0 <= seed < 2 ** 32):
        raise PackError("--rotate-seed", f"needs an integer in [0, 2^32), got {seed!r}",
                        "Use the default 0")
    if kind == "off":
        return src, None
    rot = Rotation(src.config.hidden_size, kind, seed)
    return RotatedSource(src, rot), rot.record()
