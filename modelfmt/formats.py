"""Weight formats and canonical tensor names: the vocabulary shared by manifest, Python and WGSL.

Pure Python (runs in Pyodide). Every 2-D weight is (rows, cols) = (out_features, in_features),
row-major, quantized along cols in groups of ``group_size`` (32 by default). WGSL storage has no
8- or 4-bit types, so every part is an array of u32 words:

  format  parts (each its own 256-byte-aligned byte range)           value of element (r, c)
  f32     data:   (rows, cols)            f32                          data[r, c]
  f16     data:   (rows, cols/2)          u32 = 2 x f16, low half first  data[r, c]
  q8_0    qs:     (rows, cols/4)          u32 = 4 x i8, byte j = col 4w+j   qs * d
          scales: (rows * cols/G)         f16, 2 per u32, low half first
  q4_0    qs:     (rows, cols/8)          u32 = 8 x u4, nibble j (bits 4j..4j+3) = col 8w+j
          scales: (rows * cols/G)         f16                           (q - 8) * d
  q4_1    qs:     as q4_0                                              q * d + m
          scales: (rows * cols/G)         f16
          mins:   (rows * cols/G)         f16

Scale index for element (r, c) is ``r * (cols / G) + c // G``; f16 number k sits in u32 word k >> 1,
half k & 1 (WGSL ``unpack2x16float(word)[k & 1]``). Part byte sizes are padded up to a multiple of 4.

GGUF's K-quants, re-laid out bit-exactly (modelfmt/kquant.py transcodes GGUF blocks both ways;
dequantizing these parts gives exactly ``gguf.quants.dequantize`` of the GGUF blocks). A row is
cut in super-blocks of 256 columns (cols must be a multiple of 256; ``group_size`` does not apply).
Two parts each, so that a kernel binds as few storage buffers as q4_0 does:

  format  parts                                                        value of element (r, c)
  q4_k    qs: (rows, cols/8)     u32, nibble j of word w = low 4 bits of col 8w+j (as q4_0)
          sb: (rows, cols/256, 4) u32 per super-block:                 d1 * q - m1, with
              w0 = f16 d | f16 dmin << 16                               d1 = d * sc_j (f32),
              w1 nibble j = sc_j & 15, w2 nibble j = m_j & 15,          m1 = dmin * m_j (f32),
              w3 bits 2j..2j+1 = sc_j >> 4, bits 16+2j.. = m_j >> 4     j = sub-block (32 cols)
  q5_k    qs: as q4_k (low 4 bits)                                     as q4_k, q = qs | h << 4
          sb: (rows, cols/256, 12) u32: w0..w3 as q4_k, then one word per sub-block j:
              w4+j byte i bit 2k+p = 5th bit h of column 8k+2i+p of sub-block j
  q6_k    qs: as q4_k (low 4 bits of the 6-bit q)                      d * s_i * (q - 32),
          sb: (rows, cols/256, 21) u32: w0..w3 = 16 int8 scales s_i     q = qs | h << 4,
              (byte i = sub-block i of 16 cols), w4 = f16 d (low half),  i = sub-block (16 cols)
              w5+2j+h byte i bits 4g+2p..+1 = high 2 bits h of col 8(2h+g)+2i+p of chunk j
              (the j-th 32 columns of the super-block)

The high bits are ordered for the packed int8 dot: for qs word k of a 32-column chunk, the
even / odd columns' high bits land in bit 4 (q5_k) or bits 4-5 (q6_k) of the bytes of
``w & 0x0F0F0F0F`` / ``(w >> 4) & 0x0F0F0F0F`` after one shift and one mask. Why a record per
super-block: one vec4 load (q4_k) gives a 32-column chunk's scale and min, shared by the 8
chunks of the super-block; sizes per 256 weights: q4_k 144 B (= GGUF), q5_k 176 B (= GGUF),
q6_k 212 B (GGUF 210: d padded to a word).
"""

from __future__ import annotations

FORMATS = ("q4_0", "q4_1", "q8_0", "f16", "f32", "q4_k", "q5_k", "q6_k")
PART_NAMES = {
    "f32": ("data",),
    "f16": ("data",),
    "q8_0": ("qs", "scales"),
    "q4_0": ("qs", "scales"),
    "q4_1": ("qs", "scales", "mins"),
    "q4_k": ("qs", "sb"),
    "q5_k": ("qs", "sb"),
    "q6_k": ("qs", "sb"),
}
QUANTIZED = ("q4_0", "q4_1", "q8_0")   # group formats: one f16 scale per group_size columns
KQUANT = ("q4_k", "q5_k", "q6_k")      # GGUF K-quants: 256-column super-blocks
QK_K = 256                             # columns per K-quant super-block
SB_WORDS = {"q4_k": 4, "q5_k": 12, "q6_k": 21}   # u32 words of one super-block record
# the GGUF type each K format transcodes losslessly, and the fallback for a matrix whose width is
# not a multiple of 256 (llama.cpp falls back to Q5_0 / Q5_1 / Q8_0; we keep at least the
# K format's quant bits with a format we have: 4-bit q4_1, else q8_0)
KQUANT_GGUF = {"q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K"}
KQUANT_FALLBACK = {"q4_k": "q4_1", "q5_k": "q8_0", "q6_k": "q8_0"}

# Limits every packed model respects, so the page works with WebGPU's default limits.
PART_ALIGN = 256                     # minStorageBufferOffsetAlignment default
MAX_PART_BYTES = 128 * 1024 * 1024   # maxStorageBufferBindingSize default (128 MiB)


def pad4(n: int) -> int:
    return (n + 3) & ~3


def part_nbytes(fmt: str, part: str, rows: int, cols: int, group_size: int = 32) -> int:
    """Bytes of one part of a (rows, cols) tensor in ``fmt`` (padded to 4 bytes)."""
    if fmt not in PART_NAMES or part not in PART_NAMES[fmt]:
        raise ValueError(f"format {fmt!r} has no part {part!r}")
    if fmt == "f32":
        return rows * cols * 4
    if fmt == "f16":
        return pad4(rows * cols * 2)
    if fmt in KQUANT:
        return rows * cols // 2 if part == "qs" else rows * (cols // QK_K) * SB_WORDS[fmt] * 4
    if part == "qs":
        return rows * cols if fmt == "q8_0" else rows * cols // 2
    return pad4(rows * (cols // group_size) * 2)  # scales / mins: f16 each


def check_shape(fmt: str, rows: int, cols: int, group_size: int = 32) -> str | None:
    """Why (rows, cols) cannot be stored in ``fmt``, or None when it can."""
    if fmt == "f16" and cols % 2:
        return f"f16 needs an even number of columns, got {cols}"
    if fmt in KQUANT and cols % QK_K:
        return f"{fmt} needs a multiple of {QK_K} columns (its super-blocks), got {cols}"
    if fmt in QUANTIZED:
        if group_size % 8 or group_size <= 0:
            return f"group size must be a positive multiple of 8, got {group_size}"
        if cols % group_size:
            return f"{cols} columns are not a multiple of the group size {group_size}"
    return None


# ---- canonical tensor names (Meta's), one table from HF names ----
# "{i}" is the layer index. Norm weights are always stored f32 (1-D, shape [hidden]).
HF_TO_CANON = {
    "model.embed_tokens.weight": "tok_embeddings",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm",
    "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attention.wq",
    "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attention.wk",
    "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attention.wv",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3",
    "model.norm.weight": "norm",
    "lm_head.weight": "output",
    "model.layers.{i}.self_attn.rotary_emb.inv_freq": None,  # dropped: recomputed from config
}

# GGUF names (llama.cpp) to canonical.
GGUF_TO_CANON = {
    "token_embd.weight": "tok_embeddings",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm",
    "blk.{i}.attn_q.weight": "layers.{i}.attention.wq",
    "blk.{i}.attn_k.weight": "layers.{i}.attention.wk",
    "blk.{i}.attn_v.weight": "layers.{i}.attention.wv",
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3",
    "output_norm.weight": "norm",
    "output.weight": "output",
    "rope_freqs.weight": None,  # dropped: recomputed from config (llama3 scaling)
}


def expected_tensors(cfg) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape for every tensor a ``ModelConfig`` needs (``output`` may alias)."""
    h, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    out: dict[str, tuple[int, ...]] = {"tok_embeddings": (v, h), "norm": (h,), "output": (v, h)}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        out[p + "attention_norm"] = (h,)
        out[p + "attention.wq"] = (cfg.q_dim, h)
        out[p + "attention.wk"] = (cfg.kv_dim, h)
        out[p + "attention.wv"] = (cfg.kv_dim, h)
        out[p + "attention.wo"] = (h, cfg.q_dim)
        out[p + "ffn_norm"] = (h,)
        out[p + "feed_forward.w1"] = (f, h)
        out[p + "feed_forward.w2"] = (h, f)
        out[p + "feed_forward.w3"] = (f, h)
    return out


def canon_name(src_name: str, table: dict) -> str | None | bool:
    """Map a source tensor name through ``table``; False when it is not in the table at all."""
    if src_name in table:
        return table[src_name]
    parts = src_name.split(".")
    for i, tok in enumerate(parts):
        if tok.isdigit():
            pattern = ".".join(parts[:i] + ["{i}"] + parts[i + 1:])
            if pattern in table:
                target = table[pattern]
                return None if target is None else target.replace("{i}", tok)
    return False
