"""Model shapes by name: HF ``config.json`` fields of the synthetic presets.

Used by ``weights_tool synth`` (random-weight HF checkpoints written to disk) and by the native
bench's ``synth:PRESET:QUANT`` models (random packed weights made on the GPU). Pure Python.
"""

from __future__ import annotations

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
_LLAMA3_EOS = [128001, 128008, 128009]

# HF config.json fields per preset (classic rope_theta + rope_scaling form, as Meta publishes).
PRESETS: dict[str, dict] = {
    "llama3-tiny": dict(vocab_size=128256, hidden_size=128, intermediate_size=384,
                        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=32, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
                        max_position_embeddings=131072, tie_word_embeddings=True,
                        bos_token_id=128000, eos_token_id=_LLAMA3_EOS),
    "llama3.2-1b-shape": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                              num_hidden_layers=16, num_attention_heads=32,
                              num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
                              rope_scaling=_LLAMA3_ROPE, max_position_embeddings=131072,
                              tie_word_embeddings=True, bos_token_id=128000,
                              eos_token_id=_LLAMA3_EOS),
    "llama3-8b-shape": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                            head_dim=128, rope_theta=500000.0,
                            rope_scaling=dict(_LLAMA3_ROPE, factor=8.0),
                            max_position_embeddings=131072, tie_word_embeddings=False,
                            bos_token_id=128000, eos_token_id=_LLAMA3_EOS),
    "smollm-shape": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, rope_theta=100000.0, rope_scaling=None,
                         max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=[2]),
}
