"""The driver on K-quant packings against HF transformers (tests/golden/make_kquant_goldens.py):
a Q4_K_M-style GGUF (q4_k + q6_k, untied; a layer whose attn_v is q6_k beside q4_k attn_q /
attn_k runs its decode QKV as two dispatches) and a Q6_K GGUF (tied: q6_k embedding and LM
head), each packed with ``--keep-native``. The GGUF is re-made from the golden's recipe and its
sha256 checked first, so a changed quantizer is told apart from a wrong engine."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu-py is not installed")

from driver.native import load  # noqa: E402  (the engine)
from driver.native.reference import Reference  # noqa: E402

pytestmark = pytest.mark.gpu
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gguf_make import make_gguf  # noqa: E402

GOLD = Path(__file__).resolve().parent / "data" / "goldens" / "kquant"
NAMES = sorted(p.stem for p in GOLD.glob("*.npz"))


def load_gold(name: str) -> dict:
    with np.load(GOLD / f"{name}.npz") as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from weights_tool.pack import pack
    root = tmp_path_factory.mktemp("kgold")
    out = {}
    for name in NAMES:
        meta = load_gold(name)["meta"]
        path = root / f"{name}.gguf"
        make_gguf(path, **meta["make_gguf"])
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sha == meta["gguf_sha256"], (
            f"golden {name}: tests/_gguf_make + modelfmt.kquant now make a different GGUF "
            f"({sha[:12]} != {meta['gguf_sha256'][:12]}); regenerate with "
            "tests/golden/make_kquant_goldens.py")
        out[name] = pack(path, root / name, quant="q4_k", keep_native=True, progress=False)
    return out


def test_goldens_exist():
    assert NAMES == ["k1_q4_k_m_untied", "k2_q6_k_tied"]


@pytest.mark.parametrize("name", NAMES)
def test_kept_formats(packed, name):
    meta = load_gold(name)["meta"]
    m = packed[name].manifest
    for canon, qt in meta["qtypes"].items():
        assert m["tensors"][canon]["dtype"] == qt.lower(), canon
    assert packed[name].max_abs_err == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_reference_decoder_matches_transformers(packed, name):
    """driver.native.reference (its own K-quant decoder, numpy) on the packed shards."""
    gold = load_gold(name)
    got = Reference.load(packed[name].out).logits(gold["input_ids"].tolist())
    rel = np.abs(got - gold["logits"]).max(-1) / np.abs(gold["logits"]).max(-1)
    assert rel.max() < 1e-4, rel.max()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_logits_and_greedy_match_transformers(packed, backend, name, mode):
    """Every position within 1e-3 of that position's max |logit| (the f32 goldens' tolerance),
    through the prefill kernels (matmul, tiled gate_up, embed) or one token at a time (matvec,
    decode gate_up and qkv_rope_decode with their default int8-x unpacking); then 32 greedy
    tokens identical (golden margins >= 0.02)."""
    gold = load_gold(name)
    eng = load(packed[name].out, backend=backend, max_context=64, kv="f32", chunk=32,
                      f16_math=False)
    ids = gold["input_ids"].tolist()
    got = eng.logits(ids, mode=mode)
    want = gold["logits"]
    per_pos = np.abs(got - want).max(-1) / np.abs(want).max(-1)
    assert per_pos.max() < 1e-3, (per_pos.argmax(), per_pos.max())
    if mode == "decode":
        greedy = list(eng.generate(ids[:8], 32, stop_ids=()))
        assert greedy == gold["greedy_ids"].tolist()
        # dispatches a step (decode_options.NATIVE): embed; per layer one qkv_rope_decode per
        # weight format of wq / wk / wv (the fused kernel fits lavapipe's limit), split-K
        # attention_decode + attention_combine, wo, gate_up, w2; the final RMSNorm, the LM-head
        # blocks; sample + sample_select
        t = packed[name].manifest["tensors"]
        fmts = [len({t[f"layers.{i}.attention.w{h}"]["dtype"] for h in "qkv"})
                for i in range(eng.cfg.num_hidden_layers)]
        head = t["output"] if "alias" not in t["output"] else t[t["output"]["alias"]]
        # + quant_x (every input natively) before the qkv kernels, wo, gate_up, w2 and the head
        # where one of them reads int8 x (q4_0 and the K-quants; lavapipe has packed dot products)
        from shaders.decode_loop import XQ_FORMATS
        i8 = lambda *ns: any(t[n]["dtype"] in XQ_FORMATS for n in ns)   # noqa: E731
        n_xq = sum(i8(*(f"layers.{i}.attention.w{h}" for h in "qkv")) + i8(f"layers.{i}.attention.wo")
                   + i8(f"layers.{i}.feed_forward.w1") + i8(f"layers.{i}.feed_forward.w2")
                   for i in range(eng.cfg.num_hidden_layers)) + (head["dtype"] in XQ_FORMATS)
        assert eng.graph.caps.packed_dot and n_xq > 0
        assert eng.dispatches_per_token == 1 + sum(n + 5 for n in fmts) + 1 + \
            len(head["blocks"]) + 2 + n_xq
        if name == "k1_q4_k_m_untied":
            assert max(fmts) == 2   # the split QKV layer is there
        # speculative decoding's verify pass (matvec_multi / gate_up_multi on the K-quants):
        # every draft of plain decoding's own tokens accepted, every wrong one rejected, the
        # greedy ids unchanged either way
        from driver.speculative import Oracle, generate_speculative

        async def spec(wrong):
            o = Oracle(8, greedy, eng.cfg.vocab_size, wrong=wrong)
            return [t async for t in generate_speculative(eng, ids[:8], 32, 4, "lookup",
                                                          drafter=o, stop_ids=())]
        for wrong in (False, True):
            assert eng._run(spec(wrong)) == greedy
            sp = eng.last_stats["speculative"]
            assert sp["drafted"] > 0 and sp["accepted"] == (0 if wrong else sp["drafted"])
