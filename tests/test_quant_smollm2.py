"""The issue-10 targets on the one real model (SmolLM2-135M-Instruct from its Q4_1 GGUF): the default
``--quant q4_0`` packing (``--method auto``: GPTQ on the Shakespeare calibration split, the default
8-bit rules) against the lossless f32 packing of the same file, scored by ``driver quality`` on the
held-out split. A calibrated pack takes minutes on 2 cores, so this runs only with ``--full``
(docs/QUANTIZATION.md has the full table and the command that made it)."""

from __future__ import annotations

import io

import pytest

TOKENS = 512


def test_default_q4_0_meets_the_targets(tmp_path, smollm2_gguf, shakespeare_dir, full_sweep):
    if not full_sweep:
        pytest.skip("long: a calibrated SmolLM2 pack (2-8 min on 2 cores); runs with --full")
    from driver.native.quality import run_quality
    from weights_tool.pack import pack
    ref = pack(smollm2_gguf, tmp_path / "f32", quant="f32", progress=False).out
    s = pack(smollm2_gguf, tmp_path / "q4_0", quant="q4_0", method="auto", progress=False)
    q = s.manifest["quant"]
    assert q["method"] == "gptq" and q["calibration"]["tokens"] == 4096
    assert q["requantized"] > 0 and "tok_embeddings=q8_0" in q["keep"]
    _, row = run_quality([ref, s.out], n_tokens=TOKENS, out=io.StringIO(), numpy=True)
    # issue 10 asks >= 85 % top-1 and <= 0.05 nats mean KL; measured on these 512 held-out tokens
    # with the default rules (embedding, every wv / wk / w2 at q8_0): 87.7 % and 0.042
    # (docs/QUANTIZATION.md; 89.7 % and 0.028 on 2048 tokens)
    assert q["keep"][2:] == ["layers.*.attention.wv=q8_0", "layers.*.attention.wk=q8_0",
                             "layers.*.feed_forward.w2=q8_0"]
    assert row["top1_agreement"] >= 0.85, row
    assert row["mean_kl"] <= 0.05, row
