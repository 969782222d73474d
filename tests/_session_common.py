"""Helpers and fixtures shared by tests/test_session.py and tests/test_speculative.py."""

from __future__ import annotations

import numpy as np
import pytest


GREEDY = {"temperature": 0.0, "ignore_eos": True}
CFG = dict(num_hidden_layers=3, vocab_size=256, hidden_size=64, intermediate_size=128,
           num_attention_heads=4, num_key_value_heads=2)

# Where speculation may differ from plain decoding (driver/speculative.py): at a top-2 margin
# below the verify-vs-decode logit difference. Measured on lavapipe (same prompt prefill, 11
# rows): f32 packing 2.4e-7, q4_0 2.3e-5 (f16 KV) / 3.0e-5 (f32 KV) of max |logit|.
NEAR_TIE = {"f32": 0.0, "q4_0": 3e-4}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, backend):
    """The test_engine tiny model packed f32 (f32 KV) and q4_0 (f16 KV), chunk 16."""
    from _checkpoints import write_hf
    from driver.native import load
    from weights_tool.pack import pack
    tmp = tmp_path_factory.mktemp("session")
    write_hf(tmp / "hf", seed=3, **CFG)
    out = {}
    for q, kv in (("f32", "f32"), ("q4_0", "f16")):
        pack(tmp / "hf", tmp / q, quant=q, progress=False)
        out[q] = load(tmp / q, backend=backend, max_context=128, kv=kv, chunk=16)
    return out


def _ids(n, seed=0, vocab=256):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def _toks(sess, req):
    return [t for t, _ in sess.stream(req) if t >= 0]


async def _read_logits(eng):
    return np.frombuffer(await eng.gpu.read(eng.graph.logits, 0, 4 * eng.cfg.vocab_size), "<f4")


def first_logits(sess, ids) -> np.ndarray:
    """Logits of the prompt's last position as the session computed them (cache reused)."""
    _toks(sess, {"prompt_ids": ids, "options": {**GREEDY, "max_tokens": 1}})
    return sess.engine._run(_read_logits(sess.engine)).copy()


async def _collect(agen):
    return [t async for t in agen]


# Where speculation may differ from plain decoding (driver/speculative.py): at a top-2 margin
# below the verify-vs-decode logit difference. Measured on lavapipe (same prompt prefill, 11
# rows): f32 packing 2.4e-7, q4_0 2.3e-5 (f16 KV) / 3.0e-5 (f32 KV) of max |logit|.


def same_or_near_tie(eng, q, prompt, plain, got) -> None:
    """``got`` equals ``plain``, or (q4_0 only) first differs where plain decoding's top-2 margin
    is a near-tie (teacher-forced decode logits of plain's sequence)."""
    if got == plain:
        return
    i = next(j for j, (a, b) in enumerate(zip(got, plain)) if a != b)
    lg = eng.logits(prompt + plain[:i + 1], mode="decode")[-2]
    top = np.sort(lg)[-2:]
    assert top[1] - top[0] <= NEAR_TIE[q] * np.abs(lg).max(), (q, i, got, plain)
