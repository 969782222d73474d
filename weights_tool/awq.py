"""AWQ: activation-aware per-input-channel scaling (Lin et al., 2023, "AWQ: Activation-aware Weight
Quantization for LLM Compression and Acceleration"). numpy only.

A linear layer y = x W^T computes the same with W[:, j] * s_j and x_j / s_j. Channels that carry
large activations get s_j > 1, so their weights take a larger share of each block's 4-bit range
(their relative rounding error shrinks) and the input is divided back. The division is folded
into whatever produces x, so the model keeps its shape and the kernels stay the same:

  q/k/v          x = RMSNorm(h) * attention_norm     -> attention_norm /= s
  gate/up        x = RMSNorm(h) * ffn_norm           -> ffn_norm /= s
  o  (from v)    x = attention(v)                    -> rows of wv /= s (per KV channel; with
                                                        GQA one scale serves the query heads
                                                        that share a KV head)
  down (from up) x = silu(gate) * up                 -> rows of w3 /= s

The scale is s = mean|x|^alpha normalised to a geometric mean of 1 over [max, min]; alpha is
searched on a grid to minimise the group's quantized output error on calibration inputs,
alpha = 0 (s = 1, no scaling) included, so the search never picks a worse point than no scaling
on the data it sees. With quantization off the transform is exact up to f32 round-off
(tests/test_quant_methods.py).
"""

from __future__ import annotations

import numpy as np

from . import blockq

ALPHAS = np.linspace(0.0, 0.9, 10)


def scales_for(xmean: np.ndarray, alpha: float) -> np.ndarray:
    """(cols,) positive scales from per-channel mean |x| (cols,)."""
    s = np.power(np.maximum(xmean, 1e-8), alpha, dtype=np.float64)
    s = s / np.sqrt(s.max() * s.min())
    return s.astype(np.float32)


def _qdq(w: np.ndarray, fmt: str, group_size: int) -> np.ndarray:
    """Fast quantize-dequantize used inside the search (the plain round-to-nearest fit)."""
    if fmt not in blockq.CODE_RANGE:
        return w
    r, c = w.shape
    wb = w.reshape(r, c // group_size, group_size)
    d, m = blockq.fit(wb, fmt, None, refine=0, fast=True)
    return blockq.dequant(blockq.codes(wb, fmt, d, m), d, m).reshape(r, c)


def search(X: np.ndarray, mats: list[np.ndarray], fmts: list[str], group_size: int = 32,
           n_heads: int = 0, ratio: int = 1, alphas=ALPHAS) -> tuple[np.ndarray, float, dict]:
    """Best input-channel scales for the matrices ``mats`` (each (rows_i, cols)) that all read
    ``X`` (n, cols), quantized to ``fmts`` (f16 / f32: not quantized). With ``ratio`` > 1 the
    scales are tied over the query heads of one KV head (``tie_heads``). Returns
    (s (cols,) float32, the chosen alpha, {alpha: loss})."""
    X = np.asarray(X, np.float32)
    xmean = np.abs(X).mean(0)                                # (cols,)
    if ratio > 1:
        xmean = tie_heads(xmean, n_heads, ratio)
    ref = [X @ w.T for w in mats]                            # (n, rows_i) each
    losses, best = {}, None
    for a in alphas:
        s = scales_for(xmean, float(a))
        loss = 0.0
        for w, f, y in zip(mats, fmts, ref):
            wq = _qdq(w * s, f, group_size) / s
            loss += float(np.square(X @ wq.T - y, dtype=np.float32).sum(dtype=np.float64))
        losses[float(a)] = loss
        if best is None or loss < best[1]:
            best = (float(a), loss, s)
    return best[2], best[0], losses


def tie_heads(xmean: np.ndarray, n_heads: int, ratio: int) -> np.ndarray:
    """GQA tying for the v -> o scale: wo's input channel h*hd + d reads v channel
    (h // ratio)*hd + d, so the ``ratio`` query heads of one KV head must share each d's scale.
    (Q,) per-channel values -> (Q,) where every channel holds its KV group's mean."""
    hd = xmean.shape[0] // n_heads
    m = xmean.reshape(n_heads // ratio, ratio, hd).mean(1, keepdims=True)   # (nkv, 1, hd)
    return np.broadcast_to(m, (n_heads // ratio, ratio, hd)).reshape(-1).copy()


def kv_part(s_full: np.ndarray, n_heads: int, ratio: int) -> np.ndarray:
    """(Q,) head-tied scales -> (KV,) the scale of each v channel."""
    hd = s_full.shape[0] // n_heads
    return s_full.reshape(n_heads // ratio, ratio, hd)[:, 0].reshape(-1).copy()
