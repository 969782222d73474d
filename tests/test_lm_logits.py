"""``Engine.logits`` for a Llama-3-sized vocabulary (128,256) on an adapter whose storage-buffer
binding limit is 128 MiB (lavapipe, WebGPU's default): a 512-row chunk of logits would be 262 MB,
so the LM head scores fewer rows at a time (``Graph.lm_rows``). The logits must still equal the
numpy reference at every position."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from driver.native import load  # noqa: E402
from driver.native.reference import Reference  # noqa: E402

pytestmark = pytest.mark.gpu
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoints import write_hf  # noqa: E402

VOCAB = 128256


def test_128k_vocab_logits_beyond_binding_limit(tmp_path, backend):
    from weights_tool.pack import pack
    hf = write_hf(tmp_path / "hf", seed=5, vocab_size=VOCAB, hidden_size=64,
                  intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True)
    model = tmp_path / "m"
    pack(hf, model, quant="q8_0", uniform=True, progress=False)
    eng = load(model, backend=backend, max_context=600, kv="f32")   # chunk 512
    limit = min(backend.caps.max_storage_binding, backend.limits["max_buffer_size"])
    assert eng.graph.chunk * VOCAB * 4 > limit, "this adapter would not need the split"
    n = 300
    ids = np.random.default_rng(0).integers(0, VOCAB, n).tolist()
    got = eng.logits(ids)
    # the split really happened: fewer rows per LM-head pass than tokens, each pass in the limit
    assert eng.graph.lm_rows < n and eng.graph.lm_rows * VOCAB * 4 <= limit
    want = Reference.load(model).logits(ids)
    assert got.shape == (n, VOCAB)
    per_pos = np.abs(got - want).max(-1) / np.abs(want).max(-1)
    assert per_pos.max() < 2e-3, (int(per_pos.argmax()), float(per_pos.max()))
    eng.close()
