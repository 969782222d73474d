"""A numpy forward pass of the whole model straight from a packed manifest. Native only.

A second, independent check of the GPU engine (the HF goldens remain the oracle): it decodes the
bit layouts of modelfmt/formats.py itself (it does not share code with weights_tool's quantizer)
and runs the plain Llama-3 math in float32 / float64 on the CPU.

    ref = Reference.load("models/x");  logits = ref.logits([1, 2, 3])   # (3, vocab) float32
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelfmt.config import ModelConfig


def _f16_halves(words: np.ndarray) -> np.ndarray:
    """u32 words -> f32 array of the f16 numbers they hold, low half first."""
    return np.ascontiguousarray(words).astype("<u4").view("<f2").astype(np.float32)


def _dequant_k(fmt: str, parts: dict[str, np.ndarray], rows: int, cols: int) -> np.ndarray:
    """K-quant parts (modelfmt/formats.py: qs nibbles + one sb record per 256 columns) ->
    (rows, cols) float32, in gguf's float32 order: (d * sc) * q - dmin * m, (d * s) * (q - 32)."""
    words = {"q4_k": 4, "q5_k": 12, "q6_k": 21}[fmt]
    nsb = cols // 256
    b = parts["qs"].view(np.uint8)[: rows * cols // 2].reshape(rows, cols // 2)
    q = np.empty((rows, cols), np.uint32)
    q[:, 0::2] = b & 0x0F
    q[:, 1::2] = b >> 4
    sb = parts["sb"][: rows * nsb * words].reshape(rows, nsb, words).astype(np.uint32)
    qc = q.reshape(rows, nsb, 8, 4, 4, 2)          # (row, super-block, chunk, k, i, p)
    k = np.arange(4).reshape(4, 1, 1)
    i = np.arange(4).reshape(1, 4, 1)
    p = np.arange(2).reshape(1, 1, 2)
    if fmt == "q6_k":   # high 2 bits: word 5 + 2 chunk + k // 2, bits 8 i + 4 (k % 2) + 2 p
        hw = sb[:, :, 5:].reshape(rows, nsb, 8, 2)[:, :, :, k // 2]       # (.., 8, 4, 1, 1)
        qc |= ((hw >> (8 * i + 4 * (k % 2) + 2 * p).astype(np.uint32)) & 3) << 4
        s = sb[:, :, 0:4].astype("<u4").view(np.int8).reshape(rows, nsb, 16).astype(np.float32)
        d = _f16_halves(sb[:, :, 4].reshape(-1)).reshape(rows, nsb, 2)[:, :, 0:1]
        v = (qc.reshape(rows, nsb, 16, 16).astype(np.int32) - 32).astype(np.float32)
        return ((d * s)[..., None] * v).reshape(rows, cols)
    if fmt == "q5_k":   # 5th bit: word 4 + chunk, bit 8 i + 2 k + p
        hw = sb[:, :, 4:12].reshape(rows, nsb, 8, 1, 1, 1)
        qc |= ((hw >> (8 * i + 2 * k + p).astype(np.uint32)) & 1) << 4
    dd = _f16_halves(sb[:, :, 0].reshape(-1)).reshape(rows, nsb, 2)   # (d, dmin)
    j = np.arange(8, dtype=np.uint32)
    w1, w2, w3 = sb[:, :, 1:2], sb[:, :, 2:3], sb[:, :, 3:4]
    sc = ((w1 >> 4 * j) & 15) | (((w3 >> 2 * j) & 3) << 4)
    mn = ((w2 >> 4 * j) & 15) | (((w3 >> (16 + 2 * j)) & 3) << 4)
    d1 = dd[:, :, 0:1] * sc.astype(np.float32)
    m1 = dd[:, :, 1:2] * mn.astype(np.float32)
    v = qc.reshape(rows, nsb, 8, 32).astype(np.float32)
    return (d1[..., None] * v - m1[..., None]).reshape(rows, cols)


def dequant_block(fmt: str, parts: dict[str, np.ndarray], rows: int, cols: int,
                  group_size: int) -> np.ndarray:
    """Parts as raw u32 arrays -> (rows, cols) float32."""
    if fmt in ("q4_k", "q5_k", "q6_k"):
        return _dequant_k(fmt, parts, rows, cols)
    if fmt == "f32":
        return parts["data"].view("<f4")[: rows * cols].reshape(rows, cols).astype(np.float32)
    if fmt == "f16":
        return _f16_halves(parts["data"])[: rows * cols].reshape(rows, cols)
    ng = rows * cols // group_size
    d = _f16_halves(parts["scales"])[:ng].reshape(rows, cols // group_size)
    qs = parts["qs"]
    if fmt == "q8_0":
        q = qs.view(np.int8)[: rows * cols].reshape(rows, cols).astype(np.float32)
        return (q.reshape(rows, -1, group_size) * d[:, :, None]).reshape(rows, cols)
    # 4-bit: byte k of a row = columns 2k (low nibble) and 2k+1 (high nibble)
    b = qs.view(np.uint8)[: rows * cols // 2].reshape(rows, cols // 2)
    q = np.empty((rows, cols), np.float32)
    q[:, 0::2] = b & 0x0F
    q[:, 1::2] = b >> 4
    q = q.reshape(rows, -1, group_size)
    if fmt == "q4_0":
        return ((q - 8.0) * d[:, :, None]).reshape(rows, cols)
    if fmt == "q4_1":
        m = _f16_halves(parts["mins"])[:ng].reshape(rows, cols // group_size)
        return (q * d[:, :, None] + m[:, :, None]).reshape(rows, cols)
    raise ValueError(f"unknown weight format {fmt!r}")


class Reference:
    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        self.manifest = manifest
        self.cfg = ModelConfig.from_json(manifest["config"])
        self._shards = [np.memmap(self.folder / s["file"], dtype=np.uint8, mode="r")
                        for s in manifest["shards"]]
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, folder) -> "Reference":
        folder = Path(folder)
        return cls(folder, json.loads((folder / "manifest.json").read_text()))

    def tensor(self, name: str) -> np.ndarray:
        """Dequantized float32 weight (rows, cols) or norm (hidden,)."""
        if name in self._cache:
            return self._cache[name]
        t = self.manifest["tensors"][name]
        if "alias" in t:
            return self.tensor(t["alias"])
        shape = t["shape"]
        cols = shape[1] if len(shape) == 2 else shape[0]
        out = []
        for blk in t["blocks"]:
            parts = {}
            for pn, p in blk["parts"].items():
                raw = self._shards[p["shard"]][p["offset"]: p["offset"] + p["nbytes"]]
                parts[pn] = np.frombuffer(raw.tobytes(), dtype="<u4")
            rows = blk["rows"] if len(shape) == 2 else 1
            out.append(dequant_block(t["dtype"], parts, rows, cols, t.get("group_size", 32)))
        a = np.concatenate(out, axis=0)
        a = a.reshape(shape) if len(shape) == 1 else a
        self._cache[name] = a
        return a

    # ---- the math (HF LlamaForCausalLM, eager) ----
    def _rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
        return (x / np.sqrt(var + self.cfg.rms_norm_eps)).astype(np.float32) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x (n, heads, hd), rotate-half layout."""
        inv = np.asarray(self.cfg.rope_inv_freq(), np.float64)
        ang = pos[:, None].astype(np.float64) * inv[None, :]          # (n, hd/2)
        cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
        sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
        half = x.shape[-1] // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return (x * cos + rot * sin).astype(np.float32)

    def logits(self, ids) -> np.ndarray:
        """(n, vocab) float32 logits of a fresh sequence ``ids``."""
        c = self.cfg
        ids = np.asarray(ids, np.int64)
        n = len(ids)
        hd, nh, nkv = c.head_dim, c.num_attention_heads, c.num_key_value_heads
        x = self.tensor("tok_embeddings")[ids].astype(np.float32)     # (n, hidden)
        pos = np.arange(n)
        mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}."
            h = self._rmsnorm(x, self.tensor(p + "attention_norm"))
            q = (h @ self.tensor(p + "attention.wq").T).reshape(n, nh, hd)
            k = (h @ self.tensor(p + "attention.wk").T).reshape(n, nkv, hd)
            v = (h @ self.tensor(p + "attention.wv").T).reshape(n, nkv, hd)
            q, k = self._rope(q, pos), self._rope(k, pos)
            k = np.repeat(k, c.gqa_ratio, axis=1)
            v = np.repeat(v, c.gqa_ratio, axis=1)
            # batched matmuls (BLAS), not einsum's loops: long windows (driver quality) stay fast
            s = q.transpose(1, 0, 2) @ k.transpose(1, 2, 0) / np.sqrt(hd) + mask  # (heads, n, n)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(n, nh * hd)  # (n, Q)
            x = x + o @ self.tensor(p + "attention.wo").T
            h = self._rmsnorm(x, self.tensor(p + "ffn_norm"))
            g = h @ self.tensor(p + "feed_forward.w1").T
            u = h @ self.tensor(p + "feed_forward.w3").T
            x = x + ((g / (1 + np.exp(-g))) * u) @ self.tensor(p + "feed_forward.w2").T
        x = self._rmsnorm(x, self.tensor("norm"))
        return (x @ self.tensor("output").T).astype(np.float32)

    def greedy(self, ids, n_new: int) -> list[int]:
        ids = list(ids)
        out = []
        for _ in range(n_new):
            t = int(np.argmax(self.logits(ids)[-1]))
            out.append(t)
            ids.append(t)
        return out
