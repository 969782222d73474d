"""Write small llama GGUF files for tests with ``gguf.GGUFWriter`` (the llama.cpp package).

``make_gguf(path, ...)`` draws HF-layout float32 weights, permutes the Q/K rows the way
convert_hf_to_gguf does (written here from its definition, independently of weights_tool), stores
every matrix in the requested GGML type and returns, per canonical name, the raw GGUF tensor and
the float32 reference ``gguf.quants.dequantize`` gives for it, already back in HF row order.

The tokenizer is a tiny byte-level BPE: the 256 GPT-2 byte symbols, a few merges and special
tokens, in the shape llama.cpp writes (tokens, token_type, merges, pre-tokenizer name).
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
CONTROL, NORMAL, USER_DEFINED = 3, 1, 4


# ---- the byte-level alphabet (GPT-2's bytes_to_unicode, by its definition) ----
def byte_symbols() -> list[str]:
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token_types, merges): specials first like SmolLM2, then bytes, then merged words."""
    b = byte_symbols()
    sp = b[ord(" ")]  # "Ġ"
    merges = [("H", "e"), ("l", "l"), ("He", "ll"), ("Hell", "o"), (sp, "w"), ("o", "r"),
              (sp + "w", "or"), ("l", "d"), (sp + "wor", "ld"), ("1", "2")]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + b + ["".join(m) for m in merges] + ["<tool>"]
    types = [CONTROL] * 3 + [NORMAL] * (256 + len(merges)) + [USER_DEFINED]
    return tokens, types, [f"{x} {y}" for x, y in merges]


# ---- convert_hf_to_gguf's Q/K permutation, written from its meaning ----
def interleave_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp interleaved rows: in each head, GGUF row 2i+t is HF row
    t*(hd/2)+i (the pair (x[i], x[i+hd/2]) becomes the adjacent pair (x[2i], x[2i+1]))."""
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(hd // 2):
            for t in range(2):
                out[h * hd + 2 * i + t] = w[h * hd + t * (hd // 2) + i]
    return out


def deinterleave_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(hd // 2):
            for t in range(2):
                out[h * hd + t * (hd // 2) + i] = w[h * hd + 2 * i + t]
    return out


def _random_blocks(rows: int, cols: int, qtype, rng) -> np.ndarray:
    """Valid random blocks for types gguf cannot quantize (K-quants): random bytes with the f16
    super-block scales (first 2 or 4 bytes, or Q6_K's trailing d) set to small finite values."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    d = rng.uniform(1e-3, 1e-2, size=(rows, cols // block, 2)).astype(np.float16).view(np.uint8)
    if qtype in (Q.Q6_K, Q.Q3_K):          # d last
        raw[..., size - 2:] = d[..., 0:2]
    elif qtype == Q.Q2_K:                   # d, dmin last
        raw[..., size - 4:] = d[..., 0:4]
    else:
        raw[..., 0:2] = d[..., 0:2]
        raw[..., 2:4] = d[..., 2:4]
    return raw.reshape(rows, -1)


_OURS = {Q.Q4_K: "q4_k", Q.Q5_K: "q5_k", Q.Q6_K: "q6_k"}


def encode(w: np.ndarray, qtype, rng, ours: bool = False) -> np.ndarray:
    """float32 (rows, cols) -> GGUF tensor data of ``qtype``. K-quants, which gguf 0.19 cannot
    quantize: random valid blocks, or with ``ours`` modelfmt.kquant's quantizer."""
    if ours and qtype in _OURS:
        from modelfmt import kquant
        return kquant.to_gguf(kquant.quantize(w, _OURS[qtype]))
    if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q2_K, Q.Q3_K):
        return _random_blocks(w.shape[0], w.shape[1], qtype, rng)
    return gguf.quants.quantize(w, qtype)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's rule for the layers that get more bits in Q4_K_M (first and last eighth, and
    every third layer between)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# llama.cpp's fallback for a K type on a width that is not a multiple of 256
K_FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}


def mix_type(mix: str, name: str, layer: int, n_layers: int, tied: bool, cols: int):
    """The GGML type llama-quantize gives tensor ``name`` (GGUF name) in a ``mix`` file:
    "q4_k_m": Q6_K for output (and a tied token_embd), attn_v and ffn_down of the use_more_bits
    layers, Q4_K elsewhere; "q6_k": Q6_K everywhere. Then the width fallback."""
    if mix == "q6_k":
        t = Q.Q6_K
    elif mix == "q4_k_m":
        more = use_more_bits(layer, n_layers)
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = Q.Q6_K if cols % 256 == 0 else Q.Q8_0
        elif (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight")) and more:
            t = Q.Q6_K
        else:
            t = Q.Q4_K
    else:
        raise ValueError(f"unknown mix {mix!r}")
    return K_FALLBACK[t] if cols % 256 and t in K_FALLBACK else t


def make_gguf(path: Path, *, vocab_pad: int = 0, hidden: int = 64, ffn: int = 128, layers: int = 2,
              heads: int = 4, kv_heads: int = 2, qtype=Q.Q4_0, embed_qtype=None, tied: bool = True,
              pre: str = "smollm", add_bos: bool | None = False,
              rope_freqs: np.ndarray | None = None,
              arch: str = "llama", extra_kv: dict | None = None, skip: tuple = (),
              extra_tensors: dict | None = None, seed: int = 0, ctx: int = 2048,
              theta: float = 10000.0, mix: str | None = None) -> dict:
    """Write a tiny llama GGUF; returns {"tensors": {canon: (raw, ref_f32_hf)}, "tokens", ...}.
    ``mix`` ("q4_k_m" | "q6_k"): per-tensor types as llama-quantize picks them (``mix_type``),
    K-quant blocks from modelfmt.kquant's quantizer; ``qtype`` / ``embed_qtype`` unused."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = tiny_vocab()
    tokens = tokens + [f"<pad_{i}>" for i in range(vocab_pad)]
    types = types + [USER_DEFINED] * vocab_pad
    vocab = len(tokens)
    hd = hidden // heads

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                        "<|im_end|>\n{% endfor %}")
    for k, v in (extra_kv or {}).items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_string(k, v)

    out: dict = {}
    qtypes: dict = {}

    def put(name: str, canon: str, hf: np.ndarray, qt, n_head: int | None = None) -> None:
        if name in skip:
            return
        if mix and hf.ndim == 2:
            layer = int(name.split(".")[1]) if name.startswith("blk.") else 0
            qt = mix_type(mix, name, layer, layers, tied, hf.shape[1])
        g = interleave_rows(hf, n_head) if n_head else hf
        raw = encode(g, qt, rng, ours=bool(mix)) if hf.ndim == 2 else hf.astype(np.float32)
        w.add_tensor(name, raw, raw_dtype=qt if hf.ndim == 2 and qt not in (Q.F32, Q.F16) else None)
        ref = np.asarray(gguf.quants.dequantize(raw, qt if hf.ndim == 2 else Q.F32), np.float32)
        ref = ref.reshape(hf.shape)
        out[canon] = (raw, deinterleave_rows(ref, n_head) if n_head else ref)
        qtypes[canon] = qt if hf.ndim == 2 else Q.F32

    def mat(r: int, c: int) -> np.ndarray:
        return (rng.standard_normal((r, c)) / math.sqrt(c)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)

    put("token_embd.weight", "tok_embeddings", mat(vocab, hidden), embed_qtype or qtype)
    for i in range(layers):
        b, p = f"blk.{i}.", f"layers.{i}."
        put(b + "attn_norm.weight", p + "attention_norm", norm(), Q.F32)
        put(b + "attn_q.weight", p + "attention.wq", mat(heads * hd, hidden), qtype, heads)
        put(b + "attn_k.weight", p + "attention.wk", mat(kv_heads * hd, hidden), qtype, kv_heads)
        put(b + "attn_v.weight", p + "attention.wv", mat(kv_heads * hd, hidden), qtype)
        put(b + "attn_output.weight", p + "attention.wo", mat(hidden, heads * hd), qtype)
        put(b + "ffn_norm.weight", p + "ffn_norm", norm(), Q.F32)
        put(b + "ffn_gate.weight", p + "feed_forward.w1", mat(ffn, hidden), qtype)
        put(b + "ffn_down.weight", p + "feed_forward.w2", mat(hidden, ffn), qtype)
        put(b + "ffn_up.weight", p + "feed_forward.w3", mat(ffn, hidden), qtype)
    put("output_norm.weight", "norm", np.ones(hidden, np.float32), Q.F32)
    if not tied:
        put("output.weight", "output", mat(vocab, hidden), qtype)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    for name, arr in (extra_tensors or {}).items():
        w.add_tensor(name, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": out, "tokens": tokens, "types": types, "merges": merges, "vocab": vocab,
            "qtypes": qtypes}
