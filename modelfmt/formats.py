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
"""

from __future__ import annotations

FORMATS = ("q4_0", "q4_1", "q8_0", "f16", "f32")
PART_NAMES = {
    "f32": ("data",),
    "f16": ("data",),
    "q8_0": ("qs", "scales"),
    "q4_0": ("qs", "scales"),
    "q4_1": ("qs", "scales", "mins"),
}
QUANTIZED = ("q4_0", "q4_1", "q8_0")

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
    if part == "qs":
        return rows * cols if fmt == "q8_0" else rows * cols // 2
    return pad4(rows * (cols // group_size) * 2)  # scales / mins: f16 each


def check_shape(fmt: str, rows: int, cols: int, group_size: int = 32) -> str | None:
    """Why (rows, cols) cannot be stored in ``fmt``, or None when it can."""
    if fmt == "f16" and cols % 2:
        return f"f16 needs an even number of columns, got {cols}"
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
