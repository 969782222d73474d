"""Tiny HF-format Llama checkpoints for weights_tool tests, written with numpy + safetensors only.

``write_hf(folder, **overrides)`` writes config.json, model.safetensors (or several files with an
index), tokenizer_config.json and generation_config.json for a random model. Defaults: vocab 256,
hidden 64, 2 layers, 4 heads / 2 KV heads (head_dim 16), intermediate 128, Llama-3.1 rope scaling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)


def hf_config(**over) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", **SMALL,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 2048,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": [128001, 128009],
        "hidden_act": "silu", "torch_dtype": "float32",
    }
    cfg.update(over)
    return cfg


def hf_tensors(cfg: dict, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """HF name -> random array at a realistic scale (std 0.02; norms near 1)."""
    rng = np.random.default_rng(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // nh

    def mat(r, c):
        return (rng.standard_normal((r, c), dtype=np.float32) * 0.02).astype(dtype)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(h, dtype=np.float32)).astype(dtype)

    t = {"model.embed_tokens.weight": mat(v, h), "model.norm.weight": norm()}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm()
        t[p + "post_attention_layernorm.weight"] = norm()
        t[p + "self_attn.q_proj.weight"] = mat(nh * hd, h)
        t[p + "self_attn.k_proj.weight"] = mat(nkv * hd, h)
        t[p + "self_attn.v_proj.weight"] = mat(nkv * hd, h)
        t[p + "self_attn.o_proj.weight"] = mat(h, nh * hd)
        t[p + "mlp.gate_proj.weight"] = mat(f, h)
        t[p + "mlp.up_proj.weight"] = mat(f, h)
        t[p + "mlp.down_proj.weight"] = mat(h, f)
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = mat(v, h)
    return t


def write_hf(folder, seed: int = 0, files: int = 1, dtype=np.float32, tensors=None,
             **over) -> Path:
    """Write a random HF Llama folder; ``files`` > 1 splits the weights and writes an index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(**over)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    t = hf_tensors(cfg, seed, dtype) if tensors is None else tensors
    if files == 1:
        save_file(t, str(folder / "model.safetensors"))
    else:
        names = list(t)
        wm = {}
        for k in range(files):
            fname = f"model-{k + 1:05d}-of-{files:05d}.safetensors"
            part = {n: t[n] for n in names[k::files]}
            save_file(part, str(folder / fname))
            wm.update({n: fname for n in part})
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6,
         "top_p": 0.9, "do_sample": True}))
    return folder


def bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns are not a numpy dtype: round to bf16-representable f32."""
    b = a.astype(np.float32).view(np.uint32)
    return ((b + 0x8000) & 0xFFFF0000).view(np.float32)


def write_raw_safetensors(path, header: dict, data: bytes, header_len: int | None = None) -> Path:
    """Write a safetensors file from an explicit header (tests of malformed files, BF16)."""
    h = json.dumps(header).encode()
    n = len(h) if header_len is None else header_len
    Path(path).write_bytes(n.to_bytes(8, "little") + h + data)
    return Path(path)


def save_bf16(tensors: dict[str, np.ndarray], path) -> Path:
    """safetensors.numpy cannot write BF16: build the file by hand (upper 16 bits, rounded)."""
    header, chunks, off = {}, [], 0
    for name, a in tensors.items():
        raw = (bf16(a).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    return write_raw_safetensors(path, header, b"".join(chunks))
