"""A numpy float32 forward pass of one Llama-3 decoder layer at a time, for calibration.

Calibration tokens are laid out as ``n_win`` independent windows of ``W`` tokens (each window a
fresh sequence at positions 0..W-1), flattened to N = n_win * W rows. Only the residual stream
x (N, H) of the layer being processed and that layer's weights are held: an 8B model needs one
layer (~0.9 GB f32) plus a few (N, 14336) activations, never the whole model.

Weights are a dict of float32 arrays under the layer's short Meta names:
  attention_norm (H,), attention.wq (Q, H), attention.wk (KV, H), attention.wv (KV, H),
  attention.wo (H, Q), ffn_norm (H,), feed_forward.w1 (F, H) gate, feed_forward.w3 (F, H) up,
  feed_forward.w2 (H, F) down
The math is HF LlamaForCausalLM's (rotate-half RoPE on HF-layout Q/K rows, GQA, SwiGLU).
"""

from __future__ import annotations

import numpy as np

LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
           "feed_forward.w1", "feed_forward.w3", "feed_forward.w2")
NORMS = ("attention_norm", "ffn_norm")


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x (N, H) f32, w (H,) -> (N, H) f32."""
    var = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * w


class Rope:
    """cos / sin tables (W, head_dim) for positions 0..W-1, rotate-half layout."""

    def __init__(self, cfg, window: int):
        inv = np.asarray(cfg.rope_inv_freq(), np.float64)            # (hd/2,)
        ang = np.arange(window, dtype=np.float64)[:, None] * inv[None]  # (W, hd/2)
        ang = np.concatenate([ang, ang], -1)
        self.cos = np.cos(ang).astype(np.float32)[:, None, :]         # (W, 1, hd)
        self.sin = np.sin(ang).astype(np.float32)[:, None, :]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n_win, W, heads, hd) -> roped, same shape."""
        half = x.shape[-1] // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * self.cos + rot * self.sin


class LayerForward:
    """The pieces of one layer's forward, so a caller can quantize between them."""

    def __init__(self, cfg, window: int):
        self.cfg, self.W = cfg, window
        self.rope = Rope(cfg, window)
        self.mask = np.triu(np.full((window, window), -np.inf, np.float32), 1)  # (W, W)

    def attn_in(self, x, lw):
        return rmsnorm(x, lw["attention_norm"], self.cfg.rms_norm_eps)   # (N, H)

    def attention(self, xn, lw):
        """xn (N, H) normed -> attention output before wo, (N, Q)."""
        c, W = self.cfg, self.W
        N = xn.shape[0]
        nw, nh, nkv, hd = N // W, c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = (xn @ lw["attention.wq"].T).reshape(nw, W, nh, hd)
        k = (xn @ lw["attention.wk"].T).reshape(nw, W, nkv, hd)
        v = (xn @ lw["attention.wv"].T).reshape(nw, W, nkv, hd)
        q, k = self.rope(q), self.rope(k)
        out = np.empty((nw, W, nh, hd), np.float32)
        scale = np.float32(1.0 / np.sqrt(hd))
        r = c.gqa_ratio
        for g in range(nkv):               # one KV head and its r query heads at a time
            qg = q[:, :, g * r:(g + 1) * r]                           # (nw, W, r, hd)
            s = np.einsum("bqhd,bkd->bhqk", qg, k[:, :, g]) * scale + self.mask  # (nw,r,W,W)
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            out[:, :, g * r:(g + 1) * r] = np.einsum("bhqk,bkd->bqhd", s, v[:, :, g])
        return out.reshape(N, nh * hd)

    def ffn_in(self, x, lw):
        return rmsnorm(x, lw["ffn_norm"], self.cfg.rms_norm_eps)         # (N, H)

    @staticmethod
    def act(xn, lw):
        """xn (N, H) -> silu(xn W1^T) * (xn W3^T), (N, F)."""
        g = xn @ lw["feed_forward.w1"].T
        u = xn @ lw["feed_forward.w3"].T
        g *= 1.0 / (1.0 + np.exp(-g))
        g *= u
        return g

    def __call__(self, x, lw):
        """The whole layer: x (N, H) -> x (N, H)."""
        x = x + self.attention(self.attn_in(x, lw), lw) @ lw["attention.wo"].T
        return x + self.act(self.ffn_in(x, lw), lw) @ lw["feed_forward.w2"].T


def final_logits(x, norm_w, out_w, eps: float) -> np.ndarray:
    """(N, H) residual -> (N, V) logits."""
    return rmsnorm(x, norm_w, eps) @ out_w.T
